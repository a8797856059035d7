//! Transaction mode with max_prepared_statements (default 200): named prepared statements no
//! longer hold a server connection; pgporter parses them where its client goes, under its own
//! names, and keeps at most max_prepared_statements on each server connection.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{Fixture, Spec};

/// The fixture's user is an admin too (SHOW CLIENTS / SERVERS).
async fn fixture(pool_size: u32, extra: &str) -> Fixture {
    Fixture::custom(|n| Spec {
        pool_size,
        ..Spec::new(format!(
            "pool_mode = transaction\nquery_wait_timeout = 3\nadmin_users = {}\n{extra}",
            n.user
        ))
    })
    .await
}

/// The prepared_statements column of SHOW `what` (CLIENTS or SERVERS) of the fixture's
/// database, sorted; the admin console's own client row left out.
async fn shown(fx: &Fixture, what: &str) -> Vec<String> {
    let admin = fx.porter.connstring(&fx.user, &fx.password, "pgbouncer");
    let admin = crate::support::clients::connect(&admin).await;
    let rows = admin
        .simple_query(&format!("show {what}"))
        .await
        .expect("SHOW");
    let mut counts: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get("database") == Some(fx.db.as_str()) => {
                r.get("prepared_statements").map(str::to_string)
            }
            _ => None,
        })
        .collect();
    counts.sort();
    counts
}

async fn value(client: &Client, sql: &str) -> String {
    crate::support::simple_value(client, sql)
        .await
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The named statements pgporter prepared on the server connection the client gets next.
async fn on_server(client: &Client) -> i64 {
    value(
        client,
        "select count(*) from pg_prepared_statements where not from_sql",
    )
    .await
    .parse()
    .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_statements_open_share_one_connection() {
    let fx = fixture(1, "").await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    let double = a.prepare("select $1::int8 * 2").await.unwrap();
    let same = b.prepare("select $1::int8 * 2").await.unwrap();
    let other = b.prepare("select $1::text || '!'").await.unwrap();
    for i in 0..5i64 {
        let row = a.query_one(&double, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), i * 2);
        let row = b.query_one(&same, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), i * 2);
        let row = b.query_one(&other, &[&i.to_string()]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("{i}!"));
    }
    assert_eq!(on_server(&a).await, 2, "one per distinct statement");
    // As PgBouncer 1.21+ shows them: per client, and per server connection.
    assert_eq!(shown(&fx, "clients").await, ["1", "2"]);
    assert_eq!(shown(&fx, "servers").await, ["2"]);

    // A client's DISCARD ALL drops them on the server: pgporter parses them again.
    b.batch_execute("discard all").await.unwrap();
    assert_eq!(on_server(&a).await, 0);
    let row = a.query_one(&double, &[&21i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);

    // Closing is the client's own business: the other client's statement stays.
    drop(same);
    let row = a.query_one(&double, &[&1i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_follows_its_client_to_another_connection() {
    let fx = fixture(2, "").await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    let length = a.prepare("select length($1::text)").await.unwrap();
    let first = value(&a, "select pg_backend_pid()").await;
    // b holds that connection in a transaction (once a gave it back): a's next statement goes
    // to the other one.
    fx.porter.until_idle(1).await;
    b.batch_execute("begin").await.unwrap();
    assert_eq!(value(&b, "select pg_backend_pid()").await, first);
    // A value over 64 KiB: the Bind streams through, renamed on the way.
    let long = "x".repeat(100_000);
    let row = a.query_one(&length, &[&long]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 100_000);
    assert_ne!(value(&a, "select pg_backend_pid()").await, first);
    b.batch_execute("commit").await.unwrap();
    for _ in 0..3 {
        let row = a.query_one(&length, &[&"abc"]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_keeps_at_most_max_prepared_statements() {
    let fx = fixture(1, "max_prepared_statements = 2").await;
    let a = fx.connect().await;
    let mut stmts = Vec::new();
    for n in 0..4i32 {
        stmts.push(a.prepare(&format!("select {n} + $1::int4")).await.unwrap());
    }
    for round in 0..3i32 {
        for (n, stmt) in (0..).zip(&stmts) {
            let row = a.query_one(stmt, &[&round]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), n + round);
        }
        assert!(on_server(&a).await <= 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_session_mode_and_back_keeps_the_statements() {
    let fx = fixture(2, "").await;
    let a = fx.connect().await;
    let stmt = a.prepare("select $1::int4 + 1").await.unwrap();
    for (from, to) in [("transaction", "session"), ("session", "transaction")] {
        fx.porter
            .reload_edited(|ini| {
                ini.replace(&format!("pool_mode = {from}"), &format!("pool_mode = {to}"))
            })
            .await;
        // a held no connection: its next request is the new pool's, its statement with it.
        let row = a.query_one(&stmt, &[&41i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 42, "after the switch to {to} mode");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_renaming_off_keeps_running_sessions_working() {
    let fx = fixture(1, "max_prepared_statements = 5").await;
    let a = fx.connect().await;
    let stmt = a.prepare("select 'a'::text").await.unwrap();
    fx.porter
        .reload_edited(|ini| {
            ini.replace("max_prepared_statements = 5", "max_prepared_statements = 0")
        })
        .await;
    // A session that began after it does not rename; its DEALLOCATE ALL on the shared
    // connection is noticed, and a's statement is parsed there again.
    let b = fx.connect().await;
    b.batch_execute("deallocate all").await.unwrap();
    let row = a.query_one(&stmt, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "a");
}

//! The audit log tells a change that was rolled back from one that stuck: every statement
//! event carries its transaction (`xact`), and a `transaction_end` event says how each
//! transaction with a logged statement ended, or the statement event itself (`xact_end`) when
//! the transaction was that statement alone. Checked against what the table holds.

use serde_json::Value;

use crate::audit::{events, statements};
use crate::support::psql::{psql_err, psql_ok};
use crate::support::raw::RawClient;
use crate::support::{SharedAccount, HANG};

const LOG: &str = "audit_log = {dir}/audit.log\n";

/// Every event once `n` session_end events are written (bounded).
async fn until_sessions_end(sa: &SharedAccount, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let evs = events(sa, "audit.log").await;
        if evs.iter().filter(|e| e["event"] == "session_end").count() >= n {
            return evs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} session_end: {evs:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// How the transaction the statement with `text` ran in ended: (outcome,
/// savepoint_rollbacks). Exactly one statement has that text, and its transaction exactly one
/// end: the statement's own `xact_end` (then no transaction_end), or one transaction_end.
fn ended(evs: &[Value], text: &str) -> (String, u64) {
    let stmts: Vec<&Value> = statements(evs)
        .into_iter()
        .filter(|e| e["text"] == text)
        .collect();
    assert_eq!(stmts.len(), 1, "{text:?}: {evs:#?}");
    let s = stmts[0];
    let xact = s["xact"].as_u64().unwrap_or_else(|| panic!("no xact: {s}"));
    let ends: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["event"] == "transaction_end"
                && e["session_id"] == s["session_id"]
                && e["xact"] == xact
        })
        .collect();
    if let Some(own) = s["xact_end"].as_str() {
        assert!(ends.is_empty(), "{text:?} (xact {xact}): {evs:#?}");
        return (own.to_string(), 0);
    }
    assert_eq!(ends.len(), 1, "{text:?} (xact {xact}): {evs:#?}");
    let e = ends[0];
    assert_eq!(e["client_user"], s["client_user"]);
    assert_eq!(e["backend_pid"], s["backend_pid"]);
    (
        e["outcome"].as_str().unwrap_or_default().to_string(),
        e["savepoint_rollbacks"].as_u64().unwrap_or(99),
    )
}

fn insert(name: &str) -> String {
    format!("insert into datasets(name) values ('{name}')")
}

/// The names in the table, sorted.
async fn stored(sa: &SharedAccount) -> Vec<String> {
    let rows = sa
        .direct()
        .await
        .query("select name from datasets order by name", &[])
        .await
        .expect("reading datasets");
    rows.iter().map(|r| r.get(0)).collect()
}

fn outcome(s: &str) -> (String, u64) {
    (s.to_string(), 0)
}

/// psql, simple protocol: an autocommitted write, a Query whose later statement fails (one
/// implicit transaction), an explicit block rolled back and one committed in one Query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_queries_say_whether_their_writes_stuck() {
    let sa = SharedAccount::new(2, LOG).await;
    let cs = sa.connstring(&sa.alice);
    psql_ok(&cs, &insert("kept")).await;
    let failing = format!("{}; select 1/0", insert("undone by an error"));
    psql_err(&cs, &failing).await;
    let block = format!("begin; {}; rollback", insert("rolled back"));
    psql_ok(&cs, &block).await;
    let committed = format!("begin; {}; commit", insert("committed"));
    psql_ok(&cs, &committed).await;
    // A COMMIT before the Query's end: the first write commits, the second rolls back.
    let split = format!(
        "{}; commit; {}; select 1/0",
        insert("split kept"),
        insert("split undone")
    );
    psql_err(&cs, &split).await;
    let evs = until_sessions_end(&sa, 5).await;
    assert_eq!(ended(&evs, &insert("kept")), outcome("commit"));
    assert_eq!(ended(&evs, &failing), outcome("rollback"));
    assert_eq!(ended(&evs, &block), outcome("rollback"));
    assert_eq!(ended(&evs, &committed), outcome("commit"));
    let s = statements(&evs)
        .into_iter()
        .find(|e| e["text"] == split.as_str())
        .unwrap();
    let (first, last) = (s["xact"].as_u64().unwrap(), s["xact_last"].as_u64());
    assert_eq!(last, Some(first + 1), "{s}");
    let end = |n: u64| {
        evs.iter()
            .find(|e| {
                e["event"] == "transaction_end"
                    && e["session_id"] == s["session_id"]
                    && e["xact"] == n
            })
            .map(|e| e["outcome"].clone())
    };
    assert_eq!(end(first), Some("commit".into()), "{evs:#?}");
    assert_eq!(end(first + 1), Some("rollback".into()), "{evs:#?}");
    assert_eq!(
        stored(&sa).await,
        ["committed", "kept", "split kept"],
        "the log agrees with the table"
    );
    // Read-only traffic adds no transaction_end, and a transaction that was one Query's
    // alone is told in its event: only the split Query's two transactions have one.
    let ends = evs
        .iter()
        .filter(|e| e["event"] == "transaction_end")
        .count();
    assert_eq!(ends, 2, "{evs:#?}");
}

/// tokio-postgres (extended protocol) with explicit transactions: rolled back, failed then
/// committed (the COMMIT answers ROLLBACK), a savepoint rolled back inside a committed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_transactions_end_as_postgresql_ended_them() {
    let sa = SharedAccount::new(2, LOG).await;
    let mut alice = sa.connect(&sa.alice).await;
    let ins = "insert into datasets(name) values ($1)";
    let tx = alice.transaction().await.unwrap();
    tx.execute(ins, &[&"rolled back"]).await.unwrap();
    tx.rollback().await.unwrap();

    let tx = alice.transaction().await.unwrap();
    tx.execute("update datasets set name = 'failed' where false", &[])
        .await
        .unwrap();
    tx.batch_execute("select 1/0").await.unwrap_err();
    tx.commit().await.unwrap();

    let mut tx = alice.transaction().await.unwrap();
    tx.execute("delete from datasets where name = 'none'", &[])
        .await
        .unwrap();
    let sp = tx.savepoint("sp").await.unwrap();
    sp.execute("update datasets set name = 'x' where false", &[])
        .await
        .unwrap();
    sp.rollback().await.unwrap();
    tx.execute(
        "insert into datasets(name) values ('after the savepoint')",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    alice
        .execute("insert into datasets(name) values ('autocommitted')", &[])
        .await
        .unwrap();
    drop(alice);
    let evs = until_sessions_end(&sa, 1).await;
    assert_eq!(ended(&evs, ins), outcome("rollback"));
    assert_eq!(
        ended(&evs, "update datasets set name = 'failed' where false"),
        outcome("rollback")
    );
    assert_eq!(
        ended(&evs, "delete from datasets where name = 'none'"),
        ("commit".to_string(), 1),
        "committed, with a savepoint rolled back in it"
    );
    assert_eq!(
        ended(&evs, "insert into datasets(name) values ('autocommitted')"),
        outcome("commit")
    );
    assert_eq!(stored(&sa).await, ["after the savepoint", "autocommitted"]);
}

/// An extended-protocol pipeline is one implicit transaction up to its Sync: a write before
/// a failing Execute is rolled back with it, one after it is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_write_before_a_failure_is_rolled_back() {
    let sa = SharedAccount::new(2, LOG).await;
    let mut c = RawClient::login(sa.porter.addr(), &sa.alice, sa.password(&sa.alice), &sa.db).await;
    let exec = |sql: &str| {
        let mut parse = vec![0u8];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        parse
    };
    let bind: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0];
    let execute: &[u8] = &[0, 0, 0, 0, 0];
    let (first, failing, skipped) = (
        exec(&insert("pipelined")),
        exec("select 1/0"),
        exec(&insert("skipped")),
    );
    c.send_all(&[
        (b'P', &first),
        (b'B', bind),
        (b'E', execute),
        (b'P', &failing),
        (b'B', bind),
        (b'E', execute),
        (b'P', &skipped),
        (b'B', bind),
        (b'E', execute),
        (b'S', &[]),
    ])
    .await;
    let msgs = c.until_ready().await.expect("answered");
    assert!(msgs
        .iter()
        .any(|m| m.sqlstate().as_deref() == Some("22012")));
    c.extended(&insert("kept")).await;
    c.until_ready().await.expect("answered");
    drop(c);
    let evs = until_sessions_end(&sa, 1).await;
    assert_eq!(ended(&evs, &insert("pipelined")), outcome("rollback"));
    let s = statements(&evs);
    let skipped = s.iter().find(|e| e["outcome"] == "skipped").unwrap();
    let pipelined = s.iter().find(|e| e["text"] == insert("pipelined")).unwrap();
    assert_eq!(skipped["xact"], pipelined["xact"], "{evs:#?}");
    assert_eq!(ended(&evs, &insert("kept")), outcome("commit"));
    assert_eq!(stored(&sa).await, ["kept"]);
}

/// A session that ends inside a transaction: its server connection is closed, which rolls the
/// transaction back, whether the client left or the server went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_at_the_session_end_is_rolled_back() {
    let sa = SharedAccount::new(2, LOG).await;
    let alice = sa.connect(&sa.alice).await;
    alice.batch_execute("begin").await.unwrap();
    alice
        .execute("insert into datasets(name) values ('client left')", &[])
        .await
        .unwrap();
    drop(alice);
    until_sessions_end(&sa, 1).await;

    let bob = sa.connect(&sa.bob).await;
    bob.batch_execute("begin").await.unwrap();
    bob.execute("insert into datasets(name) values ('server left')", &[])
        .await
        .unwrap();
    let pid: i32 = bob
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let direct = sa.cluster.superuser_client().await;
    direct
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let evs = until_sessions_end(&sa, 2).await;
    drop(bob);
    assert_eq!(
        ended(&evs, "insert into datasets(name) values ('client left')"),
        outcome("rollback")
    );
    assert_eq!(
        ended(&evs, "insert into datasets(name) values ('server left')"),
        outcome("rollback")
    );
    assert!(stored(&sa).await.is_empty());
}

/// Transaction mode (the same code, one server connection per transaction): transactions are
/// numbered across the session's server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_numbers_the_sessions_transactions() {
    let sa = SharedAccount::new(1, &format!("{LOG}pool_mode = transaction\n")).await;
    let mut alice = sa.connect(&sa.alice).await;
    let bob = sa.connect(&sa.bob).await;
    alice.simple_query(&insert("t1")).await.unwrap();
    bob.simple_query("select 1").await.unwrap();
    let tx = alice.transaction().await.unwrap();
    tx.simple_query(&insert("t2")).await.unwrap();
    tx.rollback().await.unwrap();
    bob.simple_query("select 1").await.unwrap();
    alice.simple_query(&insert("t3")).await.unwrap();
    drop(alice);
    let evs = until_sessions_end(&sa, 1).await;
    assert_eq!(ended(&evs, &insert("t1")), outcome("commit"));
    assert_eq!(ended(&evs, &insert("t2")), outcome("rollback"));
    assert_eq!(ended(&evs, &insert("t3")), outcome("commit"));
    let xacts: Vec<u64> = ["t1", "t2", "t3"]
        .iter()
        .map(|n| {
            statements(&evs)
                .into_iter()
                .find(|e| e["text"] == insert(n))
                .and_then(|e| e["xact"].as_u64())
                .unwrap()
        })
        .collect();
    assert!(xacts[0] < xacts[1] && xacts[1] < xacts[2], "{xacts:?}");
    assert_eq!(stored(&sa).await, ["t1", "t3"]);
}

/// A session that ends with a request unanswered: its transaction's end is `unknown`, not
/// `rollback`. Here the autocommitted write commits after the client left (PostgreSQL finds
/// the closed socket only when it sends the answer, after the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_when_the_session_ends_is_unknown() {
    let sa = SharedAccount::new(2, LOG).await;
    let mut c = RawClient::login(sa.porter.addr(), &sa.alice, sa.password(&sa.alice), &sa.db).await;
    let sql = format!("{}; select pg_sleep(1)", insert("in flight"));
    c.query(&sql).await;
    let su = sa.cluster.superuser_client().await;
    crate::support::checks::backend_running_as(&su, &sa.rubin, "pg_sleep(1)").await;
    drop(c);
    let evs = until_sessions_end(&sa, 1).await;
    assert_eq!(ended(&evs, &sql), outcome("unknown"));
    let deadline = tokio::time::Instant::now() + HANG;
    while stored(&sa).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Statement mode ends a session that leaves a transaction open (its ReadyForQuery `T` is
/// held back, the server connection closed): the write ran, and its transaction was rolled
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_refused_in_statement_mode_is_rolled_back() {
    let sa = SharedAccount::new(2, &format!("{LOG}pool_mode = statement\n")).await;
    let sql = format!("begin; {}", insert("in a block"));
    psql_err(&sa.connstring(&sa.alice), &sql).await;
    let evs = until_sessions_end(&sa, 1).await;
    let s = statements(&evs);
    assert_eq!(s.len(), 1, "{evs:#?}");
    assert_eq!(s[0]["outcome"], "ok", "{evs:#?}");
    assert_eq!(ended(&evs, &sql), outcome("rollback"));
    assert!(stored(&sa).await.is_empty());
}

/// A DO block (or a CALLed procedure) may commit inside, which no tag shows: when its
/// transaction then rolls back, part of it may have stuck, so its end is `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_do_block_that_committed_inside_then_failed_is_unknown() {
    let sa = SharedAccount::new(2, LOG).await;
    let sql = format!(
        "do $$ begin {}; commit; {}; perform 1/0; end $$",
        insert("committed inside"),
        insert("rolled back inside")
    );
    psql_err(&sa.connstring(&sa.alice), &sql).await;
    let evs = until_sessions_end(&sa, 1).await;
    assert_eq!(ended(&evs, &sql), outcome("unknown"));
    assert_eq!(stored(&sa).await, ["committed inside"]);
}

/// Savepoint statements (read-only, not logged on their own) are logged in a transaction
/// that has logged statements, in order, those before its first logged one included: which
/// writes a ROLLBACK TO undid can be read from the log. A read-only transaction's savepoints
/// add nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_around_logged_writes_are_logged_in_order() {
    let sa = SharedAccount::new(2, LOG).await;
    let alice = sa.connect(&sa.alice).await;
    for sql in [
        "begin",
        "savepoint r",
        "select 1",
        "rollback to savepoint r",
        "release r",
        "commit",
        "begin",
        "savepoint a",
        &insert("undone"),
        "rollback to a",
        &insert("kept"),
        "release savepoint a",
        "commit",
    ] {
        alice.batch_execute(sql).await.unwrap();
    }
    drop(alice);
    let evs = until_sessions_end(&sa, 1).await;
    let logged: Vec<String> = evs
        .iter()
        .filter(|e| e["event"] == "statement" || e["event"] == "transaction_end")
        .map(|e| match e["event"].as_str() {
            Some("statement") => format!("{} ({})", e["text"].as_str().unwrap(), e["xact"]),
            _ => format!(
                "end {} ({}, {})",
                e["outcome"].as_str().unwrap(),
                e["xact"],
                e["savepoint_rollbacks"]
            ),
        })
        .collect();
    assert_eq!(
        logged,
        [
            "savepoint a (2)".to_string(),
            format!("{} (2)", insert("undone")),
            "rollback to a (2)".to_string(),
            format!("{} (2)", insert("kept")),
            "release savepoint a (2)".to_string(),
            "end commit (2, 1)".to_string(),
        ],
        "{evs:#?}"
    );
    assert_eq!(stored(&sa).await, ["kept"]);
}

/// `audit_statements = all` logs read-only statements too, but only a transaction with a
/// statement that may write gets a `transaction_end`: a read-only one changed nothing
/// whichever way it ended (otherwise every autocommitted SELECT would write two lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_get_no_end_in_all_mode() {
    let sa = SharedAccount::new(2, &format!("{LOG}audit_statements = all\n")).await;
    let cs = sa.connstring(&sa.alice);
    psql_ok(&cs, "select 1").await;
    psql_ok(&cs, "begin; select 2; rollback").await;
    psql_ok(&cs, &insert("written")).await;
    let evs = until_sessions_end(&sa, 3).await;
    let texts: Vec<&str> = statements(&evs)
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"select 1"),
        "read-only statements are logged: {evs:#?}"
    );
    assert!(texts.contains(&"begin; select 2; rollback"), "{evs:#?}");
    assert_eq!(ended(&evs, &insert("written")), outcome("commit"));
    let ends = evs
        .iter()
        .filter(|e| e["event"] == "transaction_end")
        .count();
    assert_eq!(ends, 0, "the write's transaction is in its event: {evs:#?}");
}

/// An autocommitted write is one line: its statement event says how its transaction ended
/// (`xact_end`), simple protocol and extended (the Execute's event waits for its Sync's
/// ReadyForQuery), committed or rolled back; a transaction of more statements still gets a
/// transaction_end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autocommitted_write_is_one_line() {
    let sa = SharedAccount::new(2, LOG).await;
    let cs = sa.connstring(&sa.alice);
    psql_ok(&cs, &insert("simple")).await;
    let failing = format!("{}; select 1/0", insert("undone"));
    psql_err(&cs, &failing).await;
    let alice = sa.connect(&sa.alice).await;
    alice
        .execute(insert("extended").as_str(), &[])
        .await
        .unwrap();
    alice
        .execute("insert into datasets(name) values ((1/0)::text)", &[])
        .await
        .unwrap_err();
    alice.batch_execute("begin").await.unwrap();
    alice
        .execute(insert("in a block").as_str(), &[])
        .await
        .unwrap();
    alice.batch_execute("commit").await.unwrap();
    drop(alice);
    let evs = until_sessions_end(&sa, 3).await;
    let own = |text: &str| {
        let s = statements(&evs);
        let s = s.iter().find(|e| e["text"] == text).expect(text);
        s["xact_end"].as_str().map(str::to_string)
    };
    assert_eq!(
        own(&insert("simple")).as_deref(),
        Some("commit"),
        "{evs:#?}"
    );
    assert_eq!(own(&failing).as_deref(), Some("rollback"), "{evs:#?}");
    assert_eq!(
        own(&insert("extended")).as_deref(),
        Some("commit"),
        "{evs:#?}"
    );
    assert_eq!(
        own("insert into datasets(name) values ((1/0)::text)").as_deref(),
        Some("rollback"),
        "{evs:#?}"
    );
    assert_eq!(own(&insert("in a block")), None, "{evs:#?}");
    assert_eq!(ended(&evs, &insert("in a block")), outcome("commit"));
    let lines = evs
        .iter()
        .filter(|e| e["event"] == "statement" || e["event"] == "transaction_end")
        .count();
    assert_eq!(
        lines, 6,
        "four one-line writes, one write and its end: {evs:#?}"
    );
    assert_eq!(stored(&sa).await, ["extended", "in a block", "simple"]);
}

//! `log_format = pgbouncer`: close lines of server connections whose reason was checked
//! live against PgBouncer 1.18 (quoted at each test) or is pgporter's own.

use crate::log_lines::Logged;
use crate::ops::eventually;
use crate::support::cluster;

/// Wait until the pool of `db` has a server connection idle (SHOW POOLS' sv_idle).
async fn an_idle_connection(porter: &Logged, user: &str, db: &str) {
    let admin = porter.client(user, "pgbouncer").await;
    eventually("an idle server connection", || async {
        admin
            .simple_query("show pools")
            .await
            .expect("show pools")
            .iter()
            .any(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    r.get("database") == Some(db) && r.get("sv_idle").is_some_and(|n| n != "0")
                }
                _ => false,
            })
    })
    .await;
}

/// A LISTEN left behind in transaction mode, then a NOTIFY to the idle connection. PgBouncer
/// 1.18 (live) skips the message and keeps the connection: `WARNING S-0x5586b0426ef0:
/// postgres/postgres@127.0.0.1:12100 got packet 'A' from server when not linked`. pgporter
/// closes it (the next client must not get the notification, nor later ones), in those words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_to_an_idle_connection_is_named_in_its_close_line() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("ln", "lndb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "pool_mode = transaction\n").await;
    let listener = porter.client(&user, &db).await;
    listener
        .simple_query("listen porter_news")
        .await
        .expect("listen");
    an_idle_connection(&porter, &user, &db).await;
    let direct = cluster.local_client(&user, &db).await;
    direct
        .simple_query("notify porter_news")
        .await
        .expect("notify");
    // Found by the janitor (a client taking it might come before the notification does).
    porter
        .await_lines(
            1,
            "LOG",
            'S',
            "closing because: got packet 'A' from server when not linked (age=",
        )
        .await;
    assert!(porter
        .lines("LOG", 'S', "closing because: server conn crashed?")
        .is_empty());
}

/// A connect_query that fails: the login is refused (the client gets the error) and the
/// connection closed, with a close line. PgBouncer 1.18 (live, `connect_query='select 1/0'`)
/// keeps the connection and serves the client on it: `ERROR S: error while executing
/// exec_on_query: ERROR: division by zero`, no close line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_query_writes_a_close_line() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lq", "lqdb").await;
    let port = cluster.port();
    let porter = Logged::start(
        &db,
        &user,
        port,
        &format!(
            "[databases]\nlqcq = host=127.0.0.1 port={port} dbname={db} \
             connect_query='select 1/0'\n"
        ),
    )
    .await;
    let connstring = format!(
        "host=127.0.0.1 port={} user={user} password=pw dbname=lqcq sslmode=disable",
        porter.addr.port()
    );
    let refused = match tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await {
        Err(e) => format!("{e:?}"),
        Ok((client, conn)) => {
            tokio::spawn(conn);
            let e = client.simple_query("select 1").await.expect_err("refused");
            format!("{e:?}")
        }
    };
    assert!(refused.contains("division by zero"), "{refused}");
    let closes = porter
        .await_lines(1, "LOG", 'S', "closing because: connect_query failed (age=")
        .await;
    assert_eq!(closes.len(), 1, "{}", porter.log());
}

//! `log_format = pgbouncer`: close lines of server connections whose reason was checked
//! live against PgBouncer 1.18 (quoted at each test) or is pgporter's own.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::faults_server::{signal, Continue};
use crate::log_lines::Logged;
use crate::ops::eventually;
use crate::support::cluster;
use crate::support::raw::RawClient;

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
    porter.a_connection(&user, &db, "sv_idle").await;
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

/// A connect_query that fails: the login is refused (the client gets 08006 with the query's
/// error) and the connection closed, with a close line. PgBouncer 1.18 (live, `connect_query='select 1/0'`)
/// keeps the connection and serves the client on it: `ERROR S: error while executing
/// exec_on_query: ERROR: division by zero`, no close line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_query_writes_a_close_line() {
    // 08006, not the query's 22012: the client's own login was not what failed.
    refused_by_connect_query(
        "lq",
        "select 1/0",
        "connect_query failed: ERROR: division by zero (22012)",
    )
    .await;
}

/// A connect_query that leaves a transaction open (`begin`): the connection is refused as for
/// a failed one, so no client is served inside a transaction it did not open. The client
/// gets 08006 with the reason (PgBouncer 1.18, live, never answers such a login).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_query_that_opens_a_transaction_is_refused() {
    refused_by_connect_query("lb", "begin", "inside a transaction block").await;
}

/// A client of a database whose connect_query is `query` is refused with 08006 and a message
/// holding `says`, and the server connection gets one `connect_query failed` close line.
async fn refused_by_connect_query(name: &str, query: &str, says: &str) {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db(name, &format!("{name}db")).await;
    let port = cluster.port();
    let porter = Logged::start(
        &db,
        &user,
        port,
        &format!("[databases]\n{name}cq = host=127.0.0.1 port={port} dbname={db} connect_query='{query}'\n"),
    )
    .await;
    let connstring = format!(
        "host=127.0.0.1 port={} user={user} password=pw dbname={name}cq sslmode=disable",
        porter.addr.port()
    );
    let refused = match tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await {
        Err(e) => e,
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client.simple_query("select 1").await.expect_err("refused")
        }
    };
    let text = format!("{refused:?}");
    assert!(text.contains(says), "{text}");
    assert_eq!(refused.code().map(|c| c.code()), Some("08006"), "{text}");
    let closes = porter
        .await_lines(1, "LOG", 'S', "closing because: connect_query failed (age=")
        .await;
    assert_eq!(closes.len(), 1, "{}", porter.log());
}

/// A request cancelled while its server connection is set up (pgporter's SETs of the client's
/// parameters), never synced: query_timeout ends the session as for a request in progress,
/// and the connection's close line gives that reason, as PgBouncer 1.18's does for a query
/// timeout (live: `closing because: query timeout (age=1s)`). It said `unclean server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_up_ended_by_query_timeout_says_so_in_its_close_line() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lt", "ltdb").await;
    let porter = Logged::start(
        &db,
        &user,
        cluster.port(),
        "default_pool_size = 1\nquery_timeout = 1\n",
    )
    .await;
    let first = porter.client(&user, &db).await;
    let row = first
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid");
    let pid: i32 = row.get(0);
    drop(first);
    porter.a_connection(&user, &db, "sv_idle").await;
    // The backend stops answering: pgporter's SET of the client's parameters waits on it.
    signal(pid, "-STOP");
    let stopped = Continue(pid);
    let params = [("application_name", "set-up"), ("TimeZone", "UTC+3")];
    let (mut c, _) = RawClient::login_with(porter.addr, &user, "pw", &db, &params).await;
    // Parse, Bind, Execute, Flush: a batch without its Sync.
    c.send_all(&[
        (b'P', b"\0select 1\0\0\0"),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        (b'E', b"\0\0\0\0\0"),
        (b'H', b""),
    ])
    .await;
    porter.a_connection(&user, &db, "sv_active").await;
    let (key_pid, secret) = c.key.expect("BackendKeyData");
    let mut cancel = TcpStream::connect(porter.addr).await.expect("connect");
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend_from_slice(&key_pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    cancel.write_all(&packet).await.expect("cancel request");
    let _ = cancel.read(&mut [0u8; 1]).await;
    drop(stopped);
    let cancelled = c.read_msg().await.expect("the cancelled batch's error");
    assert_eq!(
        cancelled.sqlstate().as_deref(),
        Some("57014"),
        "{cancelled:?}"
    );
    porter
        .await_lines(1, "LOG", 'S', "closing because: query timeout (age=")
        .await;
    let log = porter.log();
    assert!(!log.contains("closing because: unclean server"), "{log}");
}

/// A connect_query whose server connection breaks mid-way (here it ends its own backend) or
/// outlasts server_connect_timeout: the close line names the connection by its backend's pid,
/// as for any other connection. PgBouncer 1.18 (live): `S-0x..: db/user@host closing because:
/// server conn crashed? (age=0s)` after `ERROR S: error while executing exec_on_query: FATAL:
/// terminating connection due to administrator command`, and `closing because: connect
/// timeout (age=2s)`. pgporter wrote no line for the first and `S-0x0` for the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_query_that_breaks_or_times_out_writes_a_close_line_with_the_pid() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lb", "lbdb").await;
    let port = cluster.port();
    let porter = Logged::start(
        &db,
        &user,
        port,
        &format!(
            "server_connect_timeout = 1\n[databases]\n\
             lbcrash = host=127.0.0.1 port={port} dbname={db} \
             connect_query='select pg_terminate_backend(pg_backend_pid())'\n\
             lbslow = host=127.0.0.1 port={port} dbname={db} \
             connect_query='select pg_sleep(60)'\n"
        ),
    )
    .await;
    for (entry, reason) in [
        ("lbcrash", "server conn crashed?"),
        ("lbslow", "connect timeout"),
    ] {
        let connstring = format!(
            "host=127.0.0.1 port={} user={user} password=pw dbname={entry} sslmode=disable",
            porter.addr.port()
        );
        // Its login waits for the pool's server login; whatever it gets is not checked here.
        let client = tokio::spawn(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client.simple_query("select 1").await;
            }
        });
        let text = format!("closing because: {reason} (age=");
        let mine = || {
            porter
                .lines("LOG", 'S', &text)
                .into_iter()
                .filter(|(_, m)| m.contains(&format!(": {entry}/")))
                .collect::<Vec<_>>()
        };
        eventually(&format!("{entry}: a close line"), || async {
            !mine().is_empty()
        })
        .await;
        for (id, line) in mine() {
            assert_ne!(id, "S-0x0", "{entry}: no pid in {line}");
        }
        client.abort();
    }
}

//! `log_format = pgbouncer`: the lines of cancel requests, compared whole, in order, with
//! PgBouncer 1.18's (captured live with the same clients; quoted at each test).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::log_format::split;
use crate::log_lines::Logged;
use crate::log_lines_login::{assert_unnumbered_server, at, of};
use crate::support::checks::backend_running_as;
use crate::support::cluster;
use crate::support::raw::RawClient;

/// Send a CancelRequest for `key` to `porter` and wait for it to close the connection.
async fn cancel(porter: &Logged, (pid, secret): (i32, i32)) {
    let mut cancel = TcpStream::connect(porter.addr).await.expect("connect");
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    cancel.write_all(&packet).await.expect("cancel request");
    let _ = cancel.read(&mut [0u8; 1]).await;
}

/// A query cancelled (session mode). PgBouncer 1.18 (live, `select pg_sleep(30)` cancelled
/// by psql at SIGINT; log_connections, log_disconnections, verbose = 0):
/// `LOG S-0x5568afc9d300: app/postgres@127.0.0.1:10150 new connection to server (from
/// 127.0.0.1:52368)`, `LOG started sending cancel request`, `LOG S-0x5568afc9d300:
/// app/postgres@127.0.0.1:10150 closing because: successfully sent cancel request (age=0s)`,
/// `LOG C-0x5568afc95c20: app/(nouser)@127.0.0.1:48626 closing because: successfully sent
/// cancel request (age=0s)`. The server connection has no backend: pgporter's `S-0x0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_writes_pgbouncers_lines_in_its_order() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "pool_mode = session\n").await;
    let mut busy = RawClient::login(porter.addr, &user, "pw", &db).await;
    busy.query("select pg_sleep(30)").await;
    let su = cluster.superuser_client().await;
    backend_running_as(&su, &user, "pg_sleep(30)").await;
    cancel(&porter, busy.key.expect("BackendKeyData")).await;
    let answer = busy.until_ready().await.expect("an answer");
    let error = answer.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(error.sqlstate().as_deref(), Some("57014"));
    let text = "closing because: successfully sent cancel request (age=";
    let client = porter.await_lines(1, "LOG", 'C', text).await;
    let log = porter.log();
    let named = format!("{db}/{user}");
    assert_unnumbered_server(&log, &named, "successfully sent cancel request");
    let (id, line) = &client[0];
    assert_eq!(
        of(&log, id),
        [format!(
            "LOG {db}/(nouser) closing because: successfully sent cancel request"
        )],
        "{line}: {log}"
    );
    let order = [
        at(&log, "new connection", |l, m| {
            l == "LOG" && m.starts_with("S-0x0: ") && m.contains(" new connection to server ")
        }),
        at(&log, "started sending", |l, m| {
            l == "LOG" && m == "started sending cancel request"
        }),
        at(&log, "server closing", |l, m| {
            l == "LOG" && m.starts_with("S-0x0: ") && m.contains(" closing because: ")
        }),
        at(&log, "client closing", |l, m| {
            l == "LOG" && m.starts_with(&format!("{id}: "))
        }),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {log}");
    assert_eq!(
        log.lines()
            .filter_map(split)
            .filter(|(_, _, m)| m.contains("cancel request"))
            .count(),
        3,
        "one of each: {log}"
    );
}

/// Cancel requests that find nothing to cancel. PgBouncer 1.18 (live, raw clients): a key
/// nobody has, or the key of a client gone, `LOG C-0x5568afc959c0: (nodb)/(nouser)@
/// 127.0.0.1:43710 closing because: failed cancel request (age=0s)`; the key of a client with
/// no server connection, `LOG C-0x5568afc95c20: (nodb)/(nouser)@127.0.0.1:60616 closing
/// because: cancel request for idle client (age=0s)`. No server line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_with_nothing_to_cancel_write_pgbouncers_lines() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "pool_mode = transaction\n").await;
    let mut idle = RawClient::login(porter.addr, &user, "pw", &db).await;
    cancel(&porter, idle.key.expect("BackendKeyData")).await;
    let mut gone = RawClient::login(porter.addr, &user, "pw", &db).await;
    let key = gone.key.expect("BackendKeyData");
    gone.send(b"X\0\0\0\x04").await;
    assert!(gone.read_msg().await.is_none(), "closed after Terminate");
    crate::ops::eventually("the client gone", || async {
        porter
            .log()
            .contains("closing because: client close request")
    })
    .await;
    cancel(&porter, key).await;
    cancel(&porter, (12345, 678)).await;
    let failed = "closing because: failed cancel request (age=";
    let lines = porter.await_lines(2, "LOG", 'C', failed).await;
    let idle_text = "closing because: cancel request for idle client (age=";
    let idle_lines = porter.await_lines(1, "LOG", 'C', idle_text).await;
    let log = porter.log();
    for (id, _) in lines.iter().chain(&idle_lines) {
        assert_eq!(of(&log, id).len(), 1, "{id}: {log}");
    }
    assert!(
        idle_lines[0].1.contains(": (nodb)/(nouser)@127.0.0.1:"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .all(|(_, l)| l.contains(": (nodb)/(nouser)@127.0.0.1:")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(" S-0x") && l.contains("cancel")),
        "no server line: {log}"
    );
    // The idle client goes on.
    let (_, status, error) = idle.rows("select 1").await;
    assert_eq!((status, error), (b'I', None), "{log}");
}

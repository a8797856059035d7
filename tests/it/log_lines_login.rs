//! `log_format = pgbouncer`: the lines of refused logins, of a server login the server
//! refuses, of a cancel request whose connection fails and of a server connection RECONNECT
//! marked, compared whole, in order, with PgBouncer 1.18's (captured live with the same
//! clients; quoted at each test).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::log_format::{object, split};
use crate::log_lines::Logged;
use crate::ops::eventually;
use crate::support::checks::backend_running_as;
use crate::support::cluster;
use crate::support::raw::RawClient;

/// The lines of the connection `id` (`C-0x..` or `S-0x..`), in order, as `LEVEL db/user
/// text`, each closing line's `(age=..)` left out (a loaded machine may take a second).
pub(crate) fn of(log: &str, id: &str) -> Vec<String> {
    log.lines()
        .filter_map(split)
        .filter_map(|(_, level, m)| {
            let (_, db, user, text) = object(m)?;
            let text = text.split(" (age=").next().unwrap_or(text);
            (m.split_once(": ")?.0 == id).then(|| format!("{level} {db}/{user} {text}"))
        })
        .collect()
}

/// A server connection without a backend (`S-0x0`: a failed login, a cancel's) wrote two
/// lines for `named` (`db/user`): its `new connection to server` line, then `closing because:
/// {reason}`.
pub(crate) fn assert_unnumbered_server(log: &str, named: &str, reason: &str) {
    let server = of(log, "S-0x0");
    assert_eq!(server.len(), 2, "{log}");
    assert!(
        server[0].starts_with(&format!(
            "LOG {named} new connection to server (from 127.0.0.1:"
        )),
        "{log}"
    );
    assert_eq!(server[1], format!("LOG {named} closing because: {reason}"));
}

/// The position in `log` of the first line whose level and message `matches`.
pub(crate) fn at(log: &str, what: &str, matches: impl Fn(&str, &str) -> bool) -> usize {
    log.lines()
        .filter_map(split)
        .position(|(_, level, m)| matches(level, m))
        .unwrap_or_else(|| panic!("no {what} line in:\n{log}"))
}

/// A wrong password, a user not in the auth file, and a startup parameter pgporter does not
/// take. PgBouncer 1.18 (live, auth_type = scram-sha-256):
/// `LOG C-0x55f68df999d0: app/alice@127.0.0.1:56012 login attempt: db=app user=alice tls=no`,
/// `ERROR C-..: app/alice@.. password authentication failed`,
/// `LOG C-..: app/alice@.. closing because: SASL authentication failed (age=0s)`,
/// `WARNING C-..: app/alice@.. pooler error: SASL authentication failed`; for the unknown user
/// first `LOG C-..: (nodb)/(nouser)@127.0.0.1:56004 no such user: nobody`, then the same four
/// named `(nodb)/nobody`; for `options`, before any password is asked for,
/// `WARNING C-..: (nodb)/(nouser)@127.0.0.1:56048 unsupported startup parameter:
/// options=-c work_mem=64kB`, `LOG C-..: (nodb)/(nouser)@.. closing because: unsupported
/// startup parameter: options (age=0s)`, `WARNING C-..: (nodb)/(nouser)@.. pooler error:
/// unsupported startup parameter: options`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_write_pgbouncers_lines_in_its_order() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "auth_failure_delay = 0\n").await;
    let connect = |user: &str, password: &str, extra: &str| {
        let connstring = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} \
             sslmode=disable {extra}",
            porter.addr.port()
        );
        async move {
            match tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await {
                Ok(_) => panic!("{connstring} got in"),
                Err(e) => e.as_db_error().map(|e| e.message().to_string()),
            }
        }
    };
    connect(&user, "wrong", "").await;
    let nobody = cluster.unique_name("lgnobody");
    connect(&nobody, "pw", "").await;
    // Refused before authentication: a wrong password is not looked at.
    let options = connect(&user, "wrong", "options='-c work_mem=64kB'").await;
    assert_eq!(
        options.as_deref(),
        Some("unsupported startup parameter: options")
    );
    porter
        .await_lines(3, "WARNING", 'C', "pooler error: ")
        .await;
    let log = porter.log();
    let id = |level: &str, text: &str| {
        let lines = porter.lines(level, 'C', text);
        assert_eq!(lines.len(), 1, "{level} {text}: {log}");
        lines[0].0.clone()
    };
    let named = format!("{db}/{user}");
    let wrong = id("LOG", &format!("login attempt: db={db} user={user} "));
    assert_eq!(
        of(&log, &wrong),
        [
            format!("LOG {named} login attempt: db={db} user={user} tls=no"),
            format!("ERROR {named} password authentication failed"),
            format!("LOG {named} closing because: SASL authentication failed"),
            format!("WARNING {named} pooler error: SASL authentication failed"),
        ],
        "{log}"
    );
    let unknown = id("LOG", &format!("no such user: {nobody}"));
    let named = format!("(nodb)/{nobody}");
    assert_eq!(
        of(&log, &unknown),
        [
            format!("LOG (nodb)/(nouser) no such user: {nobody}"),
            format!("LOG {named} login attempt: db={db} user={nobody} tls=no"),
            format!("ERROR {named} password authentication failed"),
            format!("LOG {named} closing because: SASL authentication failed"),
            format!("WARNING {named} pooler error: SASL authentication failed"),
        ],
        "{log}"
    );
    let refused = id("WARNING", "unsupported startup parameter: ");
    assert_eq!(
        of(&log, &refused),
        [
            "WARNING (nodb)/(nouser) unsupported startup parameter: options=-c work_mem=64kB",
            "LOG (nodb)/(nouser) closing because: unsupported startup parameter: options",
            "WARNING (nodb)/(nouser) pooler error: unsupported startup parameter: options",
        ],
        "{log}"
    );
}

/// A server login the server refuses (a wrong server-side password). PgBouncer 1.18 (live):
/// `LOG C-0x55f68df999d0: app/wrongsrv@127.0.0.1:56016 login attempt: db=app user=wrongsrv
/// tls=no`, `LOG S-0x55f68dfa10b0: app/wrongsrv@127.0.0.1:10200 new connection to server (from
/// 127.0.0.1:43836)`, `WARNING server login failed: FATAL password authentication failed for
/// user "wrongsrv"`, `LOG C-..: closing because: password authentication failed for user
/// "wrongsrv" (age=0s)`, `WARNING C-..: pooler error: password authentication failed for user
/// "wrongsrv"`, `LOG S-..: closing because: login failed (age=0s)`, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_login_writes_pgbouncers_lines() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let pg = cluster.port();
    let porter = Logged::start(
        &db,
        &user,
        pg,
        &format!(
            "[databases]\nlgbadpw = host=127.0.0.1 port={pg} dbname={db} user={user} \
             password=nope\n"
        ),
    )
    .await;
    let connstring = format!(
        "host=127.0.0.1 port={} user={user} password=pw dbname=lgbadpw sslmode=disable",
        porter.addr.port()
    );
    let refused = tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await;
    let server_error = format!("password authentication failed for user \"{user}\"");
    assert_eq!(
        refused
            .err()
            .and_then(|e| e.as_db_error().map(|e| e.message().to_string())),
        Some(server_error.clone())
    );
    porter
        .await_lines(1, "LOG", 'S', "closing because: login failed")
        .await;
    let log = porter.log();
    let client = porter.lines("LOG", 'C', "login attempt: db=lgbadpw ");
    assert_eq!(client.len(), 1, "one login attempt line: {log}");
    let named = format!("lgbadpw/{user}");
    assert_eq!(
        of(&log, &client[0].0),
        [
            format!("LOG {named} login attempt: db=lgbadpw user={user} tls=no"),
            format!("LOG {named} closing because: {server_error}"),
            format!("WARNING {named} pooler error: {server_error}"),
        ],
        "{log}"
    );
    // No backend pid: the connection is `S-0x0`.
    assert_unnumbered_server(&log, &named, "login failed");
    let failed = format!("server login failed: FATAL {server_error}");
    let (id, attempt) = &client[0];
    let order = [
        at(&log, "attempt", |l, m| l == "LOG" && m == attempt.as_str()),
        at(&log, "new connection", |l, m| {
            l == "LOG" && m.starts_with("S-0x0: ") && m.contains(" new connection to server ")
        }),
        at(&log, "server login failed", |l, m| {
            l == "WARNING" && m == failed
        }),
        at(&log, "client closing", |l, m| {
            l == "LOG" && m.starts_with(&format!("{id}: ")) && m.contains(" closing because: ")
        }),
        at(&log, "pooler error", |l, m| {
            l == "WARNING" && m.starts_with(&format!("{id}: ")) && m.contains(" pooler error: ")
        }),
        at(&log, "server closing", |l, m| {
            l == "LOG" && m.starts_with("S-0x0: ") && m.contains(" closing because: login failed")
        }),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {log}");
    assert!(
        log.contains(&format!(" WARNING {failed}\n")),
        "the line is PgBouncer's, nothing after the error: {log}"
    );
}

/// A forwarder to PostgreSQL that stops taking connections when `stop` is dropped (those it
/// took go on).
async fn forwarder(pg: u16) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { return };
                    tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(("127.0.0.1", pg)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        }
    });
    (port, stop)
}

/// A cancel request whose connection to the server is refused. PgBouncer 1.18 (live, its
/// server reached through a forwarder that then stopped listening): `LOG S-0x55f68dfa10b0:
/// fwd/alice@127.0.0.1:10203 closing because: connect failed (age=0s)`, the pool's
/// database and user (PgBouncer tries again each second; pgporter once, and then closes the
/// request's connection: `closing because: failed to send cancel request`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_connect_fails_writes_a_connect_failed_line() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let (port, stop) = forwarder(cluster.port()).await;
    let porter = Logged::start(
        &db,
        &user,
        cluster.port(),
        &format!("[databases]\nlgfwd = host=127.0.0.1 port={port} dbname={db}\n"),
    )
    .await;
    let mut busy = RawClient::login(porter.addr, &user, "pw", "lgfwd").await;
    busy.query("select pg_sleep(30)").await;
    let su = cluster.superuser_client().await;
    let pid = backend_running_as(&su, &user, "pg_sleep(30)").await;
    drop(stop);
    eventually("the forwarder stopped listening", || async {
        TcpStream::connect(("127.0.0.1", port)).await.is_err()
    })
    .await;
    let (key_pid, secret) = busy.key.expect("BackendKeyData");
    let mut cancel = TcpStream::connect(porter.addr).await.expect("connect");
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend_from_slice(&key_pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    cancel.write_all(&packet).await.expect("cancel request");
    let _ = cancel.read(&mut [0u8; 1]).await;
    let text = "closing because: connect failed (age=";
    let lines = porter.await_lines(1, "LOG", 'S', text).await;
    let log = porter.log();
    assert_eq!(
        lines[0].1,
        format!("S-0x0: lgfwd/{user}@127.0.0.1:{port} {text}0s)"),
        "{log}"
    );
    // Its client's closing line, in pgporter's words (PgBouncer keeps the request and tries
    // again).
    let text = "closing because: failed to send cancel request (age=";
    let client = porter.await_lines(1, "LOG", 'C', text).await;
    assert!(
        client[0].1.contains(": lgfwd/(nouser)@127.0.0.1:"),
        "{}",
        porter.log()
    );
    su.execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
}

/// A server connection its client holds when RECONNECT comes, closed when the client is done
/// with it. PgBouncer 1.18 (live, session mode): `LOG S-0x55f68dfa10b0: app/alice@127.0.0.1:10200
/// closing because: close_needed (age=0s)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reconnect_marked_closes_as_close_needed() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "").await;
    let client = porter.client(&user, &db).await;
    client.simple_query("select 1").await.expect("select 1");
    let admin = porter.client(&user, "pgbouncer").await;
    admin
        .simple_query(&format!("RECONNECT {db}"))
        .await
        .expect("RECONNECT");
    client.simple_query("select 2").await.expect("select 2");
    drop(client);
    let closed = porter
        .await_lines(1, "LOG", 'S', "closing because: close_needed (age=")
        .await;
    let log = porter.log();
    let opened = porter.lines("LOG", 'S', "new connection to server");
    assert!(opened.iter().any(|(id, _)| *id == closed[0].0), "{log}");
    assert!(!log.contains("unclean server"), "{log}");
}

//! Ending sessions at any point: a kill reaching a session still setting up its server
//! connection, query_timeout over every wait for the server, a PAUSE lifted by RESUME.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::admin::{find, rows, Ops, ADMIN_PW};
use crate::support::raw::RawClient;
use crate::support::{cluster, SharedAccount, HANG};

/// "At once", on a loaded machine.
const AT_ONCE: Duration = Duration::from_secs(10);

/// A client's SHOW CLIENTS row by its port: (state, id).
async fn client_row(admin: &Client, port: u16) -> Option<(String, String)> {
    let clients = rows(admin, "SHOW CLIENTS").await;
    let port = port.to_string();
    let row = clients
        .iter()
        .find(|c| c.get("port") == Some(port.as_str()))?;
    let get = |k: &str| row.get(k).unwrap_or_default().to_string();
    Some((get("state"), get("id")))
}

/// The backends of `db` and what they ran last: (pid, state, query).
async fn backends(su: &Client, db: &str) -> Vec<(i32, String, String)> {
    su.query(
        "select pid, coalesce(state, ''), query from pg_stat_activity where datname = $1",
        &[&db],
    )
    .await
    .expect("pg_stat_activity")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// A transaction-mode client that never reads, whose every transaction starts with
/// ParameterStatus messages (its parameters are SET again after each reset, and PostgreSQL's
/// spelling differs from its own), sends one empty query at a time until pgporter's write of
/// those messages is held up by the full socket buffers: the session holds a server
/// connection, its request not yet sent. A transaction whose answer is held up instead is
/// let through (read) and the filling goes on. Returns the client (to keep its socket open),
/// its SHOW CLIENTS id and the backend it holds.
async fn held_in_set_up(ops: &Ops, admin: &Client, su: &Client) -> (RawClient, String, i32) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let sock = sock.connect(ops.porter.addr()).await.expect("connect");
    let port = sock.local_addr().expect("local addr").port();
    let app = "a".repeat(100);
    let startup: [(&[u8], &[u8]); 5] = [
        (b"user", ops.user.as_bytes()),
        (b"database", ops.db.as_bytes()),
        (b"DateStyle", b"german"),
        (b"IntervalStyle", b"ISO_8601"),
        (b"application_name", app.as_bytes()),
    ];
    let (mut c, _) = RawClient::login_on(sock, &startup, "pw").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "never held up in its set-up");
        c.query(";").await;
        let asked = Instant::now();
        // Done (idle) at once, or held up: no progress for a second.
        while client_row(admin, port).await.expect("listed").0 != "idle" {
            if asked.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            let all = backends(su, &ops.db).await;
            if let Some(b) = all
                .iter()
                .find(|b| b.1 == "idle" && b.2.contains("set_config"))
            {
                let id = client_row(admin, port).await.expect("listed").1;
                return (c, id, b.0);
            }
            // Its answer is held up (the relay's wait, which a kill always reached): let it
            // through and go on filling.
            while client_row(admin, port).await.expect("listed").0 != "idle" {
                c.read_some(1 << 16).await;
            }
        }
    }
}

/// Waits up to [`AT_ONCE`] for backend `pid` to be gone.
async fn backend_goes(su: &Client, db: &str, pid: i32, after: &str) {
    let since = Instant::now();
    while backends(su, db).await.iter().any(|b| b.0 == pid) {
        assert!(
            since.elapsed() < AT_ONCE,
            "{after}: the server connection of a client held up in its set-up stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// KILL_CLIENT and KILL reach a session whose server connection is being set up while its
/// client does not read (pgporter's ParameterStatus for it waits on the full socket): its
/// server connection is closed at once. The set-up's writes ran outside the session's kill
/// branch: the session, and the server connection, stayed until the client read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_reaches_a_session_held_up_in_its_set_up() {
    let ops = Ops::new(
        "pool_mode = transaction\nserver_reset_query_always = 1\ntcp_socket_buffer = 4096",
    )
    .await;
    let admin = ops.admin().await;
    let su = cluster().await.superuser_client().await;
    let (_held, id, pid) = held_in_set_up(&ops, &admin, &su).await;
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .expect("KILL_CLIENT");
    backend_goes(&su, &ops.db, pid, "KILL_CLIENT").await;

    let (_held, _, pid) = held_in_set_up(&ops, &admin, &su).await;
    admin
        .simple_query(&format!("KILL {}", ops.db))
        .await
        .expect("KILL");
    backend_goes(&su, &ops.db, pid, "KILL").await;
    admin
        .simple_query(&format!("RESUME {}", ops.db))
        .await
        .expect("RESUME");
}

/// A statement naming an identity setting waits, unsent, for the answers to the requests
/// before it; that wait is a wait for the server as any other: query_timeout ends it (the
/// session ends with `query timeout`, the running query is cancelled). It waited outside
/// the watchdog: here 60 s, for the earlier pg_sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_covers_the_wait_before_a_refused_statement() {
    let sa = SharedAccount::new(1, "query_timeout = 1").await;
    let mut c = RawClient::login(sa.porter.addr(), &sa.alice, sa.password(&sa.alice), &sa.db).await;
    let mut both = BytesMut::new();
    frontend::query("select pg_sleep(60)", &mut both).expect("query");
    frontend::query("SET pgporter.client_user = 'bob'", &mut both).expect("query");
    let sent = Instant::now();
    c.send(&both).await;
    let ended = tokio::time::timeout(AT_ONCE, async {
        let mut last = None;
        while let Some(m) = c.read_msg().await {
            last = Some(m);
        }
        last
    })
    .await
    .expect("query_timeout did not end the wait before the refused statement");
    let last = ended.expect("an answer");
    assert_eq!(
        last.error_field(b'M').as_deref(),
        Some("query timeout"),
        "{last:?}"
    );
    assert!(sent.elapsed() >= Duration::from_secs(1));
    // The sleep is cancelled, its connection closed.
    let su = cluster().await.superuser_client().await;
    let since = Instant::now();
    while !backends(&su, &sa.db).await.is_empty() {
        assert!(since.elapsed() < AT_ONCE, "the sleeping backend stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A RESUME while a PAUSE waits for its clients lifts the pause: the PAUSE ends then (answered
/// PAUSE, as PgBouncer 1.18 answers it once a later pause is done) and closes nothing of the
/// resumed database. It went on waiting, and then closed the idle connections "for the
/// pause" of a database no longer paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_ends_a_pause_in_progress() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let db = ops.db.clone();
    // An idle server connection in the pool, and a session holding another.
    let left = ops.client().await;
    left.simple_query("select 1").await.expect("select");
    let holder = ops.client().await;
    holder.simple_query("select 1").await.expect("select");
    drop(left);
    let idle = || async {
        let pools = rows(&admin, "SHOW POOLS").await;
        find(&pools, "database", &db)
            .get("sv_idle")
            .unwrap_or_default()
            .to_string()
    };
    let since = Instant::now();
    while idle().await != "1" {
        assert!(
            since.elapsed() < HANG,
            "the first client's connection never idle"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pauser =
        crate::support::connect(&ops.porter.connstring(&ops.admin, ADMIN_PW, "pgbouncer")).await;
    let cmd = format!("PAUSE {db}");
    let pausing = tokio::spawn(async move { pauser.simple_query(&cmd).await.map(|m| m.len()) });
    let since = Instant::now();
    while find(&rows(&admin, "SHOW DATABASES").await, "name", &db).get("paused") != Some("1") {
        assert!(since.elapsed() < HANG, "PAUSE never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect("RESUME");
    tokio::time::timeout(AT_ONCE, pausing)
        .await
        .expect("PAUSE went on after RESUME")
        .expect("task")
        .expect("PAUSE answered as done");
    assert_eq!(
        idle().await,
        "1",
        "RESUME'd database's idle connection closed"
    );
    holder
        .simple_query("select 1")
        .await
        .expect("the holder goes on");
}

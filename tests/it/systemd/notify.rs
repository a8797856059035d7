//! `Type=notify`: READY=1, RELOADING=1, STOPPING=1 and STATUS= to `$NOTIFY_SOCKET`.

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{connect_once_listening, kill, minimal_ini, wait_exit};
use crate::ops::eventually;
use crate::ops_binary::{free_port, KillOnDrop};
use crate::support::process::write_config;
use crate::support::{cluster, HANG};

/// The next notification, within the socket's read timeout (10 s unless a test sets it).
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned()
}

/// READY=1 once listening, RELOADING=1 then READY=1 around a SIGHUP reload (a failed one
/// too), STATUS= with the averages every stats_period, STOPPING=1 at SIGTERM: what systemd
/// waits for before it counts the unit started, reloaded or stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_when_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let (mut child, notify) = spawn_notified(dir.path(), port, "stats_period = 1\n", |_| {});
    let pid = child.0.as_ref().expect("child").id();
    assert_eq!(next(&notify), "READY=1");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening once READY=1 is sent");

    kill("-HUP", pid);
    // STATUS lines may come in between (stats_period = 1).
    let seen = until(&notify, "READY=1");
    let reload: Vec<&String> = seen.iter().filter(|n| !n.starts_with("STATUS=")).collect();
    assert_eq!(reload, ["RELOADING=1"], "before READY=1: {seen:?}");

    // A reload that fails still ends with READY=1 (the old configuration keeps serving).
    minimal_ini(dir.path(), port, "stats_period = 1\npool_mode = nonsense\n");
    kill("-HUP", pid);
    let seen = until(&notify, "READY=1");
    assert!(seen.iter().any(|n| n == "RELOADING=1"), "{seen:?}");

    // The next notification is a STATUS line, one each stats_period.
    let status = next(&notify);
    assert!(
        status.starts_with("STATUS=stats: ") && status.contains(" xacts/s, "),
        "{status}"
    );

    kill("-TERM", pid);
    for n in until(&notify, "STOPPING=1") {
        assert!(n.starts_with("STATUS="), "before STOPPING=1: {n}");
    }
    let status = wait_exit(child.0.take().expect("child")).await;
    assert!(status.success(), "exit status {status}");
}

/// Reloads asked for close together run one after the other, each `RELOADING=1` followed by
/// its `READY=1` before the next `RELOADING=1`: two SIGHUPs, then a console RELOAD and a SIGHUP.
/// The second `RELOADING=1` was sent while the first reload ran, so systemd took the first
/// one's `READY=1` as the end of both. A big scram_iterations makes each reload last: the
/// plaintext password in the auth_file costs a PBKDF2 of that many rounds at every load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_asked_together_notify_one_after_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = "admin_users = u\nauth_type = trust\nscram_iterations = 300000\n";
    // The start and each reload cost that PBKDF2 (about a second in a debug build, tens of
    // seconds on a loaded machine: the start's READY=1 missed next's 10 s under the CI's load),
    // so each notification may take up to `SLOW`; STATUS lines (stats_period, 60 s) may come
    // in between in so long a run.
    const SLOW: Duration = Duration::from_secs(120);
    let (mut child, notify) = spawn_notified(dir.path(), port, extra, |n| {
        n.set_read_timeout(Some(SLOW)).expect("timeout");
    });
    let next = |n: &UnixDatagram| loop {
        let got = next(n);
        if !got.starts_with("STATUS=") {
            return got;
        }
    };
    let pid = child.0.as_ref().expect("child").id();
    assert_eq!(next(&notify), "READY=1");
    let in_turn = ["READY=1", "RELOADING=1", "READY=1"];

    kill("-HUP", pid);
    assert_eq!(next(&notify), "RELOADING=1");
    kill("-HUP", pid);
    let seen = [next(&notify), next(&notify), next(&notify)];
    assert_eq!(seen, in_turn, "two SIGHUPs");

    let console = console(port).await;
    let reload = tokio::spawn(async move { console.batch_execute("RELOAD").await });
    assert_eq!(next(&notify), "RELOADING=1");
    kill("-HUP", pid);
    let seen = [next(&notify), next(&notify), next(&notify)];
    assert_eq!(seen, in_turn, "RELOAD, then a SIGHUP");
    tokio::time::timeout(SLOW, reload)
        .await
        .expect("RELOAD hung")
        .expect("join")
        .expect("RELOAD");

    kill("-INT", pid);
    let status = wait_exit(child.0.take().expect("child")).await;
    assert!(status.success(), "exit status {status}");
}

/// The notifications up to `want` (which ends them, not included), within [`HANG`]: with a
/// STATUS line every second, waiting for a notification at a time would never time out.
fn until(socket: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + HANG;
    let mut seen = Vec::new();
    loop {
        let n = next(socket);
        if n == want {
            return seen;
        }
        seen.push(n);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {want} within {HANG:?}: {seen:?}"
        );
    }
}

/// The signal handlers are in place by the time READY=1 is sent: `systemctl reload` right
/// after the start (SIGHUP) reloads, it does not kill the process with SIGHUP's default
/// action. They were installed by a task that could run after READY=1 (seen live: 4 starts in
/// 30 died of the SIGHUP), so each start here races for it, 50 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_right_after_ready_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..50 {
        let (mut child, notify) = spawn_notified(dir.path(), 0, "", |_| {});
        let pid = child.0.as_ref().expect("child").id();
        // A shell waiting to send the SIGHUP (its builtin kill: no fork once READY=1 is in).
        let mut hup = KillOnDrop(Some(
            Command::new("sh")
                .args(["-c", &format!("read _ && kill -HUP {pid}")])
                .stdin(Stdio::piped())
                .spawn()
                .expect("sh"),
        ));
        let mut hup_now = hup.0.as_mut().and_then(|c| c.stdin.take()).expect("stdin");
        assert_eq!(next(&notify), "READY=1");
        hup_now.write_all(b"\n").expect("to sh");
        drop(hup_now);
        let sent = hup.0.take().expect("sh").wait().expect("sh");
        assert!(sent.success(), "kill -HUP: {sent}");
        let after = notify
            .recv(&mut [0u8; 512])
            .map(|_| ())
            .map_err(|e| e.to_string());
        let died = child
            .0
            .as_mut()
            .expect("child")
            .try_wait()
            .expect("try_wait");
        assert!(
            after.is_ok() && died.is_none(),
            "start {round}: SIGHUP right after READY=1: {after:?}, exit {died:?}"
        );
        kill("-QUIT", pid);
        let exit = wait_exit(child.0.take().expect("child")).await;
        assert!(exit.success(), "start {round}: exit status {exit}");
    }
}

/// READY=1 reaches a service manager whose notification queue is full when it is sent (PID 1
/// busy starting units; a datagram socket queues net.unix.max_dgram_qlen of them, 10 by
/// default): pgporter waits for room, as libsystemd's sd_notify (PgBouncer's) does. It sent
/// without waiting, so READY=1 was dropped and systemd stopped the unit at its start timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_room_in_a_full_notification_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let (_child, notify) = spawn_notified(dir.path(), port, "", fill);
    // Listening, READY=1 still waiting for room.
    eventually("listening", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let mut seen = Vec::new();
    loop {
        let n = next(&notify);
        if n == "READY=1" {
            break;
        }
        assert_eq!(n, "FILLER=1", "before READY=1: {seen:?}");
        seen.push(n);
    }
}

/// A reload's RELOADING=1 and READY=1 wait for room in a full notification queue (up to 5 s
/// each) off the async workers: with one worker, clients are served meanwhile. They were sent
/// on the worker, which then served no one for up to 10 s per reload while PID 1 was busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_waiting_for_systemd_does_not_stall_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = "worker_threads = 1\nadmin_users = u\n";
    let (child, notify) = spawn_notified(dir.path(), port, extra, |_| {});
    assert_eq!(next(&notify), "READY=1");
    fill(&notify);
    let pid = child.0.as_ref().expect("running").id();
    kill("-HUP", pid);
    // The reload is under way (its RELOADING=1 waiting for room); a console login and query
    // must not wait for it. 4 s of room on a loaded machine: the stall was 10 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let client = console(port).await;
    client
        .simple_query("SHOW VERSION")
        .await
        .expect("SHOW VERSION");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "served after {took:?}");
    // The reload still ends with its READY=1 once there is room.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("READY=1") {
        seen.push(next(&notify));
    }
    seen.retain(|n| n != "FILLER=1");
    assert_eq!(seen, ["RELOADING=1", "READY=1"]);
}

/// A SIGTERM while READY=1 waits for room in a full notification queue starts the drain at
/// once: new clients are refused (57P03) while a session goes on, and READY=1 then
/// STOPPING=1 reach systemd in that order. The start sent READY=1 on the thread the signal
/// came to, which it interrupted (EINTR): READY=1 was lost (had it not been, the SIGTERM would
/// have waited for it, up to 5 s, with new clients served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_ready_waits_for_systemd_drains_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // From before the start: READY=1 is sent (and waits) once the listeners are bound.
    let started = tokio::time::Instant::now();
    let (child, notify, connstring) = notified_in_front_of_a_db(dir.path(), 10, fill).await;
    let (client, _conn) = login(&connstring).await;
    kill("-TERM", child.0.as_ref().expect("running").id());
    refused_with_57p03(&connstring).await;
    let took = started.elapsed();
    // The start, a login and the refusal, with 4 s of room on a loaded machine: the wait
    // was 5 s.
    assert!(
        took < Duration::from_secs(4),
        "drained {took:?} after the start"
    );
    client
        .simple_query("select 1")
        .await
        .expect("a session is served during the drain");
    assert_eq!(
        notifications_until_stopping(&notify),
        ["READY=1", "STOPPING=1"]
    );
}

/// STOPPING=1 waiting for room in a full notification queue holds up neither the sessions nor
/// the drain: an open session is served during it, and ended at shutdown_wait_timeout (2 s)
/// after the SIGTERM. The drain began once STOPPING=1 was sent, up to 5 s late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_waiting_for_systemd_does_not_delay_the_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, notify, connstring) = notified_in_front_of_a_db(dir.path(), 2, |_| {}).await;
    assert_eq!(next(&notify), "READY=1");
    let (client, conn) = login(&connstring).await;
    client.simple_query("select 1").await.expect("select 1");
    fill(&notify);
    let started = tokio::time::Instant::now();
    kill("-TERM", child.0.as_ref().expect("running").id());
    refused_with_57p03(&connstring).await;
    client
        .simple_query("select 1")
        .await
        .expect("a session is served during the drain");
    let ended = tokio::time::timeout(HANG, conn)
        .await
        .expect("the session outlived the drain")
        .expect("join");
    let took = started.elapsed();
    assert!(ended.is_err(), "the session was not ended: {ended:?}");
    // shutdown_wait_timeout is 2 s; 3 s of room on a loaded machine: it ended after 7 s.
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    assert_eq!(notifications_until_stopping(&notify), ["STOPPING=1"]);
}

/// pgporter (one worker thread, shutdown_wait_timeout = `wait` seconds) in front of a
/// database of its own, as [`spawn_notified_on`]; and a connection string for that database
/// through it.
async fn notified_in_front_of_a_db(
    dir: &Path,
    wait: u32,
    prepare: impl FnOnce(&UnixDatagram),
) -> (KillOnDrop, UnixDatagram, String) {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("u", "db").await;
    let port = free_port();
    let ini = write_config(
        dir,
        "pgporter.ini",
        (&db, &user, cluster.port()),
        &format!(
            "listen_port = {port}\nunix_socket_dir =\nworker_threads = 1\nshutdown_wait_timeout = {wait}\n"
        ),
    );
    let (child, notify) = spawn_notified_on(dir, &ini, prepare);
    let connstring =
        format!("host=127.0.0.1 port={port} user={user} password=pw dbname={db} sslmode=disable");
    (child, notify, connstring)
}

/// A session through `connstring` (pgporter retried until it listens), and its connection's
/// task, which ends when the session does.
async fn login(
    connstring: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = connect_once_listening(connstring)
        .await
        .unwrap_or_else(|e| panic!("login through {connstring}: {e}"));
    (client, tokio::spawn(conn))
}

/// Once a shutdown began: new clients through `connstring` hear 57P03.
async fn refused_with_57p03(connstring: &str) {
    eventually("new clients refused with 57P03", || async {
        match tokio_postgres::connect(connstring, tokio_postgres::NoTls).await {
            Err(e) => e.as_db_error().is_some_and(|d| d.code().code() == "57P03"),
            Ok(_) => false,
        }
    })
    .await;
}

/// The notifications up to STOPPING=1 (included), the queue's fillers left out.
fn notifications_until_stopping(notify: &UnixDatagram) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("STOPPING=1") {
        seen.push(next(notify));
    }
    seen.retain(|n| n != "FILLER=1");
    seen
}

/// Fill the notification queue of `notify` (as a busy PID 1 leaves it) with `FILLER=1`s.
fn fill(notify: &UnixDatagram) {
    let filler = UnixDatagram::unbound().expect("socket");
    filler.set_nonblocking(true).expect("nonblocking");
    let path = notify.local_addr().expect("addr");
    let path = path.as_pathname().expect("path");
    let mut queued = 0;
    while filler.send_to(b"FILLER=1", path).is_ok() {
        queued += 1;
        assert!(queued < 100_000, "the queue never fills");
    }
}

/// The admin console of the pgporter on `port`, as user u (password pw, or trust).
async fn console(port: u16) -> tokio_postgres::Client {
    let connstring = format!("host=127.0.0.1 port={port} user=u password=pw dbname=pgbouncer");
    let (client, conn) = tokio::time::timeout(
        HANG,
        tokio_postgres::connect(&connstring, tokio_postgres::NoTls),
    )
    .await
    .expect("the console login hung")
    .expect("the console");
    tokio::spawn(conn);
    client
}

/// pgporter on [`minimal_ini`] (`port`, `extra`) with `$NOTIFY_SOCKET` set to a socket in `dir`, and that socket, its reads bounded to 10 s; `prepare` has the socket
/// before pgporter starts.
fn spawn_notified(
    dir: &Path,
    port: u16,
    extra: &str,
    prepare: impl FnOnce(&UnixDatagram),
) -> (KillOnDrop, UnixDatagram) {
    let ini = minimal_ini(dir, port, extra);
    spawn_notified_on(dir, &ini, prepare)
}

/// pgporter on `ini`, as [`spawn_notified`].
fn spawn_notified_on(
    dir: &Path,
    ini: &Path,
    prepare: impl FnOnce(&UnixDatagram),
) -> (KillOnDrop, UnixDatagram) {
    let socket_path = dir.join("notify");
    let _ = std::fs::remove_file(&socket_path);
    let notify = UnixDatagram::bind(&socket_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    prepare(&notify);
    let child = Command::new(env!("CARGO_BIN_EXE_pgporter"))
        .arg(ini)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pgporter");
    (KillOnDrop(Some(child)), notify)
}

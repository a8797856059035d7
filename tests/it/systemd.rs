//! The real binary under systemd: `Type=notify` notifications (Debian's pgbouncer.service is a
//! notify unit) and socket activation (`LISTEN_FDS`, Debian's pgbouncer.socket).

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ops::eventually;
use crate::ops_binary::{free_port, KillOnDrop};
use crate::support::cnpg::show;
use crate::support::process::write_config;
use crate::support::{cluster, skip::skip, HANG};

fn kill(sig: &str, pid: u32) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success());
}

/// The next notification, within 10 s.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 10 s");
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
    let (mut child, notify) = spawn_notified(dir.path(), port, extra, |_| {});
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
    tokio::time::timeout(HANG, reload)
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
    let socket_path = dir.join("notify");
    let _ = std::fs::remove_file(&socket_path);
    let notify = UnixDatagram::bind(&socket_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    prepare(&notify);
    let ini = minimal_ini(dir, port, extra);
    let child = Command::new(env!("CARGO_BIN_EXE_pgporter"))
        .arg(&ini)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pgporter");
    (KillOnDrop(Some(child)), notify)
}

/// The exit status of `child`, which must exit within [`HANG`].
async fn wait_exit(mut child: std::process::Child) -> std::process::ExitStatus {
    let exited = tokio::time::timeout(HANG, async {
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    exited.unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("pgporter did not exit within {HANG:?}")
    })
}

/// Socket activation as systemd does it (systemd-socket-activate passes the sockets of its
/// `-l` options as LISTEN_FDS): pgporter serves on the passed TCP and unix sockets and binds
/// neither listen_addr:listen_port nor a socket in unix_socket_dir, as PgBouncer. A SIGTERM
/// drain keeps them open (57P03 to new clients) and leaves the unix socket file in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_sockets_passed_by_systemd() {
    let cluster = cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    cluster.create_role(&user, "pw").await;
    cluster.create_database(&db, &user).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let own_dir = dir.path().join("own");
    std::fs::create_dir(&own_dir).expect("dir");
    let (passed_port, own_port, unix_port) = (free_port(), free_port(), free_port());
    write_config(
        dir.path(),
        "pgporter.ini",
        (&db, &user, cluster.port()),
        &format!(
            "listen_port = {own_port}\nunix_socket_dir = {}\n",
            own_dir.display()
        ),
    );
    let unix_socket = dir.path().join(format!(".s.PGSQL.{unix_port}"));
    let listen = [
        "-l".into(),
        format!("127.0.0.1:{passed_port}").into(),
        "-l".into(),
        unix_socket.clone().into(),
    ];
    let Some(mut activated) = socket_activated(
        "serves_on_sockets_passed_by_systemd",
        &listen,
        &dir.path().join("pgporter.ini"),
        Stdio::null(),
    ) else {
        return;
    };
    eventually("the passed unix socket exists", || {
        let unix_socket = unix_socket.clone();
        async move { unix_socket.exists() }
    })
    .await;
    let connstrings = [
        format!("host=127.0.0.1 port={passed_port}"),
        format!("host={} port={unix_port}", dir.path().display()),
    ]
    .map(|at| format!("{at} user={user} password=pw dbname={db} sslmode=disable"));
    let mut clients = Vec::new();
    for connstring in &connstrings {
        let (client, conn) = connect_once_listening(connstring)
            .await
            .unwrap_or_else(|e| panic!("through the passed socket {connstring}: {e}"));
        tokio::spawn(conn);
        let one: i32 = client
            .query_one("select 1", &[])
            .await
            .expect("query")
            .get(0);
        assert_eq!(one, 1);
        clients.push(client);
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", own_port)).is_err(),
        "listen_addr:listen_port was bound as well"
    );
    assert!(
        std::fs::read_dir(&own_dir).expect("dir").next().is_none(),
        "a socket was made in unix_socket_dir as well"
    );

    // The SIGTERM drain keeps the passed sockets open: new clients hear 57P03 on each while
    // the sessions finish. At exit the unix socket file stays: it is systemd's.
    let child = activated.0.take().expect("child");
    kill("-TERM", child.id());
    for connstring in &connstrings {
        eventually("new clients refused with 57P03", || async {
            match connect_once_listening(connstring).await {
                Err(e) => e.as_db_error().is_some_and(|d| d.code().code() == "57P03"),
                Ok(_) => false,
            }
        })
        .await;
    }
    let one: i32 = clients[0]
        .query_one("select 1", &[])
        .await
        .expect("a session goes on during the drain")
        .get(0);
    assert_eq!(one, 1);
    drop(clients);
    let status = wait_exit(child).await;
    assert!(status.success(), "exit status {status}");
    assert!(unix_socket.exists(), "the passed unix socket was removed");
}

/// A passed TCP socket on readonly_listen_port is the read-only endpoint, as the listener
/// pgporter binds there would be: its sessions log in with default_transaction_read_only=on,
/// those of the other passed socket do not, and pgporter binds no read-only socket of its own.
/// The passed sockets are on 127.0.0.2, listen_addr is 127.0.0.1: pgporter served every passed
/// socket as read-write and bound 127.0.0.1:readonly_listen_port besides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_socket_on_readonly_listen_port_is_the_read_only_endpoint() {
    let cluster = cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    cluster.create_role(&user, "pw").await;
    cluster.create_database(&db, &user).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rw_port, ro_port, own_port) = (free_port(), free_port(), free_port());
    write_config(
        dir.path(),
        "pgporter.ini",
        (&db, &user, cluster.port()),
        &format!("listen_port = {own_port}\nreadonly_listen_port = {ro_port}\nunix_socket_dir =\n"),
    );
    let listen = [rw_port, ro_port].map(|p| ["-l".to_string(), format!("127.0.0.2:{p}")]);
    let listen: Vec<OsString> = listen.into_iter().flatten().map(OsString::from).collect();
    let Some(mut activated) = socket_activated(
        "a_passed_socket_on_readonly_listen_port_is_the_read_only_endpoint",
        &listen,
        &dir.path().join("pgporter.ini"),
        Stdio::null(),
    ) else {
        return;
    };
    eventually("the passed sockets listen", || async {
        std::net::TcpStream::connect(("127.0.0.2", ro_port)).is_ok()
    })
    .await;
    let read_only = |port: u16| {
        let connstring = format!(
            "host=127.0.0.2 port={port} user={user} password=pw dbname={db} sslmode=disable"
        );
        async move {
            let (client, conn) = tokio::time::timeout(
                HANG,
                tokio_postgres::connect(&connstring, tokio_postgres::NoTls),
            )
            .await
            .unwrap_or_else(|_| panic!("no answer through the passed socket: {connstring}"))
            .unwrap_or_else(|e| panic!("through the passed socket {connstring}: {e}"));
            tokio::spawn(conn);
            let value: String = client
                .query_one("show default_transaction_read_only", &[])
                .await
                .expect("show")
                .get(0);
            value
        }
    };
    assert_eq!(read_only(ro_port).await, "on", "on readonly_listen_port");
    assert_eq!(
        read_only(rw_port).await,
        "off",
        "on the other passed socket"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ro_port)).is_err(),
        "pgporter bound readonly_listen_port on listen_addr as well"
    );

    let child = activated.0.take().expect("child");
    kill("-INT", child.id());
    let status = wait_exit(child).await;
    assert!(status.success(), "exit status {status}");
}

/// Only a unix socket passed (a `.socket` unit whose one ListenStream is a path): the console's
/// SHOW DATABASES row and a unix socket client's SHOW CLIENTS row give listen_port as their
/// port, as PgBouncer 1.18's do (checked live); pgporter gave 0, the port of a TCP listener it
/// did not have. At exit the socket file stays: it is systemd's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_unix_socket_alone_shows_listen_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    // listen_port is never bound here: any number will do.
    let (listen_port, unix_port) = (free_port(), free_port());
    let ini = minimal_ini(dir.path(), listen_port, "admin_users = u\n");
    let unix_socket = dir.path().join(format!(".s.PGSQL.{unix_port}"));
    let listen = [OsString::from("-l"), unix_socket.clone().into()];
    let Some(mut activated) = socket_activated(
        "a_passed_unix_socket_alone_shows_listen_port",
        &listen,
        &ini,
        Stdio::null(),
    ) else {
        return;
    };
    eventually("the passed unix socket exists", || {
        let unix_socket = unix_socket.clone();
        async move { unix_socket.exists() }
    })
    .await;
    let connstring = format!(
        "host={} port={unix_port} user=u password=pw dbname=pgbouncer",
        dir.path().display()
    );
    let (console, conn) = connect_once_listening(&connstring)
        .await
        .expect("the console through the passed unix socket");
    tokio::spawn(conn);
    let port_of = |(columns, rows): (Vec<String>, Vec<Vec<Option<String>>>), name: &str| {
        let at = |c: &str| columns.iter().position(|n| n == c).expect(c);
        let (key, port) = (at(name), at("port"));
        rows.iter()
            .find(|r| r[key].as_deref() == Some("pgbouncer"))
            .and_then(|r| r[port].clone())
    };
    let want = Some(listen_port.to_string());
    let databases = show(&console, "SHOW DATABASES").await;
    assert_eq!(port_of(databases, "name"), want, "SHOW DATABASES");
    let clients = show(&console, "SHOW CLIENTS").await;
    assert_eq!(port_of(clients, "database"), want, "SHOW CLIENTS");
    drop(console);

    let child = activated.0.take().expect("child");
    kill("-INT", child.id());
    let status = wait_exit(child).await;
    assert!(status.success(), "exit status {status}");
    assert!(unix_socket.exists(), "the passed unix socket was removed");
}

/// A passed socket that is a connection, not a listening socket (a `.socket` unit with
/// Accept=yes; here systemd-socket-activate --accept): pgporter refuses to start, as README
/// says, and so closes the connection. It served it as a listener and, accept() failing,
/// warned every 100 ms for good, the connection held open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_connection_refuses_the_start() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = minimal_ini(dir.path(), 0, "");
    let log = dir.path().join("pgporter.log");
    let port = free_port();
    let accept = ["--accept", "-l", &format!("127.0.0.1:{port}")].map(OsString::from);
    let stdout = std::fs::File::create(&log).expect("log");
    let Some(_activator) = socket_activated(
        "a_passed_connection_refuses_the_start",
        &accept,
        &ini,
        stdout.into(),
    ) else {
        return;
    };
    let mut connection = None;
    eventually("systemd-socket-activate listens", || {
        connection = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
        let listening = connection.is_some();
        async move { listening }
    })
    .await;
    let mut connection = connection.expect("connected");
    connection.set_read_timeout(Some(HANG)).expect("timeout");
    let read = tokio::task::spawn_blocking(move || connection.read(&mut [0u8; 64]))
        .await
        .expect("join");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        matches!(read, Ok(0)),
        "the connection was not closed: {read:?}\n{}",
        logged()
    );
    // Logged on the way out, after the connection was let go.
    eventually("the reason logged", || {
        let said = logged().contains("it is a connection (Accept=yes");
        async move { said }
    })
    .await;
}

/// A connection through a socket systemd-socket-activate passes, retried while it is refused:
/// the unix socket's file exists from its bind(), before the listen() (a connect in between
/// was refused with the machine loaded).
async fn connect_once_listening(
    connstring: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    tokio_postgres::Error,
> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let attempt = tokio::time::timeout(
            HANG,
            tokio_postgres::connect(connstring, tokio_postgres::NoTls),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer through the passed socket: {connstring}"));
        let refused = attempt.as_ref().err().is_some_and(|e| {
            std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if !refused || tokio::time::Instant::now() > deadline {
            return attempt;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `dir`/pgporter.ini: one database nobody reaches, listen_port `port` on 127.0.0.1 (0: any),
/// no unix socket, `extra`; and `dir`/userlist.txt with user `u`, password `pw`.
fn minimal_ini(dir: &Path, port: u16, extra: &str) -> PathBuf {
    std::fs::write(dir.join("userlist.txt"), "\"u\" \"pw\"\n").expect("userlist");
    let ini = dir.join("pgporter.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\nx = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_file = userlist.txt\n{extra}"
        ),
    )
    .expect("ini");
    ini
}

/// pgporter on `ini` under systemd-socket-activate with `args` (its sockets, `--accept`), its
/// stdout to `stdout`; None, the test `name` skipped, when systemd-socket-activate is not here.
fn socket_activated(
    name: &str,
    args: &[OsString],
    ini: &Path,
    stdout: Stdio,
) -> Option<KillOnDrop> {
    let Ok(activate) = which("systemd-socket-activate") else {
        skip(
            &format!("systemd::{name}"),
            "systemd-socket-activate is not installed (Debian package systemd)",
        );
        return None;
    };
    let child = Command::new(activate)
        .args(args)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_pgporter"))
        .arg(ini)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn systemd-socket-activate");
    Some(KillOnDrop(Some(child)))
}

/// A program on PATH.
fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

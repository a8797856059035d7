//! Socket activation: the listening sockets systemd passes (`LISTEN_FDS`).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{connect_once_listening, interrupt, kill, minimal_ini, wait_exit};
use crate::ops::eventually;
use crate::ops_binary::{free_port, KillOnDrop};
use crate::support::cnpg::show;
use crate::support::process::write_config;
use crate::support::{cluster, skip::skip, HANG};

/// Socket activation as systemd does it (systemd-socket-activate passes the sockets of its
/// `-l` options as LISTEN_FDS): pgporter serves on the passed TCP and unix sockets and binds
/// neither listen_addr:listen_port nor a socket in unix_socket_dir, as PgBouncer. A SIGTERM
/// drain keeps them open (57P03 to new clients) and leaves the unix socket file in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_sockets_passed_by_systemd() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("u", "db").await;
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
    let (user, db) = cluster.owner_and_db("u", "db").await;
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
    let read_only = |port: u16| {
        read_only_through(format!(
            "host=127.0.0.2 port={port} user={user} password=pw dbname={db} sslmode=disable"
        ))
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

    interrupt(activated.0.take().expect("child")).await;
}

/// Passed sockets named `readonly` (`FileDescriptorName=readonly`, in `LISTEN_FDNAMES`) are
/// the read-only endpoint whatever their port, a unix socket too; the one named otherwise
/// (as systemd names a unit's sockets by default) is read-write, and pgporter binds no
/// read-only socket of its own on readonly_listen_port. The names were not read: every
/// passed socket off readonly_listen_port was served read-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_sockets_named_readonly_are_the_read_only_endpoint() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("u", "db").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rw_port, named_port, unix_port) = (free_port(), free_port(), free_port());
    let (own_port, ro_port) = (free_port(), free_port());
    write_config(
        dir.path(),
        "pgporter.ini",
        (&db, &user, cluster.port()),
        &format!("listen_port = {own_port}\nreadonly_listen_port = {ro_port}\nunix_socket_dir =\n"),
    );
    let unix_socket = dir.path().join(format!(".s.PGSQL.{unix_port}"));
    let listen: Vec<OsString> = vec![
        "-l".into(),
        format!("127.0.0.2:{rw_port}").into(),
        "-l".into(),
        format!("127.0.0.2:{named_port}").into(),
        "-l".into(),
        unix_socket.into(),
        "--fdname=pgbouncer.socket:readonly:readonly".into(),
    ];
    let Some(mut activated) = socket_activated(
        "passed_sockets_named_readonly_are_the_read_only_endpoint",
        &listen,
        &dir.path().join("pgporter.ini"),
        Stdio::null(),
    ) else {
        return;
    };
    let through = |at: String| {
        read_only_through(format!(
            "{at} user={user} password=pw dbname={db} sslmode=disable"
        ))
    };
    let tcp = |port: u16| through(format!("host=127.0.0.2 port={port}"));
    assert_eq!(tcp(named_port).await, "on", "the TCP socket named readonly");
    assert_eq!(
        tcp(rw_port).await,
        "off",
        "the socket named pgbouncer.socket"
    );
    let unix = through(format!("host={} port={unix_port}", dir.path().display()));
    assert_eq!(unix.await, "on", "the unix socket named readonly");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ro_port)).is_err(),
        "pgporter bound readonly_listen_port on listen_addr as well"
    );

    interrupt(activated.0.take().expect("child")).await;
}

/// `LISTEN_FDNAMES` that does not name each passed socket once is ignored, with a warning:
/// the socket it would name `readonly` is read-write, and readonly_listen_port alone says
/// which socket is read-only, as without names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_not_one_per_passed_socket_are_ignored() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("u", "db").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rw_port, named_port, own_port) = (free_port(), free_port(), free_port());
    write_config(
        dir.path(),
        "pgporter.ini",
        (&db, &user, cluster.port()),
        &format!(
            "listen_port = {own_port}\nreadonly_listen_port = {named_port}\nunix_socket_dir =\n"
        ),
    );
    let listen: Vec<OsString> = vec![
        "-l".into(),
        format!("127.0.0.2:{rw_port}").into(),
        "-l".into(),
        format!("127.0.0.2:{named_port}").into(),
        // Three names for two sockets.
        "--fdname=readonly:x:y".into(),
    ];
    let log = dir.path().join("pgporter.log");
    let stdout = std::fs::File::create(&log).expect("log");
    let Some(mut activated) = socket_activated(
        "names_not_one_per_passed_socket_are_ignored",
        &listen,
        &dir.path().join("pgporter.ini"),
        stdout.into(),
    ) else {
        return;
    };
    let tcp = |port: u16| {
        read_only_through(format!(
            "host=127.0.0.2 port={port} user={user} password=pw dbname={db} sslmode=disable"
        ))
    };
    assert_eq!(tcp(rw_port).await, "off", "the socket named first");
    assert_eq!(tcp(named_port).await, "on", "on readonly_listen_port");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("LISTEN_FDNAMES does not name each passed socket once"),
        "no warning: {logged}"
    );

    interrupt(activated.0.take().expect("child")).await;
}

/// `show default_transaction_read_only` in a session through `connstring`, a passed socket.
async fn read_only_through(connstring: String) -> String {
    let (client, conn) = connect_once_listening(&connstring)
        .await
        .unwrap_or_else(|e| panic!("through the passed socket {connstring}: {e}"));
    tokio::spawn(conn);
    client
        .query_one("show default_transaction_read_only", &[])
        .await
        .expect("show")
        .get(0)
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

    interrupt(activated.0.take().expect("child")).await;
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
            &format!("systemd::activation::{name}"),
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

//! Listening sockets (TCP and the unix socket `.s.PGSQL.<port>`, plus the read-only TCP
//! listener on readonly_listen_port), the accept loops, and the max_client_conn gate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::time::Duration;

use crate::app::Shared;
use crate::client::{self, Peer};
use crate::config::Settings;
use crate::error::Error;
use crate::net::Stream;
use crate::routing::Endpoint;

/// Unix listeners, each with the socket file to remove at the end (None: the service
/// manager's own socket) and its endpoint (read-only: a passed socket named so).
type UnixListeners = Vec<(UnixListener, Option<PathBuf>, Endpoint)>;

#[derive(Debug)]
pub struct Listeners {
    tcp: Vec<TcpListener>,
    unix: UnixListeners,
    /// readonly_listen_port on the same addresses, or the passed TCP sockets that are the
    /// read-only endpoint.
    readonly: Vec<TcpListener>,
    /// The port clients are told and shown (see [`Listeners::port`]).
    port: u16,
}

/// TCP listeners on every `listen_addr` (`*` = all IPv4 + IPv6) at `port`.
async fn bind_tcp(settings: &Settings, port: u16) -> Result<Vec<TcpListener>, Error> {
    let mut tcp = Vec::new();
    // Addresses named twice (`127.0.0.1,localhost`) are bound once, as PgBouncer goes on
    // after its "address already in use" warning.
    let mut bound = Vec::new();
    for addr in &settings.listen_addr {
        if addr == "*" {
            let any4: SocketAddr = ([0, 0, 0, 0], port).into();
            match listen(settings, any4) {
                Ok(l) => {
                    tcp.push(l);
                    bound.push(any4);
                }
                // `127.0.0.1,*`: the address named first holds the port.
                Err(e) if !bound.is_empty() => {
                    tracing::warn!(error = %e, "listen_addr *: no IPv4 wildcard listener")
                }
                Err(e) => return Err(e),
            }
            // A host without IPv6 (some containers) still serves IPv4, as PgBouncer does.
            let any6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, port).into();
            match listen(settings, any6) {
                Ok(l) => {
                    tcp.push(l);
                    bound.push(any6);
                }
                Err(e) => tracing::warn!(error = %e, "listen_addr *: no IPv6 listener"),
            }
            continue;
        }
        let resolved = tokio::net::lookup_host((addr.as_str(), port))
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr}:{port}: {e}")))?;
        let mut last = None;
        for a in resolved {
            // Bound already, or covered by `*` (`*,127.0.0.1`).
            let covered = bound.iter().any(|b: &SocketAddr| {
                *b == a
                    || (b.ip().is_unspecified()
                        && b.is_ipv4() == a.is_ipv4()
                        && b.port() == a.port())
            });
            if covered {
                tracing::warn!(listen_addr = %addr, address = %a, "listen_addr names an address twice; listening once");
                last = None;
                break;
            }
            match listen(settings, a) {
                Ok(l) => {
                    tcp.push(l);
                    bound.push(a);
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    Ok(tcp)
}

/// One listening socket: SO_REUSEADDR (a restart binds at once), IPv6 sockets IPv6-only (so
/// `*` can bind `0.0.0.0` and `::` side by side), SO_REUSEPORT with `so_reuseport` (a second
/// pgporter on the same port, for restarts without refusing anyone), `listen_backlog`.
fn listen(settings: &Settings, addr: SocketAddr) -> Result<TcpListener, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if settings.so_reuseport {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(settings.listen_backlog).unwrap_or(i32::MAX))?;
        TcpListener::from_std(socket.into())
    };
    open().map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))
}

impl Listeners {
    /// Bind listen_addr:listen_port and unix_socket_dir, or take the sockets the service
    /// manager passed instead; and readonly_listen_port, unless a passed socket is the
    /// read-only endpoint.
    pub async fn bind(
        settings: &Settings,
        passed: crate::systemd::PassedSockets,
    ) -> Result<Listeners, Error> {
        let readonly_port = settings.routing.readonly_listen_port;
        // A passed socket named `readonly`, or a passed TCP socket on readonly_listen_port, is
        // the read-only endpoint; without one, readonly_listen_port is bound on listen_addr
        // as when nothing is passed.
        let (tcp, unix, passed_readonly) = match take_passed(passed)? {
            Some(passed) => split_readonly(passed, readonly_port),
            None => {
                let tcp = bind_tcp(settings, settings.listen_port).await?;
                let unix = if settings.unix_socket_dir.is_empty() {
                    Vec::new()
                } else {
                    let (l, path) = bind_unix(settings, rw_port(settings, &tcp)?)?;
                    vec![(l, Some(path), Endpoint::ReadWrite)]
                };
                (tcp, unix, Vec::new())
            }
        };
        let readonly_passed =
            !passed_readonly.is_empty() || unix.iter().any(|(_, _, e)| *e == Endpoint::ReadOnly);
        let readonly = match readonly_port {
            _ if readonly_passed => passed_readonly,
            Some(port) => bind_tcp(settings, port).await?,
            None => Vec::new(),
        };
        if tcp.is_empty() && unix.is_empty() && readonly.is_empty() {
            return Err(Error::Config(
                "nothing to listen on (listen_addr and unix_socket_dir are empty)".into(),
            ));
        }
        let port = rw_port(settings, &tcp)?;
        Ok(Listeners {
            tcp,
            unix,
            readonly,
            port,
        })
    }

    /// The read-write port: the first TCP listener's (listen_port, resolved when 0), else
    /// listen_port, as PgBouncer's cf_listen_port: the port SHOW DATABASES gives the console
    /// and SHOW CLIENTS gives unix socket clients, also when the service manager passed only
    /// a unix socket (or listen_addr is empty).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The first read-only listener's address.
    pub fn readonly_addr(&self) -> Option<SocketAddr> {
        self.readonly.first().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// The first TCP listener's port (listen_port, resolved when 0), else listen_port.
fn rw_port(settings: &Settings, tcp: &[TcpListener]) -> Result<u16, Error> {
    match tcp.first() {
        Some(l) => Ok(l.local_addr()?.port()),
        None => Ok(settings.listen_port),
    }
}

/// The passed sockets sorted by endpoint: read-write TCP, unix (read-only when named so),
/// read-only TCP (named so, or on `readonly_port`).
fn split_readonly(
    passed: Passed,
    readonly_port: Option<u16>,
) -> (Vec<TcpListener>, UnixListeners, Vec<TcpListener>) {
    let (mut tcp, mut readonly) = (Vec::new(), Vec::new());
    for (l, named) in passed.tcp {
        let addr = l.local_addr().ok();
        let on_port = readonly_port.is_some() && addr.map(|a| a.port()) == readonly_port;
        if named || on_port {
            let why = if named {
                "passed socket named readonly: the read-only endpoint"
            } else {
                "passed socket on readonly_listen_port: the read-only endpoint"
            };
            tracing::info!(addr = ?addr, "{why}");
            readonly.push(l);
        } else {
            tcp.push(l);
        }
    }
    let unix = passed
        .unix
        .into_iter()
        .map(|(l, named)| {
            if named {
                tracing::info!("passed unix socket named readonly: the read-only endpoint");
                (l, None, Endpoint::ReadOnly)
            } else {
                (l, None, Endpoint::ReadWrite)
            }
        })
        .collect();
    (tcp, unix, readonly)
}

/// The sockets the service manager passed, each with whether it is named `readonly`
/// ([`crate::systemd::READONLY_FD_NAME`]).
struct Passed {
    tcp: Vec<(TcpListener, bool)>,
    unix: Vec<(UnixListener, bool)>,
}

/// The listening sockets systemd passed (socket activation, `LISTEN_FDS`: a `.socket` unit
/// such as Debian's pgbouncer.socket), used instead of binding listen_addr:listen_port and
/// unix_socket_dir, as PgBouncer does; None when none were. A passed socket that is not a
/// listening TCP or unix stream socket refuses the start.
fn take_passed(passed: crate::systemd::PassedSockets) -> Result<Option<Passed>, Error> {
    let n = passed.fds.as_ref().map_or(0, listenfd::ListenFd::len);
    let readonly: Vec<bool> = passed
        .names(n)
        .into_iter()
        .map(|name| name == Some(crate::systemd::READONLY_FD_NAME))
        .collect();
    let Some(mut fds) = passed.fds else {
        return Ok(None);
    };
    let (mut tcp, mut unix) = (Vec::new(), Vec::new());
    for (idx, named) in readonly.into_iter().enumerate() {
        let fd = idx + 3;
        let taken = match fds.take_tcp_listener(idx) {
            Ok(Some(l)) => listening(&l).and_then(|()| l.set_nonblocking(true)).and_then(|()| {
                tracing::info!(fd, addr = %l.local_addr()?, "socket passed from the service manager");
                tcp.push((TcpListener::from_std(l)?, named));
                Ok(())
            }),
            _ => match fds.take_unix_listener(idx) {
                Ok(Some(l)) => listening(&l).and_then(|()| l.set_nonblocking(true)).and_then(|()| {
                    tracing::info!(fd, "unix socket passed from the service manager");
                    unix.push((UnixListener::from_std(l)?, named));
                    Ok(())
                }),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        taken.map_err(|e| {
            Error::Config(format!(
                "fd {fd} passed by the service manager (LISTEN_FDS) is not a listening TCP or unix socket: {e}"
            ))
        })?;
    }
    tracing::info!(
        "listening on the sockets passed from the service manager; listen_addr, listen_port and unix_socket_dir are not bound"
    );
    Ok(Some(Passed { tcp, unix }))
}

/// A connection (what a `.socket` unit with Accept=yes passes) is a TCP or unix stream socket
/// too, but accepting on it waits for good.
fn listening<S: std::os::fd::AsFd>(socket: &S) -> std::io::Result<()> {
    if socket2::SockRef::from(socket).is_listener()? {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is a connection (Accept=yes in the .socket unit; pgporter needs Accept=no)",
        ))
    }
}

/// The unix socket `.s.PGSQL.<port>` in unix_socket_dir, with unix_socket_mode and
/// unix_socket_group.
fn bind_unix(settings: &Settings, port: u16) -> Result<(UnixListener, PathBuf), Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = PathBuf::from(&settings.unix_socket_dir).join(format!(".s.PGSQL.{port}"));
    // A stale socket from a crashed run; a live pooler would still hold the TCP port we just bound.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(
        &path,
        std::fs::Permissions::from_mode(settings.unix_socket_mode),
    )?;
    if !settings.unix_socket_group.is_empty() {
        let group = &settings.unix_socket_group;
        let gid = group_id(
            group,
            &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        )
        .ok_or_else(|| Error::Config(format!("unix_socket_group: no group {group:?}")))?;
        std::os::unix::fs::chown(&path, None, Some(gid)).map_err(|e| {
            Error::Config(format!(
                "unix_socket_group {group:?} on {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok((listener, path))
}

/// A group's id: a number, or a name looked up in `etc_group` (the text of /etc/group:
/// `name:password:gid:members`).
fn group_id(group: &str, etc_group: &str) -> Option<u32> {
    group.parse().ok().or_else(|| {
        etc_group.lines().find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(group))
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        })
    })
}

/// Accept on every listener until shutdown; remove the unix socket file at the end.
pub async fn serve(listeners: Listeners, shared: Arc<Shared>) {
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners.tcp {
        tasks.spawn(accept_tcp(l, Endpoint::ReadWrite, Arc::clone(&shared)));
    }
    for l in listeners.readonly {
        tasks.spawn(accept_tcp(l, Endpoint::ReadOnly, Arc::clone(&shared)));
    }
    let mut unix_paths = Vec::new();
    for (l, path, endpoint) in listeners.unix {
        tasks.spawn(accept_unix(l, endpoint, Arc::clone(&shared)));
        unix_paths.extend(path);
    }
    shared.shutdown.cancelled().await;
    tasks.shutdown().await;
    for path in unix_paths {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept_tcp(listener: TcpListener, endpoint: Endpoint, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => {
                let _ = tcp.set_nodelay(true);
                let _ =
                    super::SocketOptions::from_settings(&shared.config.load().settings).apply(&tcp);
                spawn_client(Stream::Tcp(tcp), Peer::Tcp(addr), endpoint, &shared);
            }
            Err(e) => backoff(e).await,
        }
    }
}

async fn accept_unix(listener: UnixListener, endpoint: Endpoint, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((unix, _)) => spawn_client(Stream::Unix(unix), Peer::Unix, endpoint, &shared),
            Err(e) => backoff(e).await,
        }
    }
}

/// Out of file descriptors and the like: log and retry shortly instead of spinning.
async fn backoff(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn spawn_client(stream: Stream, peer: Peer, endpoint: Endpoint, shared: &Arc<Shared>) {
    let max = usize::try_from(shared.config.load().settings.max_client_conn).unwrap_or(usize::MAX);
    let count = shared.clients.fetch_add(1, Ordering::AcqRel) + 1;
    // Over the cap, the session still reads the startup packet: the admin console gets in
    // (counted, as in PgBouncer), anyone else is refused there, after the SSLRequest /
    // GSSENCRequest is answered (libpq's sslmode=prefer would otherwise report "server sent
    // an error response during SSL exchange") and with a CancelRequest still forwarded.
    let counted = ClientCount {
        shared: Arc::clone(shared),
    };
    // The session's own future, unwrapped: it is what an idle client costs (W6).
    let over_max = count > max;
    shared
        .tracker
        .spawn(client::run(stream, peer, endpoint, counted, over_max));
}

/// An accepted client connection, counted against max_client_conn until dropped. One pointer:
/// a parked idle client keeps it (W6).
#[derive(Debug)]
pub struct ClientCount {
    shared: Arc<Shared>,
}

impl std::ops::Deref for ClientCount {
    type Target = Arc<Shared>;
    fn deref(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parked idle client keeps its count: one pointer (it grew to two with the
    /// max_client_conn flag, 8 more bytes per idle client).
    #[test]
    fn a_client_count_is_one_pointer() {
        assert_eq!(
            std::mem::size_of::<ClientCount>(),
            std::mem::size_of::<usize>()
        );
    }

    fn settings(reuseport: bool) -> Settings {
        Settings {
            so_reuseport: reuseport,
            listen_backlog: 7,
            ..Settings::default()
        }
    }

    #[test]
    fn group_ids_by_number_or_name() {
        let etc = "root:x:0:\nwheel:x:10:alice,bob\npostgres:x:117:\n";
        assert_eq!(group_id("117", etc), Some(117));
        assert_eq!(group_id("wheel", etc), Some(10));
        assert_eq!(group_id("postgres", etc), Some(117));
        assert_eq!(group_id("post", etc), None);
        assert_eq!(group_id("nobody", ""), None);
    }

    /// The socket gets unix_socket_mode and unix_socket_group (here the process's own group,
    /// which any user may give a file it owns).
    #[tokio::test]
    async fn unix_socket_mode_and_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        let s = Settings {
            unix_socket_dir: dir.path().display().to_string(),
            unix_socket_mode: 0o700,
            unix_socket_group: gid.to_string(),
            ..Settings::default()
        };
        let (_l, path) = bind_unix(&s, 5999).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o700, gid));
        let bad = Settings {
            unix_socket_group: "no-such-group-here".into(),
            ..s
        };
        let err = bind_unix(&bad, 5998).unwrap_err().to_string();
        assert!(err.contains("no group"), "{err}");
    }

    /// IPv6 listeners are IPv6-only: `listen_addr = *` binds `0.0.0.0` and `::` on one port
    /// (Linux's default dual-stack `::` made the second bind fail with EADDRINUSE).
    #[tokio::test]
    async fn ipv6_listeners_are_ipv6_only() {
        let Ok(v6) = listen(&settings(false), "[::1]:0".parse().unwrap()) else {
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        };
        assert!(socket2::SockRef::from(&v6).only_v6().unwrap());
        let v4 = listen(&settings(false), "127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(socket2::SockRef::from(&v4).reuse_address().unwrap());
    }

    /// so_reuseport lets a second process (here: a second socket) bind the same port;
    /// without it the port is taken.
    #[tokio::test]
    async fn so_reuseport_shares_the_port() {
        let first = listen(&settings(true), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen(&settings(true), addr).expect("so_reuseport: second bind");
        assert_eq!(second.local_addr().unwrap(), addr);
        drop(second);
        let err = listen(&settings(false), addr).expect_err("port is taken");
        assert!(
            err.to_string().contains("cannot listen on 127.0.0.1"),
            "{err}"
        );
    }
}

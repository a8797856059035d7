//! systemd's service notifications, for a unit with `Type=notify` (Debian's pgbouncer.service
//! is one: swapping pgporter in must not leave systemd waiting for a READY that never comes).
//! As PgBouncer sends them: `READY=1` once the listeners are bound, `RELOADING=1` then
//! `READY=1` around a reload, `STOPPING=1` when a shutdown begins, and a `STATUS=` line with
//! the averages every stats_period. One datagram each to `$NOTIFY_SOCKET` (a path, or `@name`
//! for an abstract socket); without it, nothing is sent. Sending never fails the caller: a
//! notification that cannot be sent is logged at debug level. A full queue at the service
//! manager (PID 1 busy; a datagram socket queues net.unix.max_dgram_qlen of them) is waited on
//! for up to [`SEND_WAIT`], as libsystemd's sd_notify waits: dropping READY=1 there would have
//! systemd stop the unit at its start timeout.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// How long a notification waits for room in the service manager's queue.
const SEND_WAIT: Duration = Duration::from_secs(5);

/// What the service manager gave the process, read from the environment once by the binary:
/// where to send notifications, and the listening sockets it passed (socket activation, see
/// `net::listener`). The library never reads these itself: an `App` a test builds in-process
/// is not the service.
#[derive(Debug, Default)]
pub struct ServiceManager {
    pub notifier: Notifier,
    pub sockets: PassedSockets,
}

impl ServiceManager {
    /// `$NOTIFY_SOCKET`, and `$LISTEN_FDS` (for this process: `$LISTEN_PID`).
    pub fn from_env() -> ServiceManager {
        let fds = listenfd::ListenFd::from_env();
        ServiceManager {
            notifier: Notifier::from_env(),
            sockets: PassedSockets((fds.len() > 0).then_some(fds)),
        }
    }
}

/// Listening sockets passed by the service manager (none: bind our own).
#[derive(Default)]
pub struct PassedSockets(pub(crate) Option<listenfd::ListenFd>);

impl std::fmt::Debug for PassedSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.as_ref().map_or(0, listenfd::ListenFd::len);
        write!(f, "PassedSockets({n})")
    }
}

/// Where notifications go, read once from the environment at startup.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// `$NOTIFY_SOCKET`, when set (systemd sets it for `Type=notify` units).
    fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Notifier::to(&path.to_string_lossy()),
            _ => Notifier::default(),
        }
    }

    /// Notifications to the datagram socket at `path` (`@name`: abstract).
    pub fn to(path: &str) -> Notifier {
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => SocketAddr::from_pathname(path),
        };
        let socket = UnixDatagram::unbound().and_then(|s| {
            s.set_write_timeout(Some(SEND_WAIT))?;
            Ok(s)
        });
        match (socket, addr) {
            (Ok(socket), Ok(addr)) => Notifier {
                target: Some((socket, addr)),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(notify_socket = path, error = %e, "cannot notify systemd");
                Notifier::default()
            }
        }
    }

    /// Send `state` (newline-separated `KEY=value` assignments).
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, state, "systemd notification not sent");
            }
        }
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// True when notifications go somewhere (`$NOTIFY_SOCKET` was set).
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// The stats_period averages, for `systemctl status`.
    pub fn stats(&self, a: &crate::stats::Averages) {
        self.send(&stats_status(a));
    }
}

/// PgBouncer 1.18's STATUS line, to the letter: its times in `μs` (its log line says `us`).
fn stats_status(a: &crate::stats::Averages) -> String {
    format!(
        "STATUS=stats: {} xacts/s, {} queries/s, in {} B/s, out {} B/s, xact {} μs, query {} μs, wait {} μs",
        a.xact_count, a.query_count, a.recv, a.sent, a.xact_time, a.query_time, a.wait_time
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        Notifier::to(&path.to_string_lossy()).ready();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("pgporter-test-{}", std::process::id());
        let abstract_addr = {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes()).expect("name")
        };
        let listener = UnixDatagram::bind_addr(&abstract_addr).expect("bind abstract");
        Notifier::to(&format!("@{name}")).stopping();
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    /// As PgBouncer 1.18 sends it (received live from its NOTIFY_SOCKET).
    #[test]
    fn the_stats_status_line_is_pgbouncers() {
        let a = crate::stats::Averages {
            xact_count: 1,
            query_count: 2,
            recv: 3,
            sent: 4,
            xact_time: 5,
            query_time: 6,
            wait_time: 7,
            ..Default::default()
        };
        assert_eq!(
            stats_status(&a),
            "STATUS=stats: 1 xacts/s, 2 queries/s, in 3 B/s, out 4 B/s, xact 5 μs, query 6 μs, wait 7 μs"
        );
    }

    #[test]
    fn nobody_listening_is_not_an_error() {
        Notifier::default().ready();
        Notifier::to("/nonexistent/notify").ready();
    }
}

//! systemd's service notifications, for a unit with `Type=notify` (Debian's pgbouncer.service
//! is one: swapping pgporter in must not leave systemd waiting for a READY that never comes).
//! As PgBouncer sends them: `READY=1` once the listeners are bound, `RELOADING=1` then
//! `READY=1` around a reload, `STOPPING=1` when a shutdown begins, and a `STATUS=` line with
//! the averages every stats_period. One datagram each to `$NOTIFY_SOCKET` (a path, or `@name`
//! for an abstract socket); without it, nothing is sent. Sending never fails the caller: a
//! notification that cannot be sent is logged at debug level. A full queue at the service
//! manager (PID 1 busy; a datagram socket queues net.unix.max_dgram_qlen of them) is waited on
//! for up to [`SEND_WAIT`], as libsystemd's sd_notify waits: dropping READY=1 there would have
//! systemd stop the unit at its start timeout. That wait is a thread's of its own, which
//! sends the notifications one at a time in the order they were asked for: the caller never
//! waits (an async worker waiting would stall every session it serves, a shutdown waiting
//! would start its drain late), and systemd still sees `READY=1` before a later
//! `RELOADING=1`, each `RELOADING=1` before its `READY=1`, and `STOPPING=1` after them.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::mpsc;
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
    /// `$NOTIFY_SOCKET`, and `$LISTEN_FDS` (for this process: `$LISTEN_PID`) with the
    /// sockets' names, `$LISTEN_FDNAMES`.
    pub fn from_env() -> ServiceManager {
        let fds = listenfd::ListenFd::from_env();
        let fds = (fds.len() > 0).then_some(fds);
        let names = fds
            .as_ref()
            .and_then(|_| std::env::var("LISTEN_FDNAMES").ok());
        ServiceManager {
            notifier: Notifier::from_env(),
            sockets: PassedSockets { fds, names },
        }
    }
}

/// The name (`FileDescriptorName=` in its .socket unit) that makes a passed socket the
/// read-only endpoint, whatever its port.
pub const READONLY_FD_NAME: &str = "readonly";

/// Listening sockets passed by the service manager (none: bind our own).
#[derive(Default)]
pub struct PassedSockets {
    pub(crate) fds: Option<listenfd::ListenFd>,
    /// `$LISTEN_FDNAMES` as given: see [`PassedSockets::names`].
    names: Option<String>,
}

impl PassedSockets {
    /// The name of each of the `n` passed sockets, in order (None: unnamed). systemd gives
    /// them colon-separated in `$LISTEN_FDNAMES`, one per socket (`FileDescriptorName=`, by
    /// default the .socket unit's name). A list that does not name each socket once is
    /// ignored, with a warning (libsystemd's sd_listen_fds_with_names refuses it; the sockets
    /// are served all the same).
    pub(crate) fn names(&self, n: usize) -> Vec<Option<&str>> {
        let Some(raw) = self.names.as_deref() else {
            return vec![None; n];
        };
        let names: Vec<&str> = raw.split(':').collect();
        if names.len() != n {
            tracing::warn!(
                LISTEN_FDNAMES = raw,
                sockets = n,
                "LISTEN_FDNAMES does not name each passed socket once: the names are ignored \
                 (readonly_listen_port alone says which socket is read-only)"
            );
            return vec![None; n];
        }
        names
            .into_iter()
            .map(|name| (!name.is_empty()).then_some(name))
            .collect()
    }
}

impl std::fmt::Debug for PassedSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.fds.as_ref().map_or(0, listenfd::ListenFd::len);
        write!(f, "PassedSockets({n}, names {:?})", self.names)
    }
}

/// Where notifications go, read once from the environment at startup: the queue of the
/// thread that sends them, in order.
#[derive(Debug, Default)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Job>>,
}

/// What the sending thread is asked to do.
enum Job {
    /// Send this notification.
    Send(String),
    /// Say so once every notification asked for before is sent (or given up on).
    Flush(tokio::sync::oneshot::Sender<()>),
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
        let socket = UnixDatagram::unbound();
        let (tx, rx) = mpsc::channel();
        let sender = socket.and_then(|socket| {
            let addr = addr?;
            std::thread::Builder::new()
                .name("systemd-notify".into())
                .spawn(move || send_in_order(&socket, &addr, &rx))
        });
        match sender {
            Ok(_) => Notifier { queue: Some(tx) },
            Err(e) => {
                tracing::warn!(notify_socket = path, error = %e, "cannot notify systemd");
                Notifier::default()
            }
        }
    }

    /// Send `state` (newline-separated `KEY=value` assignments), after the notifications
    /// asked for before it. Returns at once.
    pub fn send(&self, state: &str) {
        if let Some(queue) = &self.queue {
            // Fails only with the thread gone: dropped, as a send that failed would be.
            let _ = queue.send(Job::Send(state.to_owned()));
        }
    }

    /// Wait, up to [`SEND_WAIT`], for the notifications asked for so far to be sent: at exit,
    /// so that `STOPPING=1` is not lost with the process.
    pub async fn flush(&self) {
        if let Some(queue) = &self.queue {
            let (done, sent) = tokio::sync::oneshot::channel();
            if queue.send(Job::Flush(done)).is_ok() {
                let _ = tokio::time::timeout(SEND_WAIT, sent).await;
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
        self.queue.is_some()
    }

    /// The stats_period averages, for `systemctl status`.
    pub fn stats(&self, a: &crate::stats::Averages) {
        if self.active() {
            self.send(&stats_status(a));
        }
    }
}

/// The sending thread: each notification in turn, each waiting up to [`SEND_WAIT`] for room.
fn send_in_order(socket: &UnixDatagram, addr: &SocketAddr, jobs: &mpsc::Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Send(state) => {
                if let Err(e) = send_waiting(socket, addr, &state) {
                    tracing::debug!(error = %e, state, "systemd notification not sent");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Send `state`, waiting up to [`SEND_WAIT`] in all for room. A signal caught meanwhile (on
/// this thread: the kernel hands a process's signal to any thread) ends the wait with EINTR,
/// whatever SA_RESTART says (a socket with a send timeout): the wait goes on. READY=1 was
/// dropped so when a `systemctl stop` came during it.
fn send_waiting(socket: &UnixDatagram, addr: &SocketAddr, state: &str) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + SEND_WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        socket.set_write_timeout(Some(left))?;
        match socket.send_to_addr(state.as_bytes(), addr) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            sent => return sent.map(drop),
        }
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

    /// Asked for while the queue is full, the notifications wait for room without holding up
    /// the caller, and arrive in the order they were asked for.
    #[tokio::test]
    async fn a_full_queue_keeps_the_order_without_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let filler = UnixDatagram::unbound().expect("socket");
        filler.set_nonblocking(true).expect("nonblocking");
        while filler.send_to(b"FILLER=1", &path).is_ok() {}
        let notifier = Notifier::to(&path.to_string_lossy());
        notifier.ready();
        notifier.reloading();
        notifier.ready();
        notifier.stopping();
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while seen.last().map(String::as_str) != Some("STOPPING=1") {
            let n = listener.recv(&mut buf).expect("recv");
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen.retain(|n| n != "FILLER=1");
        assert_eq!(seen, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]);
        notifier.flush().await;
    }

    #[test]
    fn passed_socket_names_are_one_per_socket_or_none() {
        let passed = |names: Option<&str>| PassedSockets {
            fds: None,
            names: names.map(str::to_owned),
        };
        assert_eq!(passed(None).names(2), [None, None]);
        assert_eq!(
            passed(Some("pgbouncer.socket:readonly")).names(2),
            [Some("pgbouncer.socket"), Some("readonly")]
        );
        assert_eq!(passed(Some(":readonly")).names(2), [None, Some("readonly")]);
        // Not one per socket: ignored.
        assert_eq!(passed(Some("readonly")).names(2), [None, None]);
        assert_eq!(passed(Some("a:readonly:c")).names(2), [None, None]);
        assert_eq!(passed(Some("")).names(2), [None, None]);
        assert_eq!(passed(Some("")).names(1), [None]);
    }

    #[test]
    fn nobody_listening_is_not_an_error() {
        Notifier::default().ready();
        Notifier::to("/nonexistent/notify").ready();
    }
}

//! A client connection's log lines: its login, its end, the error it is sent. Each names the
//! connection as PgBouncer does, by an id given at accept (the session's, SHOW CLIENTS'
//! `ptr`, once it is registered), its user and database once its startup packet named them,
//! and its address.
//!
//! The fields are written straight into the line, and only when the line is written (its
//! level enabled): no String per login for a line nobody keeps (a refused login's user and
//! database names excepted, copied out of its startup packet for its lines).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use crate::error::{Error, Fault};
use crate::sessions::SessionInfo;

use super::Peer;

/// A client connection as its log lines name it, from its accept on.
#[derive(Debug)]
pub(super) struct Tag {
    /// The session's id once it is registered (given at accept: a refused login has one).
    pub id: u64,
    /// The client's process id on the unix socket, else 0.
    peer_pid: i32,
    /// A unix socket client's port as PgBouncer names it: the listen port.
    port: u16,
    since: Instant,
    /// The user and database the client asked for, once known: set from the startup packet
    /// only when the login is refused, from the session's registry entry otherwise.
    names: Option<(Arc<str>, Arc<str>)>,
    /// Its login attempt line is written (a login that fails after it, at its first server
    /// login, has no second one).
    attempted: AtomicBool,
}

impl Tag {
    /// The client's pid on a unix socket (SO_PEERCRED, read once at accept), else 0.
    pub(super) fn peer_pid(&self) -> i32 {
        self.peer_pid
    }

    pub(super) fn new(id: u64, peer_pid: i32, listen_port: u16) -> Tag {
        Tag {
            id,
            peer_pid,
            port: listen_port,
            since: Instant::now(),
            names: None,
            attempted: AtomicBool::new(false),
        }
    }

    /// The tag of a registered session.
    pub(super) fn of(info: &SessionInfo) -> Tag {
        Tag {
            id: info.id,
            peer_pid: info.peer_pid,
            port: info.port,
            since: Instant::now(),
            names: Some((Arc::clone(&info.user), Arc::clone(&info.database))),
            attempted: AtomicBool::new(false),
        }
    }

    /// Its login attempt line was written.
    pub(super) fn attempt_logged(&self) {
        self.attempted.store(true, Ordering::Relaxed);
    }

    /// The user and database the client asked for.
    pub(super) fn named(&mut self, user: &str, database: &str) {
        self.names = Some((Arc::from(user), Arc::from(database)));
    }

    /// As [`Self::named`], from a registered session (no allocation).
    pub(super) fn named_as(&mut self, info: &SessionInfo) {
        self.names = Some((Arc::clone(&info.user), Arc::clone(&info.database)));
    }

    /// The client's address as its lines show it, with its port as `port` says.
    pub(super) fn peer<'a>(&self, peer: &'a Peer) -> PeerText<'a> {
        PeerText {
            peer,
            pid: self.peer_pid,
            port: self.port,
        }
    }

    /// A login that did not get in (not a cancel request): its login attempt (with
    /// log_connections, once the startup packet named user and database), its `login failed`
    /// line (a failed authentication) and, unless the client went away, its closing line (with
    /// log_disconnections), in PgBouncer 1.18's order (live: the attempt first; a client gone
    /// in the middle of its login has no closing line). The closing line's `reason` is
    /// PgBouncer's words where they differ from the message the client got (`error`).
    pub(super) fn refused(
        &self,
        peer: &Peer,
        error: &Error,
        config: &crate::config::Config,
        tls: impl FnOnce() -> Option<crate::tls::TlsInfo>,
    ) {
        let s = &config.settings;
        let peer = self.peer(peer);
        let (user, db) = self.names();
        let who = format_args!("{user}@{db}");
        let (id, nodb) = (self.id, self.nodb(error));
        before_attempt(&peer, id, error);
        let attempted = self.attempted.load(Ordering::Relaxed);
        if s.log_connections && self.names.is_some() && !attempted {
            let tls = tls();
            let tls = TlsText(tls.as_ref());
            tracing::info!(%peer, %who, db, id, nodb, %tls, "login attempt: refused");
        }
        if error.is_auth_failure() {
            // A password or SCRAM exchange that failed (PgBouncer's ERROR line has words of
            // its own for it).
            let password = matches!(error, Error::AuthFailed { .. }).then_some(true);
            tracing::warn!(%peer, %who, user, id, nodb, password, error = %error, "login failed");
        }
        if s.log_disconnections && !error.is_disconnect() {
            let age = self.since.elapsed().as_secs();
            let words = error.close_reason();
            let (reason, error): (&dyn std::fmt::Display, _) = match &words {
                Some(words) => (words, Some(tracing::field::display(error))),
                None => (error, None),
            };
            tracing::info!(%peer, %who, db, id, nodb, %reason, error, age, "client closed");
        }
    }

    /// A cancel request's closing line (log_disconnections), as PgBouncer 1.18 writes it
    /// (live): named by the database of the session it was for (`(nodb)` when none), its
    /// user unknown, e.g. `app/(nouser)@.. closing because: successfully sent cancel request`.
    pub(super) fn cancel_closed(
        &self,
        peer: &Peer,
        done: &super::cancel::Cancelled,
        config: &crate::config::Config,
    ) {
        let Some((db, reason)) = done.close() else {
            return;
        };
        if config.settings.log_disconnections {
            let (peer, id, age) = (self.peer(peer), self.id, self.since.elapsed().as_secs());
            tracing::info!(%peer, db, id, reason, age, "client closed");
        }
    }

    /// `Some(true)` when the lines should show PgBouncer's `(nodb)` for a login that names
    /// no pool (the field is left out otherwise).
    fn nodb(&self, error: &Error) -> Option<bool> {
        (self.names.is_some() && error.names_no_pool()).then_some(true)
    }

    /// The error a client is sent, logged: `client error` (info) when the client caused it,
    /// else `pooler error` (with log_pooler_errors); a client gone is debug only.
    pub(super) fn error(&self, peer: &Peer, error: &Error, config: &crate::config::Config) {
        let peer = self.peer(peer);
        if error.is_disconnect() {
            tracing::debug!(%peer, id = self.id, error = %error, "client disconnected");
            return;
        }
        let (user, db) = self.names();
        let who = format_args!("{user}@{db}");
        let (id, nodb) = (self.id, self.nodb(error));
        // PgBouncer's words for the error where they differ (as in the closing line).
        let reason = error.close_reason();
        match error.fault() {
            Fault::Client => {
                tracing::info!(%peer, %who, db, id, nodb, error = %error, reason, "client error")
            }
            Fault::Server | Fault::Internal if config.settings.log_pooler_errors => {
                // Left out when there is none (PgBouncer's line has nothing after the error).
                let source = std::error::Error::source(error).map(tracing::field::debug);
                tracing::warn!(%peer, %who, db, id, nodb, error = %error, reason, source, "pooler error")
            }
            _ => {}
        }
    }

    /// PgBouncer's placeholders for names not known (no startup packet read).
    fn names(&self) -> (&str, &str) {
        match &self.names {
            Some((user, db)) => (user, db),
            None => ("(nouser)", "(nodb)"),
        }
    }
}

/// PgBouncer's line of a refusal that comes before the login attempt's, as PgBouncer 1.18
/// writes it before it has a pool for the client (live: `(nodb)/(nouser)`, whatever the
/// login named): a user not in the auth file (`no such user`), a startup parameter it does not
/// take (a warning, with the parameter's value).
fn before_attempt(peer: &PeerText<'_>, id: u64, error: &Error) {
    match error {
        Error::AuthFailed {
            user,
            unknown: true,
            ..
        } => tracing::info!(%peer, id, user, "no such user"),
        Error::UnsupportedStartupParameter { name, value } => {
            tracing::warn!(%peer, id, name, value, "unsupported startup parameter")
        }
        _ => {}
    }
}

/// The log_disconnections line of a session's end: why (PgBouncer's wording: Terminate is
/// `client close request`, a closed socket `client unexpected eof`) and its age.
pub(super) fn log_close(peer: &Peer, info: &SessionInfo, result: &Result<(), Error>) {
    let who = format_args!("{}@{}", info.user, info.database);
    let reason = CloseReason(result);
    let age = info.connect_time.elapsed().unwrap_or_default().as_secs();
    let peer = PeerText::of(peer, info);
    // `db` besides `who`: names may hold an `@`, so `who` alone does not split back.
    let db = &*info.database;
    tracing::info!(%peer, %who, db, id = info.id, %reason, age, "client closed");
}

/// Why a session ended, as its close line says it.
struct CloseReason<'a>(&'a Result<(), Error>);

impl std::fmt::Display for CloseReason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("client close request"),
            Err(e) if e.is_disconnect() => f.write_str("client unexpected eof"),
            Err(e) => e.fmt(f),
        }
    }
}

/// A client in its log lines, as PgBouncer names it: `addr:port`, or
/// `unix(<client pid>):<listen port>` on the unix socket.
pub(super) struct PeerText<'a> {
    peer: &'a Peer,
    pid: i32,
    port: u16,
}

impl<'a> PeerText<'a> {
    pub(super) fn of(peer: &'a Peer, info: &SessionInfo) -> PeerText<'a> {
        PeerText {
            peer,
            pid: info.peer_pid,
            port: info.port,
        }
    }
}

impl std::fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Peer::Tcp(a) => a.fmt(f),
            Peer::Unix => write!(f, "unix({}):{}", self.pid, self.port),
        }
    }
}

/// A client connection's TLS for the log: `no`, or version/cipher as SHOW CLIENTS shows it.
pub(super) struct TlsText<'a>(pub Option<&'a crate::tls::TlsInfo>);

impl std::fmt::Display for TlsText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(tls) => tls.fmt(f),
            None => f.write_str("no"),
        }
    }
}

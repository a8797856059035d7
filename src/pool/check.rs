//! Is an idle connection still good before a client gets it? Its host must still take this
//! pool's role (routing), it must have said nothing while idle (a terminated backend's FATAL
//! or a closed socket), and, idle longer than `server_check_delay`, it must answer
//! `server_check_query` (PgBouncer's test for a peer that vanished without closing).

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::{timeout, Duration, Instant};

use super::{Pool, PoolSettings};
use crate::protocol::backend;
use crate::server::{QueryOutcome, ServerConn, Spoke};

/// The close line's reason for a connection that spoke while idle (it is closed: what it
/// sent would reach the next client, and a LISTEN left on it would send more). A FATAL (its
/// backend terminated) or EOF: PgBouncer 1.18's `server conn crashed?` (live). Another
/// message PgBouncer 1.18 skips with a WARNING in these words and keeps the connection (live:
/// a NOTIFY to a LISTEN left behind in transaction mode): pgporter's close line says them.
pub(super) fn idle_reason(spoke: Spoke) -> &'static str {
    match spoke {
        Spoke::Message(backend::NOTIFICATION_RESPONSE) => {
            "got packet 'A' from server when not linked"
        }
        Spoke::Message(backend::NOTICE_RESPONSE) => "got packet 'N' from server when not linked",
        Spoke::Message(backend::PARAMETER_STATUS) => "got packet 'S' from server when not linked",
        Spoke::Message(_) | Spoke::Gone => "server conn crashed?",
    }
}

impl Pool {
    /// `conn`, lent after `idle_for` on the idle list (None: newly opened), if it can serve;
    /// else it is handed back (still counted and held) for the caller to discard. The check
    /// gives up at server_reset_timeout, or at the client's `deadline` if that comes first.
    /// `settings` are the pool's as the connection is handed out (the caller reads them
    /// again after a wait), so a reload or admin SET during the wait applies to the check.
    pub(super) async fn checked(
        &self,
        mut conn: ServerConn,
        idle_for: Option<Duration>,
        settings: &PoolSettings,
        deadline: Option<Instant>,
    ) -> Result<ServerConn, (ServerConn, &'static str)> {
        if let Some(spoke) = conn.spoke_while_idle() {
            // As the janitor says it too.
            return Err((conn, idle_reason(spoke)));
        }
        if !self.hosts.accepts(conn.tag.as_ref()) {
            return Err((conn, "host down or changed role"));
        }
        let Some(sql) = settings.check_query.as_deref() else {
            return Ok(conn);
        };
        if idle_for.map_or(true, |idle| idle < settings.check_delay) {
            return Ok(conn);
        }
        // A drop of the pool's connections (RECONNECT, KILL, a reload) while the check runs
        // stops it and closes the connection, as for a reset, and the client takes another:
        // PgBouncer 1.18 closes a server in `tested` at RECONNECT (live: `closing because:
        // database configuration changed` at once, mid-check). So does one that came since
        // the connection was lent. Listening before the look at the count, so none is missed.
        let cut = self.cut.notified();
        tokio::pin!(cut);
        cut.as_mut().enable();
        let dropped = {
            let inner = self.lock();
            (conn.lent_at != inner.cuts).then_some(inner.cut_reason)
        };
        if let Some(reason) = dropped {
            return Err((conn, reason));
        }
        // Dropped mid-check (the client left), the connection is closed and its slot freed.
        self.testing.fetch_add(1, Relaxed);
        let mut lent = Lent {
            pool: self,
            conn: Some(conn),
        };
        let conn = lent.conn.as_mut().expect("set above");
        // At least a moment, so a healthy connection checked as the wait ends is not closed
        // for being asked too late.
        let limit = match deadline {
            Some(d) => settings.reset_timeout.min(
                d.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100)),
            ),
            None => settings.reset_timeout,
        };
        let outcome = tokio::select! {
            biased;
            () = &mut cut => None,
            outcome = timeout(limit, crate::server::simple_query(conn, sql)) => Some(outcome),
        };
        let failed = match outcome {
            None => Some(self.cut_reason()),
            Some(Ok(Ok(QueryOutcome::Done(b'I')))) => None,
            Some(Ok(Ok(QueryOutcome::Done(status)))) => {
                tracing::warn!(pid = conn.pid(), status = %char::from(status), "server_check_query left a transaction open; closing the server connection");
                Some("server_check_query left a transaction open")
            }
            Some(Ok(Ok(QueryOutcome::Failed(e)))) => {
                tracing::warn!(pid = conn.pid(), error = %e, "server_check_query failed; closing the server connection");
                Some("server_check_query failed")
            }
            Some(Ok(Err(e))) => {
                tracing::info!(pid = conn.pid(), host = %conn.addr, error = %e, "server connection lost while idle (server_check_query); closing it");
                Some("server conn crashed?")
            }
            Some(Err(_)) => {
                tracing::warn!(pid = conn.pid(), host = %conn.addr, "server_check_query timed out; closing the server connection");
                Some("server_check_query timed out")
            }
        };
        let conn = lent.conn.take().expect("set above");
        match failed {
            None => Ok(conn),
            Some(reason) => Err((conn, reason)),
        }
    }
}

/// A lent connection under test (counted in `testing`); dropped before the test ends, it is
/// abandoned (slot freed, socket closed in the background).
struct Lent<'p> {
    pool: &'p Pool,
    conn: Option<ServerConn>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.pool.testing.fetch_sub(1, Relaxed);
        if let Some(conn) = self.conn.take() {
            // Cut off in the middle of its check query.
            self.pool.abandon(conn, "unclean server");
        }
    }
}

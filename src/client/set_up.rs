//! A session's set-up between checkout and relay, apart from the session loop: it goes at
//! the client's and the audit writer's pace, so `serve` runs it beside the kill signal.

use std::sync::Arc;

use crate::audit::AuditEvent;
use crate::error::Error;
use crate::net::Stream;
use crate::protocol::FramedConn;
use crate::server::ServerConn;
use crate::sessions::SessionInfo;

use super::params::Tracked;
use super::serve::Session;

/// How a session's set-up ([`set_up`]) ended short of the relay.
pub(super) enum SetUpEnd {
    /// Released as `clean` / `exact` say.
    Failed {
        error: Error,
        clean: bool,
        exact: bool,
    },
    /// Killed (KILL, KILL_CLIENT, shutdown) meanwhile: the connection is closed.
    Killed(Error),
    /// A session limit ran out while a cancelled request was skipped: the connection is
    /// closed, the limit's reason in its close line.
    TimedOut(super::watchdog::Timeout),
}

/// Between checkout and relay: session_start in the audit log (once per session), the
/// client's parameters applied to `server` (ParameterStatus for the client where a value
/// differs from what it was told), and a request cancelled meanwhile answered (`watchdog`:
/// the session's limits, which bound the wait for the rest of that request). `first_pid`:
/// the session's first server connection's pid, None until this one (session_start is due). Returns
/// whether pgporter's own SET travels ahead of the client's request.
pub(super) async fn set_up(
    conn: &mut FramedConn<Stream>,
    session: &Session,
    server: &mut ServerConn,
    info: &SessionInfo,
    first_pid: &mut Option<i32>,
    watchdog: Option<&mut super::watchdog::Watchdog>,
    tracked: Tracked<'_>,
) -> Result<bool, SetUpEnd> {
    let (pool, who) = (&session.pool, &session.who);
    // Once per session (its first server connection, in transaction mode).
    if let (Some(audited), None) = (&who.info, *first_pid) {
        who.audit
            .send(AuditEvent::SessionStart {
                session: Arc::clone(audited),
                backend_pid: Some(server.pid()),
                backend_host: Some(server.addr.to_string()),
            })
            .await;
    }
    *first_pid = Some(server.pid());
    let greeted = pool.welcome().unwrap_or_default();
    let ahead = (session.params)
        .apply(
            server,
            pool.app_default(),
            &greeted,
            tracked,
            &mut conn.wbuf,
        )
        .await
        .map_err(|error| SetUpEnd::Failed {
            error,
            clean: false,
            exact: false,
        })?;
    let lost = |e| SetUpEnd::Failed {
        error: Error::ClientProtocol(e),
        clean: !ahead,
        exact: true,
    };
    if !conn.wbuf.is_empty() {
        conn.flush().await.map_err(lost)?;
    }
    // A cancel until here (pgporter's own SETs above are not the client's to cancel) cancels
    // the request instead: it is not sent.
    // The rest of the request is skipped, the server connection held: the session's limits
    // run as for a request in progress.
    if info.set_up() {
        let mut watch = super::relay::Watch::new(watchdog, None);
        super::relay::answer_cancelled(conn, &mut watch)
            .await
            .map_err(|end| match end {
                super::relay::SkipEnd::Client(e) => lost(e),
                super::relay::SkipEnd::Timeout(limit) => SetUpEnd::TimedOut(limit),
            })?;
    }
    Ok(ahead)
}

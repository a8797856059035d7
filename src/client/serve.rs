//! The session loop. In session mode the client keeps one server connection from its first
//! query until it leaves; then the connection is reset and returned, or closed. In transaction
//! mode it is given back at the end of each transaction (unless the client has a named
//! prepared statement open, see [`super::prepared`]) and the session waits for the client's
//! next request as it did for its first.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;

use crate::app::Shared;
use crate::audit::{self, AuditEvent, AuditHandle, SessionEnd};
use crate::config::AuditStatements;
use crate::error::Error;
use crate::identity::GucNames;
use crate::net::Stream;
use crate::pool::{ClientSlot, Identity, Pool};
use crate::protocol::{frontend, FramedConn, ProtocolError};
use crate::server::ServerConn;
use crate::sessions::SessionInfo;
use crate::stats::{Meter, PoolStats};

use super::acquire::{checkout_unless_gone, Waited};
use super::params::ClientParams;
use super::relay::{relay, RelayEnd, Traffic, TxTracker};
use super::renaming::{ClientStatements, Renaming};
use super::set_up::{set_up, SetUpEnd};
use super::statements::StatementAudit;
use super::tap::RelayState;
use super::watchdog::Watchdog;

/// A logged-in client, ready to be served.
#[derive(Debug)]
pub(super) struct Session {
    pub pool: Arc<Pool>,
    /// Counted against the client-connection caps until the session ends.
    pub client_slot: ClientSlot,
    pub params: ClientParams,
    /// The pool's counters (the relay's meter is made from them and the database's query
    /// histogram when the session gets a server).
    pub stats: Arc<PoolStats>,
    /// Read-only pools: the HINT added to the server's 25006 errors.
    pub read_only_hint: Option<Arc<str>>,
    /// Tagging, spoof check and audit.
    pub who: Who,
    /// Transaction mode only (made at its first transaction): boxed, so that a session-mode
    /// client, and an idle one, costs a pointer for it (W6).
    pub txn: Option<Box<TxnState>>,
}

/// What a transaction-mode session keeps between its transactions.
#[derive(Debug, Default)]
pub(super) struct TxnState {
    /// The client's named prepared statements, with max_prepared_statements = 0.
    prepared: super::prepared::Prepared,
    /// With max_prepared_statements > 0 (as it was at the session's first transaction): the
    /// client's statement names and the shared statements they stand for.
    renamed: Option<ClientStatements>,
    /// The texts of its named statements, for the audit log (a Bind in a later transaction
    /// names the statement only).
    audited: super::statements::Named,
    /// The session's transactions so far (the audit log numbers them).
    xacts: u64,
    /// The session tag, asked for at every transaction.
    tag: std::sync::Mutex<Option<TagUnder>>,
}

/// A session tag (None: tagging off) and the configuration snapshot it was worked out under.
type TagUnder = (Arc<crate::config::Config>, Option<Arc<str>>);

/// Who the session is, for tagging, the spoof check and the audit log.
#[derive(Debug)]
pub(super) struct Who {
    /// The session as the audit log names it (None without an audit log).
    pub info: Option<Arc<audit::SessionInfo>>,
    /// Whether the identity GUCs are refused to this client (not to admin users). The tag
    /// and the names to refuse are worked out from the live config when the client gets a
    /// server connection: an idle session keeps neither.
    pub checked: bool,
    /// query_wait_notify's NOTICE went out: as PgBouncer, once per client, not once per
    /// wait (in transaction mode a client may wait at every transaction). Kept here, in the
    /// padding after `checked`: an idle session costs nothing more for it.
    pub queue_noticed: std::sync::atomic::AtomicBool,
    pub audit: AuditHandle,
}

impl Session {
    /// Who the client is for fair sharing: its login user name.
    pub(super) fn identity(&self) -> &Identity {
        self.client_slot.user()
    }

    /// The tag its server connections must carry under `config` (`crate::identity`).
    pub(super) fn tag_under(
        &self,
        config: &Arc<crate::config::Config>,
        info: &SessionInfo,
    ) -> Option<Arc<str>> {
        let work_out =
            || crate::identity::tag_key(&config.settings.identity, self.identity(), info.ip);
        let Some(txn) = &self.txn else {
            return work_out();
        };
        let mut cached = txn.tag.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((made_for, tag)) if Arc::ptr_eq(made_for, config) => tag.clone(),
            _ => {
                let tag = work_out();
                *cached = Some((Arc::clone(config), tag.clone()));
                tag
            }
        }
    }

    /// Whether the client leaves named prepared statements of its own naming on its server
    /// connection (transaction mode).
    fn statements_open(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| {
            !t.prepared.none_open() || t.renamed.as_ref().is_some_and(ClientStatements::pinned)
        })
    }
}

/// What a session did, for its session_end event.
#[derive(Debug, Default)]
pub(super) struct Tally {
    traffic: Traffic,
    statements: u64,
    pid: Option<i32>,
}

pub(super) async fn serve(
    conn: &mut FramedConn<Stream>,
    mut session: Box<Session>,
    info: &SessionInfo,
    shared: &Shared,
) -> Result<(), Error> {
    let mut tally = Tally::default();
    let result = loop {
        // An idle session waits here, in the first_request future: everything after it is
        // boxed, so the task of an idle client stays small (W6).
        match first_request(conn, info, shared).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        // The configuration this request is served under.
        let config = shared.config.load();
        if let Some(&tag) =
            (conn.rbuf.first()).filter(|&&t| !may_send(t, config.settings.disable_pqexec))
        {
            break Err(refusal(tag));
        }
        let served = Box::pin(async {
            let waited = checkout_unless_gone(conn, &session, info, shared, &config).await?;
            let (server, pool) = match waited {
                Waited::Served(server, pool) => (server, pool),
                // Terminate is a close request; a closed socket, an unexpected EOF.
                Waited::Left if conn.terminated() => return Ok(After::Ended),
                Waited::Left => return Err(Error::ClientProtocol(ProtocolError::Eof)),
                Waited::Cancelled => {
                    // No server connection is held: the session is idle (set so by the
                    // cancel) while the rest of its request is skipped, and
                    // client_idle_timeout, a kill, must reach it.
                    let mut watch = super::relay::Watch::none();
                    tokio::select! {
                        biased;
                        () = info.killed() => return Err(ended(shared, info)),
                        done = super::relay::answer_cancelled(conn, &mut watch) => {
                            done.map_err(super::relay::SkipEnd::into_error)?;
                        }
                    }
                    // Its request was cancelled while it waited: it may send the next one.
                    return Ok(After::NextRequest);
                }
            };
            // The pool that replaced the session's after a reload, if one did.
            session.pool = pool;
            relay_session(
                conn,
                &mut session,
                server,
                info,
                shared,
                &config,
                &mut tally,
            )
            .await
        })
        .await;
        info.set_idle();
        match served {
            Ok(After::NextRequest) => continue,
            Ok(After::Ended) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Some(audited) = &session.who.info {
        Box::pin(audit_end(&session.who, audited, info, &result, &tally)).await;
    }
    result
}

/// What a session does once a request was served (or given up).
enum After {
    /// The client left.
    Ended,
    /// Wait for the client's next request (transaction mode, or a request cancelled while
    /// it waited) and take a server connection for it.
    NextRequest,
}

/// session_start if it was never written (no server connection), then session_end.
async fn audit_end(
    who: &Who,
    audited: &Arc<audit::SessionInfo>,
    info: &SessionInfo,
    result: &Result<(), Error>,
    tally: &Tally,
) {
    if tally.pid.is_none() {
        who.audit
            .send(AuditEvent::SessionStart {
                session: Arc::clone(audited),
                backend_pid: None,
                backend_host: None,
            })
            .await;
    }
    let reason = match result {
        // The audit log does not tell a Terminate from a closed socket.
        Ok(()) => "client closed".to_string(),
        Err(e) if e.is_disconnect() => "client closed".to_string(),
        Err(e) => e.to_string(),
    };
    who.audit
        .send(AuditEvent::SessionEnd(SessionEnd {
            session: Arc::clone(audited),
            backend_pid: tally.pid,
            duration: info.connect_time.elapsed().unwrap_or_default(),
            statements: tally.statements,
            bytes_in: tally.traffic.up,
            bytes_out: tally.traffic.down,
            reason,
        }))
        .await;
}

/// Relay between the client and `server` until one side ends, or in transaction mode until
/// a transaction ends; then release or close the server connection.
///
/// A plain fn around an async block: the block's capture is its only copy of `server` (an
/// async fn keeps two of each argument), and the request future that holds this one is
/// boxed, and so copied, at every request.
// Not an async fn: see above.
#[allow(clippy::manual_async_fn)]
fn relay_session<'a>(
    conn: &'a mut FramedConn<Stream>,
    session: &'a mut Session,
    mut server: ServerConn,
    info: &'a SessionInfo,
    shared: &'a Shared,
    config: &'a crate::config::Config,
    tally: &'a mut Tally,
) -> impl Future<Output = Result<After, Error>> + 'a {
    async move {
        let pool = Arc::clone(&session.pool);
        let tracked = super::params::Tracked(&config.settings.track_extra_parameters);
        // The set-up goes at the client's and the audit writer's pace (a client that stopped
        // reading holds up the flush, one that stalls mid-message the cancelled answer), the
        // server connection held: a kill or shutdown must reach it. Polled first: a set-up done
        // at its first poll (the usual case, nothing to write) never registers for the kill.
        let mut watchdog = Watchdog::new(config.session_timeouts(&info.pool_user));
        let set_up = set_up(
            conn,
            session,
            &mut server,
            info,
            &mut tally.pid,
            watchdog.as_mut(),
            tracked,
        );
        let ahead = match tokio::select! {
            biased;
            done = set_up => done,
            () = info.killed() => Err(SetUpEnd::Killed(ended(shared, info))),
        } {
            Ok(ahead) => ahead,
            Err(SetUpEnd::Failed {
                error,
                clean,
                exact,
            }) => {
                pool.release(server, clean, exact).await;
                return Err(error);
            }
            Err(SetUpEnd::TimedOut(limit)) => {
                // Nothing of the client's was sent (its request was cancelled): no cancel.
                pool.discard(server, limit.close_reason()).await;
                tracing::info!(user = %info.user, db = %info.database, ?limit, "session ended by timeout");
                return Err(limit.error());
            }
            Err(SetUpEnd::Killed(e)) => {
                let reason = if matches!(e, Error::Shutdown) {
                    "shutting down"
                } else {
                    UNCLEAN
                };
                pool.discard(server, reason).await;
                return Err(e);
            }
        };
        let histogram = shared.metrics.query_histogram(&info.database);
        let mut state = relay_state(session, config, server.pid(), histogram)
            .with_read_only_hint(session.read_only_hint.clone());
        state.ahead = u32::from(ahead);
        let mode = pool.mode();
        state.transaction_mode = mode.releases_between_transactions();
        state.no_simple_query = config.settings.disable_pqexec;
        state.statement_mode = mode == crate::config::PoolMode::Statement;
        if state.transaction_mode {
            session.txn.get_or_insert_with(|| {
                let keep = config.settings.max_prepared_statements;
                Box::new(TxnState {
                    renamed: (keep > 0).then(|| ClientStatements::new(keep)),
                    ..TxnState::default()
                })
            });
        }
        // A session that began in transaction mode keeps following its statements if a reload
        // turned its database to session mode: between transactions it held no connection, so
        // its statements are in pgporter's record only.
        if let Some(txn) = &mut session.txn {
            if let Some(audit) = &mut state.audit {
                audit.resume(std::mem::take(&mut txn.audited), txn.xacts);
            }
            match txn.renamed.take() {
                Some(client) => {
                    let server = std::mem::take(&mut server.statements);
                    let registry = Arc::clone(&shared.statements);
                    state.renaming = Some(Renaming::new(client, server, registry));
                }
                None => {
                    state.prepared = Some(std::mem::take(&mut txn.prepared));
                    state.watch_drops = !server.statements.is_empty();
                }
            }
        }
        state.watchdog = watchdog;
        let max_message = usize::try_from(config.settings.max_packet_size).unwrap_or(usize::MAX);
        let traffic = &mut tally.traffic;
        // Cancelled when the health monitor sees the server's host down: end instead of hanging.
        // Without a host tag (no routing) there is nothing to wait for: no token to poll (and
        // lock) on every wake of the relay.
        let gone = server.tag.as_ref();
        let host_down = async {
            match gone {
                Some(tag) => tag.went_down().await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            biased;
            () = info.killed() => Err(ended(shared, info)),
            () = host_down => Err(Error::ServerDown),
            end = relay(conn, &mut server.conn, &mut state, max_message, traffic, info, &shared.config) => Ok(end),
        };
        // No cancel may reach this server connection once it is released: none can start now,
        // and one being forwarded is waited for (PostgreSQL delivers it within milliseconds).
        info.set_idle();
        let cancels_settled = info
            .cancels_settled(std::time::Duration::from_secs(5))
            .await;
        if let Some(mut a) = state.audit.take() {
            a.abandon();
            tally.statements += a.count;
            if let Some(txn) = &mut session.txn {
                txn.audited = a.take_prepared();
                txn.xacts = a.xacts_counted();
            }
            if let Some(sender) = &mut state.sender {
                while let Some(ev) = a.events.pop_front() {
                    sender.send(ev).await;
                }
            }
        }
        if let Some(txn) = &mut session.txn {
            if let Some(prepared) = state.prepared.take() {
                info.prepared.store(prepared.len(), Relaxed);
                txn.prepared = prepared;
            }
            if let Some(renaming) = state.renaming.take() {
                info.prepared.store(renaming.client.len(), Relaxed);
                if let Some(link) = &server.link {
                    let held = u32::try_from(renaming.server.len()).unwrap_or(u32::MAX);
                    link.prepared.store(held, Relaxed);
                }
                txn.renamed = Some(renaming.client);
                server.statements = renaming.server;
            }
            // What the client SET (a reported parameter) follows it to its next connection.
            (session.params).follow(&state.param_changes, tracked);
        }
        if state.dropped_all {
            server.statements.clear();
        }
        for (name, value) in state.param_changes.drain(..) {
            server.set_param(&name, &value);
        }
        let tracker = &state.tracker;
        // A promotion reported on this connection: close it (and re-check the host).
        let role_changed = server
            .tag
            .as_ref()
            .is_some_and(|t| t.contradicted_by(state.hot_standby));
        let reconnect_before = session
            .stats
            .reconnect_before_us
            .load(std::sync::atomic::Ordering::Relaxed);
        let stale = reconnect_before > 0
            && crate::stats::micros(
                server
                    .created_at
                    .saturating_duration_since(shared.stats.epoch),
            ) < reconnect_before;
        match end {
            Ok(end @ (RelayEnd::Terminate | RelayEnd::ClientGone | RelayEnd::Unexpected(_))) => {
                let clean =
                    tracker.is_idle() && state.ahead == 0 && !state.cut_short && cancels_settled;
                // Named prepared statements a transaction-mode client leaves open would meet the
                // next client's of the same name.
                let reset = session.statements_open().then_some("DEALLOCATE ALL");
                if matches!(end, RelayEnd::ClientGone) && !tracker.is_idle() {
                    // Closed as a release would close it, in PgBouncer's words for the case.
                    pool.discard(server, GONE_BUSY).await;
                } else if clean && (stale || role_changed) {
                    pool.discard(server, CLOSE_NEEDED).await;
                } else {
                    pool.release_with(server, clean, tracker.exact(), reset)
                        .await;
                }
                match end {
                    RelayEnd::Unexpected(tag) => Err(refusal(tag)),
                    RelayEnd::ClientGone => Err(Error::ClientProtocol(ProtocolError::Eof)),
                    _ => Ok(After::Ended),
                }
            }
            Ok(RelayEnd::TransactionEnd) => {
                let clean = !state.cut_short && cancels_settled;
                if clean && (stale || role_changed) {
                    pool.discard(server, CLOSE_NEEDED).await;
                } else {
                    pool.release(server, clean, tracker.exact()).await;
                }
                Ok(After::NextRequest)
            }
            Ok(RelayEnd::ClientError(e)) => {
                if e.is_disconnect() && !tracker.is_idle() {
                    pool.discard(server, GONE_BUSY).await;
                } else {
                    pool.release(server, false, false).await;
                }
                // A reset or EOF too: the close line says `client unexpected eof`.
                Err(Error::ClientProtocol(e))
            }
            // The reasons of the servers' close lines: PgBouncer's words where it has them.
            Ok(RelayEnd::RenamingLost) => {
                pool.discard(server, UNCLEAN).await;
                Err(Error::RenamingLost)
            }
            Ok(RelayEnd::LongTransaction) => {
                // The server is inside a transaction block: closing the connection rolls it back.
                pool.discard(server, UNCLEAN).await;
                Err(Error::LongTransaction)
            }
            Ok(RelayEnd::Spoofed) => {
                pool.discard(server, UNCLEAN).await;
                Err(Error::IdentitySpoof)
            }
            Ok(RelayEnd::ServerGone) => {
                pool.discard(server, CRASHED).await;
                Err(if state.server_fatal {
                    Error::ServerFatal
                } else {
                    Error::ServerClosed
                })
            }
            Ok(RelayEnd::Timeout(limit)) => {
                // A query may still run: cancel it (closing the socket alone would leave it
                // running until it next writes), then close the connection.
                let (addr, key) = (server.addr.clone(), server.key);
                let within = crate::config::Config::limit(
                    shared.config.load().settings.server_connect_timeout,
                );
                pool.track(async move {
                    let _ = crate::server::send_cancel(&addr, key, within, |_| {}).await;
                });
                pool.discard(server, limit.close_reason()).await;
                tracing::info!(user = %info.user, db = %info.database, ?limit, "session ended by timeout");
                Err(limit.error())
            }
            Ok(RelayEnd::FastClose) => {
                tracing::info!(user = %info.user, db = %info.database, pid = server.pid(), "server_fast_close: closing the session's server connection");
                pool.discard(server, "database configuration changed").await;
                Err(Error::DatabaseChanged)
            }
            Ok(RelayEnd::ServerError(e)) => {
                pool.discard(server, CRASHED).await;
                Err(if state.server_fatal {
                    Error::ServerFatal
                } else {
                    Error::ServerLost(e)
                })
            }
            Err(e) => {
                let reason = match e {
                    Error::ServerDown => "host down or changed role",
                    Error::Shutdown => "shutting down",
                    _ => UNCLEAN,
                };
                pool.discard(server, reason).await;
                Err(e)
            }
        }
    }
}

/// PgBouncer's reason for a server connection closed in an unknown state.
const UNCLEAN: &str = "unclean server";
/// PgBouncer's reason for a server connection marked to be closed when its client is done
/// with it (live, PgBouncer 1.18: after RECONNECT); pgporter's role change (a promotion or
/// demotion seen on the connection) marks it the same way.
const CLOSE_NEEDED: &str = "close_needed";
/// PgBouncer's reason for a server connection whose client went away (EOF, reset) in the
/// middle of a request.
const GONE_BUSY: &str = "client disconnect while server was not ready";
/// PgBouncer's reason for a server connection that failed or closed under its client.
const CRASHED: &str = "server conn crashed?";

/// The relay's view of the session: stats meter, spoof check, statement audit (what to log
/// follows the live config; where to, the audit handle).
fn relay_state(
    session: &Session,
    config: &crate::config::Config,
    pid: i32,
    query_histogram: Arc<crate::metrics::Histogram>,
) -> RelayState {
    let who = &session.who;
    let audit_cfg = &config.settings.audit;
    let max_len = audit_cfg.audit_max_statement_length;
    let stmt_audit = match (audit_cfg.audit_statements, &who.info) {
        (AuditStatements::None, _) | (_, None) => None,
        (mode, Some(audited)) => Some(StatementAudit::new(mode, max_len, Arc::clone(audited), pid)),
    };
    let sender = stmt_audit.as_ref().and_then(|_| who.audit.poll_sender());
    RelayState::new(
        TxTracker::metered(Meter::new(Arc::clone(&session.stats), query_histogram)),
        if who.checked {
            config.spoof_names().clone()
        } else {
            GucNames::default()
        },
        stmt_audit,
        sender,
        max_len.saturating_add(1024),
    )
}

/// Why a session was killed: process shutdown, client_idle_timeout, or the admin console
/// (KILL: `database removed`, KILL_CLIENT: `admin forced disconnect`, PgBouncer's words).
pub(super) fn ended(shared: &Shared, info: &SessionInfo) -> Error {
    use crate::sessions::KillReason;
    if shared.shutdown.is_cancelled() || shared.lifecycle.draining() {
        return Error::Shutdown;
    }
    match info.kill_reason() {
        Some(KillReason::ClientIdleTimeout) => Error::ClientIdleTimeout,
        Some(KillReason::Database) => Error::DatabaseKilled,
        Some(KillReason::Client) => Error::ClientKilled,
        Some(KillReason::Shutdown) | None => Error::Shutdown,
    }
}

/// Wait for the client's first request; false if it sends Terminate first (a closed socket is
/// an error: `client unexpected eof`).
async fn first_request(
    conn: &mut FramedConn<Stream>,
    info: &SessionInfo,
    shared: &Shared,
) -> Result<bool, Error> {
    conn.shrink();
    if conn.rbuf.is_empty() {
        let mut kill = std::pin::pin!(info.killed());
        std::future::poll_fn(|cx| {
            if kill.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(ended(shared, info)));
            }
            conn.io
                .poll_read_ready(cx)
                .map_err(|e| Error::ClientProtocol(e.into()))
        })
        .await?;
    }
    // The session's read buffer, sized for the relay at once (a fresh buffer's first read is
    // small, for logins).
    conn.rbuf.reserve(crate::protocol::READ_CHUNK);
    // A request that came in the same read as the login is already here: reading again
    // would wait for the client's next one. A server is taken only for a whole message
    // header: a client that sent a few bytes and stalled holds none (client_idle_timeout
    // still applies to it).
    loop {
        while conn.rbuf.len() < 5 {
            // A type byte no client may send is refused at once, as PostgreSQL does, rather
            // than after a length word that may never come. Checked only here, where the read
            // waits.
            if let Some(&tag) = conn.rbuf.first().filter(|&&t| !frontend::after_login(t)) {
                return Err(refusal(tag));
            }
            tokio::select! {
                biased;
                () = info.killed() => return Err(ended(shared, info)),
                read = conn.fill() => match read {
                    Ok(()) => {}
                    // EOF included: the session's close line tells it from a Terminate.
                    Err(e) => return Err(Error::ClientProtocol(e)),
                },
            }
        }
        // A Flush first asks for nothing: no server connection is held, so no answer is
        // pending. It is dropped and the session stays idle (PgBouncer 1.18 takes a server
        // connection for it and holds it until the client's next ReadyForQuery, live).
        if !conn.rbuf.starts_with(LONE_FLUSH) {
            break;
        }
        bytes::Buf::advance(&mut conn.rbuf, LONE_FLUSH.len());
    }
    if info.is_killed() {
        return Err(ended(shared, info));
    }
    Ok(conn.rbuf.first() != Some(&frontend::TERMINATE))
}

/// A Flush message (no body).
const LONE_FLUSH: &[u8] = &[frontend::FLUSH, 0, 0, 0, 4];

/// Whether a logged-in client may send a message of this type: one valid after login, and
/// not a simple Query under disable_pqexec.
pub(super) fn may_send(tag: u8, disable_pqexec: bool) -> bool {
    frontend::after_login(tag) && !(tag == frontend::QUERY && disable_pqexec)
}

/// Why a message the client may not send ([`may_send`]) ends its session: a simple Query
/// under disable_pqexec (PgBouncer's "PQexec disallowed"), or a type not valid after login.
pub(super) fn refusal(tag: u8) -> Error {
    if tag == frontend::QUERY {
        Error::PqexecDisallowed
    } else {
        Error::ClientProtocol(crate::protocol::ProtocolError::Unexpected(tag))
    }
}

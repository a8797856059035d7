//! Getting a server connection for a session's request: wait while the database is paused,
//! check one out of the pool within query_wait_timeout, give up if the client leaves or
//! cancels meanwhile, and count the assignment (stats, SHOW CLIENTS link, audit of limit
//! rejections).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use crate::app::Shared;
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::net::Stream;
use crate::pool::{Pool, PoolError};
use crate::protocol::backend::{self, Severity};
use crate::protocol::FramedConn;
use crate::server::ServerConn;
use crate::sessions::{ServerLink, SessionInfo};

use super::serve::{ended, Session};

/// How much a waiting client's messages may take in its read buffer (then no more is read
/// until a server is found).
const WAIT_BUFFER: usize = 64 * 1024;

/// [`checkout`], given up if the client leaves while it waits (EOF, or a Terminate behind its
/// request): what it sent must not run once a server frees up (PgBouncer drops it too).
pub(super) async fn checkout_unless_gone(
    conn: &mut FramedConn<Stream>,
    session: &Session,
    info: &SessionInfo,
    shared: &Shared,
    config: &crate::config::Config,
) -> Result<Waited, Error> {
    // One checkout future for both ways below: two calls would each have a slot in this
    // future (4 KB each), copied whole when the session boxes its request.
    let checkout = checkout(session, info, shared);
    tokio::pin!(checkout);
    // A request sent together with its Terminate (fire and forget) did not leave because it
    // waited: it runs, as it would on PostgreSQL.
    if conn.terminated() {
        let (server, pool) = checkout.await?;
        return Ok(Waited::Served(server, pool));
    }
    // query_wait_notify: one NOTICE to a client still waiting after that long, once per
    // client (lazy: a checkout served at once never starts the timer).
    let noticed = &session.who.queue_noticed;
    let after = crate::config::Config::nonzero(config.settings.query_wait_notify)
        .filter(|_| !noticed.load(Relaxed));
    let notice = async {
        match after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(notice);
    loop {
        tokio::select! {
            biased;
            server = &mut checkout => {
                return server.map(|(server, pool)| Waited::Served(server, pool));
            }
            () = conn.left(WAIT_BUFFER) => break,
            () = info.wait_cancelled() => {
                info.set_idle();
                return Ok(Waited::Cancelled);
            }
            () = &mut notice, if !noticed.load(Relaxed) => {
                noticed.store(true, Relaxed);
                backend::error_response(&mut conn.wbuf, Severity::Notice, "00000", QUEUED, None);
                if conn.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    info.set_idle();
    Ok(Waited::Left)
}

/// PgBouncer's query_wait_notify text.
const QUEUED: &str = "No server connection available in postgres backend, client being queued";

/// How waiting for a server connection ended.
// Made once per session and moved out at once: boxing the connection would only allocate.
#[allow(clippy::large_enum_variant)]
pub(super) enum Waited {
    Served(ServerConn, Arc<Pool>),
    /// The client left (or sent Terminate) first.
    Left,
    /// A CancelRequest for the client's request came first.
    Cancelled,
}

/// A server connection for the client's session, counted as an assignment (stats, metrics,
/// SHOW CLIENTS link, audit of limit rejections).
pub(super) async fn checkout(
    session: &Session,
    info: &SessionInfo,
    shared: &Shared,
) -> Result<(ServerConn, Arc<Pool>), Error> {
    let started = tokio::time::Instant::now();
    // A wait is counted (SHOW STATS wait_time, the wait histogram) only when the client had
    // to queue: the checkout did not finish at its first poll. PgBouncer 1.18 counts the time
    // a client spent in cl_waiting; one given an idle connection at once never waits there
    // (checked live: 200 queries of one client through an idle pool add 0 to wait_time,
    // pgporter added the few µs each checkout took).
    let acquire = acquire(session, info, shared, Wanted::Request);
    tokio::pin!(acquire);
    let mut queued = false;
    let mut result = std::future::poll_fn(|cx| {
        let poll = std::future::Future::poll(acquire.as_mut(), cx);
        queued |= poll.is_pending();
        poll
    })
    .await;
    let db = &session.pool.key.db;
    match &mut result {
        Ok((server, _)) => {
            let waited = if queued {
                started.elapsed()
            } else {
                std::time::Duration::ZERO
            };
            session.stats.assigned(waited);
            shared
                .metrics
                .wait_histogram(db)
                .record(waited.as_secs_f64());
            info.set_active(link(server, shared));
        }
        Err(e) => {
            info.set_idle();
            if let Error::QueryWaitTimeout(_) | Error::PausedWaitTimeout = e {
                session
                    .who
                    .audit
                    .send(AuditEvent::LimitRejection {
                        user: Some(info.user.to_string()),
                        client_addr: crate::identity::addr_text(info.ip),
                        database: Some(info.database.to_string()),
                        reason: e.to_string(),
                    })
                    .await;
            }
        }
    }
    result
}

/// What SHOW CLIENTS / SERVERS and cancel forwarding know of the session's server connection
/// (made once per connection: in transaction mode a checkout comes with every transaction).
fn link(server: &mut ServerConn, shared: &Shared) -> Arc<ServerLink> {
    if let Some(link) = &server.link {
        return Arc::clone(link);
    }
    let (addr, port) = match &server.addr {
        crate::server::ServerAddr::Tcp { host, port } => (host.clone(), *port),
        crate::server::ServerAddr::Unix { dir, port } => (dir.clone(), *port),
    };
    let age = server.created_at.elapsed();
    let link = Arc::new(ServerLink {
        id: u64::try_from(server.pid()).unwrap_or(0),
        addr,
        port,
        pid: server.pid(),
        secret: server.key.secret,
        connect_time: std::time::SystemTime::now() - age,
        created_us: crate::stats::micros(
            server
                .created_at
                .saturating_duration_since(shared.stats.epoch),
        ),
        tls: server.tls,
        local: server.local,
        prepared: Default::default(),
    });
    server.link = Some(Arc::clone(&link));
    link
}

/// Get a server connection: wait while the database is paused (PAUSE, KILL), then check one
/// out of the pool; the whole wait is bounded by query_wait_timeout. The pool's own checkout
/// enforces the remaining time itself (it is never cancelled mid-wait by a timer here).
/// Not yet counted as assigned: the welcome takes one this way to learn the server's
/// parameters. Returns the pool it came from: the session's, or the one that replaced it
/// when a reload changed the database entry (the session moves to it).
pub(super) async fn acquire(
    session: &Session,
    info: &SessionInfo,
    shared: &Shared,
    wanted: Wanted,
) -> Result<(ServerConn, Arc<Pool>), Error> {
    if shared.lifecycle.mode() == Some(crate::shutdown::ShutdownMode::WaitForServers) {
        // No server connection is handed out any more: the process exits once the ones in
        // use are released (PgBouncer disconnects such clients too).
        return Err(Error::Shutdown);
    }
    let config = shared.config.load();
    let (limit, by_query) = wait_limit(&config, info);
    // As PgBouncer, the wait is measured against the current limit: a reload moves it.
    let wait = crate::pool::Deadline::new(tokio::time::Instant::now(), limit);
    let by_query_timeout = AtomicBool::new(by_query);
    let follow = async {
        loop {
            let stored = shared.config.stored();
            tokio::pin!(stored);
            stored.as_mut().enable();
            let (limit, by_query) = wait_limit(&shared.config.load(), info);
            by_query_timeout.store(by_query, Relaxed);
            wait.set(limit);
            stored.await;
        }
    };
    info.set_waiting(match wanted {
        Wanted::Request => Some(shared.stats.now_us()),
        Wanted::Welcome => None,
    });
    let db = &session.pool.key.db;
    let get = async {
        let mut pool = Arc::clone(&session.pool);
        loop {
            if pool.is_retired() {
                pool = super::route::successor(&pool, session.identity(), shared)?;
                if pool.is_retired() {
                    // Replaced again at this very moment: let the client reconnect.
                    return Err(Error::DatabaseChanged);
                }
            }
            if shared.gates.is_paused(db) {
                tokio::select! {
                    () = shared.gates.wait_unpaused(db) => {}
                    () = wait.passed() => {
                        return Err(if by_query_timeout.load(Relaxed) {
                            Error::QueryTimeout
                        } else {
                            Error::PausedWaitTimeout
                        });
                    }
                }
            }
            let (identity, user) = (&config.settings.identity, session.identity());
            let tag = session.tag_under(&config, info);
            // A new server connection carries the identity tag and none of this client's own
            // parameters: startup values are what RESET ALL / DISCARD ALL return to, for this
            // client and every later one (a client's own RESET ALL brought back an earlier
            // client's application_name). They are SET on it (`ClientParams::apply`).
            let params = || crate::identity::tag_params(identity, user, info.ip);
            let server = match pool.checkout(user, tag.as_ref(), &params, &wait).await {
                Ok(server) => server,
                // A reload replaced the pool while this client was queued: queue at the new one.
                Err(PoolError::Retired) => continue,
                // PAUSE or KILL came while a new connection logged in for this client: it was
                // closed, and the client waits for RESUME, as in PgBouncer.
                Err(PoolError::Paused) => continue,
                Err(e) => {
                    let by_query = by_query_timeout.load(Relaxed);
                    return Err(pool_error(e, session, &pool, shared, by_query));
                }
            };
            if shared.gates.is_paused(db) {
                // PAUSE came while this client was queued: as PgBouncer, nothing is handed
                // out while paused; the connection goes back unused (and is closed, as the
                // pool keeps nothing idle while paused) and the client waits for RESUME.
                pool.return_unused(server);
                continue;
            }
            return Ok((server, pool));
        }
    };
    // The checkout first: one served at once (an idle connection) never registers with the
    // kill notification or the reloads (a lock each, at every transaction in transaction
    // mode); a kill meanwhile is seen by the relay, which polls it first.
    tokio::select! {
        biased;
        r = get => r,
        () = info.killed() => Err(ended(shared, info)),
        () = follow => unreachable!("follows reloads until the wait ends"),
    }
}

/// What a server connection is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// A request of a logged-in client.
    Request,
    /// The welcome of a client logging in to a pool that has had no server connection yet
    /// (its parameters). PgBouncer lists such a client as waiting (cl_waiting) without
    /// timing it: SHOW POOLS maxwait and SHOW CLIENTS wait stay 0 (seen with PgBouncer 1.18).
    Welcome,
}

/// How long a client may wait for a server connection under `config`, and whether that limit
/// is query_timeout (as PgBouncer, it bounds the wait too when it is the shorter one).
fn wait_limit(
    config: &crate::config::Config,
    info: &SessionInfo,
) -> (Option<std::time::Duration>, bool) {
    let nonzero = crate::config::Config::nonzero;
    match (
        nonzero(config.query_wait_timeout(&info.database, &info.user)),
        nonzero(config.session_timeouts(&info.pool_user).query),
    ) {
        (Some(wait), Some(query)) if query < wait => (Some(query), true),
        (None, Some(query)) => (Some(query), true),
        (wait, _) => (wait, false),
    }
}

fn pool_error(
    e: PoolError,
    session: &Session,
    pool: &Pool,
    shared: &Shared,
    by_query_timeout: bool,
) -> Error {
    match e {
        PoolError::WaitTimeout(blocker) => {
            let n = shared
                .pools
                .limits()
                .rejections
                .record(session.identity(), "query_wait_timeout");
            tracing::warn!(user = %session.identity(), pool = ?pool.key, limit = %blocker, rejections = n, "query_wait_timeout");
            if by_query_timeout {
                Error::QueryTimeout
            } else {
                Error::QueryWaitTimeout(blocker)
            }
        }
        PoolError::Connect(e) => Error::ServerLogin(e, None),
        PoolError::Refused(e, owed) => Error::ServerLogin(e, Some(owed)),
        PoolError::NoHost(e) => Error::NoServer(e),
        PoolError::Retired => Error::DatabaseChanged,
        // Not returned by `acquire`, which waits for RESUME instead.
        PoolError::Paused => Error::PausedWaitTimeout,
    }
}

//! Periodic pool upkeep: close idle connections past server_idle_timeout / server_lifetime,
//! keep min_pool_size connections warm (within the cross-pool limits), and re-run each pool's
//! dispatch so limits raised by a reload reach clients already waiting.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{expired, Pool, PoolError, Pools};

const PERIOD: Duration = Duration::from_secs(1);

/// After a min_pool_size connection fails, how long the janitor leaves the pool unfilled:
/// PgBouncer's default `server_login_retry`, which paces its own min_pool_size logins so
/// (1.18, checked live: one attempt on a dead port in 15 s). The janitor tried again at every
/// tick, each missing connection a connect, a WARN and a close line a second, for as long as
/// the server was down. A client's own login is not held back by it.
pub(super) const FILL_RETRY: Duration = Duration::from_secs(15);

/// Run until `shutdown` fires.
pub async fn run_janitor(pools: Arc<Pools>, shutdown: CancellationToken) {
    let mut ticks = crate::shutdown::Ticks::every(PERIOD);
    while ticks.next(&shutdown).await {
        for pool in pools.all() {
            pool.evict_expired();
            pool.fill_min();
            pool.poke();
        }
    }
}

/// client_idle_timeout: five times a second, close logged-in clients that have been silent
/// that long without a server connection (PgBouncer leaves clients holding one alone, and so
/// does this). Never early, at most 200 ms late.
pub async fn close_idle_clients(shared: Arc<crate::app::Shared>) {
    let mut ticks = crate::shutdown::Ticks::every(Duration::from_millis(200));
    while ticks.next(&shared.shutdown).await {
        let config = shared.config.load();
        if config.settings.client_idle_timeout.is_zero()
            && !config
                .users
                .values()
                .any(|u| u.client_idle_timeout.is_some())
        {
            continue;
        }
        let now = crate::sessions::unix_ms(std::time::SystemTime::now());
        let mut closed = 0;
        for s in shared.sessions.all() {
            let limit = config.client_idle_timeout(&s.user);
            let since = s.request_ms.load(std::sync::atomic::Ordering::Relaxed);
            let quiet = Duration::from_millis(now.saturating_sub(since));
            if !s.admin
                && !limit.is_zero()
                && s.state() == crate::sessions::ClientState::Idle
                && s.server().is_none()
                && quiet >= limit
            {
                s.kill_for(crate::sessions::KillReason::ClientIdleTimeout);
                closed += 1;
            }
        }
        if closed > 0 {
            // Parked clients go back to a task to hear why.
            shared.lobby.nudge();
            tracing::info!(closed, "client_idle_timeout");
        }
    }
}

/// autodb_idle_timeout: free the pools of databases reached through the `*` entry once they
/// have been unused that long (no session holds them, no server connection is in use, nobody
/// waits): one pool per database name any logged-in user makes up would otherwise stay.
/// pool_idle_timeout (PgBouncer 1.25): the same for the pools of configured databases, once
/// they also hold no server connection at all. A name a console command registered
/// (`GateState::registered`) is forgotten after autodb_idle_timeout without a pool in use,
/// as PgBouncer frees such an auto-database, unless it is paused or disabled.
pub async fn free_idle_pools(shared: Arc<crate::app::Shared>) {
    let mut ticks = crate::shutdown::Ticks::every(PERIOD);
    let mut unused_since: HashMap<super::PoolKey, Instant> = HashMap::new();
    let mut names_unused_since: HashMap<String, Instant> = HashMap::new();
    while ticks.next(&shared.shutdown).await {
        let config = shared.config.load();
        let now = Instant::now();
        let mut seen = HashSet::new();
        // Databases with a pool in use (their registered names are not idle).
        let mut busy = HashSet::new();
        for pool in shared.pools.all() {
            let auto = !config.databases.contains_key(&*pool.key.db);
            let counts = pool.counts();
            // Held only by the registry and this loop: no session has it.
            let free = Arc::strong_count(&pool) <= 2 && counts.waiting == 0;
            if !(free && counts.total == counts.idle) {
                busy.insert(Arc::clone(&pool.key.db));
            }
            let (limit, why) = if auto {
                (config.settings.autodb_idle_timeout, "autodb_idle_timeout")
            } else {
                (config.settings.pool_idle_timeout, "pool_idle_timeout")
            };
            let unused = free
                && if auto {
                    counts.total == counts.idle
                } else {
                    counts.total == 0
                };
            if limit.is_zero() || !unused {
                continue;
            }
            seen.insert(pool.key.clone());
            let since = *unused_since.entry(pool.key.clone()).or_insert(now);
            if now.duration_since(since) >= limit {
                tracing::info!(db = %pool.key.db, user = %pool.key.user, "{why}: freeing the pool");
                shared.pools.remove(&pool.key);
                // A login that took it just now keeps it, as a retired pool.
                pool.retire();
                shared.stats.forget_pool(&pool.key.db, &pool.key.user);
                pool.close_idle("database removed").await;
                seen.remove(&pool.key);
            }
        }
        unused_since.retain(|k, _| seen.contains(k));
        forget_idle_names(&shared, &busy, &mut names_unused_since, now);
    }
}

/// Forget the registered names (see [`free_idle_pools`]) idle for autodb_idle_timeout: not
/// paused, not disabled, no pool of theirs in use (`busy`). `unused_since`: when each was
/// first seen idle.
fn forget_idle_names(
    shared: &crate::app::Shared,
    busy: &HashSet<Arc<str>>,
    unused_since: &mut HashMap<String, Instant>,
    now: Instant,
) {
    let limit = shared.config.load().settings.autodb_idle_timeout;
    let gates = shared.gates.state();
    let idle = |g: &crate::gates::GateState, name: &str| {
        !g.paused.contains(name) && !g.disabled.contains(name) && !busy.contains(name)
    };
    unused_since.retain(|name, _| gates.registered.contains(name) && idle(&gates, name));
    if limit.is_zero() {
        return;
    }
    let mut expired = Vec::new();
    for name in gates.registered.iter().filter(|n| idle(&gates, n)) {
        let since = *unused_since.entry(name.clone()).or_insert(now);
        if now.duration_since(since) >= limit {
            expired.push(name.clone());
        }
    }
    if expired.is_empty() {
        return;
    }
    shared.gates.update(|g| {
        for name in &expired {
            // A PAUSE or DISABLE that came meanwhile keeps it.
            if idle(g, name) && g.registered.remove(name) {
                tracing::info!(db = %name, "autodb_idle_timeout: forgetting the database");
                unused_since.remove(name);
            }
        }
    });
}

impl Pool {
    /// Close idle connections past their idle timeout or lifetime, or whose host went down or
    /// changed role (also run at once on a host change). Each goodbye (Terminate, up to 1 s
    /// on a server that does not read) runs on its own task: the janitor's tick, which checks
    /// every pool in turn, is not held up by one slow server.
    pub fn evict_expired(&self) {
        let settings = self.settings();
        let now = Instant::now();
        let stale: Vec<_> = {
            let mut inner = self.lock();
            // Closed by the server (restart, terminate), on a host no longer taken, or over
            // its time: closed now, with the reason (PgBouncer's words where it has them).
            let (keep, stale): (Vec<_>, Vec<_>) = inner
                .idle
                .drain(..)
                .map(|mut c| {
                    let why = if let Some(spoke) = c.spoke_while_idle() {
                        Some(super::check::idle_reason(spoke))
                    } else if !self.hosts.accepts(c.tag.as_ref()) {
                        Some("host down or changed role")
                    } else {
                        expired(&c, &settings, now)
                    };
                    (why, c)
                })
                .partition(|(why, _)| why.is_none());
            let keep = keep.into_iter().map(|(_, c)| c);
            inner.idle.extend(keep);
            self.drop_slot(&mut inner, u32::try_from(stale.len()).unwrap_or(0));
            stale
        };
        if stale.is_empty() {
            return;
        }
        self.limits.wake(&self.key);
        for (reason, conn) in stale {
            self.log_close(&conn, reason.unwrap_or_default());
            self.close_later(conn);
        }
    }

    /// Open connections in the background until min_pool_size is met, as far as the pool size
    /// and max_db_connections / max_user_connections allow. Not while the database is paused
    /// (PAUSE, KILL): after `PAUSE db` PgBouncer 1.18 keeps opening them, and closes each at
    /// once (`pause mode`); none is opened here. One whose login began before the pool's
    /// connections were dropped (KILL, RECONNECT, PAUSE, reload) is closed when it gets in,
    /// as PgBouncer closes its logins at once then (`Pool::adopt`).
    fn fill_min(self: &Arc<Self>) {
        // With identity tagging a connection serves one identity, and the janitor knows no
        // identity to open one for: untagged connections would only take slots (and be
        // replaced one by one). min_pool_size is not applied then (the config load warns).
        if self.limits.tagging() || self.held() {
            return;
        }
        let failed = *self.fill_failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_some_and(|at| at.elapsed() < FILL_RETRY) {
            return;
        }
        let settings = self.settings();
        let lim = self.limits.resolve(&self.key, &settings);
        let (missing, begun) = {
            let mut inner = self.lock();
            let want = settings.min_size.min(settings.size);
            let mut missing = 0;
            while inner.total < want && self.limits.room(&self.key, &lim).open.is_ok() {
                inner.total += 1;
                self.limits.add_server(&self.key);
                missing += 1;
            }
            (missing, inner.cuts)
        };
        for _ in 0..missing {
            let pool = Arc::clone(self);
            let settings = settings.clone();
            self.track(async move {
                let outcome = pool.connect_for(None, None, &[], &settings).await;
                let failed = match &outcome {
                    // Given up by KILL of the database.
                    Ok(_) | Err(PoolError::Paused) => None,
                    Err(_) => Some(Instant::now()),
                };
                *pool.fill_failed.lock().unwrap_or_else(|p| p.into_inner()) = failed;
                match outcome {
                    Ok(conn) => pool.adopt(conn, begun),
                    Err(PoolError::Paused) => {}
                    Err(e) => {
                        tracing::warn!(pool = ?pool.key, error = %e, retry_in = ?FILL_RETRY, "min_pool_size connection failed")
                    }
                }
            });
        }
    }
}

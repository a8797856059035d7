//! Server connection pools, keyed by (database, backend user).
//!
//! Bookkeeping (idle list, counts, waiters, per-identity holdings) sits behind one short sync
//! `Mutex` per pool; no `.await` happens under it. Connecting, resetting and closing happen
//! outside the lock. Who gets a freed connection is decided in `dispatch.rs` with the limits
//! of `limits.rs` and the fair wait queue of `waiters.rs`.

mod check;
mod checkout;
mod deadline;
mod dispatch;
mod janitor;
mod limits;
mod rejections;
mod release;
mod snapshot;
#[cfg(test)]
mod tests;
mod waiters;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::time::{Duration, Instant};

use crate::config::ConfigHandle;
use crate::routing::{Endpoint, HostSet, NoHost, RouteError};
use crate::server::{BackendPassword, ServerConn, ServerError, ServerTarget};

pub use deadline::Deadline;
pub use janitor::{close_idle_clients, free_idle_pools, run_janitor};
pub use limits::{Blocker, ClientLimit, ClientSlot, Limits};
pub use rejections::Rejections;
pub use release::OwedClose;
pub use waiters::{Identity, Order};

pub use snapshot::IdleServer;
use waiters::{Holders, Waiters};

/// A pool's identity: the database name clients use, the user pgporter logs in as, and the
/// endpoint (the read-only listener has its own, standby-bound pools).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Shared: every session of the pool keeps these names instead of copies of its own.
    pub db: Arc<str>,
    pub user: Arc<str>,
    pub endpoint: Endpoint,
}

/// Sizes and timeouts of one pool (from the config snapshot that created or last resized it).
/// Limits shared with other pools are read from the live config instead (see `limits.rs`).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// When a client gives its server connection back. A reload that changes it replaces the
    /// pool (connections used in transaction mode were never reset).
    pub mode: crate::config::PoolMode,
    pub size: u32,
    pub min_size: u32,
    /// Connect + login deadline and keepalive of new server connections.
    pub dial: crate::net::Dial,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    /// Empty in transaction mode unless server_reset_query_always.
    pub reset_query: Arc<str>,
    pub reset_timeout: Duration,
    /// server_check_query (None when empty) and server_check_delay.
    pub check_query: Option<Arc<str>>,
    pub check_delay: Duration,
    /// The database entry's connect_query: run once on each new connection.
    pub connect_query: Option<String>,
    /// server_round_robin: reuse the least recently used idle connection, not the most.
    pub round_robin: bool,
}

/// The startup parameters a server connection opened for a client gets, built only when one
/// is opened (most checkouts reuse a connection).
pub type ConnectParams<'a> = &'a (dyn Fn() -> Vec<(String, String)> + Sync);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("query_wait_timeout (held back by {0})")]
    WaitTimeout(Blocker),
    #[error(transparent)]
    Connect(#[from] ServerError),
    /// The server refused the login, whose closing line is owed until the client's lines
    /// are written.
    #[error("{0}")]
    Refused(ServerError, Box<OwedClose>),
    #[error(transparent)]
    NoHost(#[from] NoHost),
    /// A reload replaced this pool (its database entry changed or went): ask for the new one.
    #[error("database configuration changed")]
    Retired,
    /// The database was paused (PAUSE, KILL) while a new connection logged in for the
    /// client: the connection was closed; wait for RESUME and check out again.
    #[error("database paused during the server login")]
    Paused,
}

impl From<RouteError> for PoolError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Server(e) => PoolError::Connect(e),
            RouteError::NoHost(e) => PoolError::NoHost(e),
        }
    }
}

/// Why a connection coming back without a client is closed (see [`Pool::unwanted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unwanted {
    Retired,
    Paused,
    /// Paused by KILL.
    Killed,
    Dropped,
}

impl Unwanted {
    fn why(self) -> &'static str {
        match self {
            Unwanted::Retired => "its pool was replaced by a reload",
            Unwanted::Paused => "its database is paused",
            Unwanted::Killed => "its database was killed (KILL) and is paused",
            Unwanted::Dropped => {
                "its pool's connections were dropped since its login began or it was lent"
            }
        }
    }

    /// PgBouncer's words for the close, in its log_disconnections line.
    fn reason(self) -> &'static str {
        match self {
            Unwanted::Retired | Unwanted::Dropped => "connect string changed",
            Unwanted::Paused => "pause mode",
            // As PgBouncer 1.18 closes a killed database's logins (live).
            Unwanted::Killed => "database removed",
        }
    }
}

/// What a waiting client is handed.
// A connection moves through here once per checkout; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Grant {
    Conn(ServerConn),
    /// A slot was reserved for the client: connect a new server connection yourself.
    Permit,
}

#[derive(Debug, Default)]
struct Inner {
    idle: VecDeque<ServerConn>,
    /// Idle + in use + being connected.
    total: u32,
    /// In use + being connected, per client identity.
    holders: Holders,
    waiters: Waiters<Grant>,
    /// Server-reported parameters for the client welcome, from the first connection.
    welcome: Option<Arc<Vec<(String, String)>>>,
    /// This pool's limits under the last configuration snapshot a dispatch saw.
    resolved: Option<limits::Resolved>,
    /// Connections being opened and logged in (part of `total`; SHOW SERVERS `new`).
    logins: Vec<Arc<crate::server::Login>>,
    /// Bumped, with the idle list drained, when the pool's server connections are dropped
    /// (KILL, RECONNECT, PAUSE, reload: see [`Pool::close_idle`]). A connection whose login
    /// began at another count is not kept idle (`Pool::adopt`); read and bumped under the
    /// lock, so that no check-in can come between a drop and its check.
    cuts: u64,
    /// Why the pool's connections were last dropped (`cuts`): the close line of a connection
    /// whose reset that drop cut short.
    cut_reason: &'static str,
    /// The `lent_at` of each connection whose reset (`server_reset_query`) is running: one
    /// lent before the latest drop is closed at once (`Pool::cut`), and WAIT_CLOSE waits
    /// for it to go (see [`Pool::resets_cut_short`]).
    resets: Vec<Resetting>,
}

/// A connection whose reset is running (`Inner::resets`), as SHOW SERVERS lists it (`tested`).
#[derive(Debug)]
struct Resetting {
    lent_at: u64,
    server: snapshot::IdleServer,
}

#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    /// The user pgporter logs in to PostgreSQL as (shared like the key's names).
    pub backend_user: Arc<str>,
    pub target: ServerTarget,
    /// The backend hosts and the rules for choosing one (routing).
    pub hosts: HostSet,
    settings: Mutex<Arc<PoolSettings>>,
    limits: Arc<Limits>,
    inner: Mutex<Inner>,
    /// A credential learned from a client login when the config holds none for this user
    /// (SCRAM passthrough keys, or an md5 hash from auth_query).
    learned: Mutex<Option<BackendPassword>>,
    /// Replaced by a reload (its database entry changed or went away): the sessions still
    /// holding it finish, and each connection they give back is closed.
    retired: std::sync::atomic::AtomicBool,
    /// Connections lent to server_check_query (SHOW POOLS sv_tested).
    testing: std::sync::atomic::AtomicU32,
    /// Where its connections' goodbyes run in the background (the tracker all pools share,
    /// see [`Pools::close_all`]).
    closing: tokio_util::task::TaskTracker,
    /// Told when the pool's connections are dropped (`Inner::cuts`) or the pool retired: a
    /// reset then running stops and closes its connection, as PgBouncer closes a server it
    /// is resetting at RECONNECT, KILL or a reload (live: `closing because: database
    /// configuration changed (age=0s)` while its `server_reset_query` slept).
    cut: tokio::sync::Notify,
    /// When a min_pool_size connection last failed: the janitor leaves the pool unfilled for
    /// [`janitor::FILL_RETRY`] after it.
    fill_failed: Mutex<Option<tokio::time::Instant>>,
}

impl Drop for Pool {
    /// The connections a pool still counts (idle ones, closed with it) leave the database and
    /// user limits with it. Only counters are touched here: no lock of another pool or map.
    fn drop(&mut self) {
        let total = self
            .inner
            .get_mut()
            .map_or_else(|p| p.into_inner().total, |i| i.total);
        if total > 0 {
            self.limits.remove_servers(&self.key, total);
        }
    }
}

/// Counts for SHOW POOLS-style views and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub idle: u32,
    pub total: u32,
    /// Being tested with server_check_query (part of `total`, not of `idle`).
    pub tested: u32,
    pub waiting: u32,
}

impl Pool {
    /// A pool counting its connections against `limits` (shared by all pools).
    pub fn new(
        key: PoolKey,
        target: ServerTarget,
        settings: PoolSettings,
        limits: Arc<Limits>,
    ) -> Self {
        let backend_user = if *target.user == *key.user {
            Arc::clone(&key.user)
        } else {
            Arc::from(target.user.as_str())
        };
        Pool {
            key,
            backend_user,
            hosts: HostSet::single(target.addr.clone()),
            target,
            settings: Mutex::new(Arc::new(settings)),
            limits,
            inner: Mutex::new(Inner::default()),
            learned: Mutex::new(None),
            retired: std::sync::atomic::AtomicBool::new(false),
            testing: std::sync::atomic::AtomicU32::new(0),
            closing: tokio_util::task::TaskTracker::new(),
            cut: tokio::sync::Notify::new(),
            fill_failed: Mutex::new(None),
        }
    }

    /// Close `conn` in the background (Terminate, see [`release::terminate`]), tracked: a
    /// shutdown waits for it (bounded) rather than exiting mid-goodbye. Needs a runtime (none
    /// when a session is dropped outside one: the socket just closes).
    pub(crate) fn close_later(&self, conn: ServerConn) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.closing.spawn_on(release::terminate(conn), &rt);
        }
    }

    /// Run `task` (a server login, a cancel) in the background, tracked as
    /// [`Pool::close_later`]: the shutdown waits for it (bounded). A login that gets in after
    /// [`Pools::close_all`] is closed with Terminate, as that drop of the pool's connections
    /// makes it unwanted (`Unwanted::Dropped`).
    pub(crate) fn track<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.closing.spawn(task);
    }

    /// [`Pool::close_idle`] in the background, tracked as [`Pool::close_later`].
    pub fn close_idle_later(self: &Arc<Self>, reason: &'static str) {
        let pool = Arc::clone(self);
        self.closing
            .spawn(async move { pool.close_idle(reason).await });
    }

    /// A reload replaced this pool: connections given back from now on are closed.
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Queued clients go to the pool that replaces this one (`PoolError::Retired`).
        self.lock().waiters.clear();
        self.cut.notify_waiters();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times the pool's connections were dropped (see `Inner::cuts`): a login that
    /// reads another count when it gets in began before the latest drop.
    fn cuts(&self) -> u64 {
        self.lock().cuts
    }

    /// Resets running on connections lent before the latest drop of the pool's connections
    /// (RECONNECT, KILL, PAUSE): WAIT_CLOSE waits for them, as PgBouncer's waits for its
    /// servers in `tested`.
    pub fn resets_cut_short(&self) -> bool {
        let inner = self.lock();
        inner.resets.iter().any(|r| r.lent_at != inner.cuts)
    }

    /// Is the pool's database paused (PAUSE, KILL)? As in PgBouncer, which closes a paused
    /// pool's idle connections and logins at every turn of its loop (`pause mode`), nothing
    /// is kept idle then: a connection that gets in or comes back unused is closed. Not asked
    /// on the per-transaction check-in path: PAUSE drains the idle list once the connections
    /// in use are back, and nothing is handed out while paused.
    fn held(&self) -> bool {
        self.limits.paused(&self.key.db)
    }

    /// [`Pool::held`], for checkouts outside a client's session (auth_query), which do not
    /// look at the gates themselves.
    pub fn is_paused(&self) -> bool {
        self.held()
    }

    /// Resolve once the pool's database is not paused: a checkout that got
    /// [`PoolError::Paused`] may be tried again then.
    pub async fn resumed(&self) {
        self.limits.resumed(&self.key.db).await;
    }

    /// Why a connection coming back without a client (a login its client gave up on, one
    /// opened for min_pool_size, one given back unused) must be closed rather than kept, if
    /// it must. Asked under the lock (`inner`), where it is checked in. `begun`: the count of
    /// drops when its login began, if it is new, or when it was lent (a check-in whose count
    /// differs).
    fn unwanted(&self, inner: &Inner, begun: Option<u64>) -> Option<Unwanted> {
        if self.is_retired() {
            Some(Unwanted::Retired)
        } else if self.held() {
            // Which command paused it, asked only then (this path is not the hot one).
            Some(if self.limits.killed(&self.key.db) {
                Unwanted::Killed
            } else {
                Unwanted::Paused
            })
        } else if begun.is_some_and(|b| b != inner.cuts) {
            Some(Unwanted::Dropped)
        } else {
            None
        }
    }

    /// Remember a credential from a successful client login, if the config gave none. The
    /// latest one wins (a changed password replaces stale keys).
    /// A routed pool's health monitors get the credential too: they log in as the pool's
    /// user, and without it a passthrough-only user's hosts could never be checked.
    pub fn learn(&self, password: BackendPassword) {
        self.learn_if(password, |learned, new| learned != Some(new));
    }

    /// What `old`, the pool this one replaces (a reload changed the entry), learned: its
    /// transaction-mode sessions move here between transactions and may need a new server
    /// connection before any client of the user logs in again. Only while this pool has
    /// learned nothing itself: a client's login here is newer (the password may have changed
    /// with the entry), and every session moving over would otherwise bring the old keys back.
    pub fn learn_from(&self, old: &Pool) {
        let learned = old
            .learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(password) = learned.filter(|_| old.target.user == self.target.user) {
            self.learn_if(password, |learned, _| learned.is_none());
        }
    }

    /// Keep `password` if `wanted(what is kept, password)` (decided under the lock) and offer
    /// it to the health monitors.
    fn learn_if(
        &self,
        password: BackendPassword,
        wanted: impl FnOnce(Option<&BackendPassword>, &BackendPassword) -> bool,
    ) {
        if self.target.password != BackendPassword::None {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        if !wanted(learned.as_ref(), &password) {
            return;
        }
        *learned = Some(password.clone());
        drop(learned);
        self.hosts.offer_login(&ServerTarget {
            password,
            ..self.target.clone()
        });
    }

    /// The target with any learned credential filled in.
    pub(super) fn effective_target(&self) -> std::borrow::Cow<'_, ServerTarget> {
        let learned = self
            .learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match learned {
            Some(password) => std::borrow::Cow::Owned(ServerTarget {
                password,
                ..self.target.clone()
            }),
            None => std::borrow::Cow::Borrowed(&self.target),
        }
    }

    /// Use these backend hosts instead of the target's single address.
    pub fn with_hosts(mut self, hosts: HostSet) -> Self {
        self.hosts = hosts;
        self
    }

    /// May this idle connection be handed out? Not if its host went down or changed role, or
    /// if it spoke while idle.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// When clients give connections back.
    pub fn mode(&self) -> crate::config::PoolMode {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).mode
    }

    /// Apply new sizes/timeouts (config reload): a larger size serves waiters at once, a
    /// smaller one takes effect as connections return.
    pub fn update_settings(&self, settings: PoolSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
        self.poke();
    }

    pub fn counts(&self) -> PoolCounts {
        let inner = self.lock();
        PoolCounts {
            idle: u32::try_from(inner.idle.len()).unwrap_or(u32::MAX),
            total: inner.total,
            tested: self.testing.load(std::sync::atomic::Ordering::Relaxed),
            waiting: u32::try_from(inner.waiters.len()).unwrap_or(u32::MAX),
        }
    }

    /// Server connections lent out: in use by a client, being reset after one (server_reset_query)
    /// or tested (server_check_query); not idle, not logging in. PAUSE waits for these, as
    /// PgBouncer's waits for its active and tested servers.
    pub fn lent(&self) -> u32 {
        let inner = self.lock();
        let idle = u32::try_from(inner.idle.len()).unwrap_or(u32::MAX);
        let logins = u32::try_from(inner.logins.len()).unwrap_or(u32::MAX);
        inner.total.saturating_sub(idle).saturating_sub(logins)
    }

    /// Server connections of this pool held by clients of `identity` (in use or connecting).
    pub fn held_by(&self, identity: &str) -> u32 {
        self.lock().holders.get(identity)
    }

    /// The application_name a server connection of this pool has before any client's: the
    /// database entry's, else empty.
    pub fn app_default(&self) -> &str {
        (self.target.params.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
            .map_or("", |(_, v)| v.as_str())
    }

    /// The server parameters to welcome a client with, once a connection has been made.
    pub fn welcome(&self) -> Option<Arc<Vec<(String, String)>>> {
        self.lock().welcome.clone()
    }
}

/// The time limit an idle connection is past, if any, in PgBouncer's words for its close.
fn expired(conn: &ServerConn, settings: &PoolSettings, now: Instant) -> Option<&'static str> {
    if settings
        .lifetime
        .is_some_and(|l| now.duration_since(conn.created_at) >= l)
    {
        Some("server lifetime over")
    } else if settings
        .idle_timeout
        .is_some_and(|l| now.duration_since(conn.last_used) >= l)
    {
        Some("server idle timeout")
    } else {
        None
    }
}

/// All pools, created on first use, and the limits they share.
#[derive(Debug)]
pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
    limits: Arc<Limits>,
    /// Every pool's background closes ([`Pool::close_later`]).
    closing: tokio_util::task::TaskTracker,
}

impl Pools {
    /// Pools whose limits follow the live configuration in `config`, and whose connections
    /// are not kept idle while `gates` holds their database paused.
    pub fn new(config: Arc<ConfigHandle>, gates: Arc<crate::gates::Gates>) -> Self {
        Pools {
            map: DashMap::new(),
            limits: Arc::new(Limits::new(config, gates)),
            closing: tokio_util::task::TaskTracker::new(),
        }
    }

    /// The limits (and their counters) every pool shares.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// The pool for `key`, created with `make` (given the shared limits) if missing.
    pub fn get_or_create(
        &self,
        key: &PoolKey,
        make: impl FnOnce(Arc<Limits>) -> Pool,
    ) -> Arc<Pool> {
        if let Some(pool) = self.map.get(key) {
            return pool.clone();
        }
        let mut created = None;
        let pool = self
            .map
            .entry(key.clone())
            .or_insert_with(|| {
                let mut pool = make(Arc::clone(&self.limits));
                pool.closing = self.closing.clone();
                let pool = Arc::new(pool);
                created = Some(Arc::clone(&pool));
                pool
            })
            .clone();
        if let Some(pool) = created {
            self.limits.register(&pool);
        }
        pool
    }

    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.map.get(key).map(|p| p.clone())
    }

    /// A snapshot of every pool (no map guard is kept).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    /// At shutdown, once the sessions are over: close every pool's idle connections with
    /// Terminate (`reason`: their log_disconnections lines), as PgBouncer closes its servers
    /// before it exits, and wait up to `within` for those and for every close begun in the
    /// background before (a released or evicted connection's goodbye). False if some were
    /// still under way then.
    pub async fn close_all(&self, reason: &'static str, within: Duration) -> bool {
        for pool in self.all() {
            pool.close_idle_later(reason);
        }
        self.closing.close();
        tokio::time::timeout(within, self.closing.wait())
            .await
            .is_ok()
    }
}

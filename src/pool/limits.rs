//! Limits that span pools (max_db_connections, max_user_connections) and client connections
//! (max_db_client_connections, max_user_client_connections), read from the live config
//! snapshot at every decision so a reload applies them without dropping anyone.
//!
//! Lock order: a pool's own mutex may be held while taking [`Limits`]' counters, never the
//! reverse; the pool registry is only read to pick pools, then released before any pool lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::time::Duration;

use super::rejections::Rejections;
use super::waiters::Order;
use super::{Pool, PoolKey, PoolSettings};
use crate::config::{Config, ConfigHandle};

/// The limit that kept a waiting client from a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// The pool is full (pool_size / default_pool_size, plus the reserve once usable).
    PoolSize,
    MaxDbConnections,
    MaxUserConnections,
    /// The client's identity holds its max_user_pool_share of the pool.
    MaxUserPoolShare,
    /// The wait ran out testing idle connections that did not answer server_check_query (a
    /// host gone without closing its sockets).
    ServerCheck,
    /// The wait ran out while a server connection was logging in for the client (a host
    /// slower to answer than query_wait_timeout, under a longer server_connect_timeout).
    ServerLogin,
}

impl Blocker {
    /// The config key (or what held the client back), as named in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Blocker::PoolSize => "pool_size",
            Blocker::MaxDbConnections => "max_db_connections",
            Blocker::MaxUserConnections => "max_user_connections",
            Blocker::MaxUserPoolShare => "max_user_pool_share",
            Blocker::ServerCheck => "server_check_query",
            Blocker::ServerLogin => "a server login",
        }
    }
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A client-connection cap that refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    MaxUserClientConnections,
    MaxDbClientConnections,
}

impl ClientLimit {
    pub fn name(self) -> &'static str {
        match self {
            ClientLimit::MaxUserClientConnections => "max_user_client_connections",
            ClientLimit::MaxDbClientConnections => "max_db_client_connections",
        }
    }
}

/// A pool's limits as resolved under one configuration snapshot (held, so that a later
/// snapshot cannot reuse its address) for one pool size.
#[derive(Debug)]
pub(super) struct Resolved {
    config: Arc<Config>,
    size: u32,
    limits: PoolLimits,
}

/// One pool's limits as the current snapshot resolves them.
#[derive(Debug, Clone)]
pub(super) struct PoolLimits {
    pub size: u32,
    pub reserve_size: u32,
    /// None: the reserve pool is never used.
    pub reserve_timeout: Option<Duration>,
    pub share_cap: Option<u32>,
    pub order: Order,
    pub max_db: u32,
    pub max_user: u32,
}

impl PoolLimits {
    /// The pool size a waiter may fill: the reserve counts once it has waited long enough.
    pub(super) fn cap(&self, reserve: bool) -> u32 {
        if reserve {
            self.size.saturating_add(self.reserve_size)
        } else {
            self.size
        }
    }
}

/// Whether the cross-pool limits leave room for one more server connection of a pool.
#[derive(Debug, Clone, Copy)]
pub(super) struct Room {
    /// Ok, or the limit that is full.
    pub open: Result<(), Blocker>,
    /// Usage is above a limit (lowered by a reload): connections going idle are closed.
    pub over: bool,
}

/// Connections per name.
type Counter = HashMap<String, u32, crate::FastHash>;

#[derive(Debug, Default)]
struct Counts {
    servers_by_db: Counter,
    servers_by_user: Counter,
    clients_by_db: Counter,
    clients_by_user: Counter,
}

/// Shared by every pool (through [`super::Pools`]).
#[derive(Debug)]
pub struct Limits {
    config: Arc<ConfigHandle>,
    /// PAUSE / KILL state: a paused database's pools keep no connection idle (see
    /// [`Pool::held`]).
    gates: Arc<crate::gates::Gates>,
    counts: Mutex<Counts>,
    pools: Mutex<Vec<Weak<Pool>>>,
    /// Per-user rejections, for logs now and admin/metrics later.
    pub rejections: Rejections,
}

impl Limits {
    pub fn new(config: Arc<ConfigHandle>, gates: Arc<crate::gates::Gates>) -> Self {
        Limits {
            config,
            gates,
            counts: Mutex::new(Counts::default()),
            pools: Mutex::new(Vec::new()),
            rejections: Rejections::default(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load()
    }

    /// Resolves at the next configuration stored (reload, admin SET) after it is enabled.
    pub(super) fn reloaded(&self) -> tokio::sync::futures::Notified<'_> {
        self.config.stored()
    }

    pub(super) fn register(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// `key`'s limits from the live snapshot (pool size and timeouts from `settings`).
    pub(super) fn resolve(&self, key: &PoolKey, settings: &PoolSettings) -> PoolLimits {
        resolve_in(&self.config.load(), key, settings)
    }

    /// [`Limits::resolve`], reusing `cache` while the configuration snapshot and the pool size
    /// are the ones it was made for (a dispatch runs at every checkout and checkin).
    pub(super) fn resolve_cached(
        &self,
        key: &PoolKey,
        settings: &PoolSettings,
        cache: &mut Option<Resolved>,
    ) -> PoolLimits {
        let config = self.config.load();
        if let Some(c) = cache {
            if Arc::ptr_eq(&c.config, &config) && c.size == settings.size {
                return c.limits.clone();
            }
        }
        let limits = resolve_in(&config, key, settings);
        *cache = Some(Resolved {
            config,
            size: settings.size,
            limits: limits.clone(),
        });
        limits
    }

    pub(super) fn room(&self, key: &PoolKey, lim: &PoolLimits) -> Room {
        let (db, user) = self.used(key);
        let over = |used: u32, max: u32| max > 0 && used > max;
        let open = if full(db, lim.max_db) {
            Err(Blocker::MaxDbConnections)
        } else if full(user, lim.max_user) {
            Err(Blocker::MaxUserConnections)
        } else {
            Ok(())
        };
        Room {
            open,
            over: over(db, lim.max_db) || over(user, lim.max_user),
        }
    }

    /// One more server connection of `key`'s pool exists (or is being made).
    pub(super) fn add_server(&self, key: &PoolKey) {
        let mut counts = self.counts();
        *counts.servers_by_db.entry(key.db.to_string()).or_insert(0) += 1;
        *counts
            .servers_by_user
            .entry(key.user.to_string())
            .or_insert(0) += 1;
    }

    /// `n` server connections of `key`'s pool are gone.
    pub(super) fn remove_servers(&self, key: &PoolKey, n: u32) {
        let mut counts = self.counts();
        decrement(&mut counts.servers_by_db, &key.db, n);
        decrement(&mut counts.servers_by_user, &key.user, n);
    }

    /// Server connections of database `db` and of backend user `user`, across pools.
    pub fn server_counts(&self, db: &str, user: &str) -> (u32, u32) {
        let counts = self.counts();
        (
            counts.servers_by_db.get(db).copied().unwrap_or(0),
            counts.servers_by_user.get(user).copied().unwrap_or(0),
        )
    }

    /// Is `db` paused (PAUSE, KILL)?
    pub(super) fn paused(&self, db: &str) -> bool {
        self.gates.is_paused(db)
    }

    /// Is `db` paused by KILL (not PAUSE)?
    pub(super) fn killed(&self, db: &str) -> bool {
        self.gates.is_killed(db)
    }

    /// Resolve once `db` is not paused (RESUME).
    pub(super) async fn resumed(&self, db: &str) {
        self.gates.wait_unpaused(db).await;
    }

    /// Identity tagging is on (server connections are per identity).
    pub(super) fn tagging(&self) -> bool {
        self.config.load().settings.identity.identity_tagging
    }

    /// Other pools sharing `key`'s database (`by_db`) or backend user (`by_user`).
    fn siblings(&self, key: &PoolKey, by_db: bool, by_user: bool) -> Vec<Arc<Pool>> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| p.key != *key)
            .filter(|p| (by_db && p.key.db == key.db) || (by_user && p.key.user == key.user))
            .collect()
    }

    /// Slots of `key`'s database and user were freed: let sibling pools' waiters have them.
    pub(super) fn wake(&self, key: &PoolKey) {
        for pool in self.siblings(key, true, true) {
            pool.poke();
        }
    }

    /// A connection of `pool` just went idle: if a client of a sibling pool is held back by
    /// max_db_connections / max_user_connections that this connection counts against, close it
    /// so that the client gets the slot (as PgBouncer does; otherwise the client would wait
    /// until query_wait_timeout while the idle connection sat there).
    pub(super) fn offer_idle(&self, pool: &Pool) {
        let key = &pool.key;
        // Only a limit this connection counts against: closing it does nothing for a sibling
        // held back by its own user's max_user_connections (in transaction mode that closed
        // and reopened a connection at every transaction).
        let held_back = self.siblings(key, true, true).into_iter().any(|sibling| {
            sibling.counts().waiting > 0
                && self.held_back_by(
                    &sibling.key,
                    &self.resolve(&sibling.key, &sibling.settings()),
                    key,
                )
        });
        if held_back && pool.evict_one_idle() {
            tracing::debug!(pool = ?key, "closed an idle server connection for a client held back by a shared limit");
        }
    }

    /// A connection of `key`'s pool (which holds `own_total`) comes back while that pool has
    /// clients waiting: should its slot go to a sibling pool instead? Yes when a sibling has
    /// clients held back by the max_db_connections / max_user_connections this connection
    /// counts against, would be admitted once it is closed (its pool size and its other limit
    /// allow), and holds at least two connections fewer: the pools sharing a full limit even
    /// out, one move at a time, and then stay put. (Handing every connection to the pool's own
    /// next client let a busy pool keep the slots and starve the other for as long as its own
    /// clients kept coming; moving a slot at every checkin to whichever pool waited longer
    /// made the two pools reconnect on almost every session.)
    pub(super) fn owed_elsewhere(&self, key: &PoolKey, own_total: u32) -> bool {
        self.siblings(key, true, true).into_iter().any(|sibling| {
            let counts = sibling.counts();
            if counts.waiting == 0 || counts.total + 2 > own_total {
                return false;
            }
            let lim = self.resolve(&sibling.key, &sibling.settings());
            counts.total < lim.cap(false) && self.admits_after_release(&sibling.key, &lim, key)
        })
    }

    /// Server connections counted against `key`'s database and user.
    fn used(&self, key: &PoolKey) -> (u32, u32) {
        let counts = self.counts();
        (
            counts.servers_by_db.get(&*key.db).copied().unwrap_or(0),
            counts.servers_by_user.get(&*key.user).copied().unwrap_or(0),
        )
    }

    /// Is `key`'s pool held back by a full cross-pool limit that a connection of `released`'s
    /// pool counts against (its database's max_db_connections, its user's
    /// max_user_connections)? Closing such a connection brings it closer (it may also wait on
    /// the other limit: a connection of another pool may free that one).
    fn held_back_by(&self, key: &PoolKey, lim: &PoolLimits, released: &PoolKey) -> bool {
        let (db, user) = self.used(key);
        (released.db == key.db && full(db, lim.max_db))
            || (released.user == key.user && full(user, lim.max_user))
    }

    /// Is `key`'s pool held back by a cross-pool limit now, and free of both once one
    /// connection of `released`'s pool is gone?
    fn admits_after_release(&self, key: &PoolKey, lim: &PoolLimits, released: &PoolKey) -> bool {
        let (db, user) = self.used(key);
        let db_after = db.saturating_sub(u32::from(released.db == key.db));
        let user_after = user.saturating_sub(u32::from(released.user == key.user));
        (full(db, lim.max_db) || full(user, lim.max_user))
            && !full(db_after, lim.max_db)
            && !full(user_after, lim.max_user)
    }

    /// A client of `key`'s pool waits on a cross-pool limit: close one idle connection of
    /// another pool that counts against it (as PgBouncer does), freeing a slot.
    pub(super) fn evict_for(&self, key: &PoolKey, blocker: Blocker) {
        let (by_db, by_user) = match blocker {
            Blocker::MaxDbConnections => (true, false),
            Blocker::MaxUserConnections => (false, true),
            Blocker::PoolSize
            | Blocker::MaxUserPoolShare
            | Blocker::ServerCheck
            | Blocker::ServerLogin => return,
        };
        for pool in self.siblings(key, by_db, by_user) {
            if pool.evict_one_idle() {
                tracing::debug!(pool = ?pool.key, for_pool = ?key, limit = %blocker, "closed an idle server connection to make room");
                return;
            }
        }
    }

    /// Count a logged-in client against max_user_client_connections and
    /// max_db_client_connections, or say which one is full. The slot frees on drop.
    pub fn admit_client(
        self: &Arc<Self>,
        user: &Arc<str>,
        db: &Arc<str>,
    ) -> Result<ClientSlot, ClientLimit> {
        let config = self.config.load();
        let caps = (
            config.max_user_client_connections(user),
            config.max_db_client_connections(db),
        );
        self.admit(user, db, caps)
    }

    /// Count an admin console client (`db`: the console's name) as a client of its user and
    /// of the console, as PgBouncer does. The console has no [databases] entry: its cap is
    /// the [pgbouncer] max_db_client_connections. A user of admin_users (`exempt`) is counted
    /// but never refused, as in PgBouncer: an admin can always get in, also to see why the
    /// caps are full.
    pub fn admit_console(
        self: &Arc<Self>,
        user: &Arc<str>,
        db: &Arc<str>,
        exempt: bool,
    ) -> Result<ClientSlot, ClientLimit> {
        let caps = if exempt {
            (0, 0)
        } else {
            let config = self.config.load();
            (
                config.max_user_client_connections(user),
                config.settings.max_db_client_connections,
            )
        };
        self.admit(user, db, caps)
    }

    /// Count a client under caps (`max_user`, `max_db`; 0: none), or say which one is full.
    fn admit(
        self: &Arc<Self>,
        user: &Arc<str>,
        db: &Arc<str>,
        (max_user, max_db): (u32, u32),
    ) -> Result<ClientSlot, ClientLimit> {
        let mut counts = self.counts();
        let by_user = counts.clients_by_user.get(&**user).copied().unwrap_or(0);
        let by_db = counts.clients_by_db.get(&**db).copied().unwrap_or(0);
        if max_user > 0 && by_user >= max_user {
            return Err(ClientLimit::MaxUserClientConnections);
        }
        if max_db > 0 && by_db >= max_db {
            return Err(ClientLimit::MaxDbClientConnections);
        }
        increment(&mut counts.clients_by_user, user);
        increment(&mut counts.clients_by_db, db);
        Ok(ClientSlot {
            limits: Arc::clone(self),
            user: Arc::clone(user),
            db: Arc::clone(db),
        })
    }
}

/// Count one more for `key` (allocating the key only the first time it is seen).
fn increment(map: &mut Counter, key: &str) {
    match map.get_mut(key) {
        Some(v) => *v += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

fn decrement(map: &mut Counter, key: &str, n: u32) {
    if let Some(v) = map.get_mut(key) {
        *v = v.saturating_sub(n);
        if *v == 0 {
            map.remove(key);
        }
    }
}

/// A client connection counted against the client caps, for as long as it lives.
#[derive(Debug)]
pub struct ClientSlot {
    limits: Arc<Limits>,
    user: Arc<str>,
    db: Arc<str>,
}

impl ClientSlot {
    /// The login user this slot counts.
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        decrement(&mut counts.clients_by_user, &self.user, 1);
        decrement(&mut counts.clients_by_db, &self.db, 1);
    }
}

/// The limits of `key`'s pool under `config`.
fn resolve_in(config: &Config, key: &PoolKey, settings: &PoolSettings) -> PoolLimits {
    let s = &config.settings;
    PoolLimits {
        size: settings.size,
        reserve_size: config.pool_reserve_size(&key.db, &key.user),
        reserve_timeout: Config::nonzero(s.reserve_pool_timeout),
        share_cap: config
            .max_user_pool_share(&key.db)
            .map(|share| share.cap(settings.size)),
        order: if s.fair_sharing {
            Order::Fair
        } else {
            Order::Fifo
        },
        max_db: config.max_db_connections(&key.db),
        max_user: config.max_user_connections(&key.user),
    }
}

/// A limit `max` (0: none) with `used` taken is full.
fn full(used: u32, max: u32) -> bool {
    max > 0 && used >= max
}

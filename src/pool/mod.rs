//! Server connection pools, keyed by (database, backend user).
//!
//! Bookkeeping (idle list, counts, waiters) sits behind one short sync `Mutex` per pool; no
//! `.await` happens under it. Connecting, resetting and closing happen outside the lock.

mod janitor;
mod release;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

use crate::server::{self, ServerConn, ServerError, ServerTarget};

pub use janitor::run_janitor;

/// A pool's identity: the database name clients use and the user pgporter logs in as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub db: String,
    pub user: String,
}

/// Sizes and timeouts of one pool (from the config snapshot that created or last resized it).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: u32,
    pub min_size: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    pub reset_query: String,
    pub reset_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error(transparent)]
    Connect(#[from] ServerError),
}

/// What a waiting client is handed.
// A connection moves through here once per checkout; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Grant {
    Conn(ServerConn),
    /// A slot was freed: connect a new server connection yourself.
    Permit,
}

#[derive(Debug, Default)]
struct Inner {
    idle: VecDeque<ServerConn>,
    /// Idle + in use + being connected.
    total: u32,
    waiters: VecDeque<oneshot::Sender<Grant>>,
    /// Server-reported parameters for the client welcome, from the first connection.
    welcome: Option<Arc<Vec<(String, String)>>>,
}

#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    pub target: ServerTarget,
    settings: Mutex<PoolSettings>,
    inner: Mutex<Inner>,
}

/// Counts for SHOW POOLS-style views and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    pub idle: u32,
    pub total: u32,
    pub waiting: u32,
}

#[allow(clippy::large_enum_variant)]
enum Decision {
    Take(ServerConn),
    Connect,
    Wait(oneshot::Receiver<Grant>),
}

impl Pool {
    pub fn new(key: PoolKey, target: ServerTarget, settings: PoolSettings) -> Self {
        Pool {
            key,
            target,
            settings: Mutex::new(settings),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Apply new sizes/timeouts (config reload); a smaller size takes effect as connections return.
    pub fn update_settings(&self, settings: PoolSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    pub fn counts(&self) -> PoolCounts {
        let inner = self.lock();
        PoolCounts {
            idle: u32::try_from(inner.idle.len()).unwrap_or(u32::MAX),
            total: inner.total,
            waiting: u32::try_from(inner.waiters.len()).unwrap_or(u32::MAX),
        }
    }

    /// The server parameters to welcome a client with, once a connection has been made.
    pub fn welcome(&self) -> Option<Arc<Vec<(String, String)>>> {
        self.lock().welcome.clone()
    }

    /// Get a server connection: an idle one, a new one if under the pool size, or wait up to
    /// `wait` (None = forever) for one to be released.
    pub async fn checkout(
        &self,
        extra_params: &[(String, String)],
        wait: Option<Duration>,
    ) -> Result<ServerConn, PoolError> {
        let settings = self.settings();
        let grant = match self.decide(&settings) {
            Decision::Take(conn) => Grant::Conn(conn),
            Decision::Connect => Grant::Permit,
            Decision::Wait(rx) => self.wait(rx, wait).await?,
        };
        match grant {
            Grant::Conn(mut conn) => {
                conn.last_used = Instant::now();
                Ok(conn)
            }
            Grant::Permit => self.connect(extra_params, &settings).await,
        }
    }

    fn decide(&self, settings: &PoolSettings) -> Decision {
        let now = Instant::now();
        let mut inner = self.lock();
        while let Some(conn) = inner.idle.pop_back() {
            if expired(&conn, settings, now) {
                inner.total -= 1;
                drop(conn);
                continue;
            }
            return Decision::Take(conn);
        }
        if inner.total < settings.size {
            inner.total += 1;
            return Decision::Connect;
        }
        let (tx, rx) = oneshot::channel();
        inner.waiters.push_back(tx);
        Decision::Wait(rx)
    }

    async fn wait(
        &self,
        mut rx: oneshot::Receiver<Grant>,
        wait: Option<Duration>,
    ) -> Result<Grant, PoolError> {
        let received = match wait {
            Some(limit) => tokio::time::timeout(limit, &mut rx).await.ok(),
            None => Some((&mut rx).await),
        };
        match received {
            Some(Ok(grant)) => Ok(grant),
            // The pool is being dropped (never happens while we hold an Arc), or timed out:
            // close the channel and take anything that raced in, so nothing is lost.
            Some(Err(_)) | None => {
                rx.close();
                rx.try_recv().map_err(|_| PoolError::WaitTimeout)
            }
        }
    }

    async fn connect(
        &self,
        extra_params: &[(String, String)],
        settings: &PoolSettings,
    ) -> Result<ServerConn, PoolError> {
        match server::connect(&self.target, extra_params, settings.connect_timeout).await {
            Ok(conn) => {
                let mut inner = self.lock();
                if inner.welcome.is_none() {
                    inner.welcome = Some(Arc::new(conn.reported.clone()));
                }
                Ok(conn)
            }
            Err(e) => {
                self.forget_one();
                Err(e.into())
            }
        }
    }

    /// A connection counted in `total` is gone: free its slot, or hand the slot to a waiter.
    fn forget_one(&self) {
        let mut inner = self.lock();
        inner.total -= 1;
        let size = self.settings().size;
        while inner.total < size {
            let Some(tx) = inner.waiters.pop_front() else {
                break;
            };
            inner.total += 1;
            if tx.send(Grant::Permit).is_ok() {
                break;
            }
            inner.total -= 1;
        }
    }

    /// Put a clean, reset connection back: to the longest waiter, else onto the idle list.
    fn checkin(&self, mut conn: ServerConn) {
        let mut inner = self.lock();
        if inner.total > self.settings().size {
            // Shrunk by a reload: let this one go.
            inner.total -= 1;
            return;
        }
        while let Some(tx) = inner.waiters.pop_front() {
            match tx.send(Grant::Conn(conn)) {
                Ok(()) => return,
                Err(Grant::Conn(back)) => conn = back,
                Err(Grant::Permit) => return,
            }
        }
        conn.conn.shrink();
        inner.idle.push_back(conn);
    }
}

fn expired(conn: &ServerConn, settings: &PoolSettings, now: Instant) -> bool {
    settings
        .lifetime
        .is_some_and(|l| now.duration_since(conn.created_at) >= l)
        || settings
            .idle_timeout
            .is_some_and(|l| now.duration_since(conn.last_used) >= l)
}

/// All pools, created on first use.
#[derive(Debug, Default)]
pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
}

impl Pools {
    /// The pool for `key`, created with `make` if missing.
    pub fn get_or_create(&self, key: &PoolKey, make: impl FnOnce() -> Pool) -> Arc<Pool> {
        if let Some(pool) = self.map.get(key) {
            return pool.clone();
        }
        self.map
            .entry(key.clone())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.map.get(key).map(|p| p.clone())
    }

    /// A snapshot of every pool (no map guard is kept).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }
}

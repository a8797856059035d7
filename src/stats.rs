//! Counters behind SHOW STATS / SHOW POOLS and /metrics: one `Arc<PoolStats>` of atomics per
//! pool, bumped by the relay once per ReadyForQuery (no locks on the hot path), plus per-user
//! counters (auth failures, limit rejections) and reload outcomes. A sink: imports nothing
//! upstream.
//!
//! Averages (`avg_*`, per second over the last `stats_period`) are computed by [`Stats::roll`],
//! called by the periodic stats task; the math is in [`Totals::averages`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::time::{Duration, Instant};

/// Cumulative counters of one pool (database, user).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub server_assignment_count: AtomicU64,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    /// Bytes received from clients.
    pub received: AtomicU64,
    /// Bytes sent to clients.
    pub sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    /// Servers connected before this instant (µs since [`Stats::epoch`]) are closed on release
    /// (RECONNECT, reload of the database's connection string). 0 = none.
    pub reconnect_before_us: AtomicU64,
}

/// A plain copy of [`PoolStats`] (or a sum of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
}

impl PoolStats {
    pub fn totals(&self) -> Totals {
        Totals {
            server_assignment_count: self.server_assignment_count.load(Relaxed),
            xact_count: self.xact_count.load(Relaxed),
            query_count: self.query_count.load(Relaxed),
            received: self.received.load(Relaxed),
            sent: self.sent.load(Relaxed),
            xact_time_us: self.xact_time_us.load(Relaxed),
            query_time_us: self.query_time_us.load(Relaxed),
            wait_time_us: self.wait_time_us.load(Relaxed),
        }
    }

    /// A client was handed a server connection after waiting `waited`.
    pub fn assigned(&self, waited: Duration) {
        self.server_assignment_count.fetch_add(1, Relaxed);
        self.wait_time_us.fetch_add(micros(waited), Relaxed);
    }

    /// Traffic relayed since the last call (either may be 0).
    pub fn bytes(&self, received: u64, sent: u64) {
        if received > 0 {
            self.received.fetch_add(received, Relaxed);
        }
        if sent > 0 {
            self.sent.fetch_add(sent, Relaxed);
        }
    }

    /// One ReadyForQuery: a query finished after `query_time`; when `xact_time` is set, a
    /// transaction ended too.
    pub fn query_done(&self, query_time: Duration, xact_time: Option<Duration>) {
        self.query_count.fetch_add(1, Relaxed);
        self.query_time_us.fetch_add(micros(query_time), Relaxed);
        if let Some(x) = xact_time {
            self.xact_count.fetch_add(1, Relaxed);
            self.xact_time_us.fetch_add(micros(x), Relaxed);
        }
    }
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            server_assignment_count: self.server_assignment_count + o.server_assignment_count,
            xact_count: self.xact_count + o.xact_count,
            query_count: self.query_count + o.query_count,
            received: self.received + o.received,
            sent: self.sent + o.sent,
            xact_time_us: self.xact_time_us + o.xact_time_us,
            query_time_us: self.query_time_us + o.query_time_us,
            wait_time_us: self.wait_time_us + o.wait_time_us,
        }
    }
}

/// SHOW STATS_AVERAGES values: rates per second, and mean durations in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Averages {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub recv: u64,
    pub sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
}

impl Totals {
    /// Averages over `period` between an earlier snapshot `old` and `self` (PgBouncer's
    /// definitions: counts and bytes per second; times per transaction / query / assignment).
    pub fn averages(&self, old: &Totals, period: Duration) -> Averages {
        let secs = period.as_secs_f64().max(0.001);
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let rate = |n: u64| (n as f64 / secs).round() as u64;
        let mean = |sum: u64, n: u64| sum.checked_div(n).unwrap_or(0);
        let xacts = d(self.xact_count, old.xact_count);
        let queries = d(self.query_count, old.query_count);
        let assigns = d(self.server_assignment_count, old.server_assignment_count);
        Averages {
            server_assignment_count: rate(assigns),
            xact_count: rate(xacts),
            query_count: rate(queries),
            recv: rate(d(self.received, old.received)),
            sent: rate(d(self.sent, old.sent)),
            xact_time: mean(d(self.xact_time_us, old.xact_time_us), xacts),
            query_time: mean(d(self.query_time_us, old.query_time_us), queries),
            wait_time: mean(d(self.wait_time_us, old.wait_time_us), assigns),
        }
    }
}

/// A session's handle on its pool's counters and its database's query histogram, kept by the
/// relay's transaction tracker.
#[derive(Clone)]
pub struct Meter {
    pub pool: Arc<PoolStats>,
    pub query_histogram: Arc<crate::metrics::Histogram>,
    busy_since: Option<Instant>,
    xact_since: Option<Instant>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

impl Meter {
    pub fn new(pool: Arc<PoolStats>, query_histogram: Arc<crate::metrics::Histogram>) -> Meter {
        Meter {
            pool,
            query_histogram,
            busy_since: None,
            xact_since: None,
        }
    }

    /// The server went from idle to busy.
    pub fn request_started(&mut self) {
        let now = Instant::now();
        self.busy_since = Some(now);
        self.xact_since.get_or_insert(now);
    }

    /// A transaction may have begun (an extended-protocol batch on an idle server).
    pub fn xact_started(&mut self) {
        self.xact_since.get_or_insert_with(Instant::now);
    }

    /// When the request in progress started.
    pub fn busy_since(&self) -> Option<Instant> {
        self.busy_since
    }

    /// When the transaction in progress began: the request that took the server out of idle,
    /// or the end of the previous transaction when requests were pipelined behind it.
    pub fn xact_since(&self) -> Option<Instant> {
        self.xact_since
    }

    /// ReadyForQuery: `idle` = status 'I' (no transaction open), `more` = further requests
    /// already in flight.
    pub fn ready_for_query(&mut self, idle: bool, more: bool) {
        let now = Instant::now();
        let query = self
            .busy_since
            .map_or(Duration::ZERO, |t| now.duration_since(t));
        self.busy_since = more.then_some(now);
        let xact = if idle {
            self.xact_since.take().map(|t| now.duration_since(t))
        } else {
            None
        };
        if idle && more {
            self.xact_since = Some(now);
        }
        self.pool.query_done(query, xact);
        self.query_histogram.record(query.as_secs_f64());
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Label value for a user name in metrics: known users by name, anything else `unknown`, so a
/// client guessing names cannot grow the label set.
pub const UNKNOWN_USER: &str = "unknown";

/// Every counter of the process.
#[derive(Debug)]
pub struct Stats {
    /// Per (database, pool user).
    pools: DashMap<(String, String), Arc<PoolStats>, crate::FastHash>,
    /// Per known user: failed logins.
    pub auth_failures: DashMap<String, AtomicU64>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Process start: the zero of the µs timestamps kept in atomics.
    pub epoch: Instant,
    averages: Mutex<AverageState>,
}

#[derive(Debug, Default)]
struct AverageState {
    last: HashMap<String, Totals>,
    last_at: Option<Instant>,
    averages: HashMap<String, Averages>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            pools: DashMap::default(),
            auth_failures: DashMap::new(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            epoch: Instant::now(),
            averages: Mutex::new(AverageState::default()),
        }
    }
}

impl Stats {
    /// The counters of pool (db, user), created on first use.
    pub fn pool(&self, db: &str, user: &str) -> Arc<PoolStats> {
        let key = (db.to_string(), user.to_string());
        if let Some(s) = self.pools.get(&key) {
            return Arc::clone(&s);
        }
        Arc::clone(&self.pools.entry(key).or_default())
    }

    /// Drop a freed pool's counters (its database left SHOW STATS, as in PgBouncer).
    pub fn forget_pool(&self, db: &str, user: &str) {
        self.pools.remove(&(db.to_string(), user.to_string()));
    }

    /// Drop every pool's counters of `db` (a database that is gone).
    pub fn forget_database(&self, db: &str) {
        self.pools.retain(|k, _| k.0 != db);
    }

    /// The databases that have counters.
    pub fn databases(&self) -> Vec<Box<str>> {
        self.pools
            .iter()
            .map(|e| e.key().0.as_str().into())
            .collect()
    }

    /// µs since the process started (for timestamps kept in atomics).
    pub fn now_us(&self) -> u64 {
        micros(Instant::now().duration_since(self.epoch))
    }

    /// Totals per database (summed over its pools), sorted by name.
    pub fn per_database(&self) -> Vec<(String, Totals)> {
        let mut sums: HashMap<String, Totals> = HashMap::new();
        for e in self.pools.iter() {
            let t = e.value().totals();
            let sum = sums.entry(e.key().0.clone()).or_default();
            *sum = *sum + t;
        }
        let mut v: Vec<_> = sums.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Totals per pool (db, user), sorted.
    pub fn per_pool(&self) -> Vec<((String, String), Totals)> {
        let mut v: Vec<_> = self
            .pools
            .iter()
            .map(|e| (e.key().clone(), e.value().totals()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Close the current stats period: recompute averages. Returns the whole-process averages
    /// for the stats_period log line.
    pub fn roll(&self) -> Averages {
        let now = Instant::now();
        let current = self.per_database();
        let mut st = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        let period = st
            .last_at
            .map(|t| now.duration_since(t))
            .unwrap_or_else(|| now.duration_since(self.epoch));
        let mut all_new = Totals::default();
        let mut all_old = Totals::default();
        let mut averages = HashMap::new();
        for (db, t) in &current {
            let old = st.last.get(db).copied().unwrap_or_default();
            averages.insert(db.clone(), t.averages(&old, period));
            all_new = all_new + *t;
            all_old = all_old + old;
        }
        st.averages = averages;
        st.last = current.into_iter().collect();
        st.last_at = Some(now);
        all_new.averages(&all_old, period)
    }

    /// Averages of the last completed period for `db`.
    pub fn averages(&self, db: &str) -> Averages {
        let st = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        st.averages.get(db).copied().unwrap_or_default()
    }

    pub fn auth_failed(&self, user_label: &str) {
        bump(&self.auth_failures, user_label);
    }

    /// Failed logins counted under `user_label` so far.
    pub fn auth_failures_of(&self, user_label: &str) -> u64 {
        self.auth_failures
            .get(user_label)
            .map_or(0, |n| n.load(Relaxed))
    }
}

fn bump(map: &DashMap<String, AtomicU64>, key: &str) {
    if let Some(c) = map.get(key) {
        c.fetch_add(1, Relaxed);
        return;
    }
    map.entry(key.to_string())
        .or_default()
        .fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_follow_pgbouncer_definitions() {
        let old = Totals::default();
        let new = Totals {
            server_assignment_count: 4,
            xact_count: 10,
            query_count: 20,
            received: 2000,
            sent: 4000,
            xact_time_us: 1000,
            query_time_us: 4000,
            wait_time_us: 400,
        };
        let a = new.averages(&old, Duration::from_secs(2));
        assert_eq!(a.xact_count, 5);
        assert_eq!(a.query_count, 10);
        assert_eq!(a.recv, 1000);
        assert_eq!(a.sent, 2000);
        assert_eq!(a.xact_time, 100);
        assert_eq!(a.query_time, 200);
        assert_eq!(a.wait_time, 100);
        assert_eq!(a.server_assignment_count, 2);
        // No traffic: zeros, no division by zero.
        assert_eq!(new.averages(&new, Duration::ZERO), Averages::default());
    }

    #[test]
    fn per_database_sums_pools() {
        let s = Stats::default();
        s.pool("a", "u1").query_done(Duration::from_micros(5), None);
        s.pool("a", "u2")
            .query_done(Duration::from_micros(7), Some(Duration::from_micros(9)));
        s.pool("b", "u1").bytes(3, 4);
        let per = s.per_database();
        assert_eq!(per.len(), 2);
        assert_eq!(per[0].0, "a");
        assert_eq!(per[0].1.query_count, 2);
        assert_eq!(per[0].1.query_time_us, 12);
        assert_eq!(per[0].1.xact_count, 1);
        assert_eq!(per[1].1.received, 3);
        assert_eq!(per[1].1.sent, 4);
    }
}

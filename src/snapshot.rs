//! One consistent-enough picture of the running process, taken on demand (SHOW commands,
//! /metrics scrapes) so that `admin::show` and `metrics` stay pure functions of it.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::{Duration, Instant};

use crate::app::Shared;
use crate::config::Config;
use crate::gates::GateState;
use crate::health::HostState;
use crate::server::ServerAddr;
use crate::sessions::{ClientState, SessionInfo};
use crate::shutdown::ShutdownMode;
use crate::stats::{Averages, Totals};

/// The admin console's pseudo-database, as PgBouncer lists it in SHOW DATABASES / POOLS /
/// STATS: one database with one pool (its user has the same name) holding every console
/// client (those of the `pgporter` alias too), in statement mode, with no server connections.
pub const CONSOLE_DB: &str = "pgbouncer";

/// The console pool's pool_size as PgBouncer shows it. The console opens no server
/// connections; a 0 here would trip "pool full" alerts comparing connections with pool_size.
pub const CONSOLE_POOL_SIZE: u32 = 2;

/// One pool's counts (SHOW POOLS row).
#[derive(Debug, Clone)]
pub struct PoolRow {
    pub database: String,
    /// Which listener's pool (the same database and user may have one on each).
    pub endpoint: crate::routing::Endpoint,
    pub user: String,
    pub cl_active: u64,
    pub cl_waiting: u64,
    pub sv_active: u64,
    pub sv_idle: u64,
    /// Being tested with server_check_query, or reset with server_reset_query.
    pub sv_tested: u64,
    /// Being connected and logged in.
    pub sv_login: u64,
    pub maxwait: Duration,
    pub pool_size: u32,
}

impl PoolRow {
    /// A pool with no client and no server connection (counted up by the caller).
    fn empty(database: &str, endpoint: crate::routing::Endpoint, user: &str, size: u32) -> Self {
        PoolRow {
            database: database.to_string(),
            endpoint,
            user: user.to_string(),
            cl_active: 0,
            cl_waiting: 0,
            sv_active: 0,
            sv_idle: 0,
            sv_tested: 0,
            sv_login: 0,
            maxwait: Duration::ZERO,
            pool_size: size,
        }
    }

    /// The database as SHOW POOLS and the pool metrics name it: a pool of the read-only
    /// listener is `db (read-only)`, so that it does not repeat the read-write pool's
    /// (database, user), which pgbouncer_exporter would reject as a duplicate series.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        pool_label(&self.database, self.endpoint)
    }
}

/// See [`PoolRow::label`].
pub fn pool_label(db: &str, endpoint: crate::routing::Endpoint) -> std::borrow::Cow<'_, str> {
    match endpoint {
        crate::routing::Endpoint::ReadWrite => db.into(),
        crate::routing::Endpoint::ReadOnly => format!("{db} (read-only)").into(),
    }
}

/// SHOW SERVERS' state of a connection being opened and logged in (PgBouncer's word; its
/// SHOW POOLS counts them as `sv_login`).
pub const SERVER_LOGIN: &str = "new";

/// One server connection (SHOW SERVERS row).
#[derive(Debug, Clone)]
pub struct ServerRow {
    pub database: String,
    pub user: String,
    pub state: &'static str,
    pub addr: ServerAddr,
    pub pid: i32,
    pub connect_time: SystemTime,
    pub request_time: SystemTime,
    /// The client session holding it.
    pub link: Option<u64>,
    /// Closed when released (RECONNECT or a reload came after it connected).
    pub close_needed: bool,
    pub application_name: String,
    pub tls: Option<crate::tls::TlsInfo>,
    /// pgporter's end of the connection.
    pub local: Option<std::net::SocketAddr>,
    /// Statements pgporter keeps prepared on it (transaction mode).
    pub prepared: usize,
}

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: Vec<PoolRow>,
    pub clients: Vec<Arc<SessionInfo>>,
    /// Idle clients waiting in the lobby (without a task).
    pub parked: usize,
    /// The audit queue (None when auditing is off).
    pub audit_queue: Option<crate::audit::QueueState>,
    pub servers: Vec<ServerRow>,
    pub stats: Vec<(String, Totals, Averages)>,
    pub gates: GateState,
    pub hosts: Vec<(ServerAddr, HostState)>,
    pub shutdown: Option<ShutdownMode>,
    /// The port the read-write listener is bound to (the console's, in SHOW DATABASES).
    pub listen_port: u16,
    pub now_us: u64,
    pub auth_failures: Vec<(String, u64)>,
    pub rejections: Vec<(String, u64)>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub readiness: Result<(), String>,
}

impl Snapshot {
    pub fn take(shared: &Shared) -> Snapshot {
        let config = shared.config.load();
        let clients = shared.sessions.all();
        let now_us = shared.stats.now_us();
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut pools = Vec::new();
        let mut servers = Vec::new();
        let registry = sorted_pools(shared);
        for pool in &registry {
            let (db, user) = (&pool.key.db, &pool.key.user);
            let reconnect_before = shared
                .stats
                .pool(db, user)
                .reconnect_before_us
                .load(std::sync::atomic::Ordering::Relaxed);
            let mine = clients.iter().filter(|c| {
                !c.admin
                    && *c.database == **db
                    && *c.pool_user == **user
                    && c.endpoint == pool.key.endpoint
            });
            let (mut active, mut waiting, mut maxwait_us) = (0, 0, 0u64);
            let servers_before = servers.len();
            for c in mine {
                match c.state() {
                    ClientState::Waiting => {
                        waiting += 1;
                        maxwait_us = maxwait_us.max(c.waited_us(now_us));
                    }
                    // PgBouncer counts idle logged-in clients as cl_active too.
                    ClientState::Active | ClientState::Idle => active += 1,
                }
                if let Some(row) = active_row(c, reconnect_before) {
                    servers.push(row);
                }
            }
            let counts = pool.counts();
            let idle = pool.idle_servers();
            // This pool's (a database may have a read-write and a read-only pool per user).
            let sv_active = (servers.len() - servers_before) as u64;
            let resetting = pool.resetting_servers();
            let states = std::iter::repeat("idle").zip(&idle);
            for (state, s) in states.chain(std::iter::repeat("tested").zip(&resetting)) {
                servers.push(ServerRow {
                    database: db.to_string(),
                    user: user.to_string(),
                    state,
                    addr: s.addr.clone(),
                    pid: s.pid,
                    connect_time: wall - now.duration_since(s.created_at),
                    request_time: wall - now.duration_since(s.last_used),
                    link: None,
                    close_needed: false,
                    application_name: String::new(),
                    tls: s.tls,
                    local: s.local,
                    prepared: s.prepared,
                });
            }
            let logins = pool.logins();
            let logging_in = logins.len() as u64;
            for (started, seen) in logins {
                servers.push(login_row(db, user, &pool.target.addr, started, seen));
            }
            // The rest of the pool's connections were released and are being reset
            // (server_reset_query), which PgBouncer counts as tested.
            let listed = u64::from(counts.idle) + sv_active + u64::from(counts.tested);
            let others = u64::from(counts.total).saturating_sub(listed);
            let sv_login = logging_in.min(others);
            pools.push(PoolRow {
                database: db.to_string(),
                endpoint: pool.key.endpoint,
                user: user.to_string(),
                cl_active: active,
                cl_waiting: waiting,
                sv_active,
                sv_idle: u64::from(counts.idle),
                sv_tested: u64::from(counts.tested) + others - sv_login,
                sv_login,
                maxwait: Duration::from_micros(maxwait_us),
                pool_size: pool.settings().size,
            });
        }
        // Sessions of a pool a reload retired (its database entry changed or went) whose
        // successor does not exist yet: their servers stay connected until their clients
        // leave, and a row per pool counts them (cl_waiting above all: monitoring must see
        // them).
        let mut orphans: Vec<PoolRow> = Vec::new();
        for c in clients.iter().filter(|c| !c.admin) {
            let in_registry = registry.iter().any(|p| {
                *p.key.db == *c.database
                    && *p.key.user == *c.pool_user
                    && p.key.endpoint == c.endpoint
            });
            if in_registry {
                continue;
            }
            let before = shared
                .stats
                .pool(&c.database, &c.pool_user)
                .reconnect_before_us
                .load(std::sync::atomic::Ordering::Relaxed);
            let row = active_row(c, before);
            let at = orphans.iter().position(|p| {
                p.database == *c.database && p.user == *c.pool_user && p.endpoint == c.endpoint
            });
            let pool = match at {
                Some(i) => &mut orphans[i],
                None => {
                    orphans.push(PoolRow::empty(
                        &c.database,
                        c.endpoint,
                        &c.pool_user,
                        config.pool_size(&c.database, &c.pool_user),
                    ));
                    orphans.last_mut().expect("pushed")
                }
            };
            match c.state() {
                ClientState::Waiting => {
                    pool.cl_waiting += 1;
                    pool.maxwait = (pool.maxwait).max(Duration::from_micros(c.waited_us(now_us)));
                }
                ClientState::Active | ClientState::Idle => pool.cl_active += 1,
            }
            pool.sv_active += u64::from(row.is_some());
            servers.extend(row);
        }
        pools.extend(orphans);
        let stats = shared
            .stats
            .per_database()
            .into_iter()
            .map(|(db, t)| {
                let a = shared.stats.averages(&db);
                (db, t, a)
            })
            .collect();
        let readiness = readiness(shared, &config);
        Snapshot {
            pools,
            clients,
            parked: shared.lobby.parked(),
            audit_queue: shared.audit.queue(),
            servers,
            stats,
            gates: shared.gates.state(),
            hosts: shared.hosts.all(&shared.routing),
            shutdown: shared.lifecycle.mode(),
            listen_port: shared.listen_port,
            now_us,
            auth_failures: counters(&shared.stats.auth_failures),
            rejections: rejections(shared),
            reloads_ok: shared
                .stats
                .reloads_ok
                .load(std::sync::atomic::Ordering::Relaxed),
            reloads_failed: shared
                .stats
                .reloads_failed
                .load(std::sync::atomic::Ordering::Relaxed),
            readiness,
            config,
        }
    }
}

impl Snapshot {
    /// The databases SHOW DATABASES lists, sorted, each with its entry: the configured ones,
    /// and those made through `*` that have a pool or that PAUSE, KILL, DISABLE, RECONNECT
    /// or WAIT_CLOSE named (as PgBouncer lists its auto-databases, registered by a client or
    /// by those commands).
    /// Not the console's pseudo-database (see [`Self::console_pool`]), nor an entry named as
    /// the console: clients asking for that name get the console, never the entry.
    pub fn databases(&self) -> Vec<(&String, &crate::config::DatabaseEntry)> {
        let mut names: Vec<&String> = (self.config.databases.keys())
            .filter(|d| !crate::admin::is_admin_database(d))
            .collect();
        if self.config.fallback_database.is_some() {
            names.extend(
                (self.pools.iter().map(|p| &p.database))
                    .chain(self.gates.paused.iter())
                    .chain(self.gates.disabled.iter())
                    .chain(self.gates.registered.iter())
                    .filter(|d| {
                        !self.config.databases.contains_key(*d)
                            && !crate::admin::is_admin_database(d)
                    }),
            );
        }
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let entry = self.config.databases.get(name);
                Some((name, entry.or(self.config.fallback_database.as_ref())?))
            })
            .collect()
    }

    /// The users PgBouncer would list: auth_file's, `[users]`', those known only from a
    /// login (auth_query, the console) or a pool (a forced user), and the console pool's
    /// user `pgbouncer`, sorted.
    pub fn users(&self) -> Vec<&str> {
        let mut names: Vec<&str> = (self.config.userlist.keys())
            .chain(self.config.users.keys())
            .map(String::as_str)
            .chain(self.pools.iter().map(|p| p.user.as_str()))
            .chain(self.clients.iter().map(|c| &*c.user))
            .chain([CONSOLE_DB])
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// SHOW LISTS' rows (also pgbouncer_exporter's list gauges).
    pub fn lists(&self) -> [(&'static str, u64); 14] {
        [
            // The console's pseudo-database and its pool count, as in PgBouncer.
            ("databases", self.databases().len() as u64 + 1),
            ("users", self.users().len() as u64),
            ("peers", 0),
            ("pools", self.pools.len() as u64 + 1),
            ("peer_pools", 0),
            ("free_clients", 0),
            ("used_clients", self.clients.len() as u64),
            ("login_clients", 0),
            ("free_servers", 0),
            ("used_servers", self.servers.len() as u64),
            ("dns_names", 0),
            ("dns_zones", 0),
            ("dns_queries", 0),
            ("dns_pending", 0),
        ]
    }
}

impl Snapshot {
    /// The console's pool (SHOW POOLS, pgbouncer_pools_*): every console client counts as
    /// `cl_active`, logged in and served at once; nothing waits, no server connections.
    pub fn console_pool(&self) -> PoolRow {
        let endpoint = crate::routing::Endpoint::ReadWrite;
        PoolRow {
            cl_active: self.clients.iter().filter(|c| c.admin).count() as u64,
            ..PoolRow::empty(CONSOLE_DB, endpoint, CONSOLE_DB, CONSOLE_POOL_SIZE)
        }
    }
}

/// SHOW SERVERS' row for the server connection session `c` holds, if any.
fn active_row(c: &SessionInfo, reconnect_before_us: u64) -> Option<ServerRow> {
    let link = c.server()?;
    Some(ServerRow {
        database: c.database.to_string(),
        user: c.pool_user.to_string(),
        state: "active",
        // Where the connection really went (a routed pool has several hosts).
        addr: ServerAddr::new(&link.addr, link.port),
        pid: link.pid,
        connect_time: link.connect_time,
        request_time: c.request_time(),
        link: Some(c.id),
        close_needed: link.created_us < reconnect_before_us,
        application_name: c.application_name.to_string(),
        tls: link.tls,
        local: link.local,
        prepared: link.prepared.load(std::sync::atomic::Ordering::Relaxed) as usize,
    })
}

/// SHOW SERVERS' row for a connection still logging in: PgBouncer's state `new`; no client,
/// the backend pid once known (else 0), the pool's address until a host is being tried.
fn login_row(
    db: &str,
    user: &str,
    target: &ServerAddr,
    started: SystemTime,
    seen: crate::server::LoginSeen,
) -> ServerRow {
    ServerRow {
        database: db.to_string(),
        user: user.to_string(),
        state: SERVER_LOGIN,
        addr: seen.addr.unwrap_or_else(|| target.clone()),
        pid: seen.pid,
        connect_time: started,
        request_time: started,
        link: None,
        close_needed: false,
        application_name: String::new(),
        tls: None,
        local: seen.local,
        prepared: 0,
    }
}

/// /readyz: config loaded and listening (true once the app runs), not draining, and every
/// configured database reachable.
pub fn readiness(shared: &Shared, config: &Config) -> Result<(), String> {
    if let Some(mode) = shared.lifecycle.mode() {
        return Err(format!("shutting down ({})", mode.as_str()));
    }
    shared
        .hosts
        .all_databases_reachable(config, &shared.routing)
}

fn sorted_pools(shared: &Shared) -> Vec<Arc<crate::pool::Pool>> {
    let mut v = shared.pools.all();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn counters(map: &dashmap::DashMap<String, std::sync::atomic::AtomicU64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = map
        .iter()
        .map(|e| {
            (
                e.key().clone(),
                e.value().load(std::sync::atomic::Ordering::Relaxed),
            )
        })
        .collect();
    v.sort();
    v
}

/// Limit rejections per user, summed over the limits (from the pool limits' registry).
fn rejections(shared: &Shared) -> Vec<(String, u64)> {
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    for (user, _limit, n) in shared.pools.limits().rejections.snapshot() {
        *sums.entry(user).or_default() += n;
    }
    sums.into_iter().collect()
}

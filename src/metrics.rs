//! Prometheus metrics: names, label rules, rendering, and the periodic stats line.
//!
//! Histograms (wait time, query duration) are recorded as things happen into per-database
//! histograms owned by the app (`histogram`; no global recorder: several apps can run in one
//! process, as the tests do), dropped once their database is gone. Everything else is read
//! from the counters and registries at scrape time into a fresh recorder, so removed pools
//! disappear and nothing is double-kept. Labels come from a closed
//! set (database, user, identity, host, state, role, outcome): never ports or session ids;
//! user labels are the configured users, anything else is `unknown` (see `stats`).

use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::app::Shared;
use crate::sessions::ClientState;
use crate::snapshot::{Snapshot, CONSOLE_DB};

pub const CLIENT_CONNECTIONS: &str = "pgporter_client_connections";
pub const IDENTITY_CLIENTS: &str = "pgporter_identity_client_connections";
pub const SERVER_CONNECTIONS: &str = "pgporter_server_connections";
pub const SERVER_CONNECTIONS_BY_HOST: &str = "pgporter_host_server_connections";
pub const CLIENT_MAXWAIT: &str = "pgporter_client_maxwait_seconds";
pub const CLIENT_WAIT: &str = "pgporter_client_wait_seconds";
pub const QUERY_DURATION: &str = "pgporter_query_duration_seconds";
pub const TRANSACTIONS: &str = "pgporter_transactions_total";
pub const QUERIES: &str = "pgporter_queries_total";
pub const RECEIVED: &str = "pgporter_received_bytes_total";
pub const SENT: &str = "pgporter_sent_bytes_total";
pub const ASSIGNMENTS: &str = "pgporter_server_assignments_total";
pub const AUTH_FAILURES: &str = "pgporter_auth_failures_total";
pub const REJECTIONS: &str = "pgporter_limit_rejections_total";
pub const BACKEND_UP: &str = "pgporter_backend_up";
pub const BACKEND_ROLE: &str = "pgporter_backend_role";
pub const BACKEND_LAG: &str = "pgporter_backend_replication_lag_seconds";
pub const RELOADS: &str = "pgporter_reloads_total";
pub const READY: &str = "pgporter_ready";
pub const PAUSED: &str = "pgporter_database_paused";
pub const PARKED: &str = "pgporter_clients_parked";
pub const AUDIT_QUEUED: &str = "pgporter_audit_queue_events";
pub const AUDIT_QUEUE_SIZE: &str = "pgporter_audit_queue_size";
pub const AUDIT_STALLS: &str = "pgporter_audit_queue_full_total";

mod histogram;

pub use histogram::Histogram;

/// The app's histograms (see [`histogram`]).
pub struct Metrics {
    query: histogram::Family,
    wait: histogram::Family,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            query: histogram::Family::new(
                QUERY_DURATION,
                "Time from a request to its ReadyForQuery",
            ),
            wait: histogram::Family::new(
                CLIENT_WAIT,
                "Time clients waited for a server connection",
            ),
        }
    }

    /// The wait-time histogram of `database`.
    pub fn wait_histogram(&self, database: &str) -> Arc<Histogram> {
        self.wait.get(database)
    }

    /// The query-duration histogram of `database`.
    pub fn query_histogram(&self, database: &str) -> Arc<Histogram> {
        self.query.get(database)
    }

    /// Drop the series of databases that are gone: not in [databases] (a `*` database is not),
    /// no pool, no session. A reload that removes a database, or the freeing of a `*`
    /// database's pool, leaves them otherwise for good (a label set per name ever used).
    /// Their SHOW STATS counters go too, as PgBouncer 1.18 drops a removed database once it
    /// has no clients (checked live: `dropping database 'd1' as it does not exist anymore`,
    /// and it left SHOW STATS).
    pub fn forget_gone(&self, shared: &Shared) {
        let config = shared.config.load();
        // The names first: a pool or session that comes after them is of a name not among them
        // or is seen below.
        let mut names = self.query.databases();
        names.extend(self.wait.databases());
        names.extend(shared.stats.databases());
        names.sort();
        names.dedup();
        let mut in_use: std::collections::HashSet<Box<str>> = (shared.pools.all().iter())
            .map(|p| Box::<str>::from(&*p.key.db))
            .collect();
        in_use.extend(
            shared
                .sessions
                .all()
                .iter()
                .map(|s| Box::<str>::from(&*s.database)),
        );
        let gone = |db: &str| {
            !config.databases.contains_key(db)
                && !crate::admin::is_admin_database(db)
                && !in_use.contains(db)
        };
        for db in names.iter().filter(|d| gone(d)) {
            self.query.forget(db);
            self.wait.forget(db);
            shared.stats.forget_database(db);
        }
    }

    /// The whole /metrics page.
    pub fn render(&self, s: &Snapshot) -> String {
        let now = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&now, || {
            native(s);
            pgbouncer_compat(s);
        });
        let mut out = now.handle().render();
        self.wait.render(&mut out);
        self.query.render(&mut out);
        out
    }
}

/// A per-user counter with every auth_file user (and `extra` names) at 0 until counted: a
/// series that appears only with its first event makes rate()/increase() miss that event, and
/// alerts on it see "no data".
fn per_user<'a>(
    s: &'a Snapshot,
    counted: &'a [(String, u64)],
    extra: &[&'a str],
) -> std::collections::BTreeMap<&'a str, u64> {
    let mut all: std::collections::BTreeMap<&str, u64> =
        s.config.userlist.keys().map(|u| (u.as_str(), 0)).collect();
    all.extend(extra.iter().map(|u| (*u, 0)));
    all.extend(counted.iter().map(|(u, n)| (u.as_str(), *n)));
    all
}

/// pgporter's own metrics.
fn native(s: &Snapshot) {
    describe_gauge!(
        CLIENT_CONNECTIONS,
        "Client connections by database, user and state"
    );
    describe_gauge!(
        IDENTITY_CLIENTS,
        "Client connections by client identity and state"
    );
    describe_gauge!(SERVER_CONNECTIONS, "Server connections by pool and state");
    describe_gauge!(
        SERVER_CONNECTIONS_BY_HOST,
        "Server connections by backend host and state"
    );
    describe_gauge!(
        CLIENT_MAXWAIT,
        "Longest current wait for a server connection"
    );
    describe_counter!(TRANSACTIONS, "Transactions pooled");
    describe_counter!(QUERIES, "Queries pooled");
    describe_counter!(RECEIVED, "Bytes received from clients");
    describe_counter!(SENT, "Bytes sent to clients");
    describe_counter!(
        ASSIGNMENTS,
        "Times a server connection was assigned to a client"
    );
    describe_counter!(
        AUTH_FAILURES,
        "Failed client logins by user (unknown users: unknown)"
    );
    describe_counter!(REJECTIONS, "Connections refused by a limit, by user");
    describe_gauge!(
        BACKEND_UP,
        "1 when the backend host answered the last probe"
    );
    describe_gauge!(
        BACKEND_ROLE,
        "Backend host role (1 for the current role; unknown while the host is not up)"
    );
    describe_counter!(RELOADS, "Configuration reloads by outcome");
    describe_gauge!(READY, "1 when /readyz answers 200");
    describe_gauge!(PAUSED, "1 when the database is paused");
    describe_gauge!(
        PARKED,
        "Idle clients waiting in the lobby (taskless; also counted as idle)"
    );
    gauge!(PARKED).set(s.parked as f64);
    if let Some(q) = s.audit_queue {
        describe_gauge!(AUDIT_QUEUED, "Audit events waiting for the writer");
        describe_gauge!(AUDIT_QUEUE_SIZE, "audit_queue_size");
        describe_counter!(
            AUDIT_STALLS,
            "Times a session found the audit queue full and waited for the writer"
        );
        gauge!(AUDIT_QUEUED).set(q.queued as f64);
        gauge!(AUDIT_QUEUE_SIZE).set(q.capacity as f64);
        counter!(AUDIT_STALLS).absolute(q.stalls);
    }
    for state in [ClientState::Active, ClientState::Waiting, ClientState::Idle] {
        let mut by_pool: std::collections::BTreeMap<(std::borrow::Cow<'_, str>, &str), u64> =
            Default::default();
        let mut by_identity: std::collections::BTreeMap<&str, u64> = Default::default();
        for p in &s.pools {
            by_pool.insert((p.label(), &p.user), 0);
        }
        for c in s.clients.iter().filter(|c| !c.admin && c.state() == state) {
            let pool = crate::snapshot::pool_label(&c.database, c.endpoint);
            *by_pool.entry((pool, &c.pool_user)).or_default() += 1;
            *by_identity.entry(&c.user).or_default() += 1;
        }
        for ((db, user), n) in by_pool {
            gauge!(CLIENT_CONNECTIONS, "database" => db.to_string(), "user" => user.to_string(), "state" => state.as_str())
                .set(n as f64);
        }
        for (id, n) in by_identity {
            gauge!(IDENTITY_CLIENTS, "identity" => id.to_string(), "state" => state.as_str())
                .set(n as f64);
        }
    }
    let mut by_host: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    for p in &s.pools {
        let labels = [
            ("database", p.label().into_owned()),
            ("user", p.user.clone()),
        ];
        for (state, n) in [
            ("active", p.sv_active),
            ("idle", p.sv_idle),
            ("tested", p.sv_tested),
            ("login", p.sv_login),
        ] {
            gauge!(
                SERVER_CONNECTIONS,
                &[
                    ("database", labels[0].1.clone()),
                    ("user", labels[1].1.clone()),
                    ("state", state.to_string()),
                ]
            )
            .set(n as f64);
        }
        gauge!(CLIENT_MAXWAIT, &labels).set(p.maxwait.as_secs_f64());
    }
    for v in &s.servers {
        // As pgporter_server_connections names it.
        let state = match v.state {
            crate::snapshot::SERVER_LOGIN => "login",
            other => other,
        };
        *by_host.entry((v.addr.to_string(), state)).or_default() += 1;
    }
    for ((host, state), n) in by_host {
        gauge!(SERVER_CONNECTIONS_BY_HOST, "host" => host, "state" => state).set(n as f64);
    }
    // The console's pseudo-database is the pgbouncer_* families' (as pgbouncer_exporter
    // shows it), not pgporter's own: these count pooled traffic to PostgreSQL.
    for (db, t, _) in s.stats.iter().filter(|(db, ..)| db != CONSOLE_DB) {
        let l = [("database", db.clone())];
        counter!(TRANSACTIONS, &l).absolute(t.xact_count);
        counter!(QUERIES, &l).absolute(t.query_count);
        counter!(RECEIVED, &l).absolute(t.received);
        counter!(SENT, &l).absolute(t.sent);
        counter!(ASSIGNMENTS, &l).absolute(t.server_assignment_count);
    }
    for (user, n) in per_user(s, &s.auth_failures, &[crate::stats::UNKNOWN_USER]) {
        counter!(AUTH_FAILURES, "user" => user.to_string()).absolute(n);
    }
    for (user, n) in per_user(s, &s.rejections, &[]) {
        counter!(REJECTIONS, "user" => user.to_string()).absolute(n);
    }
    for (addr, h) in &s.hosts {
        gauge!(BACKEND_UP, "host" => addr.to_string()).set(f64::from(u8::from(h.up)));
        // A host not up (down, draining, superseded, not checked yet) claims no role: after a
        // failover the old primary, down, kept role="primary" at 1 and a sum over
        // role="primary" saw two. SHOW HOSTS keeps the role it was last seen in.
        let role = if h.up { h.role } else { "unknown" };
        gauge!(BACKEND_ROLE, "host" => addr.to_string(), "role" => role).set(1.0);
        if let Some(lag) = h.lag {
            gauge!(BACKEND_LAG, "host" => addr.to_string()).set(lag.as_secs_f64());
        }
    }
    counter!(RELOADS, "outcome" => "ok").absolute(s.reloads_ok);
    counter!(RELOADS, "outcome" => "failed").absolute(s.reloads_failed);
    gauge!(READY).set(f64::from(u8::from(s.readiness.is_ok())));
    for name in s.config.databases.keys() {
        gauge!(PAUSED, "database" => name.clone())
            .set(f64::from(u8::from(s.gates.is_paused(name))));
    }
}

/// The names pgbouncer_exporter publishes, so existing dashboards work unchanged.
fn pgbouncer_compat(s: &Snapshot) {
    describe_pgbouncer();
    describe_gauge!("pgbouncer_up", "The pooler answered the scrape");
    gauge!("pgbouncer_up").set(1.0);
    // With the console's pseudo-pool, as pgbouncer_exporter reads it from SHOW POOLS.
    for p in s.pools.iter().chain([&s.console_pool()]) {
        let l = [
            ("database", p.label().into_owned()),
            ("user", p.user.clone()),
        ];
        // Cancel requests are forwarded at once, never queued: the cancel gauges stay 0.
        let pool_gauges: [(&'static str, f64); 12] = [
            (
                "pgbouncer_pools_client_active_connections",
                p.cl_active as f64,
            ),
            (
                "pgbouncer_pools_client_waiting_connections",
                p.cl_waiting as f64,
            ),
            (
                "pgbouncer_pools_server_active_connections",
                p.sv_active as f64,
            ),
            ("pgbouncer_pools_server_idle_connections", p.sv_idle as f64),
            ("pgbouncer_pools_server_used_connections", 0.0),
            (
                "pgbouncer_pools_server_testing_connections",
                p.sv_tested as f64,
            ),
            (
                "pgbouncer_pools_server_login_connections",
                p.sv_login as f64,
            ),
            (
                "pgbouncer_pools_client_maxwait_seconds",
                p.maxwait.as_secs_f64(),
            ),
            ("pgbouncer_pools_client_active_cancel_connections", 0.0),
            ("pgbouncer_pools_client_waiting_cancel_connections", 0.0),
            ("pgbouncer_pools_server_active_cancel_connections", 0.0),
            ("pgbouncer_pools_server_being_canceled_connections", 0.0),
        ];
        for (name, v) in pool_gauges {
            gauge!(name, &l).set(v);
        }
    }
    for (db, t, _) in &s.stats {
        let l = [("database", db.clone())];
        // Session mode relays prepared statements untouched: nothing of pgporter's to count
        // as parses and binds.
        let counts = [
            t.query_count,
            t.xact_count,
            t.received,
            t.sent,
            t.server_assignment_count,
            0,
            0,
            0,
        ];
        let secs = |us: u64| us as f64 / 1e6;
        let times = [t.query_time_us, t.xact_time_us, t.wait_time_us].map(secs);
        for prefix in STATS_PREFIXES {
            for ((suffix, _), v) in STATS_COUNTERS.iter().zip(counts) {
                counter!(format!("{prefix}{suffix}"), &l).absolute(v);
            }
            for ((suffix, _), v) in STATS_SECONDS.iter().zip(times) {
                gauge!(format!("{prefix}{suffix}"), &l).set(v);
            }
        }
    }
    let set = &s.config.settings;
    for (name, db) in s.databases() {
        let l = [
            ("name", name.clone()),
            ("host", db.host_names()),
            ("port", db.first_host().port.to_string()),
            (
                "database",
                db.dbname.clone().unwrap_or_else(|| name.clone()),
            ),
            ("force_user", db.user.clone().unwrap_or_default()),
            // As the exporter labels it: SHOW DATABASES' pool_mode, empty when not set.
            (
                "pool_mode",
                db.pool_mode
                    .map_or("", crate::config::PoolMode::as_str)
                    .to_string(),
            ),
        ];
        let current = s.servers.iter().filter(|v| &v.database == name).count();
        database_gauges(
            &l,
            [
                current as f64,
                f64::from(db.pool_size.unwrap_or(set.default_pool_size)),
                f64::from(db.min_pool_size.unwrap_or(set.min_pool_size)),
                f64::from(s.config.reserve_pool_size(name)),
                f64::from(db.max_db_connections.unwrap_or(set.max_db_connections)),
                f64::from(u8::from(s.gates.paused_alone(name))),
                f64::from(u8::from(s.gates.is_disabled(name))),
            ],
        );
    }
    console_database(s);
    // SHOW LISTS, under pgbouncer_exporter's names.
    let list_names = [
        ("databases", "pgbouncer_databases"),
        ("users", "pgbouncer_users"),
        ("pools", "pgbouncer_pools"),
        ("free_clients", "pgbouncer_free_clients"),
        ("used_clients", "pgbouncer_used_clients"),
        ("login_clients", "pgbouncer_login_clients"),
        ("free_servers", "pgbouncer_free_servers"),
        ("used_servers", "pgbouncer_used_servers"),
        ("dns_names", "pgbouncer_cached_dns_names"),
        ("dns_zones", "pgbouncer_cached_dns_zones"),
        ("dns_queries", "pgbouncer_in_flight_dns_queries"),
    ];
    for (list, value) in s.lists() {
        if let Some((_, metric)) = list_names.iter().find(|(l, _)| *l == list) {
            gauge!(*metric).set(value as f64);
        }
    }
    gauge!("pgbouncer_version_info", "version" => crate::admin::VERSION).set(1.0);
    gauge!("pgbouncer_config_max_client_connections").set(f64::from(set.max_client_conn));
    gauge!("pgbouncer_config_max_user_connections").set(f64::from(set.max_user_connections));
}

/// One SHOW DATABASES row's gauges, in [`DATABASE_GAUGES`] order.
fn database_gauges(labels: &[(&'static str, String); 6], values: [f64; 7]) {
    for (metric, v) in DATABASE_GAUGES.into_iter().zip(values) {
        gauge!(metric, labels).set(v);
    }
}

const DATABASE_GAUGES: [&str; 7] = [
    "pgbouncer_databases_current_connections",
    "pgbouncer_databases_pool_size",
    "pgbouncer_databases_min_pool_size",
    "pgbouncer_databases_reserve_pool",
    "pgbouncer_databases_max_connections",
    "pgbouncer_databases_paused",
    "pgbouncer_databases_disabled",
];

/// The console's SHOW DATABASES row under pgbouncer_exporter's names (its labels as the
/// exporter makes them: host NULL -> empty).
fn console_database(s: &Snapshot) {
    let port = s.listen_port.to_string();
    let l = [
        ("name", CONSOLE_DB),
        ("host", ""),
        ("port", port.as_str()),
        ("database", CONSOLE_DB),
        ("force_user", CONSOLE_DB),
        ("pool_mode", crate::config::PoolMode::Statement.as_str()),
    ]
    .map(|(k, v)| (k, v.to_string()));
    let size = f64::from(crate::snapshot::CONSOLE_POOL_SIZE);
    let max = f64::from(s.config.settings.max_db_connections);
    database_gauges(&l, [0.0, size, 0.0, 0.0, max, 0.0, 0.0]);
}

/// HELP text of the pgbouncer_exporter families (its wording, shortened).
fn describe_pgbouncer() {
    const GAUGES: &[(&str, &str)] = &[
        ("pgbouncer_version_info", "The pooler's version"),
        (
            "pgbouncer_pools_client_active_connections",
            "Client connections linked to a server connection or idle with no queries waiting",
        ),
        (
            "pgbouncer_pools_client_waiting_connections",
            "Client connections waiting for a server connection",
        ),
        (
            "pgbouncer_pools_server_active_connections",
            "Server connections linked to a client",
        ),
        (
            "pgbouncer_pools_server_idle_connections",
            "Server connections idle and ready for a client",
        ),
        (
            "pgbouncer_pools_server_used_connections",
            "Server connections idle more than server_check_delay",
        ),
        (
            "pgbouncer_pools_server_testing_connections",
            "Server connections running server_reset_query or server_check_query",
        ),
        (
            "pgbouncer_pools_server_login_connections",
            "Server connections logging in",
        ),
        (
            "pgbouncer_pools_client_maxwait_seconds",
            "Age of the oldest unserved client connection",
        ),
        (
            "pgbouncer_pools_client_active_cancel_connections",
            "Client cancel requests forwarded to a server",
        ),
        (
            "pgbouncer_pools_client_waiting_cancel_connections",
            "Client cancel requests not yet forwarded",
        ),
        (
            "pgbouncer_pools_server_active_cancel_connections",
            "Server connections forwarding a cancel request",
        ),
        (
            "pgbouncer_pools_server_being_canceled_connections",
            "Server connections a cancel request is being sent for",
        ),
        (
            "pgbouncer_databases_current_connections",
            "Current server connections of the database",
        ),
        (
            "pgbouncer_databases_pool_size",
            "Maximum server connections per pool",
        ),
        (
            "pgbouncer_databases_min_pool_size",
            "Minimum server connections per pool",
        ),
        (
            "pgbouncer_databases_reserve_pool",
            "Extra connections allowed to a waiting pool",
        ),
        (
            "pgbouncer_databases_max_connections",
            "Maximum server connections of the database",
        ),
        ("pgbouncer_databases_paused", "1 if the database is paused"),
        (
            "pgbouncer_databases_disabled",
            "1 if the database is disabled",
        ),
        ("pgbouncer_databases", "Count of databases"),
        ("pgbouncer_users", "Count of users"),
        ("pgbouncer_pools", "Count of pools"),
        ("pgbouncer_free_clients", "Count of free clients"),
        ("pgbouncer_used_clients", "Count of used clients"),
        ("pgbouncer_login_clients", "Count of clients in login state"),
        ("pgbouncer_free_servers", "Count of free servers"),
        ("pgbouncer_used_servers", "Count of used servers"),
        (
            "pgbouncer_cached_dns_names",
            "Count of DNS names in the cache",
        ),
        (
            "pgbouncer_cached_dns_zones",
            "Count of DNS zones in the cache",
        ),
        (
            "pgbouncer_in_flight_dns_queries",
            "Count of in-flight DNS queries",
        ),
        (
            "pgbouncer_config_max_client_connections",
            "Configured max_client_conn",
        ),
        (
            "pgbouncer_config_max_user_connections",
            "Configured max_user_connections",
        ),
    ];
    const COUNTERS: &[(&str, &str)] = &[];
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    for prefix in STATS_PREFIXES {
        for (suffix, help) in STATS_COUNTERS {
            describe_counter!(format!("{prefix}{suffix}"), help);
        }
        for (suffix, help) in STATS_SECONDS {
            describe_gauge!(format!("{prefix}{suffix}"), help);
        }
    }
}

/// The SHOW STATS totals per database, under pgbouncer_exporter's names before 0.11
/// (`pgbouncer_stats_*`) and since (`pgbouncer_stats_totals_*`, from SHOW STATS_TOTALS):
/// dashboards are built on either.
const STATS_PREFIXES: [&str; 2] = ["pgbouncer_stats_", "pgbouncer_stats_totals_"];

const STATS_COUNTERS: [(&str, &str); 8] = [
    ("queries_pooled_total", "Total SQL queries pooled"),
    (
        "sql_transactions_pooled_total",
        "Total SQL transactions pooled",
    ),
    ("received_bytes_total", "Total bytes received from clients"),
    ("sent_bytes_total", "Total bytes sent to clients"),
    (
        "server_assignments_total",
        "Total times a server was assigned to a client",
    ),
    ("client_parses_total", "Total Parse messages from clients"),
    (
        "server_parses_total",
        "Total Parse messages sent to servers",
    ),
    ("binds_total", "Total Bind messages from clients"),
];

/// Float-valued totals: the metrics crate's counters are integers, so these are gauges that
/// only grow (rate() works the same).
const STATS_SECONDS: [(&str, &str); 3] = [
    (
        "queries_duration_seconds_total",
        "Total time spent on queries",
    ),
    (
        "server_in_transaction_seconds_total",
        "Total time server connections spent in transactions",
    ),
    (
        "client_wait_seconds_total",
        "Time clients spent waiting for a server",
    ),
];

/// How often the series of databases that are gone are dropped (see [`Metrics::forget_gone`]).
const UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Drop the series of databases that are gone, every few seconds until shutdown.
pub async fn run_upkeep(shared: Arc<Shared>) {
    let mut ticks = crate::shutdown::Ticks::every(UPKEEP_PERIOD);
    while ticks.next(&shared.shutdown).await {
        shared.metrics.forget_gone(&shared);
    }
}

/// Every stats_period: close the averaging period and, with log_stats, log one line (as
/// PgBouncer does).
pub async fn run_stats_period(shared: Arc<Shared>) {
    loop {
        let period = shared.config.load().settings.stats_period;
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let a = shared.stats.roll();
        shared.systemd.stats(&a);
        if shared.config.load().settings.log_stats {
            tracing::info!(
                xacts_per_s = a.xact_count,
                queries_per_s = a.query_count,
                in_bytes_per_s = a.recv,
                out_bytes_per_s = a.sent,
                xact_us = a.xact_time,
                query_us = a.query_time,
                wait_us = a.wait_time,
                "stats"
            );
        }
    }
}

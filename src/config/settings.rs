//! [pgbouncer] / [pgporter] keys -> typed [`Settings`] with PgBouncer's defaults.
//!
//! Every field is named exactly like its ini key. "reload: yes" marks keys a RELOAD applies.
//!
//! Value syntax: integers as PgBouncer reads them (C `strtol` base 0: `10`, `0x10` = 16,
//! `010` = 8, optional sign; see [`values::parse_strtol`]); booleans yes/no, on/off, true/false (any
//! case) or an integer, 0 = false (PgBouncer's booleans are integers: `2` is true); durations are seconds as in PgBouncer (`15`, `0.5`) or carry a unit (`500ms`, `30s`,
//! `2min`, `1h`); lists are comma-separated. Known PgBouncer keys that pgporter does not
//! implement yet, and unknown keys, are warnings, never errors.

use std::time::Duration;

use super::ciphers::{parse_ciphers, parse_ecdh_curve, parse_tls13_ciphers};
use super::identity::{parse_audit_statements, parse_custom_guc, parse_positive};
pub use super::identity::{AuditSettings, AuditStatements, IdentitySettings};
use super::limits::{parse_pool_share, PoolShare};
use super::security::{
    parse_protocols, parse_sslmode, SslMode, TlsCiphers, TlsProtocols, DEFAULT_AUTH_QUERY,
};
use super::{Cidr, ConfigError, ConfigWarning, RawIni};

mod unread;
mod values;
use unread::{section_warnings, NOT_IMPLEMENTED, NO_EFFECT};
pub(super) use values::{
    non_empty, parse_auth_type, parse_bool, parse_duration, parse_iterations, parse_list,
    parse_listen_addr, parse_log_format, parse_millis, parse_mode, parse_nonzero_duration,
    parse_packet_size, parse_pool_mode, parse_strtol, parse_strtol_u16, parse_strtol_u32,
    parse_u16, parse_u32,
};

/// How clients authenticate to pgporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    ScramSha256,
    Md5,
    Plain,
    Trust,
    /// The method comes from the first matching auth_hba_file line.
    Hba,
    /// TLS client certificate; the user name is the certificate's CN.
    Cert,
}

/// When a server connection is given back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// When the client leaves.
    Session,
    /// When a transaction ends (ReadyForQuery `I`) and the client has nothing in flight and
    /// no named prepared statement open.
    Transaction,
    /// As `Transaction`, and a transaction left open after a request (ReadyForQuery `T` or
    /// `E`: a transaction block) ends the session, as in PgBouncer. A multi-statement Query
    /// or an extended-protocol batch runs as one implicit transaction and is allowed.
    Statement,
}

impl PoolMode {
    /// The name PgBouncer's configuration and SHOW commands use.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }

    /// Whether a server connection goes back to the pool between a session's transactions.
    pub fn releases_between_transactions(self) -> bool {
        self != PoolMode::Session
    }
}

/// The warning for a min_pool_size, in [pgbouncer] or a [databases] entry, under tagging.
pub(crate) const MIN_POOL_TAGGED: &str = "min_pool_size is not applied with identity_tagging on \
     (a server connection serves one identity; none is known before a client comes)";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Comma-separated addresses, `*` = all IPv4+IPv6. Default `127.0.0.1` (PgBouncer: empty = none;
    /// we default to loopback). reload: no
    pub listen_addr: Vec<String>,
    /// Default 6432. reload: no
    pub listen_port: u16,
    /// Default `/tmp`; empty = no unix socket. reload: no
    pub unix_socket_dir: String,
    /// Default 0o777. reload: no
    pub unix_socket_mode: u32,
    /// Group owning the unix socket (a name in /etc/group, or a number); empty = the
    /// process's. reload: no
    pub unix_socket_group: String,
    /// Default scram-sha-256 (PgBouncer: md5). reload: yes
    pub auth_type: AuthType,
    /// userlist.txt path, relative to the ini's directory. reload: yes
    pub auth_file: Option<String>,
    /// Default session. reload: yes
    pub pool_mode: PoolMode,
    /// Default 100. reload: yes
    pub max_client_conn: u32,
    /// Default 20. reload: yes
    pub default_pool_size: u32,
    /// Default 0. reload: yes
    pub min_pool_size: u32,
    /// Default 0 (no limit). reload: yes
    pub max_db_connections: u32,
    /// Default 0 (no limit). reload: yes
    pub max_user_connections: u32,
    /// Client connections per database; default 0 (no limit). reload: yes
    pub max_db_client_connections: u32,
    /// Client connections per login user; default 0 (no limit). reload: yes
    pub max_user_client_connections: u32,
    /// Extra connections per pool for clients waiting past reserve_pool_timeout; default 0.
    /// reload: yes
    pub reserve_pool_size: u32,
    /// Default 5 s; 0 = never use the reserve pool. reload: yes
    pub reserve_pool_timeout: Duration,
    /// Most of one pool a single client identity may hold (`5` or `50%`); default none
    /// (pgporter key). reload: yes
    pub max_user_pool_share: Option<PoolShare>,
    /// Default true: a freed server connection goes to the waiting identity holding the
    /// fewest connections of the pool; false = first come, first served (pgporter key).
    /// reload: yes
    pub fair_sharing: bool,
    /// Default `DISCARD ALL`; empty = no reset. reload: yes
    pub server_reset_query: String,
    /// Run server_reset_query after each transaction in transaction mode too (session mode
    /// always runs it). Default off. reload: yes
    pub server_reset_query_always: bool,
    /// Transaction mode: how many named prepared statements pgporter keeps on each server
    /// connection for its clients, which then share connections (0: a client with one open
    /// keeps its connection instead). Default 200, as PgBouncer 1.22+. reload: yes (a
    /// session keeps the way it started with)
    pub max_prepared_statements: u32,
    /// Run on a connection idle longer than `server_check_delay` before a client gets it;
    /// one that fails it is closed and another taken. Default `select 1`; empty = no check.
    /// reload: yes
    pub server_check_query: String,
    /// Default 30 s; 0 = check every reused connection. reload: yes
    pub server_check_delay: Duration,
    /// Sessions whose server connection must be closed (RECONNECT, a reload that changed
    /// their database) end once it is idle instead of at their end. Default false. reload: yes
    pub server_fast_close: bool,
    /// Default 15 s. reload: yes
    pub server_connect_timeout: Duration,
    /// Default 600 s; 0 = never. reload: yes
    pub server_idle_timeout: Duration,
    /// Default 3600 s; 0 = one client per connection (closed when it leaves). reload: yes
    pub server_lifetime: Duration,
    /// Default 120 s; 0 = wait forever. reload: yes
    pub query_wait_timeout: Duration,
    /// Default 60 s. reload: yes
    pub client_login_timeout: Duration,
    /// A session whose server is busy or in a transaction this long since the client's last
    /// request ends (PgBouncer's). 0 = off (default). reload: yes (running sessions too)
    pub query_timeout: Duration,
    /// A session idle inside a transaction this long ends. 0 = off (default). reload: yes
    /// (running sessions too)
    pub idle_transaction_timeout: Duration,
    /// A transaction running this long (from the request that started it) ends the session,
    /// as in PgBouncer 1.25. 0 = off. reload: yes
    pub transaction_timeout: Duration,
    /// A logged-in client silent this long without a server connection is closed (as
    /// PgBouncer, not one holding a server). 0 = off (default). reload: yes
    pub client_idle_timeout: Duration,
    /// Pools of databases reached through the `*` entry are freed after this long unused.
    /// Default 3600 s (as PgBouncer); 0 = never. reload: yes
    pub autodb_idle_timeout: Duration,
    /// Startup parameters accepted and ignored (lower-cased). Default empty. reload: yes
    pub ignore_startup_parameters: Vec<String>,
    /// Reported parameters tracked per client besides PgBouncer's own (and IntervalStyle):
    /// what a client SETs follows it to its next server connection, and a client that did
    /// not ask for one gets the connection's login value back. Default empty. reload: yes
    pub track_extra_parameters: Vec<String>,
    /// A NoticeResponse every client gets once logged in (PgBouncer 1.25); empty = none.
    /// reload: yes
    pub login_notify_message: String,
    /// Free a configured database's pool that has had no client and no server connection
    /// this long (PgBouncer 1.25); 0 = never (default). reload: yes
    pub pool_idle_timeout: Duration,
    /// A client waiting this long for a server connection gets one NOTICE saying it is
    /// queued (PgBouncer 1.22+); 0 = never. Default 5 s (as PgBouncer). reload: yes
    pub query_wait_notify: Duration,
    /// Default false. reload: yes
    pub application_name_add_host: bool,
    /// SO_KEEPALIVE on client and server TCP sockets. Default true (as PgBouncer). reload:
    /// yes (new sockets)
    pub tcp_keepalive: bool,
    /// TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT; 0 = the OS default. reload: yes (new sockets)
    pub tcp_keepidle: Duration,
    pub tcp_keepintvl: Duration,
    pub tcp_keepcnt: u32,
    /// TCP_USER_TIMEOUT on client and server sockets; 0 = the OS default. reload: yes (new
    /// sockets)
    pub tcp_user_timeout: Duration,
    /// SO_SNDBUF and SO_RCVBUF of client and server sockets, in bytes; 0 = the OS default.
    /// reload: yes (new sockets)
    pub tcp_socket_buffer: u32,
    /// listen(2) backlog of the TCP listeners. Default 128 (as PgBouncer). reload: no
    pub listen_backlog: u32,
    /// SO_REUSEPORT on the TCP listeners: several pgporter processes may share the port.
    /// Default false. reload: no
    pub so_reuseport: bool,
    /// Reuse the least recently used idle server connection instead of the most recently
    /// used one (spreads load over them; the default lets the others idle out), as
    /// PgBouncer's. Default false. reload: yes
    pub server_round_robin: bool,
    /// Refuse simple Query messages (one packet, many statements): the session ends with
    /// FATAL "PQexec disallowed", as PgBouncer's. Default false. reload: yes
    pub disable_pqexec: bool,
    /// This process's id among its `[peers]` (cancel keys carry it); 0 = no peering.
    /// Default 0. reload: no
    pub peer_id: u16,
    /// Default true. reload: yes
    pub log_connections: bool,
    /// Default true. reload: yes
    pub log_disconnections: bool,
    /// Default true. reload: yes
    pub log_pooler_errors: bool,
    /// Users allowed on the admin console. reload: yes
    pub admin_users: Vec<String>,
    /// Users allowed SHOW on the admin console. reload: yes
    pub stats_users: Vec<String>,
    /// Log file in addition to stdout; reopened by path on SIGHUP / RELOAD. reload: no
    pub logfile: Option<String>,
    /// Pid file. reload: no
    pub pidfile: Option<String>,
    /// Largest client/server message accepted, bytes. Default 1 GiB - 1 (PostgreSQL's own limit);
    /// PgBouncer's `max_packet_size` key. reload: yes
    pub max_packet_size: u32,
    /// Default 15 s. How long a reset / check query may take before the server connection is
    /// closed instead of reused (pgporter key). reload: yes
    pub server_reset_timeout: Duration,
    /// Default 10 s; PgBouncer's `shutdown_wait_timeout`-like drain bound (pgporter key). reload: yes
    pub shutdown_wait_timeout: Duration,
    /// `host:port` of the HTTP listener for /metrics, /healthz, /readyz; empty = off (default).
    /// pgporter key. reload: no
    pub metrics_listen_addr: Option<String>,
    /// `text` (default) or `json` log lines on stdout. pgporter key. reload: no
    pub log_format: LogFormat,
    /// Log verbosity as PgBouncer's (`-v` per step): 1 = debug, 2 = trace; `-v`/`-q` and
    /// RUST_LOG still win. Default 0. reload: no
    pub verbose: u32,
    /// Period of the stats log line and of SHOW STATS averages. Default 60 s. reload: yes
    pub stats_period: Duration,
    /// Write the periodic stats line. Default true. reload: yes
    pub log_stats: bool,
    /// Runtime worker threads; 0 (default) = auto: 1 on machines with up to 4 CPUs (where the
    /// pooler shares CPUs with PostgreSQL or the application, and a second thread costs more in
    /// cross-thread wake-ups than it brings), half the CPUs above that. pgporter key. reload: no
    pub worker_threads: u32,
    /// TLS toward clients. Default disable. reload: yes (a reload rebuilds the TLS contexts)
    pub client_tls_sslmode: SslMode,
    /// Private key (PEM) for client TLS; required unless client_tls_sslmode = disable. reload: yes
    pub client_tls_key_file: Option<String>,
    /// Certificate chain (PEM) for client TLS; required unless disabled. reload: yes
    pub client_tls_cert_file: Option<String>,
    /// CA (PEM) for client certificates (verify-ca/full, cert auth). Default unset. reload: yes
    pub client_tls_ca_file: Option<String>,
    /// Default `secure` (TLS 1.2 and 1.3; rustls has nothing older). reload: yes
    pub client_tls_protocols: TlsProtocols,
    /// Default `default` (rustls's suites); or rustls suite names. reload: yes
    pub client_tls_ciphers: TlsCiphers,
    /// TLS 1.3 suites (rustls names), replacing those `client_tls_ciphers` chose; None =
    /// theirs. Default None. reload: yes
    pub client_tls13_ciphers: Option<Vec<String>>,
    /// Key exchange groups (rustls names) clients may use; None = rustls's default (all).
    /// Default None. reload: yes
    pub client_tls_ecdhcurve: Option<Vec<String>>,
    /// TLS toward PostgreSQL. Default prefer (as PgBouncer). reload: yes
    pub server_tls_sslmode: SslMode,
    /// CA (PEM) to verify PostgreSQL's certificate; required for verify-ca/verify-full. reload: yes
    pub server_tls_ca_file: Option<String>,
    /// Client key (PEM) presented to PostgreSQL; default unset. reload: yes
    pub server_tls_key_file: Option<String>,
    /// Client certificate (PEM) presented to PostgreSQL; default unset. reload: yes
    pub server_tls_cert_file: Option<String>,
    /// Default `secure`. reload: yes
    pub server_tls_protocols: TlsProtocols,
    /// Default `default`. reload: yes
    pub server_tls_ciphers: TlsCiphers,
    /// As `client_tls13_ciphers`, toward PostgreSQL. reload: yes
    pub server_tls13_ciphers: Option<Vec<String>>,
    /// pg_hba.conf-style rules for auth_type = hba. Default unset. reload: yes
    pub auth_hba_file: Option<String>,
    /// pg_ident.conf-style maps for cert auth (hba `map=`). Default unset. reload: yes
    pub auth_ident_file: Option<String>,
    /// Runs auth_query for users missing from auth_file. Default unset (off). reload: yes
    pub auth_user: Option<String>,
    /// Default `SELECT usename, passwd FROM pg_shadow WHERE usename=$1`. reload: yes
    pub auth_query: String,
    /// auth_query's [databases] entry; default unset = the client's. reload: yes
    pub auth_dbname: Option<String>,
    /// auth_query answers (found or not) are reused this long. Default 10 s. reload: yes
    pub auth_query_cache_ttl: Duration,
    /// A failed login waits this long before its error. Default 0.5 s (pgporter). reload: yes
    pub auth_failure_delay: Duration,
    /// PBKDF2 iterations of the SCRAM verifiers pgporter builds from plaintext passwords
    /// (auth_file, auth_query); at least 1. Default 4096 (PgBouncer 1.22+'s). reload: yes (the
    /// verifiers are built again)
    pub scram_iterations: u32,
    /// Routing settings (pgporter keys, issue 5).
    pub routing: RoutingSettings,
    /// Identity (pgporter keys, see README "Identity and audit").
    pub identity: IdentitySettings,
    /// Audit log (pgporter keys).
    pub audit: AuditSettings,
    /// PROXY protocol v1/v2 accepted only from these networks; empty = off. reload: yes
    pub proxy_protocol_trusted: Vec<Cidr>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
    /// PgBouncer 1.18's line shape (`crate::logformat`), for tools that parse its log.
    Pgbouncer,
}

/// Read/write routing: the read-only listener, health checks, failover (pgporter keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    /// A second port on `listen_addr` where every database resolves to its standby pool.
    /// Default: none; `0` picks a free port (tests). reload: no
    pub readonly_listen_port: Option<u16>,
    /// How often each monitored backend host is checked. Default 1 s. reload: yes (the
    /// running monitors check at once, then at the new period)
    pub health_check_period: Duration,
    /// A standby replaying further behind than this leaves rotation. Default 0 = no limit.
    /// reload: yes (the running monitors judge their hosts at once)
    pub max_standby_lag: Duration,
    /// The same in bytes of received-but-unreplayed WAL. Default 0 = no limit. reload: yes
    /// (the running monitors judge their hosts at once)
    pub max_standby_lag_bytes: u64,
    /// How long a new session waits for an eligible host (a primary after a failover). Default
    /// 30 s; 0 = fail at once. reload: yes (sessions already waiting follow it)
    pub failover_wait_timeout: Duration,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            readonly_listen_port: None,
            health_check_period: Duration::from_secs(1),
            max_standby_lag: Duration::ZERO,
            max_standby_lag_bytes: 0,
            failover_wait_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_addr: vec!["127.0.0.1".into()],
            listen_port: 6432,
            unix_socket_dir: "/tmp".into(),
            unix_socket_mode: 0o777,
            unix_socket_group: String::new(),
            auth_type: AuthType::ScramSha256,
            auth_file: None,
            pool_mode: PoolMode::Session,
            max_client_conn: 100,
            default_pool_size: 20,
            min_pool_size: 0,
            max_db_connections: 0,
            max_user_connections: 0,
            max_db_client_connections: 0,
            max_user_client_connections: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            max_user_pool_share: None,
            fair_sharing: true,
            server_reset_query: "DISCARD ALL".into(),
            server_reset_query_always: false,
            max_prepared_statements: 200,
            server_check_query: "select 1".into(),
            server_check_delay: Duration::from_secs(30),
            server_fast_close: false,
            server_connect_timeout: Duration::from_secs(15),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            query_wait_timeout: Duration::from_secs(120),
            client_login_timeout: Duration::from_secs(60),
            query_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            transaction_timeout: Duration::ZERO,
            client_idle_timeout: Duration::ZERO,
            autodb_idle_timeout: Duration::from_secs(3600),
            ignore_startup_parameters: Vec::new(),
            track_extra_parameters: Vec::new(),
            login_notify_message: String::new(),
            pool_idle_timeout: Duration::ZERO,
            query_wait_notify: Duration::from_secs(5),
            application_name_add_host: false,
            tcp_keepalive: true,
            listen_backlog: 128,
            tcp_user_timeout: Duration::ZERO,
            tcp_socket_buffer: 0,
            so_reuseport: false,
            peer_id: 0,
            disable_pqexec: false,
            server_round_robin: false,
            tcp_keepidle: Duration::ZERO,
            tcp_keepintvl: Duration::ZERO,
            tcp_keepcnt: 0,
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            logfile: None,
            pidfile: None,
            max_packet_size: (1 << 30) - 1,
            server_reset_timeout: Duration::from_secs(15),
            shutdown_wait_timeout: Duration::from_secs(10),
            metrics_listen_addr: None,
            log_format: LogFormat::Text,
            verbose: 0,
            stats_period: Duration::from_secs(60),
            log_stats: true,
            worker_threads: 0,
            client_tls_sslmode: SslMode::Disable,
            client_tls_key_file: None,
            client_tls_cert_file: None,
            client_tls_ca_file: None,
            client_tls_protocols: TlsProtocols::default(),
            client_tls_ciphers: TlsCiphers::Default,
            client_tls13_ciphers: None,
            client_tls_ecdhcurve: None,
            server_tls_sslmode: SslMode::Prefer,
            server_tls_ca_file: None,
            server_tls_key_file: None,
            server_tls_cert_file: None,
            server_tls_protocols: TlsProtocols::default(),
            server_tls_ciphers: TlsCiphers::Default,
            server_tls13_ciphers: None,
            auth_hba_file: None,
            auth_ident_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: None,
            auth_query_cache_ttl: Duration::from_secs(10),
            auth_failure_delay: Duration::from_millis(500),
            scram_iterations: crate::auth::scram::verifier::DEFAULT_ITERATIONS,
            routing: RoutingSettings::default(),
            identity: IdentitySettings::default(),
            audit: AuditSettings::default(),
            proxy_protocol_trusted: Vec::new(),
        }
    }
}

/// Largest `max_packet_size`: PostgreSQL's own message limit, 1 GiB - 1.
pub const MAX_PACKET_SIZE_LIMIT: u32 = (1 << 30) - 1;

impl Settings {
    /// The number of runtime worker threads `worker_threads` resolves to on this machine.
    pub fn effective_worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return usize::try_from(self.worker_threads).unwrap_or(1);
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus <= 4 {
            1
        } else {
            cpus / 2
        }
    }

    /// Typed settings from the [pgbouncer] (or [pgporter]) section; bad values go to `errors`,
    /// unknown keys to `warnings`. A repeated key: the last one wins (every occurrence is
    /// still validated).
    pub fn from_ini(
        raw: &RawIni,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Settings {
        section_warnings(raw, warnings);
        let mut settings = Settings::default();
        for e in raw.section("pgbouncer") {
            let message = match settings.apply(&e.key, &e.value) {
                Ok(true) => continue,
                Ok(false) if NOT_IMPLEMENTED.contains(&e.key.as_str()) => {
                    "not implemented yet, ignored".to_string()
                }
                Ok(false) => match NO_EFFECT.iter().find(|(k, _)| *k == e.key) {
                    Some((_, why)) => format!("no effect in pgporter ({why}), ignored"),
                    None => "unknown key, ignored".to_string(),
                },
                Err(message) => {
                    errors.push(ConfigError {
                        file: e.file.clone(),
                        line: e.line,
                        key: e.key.clone(),
                        message,
                    });
                    continue;
                }
            };
            warnings.push(ConfigWarning {
                file: e.file.clone(),
                line: e.line,
                key: e.key.clone(),
                message,
            });
        }
        if settings.min_pool_size > 0 && settings.identity.identity_tagging {
            if let Some(e) = raw.section("pgbouncer").find(|e| e.key == "min_pool_size") {
                warnings.push(ConfigWarning {
                    file: e.file.clone(),
                    line: e.line,
                    key: e.key.clone(),
                    message: MIN_POOL_TAGGED.into(),
                });
            }
        }
        settings
    }

    /// Set the field named `key` from `v`; `Ok(false)` if no field has that name.
    pub(crate) fn apply(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "listen_addr" => self.listen_addr = parse_list(v),
            "listen_port" => self.listen_port = parse_strtol_u16(v)?,
            "unix_socket_dir" => self.unix_socket_dir = v.to_string(),
            "unix_socket_mode" => self.unix_socket_mode = parse_mode(v)?,
            "unix_socket_group" => self.unix_socket_group = v.trim().to_string(),
            "auth_type" => self.auth_type = parse_auth_type(v)?,
            "auth_file" => self.auth_file = non_empty(v),
            "pool_mode" => self.pool_mode = parse_pool_mode(v)?,
            "max_client_conn" => self.max_client_conn = parse_strtol_u32(v)?,
            "default_pool_size" => self.default_pool_size = parse_strtol_u32(v)?,
            "min_pool_size" => self.min_pool_size = parse_strtol_u32(v)?,
            "max_db_connections" => self.max_db_connections = parse_strtol_u32(v)?,
            "max_user_connections" => self.max_user_connections = parse_strtol_u32(v)?,
            "max_db_client_connections" => self.max_db_client_connections = parse_strtol_u32(v)?,
            "max_user_client_connections" => {
                self.max_user_client_connections = parse_strtol_u32(v)?
            }
            "reserve_pool_size" => self.reserve_pool_size = parse_strtol_u32(v)?,
            "reserve_pool_timeout" => self.reserve_pool_timeout = parse_duration(v)?,
            "max_user_pool_share" => self.max_user_pool_share = parse_pool_share(v)?,
            "fair_sharing" => self.fair_sharing = parse_bool(v)?,
            "server_reset_query" => self.server_reset_query = v.to_string(),
            "server_reset_query_always" => self.server_reset_query_always = parse_bool(v)?,
            "max_prepared_statements" => self.max_prepared_statements = parse_strtol_u32(v)?,
            "server_check_query" => self.server_check_query = v.to_string(),
            "server_check_delay" => self.server_check_delay = parse_duration(v)?,
            "server_fast_close" => self.server_fast_close = parse_bool(v)?,
            "server_connect_timeout" => self.server_connect_timeout = parse_duration(v)?,
            "server_idle_timeout" => self.server_idle_timeout = parse_duration(v)?,
            "server_lifetime" => self.server_lifetime = parse_duration(v)?,
            "query_wait_timeout" => self.query_wait_timeout = parse_duration(v)?,
            "client_login_timeout" => self.client_login_timeout = parse_duration(v)?,
            "query_timeout" => self.query_timeout = parse_duration(v)?,
            "idle_transaction_timeout" => self.idle_transaction_timeout = parse_duration(v)?,
            "transaction_timeout" => self.transaction_timeout = parse_duration(v)?,
            "client_idle_timeout" => self.client_idle_timeout = parse_duration(v)?,
            "autodb_idle_timeout" => self.autodb_idle_timeout = parse_duration(v)?,
            "track_extra_parameters" => self.track_extra_parameters = parse_list(v),
            "login_notify_message" => self.login_notify_message = v.to_string(),
            "pool_idle_timeout" => self.pool_idle_timeout = parse_duration(v)?,
            "query_wait_notify" => self.query_wait_notify = parse_duration(v)?,
            "ignore_startup_parameters" => {
                self.ignore_startup_parameters =
                    parse_list(v).iter().map(|p| p.to_lowercase()).collect();
            }
            "application_name_add_host" => self.application_name_add_host = parse_bool(v)?,
            "tcp_keepalive" => self.tcp_keepalive = parse_bool(v)?,
            "listen_backlog" => self.listen_backlog = parse_strtol_u32(v)?,
            "tcp_user_timeout" => self.tcp_user_timeout = parse_millis(v)?,
            "tcp_socket_buffer" => self.tcp_socket_buffer = parse_strtol_u32(v)?,
            "so_reuseport" => self.so_reuseport = parse_bool(v)?,
            "peer_id" => self.peer_id = super::peers::parse_peer_id(v)?,
            "disable_pqexec" => self.disable_pqexec = parse_bool(v)?,
            "server_round_robin" => self.server_round_robin = parse_bool(v)?,
            "tcp_keepidle" => self.tcp_keepidle = parse_duration(v)?,
            "tcp_keepintvl" => self.tcp_keepintvl = parse_duration(v)?,
            "tcp_keepcnt" => self.tcp_keepcnt = parse_strtol_u32(v)?,
            "log_connections" => self.log_connections = parse_bool(v)?,
            "log_disconnections" => self.log_disconnections = parse_bool(v)?,
            "log_pooler_errors" => self.log_pooler_errors = parse_bool(v)?,
            "admin_users" => self.admin_users = parse_list(v),
            "stats_users" => self.stats_users = parse_list(v),
            "logfile" => self.logfile = non_empty(v),
            "pidfile" => self.pidfile = non_empty(v),
            "max_packet_size" => self.max_packet_size = parse_packet_size(v)?,
            "server_reset_timeout" => self.server_reset_timeout = parse_duration(v)?,
            "shutdown_wait_timeout" => self.shutdown_wait_timeout = parse_duration(v)?,
            "metrics_listen_addr" => self.metrics_listen_addr = parse_listen_addr(v)?,
            "log_format" => self.log_format = parse_log_format(v)?,
            "verbose" => self.verbose = parse_strtol_u32(v)?,
            "stats_period" => self.stats_period = parse_nonzero_duration(v)?,
            "log_stats" => self.log_stats = parse_bool(v)?,
            "worker_threads" => self.worker_threads = parse_strtol_u32(v)?,
            "client_tls_sslmode" => self.client_tls_sslmode = parse_sslmode(v)?,
            "client_tls_key_file" => self.client_tls_key_file = non_empty(v),
            "client_tls_cert_file" => self.client_tls_cert_file = non_empty(v),
            "client_tls_ca_file" => self.client_tls_ca_file = non_empty(v),
            "client_tls_protocols" => self.client_tls_protocols = parse_protocols(v)?,
            "client_tls_ciphers" => self.client_tls_ciphers = parse_ciphers(v)?,
            "client_tls13_ciphers" => self.client_tls13_ciphers = parse_tls13_ciphers(v)?,
            "client_tls_ecdhcurve" => self.client_tls_ecdhcurve = parse_ecdh_curve(v)?,
            "server_tls_sslmode" => self.server_tls_sslmode = parse_sslmode(v)?,
            "server_tls_ca_file" => self.server_tls_ca_file = non_empty(v),
            "server_tls_key_file" => self.server_tls_key_file = non_empty(v),
            "server_tls_cert_file" => self.server_tls_cert_file = non_empty(v),
            "server_tls_protocols" => self.server_tls_protocols = parse_protocols(v)?,
            "server_tls_ciphers" => self.server_tls_ciphers = parse_ciphers(v)?,
            "server_tls13_ciphers" => self.server_tls13_ciphers = parse_tls13_ciphers(v)?,
            "auth_hba_file" => self.auth_hba_file = non_empty(v),
            "auth_ident_file" => self.auth_ident_file = non_empty(v),
            "auth_user" => self.auth_user = non_empty(v),
            "auth_query" => self.auth_query = v.to_string(),
            "auth_dbname" => self.auth_dbname = non_empty(v),
            "auth_query_cache_ttl" => self.auth_query_cache_ttl = parse_duration(v)?,
            "auth_failure_delay" => self.auth_failure_delay = parse_duration(v)?,
            "scram_iterations" => self.scram_iterations = parse_iterations(v)?,
            "readonly_listen_port" => {
                self.routing.readonly_listen_port = match v.trim() {
                    "" => None,
                    port => Some(parse_strtol_u16(port)?),
                }
            }
            "health_check_period" => {
                self.routing.health_check_period = match parse_duration(v)? {
                    d if d.is_zero() => return Err("must be greater than 0".into()),
                    d => d,
                }
            }
            "max_standby_lag" => self.routing.max_standby_lag = parse_duration(v)?,
            "max_standby_lag_bytes" => {
                self.routing.max_standby_lag_bytes = parse_strtol(v, u64::MAX)?;
            }
            "failover_wait_timeout" => self.routing.failover_wait_timeout = parse_duration(v)?,
            "identity_tagging" => self.identity.identity_tagging = parse_bool(v)?,
            "identity_guc" => self.identity.identity_guc = parse_custom_guc(v, false)?,
            "identity_addr_guc" => self.identity.identity_addr_guc = parse_custom_guc(v, true)?,
            "application_name_add_user" => {
                self.identity.application_name_add_user = parse_bool(v)?;
            }
            "audit_log" => self.audit.audit_log = non_empty(v),
            "audit_statements" => self.audit.audit_statements = parse_audit_statements(v)?,
            "audit_max_statement_length" => {
                self.audit.audit_max_statement_length = parse_positive(v)?;
            }
            "audit_queue_size" => self.audit.audit_queue_size = parse_positive(v)?,
            "proxy_protocol_trusted" => {
                self.proxy_protocol_trusted = parse_list(v)
                    .iter()
                    .map(|c| c.parse())
                    .collect::<Result<_, _>>()?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;

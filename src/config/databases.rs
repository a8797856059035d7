//! [databases] connection strings and [users] overrides.
//!
//! Values use PgBouncer's `key=value` syntax (libpq's, less its escapes): pairs separated by
//! whitespace, optional spaces around `=`, values single-quoted when they contain spaces, with
//! `''` for a quote inside (`'it''s'`). A backslash is an ordinary character, quoted or not, as
//! in PgBouncer: `password=a\b` is the four characters `a\b` (libpq would read `ab`). A repeated
//! key: the last one wins.

use std::collections::HashMap;

use super::limits::{parse_pool_share, PoolShare};
use std::time::Duration;

use super::settings::{parse_duration, parse_pool_mode, parse_u16, parse_u32};
use super::{ConfigError, RawIni, UserEntry};

/// Where the server is when a [databases] entry has no `host=`: a unix socket in this directory.
///
/// PgBouncer also defaults to a unix socket when `host` is omitted (it uses its own
/// `unix_socket_dir`, `/tmp` unless configured). pgporter uses the directory where Debian,
/// Ubuntu and the PGDG packages put PostgreSQL's socket; set `host=/tmp` for a stock build.
pub const DEFAULT_HOST: &str = "/var/run/postgresql";

/// `port=` when omitted.
pub const DEFAULT_PORT: u16 = 5432;

/// Startup parameters a [databases] entry may set for the server connection.
const CONNECT_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
];

/// One backend host of a [databases] entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// A host name or address; a value starting with `/` is a unix socket directory.
    pub host: String,
    pub port: u16,
}

/// libpq's `target_session_attrs`: which hosts of an entry a server connection may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAttrs {
    /// Any live host (libpq's default).
    #[default]
    Any,
    /// `read-write` or `primary`: only the primary.
    Primary,
    /// `read-only` or `standby`: only standbys (pgporter treats both alike; see the README).
    Standby,
    /// `prefer-standby`: standbys; the primary when no standby is usable.
    PreferStandby,
}

impl SessionAttrs {
    /// Server connections of such a pool run with `default_transaction_read_only=on`.
    pub fn is_read_only(self) -> bool {
        matches!(self, SessionAttrs::Standby | SessionAttrs::PreferStandby)
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::Primary => "read-write",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }
}

/// `load_balance_hosts`: how new server connections are spread over eligible hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalance {
    /// The first eligible host in the listed order.
    #[default]
    Disable,
    RoundRobin,
    Random,
    /// The eligible host with the fewest server connections (all pools counted).
    LeastConnections,
}

/// One [databases] entry: `name = host=... port=... dbname=... user=... password=... pool_size=...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// The name clients use (the ini key; `*` for the fallback).
    pub name: String,
    /// `host=a,b,c` with `port=` one port or one per host; default one host, [`DEFAULT_HOST`]
    /// (a unix socket directory) on [`DEFAULT_PORT`]. Never empty.
    pub hosts: Vec<HostPort>,
    /// `target_session_attrs=`, default any.
    pub target_session_attrs: SessionAttrs,
    /// `load_balance_hosts=`, default round-robin (PgBouncer's default for a host list).
    pub load_balance_hosts: LoadBalance,
    /// `dbname=`; None = the client's database name.
    pub dbname: Option<String>,
    /// `user=`: forced backend user; None = the client's user name.
    pub user: Option<String>,
    /// `password=` for the backend user.
    pub password: Option<String>,
    /// `pool_size=`; None = default_pool_size.
    pub pool_size: Option<u32>,
    /// `server_lifetime=` (PgBouncer 1.23+); None (or 0) = the [pgbouncer] value.
    pub server_lifetime: Option<Duration>,
    /// `query_wait_timeout=` (PgBouncer 1.24+; -1 = not set, 0 = no limit); None = the
    /// [pgbouncer] value.
    pub query_wait_timeout: Option<Duration>,
    /// `min_pool_size=`.
    pub min_pool_size: Option<u32>,
    /// `max_db_connections=`.
    pub max_db_connections: Option<u32>,
    /// `max_db_client_connections=`.
    pub max_db_client_connections: Option<u32>,
    /// `reserve_pool_size=` (or PgBouncer's older `reserve_pool=`).
    pub reserve_pool_size: Option<u32>,
    /// `max_user_pool_share=` (`Some(None)`: explicitly no cap for this database).
    pub max_user_pool_share: Option<Option<PoolShare>>,
    /// `application_name=`, `client_encoding=`, `datestyle=`, `timezone=`: startup parameters
    /// sent to the server (lower-cased keys).
    pub connect_params: Vec<(String, String)>,
    /// `auth_user=`, `auth_query=`, `auth_dbname=`: this database's clients missing from
    /// auth_file are looked up so (each falls back to the [pgbouncer] setting).
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    /// `connect_query=`: run once on each new server connection, after login.
    pub connect_query: Option<String>,
    /// `pool_mode=`, shown by SHOW DATABASES.
    pub pool_mode: Option<super::PoolMode>,
}

impl DatabaseEntry {
    /// The first listed host (where a single-host view such as SHOW DATABASES looks).
    pub fn first_host(&self) -> HostPort {
        self.hosts.first().cloned().unwrap_or(HostPort {
            host: DEFAULT_HOST.into(),
            port: DEFAULT_PORT,
        })
    }

    /// `a,b,c`: every host, as written in the connstring.
    pub fn host_names(&self) -> String {
        let names: Vec<&str> = self.hosts.iter().map(|h| h.host.as_str()).collect();
        names.join(",")
    }
}

/// Parse one connstring value (libpq key=value syntax with single-quoted values and `\` escapes).
/// The error names the offending key, never a value (it may be a password).
pub fn parse_connstring(name: &str, value: &str) -> Result<DatabaseEntry, String> {
    parse_connstring_in(name, value, DEFAULT_HOST)
}

/// [`parse_connstring`], with `default_host` where no host is given.
pub(super) fn parse_connstring_in(
    name: &str,
    value: &str,
    default_host: &str,
) -> Result<DatabaseEntry, String> {
    let mut e = DatabaseEntry {
        name: name.to_string(),
        hosts: Vec::new(),
        target_session_attrs: SessionAttrs::Any,
        load_balance_hosts: LoadBalance::RoundRobin,
        dbname: None,
        user: None,
        password: None,
        pool_size: None,
        server_lifetime: None,
        query_wait_timeout: None,
        min_pool_size: None,
        max_db_connections: None,
        max_db_client_connections: None,
        reserve_pool_size: None,
        max_user_pool_share: None,
        connect_params: Vec::new(),
        auth_user: None,
        auth_query: None,
        auth_dbname: None,
        connect_query: None,
        pool_mode: None,
    };
    let (mut host, mut port) = (String::new(), String::new());
    for (key, val) in split_pairs(value)? {
        let k = key.to_ascii_lowercase();
        let int = |v: &str| count(&key, v);
        match k.as_str() {
            "host" => host = val,
            "port" => port = val,
            "target_session_attrs" => {
                e.target_session_attrs = parse_attrs(&val).map_err(|m| format!("{key}: {m}"))?;
            }
            "load_balance_hosts" => {
                e.load_balance_hosts = parse_balance(&val).map_err(|m| format!("{key}: {m}"))?;
            }
            "dbname" => e.dbname = Some(val),
            "user" => e.user = Some(val),
            "password" => e.password = Some(val),
            "auth_user" => e.auth_user = Some(val),
            "auth_query" => e.auth_query = Some(val),
            "auth_dbname" => e.auth_dbname = Some(val),
            "connect_query" => e.connect_query = Some(val).filter(|q| !q.trim().is_empty()),
            "pool_size" => e.pool_size = int(&val)?,
            "min_pool_size" => e.min_pool_size = int(&val)?,
            "max_db_connections" => e.max_db_connections = cap(&key, &val)?,
            "max_db_client_connections" => e.max_db_client_connections = cap(&key, &val)?,
            "reserve_pool" | "reserve_pool_size" => e.reserve_pool_size = int(&val)?,
            "max_user_pool_share" => {
                e.max_user_pool_share =
                    Some(parse_pool_share(&val).map_err(|m| format!("{key}: {m}"))?);
            }
            "pool_mode" => e.pool_mode = Some(parse_pool_mode(&val)?),
            // As PgBouncer: 0 leaves the [pgbouncer] value in force.
            "server_lifetime" => e.server_lifetime = set(&key, &val)?,
            "query_wait_timeout" => e.query_wait_timeout = timeout(&key, &val)?,
            p if CONNECT_PARAMS.contains(&p) => {
                e.connect_params.retain(|(existing, _)| *existing != k);
                e.connect_params.push((k, val));
            }
            _ => return Err(format!("unknown parameter {key:?}")),
        }
    }
    e.hosts = host_list(&host, &port, default_host)?;
    Ok(e)
}

/// `host=a,b,c` and `port=p` or `port=p1,p2,p3` (libpq's rules: an empty host is the default
/// one; one port applies to every host; otherwise one port per host).
fn host_list(host: &str, port: &str, default_host: &str) -> Result<Vec<HostPort>, String> {
    let hosts: Vec<&str> = host.split(',').map(str::trim).collect();
    let ports = if port.trim().is_empty() {
        vec![DEFAULT_PORT]
    } else {
        port.split(',')
            .map(|p| parse_port(p.trim()).map_err(|m| format!("port: {m}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(format!(
            "port: {} ports given for {} hosts (give one port, or one per host)",
            ports.len(),
            hosts.len()
        ));
    }
    Ok(hosts
        .iter()
        .enumerate()
        .map(|(i, h)| HostPort {
            host: if h.is_empty() { default_host } else { h }.to_string(),
            port: ports
                .get(i)
                .or(ports.first())
                .copied()
                .unwrap_or(DEFAULT_PORT),
        })
        .collect())
}

fn parse_port(v: &str) -> Result<u16, String> {
    match parse_u16(v)? {
        0 => Err("port 0 is not valid".into()),
        port => Ok(port),
    }
}

fn parse_attrs(v: &str) -> Result<SessionAttrs, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "any" => SessionAttrs::Any,
        "read-write" | "primary" => SessionAttrs::Primary,
        "read-only" | "standby" => SessionAttrs::Standby,
        "prefer-standby" => SessionAttrs::PreferStandby,
        _ => {
            return Err(
                "expected any, read-write, primary, read-only, standby or prefer-standby".into(),
            )
        }
    })
}

impl LoadBalance {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalance::Disable => "disable",
            LoadBalance::RoundRobin => "round-robin",
            LoadBalance::Random => "random",
            LoadBalance::LeastConnections => "least-connections",
        }
    }
}

fn parse_balance(v: &str) -> Result<LoadBalance, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "disable" => LoadBalance::Disable,
        "round-robin" => LoadBalance::RoundRobin,
        "random" => LoadBalance::Random,
        "least-connections" => LoadBalance::LeastConnections,
        _ => return Err("expected disable, round-robin, random or least-connections".into()),
    })
}

/// All [databases] entries; the `*` one separately. An entry without a host connects through
/// the unix socket in `unix_socket_dir`, as PgBouncer's does (when that is a directory path;
/// else [`DEFAULT_HOST`]).
pub(super) fn from_ini(
    raw: &RawIni,
    unix_socket_dir: &str,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, DatabaseEntry>, Option<DatabaseEntry>) {
    let default_host = if unix_socket_dir.starts_with('/') {
        unix_socket_dir
    } else {
        DEFAULT_HOST
    };
    let mut databases = HashMap::new();
    let mut fallback = None;
    for entry in raw.section("databases") {
        match parse_connstring_in(&entry.key, &entry.value, default_host) {
            Ok(db) if entry.key == "*" => fallback = Some(db),
            Ok(db) => {
                databases.insert(entry.key.clone(), db);
            }
            Err(message) => errors.push(ConfigError {
                file: entry.file.clone(),
                line: entry.line,
                key: entry.key.clone(),
                message,
            }),
        }
    }
    (databases, fallback)
}

/// All [users] entries.
pub(super) fn users_from_ini(
    raw: &RawIni,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, UserEntry> {
    let mut users = HashMap::new();
    for entry in raw.section("users") {
        match parse_user(&entry.value) {
            Ok(user) => {
                users.insert(entry.key.clone(), user);
            }
            Err(message) => errors.push(ConfigError {
                file: entry.file.clone(),
                line: entry.line,
                key: entry.key.clone(),
                message,
            }),
        }
    }
    users
}

/// `pool_mode=... pool_size=... reserve_pool_size=... max_user_connections=...
/// max_user_client_connections=...` and the per-user timeouts (`query_timeout=`,
/// `query_wait_timeout=`, `idle_transaction_timeout=`, `transaction_timeout=`,
/// `client_idle_timeout=`).
fn parse_user(value: &str) -> Result<UserEntry, String> {
    let mut user = UserEntry::default();
    for (key, val) in split_pairs(value)? {
        let int = |v: &str| count(&key, v);
        match key.to_ascii_lowercase().as_str() {
            "pool_mode" => user.pool_mode = Some(parse_pool_mode(&val)?),
            "pool_size" => user.pool_size = int(&val)?,
            "reserve_pool_size" => user.reserve_pool_size = int(&val)?,
            "max_user_connections" => user.max_user_connections = cap(&key, &val)?,
            "max_user_client_connections" => user.max_user_client_connections = cap(&key, &val)?,
            // As PgBouncer: 0 (like -1) leaves the [pgbouncer] value in force for these,
            // while query_wait_timeout = 0 means no limit (only -1 is "not set").
            "query_timeout" => user.query_timeout = set(&key, &val)?,
            "query_wait_timeout" => user.query_wait_timeout = timeout(&key, &val)?,
            "idle_transaction_timeout" => user.idle_transaction_timeout = set(&key, &val)?,
            "transaction_timeout" => user.transaction_timeout = set(&key, &val)?,
            "client_idle_timeout" => user.client_idle_timeout = set(&key, &val)?,
            _ => return Err(format!("unknown parameter {key:?}")),
        }
    }
    Ok(user)
}

/// A per-database or per-user count (`pool_size=`, `max_db_connections=` ...). As in
/// PgBouncer, a negative value (its default is -1) means "not set": the next level's applies.
fn count(key: &str, val: &str) -> Result<Option<u32>, String> {
    let v = val.trim();
    if v.strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(None);
    }
    parse_u32(v).map(Some).map_err(|m| format!("{key}: {m}"))
}

/// A per-database or per-user connection cap (`max_db_connections=`, `max_user_connections=`,
/// and their client-connection kin): as in PgBouncer, whose `database_max_connections()` and
/// the like take the [pgbouncer] value for anything `<= 0`, 0 means not set too (not "no
/// limit", as it does in [pgbouncer]). Pool sizes keep 0 as a size.
fn cap(key: &str, val: &str) -> Result<Option<u32>, String> {
    Ok(count(key, val)?.filter(|&n| n > 0))
}

/// A per-database or per-user timeout: a duration as in [pgbouncer] (`0` = no limit), or
/// PgBouncer's `-1` = not set (the next level's value applies).
fn timeout(key: &str, val: &str) -> Result<Option<Duration>, String> {
    if val.trim() == "-1" {
        return Ok(None);
    }
    parse_duration(val)
        .map(Some)
        .map_err(|m| format!("{key}: {m}"))
}

/// A timeout that is not set when 0 (PgBouncer applies a per-user value only when > 0).
fn set(key: &str, val: &str) -> Result<Option<Duration>, String> {
    Ok(timeout(key, val)?.filter(|d| !d.is_zero()))
}

/// Split libpq-style `key=value` pairs (see the module docs). Errors name keys, never values.
pub(super) fn split_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after {key:?}"));
        }
        if key.is_empty() {
            return Err("missing key before \"=\"".into());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    // '' inside quotes is a quote (PgBouncer reads it so).
                    Some('\'') if chars.next_if_eq(&'\'').is_some() => value.push('\''),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests;

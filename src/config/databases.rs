//! [databases] connection strings and [users] overrides.
//!
//! Values use libpq's `key=value` syntax: pairs separated by whitespace, optional spaces around
//! `=`, values single-quoted when they contain spaces (`'it\'s'`; `\'` and `\\` are escapes, as
//! in libpq a backslash escapes any character). A repeated key: the last one wins.

use std::collections::HashMap;

use super::limits::{parse_pool_share, PoolShare};
use super::settings::{parse_pool_mode, parse_u16, parse_u32};
use super::{ConfigError, RawIni, UserEntry};

/// Where the server is when a [databases] entry has no `host=`: a unix socket in this directory.
///
/// PgBouncer also defaults to a unix socket when `host` is omitted (it uses its own
/// `unix_socket_dir`, `/tmp` unless configured). pgporter uses the directory where Debian,
/// Ubuntu and the PGDG packages put PostgreSQL's socket; set `host=/tmp` for a stock build.
pub const DEFAULT_HOST: &str = "/var/run/postgresql";

/// `port=` when omitted.
pub const DEFAULT_PORT: u16 = 5432;

/// Connstring keys PgBouncer accepts that pgporter ignores for now (no error).
const IGNORED_DB_KEYS: &[&str] = &[
    "auth_dbname",
    "auth_query",
    "connect_query",
    "load_balance_hosts",
    "server_lifetime",
];

/// Startup parameters a [databases] entry may set for the server connection.
const CONNECT_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
];

/// One [databases] entry: `name = host=... port=... dbname=... user=... password=... pool_size=...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// The name clients use (the ini key; `*` for the fallback).
    pub name: String,
    /// `host=`; default [`DEFAULT_HOST`] (a unix socket directory). A value starting with `/`
    /// is a unix socket directory.
    pub host: String,
    /// `port=`, default 5432.
    pub port: u16,
    /// `dbname=`; None = the client's database name.
    pub dbname: Option<String>,
    /// `user=`: forced backend user; None = the client's user name.
    pub user: Option<String>,
    /// `password=` for the backend user.
    pub password: Option<String>,
    /// `pool_size=`; None = default_pool_size.
    pub pool_size: Option<u32>,
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
    /// `auth_user=`.
    pub auth_user: Option<String>,
}

/// Parse one connstring value (libpq key=value syntax with single-quoted values and `\` escapes).
/// The error names the offending key, never a value (it may be a password).
pub fn parse_connstring(name: &str, value: &str) -> Result<DatabaseEntry, String> {
    let mut e = DatabaseEntry {
        name: name.to_string(),
        host: DEFAULT_HOST.into(),
        port: DEFAULT_PORT,
        dbname: None,
        user: None,
        password: None,
        pool_size: None,
        min_pool_size: None,
        max_db_connections: None,
        max_db_client_connections: None,
        reserve_pool_size: None,
        max_user_pool_share: None,
        connect_params: Vec::new(),
        auth_user: None,
    };
    for (key, val) in split_pairs(value)? {
        let k = key.to_ascii_lowercase();
        let int = |v: &str| parse_u32(v).map(Some).map_err(|m| format!("{key}: {m}"));
        match k.as_str() {
            "host" if val.is_empty() => e.host = DEFAULT_HOST.into(),
            "host" => e.host = val,
            "port" => e.port = parse_port(&val).map_err(|m| format!("{key}: {m}"))?,
            "dbname" => e.dbname = Some(val),
            "user" => e.user = Some(val),
            "password" => e.password = Some(val),
            "auth_user" => e.auth_user = Some(val),
            "pool_size" => e.pool_size = int(&val)?,
            "min_pool_size" => e.min_pool_size = int(&val)?,
            "max_db_connections" => e.max_db_connections = int(&val)?,
            "max_db_client_connections" => e.max_db_client_connections = int(&val)?,
            "reserve_pool" | "reserve_pool_size" => e.reserve_pool_size = int(&val)?,
            "max_user_pool_share" => {
                e.max_user_pool_share =
                    Some(parse_pool_share(&val).map_err(|m| format!("{key}: {m}"))?);
            }
            "pool_mode" => {
                parse_pool_mode(&val)?;
            }
            p if CONNECT_PARAMS.contains(&p) => {
                e.connect_params.retain(|(existing, _)| *existing != k);
                e.connect_params.push((k, val));
            }
            p if IGNORED_DB_KEYS.contains(&p) => {}
            _ => return Err(format!("unknown parameter {key:?}")),
        }
    }
    Ok(e)
}

fn parse_port(v: &str) -> Result<u16, String> {
    match parse_u16(v)? {
        0 => Err("port 0 is not valid".into()),
        port => Ok(port),
    }
}

/// All [databases] entries; the `*` one separately.
pub(super) fn from_ini(
    raw: &RawIni,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, DatabaseEntry>, Option<DatabaseEntry>) {
    let mut databases = HashMap::new();
    let mut fallback = None;
    for entry in raw.section("databases") {
        match parse_connstring(&entry.key, &entry.value) {
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

/// `pool_mode=... max_user_connections=... max_user_client_connections=...`
fn parse_user(value: &str) -> Result<UserEntry, String> {
    let mut user = UserEntry::default();
    for (key, val) in split_pairs(value)? {
        let int = |v: &str| parse_u32(v).map(Some).map_err(|m| format!("{key}: {m}"));
        match key.to_ascii_lowercase().as_str() {
            "pool_mode" => user.pool_mode = Some(parse_pool_mode(&val)?),
            "max_user_connections" => user.max_user_connections = int(&val)?,
            "max_user_client_connections" => user.max_user_client_connections = int(&val)?,
            _ => return Err(format!("unknown parameter {key:?}")),
        }
    }
    Ok(user)
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
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for {key:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests;

//! [databases] connection strings and [users] overrides.

use std::collections::HashMap;

use super::{ConfigError, RawIni, UserEntry};

/// One [databases] entry: `name = host=... port=... dbname=... user=... password=... pool_size=...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// The name clients use (the ini key; `*` for the fallback).
    pub name: String,
    /// `host=`; default `127.0.0.1`... PgBouncer's default is the unix socket; a value starting
    /// with `/` is a unix socket directory.
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
    /// `application_name=`, `client_encoding=`, `datestyle=`, `timezone=`: startup parameters
    /// sent to the server (lower-cased keys).
    pub connect_params: Vec<(String, String)>,
    /// `auth_user=`.
    pub auth_user: Option<String>,
}

/// Parse one connstring value (libpq key=value syntax with single-quoted values and `\` escapes).
pub fn parse_connstring(name: &str, value: &str) -> Result<DatabaseEntry, String> {
    // IMPLEMENTED BY THE CONFIG WORK.
    let _ = value;
    Ok(DatabaseEntry {
        name: name.to_string(),
        host: "127.0.0.1".into(),
        port: 5432,
        dbname: None,
        user: None,
        password: None,
        pool_size: None,
        min_pool_size: None,
        max_db_connections: None,
        connect_params: Vec::new(),
        auth_user: None,
    })
}

/// All [databases] entries; the `*` one separately.
pub(super) fn from_ini(
    raw: &RawIni,
    errors: &mut Vec<ConfigError>,
) -> (HashMap<String, DatabaseEntry>, Option<DatabaseEntry>) {
    let _ = (raw, errors);
    (HashMap::new(), None)
}

/// All [users] entries.
pub(super) fn users_from_ini(
    raw: &RawIni,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, UserEntry> {
    let _ = (raw, errors);
    HashMap::new()
}

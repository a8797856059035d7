//! Configuration: pgbouncer.ini (+ `%include`), userlist.txt.
//!
//! `load(path)` reads and parses every file, validates all keys and returns one immutable
//! [`Config`] snapshot, or every problem found at once (each naming file, line and key).
//! Reload builds a new snapshot the same way and swaps it in whole ([`ConfigHandle`]).

mod databases;
pub mod diff;
mod ini;
mod limits;
mod settings;
mod userlist;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Secret;

pub use databases::{parse_connstring, DatabaseEntry, DEFAULT_HOST, DEFAULT_PORT};
pub use ini::{parse_ini, IniEntry, RawIni, MAX_INCLUDE_DEPTH};
pub use limits::PoolShare;
pub use settings::{AuthType, LogFormat, PoolMode, Settings, MAX_PACKET_SIZE_LIMIT};
pub use userlist::parse_userlist;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem is not tied to a line.
    pub line: usize,
    /// The key (or section / database name) concerned; may be empty.
    pub key: String,
    pub message: String,
}

/// A non-fatal remark (unknown key, ...), logged at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Per-user overrides from the [users] section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserEntry {
    pub pool_mode: Option<PoolMode>,
    pub max_user_connections: Option<u32>,
    pub max_user_client_connections: Option<u32>,
}

/// The validated, immutable configuration snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main ini file, for reload.
    pub path: PathBuf,
    pub settings: Settings,
    /// [databases] by name, except the `*` fallback.
    pub databases: HashMap<String, DatabaseEntry>,
    /// The `*` entry, if any: used for database names not listed.
    pub fallback_database: Option<DatabaseEntry>,
    /// [users] by name.
    pub users: HashMap<String, UserEntry>,
    /// auth_file contents: user name -> secret.
    pub userlist: HashMap<String, Secret>,
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The database entry a client's database name resolves to (explicit or via `*`).
    pub fn database(&self, name: &str) -> Option<&DatabaseEntry> {
        self.databases.get(name).or(self.fallback_database.as_ref())
    }

    /// Seconds-based helper for timeouts given as 0 = disabled.
    pub fn nonzero(d: Duration) -> Option<Duration> {
        (!d.is_zero()).then_some(d)
    }
}

/// Read `path` (and what it includes and names: auth_file) into a validated [`Config`].
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let raw = ini::read_ini_file(path)?;
    from_raw(path, raw)
}

/// Build a [`Config`] from an already-parsed ini (file reading of auth_file still happens here).
pub fn from_raw(path: &Path, raw: RawIni) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let settings = settings::Settings::from_ini(&raw, &mut errors, &mut warnings);
    let (databases, fallback_database) = databases::from_ini(&raw, &mut errors);
    let users = databases::users_from_ini(&raw, &mut errors);
    let userlist = match &settings.auth_file {
        Some(file) => {
            let file = resolve_relative(path, file);
            match std::fs::read_to_string(&file) {
                Ok(text) => match parse_userlist(&text, &file.display().to_string()) {
                    Ok(list) => list,
                    Err(mut e) => {
                        errors.append(&mut e);
                        HashMap::new()
                    }
                },
                Err(e) => {
                    errors.push(ConfigError {
                        file: path.display().to_string(),
                        line: 0,
                        key: "auth_file".into(),
                        message: format!("cannot read {}: {e}", file.display()),
                    });
                    HashMap::new()
                }
            }
        }
        None => HashMap::new(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        path: path.to_path_buf(),
        settings,
        databases,
        fallback_database,
        users,
        userlist,
        warnings,
    })
}

/// A path in the config is relative to the config file's directory (as in PgBouncer).
pub fn resolve_relative(config_path: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

/// The live configuration: readers load a snapshot once per session or request.
#[derive(Debug)]
pub struct ConfigHandle(ArcSwap<Config>);

impl ConfigHandle {
    pub fn new(config: Config) -> Self {
        ConfigHandle(ArcSwap::from_pointee(config))
    }
    pub fn load(&self) -> Arc<Config> {
        self.0.load_full()
    }
    pub fn store(&self, config: Config) {
        self.0.store(Arc::new(config));
    }
}

#[cfg(test)]
mod tests;

//! Configuration: pgbouncer.ini (+ `%include`), userlist.txt.
//!
//! `load(path)` reads and parses every file, validates all keys and returns one immutable
//! [`Config`] snapshot, or every problem found at once (each naming file, line and key).
//! Reload builds a new snapshot the same way and swaps it in whole ([`ConfigHandle`]).

mod cidr;
mod ciphers;
mod databases;
pub mod diff;
pub mod hba;
mod identity;
mod ini;
mod limits;
mod peers;
mod security;
mod settings;
mod timeouts;
mod userlist;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Secret;

pub use cidr::Cidr;
pub use databases::{
    parse_connstring, DatabaseEntry, HostPort, LoadBalance, SessionAttrs, DEFAULT_HOST,
    DEFAULT_PORT,
};
pub use hba::{HbaMethod, HbaRule};
pub use ini::{parse_ini, parse_ini_with, IniEntry, RawIni, ReadFile, MAX_INCLUDE_DEPTH};
pub use limits::PoolShare;
pub use peers::Peer;
pub use security::{SslMode, TlsCiphers, TlsProtocols, DEFAULT_AUTH_QUERY};
pub use settings::{
    AuditSettings, AuditStatements, AuthType, IdentitySettings, LogFormat, PoolMode,
    RoutingSettings, Settings, MAX_PACKET_SIZE_LIMIT,
};
pub use timeouts::SessionTimeouts;
pub use userlist::parse_userlist;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}{}{message}", line_part(*line), key_part(key))]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem is not tied to a line.
    pub line: usize,
    /// The key (or section / database name) concerned; may be empty.
    pub key: String,
    pub message: String,
}

/// `:12` (nothing for a problem not tied to a line).
fn line_part(line: usize) -> String {
    if line == 0 {
        ": ".into()
    } else {
        format!(":{line}: ")
    }
}

/// `key: ` (nothing for an empty key).
fn key_part(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
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
    /// Size of this user's pools (before the database's `pool_size=` and default_pool_size).
    pub pool_size: Option<u32>,
    /// Reserve of this user's pools (before the database's and the [pgbouncer] value).
    pub reserve_pool_size: Option<u32>,
    pub max_user_connections: Option<u32>,
    pub max_user_client_connections: Option<u32>,
    /// PgBouncer 1.24+'s per-user timeouts, before the [pgbouncer] values (see
    /// `config/timeouts.rs`); `query_wait_timeout` before the database's too. None when
    /// not set: `-1`, and `0` for all but `query_wait_timeout` (where it means no limit).
    pub query_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
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
    /// `[peers]`: where the other processes of this pgporter's group listen, by peer id.
    pub peers: HashMap<u16, Peer>,
    /// auth_file contents: user name -> secret.
    pub userlist: HashMap<String, Secret>,
    /// auth_hba_file rules (empty when unset).
    pub hba: Vec<HbaRule>,
    /// auth_ident_file entries: (map name, certificate name, user name).
    pub ident: Vec<hba::IdentEntry>,
    pub warnings: Vec<ConfigWarning>,
    /// The identity GUC names the spoof check looks for, built at first use.
    spoof_names: std::sync::OnceLock<crate::identity::GucNames>,
}

impl Config {
    /// The identity GUC names every relay checks statements for (built once per loaded
    /// config, shared by all relays).
    pub fn spoof_names(&self) -> &crate::identity::GucNames {
        self.spoof_names
            .get_or_init(|| crate::identity::GucNames::new(&self.settings.identity))
    }

    /// Whether `key` (any case) is a `[pgbouncer]` setting of ours: [`Config::with_setting`]
    /// answers `Ok(None)` exactly for the keys this says no to. Builds nothing (no PBKDF2).
    pub fn is_setting(key: &str) -> bool {
        !matches!(
            Settings::default().apply(&key.to_ascii_lowercase(), ""),
            Ok(false)
        )
    }

    /// This snapshot with one `[pgbouncer]` setting changed (the admin console's `SET`), the
    /// value parsed as in the ini. `Ok(None)`: not a setting of ours (a client parameter a
    /// driver sets, say). Settings that name files (auth_file, hba and ident files) are not
    /// taken: edit the file and RELOAD. A new `scram_iterations` builds the verifiers of the
    /// auth_file's plaintext passwords again (PBKDF2 for each).
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Option<Config>, String> {
        const FILES: [&str; 3] = ["auth_file", "auth_hba_file", "auth_ident_file"];
        let key = key.to_ascii_lowercase();
        if FILES.contains(&key.as_str()) {
            return Err(format!(
                "{key} names a file: change it in the config file and RELOAD"
            ));
        }
        let mut settings = self.settings.clone();
        match settings.apply(&key, value) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(format!("{key}: {e}")),
        }
        let mut errors = Vec::new();
        check_security(&self.path, &settings, &mut errors);
        if let Some(e) = errors.first() {
            return Err(e.message.clone());
        }
        let mut userlist = self.userlist.clone();
        if settings.scram_iterations != self.settings.scram_iterations {
            for secret in userlist.values_mut() {
                secret.rebuild_verifier(settings.scram_iterations);
            }
        }
        Ok(Some(Config {
            settings,
            userlist,
            spoof_names: std::sync::OnceLock::new(),
            ..self.clone()
        }))
    }

    /// The database entry a client's database name resolves to (explicit or via `*`).
    pub fn database(&self, name: &str) -> Option<&DatabaseEntry> {
        self.databases.get(name).or(self.fallback_database.as_ref())
    }

    /// The pool mode of the pool of database `db` logging in as `pool_user`: as PgBouncer,
    /// the user's `[users]` pool_mode, else the database entry's, else `[pgbouncer]`'s.
    pub fn pool_mode(&self, db: &str, pool_user: &str) -> PoolMode {
        (self.users.get(pool_user).and_then(|u| u.pool_mode))
            .or_else(|| self.database(db).and_then(|e| e.pool_mode))
            .unwrap_or(self.settings.pool_mode)
    }

    /// A file named in the config, resolved against the config file's directory.
    pub fn resolve(&self, file: &str) -> PathBuf {
        resolve_relative(&self.path, file)
    }

    /// Seconds-based helper for timeouts given as 0 = disabled.
    pub fn nonzero(d: Duration) -> Option<Duration> {
        (!d.is_zero()).then_some(d)
    }

    /// A time limit where 0 means none (as PgBouncer's timeouts): for `tokio::time::timeout`,
    /// which waits for ever past `Instant` range.
    pub fn limit(d: Duration) -> Duration {
        if d.is_zero() {
            Duration::MAX
        } else {
            d
        }
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
    let (databases, fallback_database) =
        databases::from_ini(&raw, &settings.unix_socket_dir, &mut errors);
    let users = databases::users_from_ini(&raw, &mut errors);
    let peers = peers::from_ini(&raw, &mut errors);
    let userlist = match &settings.auth_file {
        Some(file) => {
            let file = resolve_relative(path, file);
            match std::fs::read_to_string(&file) {
                Ok(text) => parse_userlist(
                    &text,
                    &file.display().to_string(),
                    settings.scram_iterations,
                    &mut warnings,
                ),
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
    let hba = match &settings.auth_hba_file {
        Some(file) => load_hba(path, file, &mut errors, &mut warnings),
        None => Vec::new(),
    };
    let ident = match &settings.auth_ident_file {
        Some(file) => load_ident(path, file, &mut errors),
        None => Vec::new(),
    };
    check_security(path, &settings, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    if settings.identity.identity_tagging {
        for entry in raw.section("databases") {
            let parsed = match entry.key.as_str() {
                "*" => fallback_database.as_ref(),
                name => databases.get(name),
            };
            if parsed.and_then(|d| d.min_pool_size).is_some_and(|n| n > 0) {
                warnings.push(ConfigWarning {
                    file: entry.file.clone(),
                    line: entry.line,
                    key: entry.key.clone(),
                    message: settings::MIN_POOL_TAGGED.into(),
                });
            }
        }
    }
    // auth_dbname names a [databases] entry: without it every auth_query login would fail.
    let global = settings
        .auth_dbname
        .iter()
        .map(|d| ("auth_dbname".to_string(), d));
    let per_db = databases
        .iter()
        .filter_map(|(name, e)| e.auth_dbname.as_ref().map(|d| (name.clone(), d)));
    for (key, db) in global.chain(per_db) {
        if !databases.contains_key(db) && fallback_database.is_none() {
            warnings.push(ConfigWarning {
                file: path.display().to_string(),
                line: 0,
                key,
                message: format!(
                    "auth_dbname {db:?} is not a [databases] entry: auth_query logins will fail"
                ),
            });
        }
    }
    Ok(Config {
        path: path.to_path_buf(),
        settings,
        databases,
        fallback_database,
        users,
        peers,
        userlist,
        hba,
        ident,
        warnings,
        spoof_names: std::sync::OnceLock::new(),
    })
}

fn file_error(path: &Path, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: path.display().to_string(),
        line: 0,
        key: key.into(),
        message,
    }
}

fn load_hba(
    path: &Path,
    file: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigWarning>,
) -> Vec<HbaRule> {
    let file = resolve_relative(path, file);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            errors.push(file_error(
                path,
                "auth_hba_file",
                format!("cannot read {}: {e}", file.display()),
            ));
            return Vec::new();
        }
    };
    let include = |name: &str| {
        let p = resolve_relative(&file, name);
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    match hba::parse_hba(&text, &include) {
        Ok((rules, cautions)) => {
            warnings.extend(cautions.into_iter().map(|(line, message)| ConfigWarning {
                file: file.display().to_string(),
                line,
                key: "auth_hba_file".into(),
                message,
            }));
            rules
        }
        Err(list) => {
            errors.extend(list.into_iter().map(|(line, message)| ConfigError {
                file: file.display().to_string(),
                line,
                key: "auth_hba_file".into(),
                message,
            }));
            Vec::new()
        }
    }
}

fn load_ident(path: &Path, file: &str, errors: &mut Vec<ConfigError>) -> Vec<hba::IdentEntry> {
    let file = resolve_relative(path, file);
    let parsed = std::fs::read_to_string(&file)
        .map_err(|e| vec![(0, format!("cannot read {}: {e}", file.display()))])
        .and_then(|text| hba::parse_ident(&text));
    parsed.unwrap_or_else(|list| {
        errors.extend(list.into_iter().map(|(line, message)| ConfigError {
            file: file.display().to_string(),
            line,
            key: "auth_ident_file".into(),
            message,
        }));
        Vec::new()
    })
}

/// Combinations of TLS/auth keys that cannot work.
fn check_security(path: &Path, s: &Settings, errors: &mut Vec<ConfigError>) {
    let mut need = |ok: bool, key: &str, message: &str| {
        if !ok {
            errors.push(file_error(path, key, message.into()));
        }
    };
    let client_tls = s.client_tls_sslmode != SslMode::Disable;
    need(
        !client_tls || (s.client_tls_key_file.is_some() && s.client_tls_cert_file.is_some()),
        "client_tls_sslmode",
        "client TLS needs client_tls_key_file and client_tls_cert_file",
    );
    need(
        !s.client_tls_sslmode.verifies() || s.client_tls_ca_file.is_some(),
        "client_tls_sslmode",
        "verify-ca and verify-full need client_tls_ca_file",
    );
    need(
        !s.server_tls_sslmode.verifies() || s.server_tls_ca_file.is_some(),
        "server_tls_sslmode",
        "verify-ca and verify-full need server_tls_ca_file",
    );
    need(
        s.server_tls_key_file.is_some() == s.server_tls_cert_file.is_some(),
        "server_tls_key_file",
        "server_tls_key_file and server_tls_cert_file go together",
    );
    need(
        s.auth_type != AuthType::Hba || s.auth_hba_file.is_some(),
        "auth_type",
        "auth_type = hba needs auth_hba_file",
    );
    need(
        s.auth_type != AuthType::Cert || (client_tls && s.client_tls_ca_file.is_some()),
        "auth_type",
        "auth_type = cert needs client TLS (client_tls_sslmode) and client_tls_ca_file",
    );
    need(
        s.routing.readonly_listen_port != Some(s.listen_port) || s.listen_port == 0,
        "readonly_listen_port",
        "readonly_listen_port must differ from listen_port",
    );
}

/// A path in the config is relative to the config file's directory (PgBouncer takes it relative
/// to its working directory; the config file's is what a packaged or containerised setup means).
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
pub struct ConfigHandle {
    current: ArcSwap<Config>,
    /// Woken at every store: clients waiting for a server follow a changed
    /// query_wait_timeout.
    stored: tokio::sync::Notify,
    /// Held by a change (RELOAD, admin SET) from reading the running snapshot to storing its
    /// own. An async lock: the new snapshot is built off the async workers (PBKDF2 per
    /// plaintext userlist line), and a change stored meanwhile would be undone by it.
    changing: tokio::sync::Mutex<()>,
}

impl ConfigHandle {
    pub fn new(config: Config) -> Self {
        ConfigHandle {
            current: ArcSwap::from_pointee(config),
            stored: tokio::sync::Notify::new(),
            changing: tokio::sync::Mutex::new(()),
        }
    }
    /// Wait for the changes before this one to be stored, then hold off the later ones until
    /// the guard is dropped (after [`Self::store`]).
    pub async fn change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }
    pub fn load(&self) -> Arc<Config> {
        self.current.load_full()
    }
    pub fn store(&self, config: Config) {
        self.current.store(Arc::new(config));
        self.stored.notify_waiters();
    }
    /// Resolves at the next [`Self::store`] after it is enabled (or first polled).
    pub fn stored(&self) -> tokio::sync::futures::Notified<'_> {
        self.stored.notified()
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod error_text_tests {
    #[test]
    fn errors_name_the_line_and_key_only_when_known() {
        let e = |line, key: &str| super::ConfigError {
            file: "p.ini".into(),
            line,
            key: key.into(),
            message: "bad".into(),
        };
        assert_eq!(e(3, "listen_port").to_string(), "p.ini:3: listen_port: bad");
        assert_eq!(e(0, "auth_type").to_string(), "p.ini: auth_type: bad");
        assert_eq!(e(9, "").to_string(), "p.ini:9: bad");
    }
}

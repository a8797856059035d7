//! Which pool a client's startup packet leads to.

use std::sync::{Arc, OnceLock};

use crate::app::Shared;
use crate::auth::Secret;
use crate::config::{Config, DatabaseEntry, PoolMode};
use crate::error::Error;
use crate::pool::{Pool, PoolKey, PoolSettings};
use crate::protocol::startup::StartupParams;
use crate::routing::Endpoint;
use crate::server::{BackendPassword, ServerAddr, ServerTarget};
use crate::tls::ServerTls;

/// Where a client's startup packet leads. The pool itself is made (or found) only when asked
/// for, after the client has authenticated: a client that never logs in leaves no pool behind
/// (nor, with min_pool_size, server logins as a made-up user).
pub(super) struct Route<'a> {
    pub client_user: String,
    pub database: String,
    pub key: PoolKey,
    /// On a read-only pool: the HINT added to PostgreSQL's read-only errors (25006).
    pub read_only_hint: Option<String>,
    entry: &'a DatabaseEntry,
    config: &'a Config,
    shared: &'a Shared,
    pool: OnceLock<Arc<Pool>>,
}

impl std::fmt::Debug for Route<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Route<'_> {
    /// The client's pool. Only for an authenticated client.
    pub(super) fn pool(&self) -> &Arc<Pool> {
        self.pool
            .get_or_init(|| pool_for(self.entry, &self.key, self.config, self.shared))
    }
}

/// The pool of `key` under database entry `entry`, created if missing.
fn pool_for(entry: &DatabaseEntry, key: &PoolKey, config: &Config, shared: &Shared) -> Arc<Pool> {
    shared.pools.get_or_create(key, |limits| {
        let target = pool_target(entry, key, config, shared.tls.load().server.as_ref());
        let set = shared.routing.host_set(entry, key.endpoint, &target);
        let settings = pool_settings(entry, &key.db, &key.user, config);
        Pool::new(key.clone(), target, settings, limits).with_hosts(set)
    })
}

/// The pool that replaced `retired` after a reload changed its database entry: same database,
/// user and endpoint under the live configuration. An error when the database is gone, or
/// would now log `client_user` in as another user than the pool's: the entry forces another
/// user, or no longer forces the one the session was served as (PgBouncer 1.18 keeps a
/// removed `user=` in force until restart, for every client; here new sessions go in as
/// themselves, and one served as the forced user ends with 08P01).
pub(super) fn successor(
    retired: &Pool,
    client_user: &str,
    shared: &Shared,
) -> Result<Arc<Pool>, Error> {
    let config = shared.config.load();
    let key = &retired.key;
    let entry = config
        .database(&key.db)
        .ok_or_else(|| Error::UnknownDatabase(key.db.to_string()))?;
    if *entry.user.as_deref().unwrap_or(client_user) != *key.user {
        return Err(Error::DatabaseChanged);
    }
    let pool = pool_for(entry, key, &config, shared);
    pool.learn_from(retired);
    Ok(pool)
}

pub(super) fn route<'a>(
    startup: &StartupParams,
    config: &'a Config,
    shared: &'a Shared,
    endpoint: Endpoint,
) -> Result<Route<'a>, Error> {
    let client_user = startup
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or(Error::NoUser)?;
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(client_user);
    let entry = config
        .database(database)
        .ok_or_else(|| Error::UnknownDatabase(database.to_string()))?;
    let backend_user = entry.user.as_deref().unwrap_or(client_user);
    let key = PoolKey {
        db: database.into(),
        user: backend_user.into(),
        endpoint,
    };
    let read_only_hint = endpoint
        .attrs(entry)
        .is_read_only()
        .then(|| read_only_hint(endpoint, entry, config, shared.listen_port));
    Ok(Route {
        client_user: client_user.to_string(),
        database: database.to_string(),
        key,
        read_only_hint,
        entry,
        config,
        shared,
        pool: OnceLock::new(),
    })
}

/// The pool auth_query runs on, and the query: auth_user's connection to auth_dbname (a
/// [databases] name), or to the client's database when auth_dbname is unset. The client's
/// database entry may set each of the three; the [pgbouncer] values are the fallback. It is
/// that entry's pool for auth_user, routed over the entry's hosts as any other.
pub(super) fn auth_pool<'c>(
    config: &'c Config,
    shared: &Shared,
    client_database: &str,
) -> Option<(Arc<Pool>, &'c str)> {
    let client_entry = config.database(client_database);
    let s = &config.settings;
    let pick = |own: Option<&'c Option<String>>, global: &'c Option<String>| {
        own.and_then(Option::as_deref).or(global.as_deref())
    };
    let auth_user = pick(client_entry.map(|e| &e.auth_user), &s.auth_user)?;
    let query = client_entry
        .and_then(|e| e.auth_query.as_deref())
        .unwrap_or(&s.auth_query);
    let database =
        pick(client_entry.map(|e| &e.auth_dbname), &s.auth_dbname).unwrap_or(client_database);
    let entry = config.database(database)?;
    let key = PoolKey {
        db: database.into(),
        user: auth_user.into(),
        endpoint: Endpoint::ReadWrite,
    };
    Some((pool_for(entry, &key, config, shared), query))
}

/// What to tell a client whose write failed on a read-only pool.
fn read_only_hint(
    endpoint: Endpoint,
    entry: &DatabaseEntry,
    config: &Config,
    listen_port: u16,
) -> String {
    const TAIL: &str = "for writes and temporary tables, or turn off your client's use of \
                        temporary tables.";
    if endpoint == Endpoint::ReadOnly {
        return format!(
            "This is pgporter's read-only endpoint, served by standbys: connect to port {} \
             {TAIL}",
            listen_port
        );
    }
    // A read-write entry for the same database and hosts, if the config has one.
    let target_db = entry.dbname.as_deref().unwrap_or(&entry.name);
    let mut rw: Vec<&str> = config
        .databases
        .values()
        .filter(|e| {
            !e.target_session_attrs.is_read_only()
                && e.hosts == entry.hosts
                && e.dbname.as_deref().unwrap_or(&e.name) == target_db
        })
        .map(|e| e.name.as_str())
        .collect();
    rw.sort_unstable();
    match rw.first() {
        Some(name) => format!(
            "Database \"{}\" is pgporter's read-only endpoint, served by standbys: use \
             database \"{name}\" {TAIL}",
            entry.name
        ),
        None => format!(
            "Database \"{}\" is pgporter's read-only endpoint, served by standbys: use a \
             read-write database entry {TAIL}",
            entry.name
        ),
    }
}

fn target(
    entry: &DatabaseEntry,
    database: &str,
    backend_user: &str,
    config: &Config,
    tls: Option<&Arc<ServerTls>>,
) -> ServerTarget {
    let password = match (&entry.password, config.userlist.get(backend_user)) {
        (Some(p), _) => BackendPassword::Plain(p.clone()),
        (None, Some(Secret::Plain { password, .. })) => BackendPassword::Plain(password.clone()),
        (None, Some(Secret::Md5(hash))) => BackendPassword::Md5(hash.clone()),
        (None, Some(Secret::Scram(_)) | None) => BackendPassword::None,
    };
    ServerTarget {
        addr: entry.hosts.first().map_or_else(
            || ServerAddr::new(crate::config::DEFAULT_HOST, crate::config::DEFAULT_PORT),
            |h| ServerAddr::new(&h.host, h.port),
        ),
        dbname: entry.dbname.clone().unwrap_or_else(|| database.to_string()),
        user: backend_user.to_string(),
        password,
        params: entry.connect_params.clone(),
        tls: tls.cloned(),
    }
}

/// The settings of the pool of database `db` (entry `entry`) logging in as `user`.
pub(crate) fn pool_settings(
    entry: &DatabaseEntry,
    db: &str,
    user: &str,
    config: &Config,
) -> PoolSettings {
    let s = &config.settings;
    let mode = config.pool_mode(db, user);
    // As PgBouncer: transaction mode resets only with server_reset_query_always.
    let reset = mode == PoolMode::Session || s.server_reset_query_always;
    PoolSettings {
        mode,
        size: config.pool_size(db, user),
        min_size: entry.min_pool_size.unwrap_or(s.min_pool_size),
        dial: crate::net::Dial::new(s),
        idle_timeout: Config::nonzero(s.server_idle_timeout),
        // 0: each connection serves one client, then closes (PgBouncer's meaning).
        lifetime: Some(config.server_lifetime(db)),
        reset_query: if reset {
            s.server_reset_query.as_str()
        } else {
            ""
        }
        .into(),
        reset_timeout: Config::limit(s.server_reset_timeout),
        check_query: Some(s.server_check_query.as_str())
            .filter(|q| !q.trim().is_empty())
            .map(Arc::from),
        check_delay: s.server_check_delay,
        connect_query: entry.connect_query.clone(),
        round_robin: s.server_round_robin,
    }
}

/// The server target of pool `key`: read-only pools log in with
/// `default_transaction_read_only=on`.
fn pool_target(
    entry: &DatabaseEntry,
    key: &PoolKey,
    config: &Config,
    tls: Option<&Arc<ServerTls>>,
) -> ServerTarget {
    let mut target = target(entry, &key.db, &key.user, config, tls);
    if key.endpoint.attrs(entry).is_read_only() {
        target
            .params
            .retain(|(k, _)| k != "default_transaction_read_only");
        target
            .params
            .push(("default_transaction_read_only".into(), "on".into()));
    }
    target
}

/// What pool `key` should look like under `config` (reload): its server target and sizes, or
/// None when the config no longer leads there. (A changed host list or target_session_attrs
/// beyond the first host applies to pools created after the change.) An entry that forces a
/// user (`user=`) still leads to the pool of an auth_user the config names (auth_query runs
/// there, see [`auth_pool`]): that pool was replaced at every RELOAD.
pub fn pool_plan(
    config: &Config,
    key: &PoolKey,
    server_tls: Option<&Arc<ServerTls>>,
) -> Option<(ServerTarget, PoolSettings)> {
    let entry = config.database(&key.db)?;
    let auth_user = |user: &str| {
        config.settings.auth_user.as_deref() == Some(user)
            || (config.databases.values().chain(&config.fallback_database))
                .any(|e| e.auth_user.as_deref() == Some(user))
    };
    if entry.user.as_deref().is_some_and(|u| *u != *key.user) && !auth_user(&key.user) {
        return None;
    }
    Some((
        pool_target(entry, key, config, server_tls),
        pool_settings(entry, &key.db, &key.user, config),
    ))
}

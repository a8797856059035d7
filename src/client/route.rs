//! Which pool a client's startup packet leads to.

use std::sync::Arc;

use crate::auth::Secret;
use crate::config::{Config, DatabaseEntry};
use crate::error::Error;
use crate::pool::{Pool, PoolKey, PoolSettings, Pools};
use crate::protocol::startup::StartupParams;
use crate::server::{BackendPassword, ServerAddr, ServerTarget};
use crate::tls::ServerTls;

#[derive(Debug)]
pub(super) struct Route {
    pub client_user: String,
    pub database: String,
    pub pool: Arc<Pool>,
}

pub(super) fn route(
    startup: &StartupParams,
    config: &Config,
    pools: &Pools,
    tls: Option<&Arc<ServerTls>>,
) -> Result<Route, Error> {
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
        db: database.to_string(),
        user: backend_user.to_string(),
    };
    let pool = pools.get_or_create(&key, |limits| {
        Pool::new(
            key.clone(),
            target(entry, database, backend_user, config, tls),
            pool_settings(entry, config),
            limits,
        )
    });
    Ok(Route {
        client_user: client_user.to_string(),
        database: database.to_string(),
        pool,
    })
}

/// The pool auth_query runs on: auth_user's connection to auth_dbname (a [databases] name), or
/// to the client's database when auth_dbname is unset.
pub(super) fn auth_pool(
    config: &Config,
    pools: &Pools,
    client_database: &str,
    tls: Option<&Arc<ServerTls>>,
) -> Option<Arc<Pool>> {
    let auth_user = config.settings.auth_user.as_deref()?;
    let database = config
        .settings
        .auth_dbname
        .as_deref()
        .unwrap_or(client_database);
    let entry = config.database(database)?;
    let key = PoolKey {
        db: database.to_string(),
        user: auth_user.to_string(),
    };
    Some(pools.get_or_create(&key, |limits| {
        Pool::new(
            key.clone(),
            target(entry, database, auth_user, config, tls),
            pool_settings(entry, config),
            limits,
        )
    }))
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
        addr: ServerAddr::new(&entry.host, entry.port),
        dbname: entry.dbname.clone().unwrap_or_else(|| database.to_string()),
        user: backend_user.to_string(),
        password,
        params: entry.connect_params.clone(),
        tls: tls.cloned(),
    }
}

pub(crate) fn pool_settings(entry: &DatabaseEntry, config: &Config) -> PoolSettings {
    let s = &config.settings;
    PoolSettings {
        size: entry.pool_size.unwrap_or(s.default_pool_size),
        min_size: entry.min_pool_size.unwrap_or(s.min_pool_size),
        connect_timeout: s.server_connect_timeout,
        idle_timeout: Config::nonzero(s.server_idle_timeout),
        lifetime: Config::nonzero(s.server_lifetime),
        reset_query: s.server_reset_query.clone(),
        reset_timeout: s.server_reset_timeout,
    }
}

/// What pool `key` should look like under `config` (reload): its server target and sizes, or
/// None when the config no longer leads there.
pub fn pool_plan(
    config: &Config,
    key: &PoolKey,
    server_tls: Option<&Arc<ServerTls>>,
) -> Option<(ServerTarget, PoolSettings)> {
    let entry = config.database(&key.db)?;
    if entry.user.as_deref().is_some_and(|u| u != key.user) {
        return None;
    }
    Some((
        target(entry, &key.db, &key.user, config, server_tls),
        pool_settings(entry, config),
    ))
}

//! Authentication of a client: choose the method (auth_type / hba), find the secret
//! (auth_file, else auth_query), run the exchange (`login`), hand the pool what SCRAM
//! passthrough learned, and count and slow down failures.

use std::borrow::Cow;

use crate::app::Shared;
use crate::auth::auth_query::AuthQueryError;
use crate::auth::hba::Transport;
use crate::auth::passthrough::ScramKeys;
use crate::auth::{self, Method, PlanError, Secret};
use crate::config::Config;
use crate::error::Error;
use crate::net::Stream;
use crate::pool::PoolError;
use crate::protocol::FramedConn;
use crate::server::BackendPassword;
use crate::sessions::NewSession;
use crate::tls::ClientTls;

use super::login::LoginContext;
use super::{route, Peer};

/// Count a failed login (per known user; unknown names share one label) and make the
/// attacker wait `auth_failure_delay` before the error goes out. Its `login failed` line comes
/// with the refused login's other lines (`Tag::refused`), after its login attempt.
pub(super) async fn after_login(
    result: Result<(), Error>,
    user: &str,
    shared: &Shared,
    config: &Config,
) -> Result<(), Error> {
    if let Err(e) = &result {
        if e.is_auth_failure() {
            let label = if config.userlist.contains_key(user) {
                user
            } else {
                crate::stats::UNKNOWN_USER
            };
            shared.stats.auth_failed(label);
            tokio::time::sleep(config.settings.auth_failure_delay).await;
        }
    }
    result
}

/// Authenticate an admin-console user (auth_type / hba, secrets from auth_file only).
pub(super) async fn authenticate_admin(
    conn: &mut FramedConn<Stream>,
    peer: &Peer,
    database: &str,
    user: &str,
    ctx: &LoginContext<'_>,
    shared: &Shared,
    config: &Config,
) -> Result<(), Error> {
    let method = plan(conn, peer, database, user, config)?;
    let secret = config.userlist.get(user);
    let result = super::login::authenticate(conn, &method, user, secret, ctx)
        .await
        .map(|_| ());
    after_login(result, user, shared, config).await
}

/// Choose the method (auth_type / hba), find the secret (auth_file, else auth_query), run the
/// exchange, and hand the pool any credential the login revealed (SCRAM passthrough).
pub(super) async fn login(
    conn: &mut FramedConn<Stream>,
    peer: &Peer,
    route: &route::Route<'_>,
    ctx: &LoginContext<'_>,
    application_name: &str,
    shared: &Shared,
    config: &Config,
) -> Result<(), Error> {
    let user = route.client_user.as_str();
    let method = plan(conn, peer, &route.database, user, config)?;
    // How a login waiting for a paused auth_query database is listed (SHOW CLIENTS, POOLS):
    // in the auth_user's pool, where PgBouncer queues it, with no user yet.
    let waiting = |pool: &crate::pool::Pool| NewSession {
        id: ctx.tag.id,
        user: "(nouser)".into(),
        database: pool.key.db.clone(),
        pool_user: pool.key.user.clone(),
        ip: peer.ip(),
        port: peer.port_or(shared.listen_port),
        application_name: super::params::name_data(application_name),
        admin: false,
        tls: conn.io.tls_info(),
        endpoint: pool.key.endpoint,
        local: conn.io.local_addr(),
        peer_pid: ctx.tag.peer_pid(),
    };
    let secret = match method {
        Method::Trust | Method::Cert { .. } | Method::Peer { .. } => None,
        _ => lookup_secret(route, user, shared, config, waiting).await?,
    };
    let client_key =
        super::login::authenticate(conn, &method, user, secret.as_deref(), ctx).await?;
    // Passthrough: the pool logs in as this very user, and the config has no password for it.
    if *route.key.user == *user {
        match (secret.as_deref(), client_key) {
            (Some(Secret::Scram(s)), Some(client_key)) => {
                route.pool().learn(BackendPassword::ScramKeys(ScramKeys {
                    client_key,
                    server_key: s.server_key,
                }));
            }
            (Some(Secret::Md5(hash)), _) => route.pool().learn(BackendPassword::Md5(hash.clone())),
            _ => {}
        }
    }
    Ok(())
}

/// The authentication method for this connection (auth_type, or the first matching hba line).
fn plan(
    conn: &FramedConn<Stream>,
    peer: &Peer,
    database: &str,
    user: &str,
    config: &Config,
) -> Result<Method, Error> {
    let tls = conn.io.is_tls();
    let transport = match peer {
        Peer::Tcp(addr) => Transport::Tcp {
            addr: addr.ip(),
            tls,
        },
        Peer::Unix => Transport::Unix,
    };
    auth::plan(
        config.settings.auth_type,
        &config.hba,
        transport,
        database,
        user,
    )
    .map_err(|e| {
        let host = match peer {
            Peer::Tcp(addr) => addr.ip().to_string(),
            Peer::Unix => "[local]".to_string(),
        };
        let (user, database) = (user.to_string(), database.to_string());
        match e {
            PlanError::NoEntry => Error::HbaNoEntry {
                host,
                user,
                database,
                tls,
            },
            PlanError::Rejected => Error::HbaReject {
                host,
                user,
                database,
                tls,
            },
        }
    })
}

/// What the exchange needs besides the secret: mock key and iterations, TLS channel-binding
/// data (of the context `conn` was accepted with: a reload may have renewed the certificate
/// since), ident map.
pub(super) fn login_context<'a>(
    conn: &FramedConn<Stream>,
    client_tls: Option<&ClientTls>,
    tag: &'a super::lines::Tag,
    shared: &'a Shared,
    config: &'a Config,
) -> LoginContext<'a> {
    LoginContext {
        mock_key: &shared.mock_key,
        mock_iterations: config.settings.scram_iterations,
        end_point: client_tls
            .filter(|_| conn.io.is_tls())
            .and_then(|t| t.end_point.clone()),
        ident: &config.ident,
        tag,
    }
}

/// The user's secret from auth_file, else from auth_query when auth_user is set.
async fn lookup_secret<'c, 'n>(
    route: &route::Route<'_>,
    user: &str,
    shared: &Shared,
    config: &'c Config,
    waiting: impl Fn(&crate::pool::Pool) -> NewSession<'n>,
) -> Result<Option<Cow<'c, Secret>>, Error> {
    if let Some(secret) = config.userlist.get(user) {
        return Ok(Some(Cow::Borrowed(secret)));
    }
    let Some((pool, query)) = route::auth_pool(config, shared, &route.database) else {
        return Ok(None);
    };
    let found = loop {
        // Taken before the lookup asks whether the database is paused (see `listed_waiting`).
        let mark = shared.gates.kill_mark(&pool.key.db);
        let found = shared
            .auth_cache
            .lookup(
                &pool,
                query,
                user,
                config.settings.auth_query_cache_ttl,
                config.settings.scram_iterations,
            )
            .await;
        match found {
            // The database is paused (PAUSE, KILL): as in PgBouncer, the login waits for
            // RESUME (client_login_timeout bounds it), not refused; then it looks up again.
            Err(AuthQueryError::Pool(PoolError::Paused)) => {
                wait_for_resume(&pool, waiting(&pool), shared, mark).await?;
            }
            found => break found,
        }
    }
    .map_err(|e| {
        tracing::warn!(user, error = %e, source = ?std::error::Error::source(&e), "auth_query lookup failed");
        Error::AuthQuery
    })?;
    Ok(found.map(Cow::Owned))
}

/// Wait for RESUME of the auth_query pool's database, listed meanwhile as PgBouncer 1.18
/// lists such a login (checked live): in SHOW CLIENTS as `(nouser)`, waiting, and in
/// cl_waiting of the auth_user's pool. Listed, it is ended as that database's other clients
/// are, with the same error: by KILL (57P01 `database removed`; PgBouncer 1.18 sends
/// `08P01 database removed`), KILL_CLIENT, a shutdown.
async fn wait_for_resume(
    pool: &crate::pool::Pool,
    listed: NewSession<'_>,
    shared: &Shared,
    mark: u64,
) -> Result<(), Error> {
    let guard = listed_waiting(
        &shared.sessions,
        &shared.gates,
        mark,
        listed,
        &shared.shutdown,
    );
    tokio::select! {
        () = pool.resumed() => Ok(()),
        () = guard.info.killed() => Err(super::serve::ended(shared, &guard.info)),
    }
}

/// List `listed` (database: the auth_query pool's) as waiting for RESUME. Its lookup saw the
/// database paused before it was listed, where KILL finds the clients it ends: a KILL in
/// between (after `mark`, taken before the lookup's pause check) ends it now, as KILL ended
/// the database's other clients, rather than leave it waiting for a RESUME. KILL marks the
/// gates before it ends the listed clients, so one of the two sees the other.
fn listed_waiting(
    sessions: &std::sync::Arc<crate::sessions::Sessions>,
    gates: &crate::gates::Gates,
    mark: u64,
    listed: NewSession<'_>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> crate::sessions::SessionGuard {
    let guard = sessions.register(listed, shutdown);
    // Untimed, as PgBouncer's wait and maxwait stay 0 for it (live).
    guard.info.set_waiting(None);
    if gates.killed_since(&guard.info.database, mark) {
        guard.info.kill_for(crate::sessions::KillReason::Database);
    }
    guard
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::listed_waiting;
    use crate::gates::Gates;
    use crate::sessions::tests::new_session;
    use crate::sessions::{KillReason, Sessions};

    /// KILL as the console runs it (`control::apply`): the gates, then the listed clients.
    fn kill(gates: &Gates, sessions: &Sessions, db: &str) {
        gates.update(|g| g.kill(Some(db)));
        sessions.kill_database(Some(db));
    }

    /// An auth_query login saw its database paused (PAUSE), then KILL came before it was
    /// listed (a window no real cluster can hold open): it is ended as KILL ended the
    /// database's clients, not left waiting for RESUME. One that came once the database was
    /// killed waits, as in PgBouncer (KILL leaves the database paused); a KILL of another
    /// database leaves it waiting too.
    #[test]
    fn a_kill_between_the_pause_check_and_the_listing_ends_the_login() {
        let (gates, sessions) = (Gates::default(), Arc::new(Sessions::default()));
        let root = CancellationToken::new();
        gates.update(|g| {
            g.paused.insert("app".into());
        });
        let mark = gates.kill_mark("app");
        kill(&gates, &sessions, "app");
        let missed = listed_waiting(&sessions, &gates, mark, new_session("app"), &root);
        assert_eq!(missed.info.kill_reason(), Some(KillReason::Database));

        // Came after the KILL: waits for RESUME.
        let mark = gates.kill_mark("app");
        let later = listed_waiting(&sessions, &gates, mark, new_session("app"), &root);
        assert_eq!(later.info.kill_reason(), None);
        kill(&gates, &sessions, "other");
        assert_eq!(later.info.kill_reason(), None);
        // Listed: the next KILL of its database finds it.
        kill(&gates, &sessions, "app");
        assert_eq!(later.info.kill_reason(), Some(KillReason::Database));
    }
}

//! One client session ("frontend"), read top to bottom:
//! handshake -> route -> authenticate -> welcome -> serve -> release.

mod cancel;
mod handshake;
mod login;
mod params;
mod relay;
mod route;
mod serve;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::{timeout, Duration};

use crate::app::Shared;
use crate::config::Config;
use crate::error::{Error, Fault};
use crate::net::Stream;
use crate::pool::ClientSlot;
use crate::protocol::{backend, FramedConn};

pub use cancel::CancelRegistry;
pub use relay::TxTracker;

use handshake::{handshake, Hello};
use params::ClientParams;
use serve::{serve, Session};

/// Where a client connected from.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// Serve one client connection to its end. Every failure the client can be told about becomes
/// a FATAL ErrorResponse with its SQLSTATE.
pub async fn run(stream: Stream, peer: Peer, shared: Arc<Shared>) {
    let config = shared.config.load();
    let mut conn = FramedConn::new(stream);
    let login = timeout(
        config.settings.client_login_timeout,
        // Login is large and short-lived: boxed, so an idle session's task stays small.
        Box::pin(start(&mut conn, &peer, &shared, &config)),
    )
    .await;
    let result = match login {
        Err(_) => Err(Error::LoginTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => return,
        Ok(Ok(Some((session, registration, who)))) => {
            let result = serve(&mut conn, Box::new(session), &shared).await;
            drop(registration);
            if config.settings.log_disconnections {
                tracing::info!(%peer, %who, "client closed");
            }
            result
        }
    };
    if let Err(e) = result {
        report(&mut conn, &peer, &e, &config).await;
    }
}

/// Handshake, route and login; `None` for a cancel request (handled here).
async fn start<'s>(
    conn: &mut FramedConn<Stream>,
    peer: &Peer,
    shared: &'s Shared,
    config: &Config,
) -> Result<Option<(Session, cancel::Registration<'s>, String)>, Error> {
    let startup = match handshake(conn).await? {
        Hello::Cancel(key) => {
            shared.cancels.cancel(key).await;
            return Ok(None);
        }
        Hello::Startup(startup) => startup,
    };
    let route = route::route(&startup, config, &shared.pools)?;
    let who = format!("{}@{}", route.client_user, route.database);
    let secret = config.userlist.get(&route.client_user);
    login::authenticate(
        conn,
        config.settings.auth_type,
        &route.client_user,
        secret,
        &shared.mock_key,
    )
    .await?;
    if config.settings.log_connections {
        tracing::info!(%peer, %who, "login attempt: ok");
    }
    let client_slot = admit(shared, &route.client_user, &route.database, peer)?;
    let params = ClientParams::from_startup(&startup.params, config, &peer.to_string())?;
    let registration = shared.cancels.register();
    let mut session = Session {
        pool: route.pool,
        identity: Arc::from(route.client_user.as_str()),
        _client_slot: client_slot,
        params,
        cancel: Arc::clone(&registration.slot),
        server: None,
    };
    welcome(conn, &mut session, registration.key, shared).await?;
    Ok(Some((session, registration, who)))
}

/// Count the authenticated client against max_user_client_connections and
/// max_db_client_connections (checked after authentication, so that clients without the
/// password cannot use up a user's slots).
fn admit(shared: &Shared, user: &str, db: &str, peer: &Peer) -> Result<ClientSlot, Error> {
    let limits = shared.pools.limits();
    limits.admit_client(user, db).map_err(|limit| {
        let n = limits.rejections.record(user, limit.name());
        tracing::warn!(%peer, user, db, limit = limit.name(), rejections = n, "client connections exceeded");
        Error::ClientLimit(limit)
    })
}

/// AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery. The parameters come from
/// the pool's first server connection; a pool without one makes it now and keeps it.
async fn welcome(
    conn: &mut FramedConn<Stream>,
    session: &mut Session,
    key: crate::protocol::startup::CancelKey,
    shared: &Shared,
) -> Result<(), Error> {
    let reported = match session.pool.welcome() {
        Some(reported) => reported,
        None => {
            let server = serve::checkout(session, shared).await?;
            let reported = Arc::new(server.reported.clone());
            session.server = Some(Box::new(server));
            reported
        }
    };
    let mut buf = BytesMut::new();
    backend::authentication(&mut buf, backend::AUTH_OK, &[]);
    session.params.welcome(&reported, &mut buf);
    backend::backend_key_data(&mut buf, key.pid, key.secret);
    backend::ready_for_query(&mut buf, b'I');
    conn.queue(&buf);
    conn.flush().await.map_err(Error::ClientProtocol)
}

/// Log an error and tell the client, if it is still there to hear it.
async fn report(conn: &mut FramedConn<Stream>, peer: &Peer, error: &Error, config: &Config) {
    if error.is_disconnect() {
        tracing::debug!(%peer, error = %error, "client disconnected");
        return;
    }
    match error.fault() {
        Fault::Client => tracing::info!(%peer, error = %error, "client error"),
        Fault::Server | Fault::Internal if config.settings.log_pooler_errors => {
            tracing::warn!(%peer, error = %error, source = ?std::error::Error::source(error), "pooler error")
        }
        _ => {}
    }
    let mut buf = BytesMut::new();
    error.encode(&mut buf);
    conn.queue(&buf);
    let _ = timeout(Duration::from_secs(1), conn.flush()).await;
}

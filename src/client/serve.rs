//! The session loop (session pool mode): the client keeps one server connection from its first
//! query until it leaves; then the connection is reset and returned, or closed.

use std::sync::Arc;

use crate::app::Shared;
use crate::error::Error;
use crate::net::Stream;
use crate::pool::{ClientSlot, Identity, Pool, PoolError};
use crate::protocol::{frontend, FramedConn};
use crate::server::ServerConn;

use super::cancel::CancelSlot;
use super::params::ClientParams;
use super::relay::{relay, RelayEnd, TxTracker};

/// A logged-in client, ready to be served.
#[derive(Debug)]
pub(super) struct Session {
    pub pool: Arc<Pool>,
    /// Who the client is for fair sharing: its login user name.
    pub identity: Identity,
    /// Counted against the client-connection caps until the session ends.
    pub _client_slot: ClientSlot,
    pub params: ClientParams,
    pub cancel: Arc<CancelSlot>,
    /// A server connection taken during login (to learn the welcome parameters), if any.
    /// Boxed: rare, and an idle session should stay small.
    pub server: Option<Box<ServerConn>>,
}

impl Drop for Session {
    /// A connection taken at login whose session never started (client gone, login timeout)
    /// would otherwise leak its pool slot.
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.pool.abandon(*server);
        }
    }
}

pub(super) async fn serve(
    conn: &mut FramedConn<Stream>,
    mut session: Box<Session>,
    shared: &Shared,
) -> Result<(), Error> {
    let server = match session.server.take() {
        Some(server) => *server,
        None => {
            if !first_request(conn, shared).await? {
                return Ok(());
            }
            Box::pin(checkout(&session, shared)).await?
        }
    };
    // Boxed: an idle session's task then holds only the small wait above.
    Box::pin(active(conn, &session, server, shared)).await
}

/// Relay between the client and its server connection until one of them ends, then give the
/// server connection back (or close it).
async fn active(
    conn: &mut FramedConn<Stream>,
    session: &Session,
    mut server: ServerConn,
    shared: &Shared,
) -> Result<(), Error> {
    let pool = Arc::clone(&session.pool);
    if let Err(e) = session.params.apply(&mut server).await {
        pool.release(server, false).await;
        return Err(e);
    }
    session.cancel.attach(server.addr.clone(), server.key);
    let mut tracker = TxTracker::default();
    let max_message =
        usize::try_from(shared.config.load().settings.max_packet_size).unwrap_or(usize::MAX);
    let end = tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => None,
        end = relay(conn, &mut server.conn, &mut tracker, max_message) => Some(end),
    };
    session.cancel.detach();
    match end {
        Some(RelayEnd::Terminate | RelayEnd::ClientGone) => {
            pool.release(server, tracker.is_idle()).await;
            Ok(())
        }
        Some(RelayEnd::ClientError(e)) => {
            pool.release(server, false).await;
            if e.is_disconnect() {
                Ok(())
            } else {
                Err(Error::ClientProtocol(e))
            }
        }
        Some(RelayEnd::ServerGone) => {
            pool.discard(server).await;
            Err(Error::ServerClosed)
        }
        Some(RelayEnd::ServerError(e)) => {
            pool.discard(server).await;
            Err(Error::ServerLost(e))
        }
        None => {
            pool.discard(server).await;
            Err(Error::Shutdown)
        }
    }
}

/// Wait for the client's first request; false if it leaves (EOF or Terminate) first.
async fn first_request(conn: &mut FramedConn<Stream>, shared: &Shared) -> Result<bool, Error> {
    conn.shrink();
    if conn.rbuf.is_empty() {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return Err(Error::Shutdown),
            ready = conn.io.readable() => ready.map_err(|e| Error::ClientProtocol(e.into()))?,
        }
    }
    tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => return Err(Error::Shutdown),
        read = conn.fill() => match read {
            Ok(()) => {}
            Err(e) if e.is_disconnect() => return Ok(false),
            Err(e) => return Err(Error::ClientProtocol(e)),
        },
    }
    Ok(conn.rbuf.first() != Some(&frontend::TERMINATE))
}

pub(super) async fn checkout(session: &Session, shared: &Shared) -> Result<ServerConn, Error> {
    let wait = crate::config::Config::nonzero(shared.config.load().settings.query_wait_timeout);
    let result = tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => return Err(Error::Shutdown),
        r = session.pool.checkout(&session.identity, &session.params.wanted, wait) => r,
    };
    result.map_err(|e| match e {
        PoolError::WaitTimeout(blocker) => {
            let n = shared.pools.limits().rejections.record(&session.identity, "query_wait_timeout");
            tracing::warn!(user = %session.identity, pool = ?session.pool.key, limit = %blocker, rejections = n, "query_wait_timeout");
            Error::QueryWaitTimeout(blocker)
        }
        PoolError::Connect(e) => Error::ServerLogin(e),
    })
}

//! auth_user + auth_query: look up the secret of a user missing from auth_file by running
//! auth_query (with the user name as `$1`) on a pooled connection as auth_user; answers (found or
//! not) are cached for auth_query_cache_ttl. Secrets are never logged.

use bytes::{Buf, BytesMut};
use dashmap::DashMap;
use postgres_protocol::message::frontend;
use tokio::time::{Duration, Instant};

use super::Secret;
use crate::pool::{Pool, PoolError};
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::ProtocolError;
use crate::server::{ServerConn, ServerError};

/// Entries kept before the cache is cleared (bounds memory under a flood of unknown names).
const MAX_ENTRIES: usize = 10_000;
/// Largest DataRow accepted from auth_query.
const MAX_ROW: usize = 64 * 1024;

/// Why a lookup failed (the client sees a server-login error, never the details).
#[derive(Debug, thiserror::Error)]
pub enum AuthQueryError {
    #[error("auth_query connection failed")]
    Pool(#[from] PoolError),
    #[error("auth_query failed")]
    Server(#[from] ServerError),
    #[error("auth_query failed: {0}")]
    Query(ErrorFields),
}

/// (database, user) -> (when fetched, secret or known absence).
#[derive(Debug, Default)]
pub struct AuthQueryCache {
    map: DashMap<(String, String), (Instant, Option<Secret>)>,
}

impl AuthQueryCache {
    /// The secret for `user`, from the cache or by running `query` on `pool`. A plaintext
    /// answer gets a SCRAM verifier built with `scram_iterations` (off the async workers); a
    /// cached one built with another count (scram_iterations changed since) is not reused.
    pub async fn lookup(
        &self,
        pool: &std::sync::Arc<Pool>,
        query: &str,
        user: &str,
        ttl: Duration,
        scram_iterations: u32,
    ) -> Result<Option<Secret>, AuthQueryError> {
        // Databases may name their own auth_user and auth_query: both are part of the key.
        let key = (
            format!("{}\0{}\0{query}", pool.key.db, pool.key.user),
            user.to_string(),
        );
        if let Some(hit) = self.map.get(&key) {
            let stale = matches!(&hit.1, Some(Secret::Plain { scram, .. })
                if scram.iterations != scram_iterations);
            if hit.0.elapsed() < ttl && !stale {
                return Ok(hit.1.clone());
            }
        }
        let wait =
            crate::pool::Deadline::new(tokio::time::Instant::now(), Some(Duration::from_secs(5)));
        // A paused database (PAUSE, KILL) answers `PoolError::Paused`: the caller lists the
        // login as waiting, and waits for RESUME (or KILL) before it asks again. Asked here
        // as a client's checkout asks it (`client::acquire`): before, as an idle connection
        // is there to take until PAUSE has closed them (once its sessions gave theirs back),
        // and after, for one handed out as PAUSE came; that one goes back, closed.
        if pool.is_paused() {
            return Err(PoolError::Paused.into());
        }
        let server = pool
            .checkout(&pool.key.user, None, &Vec::new, &wait)
            .await?;
        if pool.is_paused() {
            pool.return_unused(server);
            return Err(PoolError::Paused.into());
        }
        // The login waiting for the lookup may be cut short (client_login_timeout) in the
        // middle of the query or the reset: a connection dropped there kept its slot for good
        // (an auth_query pool of one answered no lookup again). During the query a guard closes
        // it, as PgBouncer 1.18 closes it (checked live: `closing because: client disconnect
        // while server was not ready`); the reset runs in a task of its own.
        let mut lent = Lookup {
            pool,
            server: Some(server),
        };
        let result = match lent.server.as_mut() {
            Some(server) => run(server, query, user).await,
            None => Ok(None),
        };
        if let Some(server) = lent.server.take() {
            // pgporter's own query: its answers are all read.
            let (owner, ok) = (std::sync::Arc::clone(pool), result.is_ok());
            let _ = tokio::spawn(async move { owner.release(server, ok, true).await }).await;
        }
        let secret = match result? {
            Some(text) => {
                tokio::task::spawn_blocking(move || Secret::parse(&text, scram_iterations).ok())
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, (Instant::now(), secret.clone()));
        Ok(secret)
    }
}

/// A lookup's connection while its query runs (see [`AuthQueryCache::lookup`]): dropped
/// before the query ended, it is closed and its slot freed.
struct Lookup<'p> {
    pool: &'p Pool,
    server: Option<ServerConn>,
}

impl Drop for Lookup<'_> {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.pool
                .abandon(server, "client disconnect while server was not ready");
        }
    }
}

/// Parse/Bind/Execute/Sync with `$1 = user`; the second column of the first row.
async fn run(
    server: &mut ServerConn,
    query: &str,
    user: &str,
) -> Result<Option<String>, AuthQueryError> {
    let mut buf = BytesMut::new();
    let io = |e| ServerError::Protocol(ProtocolError::Io(e));
    frontend::parse("", query, std::iter::empty(), &mut buf).map_err(io)?;
    frontend::bind(
        "",
        "",
        std::iter::empty::<i16>(),
        [user],
        |value: &str, out: &mut BytesMut| {
            out.extend_from_slice(value.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        &mut buf,
    )
    .map_err(|_| ServerError::Protocol(ProtocolError::Malformed("auth_query bind")))?;
    frontend::execute("", 1, &mut buf).map_err(io)?;
    frontend::sync(&mut buf);
    server.conn.queue(&buf);
    server.conn.flush().await.map_err(ServerError::from)?;
    let mut secret = None;
    let mut error = None;
    loop {
        let msg = server
            .conn
            .read_message(MAX_ROW)
            .await
            .map_err(ServerError::from)?;
        match msg.tag {
            backend::READY_FOR_QUERY => break,
            backend::ERROR_RESPONSE => error = ErrorFields::parse(&msg.body),
            b'D' if secret.is_none() => secret = Some(second_column(msg.body)),
            _ => {}
        }
    }
    match error {
        Some(e) => Err(AuthQueryError::Query(e)),
        None => Ok(secret.flatten()),
    }
}

/// DataRow: i16 count, then (i32 length or -1, bytes) per column.
fn second_column(mut body: bytes::Bytes) -> Option<String> {
    if body.remaining() < 2 || body.get_i16() < 2 {
        return None;
    }
    for column in 0..2 {
        if body.remaining() < 4 {
            return None;
        }
        let len = body.get_i32();
        if len < 0 {
            return None;
        }
        let len = usize::try_from(len).ok()?;
        if body.remaining() < len {
            return None;
        }
        let value = body.split_to(len);
        if column == 1 {
            return String::from_utf8(value.to_vec()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_second_column() {
        let mut row = BytesMut::new();
        row.extend_from_slice(&2i16.to_be_bytes());
        row.extend_from_slice(&3i32.to_be_bytes());
        row.extend_from_slice(b"bob");
        row.extend_from_slice(&5i32.to_be_bytes());
        row.extend_from_slice(b"md5xx");
        assert_eq!(
            second_column(row.clone().freeze()).as_deref(),
            Some("md5xx")
        );
        let mut null = BytesMut::new();
        null.extend_from_slice(&2i16.to_be_bytes());
        null.extend_from_slice(&3i32.to_be_bytes());
        null.extend_from_slice(b"bob");
        null.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(second_column(null.freeze()), None);
        assert_eq!(second_column(row.freeze().slice(..9)), None);
    }
}

//! Giving a server connection back: reset it and return it to the pool, or close it.

use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Duration};

use super::Pool;
use crate::server::{simple_query, QueryOutcome, ServerConn};

impl Pool {
    /// Return `conn` after a client is done with it. `idle` says whether the client left it idle
    /// outside a transaction with nothing in flight; anything else is closed, as is a connection
    /// whose reset fails, errors or takes longer than `reset_timeout`.
    pub async fn release(&self, mut conn: ServerConn, idle: bool) {
        if !idle {
            tracing::debug!(
                pid = conn.pid(),
                "closing server connection left busy by its client"
            );
            return self.discard(conn).await;
        }
        if self.is_retired() {
            tracing::debug!(pid = conn.pid(), pool = ?self.key, "closing a connection of a pool a reload replaced");
            return self.discard(conn).await;
        }
        let settings = self.settings();
        if !settings.reset_query.is_empty() {
            let reset = timeout(
                settings.reset_timeout,
                simple_query(&mut conn, &settings.reset_query),
            )
            .await;
            match reset {
                Ok(Ok(QueryOutcome::Done(b'I'))) => {}
                Ok(Ok(QueryOutcome::Done(status))) => {
                    tracing::warn!(pid = conn.pid(), status = %char::from(status), "reset left the server in a transaction; closing it");
                    return self.discard(conn).await;
                }
                Ok(Ok(QueryOutcome::Failed(e))) => {
                    tracing::warn!(pid = conn.pid(), error = %e, "server_reset_query failed; closing the server connection");
                    return self.discard(conn).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(pid = conn.pid(), error = %e, "server connection failed during reset");
                    return self.discard(conn).await;
                }
                Err(_) => {
                    tracing::warn!(
                        pid = conn.pid(),
                        "server_reset_query timed out; closing the server connection"
                    );
                    return self.discard(conn).await;
                }
            }
        }
        self.checkin(conn);
    }

    /// Give back a connection nobody ran anything on (e.g. one made to learn the welcome
    /// parameters): straight to a waiter or the idle list, no reset. Synchronous, so a login
    /// timeout cannot cut it short and leak the slot.
    pub fn return_unused(&self, conn: ServerConn) {
        if self.is_retired() {
            return self.abandon(conn);
        }
        self.checkin(conn);
    }

    /// Give up a lent connection where it cannot be reset (no async context, e.g. a session
    /// dropped during login): free its slot now and close it in the background.
    pub fn abandon(&self, mut conn: ServerConn) {
        let holder = conn.holder.take();
        self.forget(holder.as_deref());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(terminate(conn));
        }
    }

    /// Close a connection that must not be reused, and free its slot.
    pub async fn discard(&self, mut conn: ServerConn) {
        let holder = conn.holder.take();
        self.forget(holder.as_deref());
        terminate(conn).await;
    }
}

/// Say goodbye (Terminate) so PostgreSQL logs a clean disconnect; bounded, best effort.
pub(crate) async fn terminate(mut conn: ServerConn) {
    const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
    let _ = timeout(Duration::from_secs(1), async {
        conn.conn.io.write_all(&TERMINATE).await?;
        conn.conn.io.shutdown().await
    })
    .await;
}

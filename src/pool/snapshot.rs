//! Read-only views of pools for the admin console and metrics, and the few operations the
//! control requests need (close idle connections, drop a pool from the registry).

use std::sync::Arc;

use tokio::time::Instant;

use super::release::terminate;
use super::{Pool, PoolKey, Pools};
use crate::server::ServerAddr;

/// One idle server connection (SHOW SERVERS).
#[derive(Debug, Clone)]
pub struct IdleServer {
    pub addr: ServerAddr,
    pub pid: i32,
    pub created_at: Instant,
    pub last_used: Instant,
    pub tls: Option<crate::tls::TlsInfo>,
    pub local: Option<std::net::SocketAddr>,
    /// Statements pgporter keeps prepared on it (transaction mode).
    pub prepared: usize,
}

impl IdleServer {
    pub(super) fn of(c: &crate::server::ServerConn) -> IdleServer {
        IdleServer {
            addr: c.addr.clone(),
            pid: c.pid(),
            created_at: c.created_at,
            last_used: c.last_used,
            tls: c.tls,
            local: c.local,
            prepared: c.statements.len(),
        }
    }
}

impl Pool {
    /// The server connections being opened and logged in right now.
    pub fn logins(&self) -> Vec<(std::time::SystemTime, crate::server::LoginSeen)> {
        let logins = self.lock().logins.clone();
        logins.iter().map(|l| (l.started, l.seen())).collect()
    }

    /// The idle server connections right now.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        self.lock().idle.iter().map(IdleServer::of).collect()
    }

    /// The server connections being reset (server_reset_query) right now, which PgBouncer
    /// lists as `tested`.
    pub fn resetting_servers(&self) -> Vec<IdleServer> {
        (self.lock().resets.iter())
            .map(|r| r.server.clone())
            .collect()
    }

    /// Close every idle server connection (PAUSE, KILL, RECONNECT, reload); their slots are
    /// freed in the pool and in the database / user limits, and waiters are woken. A login
    /// under way is closed when it gets in if its client gave up meanwhile, or was opened for
    /// min_pool_size (else the client gets a connection logged in afresh or, its database
    /// paused, waits for RESUME): as PgBouncer, which closes its logins at once, nothing opened
    /// before survives idle in the pool. The count of drops is bumped with the idle list
    /// drained, under the lock (see `Inner::cuts`). `reason`: what their log_disconnections
    /// lines say.
    pub async fn close_idle(&self, reason: &'static str) {
        let idle: Vec<_> = {
            let mut inner = self.lock();
            inner.cuts += 1;
            inner.cut_reason = reason;
            let idle: Vec<_> = inner.idle.drain(..).collect();
            self.drop_slot(&mut inner, u32::try_from(idle.len()).unwrap_or(u32::MAX));
            idle
        };
        // Resets under way on connections lent before this drop stop and close them.
        self.cut.notify_waiters();
        if idle.is_empty() {
            return;
        }
        self.limits.wake(&self.key);
        for conn in idle {
            self.log_close(&conn, reason);
            terminate(conn).await;
        }
    }
}

impl Pools {
    /// Forget a pool: new sessions get a fresh one; sessions holding this one keep it.
    pub fn remove(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.map.remove(key).map(|(_, p)| p)
    }
}

//! Cancel keys: each client gets a BackendKeyData of pgporter's own; a CancelRequest with it is
//! forwarded to the server connection the client holds at that moment (its session's registry
//! entry says which: linked while the client is served, cleared before the server is released).

use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;

use crate::protocol::startup::CancelKey;
use crate::server::{send_cancel, ServerAddr};
use crate::sessions::{CancelTarget, SessionInfo};

#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: DashMap<CancelKey, Arc<SessionInfo>>,
}

/// Removes the key when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub key: CancelKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.remove(&self.key);
    }
}

impl CancelRegistry {
    /// A fresh unique key for a new client session.
    pub fn register(self: &Arc<Self>, session: &Arc<SessionInfo>) -> Registration {
        let mut rng = rand::thread_rng();
        loop {
            let key = CancelKey {
                pid: rng.gen_range(1..i32::MAX),
                secret: rng.gen(),
            };
            if let dashmap::Entry::Vacant(e) = self.map.entry(key) {
                e.insert(Arc::clone(session));
                return Registration {
                    registry: Arc::clone(self),
                    key,
                };
            }
        }
    }

    /// Forward a cancel for `key`, if it names a live session holding a server connection.
    /// Unknown or stale keys are ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, key: CancelKey) {
        let session = self.map.get(&key).map(|s| Arc::clone(&s));
        // In flight until delivered: the session does not give the connection back before.
        let target = session.map_or(CancelTarget::Nothing, |s| s.begin_cancel());
        let (link, _in_flight) = match target {
            CancelTarget::Server(link, in_flight) => (link, in_flight),
            CancelTarget::Waiting => {
                tracing::debug!("cancel request for a session waiting for a server");
                return;
            }
            CancelTarget::Nothing => {
                tracing::debug!("cancel request for an unknown or idle session ignored");
                return;
            }
        };
        let addr = ServerAddr::new(&link.addr, link.port);
        let server_key = CancelKey {
            pid: link.pid,
            secret: link.secret,
        };
        if let Err(e) = send_cancel(&addr, server_key).await {
            tracing::warn!(server = %addr, error = %e, "could not forward cancel request");
        }
    }
}

//! Cancel keys: each client gets a BackendKeyData of pgporter's own; a CancelRequest with it is
//! forwarded to the server connection the client holds at that moment.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rand::Rng;

use crate::protocol::startup::CancelKey;
use crate::server::{send_cancel, ServerAddr};

/// Where a client's cancel goes right now (None while it holds no server connection).
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<(ServerAddr, CancelKey)>>,
}

impl CancelSlot {
    pub fn attach(&self, addr: ServerAddr, key: CancelKey) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr, key));
    }
    pub fn detach(&self) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    fn get(&self) -> Option<(ServerAddr, CancelKey)> {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: DashMap<CancelKey, Arc<CancelSlot>>,
}

/// Removes the key when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub key: CancelKey,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.remove(&self.key);
    }
}

impl CancelRegistry {
    /// A fresh unique key for a new client session.
    pub fn register(self: &Arc<Self>) -> Registration {
        let slot = Arc::new(CancelSlot::default());
        let mut rng = rand::thread_rng();
        loop {
            let key = CancelKey {
                pid: rng.gen_range(1..i32::MAX),
                secret: rng.gen(),
            };
            if let dashmap::Entry::Vacant(e) = self.map.entry(key) {
                e.insert(slot.clone());
                return Registration {
                    registry: Arc::clone(self),
                    key,
                    slot,
                };
            }
        }
    }

    /// Forward a cancel for `key`, if it names a live session holding a server connection.
    /// Unknown or stale keys are ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, key: CancelKey) {
        let target = self.map.get(&key).and_then(|slot| slot.get());
        let Some((addr, server_key)) = target else {
            tracing::debug!("cancel request for an unknown or idle session ignored");
            return;
        };
        if let Err(e) = send_cancel(&addr, server_key).await {
            tracing::warn!(server = %addr, error = %e, "could not forward cancel request");
        }
    }
}

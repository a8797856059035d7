//! Cancel keys: each client gets a BackendKeyData of pgporter's own; a CancelRequest with it is
//! forwarded to the server connection the client holds at that moment (its session's registry
//! entry says which: linked while the client is served, cleared before the server is released).
//!
//! With `peer_id` set, a key names the process that issued it, so that a peer (another
//! pgporter behind the same address, see `[peers]`) that receives the CancelRequest forwards
//! it there: the key's process id is `peer_id << 16` plus 16 random bits, and the low two
//! bits of its secret are a hop count, lowered at each forward (a cancel that has been
//! forwarded three times is dropped, so a misconfigured group cannot pass one around for
//! ever). The secret's other 30 bits and the 16 random bits keep keys unguessable.

use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;

use crate::config::Config;
use crate::protocol::startup::CancelKey;
use crate::server::{send_cancel, ServerAddr};
use crate::sessions::{CancelTarget, SessionInfo};

/// The hop count bits of a peered key's secret; a key is issued with all of them set.
const HOPS: i32 = 0b11;

#[derive(Debug, Default)]
pub struct CancelRegistry {
    map: DashMap<CancelKey, Arc<SessionInfo>, crate::FastHash>,
    /// `peer_id` at start-up (0 = no peering); it cannot change while keys are out.
    peer_id: u16,
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
    pub fn new(peer_id: u16) -> CancelRegistry {
        CancelRegistry {
            map: DashMap::default(),
            peer_id,
        }
    }

    /// A fresh unique key for a new client session.
    pub fn register(self: &Arc<Self>, session: &Arc<SessionInfo>) -> Registration {
        let mut rng = rand::thread_rng();
        loop {
            let key = match self.peer_id {
                0 => CancelKey {
                    pid: rng.gen_range(1..i32::MAX),
                    secret: rng.gen(),
                },
                id => CancelKey {
                    pid: i32::from(id) << 16 | rng.gen_range(0..=0xffff),
                    secret: rng.gen::<i32>() | HOPS,
                },
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

    /// Forward a cancel for `key`: to the server connection of the live session it names,
    /// or (peering) to the peer that issued it. Unknown or stale keys are ignored silently,
    /// as PostgreSQL does.
    pub async fn cancel(&self, key: CancelKey, config: &Config) {
        let issuer = u16::try_from(key.pid >> 16).unwrap_or(0);
        if self.peer_id != 0 && issuer != self.peer_id {
            self.forward(key, issuer, config).await;
            return;
        }
        let local = match self.peer_id {
            0 => key,
            // However many hops it took to get here.
            _ => CancelKey {
                secret: key.secret | HOPS,
                ..key
            },
        };
        let Some(session) = self.map.get(&local).map(|s| Arc::clone(&s)) else {
            tracing::debug!("cancel request for an unknown or idle session ignored");
            return;
        };
        // In flight until delivered: the session does not give the connection back before.
        let target = session.begin_cancel();
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
        let since = tokio::time::Instant::now();
        if let Err(e) = send_cancel(&addr, server_key, connect_timeout(config)).await {
            if config.settings.log_disconnections {
                // PgBouncer 1.18's line for its cancel connection (live: `closing because:
                // connect failed`, named by the pool of the query it was to cancel).
                let (db, user) = (&session.database, &session.pool_user);
                let (reason, age) = (e.close_reason(), since.elapsed().as_secs());
                tracing::info!(db = %db, user = %user, addr = %addr, reason, error = %e, age, "server closed");
            } else {
                tracing::warn!(server = %addr, error = %e, "could not forward cancel request");
            }
        }
    }

    /// A cancel for a key `peer` issued: on to that peer, one hop less.
    async fn forward(&self, key: CancelKey, peer: u16, config: &Config) {
        let hops = key.secret & HOPS;
        let Some(to) = config.peers.get(&peer).filter(|_| hops > 0) else {
            tracing::debug!(
                peer,
                hops,
                "cancel request for an unknown peer, or out of hops, ignored"
            );
            return;
        };
        let addr = ServerAddr::new(&to.addr.host, to.addr.port);
        let key = CancelKey {
            secret: key.secret & !HOPS | (hops - 1),
            ..key
        };
        if let Err(e) = send_cancel(&addr, key, connect_timeout(config)).await {
            tracing::warn!(peer, to = %addr, error = %e, "could not forward cancel request to peer");
        }
    }
}

/// How long forwarding a cancel may take to connect: server_connect_timeout.
fn connect_timeout(config: &Config) -> std::time::Duration {
    Config::limit(config.settings.server_connect_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peered_keys_name_their_issuer_with_all_hops() {
        let registry = Arc::new(CancelRegistry::new(16383));
        let sessions = Arc::new(crate::sessions::Sessions::default());
        let guard = sessions.register(
            crate::sessions::tests::new_session("a"),
            &tokio_util::sync::CancellationToken::new(),
        );
        for _ in 0..100 {
            let r = registry.register(&guard.info);
            assert_eq!(r.key.pid >> 16, 16383);
            assert!(r.key.pid > 0);
            assert_eq!(r.key.secret & HOPS, HOPS);
        }
        let unpeered = Arc::new(CancelRegistry::new(0)).register(&guard.info);
        assert!(unpeered.key.pid > 0);
    }
}

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
    /// as PostgreSQL does; what became of the request is returned for its client's closing
    /// line. The server connection's lines are PgBouncer 1.18's (live): `new connection to
    /// server` (log_connections), `started sending cancel request` (always, as PgBouncer
    /// logs it), `closing because: successfully sent cancel request` (log_disconnections).
    pub(super) async fn cancel(&self, key: CancelKey, config: &Config) -> Cancelled {
        let issuer = u16::try_from(key.pid >> 16).unwrap_or(0);
        if self.peer_id != 0 && issuer != self.peer_id {
            self.forward(key, issuer, config).await;
            return Cancelled::ToPeer;
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
            tracing::debug!("cancel request for an unknown session ignored");
            return Cancelled::Unknown;
        };
        // In flight until delivered: the session does not give the connection back before.
        let target = session.begin_cancel();
        let (link, _in_flight) = match target {
            CancelTarget::Server(link, in_flight) => (link, in_flight),
            CancelTarget::Waiting => {
                tracing::debug!("cancel request for a session waiting for a server");
                return Cancelled::Waiting(Arc::clone(&session.database));
            }
            CancelTarget::Nothing => {
                tracing::debug!("cancel request for an idle session ignored");
                return Cancelled::Idle;
            }
        };
        let addr = ServerAddr::new(&link.addr, link.port);
        let server_key = CancelKey {
            pid: link.pid,
            secret: link.secret,
        };
        let since = tokio::time::Instant::now();
        let s = &config.settings;
        let (db, user) = (&session.database, &session.pool_user);
        let sent = |local: Option<std::net::SocketAddr>| {
            if s.log_connections {
                let local: &dyn std::fmt::Display = match &local {
                    Some(a) => a,
                    None => &"unix",
                };
                tracing::info!(db = %db, user = %user, addr = %addr, %local, "new connection to server");
            }
            tracing::info!("started sending cancel request");
        };
        let age = || since.elapsed().as_secs();
        match send_cancel(&addr, server_key, connect_timeout(config), sent).await {
            Ok(()) => {
                if s.log_disconnections {
                    let (reason, age) = (SENT, age());
                    tracing::info!(db = %db, user = %user, addr = %addr, reason, age, "server closed");
                }
                Cancelled::Sent(Arc::clone(db))
            }
            Err(e) => {
                if s.log_disconnections {
                    // PgBouncer 1.18's line for its cancel connection (live: `closing
                    // because: connect failed`, named by the pool of the query it was to
                    // cancel).
                    let (reason, age) = (e.close_reason(), age());
                    tracing::info!(db = %db, user = %user, addr = %addr, reason, error = %e, age, "server closed");
                } else {
                    tracing::warn!(server = %addr, error = %e, "could not forward cancel request");
                }
                Cancelled::NotSent(Arc::clone(db))
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
        if let Err(e) = send_cancel(&addr, key, connect_timeout(config), |_| {}).await {
            tracing::warn!(peer, to = %addr, error = %e, "could not forward cancel request to peer");
        }
    }
}

/// PgBouncer's reason for the close of a cancel request's connections, client and server.
const SENT: &str = "successfully sent cancel request";

/// What became of a cancel request: its connection's closing line says it.
#[derive(Debug)]
pub(super) enum Cancelled {
    /// Sent to the server connection of a session of this database (PgBouncer names the
    /// cancel's connection by the pool it went to, its user unknown).
    Sent(Arc<str>),
    /// Its connection to that server failed (the server's closing line says how).
    NotSent(Arc<str>),
    /// Its session of this database was waiting for a server: the wait was cancelled.
    Waiting(Arc<str>),
    /// No session has the key: a wrong key, or its client gone.
    Unknown,
    /// Its session has no server connection: nothing runs that could be cancelled.
    Idle,
    /// Passed on to the peer that issued the key.
    ToPeer,
}

impl Cancelled {
    /// The database its closing line names (none: PgBouncer's `(nodb)`), and why it closed:
    /// PgBouncer 1.18's words (live), pgporter's own for a waiting session and a failed
    /// send (PgBouncer keeps the request until it gets through); none for a request passed
    /// on to a peer.
    pub(super) fn close(&self) -> Option<(Option<&str>, &'static str)> {
        Some(match self {
            Cancelled::Sent(db) => (Some(db), SENT),
            Cancelled::NotSent(db) => (Some(db), "failed to send cancel request"),
            Cancelled::Waiting(db) => (Some(db), "cancel request for waiting client"),
            Cancelled::Unknown => (None, "failed cancel request"),
            Cancelled::Idle => (None, "cancel request for idle client"),
            Cancelled::ToPeer => return None,
        })
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

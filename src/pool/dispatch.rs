//! Who gets what is free: idle connections and open slots go to waiters in fair order, within
//! the pool size (plus the reserve for clients that waited long enough), each identity's
//! share, and the cross-pool limits. Everything here runs under the pool lock and does no I/O;
//! connections to close are handed back and closed afterwards by [`Pool::settle`].

use tokio::time::Instant;

use super::limits::{Blocker, PoolLimits};
use super::{expired, Grant, Inner, Pool, PoolSettings};
use crate::server::ServerConn;

/// A connection to close, and why (its log_disconnections line).
pub(super) type Closing = (ServerConn, &'static str);

/// PgBouncer's reason for an idle connection closed over the pool's size (or a limit).
const TOO_MANY: &str = "too many servers in the pool";

impl Pool {
    /// Re-run the dispatch: after a reload, a freed cross-pool slot, or as a periodic check.
    pub(super) fn poke(&self) {
        let settings = self.settings();
        let (close, blocker) = {
            let mut inner = self.lock();
            if inner.waiters.is_empty() && inner.idle.is_empty() {
                return;
            }
            let close = self.dispatch(&mut inner, &settings);
            // Still waiting: on what now? A client that waited on max_db_connections and on
            // its own max_user_connections, once the database has room, is held back only by
            // an idle connection of its user in another pool (nothing returns that one).
            let front = inner
                .waiters
                .front()
                .map(|w| (w.identity.clone(), w.reserve));
            let blocker = front
                .map(|(identity, reserve)| self.blocker(&inner, &settings, &identity, reserve));
            (close, blocker)
        };
        self.settle(close);
        if let Some(b) = blocker {
            self.limits.evict_for(&self.key, b);
        }
    }

    /// Serve waiters with what is free now; returns connections to close, and why (idle ones
    /// over the pool size or over a lowered limit, and expired ones met on the way).
    pub(super) fn dispatch(&self, inner: &mut Inner, settings: &PoolSettings) -> Vec<Closing> {
        let lim = self.resolved(inner, settings);
        let mut close = Vec::new();
        inner.waiters.prune();
        while !inner.waiters.is_empty() {
            let room = self.limits.room(&self.key, &lim);
            let total = inner.total;
            let idle = !inner.idle.is_empty();
            let pick = inner.waiters.pick(lim.order, &inner.holders, |w, held| {
                if lim.share_cap.is_some_and(|cap| held >= cap) {
                    return false;
                }
                // The pool size (and the reserve) bound the connections opened; an idle one,
                // a reserve connection included, serves whoever comes, as in PgBouncer.
                if idle {
                    !room.over
                } else {
                    total < lim.cap(w.reserve) && room.open.is_ok()
                }
            });
            let Some(seq) = pick else { break };
            let conn = if idle {
                let (tag, reserve) = inner
                    .waiters
                    .get(seq)
                    .map(|w| (w.tag.clone(), w.reserve))
                    .unwrap_or_default();
                let free_slot = total < lim.cap(reserve) && room.open.is_ok();
                take_idle(
                    &mut inner.idle,
                    tag.as_ref(),
                    free_slot,
                    settings.round_robin,
                )
            } else {
                None
            };
            let grant = if let Some(mut conn) = conn {
                if let Some(why) = expired(&conn, settings, Instant::now()) {
                    self.drop_slot(inner, 1);
                    close.push((conn, why));
                    continue;
                }
                conn.lent_at = inner.cuts;
                Grant::Conn(conn)
            } else {
                inner.total += 1;
                self.limits.add_server(&self.key);
                Grant::Permit
            };
            let Some(waiter) = inner.waiters.remove(seq) else {
                break;
            };
            match waiter.tx.send(grant) {
                Ok(()) => inner.holders.add(&waiter.identity),
                // The waiter vanished (not by today's callers: a waiter leaves the queue
                // before its receiver goes): kept idle, unless its database is paused (or
                // the pool retired), as any connection coming back unused.
                Err(Grant::Conn(conn)) => match self.unwanted(inner, None) {
                    Some(why) => {
                        self.drop_slot(inner, 1);
                        close.push((conn, why.reason()));
                    }
                    None => inner.idle.push_back(conn),
                },
                Err(Grant::Permit) => self.drop_slot(inner, 1),
            }
        }
        self.trim(inner, &lim, &mut close);
        close
    }

    /// This pool's limits (cached per configuration snapshot).
    fn resolved(&self, inner: &mut Inner, settings: &PoolSettings) -> PoolLimits {
        (self.limits).resolve_cached(&self.key, settings, &mut inner.resolved)
    }

    /// With nobody waiting, an idle connection tagged `tag` that `identity` may have now,
    /// taken straight off the idle list (what [`Pool::dispatch`] would grant a lone waiter,
    /// without queueing); None: queue as usual.
    pub(super) fn take_now(
        &self,
        inner: &mut Inner,
        settings: &PoolSettings,
        identity: &super::Identity,
        tag: Option<&std::sync::Arc<str>>,
    ) -> Option<ServerConn> {
        if !inner.waiters.is_empty() {
            return None;
        }
        let lim = self.resolved(inner, settings);
        let held = inner.holders.get(identity);
        let over = (lim.max_db > 0 || lim.max_user > 0) && self.limits.room(&self.key, &lim).over;
        if lim.share_cap.is_some_and(|cap| held >= cap) || over {
            return None;
        }
        let at = matching(&inner.idle, tag, settings.round_robin)?;
        if expired(inner.idle.get(at)?, settings, Instant::now()).is_some() {
            return None;
        }
        let mut conn = inner.idle.remove(at)?;
        inner.holders.add(identity);
        conn.lent_at = inner.cuts;
        Some(conn)
    }

    /// Idle connections beyond the pool size and its reserve (a smaller size after a reload)
    /// or over a lowered cross-pool limit are closed. Reserve connections stay, as in
    /// PgBouncer, until server_idle_timeout: under a lasting overload each client would
    /// otherwise wait reserve_pool_timeout again, and log in again.
    fn trim(&self, inner: &mut Inner, lim: &PoolLimits, close: &mut Vec<Closing>) {
        while !inner.idle.is_empty()
            && (inner.total > lim.cap(true) || self.limits.room(&self.key, lim).over)
        {
            if let Some(conn) = inner.idle.pop_front() {
                self.drop_slot(inner, 1);
                close.push((conn, TOO_MANY));
            }
        }
    }

    /// `n` connections counted in `total` are gone.
    pub(super) fn drop_slot(&self, inner: &mut Inner, n: u32) {
        inner.total = inner.total.saturating_sub(n);
        self.limits.remove_servers(&self.key, n);
    }

    /// After the lock is released: close what dispatch set aside (in the background, this is
    /// the rare path) and, as slots were freed, let sibling pools' waiters have them.
    pub(super) fn settle(&self, close: Vec<Closing>) {
        if close.is_empty() {
            return;
        }
        for (conn, reason) in close {
            self.log_close(&conn, reason);
            self.close_later(conn);
        }
        self.limits.wake(&self.key);
    }

    /// Why a client of `identity` is still waiting (for the query_wait_timeout error).
    pub(super) fn blocker(
        &self,
        inner: &Inner,
        settings: &PoolSettings,
        identity: &str,
        reserve: bool,
    ) -> Blocker {
        let lim = self.limits.resolve(&self.key, settings);
        if lim
            .share_cap
            .is_some_and(|cap| inner.holders.get(identity) >= cap)
        {
            return Blocker::MaxUserPoolShare;
        }
        if inner.total >= lim.cap(reserve) {
            return Blocker::PoolSize;
        }
        self.limits
            .room(&self.key, &lim)
            .open
            .err()
            .unwrap_or(Blocker::PoolSize)
    }

    /// A clean, reset connection comes back: to the best waiter, else onto the idle list (or
    /// closed if the pool is over its limits). When another pool sharing a full
    /// max_db_connections / max_user_connections is owed the slot (`Limits::owed_elsewhere`),
    /// the connection is closed instead and the slot goes to that pool's client.
    /// One lent before a drop of the pool's connections (KILL, RECONNECT, PAUSE) is closed:
    /// a KILL while its client gave it back (its reset running) had nothing idle to close, and
    /// the connection went idle in the killed, paused pool after. Compared under the lock, as
    /// `close_idle` bumps the count; the reason is asked only then.
    pub(super) fn checkin(&self, conn: ServerConn) {
        let lent_at = conn.lent_at;
        self.checkin_unless(conn, |inner| {
            (lent_at != inner.cuts)
                .then(|| self.unwanted(inner, Some(lent_at)))
                .flatten()
        });
    }

    /// [`Pool::checkin`], unless `unwanted` (asked under the pool lock, where the connection
    /// would be queued or kept idle) gives a reason: then the connection is closed and its
    /// slot freed. One step, so that no drop of the pool's connections (`close_idle`, under
    /// the same lock) can come between the check and the check-in. Returns whether it was
    /// kept. `checkin` passes a comparison of two counts: the per-transaction path does
    /// little more than before.
    #[inline]
    pub(super) fn checkin_unless(
        &self,
        mut conn: ServerConn,
        unwanted: impl FnOnce(&Inner) -> Option<super::Unwanted>,
    ) -> bool {
        let holder = conn.holder.take();
        conn.conn.shrink();
        // Idle from now: server_idle_timeout and server_check_delay count from here.
        conn.last_used = Instant::now();
        let settings = self.settings();
        // Only when a limit is shared with other pools (max_db_connections,
        // max_user_connections): a look at every sibling pool on each return is not free.
        let shared = {
            let lim = self.resolved(&mut self.lock(), &settings);
            lim.max_db > 0 || lim.max_user > 0
        };
        // Asked before taking the lock: the siblings' locks are taken on the way.
        let owed = shared && {
            let own = self.counts();
            own.waiting > 0 && self.limits.owed_elsewhere(&self.key, own.total)
        };
        if owed {
            tracing::debug!(pid = conn.pid(), pool = ?self.key, "another pool sharing a full limit holds fewer connections: closing this one for its client");
            let mut inner = self.lock();
            if let Some(h) = &holder {
                inner.holders.sub(h);
            }
            self.drop_slot(&mut inner, 1);
            drop(inner);
            // The sibling is poked first and takes the slot; this pool's own waiters are
            // looked at after, in case its client left meanwhile.
            self.settle(vec![(conn, TOO_MANY)]);
            self.poke();
            return false;
        }
        let (close, unwanted) = {
            let mut inner = self.lock();
            if let Some(h) = &holder {
                inner.holders.sub(h);
            }
            let unwanted = match unwanted(&inner) {
                Some(why) => {
                    self.drop_slot(&mut inner, 1);
                    Some((why, conn))
                }
                None => {
                    inner.idle.push_back(conn);
                    None
                }
            };
            (self.dispatch(&mut inner, &settings), unwanted)
        };
        self.settle(close);
        if let Some((why, conn)) = unwanted {
            tracing::debug!(pid = conn.pid(), pool = ?self.key, "closing a server connection instead of keeping it: {}", why.why());
            self.log_close(&conn, why.reason());
            self.close_later(conn);
            self.limits.wake(&self.key);
            return false;
        }
        if shared {
            self.limits.offer_idle(self);
        }
        true
    }

    /// A connection counted in `total` (held by `holder`, if lent) is gone: free its slot for
    /// this pool's waiters, then for sibling pools'.
    pub(super) fn forget(&self, holder: Option<&str>) {
        let settings = self.settings();
        let close = {
            let mut inner = self.lock();
            if let Some(h) = holder {
                inner.holders.sub(h);
            }
            self.drop_slot(&mut inner, 1);
            self.dispatch(&mut inner, &settings)
        };
        self.settle(close);
        self.limits.wake(&self.key);
    }

    /// Close one idle connection to make room in another pool; false if none is idle.
    pub(super) fn evict_one_idle(&self) -> bool {
        let conn = {
            let mut inner = self.lock();
            let Some(conn) = inner.idle.pop_front() else {
                return false;
            };
            self.drop_slot(&mut inner, 1);
            conn
        };
        // PgBouncer's word for a connection closed for another pool's client.
        self.settle(vec![(conn, "evicted")]);
        true
    }
}

/// The idle connection for a waiter wanting `tag`: one with that tag (see [`matching`]);
/// else, when no slot is free, the least recently used one of another tag (the waiter closes
/// it and connects in its slot); else none (connect a new one in the free slot).
fn take_idle(
    idle: &mut std::collections::VecDeque<ServerConn>,
    tag: Option<&std::sync::Arc<str>>,
    free_slot: bool,
    round_robin: bool,
) -> Option<ServerConn> {
    match matching(idle, tag, round_robin) {
        Some(i) => idle.remove(i),
        None if free_slot => None,
        None => idle.pop_front(),
    }
}

/// Where the idle connection tagged `tag` to reuse is (the list runs from least to most
/// recently used): the most recently used, so that the others idle out (PgBouncer's
/// default), or with server_round_robin the least recently used, so that use is spread.
fn matching(
    idle: &std::collections::VecDeque<ServerConn>,
    tag: Option<&std::sync::Arc<str>>,
    round_robin: bool,
) -> Option<usize> {
    let tagged = |c: &ServerConn| c.identity_tag.as_ref() == tag;
    if round_robin {
        idle.iter().position(tagged)
    } else {
        idle.iter().rposition(tagged)
    }
}

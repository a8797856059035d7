//! The wait queue of one pool, with fair sharing by client identity.
//!
//! Pure bookkeeping (no locks, no I/O): the pool keeps a [`Waiters`] and a [`Holders`] under
//! its mutex. When a server connection or a connection slot frees up, [`Waiters::pick`] names
//! the waiter to serve: with fair sharing, the one whose identity holds the fewest connections
//! of the pool (ties: the longest waiting); without, simply the longest waiting. Waiters the
//! caller rules out (over their identity's share, or needing the reserve pool they may not use
//! yet) are skipped, not blocking the ones behind them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::oneshot;

/// Who a client is for fair sharing: its login user name (clients sharing a forced backend
/// user through a [databases] `user=` keep distinct identities).
pub type Identity = Arc<str>;

/// How the next waiter is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Fewest connections held by the waiter's identity, then longest waiting.
    Fair,
    /// Longest waiting (PgBouncer's order).
    Fifo,
}

/// One waiting checkout; `T` is what it is handed.
#[derive(Debug)]
pub(super) struct Waiter<T> {
    pub seq: u64,
    pub identity: Identity,
    /// Waited past reserve_pool_timeout: may use the reserve pool.
    pub reserve: bool,
    /// The session tag a server connection must carry for this waiter (`crate::identity`).
    pub tag: Option<Arc<str>>,
    pub tx: oneshot::Sender<T>,
}

/// Waiters in arrival order.
#[derive(Debug)]
pub(super) struct Waiters<T> {
    queue: VecDeque<Waiter<T>>,
    next_seq: u64,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            queue: VecDeque::new(),
            next_seq: 0,
        }
    }
}

impl<T> Waiters<T> {
    /// Queue a waiter; returns its sequence number and the receiving end of its grant.
    #[cfg(test)]
    pub(super) fn push(&mut self, identity: Identity) -> (u64, oneshot::Receiver<T>) {
        self.push_tagged(identity, None)
    }

    /// Queue a waiter that wants connections tagged `tag`.
    pub(super) fn push_tagged(
        &mut self,
        identity: Identity,
        tag: Option<Arc<str>>,
    ) -> (u64, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Waiter {
            seq,
            identity,
            reserve: false,
            tag,
            tx,
        });
        (seq, rx)
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The longest-waiting waiter.
    pub(super) fn front(&self) -> Option<&Waiter<T>> {
        self.queue.front()
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Waiter<T>> {
        self.queue.iter().find(|w| w.seq == seq)
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Waiter<T>> {
        self.queue.iter_mut().find(|w| w.seq == seq)
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<Waiter<T>> {
        let at = self.queue.iter().position(|w| w.seq == seq)?;
        self.queue.remove(at)
    }

    /// Drop every waiter: their receivers see the channel closed.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Drop waiters whose client gave up (receiver gone).
    pub(super) fn prune(&mut self) {
        self.queue.retain(|w| !w.tx.is_closed());
    }

    /// The waiter to serve next among those `eligible(waiter, held)` accepts, where `held` is
    /// what the waiter's identity holds now.
    pub(super) fn pick(
        &self,
        order: Order,
        holders: &Holders,
        mut eligible: impl FnMut(&Waiter<T>, u32) -> bool,
    ) -> Option<u64> {
        let mut best: Option<(u32, u64)> = None;
        // Waiters of one identity queue in runs (its sessions): look its holdings up once.
        let mut last: Option<(&str, u32)> = None;
        for w in &self.queue {
            let held = match last {
                Some((identity, held)) if identity == &*w.identity => held,
                _ => {
                    let held = holders.get(&w.identity);
                    last = Some((&w.identity, held));
                    held
                }
            };
            if !eligible(w, held) {
                continue;
            }
            match order {
                Order::Fifo => return Some(w.seq),
                // Holding nothing: no one can come before it.
                Order::Fair if held == 0 => return Some(w.seq),
                // The queue is in arrival order, so the first of equal `held` waited longest.
                Order::Fair if best.map_or(true, |(h, _)| held < h) => best = Some((held, w.seq)),
                Order::Fair => {}
            }
        }
        best.map(|(_, seq)| seq)
    }
}

/// Server connections of one pool held per identity (lent out, or being connected for it).
#[derive(Debug, Default)]
pub(super) struct Holders {
    map: HashMap<Identity, u32, crate::FastHash>,
}

impl Holders {
    pub(super) fn get(&self, identity: &str) -> u32 {
        self.map.get(identity).copied().unwrap_or(0)
    }

    pub(super) fn add(&mut self, identity: &Identity) {
        *self.map.entry(Arc::clone(identity)).or_insert(0) += 1;
    }

    pub(super) fn sub(&mut self, identity: &str) {
        if let Some(n) = self.map.get_mut(identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.map.remove(identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Arc::from(s)
    }

    fn queue(names: &[&str]) -> (Waiters<()>, Vec<oneshot::Receiver<()>>) {
        let mut w = Waiters::default();
        let rx = names.iter().map(|n| w.push(id(n)).1).collect();
        (w, rx)
    }

    fn name(w: &Waiters<()>, seq: Option<u64>) -> Option<String> {
        seq.and_then(|s| w.get(s)).map(|w| w.identity.to_string())
    }

    #[test]
    fn fair_prefers_the_identity_holding_least() {
        let (w, _rx) = queue(&["a", "a", "b", "c"]);
        let mut h = Holders::default();
        for _ in 0..3 {
            h.add(&id("a"));
        }
        h.add(&id("b"));
        // c holds nothing: served first although it arrived last.
        assert_eq!(
            name(&w, w.pick(Order::Fair, &h, |_, _| true)),
            Some("c".into())
        );
        // FIFO ignores holdings.
        assert_eq!(
            name(&w, w.pick(Order::Fifo, &h, |_, _| true)),
            Some("a".into())
        );
    }

    #[test]
    fn ties_go_to_the_longest_waiting() {
        let (mut w, _rx) = queue(&["x", "y", "z"]);
        let h = Holders::default();
        assert_eq!(w.pick(Order::Fair, &h, |_, _| true), Some(0));
        w.remove(0);
        assert_eq!(w.pick(Order::Fair, &h, |_, _| true), Some(1));
    }

    #[test]
    fn ineligible_waiters_are_skipped() {
        let (w, _rx) = queue(&["a", "b"]);
        let mut h = Holders::default();
        h.add(&id("a"));
        h.add(&id("a"));
        // Share cap of 2: a is over it, b is served.
        let cap = |_: &Waiter<()>, held: u32| held < 2;
        assert_eq!(name(&w, w.pick(Order::Fair, &h, cap)), Some("b".into()));
        assert_eq!(name(&w, w.pick(Order::Fifo, &h, cap)), Some("b".into()));
        assert_eq!(w.pick(Order::Fair, &h, |_, _| false), None);
    }

    #[test]
    fn holders_count_and_forget() {
        let mut h = Holders::default();
        h.add(&id("a"));
        h.add(&id("a"));
        assert_eq!(h.get("a"), 2);
        h.sub("a");
        h.sub("a");
        h.sub("a");
        assert_eq!(h.get("a"), 0);
        assert!(h.map.is_empty());
    }

    #[test]
    fn prune_drops_abandoned_waiters() {
        let (mut w, mut rx) = queue(&["a", "b"]);
        rx.remove(0);
        w.prune();
        assert_eq!(w.len(), 1);
        assert_eq!(
            name(&w, w.pick(Order::Fifo, &Holders::default(), |_, _| true)),
            Some("b".into())
        );
    }
}

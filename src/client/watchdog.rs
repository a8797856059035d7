//! PgBouncer's `query_timeout`, `idle_transaction_timeout` and `transaction_timeout` for a
//! session holding a server connection. As in PgBouncer, they apply only while the server is
//! not idle outside a transaction: `query_timeout` counts from the client's last request (so
//! it also ends a transaction left idle that long), `idle_transaction_timeout` from the
//! server's last message while the session sits idle inside a transaction,
//! `transaction_timeout` from the request that took the server out of idle. Each ends the
//! session; the server connection is closed, not reused.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Which limit ended the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeout {
    Query,
    IdleTransaction,
    Transaction,
}

impl Timeout {
    /// What the session ends with.
    pub(super) fn error(self) -> crate::error::Error {
        use crate::error::Error;
        match self {
            Timeout::Query => Error::QueryTimeout,
            Timeout::IdleTransaction => Error::IdleTransactionTimeout,
            Timeout::Transaction => Error::TransactionTimeout,
        }
    }

    /// PgBouncer's reason in the close line of the server connection it ends (`query
    /// timeout`: live, PgBouncer 1.18).
    pub(super) fn close_reason(self) -> &'static str {
        match self {
            Timeout::Query => "query timeout",
            Timeout::IdleTransaction => "idle transaction timeout",
            Timeout::Transaction => "transaction timeout",
        }
    }
}

/// The limits, from the settings (zero: off).
/// query_timeout, idle_transaction_timeout, transaction_timeout (0 = off), as the config
/// resolves them for the session's pool user.
pub(super) type Limits = crate::config::SessionTimeouts;

/// What the relay's tracker says about the server after a wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerState {
    /// Idle outside a transaction, nothing in flight: no limit runs.
    Ready,
    /// Answering, or a batch not yet synced.
    Busy,
    /// Idle inside a transaction block (status T or E).
    IdleInTransaction,
}

#[derive(Debug)]
pub(super) struct Watchdog {
    query: Option<Duration>,
    idle_transaction: Option<Duration>,
    transaction: Option<Duration>,
    last_request: Instant,
    last_server: Instant,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Watchdog {
    /// None when no limit is set (the relay then pays nothing).
    pub(super) fn new(limits: Limits) -> Option<Watchdog> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let query = nonzero(limits.query);
        let idle_transaction = nonzero(limits.idle_transaction);
        let transaction = nonzero(limits.transaction);
        if query.is_none() && idle_transaction.is_none() && transaction.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(Watchdog {
            query,
            idle_transaction,
            transaction,
            last_request: now,
            last_server: now,
            sleep: Box::pin(tokio::time::sleep_until(now)),
            armed: None,
        })
    }

    /// The limits changed (reload): a watchdog with the new ones, keeping the times of the
    /// last request and server message of `old`, or without one, counting from `busy_since`
    /// (the start of the request in progress); None when no limit is set now.
    pub(super) fn retimed(
        old: Option<Watchdog>,
        busy_since: Option<Instant>,
        limits: Limits,
    ) -> Option<Watchdog> {
        let mut new = Watchdog::new(limits)?;
        if let Some(old) = old {
            new.last_request = old.last_request;
            new.last_server = old.last_server;
        } else if let Some(since) = busy_since {
            new.last_request = since;
        }
        Some(new)
    }

    /// The client sent bytes of a request outside the relay: query_timeout counts from now.
    pub(super) fn requested(&mut self) {
        self.last_request = Instant::now();
    }

    /// After a wake of the relay that is not finished: `up` / `down` = whether client / server
    /// bytes moved; `xact_since`: when the transaction in progress began (the request that
    /// took the server out of idle, or the end of the previous transaction when requests were
    /// pipelined behind it; kept by the stats meter, so it holds across a reload that turns a
    /// limit on). Ready with the limit that ran out.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        up: bool,
        down: bool,
        server: ServerState,
        xact_since: Option<Instant>,
    ) -> Poll<Timeout> {
        if up || down {
            let now = Instant::now();
            if up {
                self.last_request = now;
            }
            if down {
                self.last_server = now;
            }
        }
        // A limit past the clock's range (the config takes any number of seconds) never runs
        // out: `checked_add`, where `+` panicked.
        let query = (self.query)
            .and_then(|q| self.last_request.checked_add(q))
            .map(|at| (at, Timeout::Query));
        let idle = match (server, self.idle_transaction) {
            (ServerState::IdleInTransaction, Some(limit)) => (self.last_server)
                .checked_add(limit)
                .map(|at| (at, Timeout::IdleTransaction)),
            _ => None,
        };
        let transaction = match (xact_since, self.transaction) {
            (Some(since), Some(limit)) => since
                .checked_add(limit)
                .map(|at| (at, Timeout::Transaction)),
            _ => None,
        };
        let due = match server {
            ServerState::Ready => None,
            _ => [query, idle, transaction]
                .into_iter()
                .flatten()
                .min_by_key(|(at, _)| *at),
        };
        let Some((at, which)) = due else {
            self.armed = None;
            return Poll::Pending;
        };
        if self.armed != Some(at) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(which),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(query: u64, idle_transaction: u64, transaction: u64) -> Limits {
        Limits {
            query: Duration::from_secs(query),
            idle_transaction: Duration::from_secs(idle_transaction),
            transaction: Duration::from_secs(transaction),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transaction_timeout_counts_from_the_start_of_the_transaction() {
        let mut w = Watchdog::new(limits(0, 0, 5)).unwrap();
        let at = |w: &mut Watchdog, s, since| {
            let waker = std::task::Waker::noop();
            w.poll(&mut Context::from_waker(waker), false, false, s, since)
        };
        assert!(at(&mut w, ServerState::Ready, None).is_pending());
        tokio::time::advance(Duration::from_secs(60)).await;
        // A transaction of statements that keep coming, each answered.
        let begun = Some(Instant::now());
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(at(&mut w, ServerState::IdleInTransaction, begun).is_pending());
            assert!(at(&mut w, ServerState::Busy, begun).is_pending());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            at(&mut w, ServerState::Busy, begun),
            Poll::Ready(Timeout::Transaction)
        );
        // Begun before the limit was turned on (a reload): counted from its start.
        let begun = Some(Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        let mut w = Watchdog::new(limits(0, 0, 5)).unwrap();
        assert!(at(&mut w, ServerState::IdleInTransaction, begun).is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            at(&mut w, ServerState::IdleInTransaction, begun),
            Poll::Ready(Timeout::Transaction)
        );
        // Outside a transaction nothing runs.
        assert!(at(&mut w, ServerState::Ready, None).is_pending());
    }

    fn poll(w: &mut Watchdog, up: bool, down: bool, s: ServerState) -> Poll<Timeout> {
        let waker = std::task::Waker::noop();
        w.poll(&mut Context::from_waker(waker), up, down, s, None)
    }

    /// A limit past what a clock can count (the config takes up to u64::MAX seconds) never
    /// runs out; adding it to the time of the last request panicked the session's task.
    #[tokio::test(start_paused = true)]
    async fn a_limit_past_the_clocks_range_never_runs_out() {
        let huge = crate::config::SessionTimeouts {
            query: Duration::MAX,
            idle_transaction: Duration::from_secs(u64::MAX / 2),
            transaction: Duration::from_secs(10_000_000_000_000_000_000),
        };
        let mut w = Watchdog::new(huge).unwrap();
        let at = |w: &mut Watchdog, s, since| {
            let waker = std::task::Waker::noop();
            w.poll(&mut Context::from_waker(waker), false, false, s, since)
        };
        let begun = Some(Instant::now());
        assert!(poll(&mut w, true, false, ServerState::Busy).is_pending());
        assert!(at(&mut w, ServerState::IdleInTransaction, begun).is_pending());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(at(&mut w, ServerState::IdleInTransaction, begun).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn limits_run_only_while_the_server_is_not_ready() {
        assert!(Watchdog::new(limits(0, 0, 0)).is_none());
        let mut w = Watchdog::new(limits(10, 3, 0)).unwrap();
        assert!(poll(&mut w, true, false, ServerState::Busy).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        // The answer came: idle in a transaction, 3 s from the server's last message.
        assert!(poll(&mut w, false, true, ServerState::IdleInTransaction).is_pending());
        tokio::time::advance(Duration::from_millis(2900)).await;
        assert!(poll(&mut w, false, false, ServerState::IdleInTransaction).is_pending());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(
            poll(&mut w, false, false, ServerState::IdleInTransaction),
            Poll::Ready(Timeout::IdleTransaction)
        );
        // A reload shortening the limit: counted from the same last request.
        let mut w = Watchdog::new(limits(60, 0, 0)).unwrap();
        assert!(poll(&mut w, true, false, ServerState::Busy).is_pending());
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut w = Watchdog::retimed(Some(w), None, limits(4, 0, 0)).unwrap();
        assert_eq!(
            poll(&mut w, false, false, ServerState::Busy),
            Poll::Ready(Timeout::Query)
        );
        assert!(Watchdog::retimed(Some(w), None, limits(0, 0, 0)).is_none());
        // A limit set by a reload while a request runs: counted from the request's start.
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut w = Watchdog::retimed(None, Some(start), limits(4, 0, 0)).unwrap();
        assert_eq!(
            poll(&mut w, false, false, ServerState::Busy),
            Poll::Ready(Timeout::Query)
        );
        // Ready: nothing runs however long.
        let mut w = Watchdog::new(limits(10, 0, 0)).unwrap();
        assert!(poll(&mut w, true, true, ServerState::Ready).is_pending());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(poll(&mut w, false, false, ServerState::Ready).is_pending());
        // Busy: from the client's last request.
        assert!(poll(&mut w, true, false, ServerState::Busy).is_pending());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(poll(&mut w, false, true, ServerState::Busy).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            poll(&mut w, false, false, ServerState::Busy),
            Poll::Ready(Timeout::Query)
        );
    }
}

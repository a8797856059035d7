//! PgBouncer's `query_timeout` and `idle_transaction_timeout` for a session holding a server
//! connection. As in PgBouncer, both apply only while the server is not idle outside a
//! transaction: `query_timeout` counts from the client's last request (so it also ends a
//! transaction left idle that long), `idle_transaction_timeout` from the server's last
//! message while the session sits idle inside a transaction. Either ends the session; the
//! server connection is closed, not reused.

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
}

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
    last_request: Instant,
    last_server: Instant,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Watchdog {
    /// None when neither limit is set (the relay then pays nothing).
    pub(super) fn new(query: Duration, idle_transaction: Duration) -> Option<Watchdog> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let (query, idle_transaction) = (nonzero(query), nonzero(idle_transaction));
        if query.is_none() && idle_transaction.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(Watchdog {
            query,
            idle_transaction,
            last_request: now,
            last_server: now,
            sleep: Box::pin(tokio::time::sleep_until(now)),
            armed: None,
        })
    }

    /// The limits changed (reload): a watchdog with the new ones, keeping the times of the
    /// last request and server message of `old`, or without one, counting from `busy_since`
    /// (the start of the request in progress); None when neither limit is set now.
    pub(super) fn retimed(
        old: Option<Watchdog>,
        busy_since: Option<Instant>,
        query: Duration,
        idle_transaction: Duration,
    ) -> Option<Watchdog> {
        let mut new = Watchdog::new(query, idle_transaction)?;
        if let Some(old) = old {
            new.last_request = old.last_request;
            new.last_server = old.last_server;
        } else if let Some(since) = busy_since {
            new.last_request = since;
        }
        Some(new)
    }

    /// After a wake of the relay that is not finished: `up` / `down` = whether client / server
    /// bytes moved. Ready with the limit that ran out.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        up: bool,
        down: bool,
        server: ServerState,
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
        let query = self.query.map(|q| (self.last_request + q, Timeout::Query));
        let idle = match (server, self.idle_transaction) {
            (ServerState::IdleInTransaction, Some(limit)) => {
                Some((self.last_server + limit, Timeout::IdleTransaction))
            }
            _ => None,
        };
        let due = match server {
            ServerState::Ready => None,
            _ => [query, idle]
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

    fn poll(w: &mut Watchdog, up: bool, down: bool, s: ServerState) -> Poll<Timeout> {
        let waker = std::task::Waker::noop();
        w.poll(&mut Context::from_waker(waker), up, down, s)
    }

    #[tokio::test(start_paused = true)]
    async fn limits_run_only_while_the_server_is_not_ready() {
        assert!(Watchdog::new(Duration::ZERO, Duration::ZERO).is_none());
        let mut w = Watchdog::new(Duration::from_secs(10), Duration::from_secs(3)).unwrap();
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
        let mut w = Watchdog::new(Duration::from_secs(60), Duration::ZERO).unwrap();
        assert!(poll(&mut w, true, false, ServerState::Busy).is_pending());
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut w =
            Watchdog::retimed(Some(w), None, Duration::from_secs(4), Duration::ZERO).unwrap();
        assert_eq!(
            poll(&mut w, false, false, ServerState::Busy),
            Poll::Ready(Timeout::Query)
        );
        assert!(Watchdog::retimed(Some(w), None, Duration::ZERO, Duration::ZERO).is_none());
        // A limit set by a reload while a request runs: counted from the request's start.
        let start = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut w =
            Watchdog::retimed(None, Some(start), Duration::from_secs(4), Duration::ZERO).unwrap();
        assert_eq!(
            poll(&mut w, false, false, ServerState::Busy),
            Poll::Ready(Timeout::Query)
        );
        // Ready: nothing runs however long.
        let mut w = Watchdog::new(Duration::from_secs(10), Duration::ZERO).unwrap();
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

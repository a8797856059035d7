//! How long a checkout may wait: a deadline that a reload can move. PgBouncer's janitor
//! measures every waiting client against the current query_wait_timeout, so a reload that
//! shortens it ends long waits at once and one that lengthens it lets them go on; a fixed
//! timer set when the wait began could do neither.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::Notify;
use tokio::time::{sleep_until, Duration, Instant};

/// A wait's limit, counted from its start.
#[derive(Debug)]
pub struct Deadline {
    started: Instant,
    /// Nanoseconds after `started`; [`NONE`] = no limit.
    after: AtomicU64,
    moved: Notify,
}

const NONE: u64 = u64::MAX;

impl Deadline {
    pub fn new(started: Instant, limit: Option<Duration>) -> Self {
        Deadline {
            started,
            after: AtomicU64::new(nanos(limit)),
            moved: Notify::new(),
        }
    }

    /// When the wait must end (None: never).
    pub fn at(&self) -> Option<Instant> {
        match self.after.load(Relaxed) {
            NONE => None,
            n => Some(self.started + Duration::from_nanos(n)),
        }
    }

    /// The time left (None: no limit).
    pub fn left(&self) -> Option<Duration> {
        self.at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// A new limit, still counted from the start; the waits follow it if it changed.
    pub fn set(&self, limit: Option<Duration>) {
        if self.after.swap(nanos(limit), Relaxed) != nanos(limit) {
            self.moved.notify_waiters();
        }
    }

    /// Resolves once the deadline has passed, following [`Self::set`]; never without one.
    pub async fn passed(&self) {
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            match self.at() {
                None => moved.await,
                Some(at) => tokio::select! {
                    () = sleep_until(at) => return,
                    () = moved => {}
                },
            }
        }
    }
}

fn nanos(limit: Option<Duration>) -> u64 {
    limit.map_or(NONE, |l| u64::try_from(l.as_nanos()).unwrap_or(NONE - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_moved_deadline_is_followed() {
        let d = Deadline::new(Instant::now(), Some(Duration::from_secs(60)));
        let waited = Instant::now();
        tokio::select! {
            () = d.passed() => panic!("passed early"),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Shortened below what has already passed: over at once.
        d.set(Some(Duration::from_secs(2)));
        d.passed().await;
        assert_eq!(waited.elapsed(), Duration::from_secs(5));
        // Lengthened while waiting: the wait goes on until the new limit.
        let d = Deadline::new(Instant::now(), Some(Duration::from_secs(2)));
        let start = Instant::now();
        let passed = d.passed();
        tokio::pin!(passed);
        tokio::select! {
            () = &mut passed => panic!("passed early"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        d.set(Some(Duration::from_secs(10)));
        passed.await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // No limit: set to none, it never passes; a limit set later applies.
        d.set(None);
        assert_eq!((d.at(), d.left()), (None, None));
        tokio::select! {
            () = d.passed() => panic!("passed without a limit"),
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

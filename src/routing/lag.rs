//! Replay lag of a standby, measured by its monitor.
//!
//! Bytes: received but not yet replayed WAL. Time: how long the oldest unreplayed WAL has
//! been waiting, from a history of the receive positions seen at each check. (The usual
//! `now() - pg_last_xact_replay_timestamp()` is not used: after an idle period it reports the
//! whole idle time as lag the moment new WAL arrives, taking every standby out of rotation.)
//! The time is a lower bound, short by up to one health_check_period.

use std::collections::VecDeque;

use tokio::time::{Duration, Instant};

/// Receive positions are remembered at most this many checks back.
const HISTORY: usize = 4096;

/// One standby's receive history.
#[derive(Debug, Default)]
pub(super) struct LagTracker {
    /// (receive position, when first seen), positions increasing.
    seen: VecDeque<(u64, Instant)>,
    /// Since when the standby (which streamed before) has had no WAL receiver: it may be
    /// missing any amount of WAL, so its lag is at least the time since.
    unfed_since: Option<Instant>,
}

/// A lag measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lag {
    pub bytes: u64,
    pub time: Duration,
}

impl LagTracker {
    /// Record a check: WAL received up to `receive`, replayed up to `replay`, a WAL receiver
    /// running (`fed`) or not, at `now`.
    pub(super) fn observe(&mut self, receive: u64, replay: u64, fed: bool, now: Instant) -> Lag {
        if self.seen.back().map_or(true, |(lsn, _)| receive > *lsn) {
            if self.seen.len() == HISTORY {
                self.seen.pop_front();
            }
            self.seen.push_back((receive, now));
        }
        // Everything up to `replay` is replayed: forget it.
        while self.seen.front().is_some_and(|(lsn, _)| *lsn <= replay) {
            self.seen.pop_front();
        }
        let bytes = receive.saturating_sub(replay);
        let mut time = match self.seen.front() {
            Some((_, since)) if bytes > 0 => now.saturating_duration_since(*since),
            _ => Duration::ZERO,
        };
        if fed {
            self.unfed_since = None;
        } else {
            let since = *self.unfed_since.get_or_insert(now);
            time = time.max(now.saturating_duration_since(since));
        }
        Lag { bytes, time }
    }

    /// The host is a primary or unreachable: start over.
    pub(super) fn reset(&mut self) {
        self.seen.clear();
        self.unfed_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_then_busy_is_not_lag() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut lag = LagTracker::default();
        assert_eq!(lag.observe(100, 100, true, t0).time, Duration::ZERO);
        // Hours of idling, then a write arrives and is replayed within a check.
        let t1 = t0 + 3600 * s;
        let l = lag.observe(200, 150, true, t1);
        assert_eq!((l.bytes, l.time), (50, Duration::ZERO));
        assert_eq!(lag.observe(200, 200, true, t1 + s).time, Duration::ZERO);
    }

    #[test]
    fn paused_replay_grows() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut lag = LagTracker::default();
        lag.observe(100, 100, true, t0);
        // Replay stops at 100; WAL keeps coming.
        lag.observe(150, 100, true, t0 + s);
        lag.observe(300, 100, true, t0 + 2 * s);
        let l = lag.observe(400, 100, true, t0 + 4 * s);
        assert_eq!((l.bytes, l.time), (300, 3 * s));
        // Replay resumes up to 150: the oldest waiting WAL is the one seen at t0 + 2s.
        let l = lag.observe(400, 150, true, t0 + 5 * s);
        assert_eq!((l.bytes, l.time), (250, 3 * s));
        let l = lag.observe(400, 400, true, t0 + 6 * s);
        assert_eq!((l.bytes, l.time), (0, Duration::ZERO));
    }

    #[test]
    fn history_is_bounded() {
        let t0 = Instant::now();
        let mut lag = LagTracker::default();
        for i in 0..(HISTORY as u64 + 10) {
            lag.observe(i + 1, 0, true, t0 + Duration::from_millis(i));
        }
        assert_eq!(lag.seen.len(), HISTORY);
    }

    #[test]
    fn a_standby_without_a_wal_receiver_lags_by_the_time_since() {
        let mut lag = LagTracker::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(lag.observe(100, 100, false, t0).time, Duration::ZERO);
        assert_eq!(lag.observe(100, 100, false, t0 + 3 * s).time, 3 * s);
        assert_eq!(lag.observe(100, 100, true, t0 + 4 * s).time, Duration::ZERO);
    }
}

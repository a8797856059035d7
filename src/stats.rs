//! Counters (a sink: imports nothing upstream). For now: failed logins per user, for the log
//! line and, later, SHOW STATS / metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Distinct user names tracked before the rest are counted under [`OTHER_USERS`], so that a
/// client trying random names cannot grow the map without bound.
const MAX_TRACKED_USERS: usize = 10_000;
pub const OTHER_USERS: &str = "(other)";

/// Failed logins per user name, plus a total.
#[derive(Debug, Default)]
pub struct AuthFailures {
    per_user: DashMap<String, AtomicU64>,
    total: AtomicU64,
}

impl AuthFailures {
    /// Count a failure for `user`; returns that user's count so far.
    pub fn record(&self, user: &str) -> u64 {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.per_user.get(user) {
            return n.fetch_add(1, Ordering::Relaxed) + 1;
        }
        let key = if self.per_user.len() < MAX_TRACKED_USERS {
            user
        } else {
            OTHER_USERS
        };
        let entry = self.per_user.entry(key.to_string()).or_default();
        entry.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn get(&self, user: &str) -> u64 {
        self.per_user
            .get(user)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_caps() {
        let f = AuthFailures::default();
        assert_eq!(f.record("alice"), 1);
        assert_eq!(f.record("alice"), 2);
        assert_eq!(f.get("alice"), 2);
        for i in 0..MAX_TRACKED_USERS + 5 {
            f.record(&format!("u{i}"));
        }
        assert!(f.per_user.len() <= MAX_TRACKED_USERS + 1);
        assert!(f.get(OTHER_USERS) >= 5);
        assert_eq!(f.total(), 2 + MAX_TRACKED_USERS as u64 + 5);
    }
}

//! Per-user rejection counters (client caps at login, query_wait_timeout), kept for the
//! admin console and metrics to read; each rejection is also logged where it happens.

use std::collections::HashMap;
use std::sync::Mutex;

/// Rejections by (login user, limit name).
#[derive(Debug, Default)]
pub struct Rejections {
    map: Mutex<HashMap<(String, &'static str), u64>>,
}

impl Rejections {
    /// Count one rejection of `user` by `limit`; returns the user's total for that limit.
    pub fn record(&self, user: &str, limit: &'static str) -> u64 {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry((user.to_string(), limit)).or_insert(0);
        *n += 1;
        *n
    }

    /// How often `user` was turned away by `limit`.
    pub fn get(&self, user: &str, limit: &'static str) -> u64 {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(user.to_string(), limit)).copied().unwrap_or(0)
    }

    /// Every counter as (user, limit, count), sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = map.iter().map(|((u, l), n)| (u.clone(), *l, *n)).collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_user_and_limit() {
        let r = Rejections::default();
        assert_eq!(r.record("alice", "max_user_client_connections"), 1);
        assert_eq!(r.record("alice", "max_user_client_connections"), 2);
        r.record("bob", "query_wait_timeout");
        assert_eq!(r.get("alice", "max_user_client_connections"), 2);
        assert_eq!(r.get("bob", "max_user_client_connections"), 0);
        assert_eq!(
            r.snapshot(),
            vec![
                ("alice".to_string(), "max_user_client_connections", 2),
                ("bob".to_string(), "query_wait_timeout", 1)
            ]
        );
    }
}

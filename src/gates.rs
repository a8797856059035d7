//! PAUSE / DISABLE state: which databases may hand out server connections and accept new
//! clients. A `watch` channel so paused sessions wait without polling and RESUME wakes them.

use std::collections::BTreeSet;

use tokio::sync::watch;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateState {
    /// PAUSE without a database (also SIGUSR1).
    pub all_paused: bool,
    /// PAUSE db / KILL db.
    pub paused: BTreeSet<String>,
    /// Paused by KILL, not PAUSE: a bare KILL (`all_paused` then), `KILL db` (in `paused`).
    /// RESUME lifts it with the pause. PgBouncer's close lines tell them apart (`database
    /// removed`, `pause mode`).
    pub all_killed: bool,
    pub killed: BTreeSet<String>,
    /// DISABLE db.
    pub disabled: BTreeSet<String>,
    /// Databases reached through `*` that PAUSE, KILL, DISABLE, RECONNECT or WAIT_CLOSE named:
    /// registered as PgBouncer's find_or_register_database registers them, so SHOW DATABASES
    /// lists them and RESUME / ENABLE find them, pool or not.
    pub registered: BTreeSet<String>,
}

impl GateState {
    pub fn is_paused(&self, db: &str) -> bool {
        self.all_paused || self.paused.contains(db)
    }
    pub fn is_disabled(&self, db: &str) -> bool {
        self.disabled.contains(db)
    }
    /// Paused by KILL (bare or of `db`), and not resumed since.
    pub fn is_killed(&self, db: &str) -> bool {
        (self.all_paused && self.all_killed)
            || (self.paused.contains(db) && self.killed.contains(db))
    }
    /// Paused on its own (`PAUSE db`): what PgBouncer's SHOW DATABASES `paused` reports (a
    /// bare PAUSE shows in SHOW STATE instead).
    pub fn paused_alone(&self, db: &str) -> bool {
        self.paused.contains(db)
    }
    /// `db` is paused, disabled or registered on its own.
    pub fn names(&self, db: &str) -> bool {
        self.paused.contains(db) || self.disabled.contains(db) || self.registered.contains(db)
    }
}

#[derive(Debug)]
pub struct Gates {
    tx: watch::Sender<GateState>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            tx: watch::Sender::new(GateState::default()),
        }
    }
}

impl Gates {
    pub fn state(&self) -> GateState {
        self.tx.borrow().clone()
    }
    pub fn is_paused(&self, db: &str) -> bool {
        self.tx.borrow().is_paused(db)
    }
    pub fn is_disabled(&self, db: &str) -> bool {
        self.tx.borrow().is_disabled(db)
    }
    pub fn is_killed(&self, db: &str) -> bool {
        self.tx.borrow().is_killed(db)
    }
    pub fn update(&self, f: impl FnOnce(&mut GateState)) {
        self.tx.send_modify(f);
    }

    /// How many wait for a RESUME ([`Gates::wait_unpaused`]) now.
    pub fn waiting(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Resolve once `db` is not paused.
    pub async fn wait_unpaused(&self, db: &str) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`; an error cannot happen while we borrow it.
        let _ = rx.wait_for(|s| !s.is_paused(db)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_by_kill_is_told_from_pause_until_resume() {
        let mut s = GateState::default();
        s.paused.insert("a".into());
        assert!(s.is_paused("a") && !s.is_killed("a"));
        s.killed.insert("a".into());
        assert!(s.is_killed("a") && !s.is_killed("b"));
        // RESUME a: both go.
        s.paused.remove("a");
        s.killed.remove("a");
        assert!(!s.is_killed("a"));
        // A bare KILL: every database; a bare RESUME lifts it.
        (s.all_paused, s.all_killed) = (true, true);
        assert!(s.is_killed("b"));
        (s.all_paused, s.all_killed) = (false, false);
        assert!(!s.is_killed("b"));
    }

    #[tokio::test]
    async fn pause_and_resume_wakes_waiters() {
        let g = std::sync::Arc::new(Gates::default());
        g.update(|s| {
            s.paused.insert("a".into());
        });
        assert!(g.is_paused("a"));
        assert!(!g.is_paused("b"));
        let g2 = std::sync::Arc::clone(&g);
        let waiter = tokio::spawn(async move { g2.wait_unpaused("a").await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        g.update(|s| {
            s.paused.remove("a");
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}

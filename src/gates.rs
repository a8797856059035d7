//! PAUSE / DISABLE state: which databases may hand out server connections and accept new
//! clients. A `watch` channel so paused sessions wait without polling and RESUME wakes them.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateState {
    /// PAUSE without a database (also SIGUSR1).
    pub all_paused: bool,
    /// PAUSE db / KILL db.
    pub paused: BTreeSet<String>,
    /// Paused by KILL, not PAUSE: a bare KILL (`all_paused` then), `KILL db` (in `paused`),
    /// each with the number of its latest KILL (`all_killed` 0: none). RESUME lifts it with
    /// the pause. PgBouncer's close lines tell them apart (`database removed`, `pause mode`).
    pub all_killed: u64,
    pub killed: BTreeMap<String, u64>,
    /// KILLs so far: each takes the next number (see [`GateState::kill_mark`]).
    pub kills: u64,
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
        (self.all_paused && self.all_killed != 0)
            || (self.paused.contains(db) && self.killed.contains_key(db))
    }
    /// KILL of `db` (None: a bare KILL): paused, and marked as killed.
    pub fn kill(&mut self, db: Option<&str>) {
        self.kills += 1;
        match db {
            Some(d) => {
                self.paused.insert(d.to_string());
                self.killed.insert(d.to_string(), self.kills);
            }
            None => {
                self.all_paused = true;
                self.all_killed = self.kills;
            }
        }
    }
    /// The number of the latest KILL still in force for `db` (0: none). It only grows but by
    /// RESUME, so a KILL came after a mark taken earlier iff the mark is now exceeded
    /// ([`GateState::killed_since`]): a task that saw `db` paused before it was listed where
    /// KILL ends its clients can tell whether a KILL missed it.
    pub fn kill_mark(&self, db: &str) -> u64 {
        let own = self.killed.get(db).copied().unwrap_or(0);
        own.max(self.all_killed)
    }
    /// A KILL of `db` came after `mark` was taken ([`GateState::kill_mark`]).
    pub fn killed_since(&self, db: &str, mark: u64) -> bool {
        self.kill_mark(db) > mark
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
    pub fn kill_mark(&self, db: &str) -> u64 {
        self.tx.borrow().kill_mark(db)
    }
    pub fn killed_since(&self, db: &str, mark: u64) -> bool {
        self.tx.borrow().killed_since(db, mark)
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
        s.kill(Some("a"));
        assert!(s.is_killed("a") && !s.is_killed("b"));
        // RESUME a: both go.
        s.paused.remove("a");
        s.killed.remove("a");
        assert!(!s.is_killed("a"));
        // A bare KILL: every database; a bare RESUME lifts it.
        s.kill(None);
        assert!(s.is_killed("b"));
        (s.all_paused, s.all_killed) = (false, 0);
        assert!(!s.is_killed("b"));
    }

    #[test]
    fn a_kill_after_a_mark_is_told_from_one_before_it() {
        let mut s = GateState::default();
        s.kill(Some("a"));
        // Taken after the KILL (a login that came once a was killed): not exceeded.
        let mark = s.kill_mark("a");
        assert!(!s.killed_since("a", mark));
        // KILL of another database, and a RESUME: not a KILL of a.
        s.kill(Some("b"));
        assert!(!s.killed_since("a", mark));
        s.paused.remove("a");
        s.killed.remove("a");
        assert!(!s.killed_since("a", mark));
        // KILL of a again, after RESUME and after the mark; a bare KILL too.
        s.kill(Some("a"));
        assert!(s.killed_since("a", mark));
        let mark = s.kill_mark("c");
        s.kill(None);
        assert!(s.killed_since("c", mark));
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

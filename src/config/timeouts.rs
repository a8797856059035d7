//! Timeouts as the current snapshot resolves them: PgBouncer 1.24+'s per-user values in
//! [users] first, then (for query_wait_timeout and server_lifetime) the [databases] entry's,
//! then [pgbouncer]'s. A resolved 0 means no limit, as in [pgbouncer].
//!
//! Which user, as in PgBouncer's janitor: the limits watched while a server connection is
//! held (query, idle_transaction, transaction) are the pool user's (the server connection's
//! login user, a database's forced `user=` when it has one); the ones on the client side
//! (query_wait_timeout, client_idle_timeout) are those of the user the client logged in as.

use std::time::Duration;

use super::{Config, UserEntry};

/// The limits a session's relay watches (see `client::watchdog`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTimeouts {
    pub query: Duration,
    pub idle_transaction: Duration,
    pub transaction: Duration,
}

impl Config {
    /// `user`'s [users] value of one timeout, else `global`.
    fn per_user(
        &self,
        user: &str,
        pick: fn(&UserEntry) -> Option<Duration>,
        global: Duration,
    ) -> Duration {
        self.users.get(user).and_then(pick).unwrap_or(global)
    }

    /// query_timeout, idle_transaction_timeout and transaction_timeout of sessions whose
    /// pool logs in as `pool_user`.
    pub fn session_timeouts(&self, pool_user: &str) -> SessionTimeouts {
        let s = &self.settings;
        SessionTimeouts {
            query: self.per_user(pool_user, |u| u.query_timeout, s.query_timeout),
            idle_transaction: self.per_user(
                pool_user,
                |u| u.idle_transaction_timeout,
                s.idle_transaction_timeout,
            ),
            transaction: self.per_user(pool_user, |u| u.transaction_timeout, s.transaction_timeout),
        }
    }

    /// How long a client of database `db` logged in as `login_user` waits for a server
    /// connection.
    pub fn query_wait_timeout(&self, db: &str, login_user: &str) -> Duration {
        let database = self.database(db).and_then(|e| e.query_wait_timeout);
        self.per_user(
            login_user,
            |u| u.query_wait_timeout,
            database.unwrap_or(self.settings.query_wait_timeout),
        )
    }

    /// client_idle_timeout of clients logged in as `login_user`.
    pub fn client_idle_timeout(&self, login_user: &str) -> Duration {
        self.per_user(
            login_user,
            |u| u.client_idle_timeout,
            self.settings.client_idle_timeout,
        )
    }

    /// server_lifetime of the server connections of database `db`.
    pub fn server_lifetime(&self, db: &str) -> Duration {
        self.database(db)
            .and_then(|e| e.server_lifetime)
            .unwrap_or(self.settings.server_lifetime)
    }
}

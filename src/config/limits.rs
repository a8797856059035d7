//! Connection limits as the current snapshot resolves them: per-database entries and [users]
//! overrides first, then the [pgbouncer] defaults. 0 always means "no limit".
//!
//! Pools and the login path call these on every decision with the live snapshot, so a reload
//! changes limits without touching connected clients.

use super::Config;

/// `max_user_pool_share`: how much of one pool a single client identity may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolShare {
    /// At most this many server connections.
    Count(u32),
    /// At most this percentage (1..=100) of the pool size, rounded up, at least 1.
    Percent(u32),
}

impl PoolShare {
    /// The cap in connections for a pool of `size`.
    pub fn cap(self, size: u32) -> u32 {
        match self {
            PoolShare::Count(n) => n,
            PoolShare::Percent(p) => {
                let cap = (u64::from(size) * u64::from(p)).div_ceil(100);
                u32::try_from(cap).unwrap_or(u32::MAX).max(1)
            }
        }
    }
}

/// `5` (connections), `50%` (of the pool size); `0` = no cap.
pub(super) fn parse_pool_share(v: &str) -> Result<Option<PoolShare>, String> {
    let t = v.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match super::settings::parse_u32(p) {
            Ok(0) => Ok(None),
            Ok(p) if p <= 100 => Ok(Some(PoolShare::Percent(p))),
            _ => Err(format!("{v:?} is not a percentage (1% ..= 100%)")),
        };
    }
    match super::settings::parse_u32(t)? {
        0 => Ok(None),
        n => Ok(Some(PoolShare::Count(n))),
    }
}

impl Config {
    /// Server connections of backend user `user` across all pools.
    pub fn max_user_connections(&self, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.settings.max_user_connections)
    }

    /// Client connections logged in as `user`.
    pub fn max_user_client_connections(&self, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.max_user_client_connections)
            .unwrap_or(self.settings.max_user_client_connections)
    }

    /// Server connections to database `db` across all its pools.
    pub fn max_db_connections(&self, db: &str) -> u32 {
        self.database(db)
            .and_then(|e| e.max_db_connections)
            .unwrap_or(self.settings.max_db_connections)
    }

    /// Client connections to database `db`.
    pub fn max_db_client_connections(&self, db: &str) -> u32 {
        self.database(db)
            .and_then(|e| e.max_db_client_connections)
            .unwrap_or(self.settings.max_db_client_connections)
    }

    /// Extra connections a pool of `db` may open for clients waiting past reserve_pool_timeout.
    pub fn reserve_pool_size(&self, db: &str) -> u32 {
        self.database(db)
            .and_then(|e| e.reserve_pool_size)
            .unwrap_or(self.settings.reserve_pool_size)
    }

    /// Server connections of the pool of `db` logging in as `user`: the user's [users]
    /// `pool_size`, else the database's, else default_pool_size (PgBouncer's order).
    pub fn pool_size(&self, db: &str, user: &str) -> u32 {
        (self.users.get(user).and_then(|u| u.pool_size))
            .or_else(|| self.database(db).and_then(|e| e.pool_size))
            .unwrap_or(self.settings.default_pool_size)
    }

    /// The reserve of the pool of `db` logging in as `user`: the user's [users]
    /// `reserve_pool_size`, else the database's, else the [pgbouncer] value.
    pub fn pool_reserve_size(&self, db: &str, user: &str) -> u32 {
        (self.users.get(user).and_then(|u| u.reserve_pool_size))
            .unwrap_or_else(|| self.reserve_pool_size(db))
    }

    /// The per-identity cap inside a pool of `db`.
    pub fn max_user_pool_share(&self, db: &str) -> Option<PoolShare> {
        match self.database(db).and_then(|e| e.max_user_pool_share) {
            Some(share) => share,
            None => self.settings.max_user_pool_share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(parse_pool_share("5"), Ok(Some(PoolShare::Count(5))));
        assert_eq!(parse_pool_share(" 50% "), Ok(Some(PoolShare::Percent(50))));
        assert_eq!(parse_pool_share("0"), Ok(None));
        assert_eq!(parse_pool_share("0%"), Ok(None));
        assert!(parse_pool_share("101%").is_err());
        assert!(parse_pool_share("-1").is_err());
        assert!(parse_pool_share("half").is_err());
        assert_eq!(PoolShare::Percent(50).cap(10), 5);
        assert_eq!(PoolShare::Percent(50).cap(5), 3);
        assert_eq!(PoolShare::Percent(1).cap(3), 1);
        assert_eq!(PoolShare::Percent(100).cap(0), 1);
        assert_eq!(PoolShare::Count(4).cap(10), 4);
    }

    fn config(text: &str) -> Config {
        let raw = crate::config::parse_ini(text, "t.ini").expect("ini");
        crate::config::from_raw(std::path::Path::new("t.ini"), raw).expect("config")
    }

    #[test]
    fn overrides_before_defaults() {
        let c = config(
            "[databases]\n\
             app = host=h max_db_connections=3 max_db_client_connections=7 reserve_pool=2 max_user_pool_share=0\n\
             other = host=h max_user_pool_share=25%\n\
             [pgbouncer]\n\
             max_db_connections = 10\nmax_user_connections = 4\nmax_db_client_connections = 50\n\
             max_user_client_connections = 20\nreserve_pool_size = 1\nreserve_pool_timeout = 500ms\n\
             max_user_pool_share = 3\nfair_sharing = off\n\
             [users]\nalice = max_user_connections=1 max_user_client_connections=2\n\
             carol = pool_size=4 reserve_pool_size=0\n",
        );
        assert_eq!(c.pool_size("app", "carol"), 4);
        assert_eq!(c.pool_size("app", "alice"), 20);
        assert_eq!(c.pool_reserve_size("app", "carol"), 0);
        assert_eq!(c.pool_reserve_size("app", "alice"), 2);
        assert_eq!(c.pool_reserve_size("other", "alice"), 1);
        assert_eq!(c.max_db_connections("app"), 3);
        assert_eq!(c.max_db_connections("other"), 10);
        assert_eq!(c.max_db_client_connections("app"), 7);
        assert_eq!(c.max_db_client_connections("nope"), 50);
        assert_eq!(c.reserve_pool_size("app"), 2);
        assert_eq!(c.reserve_pool_size("other"), 1);
        assert_eq!(c.max_user_connections("alice"), 1);
        assert_eq!(c.max_user_connections("bob"), 4);
        assert_eq!(c.max_user_client_connections("alice"), 2);
        assert_eq!(c.max_user_client_connections("bob"), 20);
        assert_eq!(c.max_user_pool_share("app"), None);
        assert_eq!(c.max_user_pool_share("other"), Some(PoolShare::Percent(25)));
        assert_eq!(c.max_user_pool_share("nope"), Some(PoolShare::Count(3)));
        assert_eq!(
            c.settings.reserve_pool_timeout,
            std::time::Duration::from_millis(500)
        );
        assert!(!c.settings.fair_sharing);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    /// As PgBouncer (`database_max_connections()` and its kin: `<= 0` takes the global), a
    /// connection cap of 0 in [databases] or [users] is not set, not "no limit": the
    /// [pgbouncer] value applies (checked live against PgBouncer 1.18: an entry's
    /// `max_db_connections=0` under `max_db_connections = 1` still queues a second client).
    /// Pool sizes keep 0 as a size.
    #[test]
    fn zero_caps_are_not_set() {
        let c = config(
            "[databases]\n\
             app = host=h max_db_connections=0 max_db_client_connections=0 pool_size=0 reserve_pool=0\n\
             [pgbouncer]\n\
             max_db_connections = 10\nmax_user_connections = 4\nmax_db_client_connections = 50\n\
             max_user_client_connections = 20\nreserve_pool_size = 1\n\
             [users]\nalice = max_user_connections=0 max_user_client_connections=0\n",
        );
        assert_eq!(c.max_db_connections("app"), 10);
        assert_eq!(c.max_db_client_connections("app"), 50);
        assert_eq!(c.max_user_connections("alice"), 4);
        assert_eq!(c.max_user_client_connections("alice"), 20);
        assert_eq!(c.pool_size("app", "alice"), 0);
        assert_eq!(c.reserve_pool_size("app"), 0);
    }

    #[test]
    fn bad_share_is_an_error() {
        let raw = crate::config::parse_ini("[pgbouncer]\nmax_user_pool_share = 150%\n", "t.ini")
            .expect("ini");
        assert!(crate::config::from_raw(std::path::Path::new("t.ini"), raw).is_err());
    }
}

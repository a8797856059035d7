//! A server connection on its way in (connect, TLS, startup, authentication, connect_query):
//! what SHOW SERVERS lists for it, in PgBouncer's state `new`. [`super::connect`] fills it in
//! as the phases go; the pool keeps it listed until the connection is handed out or given up.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use super::ServerAddr;

/// One server login in progress. The lock is short and never held across an `.await`.
#[derive(Debug)]
pub struct Login {
    /// When the pool started it (SHOW SERVERS connect_time).
    pub started: SystemTime,
    seen: Mutex<LoginSeen>,
    /// Cancelled to give the login up where it stands (KILL of its database): see
    /// [`Login::abort`].
    abort: tokio_util::sync::CancellationToken,
}

/// What is known of a [`Login`] so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginSeen {
    /// The host being tried (routing may try several).
    pub addr: Option<ServerAddr>,
    /// pgporter's end, once the socket is open.
    pub local: Option<SocketAddr>,
    /// The backend's pid, once BackendKeyData came (connect_query still runs), else 0.
    pub pid: i32,
    /// When the attempt at `addr` began: server_connect_timeout counts from here, through
    /// connect_query.
    pub began: Option<tokio::time::Instant>,
}

impl Default for Login {
    fn default() -> Self {
        Login {
            started: SystemTime::now(),
            seen: Mutex::default(),
            abort: tokio_util::sync::CancellationToken::new(),
        }
    }
}

impl Login {
    /// A new attempt at `addr` (a retry on another host starts over).
    pub fn trying(&self, addr: &ServerAddr) {
        *self.lock() = LoginSeen {
            addr: Some(addr.clone()),
            began: Some(tokio::time::Instant::now()),
            ..LoginSeen::default()
        };
    }

    /// The socket is open.
    pub fn opened(&self, local: Option<SocketAddr>) {
        self.lock().local = local;
    }

    /// Logged in as backend `pid`.
    pub fn logged_in(&self, pid: i32) {
        self.lock().pid = pid;
    }

    pub fn seen(&self) -> LoginSeen {
        self.lock().clone()
    }

    /// Give the login up: whoever drives it ([`Self::aborted`]) drops its socket, so that
    /// PostgreSQL's backend, if one was started, ends too.
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// Resolves once [`Self::abort`] was called.
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginSeen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_forgets_the_previous_host() {
        let login = Login::default();
        let a = ServerAddr::new("10.0.0.1", 5432);
        login.trying(&a);
        login.opened(Some("127.0.0.1:40000".parse().unwrap()));
        login.logged_in(7);
        assert_eq!(login.seen().pid, 7);
        let b = ServerAddr::new("10.0.0.2", 5432);
        let before = tokio::time::Instant::now();
        login.trying(&b);
        let seen = login.seen();
        assert!(seen.began.is_some_and(|t| t >= before), "{seen:?}");
        assert_eq!(
            seen,
            LoginSeen {
                addr: Some(b),
                local: None,
                pid: 0,
                began: seen.began,
            }
        );
    }
}

//! The health monitor: one task per monitored backend host. It keeps one server connection
//! open and, every health_check_period (or at once when poked, or when the server speaks
//! unprompted: a FATAL before shutdown), asks for the role and the WAL receive and replay
//! positions (lag: see `lag.rs`). A host whose check fails on a fresh connection is down.

use std::sync::Arc;

use tokio::time::{timeout, Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::hosts::{Host, Liveness, Observation, Role};
use super::lag::LagTracker;
use crate::server::{self, query_row, ServerConn, ServerError, ServerTarget};

/// The check: role, and on a standby the WAL positions received and replayed (as byte
/// offsets; NULL on a primary, and the receive position NULL before any streaming).
const CHECK_SQL: &str = "select pg_is_in_recovery(), \
     pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0'), \
     pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')";

/// What one monitor needs.
#[derive(Debug, Clone)]
pub(super) struct MonitorSettings {
    /// Credentials and database of the pool that started the monitor; `addr` is the host.
    pub target: ServerTarget,
    pub period: Duration,
    pub connect_timeout: Duration,
    pub max_lag: Duration,
    pub max_lag_bytes: u64,
}

/// Run until `shutdown`.
pub(super) async fn monitor(host: Arc<Host>, cfg: MonitorSettings, shutdown: CancellationToken) {
    let mut conn: Option<ServerConn> = None;
    let mut lag = LagTracker::default();
    loop {
        let seen = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            seen = check(&mut conn, &cfg, &mut lag) => seen,
        };
        if let Some(old) = host.observe(&seen) {
            log_change(&host, &old.liveness, old.role);
        }
        let unprompted = async {
            match conn.as_mut() {
                Some(c) => {
                    let _ = c.conn.fill().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = host.poke.notified() => {}
            () = unprompted => {}
            _ = tokio::time::sleep(cfg.period) => {}
        }
    }
}

fn log_change(host: &Host, old_liveness: &Liveness, old_role: Role) {
    let now = host.status();
    tracing::info!(
        host = %host.addr,
        from = %format!("{}/{}", old_liveness.as_str(), old_role.as_str()),
        to = %format!("{}/{}", now.liveness.as_str(), now.role.as_str()),
        lag_bytes = now.lag_bytes,
        lag_secs = now.lag.map(|d| d.as_secs_f64()),
        lagging = now.lagging,
        connections = host.connections(),
        "backend host changed"
    );
}

/// One check; a failure on a kept connection is retried once on a fresh one.
async fn check(
    conn: &mut Option<ServerConn>,
    cfg: &MonitorSettings,
    lag: &mut LagTracker,
) -> Observation {
    for _ in 0..2 {
        let c = match conn {
            Some(c) => c,
            None => match connect(cfg).await {
                Ok(c) => conn.insert(c),
                Err(ServerError::Rejected(fields)) if refusal(fields.code()) => {
                    // One user's login failing is not the host failing: it answered. Marking
                    // it down would end every other user's sessions on it.
                    return Observation::Refused;
                }
                Err(e) => {
                    tracing::debug!(host = %cfg.target.addr, error = %e, "health check: cannot connect");
                    lag.reset();
                    return Observation::Down;
                }
            },
        };
        let limit = cfg.connect_timeout.max(Duration::from_secs(1));
        match timeout(limit, query_row(c, CHECK_SQL)).await {
            Ok(Ok(Some(row))) => return observation(&row, cfg, lag, Instant::now()),
            Ok(Ok(None)) => tracing::warn!(host = %cfg.target.addr, "health check returned no row"),
            Ok(Err(e)) => {
                tracing::debug!(host = %cfg.target.addr, error = %e, "health check failed")
            }
            Err(_) => tracing::debug!(host = %cfg.target.addr, "health check timed out"),
        }
        *conn = None;
    }
    lag.reset();
    Observation::Down
}

/// A login error from a host that is up: anything but "cannot connect now" (57P0x: starting,
/// shutting down, in recovery without hot standby) and connection failures (08xxx).
fn refusal(sqlstate: &str) -> bool {
    !sqlstate.starts_with("57") && !sqlstate.starts_with("08")
}

async fn connect(cfg: &MonitorSettings) -> Result<ServerConn, ServerError> {
    let params = [(
        "application_name".to_string(),
        "pgporter health check".to_string(),
    )];
    let dial = crate::net::Dial {
        timeout: cfg.connect_timeout,
        keepalive: None,
    };
    let result = server::connect(&cfg.target, &params, dial).await;
    if let Err(ServerError::Rejected(fields)) = &result {
        // A wrong password, a disabled role or a missing database: the host's status stays
        // as last seen; say so loudly.
        if refusal(fields.code()) {
            tracing::warn!(host = %cfg.target.addr, error = %fields, "health check login rejected");
        }
    }
    result
}

fn observation(
    row: &[Option<String>],
    cfg: &MonitorSettings,
    tracker: &mut LagTracker,
    now: Instant,
) -> Observation {
    let value = |i: usize| row.get(i).and_then(|v| v.as_deref());
    let role = match value(0) {
        Some("t") => Role::Standby,
        Some("f") => Role::Primary,
        _ => Role::Unknown,
    };
    let position = |i: usize| value(i).and_then(|v| v.parse::<u64>().ok());
    let lag = match (role, position(2)) {
        (Role::Standby, Some(replay)) => {
            // Never streamed (no receive position): nothing known to be waiting.
            let receive = position(1).unwrap_or(replay);
            Some(tracker.observe(receive, replay, now))
        }
        _ => {
            tracker.reset();
            None
        }
    };
    let lagging = lag.is_some_and(|l| {
        (!cfg.max_lag.is_zero() && l.time > cfg.max_lag)
            || (cfg.max_lag_bytes > 0 && l.bytes > cfg.max_lag_bytes)
    });
    Observation::Up {
        role,
        lag_bytes: lag.map(|l| l.bytes),
        lag: lag.map(|l| l.time),
        lagging,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{BackendPassword, ServerAddr};

    fn cfg(max_lag: u64, max_bytes: u64) -> MonitorSettings {
        MonitorSettings {
            target: ServerTarget {
                addr: ServerAddr::new("127.0.0.1", 1),
                dbname: "d".into(),
                user: "u".into(),
                password: BackendPassword::None,
                params: Vec::new(),
                tls: None,
            },
            period: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_lag: Duration::from_secs(max_lag),
            max_lag_bytes: max_bytes,
        }
    }

    fn row(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(str::to_string)).collect()
    }

    #[test]
    fn parses_roles_and_lag() {
        let t0 = Instant::now();
        let mut tracker = LagTracker::default();
        let primary = observation(&row(&[Some("f"), None, None]), &cfg(1, 0), &mut tracker, t0);
        assert!(matches!(
            primary,
            Observation::Up {
                role: Role::Primary,
                lag: None,
                lagging: false,
                ..
            }
        ));
        let standby =
            |recv: &str, replay: &str, secs: u64, cfg: &MonitorSettings, t: &mut LagTracker| {
                observation(
                    &row(&[Some("t"), Some(recv), Some(replay)]),
                    cfg,
                    t,
                    t0 + Duration::from_secs(secs),
                )
            };
        let c = cfg(1, 0);
        assert!(matches!(
            standby("100", "100", 0, &c, &mut tracker),
            Observation::Up { lagging: false, .. }
        ));
        assert!(matches!(
            standby("8292", "100", 1, &c, &mut tracker),
            Observation::Up { lagging: false, .. }
        ));
        assert_eq!(
            standby("9000", "100", 3, &c, &mut tracker),
            Observation::Up {
                role: Role::Standby,
                lag_bytes: Some(8900),
                lag: Some(Duration::from_secs(2)),
                lagging: true
            }
        );
        let mut fresh = LagTracker::default();
        let by_bytes = standby("8292", "100", 0, &cfg(0, 4096), &mut fresh);
        assert!(matches!(by_bytes, Observation::Up { lagging: true, .. }));
        let mut fresh = LagTracker::default();
        let unlimited = standby("8292", "100", 0, &cfg(0, 0), &mut fresh);
        assert!(matches!(unlimited, Observation::Up { lagging: false, .. }));
        // A standby that never streamed: no receive position, no lag.
        let never = observation(&row(&[Some("t"), None, Some("5")]), &c, &mut fresh, t0);
        assert!(matches!(
            never,
            Observation::Up {
                lag_bytes: Some(0),
                lagging: false,
                ..
            }
        ));
    }
}

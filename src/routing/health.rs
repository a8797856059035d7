//! The health monitor: one task per monitored backend host. It keeps one server connection
//! open and, every health_check_period (or at once when poked, or when the server speaks
//! unprompted: a FATAL before shutdown), asks for the role and the WAL receive and replay
//! positions (lag: see `lag.rs`). A host whose check fails on a fresh connection is down.

use std::sync::Arc;

use tokio::time::{timeout, Duration, Instant};
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;

use super::hosts::{Host, Liveness, Observation, Role};
use super::lag::LagTracker;
use crate::config::{Config, ConfigHandle};
use crate::server::{self, query_row, ServerConn, ServerError, ServerTarget};
use crate::tls::{ServerTls, TlsState};

/// The check: role, and on a standby the WAL positions received and replayed (as byte
/// offsets; NULL on a primary, and the receive position NULL before any streaming).
/// Also whether a WAL receiver runs: a standby cut off from its primary (a partition, or
/// still following a dead primary) has nothing unreplayed and would otherwise look current.
const CHECK_SQL: &str = "select pg_is_in_recovery(), \
     pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0'), \
     pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), \
     (select count(*) from pg_stat_wal_receiver)";

/// Where one monitor reads its settings: both live, replaced by reloads and admin SET.
#[derive(Debug, Clone)]
pub(super) struct MonitorSettings {
    /// The running configuration: [`Limits`] are read from it before each check, and again
    /// whenever a change is stored, so a RELOAD or SET reaches a running monitor (which keeps
    /// its connection and what it knows of the host).
    pub config: Arc<ConfigHandle>,
    /// The running TLS contexts: each login uses the server context in force (a reload
    /// replaces it), as new pooled connections do.
    pub tls: Arc<ArcSwap<TlsState>>,
}

/// The settings one check works under, as the configuration says at the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// health_check_period.
    pub period: Duration,
    /// server_connect_timeout, for the monitor's logins and (at least 1 s) its query.
    pub connect_timeout: Duration,
    /// max_standby_lag (0: no limit).
    pub max_lag: Duration,
    /// max_standby_lag_bytes (0: no limit).
    pub max_lag_bytes: u64,
}

impl Limits {
    pub(super) fn of(config: &Config) -> Limits {
        let routing = &config.settings.routing;
        Limits {
            period: routing.health_check_period,
            // The monitor's own limit: 0 (no limit) would let one hung check stall it.
            connect_timeout: match config.settings.server_connect_timeout {
                d if d.is_zero() => Duration::from_secs(15),
                d => d,
            },
            max_lag: routing.max_standby_lag,
            max_lag_bytes: routing.max_standby_lag_bytes,
        }
    }
}

/// How often the monitor logs in afresh although its kept connection works: a host that takes
/// no new connections (a smart shutdown, a frozen postmaster) is noticed, and the kept
/// connection never holds a smart shutdown open for longer than this.
const FRESH_LOGIN_EVERY: Duration = Duration::from_secs(5);

/// A refused login is logged at most this often per host.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The monitor's connection and which login it uses.
#[derive(Debug)]
struct Probe {
    conn: Option<ServerConn>,
    /// When the last fresh login was tried (successful or not).
    opened: Instant,
    login: usize,
    warned: Option<Instant>,
    /// Every login was refused at the last try (or the TLS handshake failed): the next
    /// waits FRESH_LOGIN_EVERY (each try is a failed authentication in the server's log).
    refused: bool,
    /// Why, for SHOW HOSTS.
    why: String,
    /// The server TLS context of the kept connection and of the logins.
    tls: Option<Arc<ServerTls>>,
    /// Why the logins fail (PgBouncer's words: `connect failed`, `connect timeout`, `login
    /// failed`) since the failure's line was written; none while they work.
    failing: Option<&'static str>,
}

/// Run until `shutdown`, or until the host leaves the configuration.
pub(super) async fn monitor(host: Arc<Host>, cfg: MonitorSettings, shutdown: CancellationToken) {
    let mut probe = Probe {
        conn: None,
        opened: Instant::now(),
        login: 0,
        warned: None,
        refused: false,
        why: String::new(),
        tls: cfg.tls.load().server.clone(),
        failing: None,
    };
    let mut lag = LagTracker::default();
    let retired = host.retired.clone();
    loop {
        let limits = Limits::of(&cfg.config.load());
        let seen = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = retired.cancelled() => return,
            seen = check(&host, &mut probe, &cfg, &limits, &mut lag) => seen,
        };
        if let Some(old) = host.observe(&seen) {
            log_change(&host, &old.liveness, old.role);
        }
        let unprompted = async {
            match probe.conn.as_mut() {
                Some(c) => {
                    let _ = c.conn.fill().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(unprompted);
        let period = tokio::time::sleep(limits.period);
        tokio::pin!(period);
        loop {
            // Enabled before the settings are compared: a change stored after the comparison
            // wakes this wait.
            let stored = cfg.config.stored();
            tokio::pin!(stored);
            stored.as_mut().enable();
            let now = Limits::of(&cfg.config.load());
            if now != limits {
                // A lag limit judges the host at once (its lag history is kept); a new
                // period counts from this check.
                tracing::info!(
                    host = %host.addr,
                    health_check_period = ?now.period,
                    max_standby_lag = ?now.max_lag,
                    max_standby_lag_bytes = now.max_lag_bytes,
                    "routing settings changed; checking the host under them now"
                );
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = retired.cancelled() => return,
                _ = host.poke.notified() => break,
                () = &mut unprompted => break,
                _ = &mut period => break,
                _ = &mut stored => {}
            }
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

/// One check. A fresh login is made when none is kept or the kept one is older than
/// [`FRESH_LOGIN_EVERY`]; if that fails while the kept connection still answers, the host is
/// draining. A failure on a kept connection is retried once on a fresh one.
async fn check(
    host: &Host,
    probe: &mut Probe,
    cfg: &MonitorSettings,
    limits: &Limits,
    lag: &mut LagTracker,
) -> Observation {
    // A login the monitor lacked (passthrough keys a client brought) is tried at once.
    let offered = host
        .new_login
        .swap(false, std::sync::atomic::Ordering::Relaxed);
    let tls = cfg.tls.load().server.clone();
    if tls != probe.tls {
        // A reload changed server_tls_*: the kept connection was made under a setup no longer
        // in force (its certificate perhaps no longer trusted). Log in afresh, now, as new
        // pooled connections do.
        tracing::info!(host = %host.addr, "server TLS settings changed; the health check logs in again");
        probe.tls = tls;
        probe.conn = None;
        probe.refused = false;
    }
    for attempt in 0..2 {
        let due = probe.opened.elapsed() >= FRESH_LOGIN_EVERY || (offered && probe.refused);
        if probe.refused && !due && probe.conn.is_none() {
            return Observation::Refused(probe.why.clone());
        }
        let fresh = attempt > 0 || due || (probe.conn.is_none() && !probe.refused);
        if fresh {
            probe.opened = Instant::now();
        }
        let mut refuses_new = false;
        // Said so by the server (57P03: shutting down, starting up): it is alive.
        let mut says_not_now = false;
        if fresh {
            let tried = login(host, probe, limits).await;
            log_login(host, probe, &tried);
            match tried {
                Ok(c) => {
                    probe.conn = Some(c);
                    probe.refused = false;
                }
                Err(Some(ServerError::Rejected(fields))) if fields.code().starts_with("57") => {
                    if probe.conn.is_none() {
                        // No kept connection to ask (dropped below while draining): the
                        // server itself says it takes no new connections.
                        return Observation::Draining;
                    }
                    refuses_new = true;
                    says_not_now = true;
                }
                // Every login refused: nothing learned (the last status stands), unless the
                // kept connection can still tell.
                Err(None) if probe.conn.is_none() => {
                    probe.refused = true;
                    return Observation::Refused(probe.why.clone());
                }
                Err(None) => probe.refused = true,
                // Every login takes the same TLS handshake: none can be made.
                Err(Some(e)) if tls_setup_fails(&e) => {
                    probe.why = match std::error::Error::source(&e) {
                        Some(source) => format!("{e}: {source}"),
                        None => e.to_string(),
                    };
                    if !probe.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
                        tracing::warn!(host = %host.addr, error = %probe.why, "health check cannot log in; the host is not used until it can");
                        probe.warned = Some(Instant::now());
                    }
                    probe.refused = true;
                    probe.conn = None;
                    lag.reset();
                    return Observation::TlsFailed(probe.why.clone());
                }
                Err(Some(e)) if probe.conn.is_none() => {
                    tracing::debug!(host = %host.addr, error = %e, "health check: cannot connect");
                    lag.reset();
                    return Observation::Down;
                }
                Err(Some(e)) => {
                    tracing::debug!(host = %host.addr, error = %e, "health check: no new connection; asking the kept one");
                    refuses_new = true;
                }
            }
        }
        let Some(c) = probe.conn.as_mut() else {
            break;
        };
        let limit = limits.connect_timeout.max(Duration::from_secs(1));
        let orphaned = host.primary_down();
        match timeout(limit, query_row(c, CHECK_SQL)).await {
            Ok(Ok(Some(row))) if refuses_new => {
                // Keep the lag tracker's view; the host is out of rotation anyway.
                let _ = observation(&row, limits, lag, Instant::now(), orphaned);
                if says_not_now {
                    // A smart shutdown waits for every connection, this one too: let go.
                    probe.conn = None;
                }
                return Observation::Draining;
            }
            Ok(Ok(Some(row))) => return observation(&row, limits, lag, Instant::now(), orphaned),
            Ok(Ok(None)) => tracing::warn!(host = %host.addr, "health check returned no row"),
            Ok(Err(e)) => tracing::debug!(host = %host.addr, error = %e, "health check failed"),
            Err(_) => tracing::debug!(host = %host.addr, "health check timed out"),
        }
        probe.conn = None;
        if refuses_new {
            break;
        }
    }
    lag.reset();
    Observation::Down
}

/// Log in with the probe's login, trying the next ones while they are refused. `Err(None)`:
/// every login was refused (the host answered); `Err(Some(e))`: the host did not let us in.
async fn login(
    host: &Host,
    probe: &mut Probe,
    limits: &Limits,
) -> Result<ServerConn, Option<ServerError>> {
    let Some((_, count)) = host.login(0) else {
        probe.why = "no pool has offered a login yet".into();
        return Err(None);
    };
    for _ in 0..count {
        let Some((target, _)) = host.login(probe.login) else {
            break;
        };
        let target = ServerTarget {
            tls: probe.tls.clone(),
            ..target
        };
        match connect(&target, limits).await {
            Ok(c) => return Ok(c),
            // No credential for this login yet (SCRAM passthrough before any client logged
            // in): the host asked for one, so it is up; try another login.
            Err(e @ ServerError::NoPassword(_)) => {
                tracing::debug!(host = %host.addr, user = %target.user, "health check: no password for this login yet");
                probe.why = format!("user {}: {e}", target.user);
                probe.login = probe.login.wrapping_add(1);
            }
            Err(ServerError::Rejected(fields)) if refusal(fields.code()) => {
                probe.why = format!("user {}: {fields}", target.user);
                // One user's login failing is not the host failing: it answered. Marking it
                // down would end every other user's sessions on it; try another user.
                if !probe.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
                    tracing::warn!(host = %host.addr, user = %target.user, error = %fields, "health check login rejected; trying the other logins of this host's pools");
                    probe.warned = Some(Instant::now());
                }
                probe.login = probe.login.wrapping_add(1);
            }
            Err(e) => return Err(Some(e)),
        }
    }
    Err(None)
}

/// A fresh login's line, written on a change only, so that a host down for an hour writes
/// one line, not one per health_check_period: the first failure (`health check login failed`,
/// with PgBouncer's words for it as `reason`: `connect failed`, `connect timeout`, `login
/// failed`, and the error), another when the reason changes, and `health check logs in again`
/// once one works. Refused logins and a TLS setup that cannot work have warnings of their own
/// (at most one a minute).
fn log_login(host: &Host, probe: &mut Probe, tried: &Result<ServerConn, Option<ServerError>>) {
    match tried {
        Ok(_) => {
            if let Some(was) = probe.failing.take() {
                tracing::info!(host = %host.addr, was, "health check logs in again");
            }
        }
        Err(Some(e)) if !tls_setup_fails(e) => {
            let reason = e.close_reason();
            if probe.failing != Some(reason) {
                // The whole chain: `protocol error: I/O error` alone does not say what failed.
                let mut error = e.to_string();
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    error = format!("{error}: {c}");
                    cause = c.source();
                }
                tracing::warn!(host = %host.addr, reason, error, "health check login failed");
                probe.failing = Some(reason);
            }
        }
        Err(_) => {}
    }
}

/// The TLS setup in force cannot work with this host: its certificate is not trusted (any
/// error rustls reports, an alert from the server too), or it refuses TLS that is required.
/// Not the host hanging up during the handshake (a server going down): that is a connection
/// failure like any other.
fn tls_setup_fails(e: &ServerError) -> bool {
    match e {
        ServerError::TlsRefused => true,
        ServerError::Tls(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

/// A login error from a host that is up: anything but "cannot connect now" (57P0x: starting,
/// shutting down, in recovery without hot standby) and connection failures (08xxx).
fn refusal(sqlstate: &str) -> bool {
    !sqlstate.starts_with("57") && !sqlstate.starts_with("08")
}

async fn connect(target: &ServerTarget, limits: &Limits) -> Result<ServerConn, ServerError> {
    let params = [(
        "application_name".to_string(),
        "pgporter health check".to_string(),
    )];
    let dial = crate::net::Dial {
        timeout: limits.connect_timeout,
        socket: crate::net::SocketOptions::default(),
    };
    server::connect(target, &params, dial, None).await
}

/// `orphaned`: the host's primary is down and no other is up (see `Host::primary_down`): a
/// standby without a WAL receiver is then not counted as falling behind, or a failover
/// longer than max_standby_lag would take the read-only endpoint down with the primary.
fn observation(
    row: &[Option<String>],
    limits: &Limits,
    tracker: &mut LagTracker,
    now: Instant,
    orphaned: bool,
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
            let fed = position(1).is_none() || position(3) != Some(0) || orphaned;
            Some(tracker.observe(receive, replay, fed, now))
        }
        _ => {
            tracker.reset();
            None
        }
    };
    let lagging = lag.is_some_and(|l| {
        (!limits.max_lag.is_zero() && l.time > limits.max_lag)
            || (limits.max_lag_bytes > 0 && l.bytes > limits.max_lag_bytes)
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

    fn cfg(max_lag: u64, max_bytes: u64) -> Limits {
        Limits {
            period: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_lag: Duration::from_secs(max_lag),
            max_lag_bytes: max_bytes,
        }
    }

    fn row(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|x| x.map(str::to_string)).collect()
    }

    /// No WAL receiver: falling behind while a primary could feed it; not while its cluster's
    /// primary is down and none promoted yet (nothing newer exists to miss).
    #[test]
    fn an_orphaned_standby_is_not_counted_as_lagging() {
        let t0 = Instant::now();
        let unfed = row(&[Some("t"), Some("100"), Some("100"), Some("0")]);
        let c = cfg(1, 0);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut tracker = LagTracker::default();
        for secs in 0..5 {
            let seen = observation(&unfed, &c, &mut tracker, at(secs), true);
            assert!(
                matches!(seen, Observation::Up { lagging: false, .. }),
                "{seen:?}"
            );
        }
        // A primary is up again (promoted): the clock starts now, not at the outage's start.
        let seen = observation(&unfed, &c, &mut tracker, at(5), false);
        assert!(
            matches!(seen, Observation::Up { lagging: false, .. }),
            "{seen:?}"
        );
        let seen = observation(&unfed, &c, &mut tracker, at(7), false);
        assert!(
            matches!(seen, Observation::Up { lagging: true, .. }),
            "{seen:?}"
        );
    }

    #[test]
    fn parses_roles_and_lag() {
        let t0 = Instant::now();
        let mut tracker = LagTracker::default();
        let primary = observation(
            &row(&[Some("f"), None, None]),
            &cfg(1, 0),
            &mut tracker,
            t0,
            false,
        );
        assert!(matches!(
            primary,
            Observation::Up {
                role: Role::Primary,
                lag: None,
                lagging: false,
                ..
            }
        ));
        let standby = |recv: &str, replay: &str, secs: u64, cfg: &Limits, t: &mut LagTracker| {
            observation(
                &row(&[Some("t"), Some(recv), Some(replay)]),
                cfg,
                t,
                t0 + Duration::from_secs(secs),
                false,
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
        let never = observation(
            &row(&[Some("t"), None, Some("5")]),
            &c,
            &mut fresh,
            t0,
            false,
        );
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

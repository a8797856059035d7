//! Backend host reachability, for /readyz, SHOW HOSTS and the host metrics: read/write
//! routing's health monitor (`routing::Hosts`) for the hosts it monitors (role, lag), a
//! periodic TCP probe for the others while a metrics listener is configured.

use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::time::{timeout, Duration};

use crate::app::Shared;
use crate::config::Config;
use crate::routing::{HostStatus, Hosts, Liveness};
use crate::server::ServerAddr;

/// SHOW HOSTS' error for a monitored host none of whose logins the health monitor can make,
/// before the monitor's reason.
const MONITOR_REFUSED: &str = "health check cannot log in: ";

const PERIOD: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What we know about one backend host.
#[derive(Debug, Clone)]
pub struct HostState {
    pub up: bool,
    /// `primary`, `standby`, or `unknown` (not discovered yet).
    pub role: &'static str,
    /// Replication lag, when known.
    pub lag: Option<Duration>,
    pub last_check: SystemTime,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct HostStates {
    map: DashMap<ServerAddr, HostState>,
}

impl HostState {
    /// A monitored host's state as routing's health monitor sees it (None: not checked yet).
    fn monitored(s: &HostStatus) -> Option<HostState> {
        if s.liveness == Liveness::Unknown {
            return None;
        }
        let up = s.liveness == Liveness::Up;
        Some(HostState {
            up,
            role: s.role.as_str(),
            lag: s.lag,
            last_check: SystemTime::now(),
            error: (!up).then(|| format!("health check: {}", s.liveness.as_str())),
        })
    }
}

impl HostStates {
    /// The host's state: for a host routing monitors, as its monitor sees it now (the copy
    /// [`run`] keeps is up to [`PERIOD`] old: right after a failover it named the old
    /// primary); for the others, as last probed.
    /// A monitored host the monitor cannot log in to (never checked, or what it knew
    /// forgotten after a failed TLS handshake) is as last probed, with the monitor's reason
    /// in `error`: routing will not use it until a login works.
    pub fn get(&self, addr: &ServerAddr, routing: &Hosts) -> Option<HostState> {
        let status = routing.status(addr);
        if let Some(state) = status.as_ref().and_then(HostState::monitored) {
            return Some(state);
        }
        let probed = self.map.get(addr).map(|h| h.clone());
        let Some(why) = status.and_then(|s| s.refused) else {
            return probed;
        };
        let mut state = probed.unwrap_or(HostState {
            up: false,
            role: "unknown",
            lag: None,
            last_check: SystemTime::now(),
            error: None,
        });
        state.error = Some(format!("{MONITOR_REFUSED}{why}"));
        Some(state)
    }

    /// Every host probed or monitored so far, sorted by address, each as [`Self::get`].
    pub fn all(&self, routing: &Hosts) -> Vec<(ServerAddr, HostState)> {
        let mut addrs: Vec<ServerAddr> = self.map.iter().map(|e| e.key().clone()).collect();
        addrs.extend(routing.monitored());
        addrs.sort_by_key(ToString::to_string);
        addrs.dedup();
        addrs
            .into_iter()
            .filter_map(|addr| Some((addr.clone(), self.get(&addr, routing)?)))
            .collect()
    }

    fn set(&self, addr: ServerAddr, state: HostState) {
        self.map.insert(addr, state);
    }

    /// Forget hosts the configuration no longer names (a reload removed them): their last
    /// state would otherwise stay in SHOW HOSTS and `pgporter_backend_up` for good.
    fn keep_only(&self, hosts: &[ServerAddr]) {
        self.map.retain(|addr, _| hosts.contains(addr));
    }

    /// True when every configured database has a reachable host.
    pub fn all_databases_reachable(&self, config: &Config, routing: &Hosts) -> Result<(), String> {
        for (name, db) in &config.databases {
            // Reachable when any of its hosts is.
            let mut problem = None;
            for h in &db.hosts {
                let addr = ServerAddr::new(&h.host, h.port);
                match self.get(&addr, routing) {
                    Some(h) if h.up => {
                        problem = None;
                        break;
                    }
                    Some(_) => problem = Some(format!("database {name}: host {addr} is down")),
                    None => problem = Some(format!("database {name}: host {addr} not checked yet")),
                }
            }
            if let Some(p) = problem {
                return Err(p);
            }
        }
        Ok(())
    }
}

/// The hosts named in `config`, each once.
pub fn configured_hosts(config: &Config) -> Vec<ServerAddr> {
    let mut hosts: Vec<ServerAddr> = config
        .databases
        .values()
        .chain(config.fallback_database.iter())
        .flat_map(|d| d.hosts.iter())
        .map(|h| ServerAddr::new(&h.host, h.port))
        .collect();
    hosts.sort_by_key(|a| a.to_string());
    hosts.dedup();
    hosts
}

/// Every [`PERIOD`] until shutdown: each configured host's state. A host routing monitors
/// takes it from the monitor (no extra connection); the others are probed with a TCP connect
/// (PostgreSQL forks a backend, and logs it with log_connections, for each), and only when
/// something reads the result: /readyz and the metrics (metrics_listen_addr).
pub async fn run(shared: Arc<Shared>) {
    let mut ticks = crate::shutdown::Ticks::every(PERIOD);
    while ticks.next(&shared.shutdown).await {
        let config = shared.config.load();
        let hosts = configured_hosts(&config);
        shared.hosts.keep_only(&hosts);
        shared.routing.keep_only(&hosts);
        let probing = config.settings.metrics_listen_addr.is_some();
        let mut to_probe = Vec::new();
        for addr in hosts {
            match shared
                .routing
                .status(&addr)
                .as_ref()
                .and_then(HostState::monitored)
            {
                Some(state) => shared.hosts.set(addr, state),
                None if probing => to_probe.push(addr),
                None => {}
            }
        }
        let probes = to_probe.into_iter().map(|addr| async move {
            let result = timeout(PROBE_TIMEOUT, crate::server::probe(&addr)).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".to_string()),
            };
            (addr, error)
        });
        for (addr, error) in futures_join_all(probes).await {
            if let Some(e) = &error {
                tracing::debug!(host = %addr, error = %e, "backend host unreachable");
            }
            shared.hosts.set(
                addr,
                HostState {
                    up: error.is_none(),
                    role: "unknown",
                    lag: None,
                    last_check: SystemTime::now(),
                    error,
                },
            );
        }
    }
}

/// Await all futures concurrently (a few hosts; no extra crate for this).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(v) = r {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_a_reload_removed_are_forgotten() {
        let states = HostStates::default();
        let state = HostState {
            up: false,
            role: "unknown",
            lag: None,
            last_check: SystemTime::now(),
            error: None,
        };
        let (a, b) = (ServerAddr::new("a", 1), ServerAddr::new("b", 2));
        states.set(a.clone(), state.clone());
        states.set(b.clone(), state);
        states.keep_only(std::slice::from_ref(&b));
        let raw = crate::config::parse_ini("[pgbouncer]\n", "t.ini").expect("ini");
        let config = crate::config::from_raw(std::path::Path::new("t.ini"), raw).expect("config");
        let routing = Hosts::new(
            tokio_util::sync::CancellationToken::new(),
            Arc::default(),
            Arc::new(crate::config::ConfigHandle::new(config)),
        );
        assert!(states.get(&a, &routing).is_none() && states.get(&b, &routing).is_some());
    }
}

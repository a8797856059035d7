//! Read/write routing: which backend host a new server connection goes to.
//!
//! [`Hosts`] holds every backend host pgporter knows (shared by all pools listing it) and starts
//! one health monitor per host of a monitored entry. A pool's [`HostSet`] applies its
//! target_session_attrs and load_balance_hosts; [`connect`] picks a host, connects, checks the
//! role the server reports, falls over to the next host, and when no host is eligible (a
//! failover in progress) waits up to failover_wait_timeout for one.

mod health;
mod hosts;
mod lag;

use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigHandle, DatabaseEntry, LoadBalance, SessionAttrs};
use crate::server::{self, ServerAddr, ServerConn, ServerError, ServerTarget};
use crate::tls::TlsState;

pub use hosts::{eligible, Host, HostSet, HostStatus, HostTag, Liveness, Role};

/// Which listener a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Endpoint {
    /// listen_port: databases as configured.
    #[default]
    ReadWrite,
    /// readonly_listen_port: every database resolves to its standby pool.
    ReadOnly,
}

impl Endpoint {
    /// The target_session_attrs a database entry gets on this endpoint. On the read-only
    /// endpoint, entries not already restricted to standbys prefer standbys (and fall back to
    /// the primary, where default_transaction_read_only=on still refuses writes).
    pub fn attrs(self, entry: &DatabaseEntry) -> SessionAttrs {
        match (self, entry.target_session_attrs) {
            (Endpoint::ReadWrite, attrs) | (Endpoint::ReadOnly, attrs @ SessionAttrs::Standby) => {
                attrs
            }
            (Endpoint::ReadOnly, _) => SessionAttrs::PreferStandby,
        }
    }

    /// The hosts of `entry` as a host set lists them (in order, without repeats).
    pub fn hosts_of(entry: &DatabaseEntry) -> Vec<ServerAddr> {
        let mut addrs: Vec<ServerAddr> = Vec::new();
        for h in &entry.hosts {
            let addr = ServerAddr::new(&h.host, h.port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    }

    /// How an entry's hosts share new connections on this endpoint: the read-only endpoint
    /// spreads over the standbys (as CloudNativePG's `-ro` service) unless the entry chose.
    pub fn balance(self, entry: &DatabaseEntry) -> LoadBalance {
        match (self, entry.load_balance_hosts) {
            (Endpoint::ReadOnly, LoadBalance::Disable) => LoadBalance::RoundRobin,
            (_, balance) => balance,
        }
    }
}

/// No eligible host within failover_wait_timeout.
#[derive(Debug, thiserror::Error)]
#[error("no {attrs} server available within failover_wait_timeout")]
pub struct NoHost {
    pub attrs: &'static str,
    #[source]
    pub last: Option<ServerError>,
}

/// Why a routed connect failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    NoHost(#[from] NoHost),
}

/// One host's state for SHOW HOSTS / logs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSnapshot {
    pub addr: String,
    pub status: HostStatus,
    pub connections: u32,
    pub monitored: bool,
}

/// Which sets take turns together (round-robin): the same hosts in the same order, and
/// whether they are read-only (read-write picks must not skew the standbys' turns).
type RotationKey = (Vec<ServerAddr>, bool);

/// Every backend host, and the change signal failover waiters listen to.
#[derive(Debug)]
pub struct Hosts {
    map: DashMap<ServerAddr, Arc<Host>>,
    changed: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
    /// round-robin positions shared by the host sets of every pool (see
    /// [`HostSet::with_rotation`]).
    rotations: DashMap<RotationKey, Arc<std::sync::atomic::AtomicUsize>>,
    /// The running TLS contexts (replaced by reloads): the health monitors log in with the
    /// server context in force at each login, as new pooled connections do.
    tls: Arc<ArcSwap<TlsState>>,
    /// The running configuration: the health monitors follow its routing settings
    /// (health_check_period, max_standby_lag*, server_connect_timeout) as reloads change them.
    config: Arc<ConfigHandle>,
}

impl Hosts {
    /// Monitors stop when `shutdown` fires, log in with the server TLS context `tls` holds at
    /// the time, and check under the settings `config` holds at the time.
    pub fn new(
        shutdown: CancellationToken,
        tls: Arc<ArcSwap<TlsState>>,
        config: Arc<ConfigHandle>,
    ) -> Hosts {
        Hosts {
            map: DashMap::new(),
            changed: Arc::new(watch::channel(0).0),
            shutdown,
            rotations: DashMap::new(),
            tls,
            config,
        }
    }

    fn host(&self, addr: &ServerAddr) -> Arc<Host> {
        if let Some(h) = self.map.get(addr) {
            return Arc::clone(&h);
        }
        let host = self
            .map
            .entry(addr.clone())
            .or_insert_with(|| Arc::new(Host::new(addr.clone(), Arc::clone(&self.changed))));
        Arc::clone(&host)
    }

    /// The hosts of `entry` under `attrs`; starts the health monitors a monitored set needs
    /// (logging in like `target`, which is the pool's). Must run inside the runtime.
    pub fn host_set(
        &self,
        entry: &DatabaseEntry,
        endpoint: Endpoint,
        target: &ServerTarget,
    ) -> HostSet {
        // A host listed twice would get twice the share of new connections: once each.
        let addrs = Endpoint::hosts_of(entry);
        let hosts: Vec<Arc<Host>> = addrs.iter().map(|addr| self.host(addr)).collect();
        let attrs = endpoint.attrs(entry);
        let rotation = Arc::clone(
            &self
                .rotations
                .entry((addrs, attrs.is_read_only()))
                .or_default(),
        );
        for h in &hosts {
            h.add_peers(&hosts);
        }
        let set = HostSet::new(
            hosts,
            attrs,
            endpoint.balance(entry),
            Arc::clone(&self.changed),
        )
        .with_rotation(rotation);
        set.offer_login(target);
        if set.monitored {
            for host in set.hosts() {
                self.start_monitor(host, target);
            }
        }
        set
    }

    fn start_monitor(&self, host: &Arc<Host>, target: &ServerTarget) {
        if host
            .monitor_started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let cfg = health::MonitorSettings {
            config: Arc::clone(&self.config),
            tls: Arc::clone(&self.tls),
        };
        tracing::info!(host = %host.addr, user = %target.user, "starting health monitor");
        tokio::spawn(health::monitor(
            Arc::clone(host),
            cfg,
            self.shutdown.clone(),
        ));
    }

    /// Ask every monitor to check now (the server TLS context changed: each logs in afresh
    /// with it).
    pub fn recheck_all(&self) {
        for host in &self.map {
            host.poke();
        }
    }

    /// Forget hosts the configuration no longer names (a reload removed them) and stop their
    /// monitors, which would otherwise keep a connection and check it for good.
    pub fn keep_only(&self, hosts: &[ServerAddr]) {
        self.map.retain(|addr, host| {
            let keep = hosts.contains(addr);
            if !keep {
                tracing::info!(host = %addr, "host left the configuration; its health monitor stops");
                host.retired.cancel();
            }
            keep
        });
        self.rotations
            .retain(|(addrs, _), _| addrs.iter().all(|a| hosts.contains(a)));
    }

    /// The monitored state of the host at `addr`, if routing knows it (and monitors it), as
    /// routing goes by it: a primary superseded by one promoted later (split brain) is
    /// draining.
    pub fn status(&self, addr: &ServerAddr) -> Option<HostStatus> {
        let host = self.map.get(addr)?;
        host.monitor_started
            .load(std::sync::atomic::Ordering::Acquire)
            .then(|| host.routing_status())
    }

    /// The hosts with a health monitor.
    pub fn monitored(&self) -> Vec<ServerAddr> {
        self.map
            .iter()
            .filter(|e| {
                e.value()
                    .monitor_started
                    .load(std::sync::atomic::Ordering::Acquire)
            })
            .map(|e| e.key().clone())
            .collect()
    }

    /// Fires on every routing-relevant host change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Every known host's state (for the admin console's SHOW HOSTS).
    pub fn snapshot(&self) -> Vec<HostSnapshot> {
        let mut all: Vec<HostSnapshot> = self
            .map
            .iter()
            .map(|e| HostSnapshot {
                addr: e.key().to_string(),
                status: e.value().status(),
                connections: e.value().connections(),
                monitored: e
                    .value()
                    .monitor_started
                    .load(std::sync::atomic::Ordering::Acquire),
            })
            .collect();
        all.sort_by(|a, b| a.addr.cmp(&b.addr));
        all
    }
}

/// What [`connect`] tells its pool of the logins it makes.
pub trait ConnectReport {
    /// `addr` did not take the login (`e`); `last`: `e` is the error [`connect`] returns
    /// (no other host is tried).
    fn dial_failed(&self, addr: &ServerAddr, e: &ServerError, last: bool);
    /// A login that got in but is not handed over (the host reports another role than the
    /// monitor saw, or the monitor has not checked it yet): closed as every server
    /// connection is (Terminate, the `closing because` line with `reason`).
    fn set_aside(&self, conn: ServerConn, reason: &'static str);
}

/// Open a server connection on a host `set` allows, tagged with that host. Hosts that fail
/// are skipped (and their monitor poked); with no eligible host left, waits for a host change
/// up to `failover_wait` (failover_wait_timeout) from the outage's start, read again at each
/// look, so a reload reaches connects already waiting. `login` follows the attempt in
/// progress (SHOW SERVERS). `report` hears of each host that did not take the login (its
/// close line: only here is the host known), and closes the logins made but not handed over.
pub async fn connect(
    set: &HostSet,
    target: &ServerTarget,
    extra_params: &[(String, String)],
    dial: crate::net::Dial,
    login: Option<&server::Login>,
    failover_wait: impl Fn() -> Duration,
    report: &impl ConnectReport,
) -> Result<ServerConn, RouteError> {
    let mut since = None;
    let mut changes = set.changed.subscribe();
    let mut failed: Vec<ServerAddr> = Vec::new();
    let mut asked: Vec<ServerAddr> = Vec::new();
    let mut last: Option<ServerError> = None;
    loop {
        // Also after a wait for a host: the monitors' first checks with a login a client just
        // brought (SCRAM passthrough) report one host at a time, and the first report must
        // not take a whole burst of waiting sessions.
        while set.settling() {
            // Each monitor's first check reports within moments (a login and one query).
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
        changes.borrow_and_update();
        if let Some((host, role, epoch)) = set.choose(&failed) {
            let target = ServerTarget {
                addr: host.addr.clone(),
                ..target.clone()
            };
            match server::connect(&target, extra_params, dial, login).await {
                Ok(mut conn) => {
                    let seen = conn
                        .params
                        .get("in_hot_standby")
                        .map(|v| Role::from_hot_standby(v));
                    if set.monitored && seen.is_some_and(|r| r != role) {
                        // The monitor has not noticed a promotion (or a demotion) yet.
                        tracing::info!(host = %host.addr, expected = role.as_str(), "server reports another role; re-checking the host");
                        report.set_aside(conn, "host down or changed role");
                        host.poke();
                        failed.push(host.addr.clone());
                        continue;
                    }
                    tracing::debug!(host = %host.addr, role = role.as_str(), "server connection routed");
                    set.outage_over();
                    conn.tag = Some(host.tag(role, epoch));
                    return Ok(conn);
                }
                Err(e) if !host_failure(&e) => {
                    report.dial_failed(&host.addr, &e, true);
                    return Err(e.into());
                }
                Err(e) => {
                    report.dial_failed(&host.addr, &e, false);
                    tracing::debug!(host = %host.addr, error = %e, "server connect failed; trying another host");
                    host.poke();
                    failed.push(host.addr.clone());
                    last = Some(e);
                    continue;
                }
            }
        }
        let asking = ask_unverifiable(set, target, extra_params, dial, login, &mut asked, report);
        if let Err(e) = asking.await {
            return Err(e.into());
        }
        if !set.monitored {
            return Err(match last {
                Some(e) => e.into(),
                None => NoHost {
                    attrs: set.attrs.as_str(),
                    last,
                }
                .into(),
            });
        }
        let now = Instant::now();
        // The wait runs from when this outage began, for every client that meets it (each
        // look also keeps the outage current for the set).
        let started = set.outage_started(now);
        // None past the clock's range (the config takes any number of seconds): no limit.
        let deadline = since.get_or_insert(started).checked_add(failover_wait());
        if deadline.is_some_and(|d| now >= d) {
            return Err(NoHost {
                attrs: set.attrs.as_str(),
                last,
            }
            .into());
        }
        // Wait for the monitors to report a change; retry failed hosts now and then anyway.
        let retry = deadline
            .map_or(Duration::MAX, |d| d - now)
            .min(Duration::from_millis(500));
        let woke = tokio::time::timeout(retry, changes.changed()).await;
        tracing::debug!(
            attrs = set.attrs.as_str(),
            changed = woke.is_ok(),
            "no eligible host yet; looking again"
        );
        failed.clear();
    }
}

/// No host is eligible, and some were never checked because the monitor cannot log in to
/// them (a refused login, or SCRAM passthrough with no key yet): no failover will bring them,
/// and waiting failover_wait_timeout for nothing ended in a misleading "no server". The
/// session's own login tells why at once: PostgreSQL's refusal or "no usable password" comes
/// back as the session's error. A login that works is closed (`host not checked yet`) and the
/// monitor told to check again (it has this login too). Each host is asked once per connect
/// (`asked`).
async fn ask_unverifiable(
    set: &HostSet,
    target: &ServerTarget,
    extra_params: &[(String, String)],
    dial: crate::net::Dial,
    login: Option<&server::Login>,
    asked: &mut Vec<ServerAddr>,
    report: &impl ConnectReport,
) -> Result<(), ServerError> {
    for host in set.unverifiable() {
        if asked.contains(&host.addr) {
            continue;
        }
        asked.push(host.addr.clone());
        let target = ServerTarget {
            addr: host.addr.clone(),
            ..target.clone()
        };
        match server::connect(&target, extra_params, dial, login).await {
            Err(e) if !host_failure(&e) => {
                report.dial_failed(&host.addr, &e, true);
                return Err(e);
            }
            Err(e) => {
                report.dial_failed(&host.addr, &e, false);
                tracing::debug!(host = %host.addr, error = %e, "unchecked host: connect failed")
            }
            Ok(conn) => {
                tracing::debug!(host = %host.addr, "unchecked host takes this login; re-checking it");
                report.set_aside(conn, "host not checked yet");
            }
        }
        host.poke();
    }
    Ok(())
}

/// Connect failures that say "this host, not your request": refused, timed out, or the
/// server starting up / shutting down / in recovery.
fn host_failure(e: &ServerError) -> bool {
    match e {
        ServerError::Rejected(fields) => {
            let code = fields.code();
            // 53300 is also a role's or a database's CONNECTION LIMIT ("too many connections
            // for role ..."): that client's own refusal, not a full host.
            let per_object = code == "53300" && fields.message().contains(" for ");
            code.starts_with("57") || code.starts_with("08") || (code == "53300" && !per_object)
        }
        ServerError::Connect { .. } | ServerError::Timeout | ServerError::Protocol(_) => true,
        ServerError::NoPassword(_)
        | ServerError::UnsupportedAuth(_)
        | ServerError::Scram(_)
        | ServerError::TlsRefused
        | ServerError::Tls(_)
        | ServerError::ConnectQueryFailed(_)
        | ServerError::ConnectQueryInTransaction => false,
    }
}

#[cfg(test)]
mod tests;

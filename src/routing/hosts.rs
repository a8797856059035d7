//! Backend hosts: their observed state, the host set of one pool, and the choice of a host for
//! a new server connection (target_session_attrs filter, load_balance_hosts spread).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::{LoadBalance, SessionAttrs};
use crate::server::{BackendPassword, ServerAddr, ServerTarget};

mod tag;
pub use tag::HostTag;

/// What a host is, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Primary,
    Standby,
}

impl Role {
    /// From PostgreSQL's `in_hot_standby` ParameterStatus (14+) value.
    pub fn from_hot_standby(value: &str) -> Role {
        match value {
            "on" => Role::Standby,
            "off" => Role::Primary,
            _ => Role::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

/// Whether a host answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Not checked yet (or not monitored at all).
    Unknown,
    Up,
    /// Answers on its connections but takes no new ones (a smart shutdown under way, a
    /// frozen postmaster, a server starting up): out of rotation, its sessions left alone.
    Draining,
    Down,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Unknown => "unknown",
            Liveness::Up => "up",
            Liveness::Draining => "draining",
            Liveness::Down => "down",
        }
    }
}

/// A host's state as the health monitor last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    pub liveness: Liveness,
    pub role: Role,
    /// Received but not yet replayed WAL, on a standby.
    pub lag_bytes: Option<u64>,
    /// Time since the last replayed transaction while WAL is waiting to be replayed.
    pub lag: Option<Duration>,
    /// Over max_standby_lag / max_standby_lag_bytes: out of rotation.
    pub lagging: bool,
    /// Bumped on every change of liveness or role: connections made in an older epoch are
    /// never handed out again.
    pub epoch: u64,
    /// When this host was last seen promoted (standby to primary), on the routing change
    /// counter's scale; 0 = never. With two primaries up (split brain), only the one promoted
    /// last takes writes.
    pub promoted: u64,
    /// Why the monitor's last check could not log in (None: it could, or has not tried):
    /// every login it has was refused, or none has a password yet (SCRAM passthrough before
    /// any client), and the rest is as last seen; or the TLS handshake failed (see
    /// [`Observation::TlsFailed`]), and the rest is unknown.
    pub refused: Option<String>,
}

impl Default for HostStatus {
    fn default() -> Self {
        HostStatus {
            liveness: Liveness::Unknown,
            role: Role::Unknown,
            lag_bytes: None,
            lag: None,
            lagging: false,
            epoch: 0,
            promoted: 0,
            refused: None,
        }
    }
}

/// One health-check result.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Observation {
    Down,
    /// The monitor's kept connection answers but a fresh login fails (see [`Liveness`]).
    Draining,
    /// The host answered but refused the monitor's login (its role disabled, a connection
    /// limit, a changed password): nothing is learned, the last status stands. With why.
    Refused(String),
    /// The TLS handshake failed (the server's certificate is not trusted under
    /// server_tls_sslmode, or it refuses TLS that is required): no login can be made with
    /// the TLS setup in force, whoever's. What was known came over a connection the setup
    /// no longer allows (a reload changed it) or from a server that changed: it is
    /// forgotten, and the host is not used until a check works; sessions asking it
    /// themselves (see [`HostSet::unverifiable`]) get the TLS error at once. Nothing ends
    /// the sessions already on it. With why.
    TlsFailed(String),
    Up {
        role: Role,
        lag_bytes: Option<u64>,
        lag: Option<Duration>,
        lagging: bool,
    },
}

/// How long a new host set waits for its hosts' first checks (see [`HostSet::settling`]).
pub(super) const SETTLE_TIME: Duration = Duration::from_secs(2);

/// One backend host, shared by every pool that lists it.
#[derive(Debug)]
pub struct Host {
    pub addr: ServerAddr,
    status: Mutex<HostStatus>,
    /// Cancelled when the host goes down: sessions relaying to it end with an error.
    gone: Mutex<CancellationToken>,
    /// Server connections to this host, all pools counted.
    connections: AtomicU32,
    pub(super) monitor_started: AtomicBool,
    /// Ask the monitor to check now (a connect failed, a role looked wrong).
    pub(super) poke: Notify,
    changed: Arc<watch::Sender<u64>>,
    /// The logins the monitor may use: one per distinct backend user/database of the pools
    /// that list this host; the next is tried when one is refused (a role disabled or over
    /// its connection limit must not blind routing for everyone).
    logins: Mutex<Vec<ServerTarget>>,
    /// A login with a credential the monitor lacked came (SCRAM passthrough keys learned
    /// from a client): try it at once, not after the refused logins' back-off.
    pub(super) new_login: AtomicBool,
    /// Stops the monitor (the host left the configuration).
    pub(super) retired: CancellationToken,
    /// Hosts listed with this one in some entry (its cluster, as far as pgporter can tell):
    /// a primary among them promoted later supersedes this one (split brain), whichever
    /// entry a session uses.
    peers: Mutex<Vec<std::sync::Weak<Host>>>,
}

impl Host {
    pub(super) fn new(addr: ServerAddr, changed: Arc<watch::Sender<u64>>) -> Host {
        Host {
            addr,
            status: Mutex::new(HostStatus::default()),
            gone: Mutex::new(CancellationToken::new()),
            connections: AtomicU32::new(0),
            monitor_started: AtomicBool::new(false),
            poke: Notify::new(),
            changed,
            logins: Mutex::new(Vec::new()),
            new_login: AtomicBool::new(false),
            retired: CancellationToken::new(),
            peers: Mutex::new(Vec::new()),
        }
    }

    /// Remember the hosts an entry lists with this one.
    pub(super) fn add_peers(self: &Arc<Self>, set: &[Arc<Host>]) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|p| p.strong_count() > 0);
        for h in set.iter().filter(|h| !Arc::ptr_eq(h, self)) {
            if !peers.iter().any(|p| p.as_ptr() == Arc::as_ptr(h)) {
                peers.push(Arc::downgrade(h));
            }
        }
    }

    fn peer_hosts(&self) -> Vec<Arc<Host>> {
        (self.peers.lock().unwrap_or_else(|p| p.into_inner()))
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    /// This host's cluster has lost its primary and has none up yet (a failover under way):
    /// a host listed with it was last seen as the primary and is down, and none is an up
    /// primary. A standby without a WAL receiver then misses nothing a primary could send.
    pub(super) fn primary_down(&self) -> bool {
        let peers: Vec<HostStatus> = self.peer_hosts().iter().map(|p| p.status()).collect();
        let primary_in = |l: Liveness| {
            peers
                .iter()
                .any(|s| s.role == Role::Primary && s.liveness == l)
        };
        primary_in(Liveness::Down) && !primary_in(Liveness::Up)
    }

    /// The status routing goes by: a primary is out (as if draining) while a peer primary
    /// seen promoted later, or one whose order is unknown, is up too (split brain).
    pub(super) fn routing_status(&self) -> HostStatus {
        let mut me = self.status();
        if me.liveness != Liveness::Up || me.role != Role::Primary {
            return me;
        }
        let peers = self.peer_hosts();
        let superseded = peers.iter().any(|p| {
            let other = p.status();
            other.liveness == Liveness::Up
                && other.role == Role::Primary
                && other.promoted >= me.promoted
        });
        if superseded {
            me.liveness = Liveness::Draining;
        }
        me
    }

    /// Offer the monitor another login (kept unless one with the same user, database and
    /// password is known). One with a password replaces the same user's and database's
    /// login without one or with learned SCRAM passthrough keys, and is tried at once.
    pub(super) fn add_login(&self, target: ServerTarget) {
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        let same_login = |t: &ServerTarget| t.user == target.user && t.dbname == target.dbname;
        if logins
            .iter()
            .any(|t| same_login(t) && t.password == target.password)
        {
            return;
        }
        // Learned keys go stale when the password changes: the newer ones replace them.
        let unusable = |t: &ServerTarget| {
            same_login(t)
                && matches!(
                    t.password,
                    BackendPassword::None | BackendPassword::ScramKeys(_)
                )
        };
        let credential = target.password != BackendPassword::None;
        match logins.iter_mut().find(|t| unusable(t)) {
            Some(slot) if credential => *slot = target,
            _ => logins.push(target),
        }
        drop(logins);
        if credential {
            // A host never checked for want of a credential is about to be: no longer
            // unverifiable, and a new set settles for its check (see [`HostSet::settling`]).
            let mut status = self.lock();
            if status.liveness == Liveness::Unknown {
                status.refused = None;
            }
        }
        self.new_login.store(true, Ordering::Relaxed);
        self.poke();
    }

    /// The monitor's `i`-th login (modulo their number), and how many there are.
    pub(super) fn login(&self, i: usize) -> Option<(ServerTarget, usize)> {
        let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        let n = logins.len();
        (n > 0).then(|| (logins[i % n].clone(), n))
    }

    fn lock(&self) -> MutexGuard<'_, HostStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> HostStatus {
        self.lock().clone()
    }

    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Ask for an immediate re-check.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Record a health-check result; returns the previous status when something that matters
    /// for routing changed (then waiters are woken, and idle connections re-checked).
    pub(super) fn observe(&self, seen: &Observation) -> Option<HostStatus> {
        let (old, went_down) = {
            let mut status = self.lock();
            let old = status.clone();
            status.refused = match seen {
                Observation::Refused(why) | Observation::TlsFailed(why) => Some(why.clone()),
                _ => None,
            };
            match *seen {
                Observation::Refused(_) => {
                    drop(status);
                    // Waiters learn that this host cannot be checked (`unverifiable`).
                    if old.refused.is_none() {
                        self.changed.send_modify(|v| *v = v.wrapping_add(1));
                    }
                    return None;
                }
                Observation::TlsFailed(_) => {
                    status.liveness = Liveness::Unknown;
                    status.role = Role::Unknown;
                    status.lag_bytes = None;
                    status.lag = None;
                    status.lagging = false;
                }
                Observation::Draining => status.liveness = Liveness::Draining,
                Observation::Down => {
                    status.liveness = Liveness::Down;
                    status.lag_bytes = None;
                    status.lag = None;
                    status.lagging = false;
                }
                Observation::Up {
                    role,
                    lag_bytes,
                    lag,
                    lagging,
                } => {
                    if old.role == Role::Standby && role == Role::Primary {
                        status.promoted = self.changed.borrow().wrapping_add(1);
                    }
                    status.liveness = Liveness::Up;
                    status.role = role;
                    status.lag_bytes = lag_bytes;
                    status.lag = lag;
                    status.lagging = lagging;
                }
            }
            if status.liveness != old.liveness || status.role != old.role {
                status.epoch += 1;
            }
            let routing_changed = status.epoch != old.epoch
                || status.lagging != old.lagging
                || status.refused.is_some() != old.refused.is_some();
            if !routing_changed {
                return None;
            }
            (old, status.liveness == Liveness::Down)
        };
        if went_down {
            let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
            gone.cancel();
            *gone = CancellationToken::new();
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        Some(old)
    }

    /// Tag a new server connection to this host, made for `role` in `epoch`.
    pub(super) fn tag(self: &Arc<Self>, role: Role, epoch: u64) -> HostTag {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let gone = self
            .gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .child_token();
        HostTag {
            host: Arc::clone(self),
            role,
            epoch,
            gone,
        }
    }
}

/// The hosts of one pool, with the rules for choosing among them.
#[derive(Debug)]
pub struct HostSet {
    hosts: Vec<Arc<Host>>,
    pub attrs: SessionAttrs,
    balance: LoadBalance,
    /// False for a single host with target_session_attrs=any: no health checks, always used.
    pub(super) monitored: bool,
    /// For `subscribe`: bumped on any routing-relevant host change.
    pub(super) changed: Arc<watch::Sender<u64>>,
    /// round-robin's position, shared with the other pools' sets of the same hosts and
    /// kind (read-write or read-only): see [`HostSet::with_rotation`].
    next: Arc<AtomicUsize>,
    /// Since when connects have found no eligible host (None: one was found last time). A
    /// client reaching the outage late (after a wait in the pool queue) does not wait a
    /// whole failover_wait_timeout again.
    /// (since, last seen): an outage nobody has looked at for a second is over.
    outage_since: Mutex<Option<(tokio::time::Instant, tokio::time::Instant)>>,
    /// When the set was made: for [`HostSet::settling`].
    created: tokio::time::Instant,
}

impl HostSet {
    /// When connects started finding no eligible host, recording `now` if that is news.
    pub(super) fn outage_started(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let mut outage = self.outage_since.lock().unwrap_or_else(|p| p.into_inner());
        let since = match *outage {
            // Waiting connects look again at least every 500 ms.
            Some((since, seen)) if now.duration_since(seen) < Duration::from_secs(1) => since,
            _ => now,
        };
        *outage = Some((since, now));
        since
    }

    /// Just made, and some host not checked yet: choosing now would send a first burst of
    /// sessions (which keep their host in session mode) all to whichever host reported first.
    /// Bounded: a host whose check never succeeds does not hold connects up after
    /// [`SETTLE_TIME`].
    pub(super) fn settling(&self) -> bool {
        self.monitored
            && self.created.elapsed() < SETTLE_TIME
            && self.hosts.iter().any(|h| {
                let s = h.status();
                s.liveness == Liveness::Unknown && s.refused.is_none()
            })
    }

    /// Hosts never checked because the monitor cannot log in to them (see
    /// [`HostStatus::refused`]): no failover will make them eligible.
    pub(super) fn unverifiable(&self) -> Vec<Arc<Host>> {
        self.hosts
            .iter()
            .filter(|h| {
                let s = h.status();
                s.liveness == Liveness::Unknown && s.refused.is_some()
            })
            .cloned()
            .collect()
    }

    /// A connect found a host: the outage, if any, is over.
    pub(super) fn outage_over(&self) {
        *self.outage_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn new(
        hosts: Vec<Arc<Host>>,
        attrs: SessionAttrs,
        balance: LoadBalance,
        changed: Arc<watch::Sender<u64>>,
    ) -> HostSet {
        let monitored = hosts.len() > 1 || attrs != SessionAttrs::Any;
        HostSet {
            hosts,
            attrs,
            balance,
            monitored,
            outage_since: Mutex::new(None),
            created: tokio::time::Instant::now(),
            changed,
            next: Arc::default(),
        }
    }

    /// Take turns over the hosts with every set sharing `next`: a pool per person (each
    /// their own backend user) makes one or two connections, so a rotation of its own sent
    /// every person's first connection to the same host.
    pub(super) fn with_rotation(mut self, next: Arc<AtomicUsize>) -> HostSet {
        self.next = next;
        self
    }

    /// A single unmonitored host (pools built without routing, e.g. in unit tests).
    pub fn single(addr: ServerAddr) -> HostSet {
        let changed = Arc::new(watch::channel(0).0);
        let host = Arc::new(Host::new(addr, Arc::clone(&changed)));
        HostSet::new(vec![host], SessionAttrs::Any, LoadBalance::Disable, changed)
    }

    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.hosts
    }

    /// Offer the health monitors of a monitored set a login for `target`'s user and database
    /// (with the password it has now: a pool that learned SCRAM passthrough keys offers them
    /// again).
    pub fn offer_login(&self, target: &ServerTarget) {
        if !self.monitored {
            return;
        }
        for host in &self.hosts {
            host.add_login(ServerTarget {
                addr: host.addr.clone(),
                params: Vec::new(),
                ..target.clone()
            });
        }
    }

    /// Pick a host for a new connection, skipping `exclude` (hosts that just failed).
    pub fn choose(&self, exclude: &[ServerAddr]) -> Option<(Arc<Host>, Role, u64)> {
        let statuses: Vec<HostStatus> = self.hosts.iter().map(|h| h.routing_status()).collect();
        let eligible: Vec<usize> = if self.monitored {
            eligible(self.attrs, &statuses)
        } else {
            (0..self.hosts.len()).collect()
        };
        let candidates: Vec<usize> = eligible
            .into_iter()
            .filter(|&i| {
                self.hosts
                    .get(i)
                    .is_some_and(|h| !exclude.contains(&h.addr))
            })
            .collect();
        let i = match self.balance {
            LoadBalance::Disable => candidates.first().copied(),
            LoadBalance::RoundRobin => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                candidates.get(n % candidates.len().max(1)).copied()
            }
            LoadBalance::Random if candidates.is_empty() => None,
            LoadBalance::Random => candidates
                .get(rand::random::<usize>() % candidates.len())
                .copied(),
            LoadBalance::LeastConnections => candidates
                .iter()
                .copied()
                .min_by_key(|&i| self.hosts.get(i).map_or(u32::MAX, |h| h.connections())),
        }?;
        let host = self.hosts.get(i)?;
        let status = statuses.get(i)?;
        Some((Arc::clone(host), status.role, status.epoch))
    }

    /// Does this set still say what `hosts` (in order, without repeats), `attrs` and `balance`
    /// say? A reload that changed any of them replaces the pool.
    pub fn matches(&self, hosts: &[ServerAddr], attrs: SessionAttrs, balance: LoadBalance) -> bool {
        self.attrs == attrs
            && self.balance == balance
            && self.hosts.len() == hosts.len()
            && self.hosts.iter().zip(hosts).all(|(h, a)| h.addr == *a)
    }

    /// May an idle connection with this tag be handed out now? Its host must be in the same
    /// epoch (no restart or role change since it connected) and still eligible.
    pub fn accepts(&self, tag: Option<&HostTag>) -> bool {
        if !self.monitored {
            return true;
        }
        let Some(tag) = tag else { return false };
        let statuses: Vec<HostStatus> = self.hosts.iter().map(|h| h.routing_status()).collect();
        eligible(self.attrs, &statuses).into_iter().any(|i| {
            self.hosts.get(i).is_some_and(|h| Arc::ptr_eq(h, &tag.host))
                && statuses
                    .get(i)
                    .is_some_and(|s| s.epoch == tag.epoch && s.role == tag.role)
        })
    }
}

/// Indexes of the hosts a new connection may go to under `attrs`.
pub fn eligible(attrs: SessionAttrs, statuses: &[HostStatus]) -> Vec<usize> {
    let usable = |s: &HostStatus| s.liveness == Liveness::Up;
    let standby = |s: &HostStatus| usable(s) && s.role == Role::Standby && !s.lagging;
    let up_primary = |s: &HostStatus| usable(s) && s.role == Role::Primary;
    // Split brain (two primaries up, e.g. an old primary restarted after a failover): writes
    // go only to the one seen promoted last; if none was seen promoted (pgporter started
    // into it), to none.
    let primaries: Vec<&HostStatus> = statuses.iter().filter(|s| up_primary(s)).collect();
    let newest = primaries.iter().map(|s| s.promoted).max().unwrap_or(0);
    let split = primaries.len() > 1;
    let primary =
        |s: &HostStatus| up_primary(s) && (!split || (newest > 0 && s.promoted == newest));
    let pick = |f: &dyn Fn(&HostStatus) -> bool| -> Vec<usize> {
        statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| f(s))
            .map(|(i, _)| i)
            .collect()
    };
    match attrs {
        SessionAttrs::Primary => pick(&primary),
        SessionAttrs::Standby => pick(&standby),
        SessionAttrs::PreferStandby => {
            let standbys = pick(&standby);
            if standbys.is_empty() {
                pick(&primary)
            } else {
                standbys
            }
        }
        SessionAttrs::Any => pick(&|s| primary(s) || standby(s)),
    }
}

#[cfg(test)]
mod tests;

//! The registry of logged-in client sessions, for SHOW CLIENTS / SERVERS / POOLS, /metrics,
//! KILL / KILL_CLIENT and the drain. Updated at state changes (login, waiting for a server,
//! server attached, released, end), never per message. A sink: imports nothing upstream.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{
    AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::SystemTime;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where a session is in its life (SHOW CLIENTS `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Logged in, no server connection (no query waiting).
    Idle = 0,
    /// Waiting for a server connection.
    Waiting = 1,
    /// Linked to a server connection.
    Active = 2,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// The server connection a session holds (SHOW SERVERS row data).
#[derive(Debug)]
pub struct ServerLink {
    pub id: u64,
    /// Host name or address, or the unix socket directory (starts with `/`).
    pub addr: String,
    pub port: u16,
    pub pid: i32,
    /// The server's cancel secret: a client's CancelRequest is forwarded with it.
    pub secret: i32,
    pub connect_time: SystemTime,
    /// When the connection was opened, in µs since [`crate::stats::Stats::epoch`]: compared
    /// with the pool's `reconnect_before_us` (close_needed, WAIT_CLOSE).
    pub created_us: u64,
    /// TLS toward the server, if any.
    pub tls: Option<crate::tls::TlsInfo>,
    /// pgporter's end of the connection (matches the server's pg_stat_activity.client_port).
    pub local: Option<std::net::SocketAddr>,
    /// Statements pgporter keeps prepared on it (transaction mode; SHOW SERVERS), counted at
    /// the end of each transaction.
    pub prepared: AtomicU32,
}

/// [`SessionInfo::ask_close`]: server_fast_close.
const ASK_CLOSE: u8 = 1;
/// [`SessionInfo::ask_retime`]: the timeouts were reloaded.
const ASK_RETIME: u8 = 2;
/// [`SessionInfo::begin_cancel`]: a CancelRequest came while waiting for a server.
const ASK_CANCEL: u8 = 4;
/// [`SessionInfo::set_active`] .. [`SessionInfo::set_up`]: pgporter's own SETs run on the
/// server connection; a cancel then is the client's request's, not theirs.
const SETTING_UP: u8 = 8;

/// Where [`SessionInfo::begin_cancel`] sends a CancelRequest.
#[derive(Debug)]
pub enum CancelTarget {
    /// Forward it to the session's server connection.
    Server(Arc<ServerLink>, CancelInFlight),
    /// The session waits for a server connection: its request is cancelled here.
    Waiting,
    /// Nothing to cancel (idle, or not logged in).
    Nothing,
}

/// Why a session was ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KillReason {
    /// Shutdown (SHUTDOWN, signals), which ends sessions with its own words.
    Shutdown = 1,
    /// client_idle_timeout.
    ClientIdleTimeout = 2,
    /// KILL of the session's database (or a bare KILL).
    Database = 3,
    /// KILL_CLIENT.
    Client = 4,
}

/// `wait_start_us` of a wait that is not timed.
const UNTIMED: u64 = u64::MAX;

/// One session, shared between its task and the registry.
#[derive(Debug)]
pub struct SessionInfo {
    /// Unique per process, never reused (SHOW CLIENTS `id`, KILL_CLIENT argument).
    pub id: u64,
    pub user: Arc<str>,
    pub database: Arc<str>,
    /// The user pgporter logs in to PostgreSQL as (the pool's user).
    pub pool_user: Arc<str>,
    /// The listener it came in on: with `pool_user` and `database`, its pool's key.
    pub endpoint: crate::routing::Endpoint,
    /// The client's IP address (None on the unix socket).
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub application_name: Box<str>,
    pub admin: bool,
    /// TLS toward the client, if any.
    pub tls: Option<crate::tls::TlsInfo>,
    /// pgporter's end of the client's TCP connection (SHOW CLIENTS local_addr).
    pub local: Option<std::net::SocketAddr>,
    /// The client's process id on the unix socket (SHOW CLIENTS remote_pid), else 0.
    pub peer_pid: i32,
    pub connect_time: SystemTime,
    state: AtomicU8,
    /// µs since the stats epoch at which the current wait started ([`UNTIMED`]: a wait at
    /// login, which PgBouncer does not time). Read through [`SessionInfo::waited_us`].
    wait_start_us: AtomicU64,
    /// Wall-clock milliseconds since the UNIX epoch of the latest request (SHOW CLIENTS shows
    /// seconds; client_idle_timeout needs better).
    pub request_ms: AtomicU64,
    pub server_pid: AtomicI32,
    /// Boxed: most of an idle session's entry would be this empty slot.
    server: Mutex<Option<Arc<ServerLink>>>,
    /// Set to end this session now (KILL, KILL_CLIENT, shutdown); `kill` wakes its waiter.
    /// Inline, not a CancellationToken: that would be an allocation of its own per session.
    killed: AtomicU8,
    /// What its relay is asked to look at on its next wake (`kill` wakes it): [`ASK_CLOSE`],
    /// [`ASK_RETIME`].
    asks: AtomicU8,
    kill: Notify,
    /// CancelRequests being forwarded to this session's server connection: it is not reset or
    /// reused until they are delivered (a late one would cancel the next client's query).
    cancels: AtomicU32,
    /// Named prepared statements the client has open (transaction mode; SHOW CLIENTS),
    /// counted at the end of each transaction.
    pub prepared: AtomicU32,
}

/// One forwarded cancel in flight (see [`SessionInfo::begin_cancel`]).
#[derive(Debug)]
pub struct CancelInFlight(Arc<SessionInfo>);

impl Drop for CancelInFlight {
    fn drop(&mut self) {
        self.0.cancels.fetch_sub(1, SeqCst);
    }
}

impl SessionInfo {
    /// The client address for SHOW CLIENTS (`unix` for the unix socket).
    pub fn addr(&self) -> String {
        self.ip.map_or_else(|| "unix".into(), |ip| ip.to_string())
    }
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Relaxed))
    }
    /// A request started (SHOW CLIENTS / SERVERS request_time).
    pub fn requested(&self) {
        self.request_ms.store(unix_ms(SystemTime::now()), Relaxed);
    }
    /// When the latest request started.
    pub fn request_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(self.request_ms.load(Relaxed))
    }
    /// Waiting for a server connection since `now_us` (None: at login, for the pool's first
    /// server connection, which PgBouncer lists as waiting but does not time: SHOW CLIENTS
    /// wait and SHOW POOLS maxwait stay 0, as seen with PgBouncer 1.18).
    pub fn set_waiting(&self, now_us: Option<u64>) {
        self.wait_start_us.store(now_us.unwrap_or(UNTIMED), Relaxed);
        self.request_ms.store(unix_ms(SystemTime::now()), Relaxed);
        self.state.store(ClientState::Waiting as u8, Relaxed);
    }
    /// How long the client has waited for a server connection at `now_us` (0 when not
    /// waiting, or waiting at login).
    pub fn waited_us(&self, now_us: u64) -> u64 {
        match self.wait_start_us.load(Relaxed) {
            _ if self.state() != ClientState::Waiting => 0,
            UNTIMED => 0,
            started => now_us.saturating_sub(started),
        }
    }
    /// Under the link's lock, as [`Self::set_active`]: a cancel ([`Self::begin_cancel`]) sees
    /// either the state before or the state after, never a mix.
    pub fn set_idle(&self) {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        // A close or cancel asked for the request just ended does not concern the next one.
        self.asks.store(0, SeqCst);
        self.state.store(ClientState::Idle as u8, Relaxed);
        *server = None;
        self.server_pid.store(0, Relaxed);
    }
    /// The session holds `link` (PAUSE, WAIT_CLOSE, SHOW count it from now on), still being
    /// set up: cancels are held back until [`Self::set_up`].
    pub fn set_active(&self, link: Arc<ServerLink>) {
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        self.server_pid.store(link.pid, Relaxed);
        *server = Some(link);
        self.asks.fetch_or(SETTING_UP, SeqCst);
        self.state.store(ClientState::Active as u8, Relaxed);
    }

    /// pgporter's own SETs are done: cancels go to the server from now on. True if one came
    /// while waiting or setting up (the client's request is then answered as cancelled, not
    /// sent).
    pub fn set_up(&self) -> bool {
        let _server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        self.asks.fetch_and(!(SETTING_UP | ASK_CANCEL), SeqCst) & ASK_CANCEL != 0
    }
    /// End the session for a shutdown (it learns at its next wait, or at once if waiting in
    /// [`Self::killed`]).
    pub fn kill(&self) {
        self.kill_for(KillReason::Shutdown);
    }

    /// As [`Self::kill`], saying why (the first reason given stays).
    pub fn kill_for(&self, reason: KillReason) {
        let _ = self
            .killed
            .compare_exchange(0, reason as u8, SeqCst, SeqCst);
        self.kill.notify_waiters();
    }

    /// server_fast_close: end the session when its server connection is next idle (outside
    /// a transaction, nothing in flight), if it holds one opened before `before_us`.
    pub fn ask_close(&self, before_us: u64) -> bool {
        let stale = (self.server.lock().unwrap_or_else(|p| p.into_inner()))
            .as_deref()
            .is_some_and(|link| link.created_us < before_us);
        if stale {
            self.asks.fetch_or(ASK_CLOSE, SeqCst);
            self.kill.notify_waiters();
        }
        stale
    }

    /// Whether [`Self::ask_close`] asked (cheap: the relay reads it on every wake).
    pub fn close_asked(&self) -> bool {
        self.asks.load(Relaxed) & ASK_CLOSE != 0
    }

    /// The timeouts changed (reload): a session holding a server connection takes the new
    /// query_timeout / idle_transaction_timeout / transaction_timeout.
    pub fn ask_retime(&self) {
        if self.server_pid.load(Relaxed) != 0 {
            self.asks.fetch_or(ASK_RETIME, SeqCst);
            self.kill.notify_waiters();
        }
    }

    /// Resolves once a cancel came while the session waited for a server connection
    /// ([`CancelTarget::Waiting`]), and takes the ask.
    pub async fn wait_cancelled(&self) {
        loop {
            let mut woken = std::pin::pin!(self.kill.notified());
            woken.as_mut().enable();
            if self.asks.fetch_and(!ASK_CANCEL, SeqCst) & ASK_CANCEL != 0 {
                return;
            }
            woken.await;
        }
    }

    /// Whether [`Self::ask_retime`] asked since the last call.
    pub fn take_retime(&self) -> bool {
        self.asks.load(Relaxed) & ASK_RETIME != 0
            && self.asks.fetch_and(!ASK_RETIME, SeqCst) & ASK_RETIME != 0
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(SeqCst) != 0
    }

    /// Why the session was killed, once it was.
    pub fn kill_reason(&self) -> Option<KillReason> {
        match self.killed.load(SeqCst) {
            0 => None,
            r if r == KillReason::ClientIdleTimeout as u8 => Some(KillReason::ClientIdleTimeout),
            r if r == KillReason::Database as u8 => Some(KillReason::Database),
            r if r == KillReason::Client as u8 => Some(KillReason::Client),
            _ => Some(KillReason::Shutdown),
        }
    }

    /// Resolves once the session is killed. Cheap to poll again: a relay polls it on every
    /// wake, and once the notification holds this task's waker only the flag is read (the
    /// notification's own poll takes the `Notify`'s lock).
    pub async fn killed(&self) {
        loop {
            let mut woken = std::pin::pin!(self.kill.notified());
            // Registered before the flag is read: a kill in between still wakes this.
            woken.as_mut().enable();
            let mut holds: Option<Waker> = None;
            let killed = std::future::poll_fn(|cx| {
                if self.is_killed() {
                    return Poll::Ready(true);
                }
                if !holds.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    // Registers (or replaces) the waker; only `kill_for` and `ask_close`
                    // notify, after setting their flag.
                    if woken.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(self.is_killed());
                    }
                    holds = Some(cx.waker().clone());
                }
                Poll::Pending
            })
            .await;
            if killed {
                return;
            }
            // Woken by `ask_close`: the task (its relay) has been woken to look; wait on
            // for a kill with a fresh registration.
        }
    }

    /// Where a CancelRequest for this session goes. Holding a server connection: that
    /// connection, the cancel counted as in flight until the returned guard drops (counted
    /// under the same lock [`Self::set_idle`] clears the link with: once `set_idle` returns,
    /// every cancel that saw the link is counted). Waiting for one, or still setting it up:
    /// the wait ends, or the request is answered as cancelled before it is sent
    /// ([`Self::set_up`]).
    pub fn begin_cancel(self: &Arc<Self>) -> CancelTarget {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = server.as_ref() {
            if self.asks.load(SeqCst) & SETTING_UP == 0 {
                self.cancels.fetch_add(1, SeqCst);
                return CancelTarget::Server(Arc::clone(link), CancelInFlight(Arc::clone(self)));
            }
        } else if self.state() != ClientState::Waiting {
            return CancelTarget::Nothing;
        }
        self.asks.fetch_or(ASK_CANCEL, SeqCst);
        self.kill.notify_waiters();
        CancelTarget::Waiting
    }

    /// Wait (up to `limit`) until no cancel is being forwarded to the server connection this
    /// session just gave up; false if one still is (the connection must then be closed).
    pub async fn cancels_settled(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.cancels.load(SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        true
    }

    pub fn server(&self) -> Option<Arc<ServerLink>> {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a new session registers with.
#[derive(Debug)]
pub struct NewSession<'a> {
    /// From [`Sessions::next_client_id`], taken when the connection came (its log lines
    /// name it by this id from then on).
    pub id: u64,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub pool_user: Arc<str>,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub application_name: &'a str,
    pub admin: bool,
    pub tls: Option<crate::tls::TlsInfo>,
    /// The listener it came in on (its pool is per endpoint).
    pub endpoint: crate::routing::Endpoint,
    /// pgporter's end of the client's TCP connection.
    pub local: Option<std::net::SocketAddr>,
    /// The client's process id on the unix socket, else 0.
    pub peer_pid: i32,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: DashMap<u64, Arc<SessionInfo>>,
    next_id: AtomicU64,
    /// Server connection ids (SHOW SERVERS `id`).
    next_server_id: AtomicU64,
}

/// Removes the session from the registry when dropped.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    pub info: Arc<SessionInfo>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.map.remove(&self.info.id);
    }
}

impl Sessions {
    /// Register a logged-in session; `parent` is the shutdown token: a session registered
    /// after it fired is killed at once (those registered before, by [`Self::kill_all`]).
    pub fn register(
        self: &Arc<Self>,
        s: NewSession<'_>,
        parent: &CancellationToken,
    ) -> SessionGuard {
        let id = s.id;
        let now = SystemTime::now();
        let info = Arc::new(SessionInfo {
            id,
            user: s.user,
            database: s.database,
            pool_user: s.pool_user,
            ip: s.ip,
            port: s.port,
            application_name: s.application_name.into(),
            admin: s.admin,
            tls: s.tls,
            endpoint: s.endpoint,
            local: s.local,
            peer_pid: s.peer_pid,
            connect_time: now,
            state: AtomicU8::new(ClientState::Idle as u8),
            wait_start_us: AtomicU64::new(0),
            request_ms: AtomicU64::new(unix_ms(now)),
            server_pid: AtomicI32::new(0),
            server: Mutex::new(None),
            killed: AtomicU8::new(0),
            asks: AtomicU8::new(0),
            cancels: AtomicU32::new(0),
            prepared: AtomicU32::new(0),
            kill: Notify::new(),
        });
        self.map.insert(id, Arc::clone(&info));
        // After the insert: a shutdown either finds this session in the map or is seen here.
        if parent.is_cancelled() {
            info.kill();
        }
        SessionGuard {
            sessions: Arc::clone(self),
            info,
        }
    }

    /// A fresh id for a client connection (its session's once it logs in).
    pub fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed) + 1
    }

    /// A fresh id for a server connection being attached.
    pub fn next_server_id(&self) -> u64 {
        self.next_server_id.fetch_add(1, Relaxed) + 1
    }

    /// Every session, sorted by id (no map guard kept).
    pub fn all(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self.map.iter().map(|e| Arc::clone(e.value())).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionInfo>> {
        self.map.get(&id).map(|e| Arc::clone(e.value()))
    }

    /// Sessions that are not on the admin console (the drain waits for these).
    pub fn regular_count(&self) -> usize {
        self.map.iter().filter(|e| !e.value().admin).count()
    }

    /// Regular sessions holding a server connection (SHUTDOWN WAIT_FOR_SERVERS waits for
    /// these); the ones waiting for one are ended (PgBouncer disconnects them eagerly).
    pub fn holding_servers_ending_waiters(&self) -> usize {
        let mut holding = 0;
        for e in self.map.iter().filter(|e| !e.value().admin) {
            match e.value().state() {
                ClientState::Active => holding += 1,
                ClientState::Waiting => e.value().kill(),
                ClientState::Idle => {}
            }
        }
        holding
    }

    /// End every regular session on `db` (all databases when None); returns how many.
    pub fn kill_database(&self, db: Option<&str>) -> usize {
        let mut n = 0;
        for e in self.map.iter() {
            let s = e.value();
            if !s.admin && db.map_or(true, |d| d == &*s.database) {
                s.kill_for(KillReason::Database);
                n += 1;
            }
        }
        n
    }

    /// End every session, admin consoles included (shutdown).
    pub fn kill_all(&self) {
        self.map.iter().for_each(|e| e.value().kill());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pool client's registration data (tests elsewhere).
    pub(crate) fn new_session(db: &str) -> NewSession<'_> {
        new(db, false)
    }

    fn new<'a>(db: &'a str, admin: bool) -> NewSession<'a> {
        // Unique across the tests' registries, as a registry's own ids are.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NewSession {
            id: NEXT.fetch_add(1, Relaxed),
            user: "u".into(),
            database: db.into(),
            pool_user: "u".into(),
            ip: Some([127, 0, 0, 1].into()),
            port: 1,
            application_name: "",
            admin,
            tls: None,
            endpoint: crate::routing::Endpoint::ReadWrite,
            local: None,
            peer_pid: 0,
        }
    }

    #[test]
    fn register_kill_and_drop() {
        let root = CancellationToken::new();
        let s = Arc::new(Sessions::default());
        let a = s.register(new("a", false), &root);
        let b = s.register(new("b", false), &root);
        let adm = s.register(new("pgbouncer", true), &root);
        assert_eq!(s.regular_count(), 2);
        assert!(b.info.id > a.info.id);
        assert_eq!(s.kill_database(Some("a")), 1);
        assert!(a.info.is_killed());
        assert!(!b.info.is_killed());
        assert!(!adm.info.is_killed());
        drop(a);
        assert_eq!(s.regular_count(), 1);
        root.cancel();
        s.kill_all();
        assert!(b.info.is_killed() && adm.info.is_killed());
        let late = s.register(new("a", false), &root);
        assert!(late.info.is_killed(), "registered after the shutdown");
    }

    #[test]
    fn a_cancel_racing_the_grant_of_a_server_is_not_lost() {
        let root = CancellationToken::new();
        let s = Arc::new(Sessions::default());
        let a = s.register(new("a", false), &root);
        let link = Arc::new(ServerLink {
            id: 7,
            addr: "127.0.0.1".into(),
            port: 5432,
            pid: 7,
            secret: 9,
            connect_time: SystemTime::now(),
            created_us: 0,
            tls: None,
            local: None,
            prepared: Default::default(),
        });
        assert!(matches!(a.info.begin_cancel(), CancelTarget::Nothing));
        // Asked while waiting; the server is granted before the wait looks: the set-up
        // finds the ask.
        a.info.set_waiting(Some(1));
        assert!(matches!(a.info.begin_cancel(), CancelTarget::Waiting));
        a.info.set_active(link.clone());
        assert!(a.info.set_up());
        // Asked while pgporter's own SETs run: held back for the client's request, not sent
        // to the server (it would cancel the SET).
        a.info.set_active(link.clone());
        assert_eq!(a.info.state(), ClientState::Active, "counted as holding it");
        assert!(matches!(a.info.begin_cancel(), CancelTarget::Waiting));
        assert!(a.info.set_up());
        // Set up: forwarded to the server; nothing left for the next set-up.
        assert!(matches!(
            a.info.begin_cancel(),
            CancelTarget::Server(link, _) if link.pid == 7
        ));
        assert!(!a.info.set_up());
        // An ask left over when the request ends does not cancel the next one.
        a.info.set_idle();
        a.info.set_waiting(Some(2));
        assert!(matches!(a.info.begin_cancel(), CancelTarget::Waiting));
        a.info.set_idle();
        a.info.set_active(link);
        assert!(!a.info.set_up());
    }

    /// A request's wait is timed from its start; a wait at login is not (PgBouncer's SHOW
    /// CLIENTS wait and SHOW POOLS maxwait stay 0 for it); nor is a client not waiting.
    #[test]
    fn only_a_requests_wait_is_timed() {
        let root = CancellationToken::new();
        let s = Arc::new(Sessions::default());
        let a = s.register(new("a", false), &root);
        assert_eq!(a.info.waited_us(1_000), 0, "not waiting");
        a.info.set_waiting(Some(250));
        assert_eq!(a.info.waited_us(1_000), 750);
        a.info.set_idle();
        assert_eq!(a.info.waited_us(1_000), 0, "no longer waiting");
        a.info.set_waiting(None);
        assert_eq!(a.info.state(), ClientState::Waiting);
        assert_eq!(a.info.waited_us(1_000), 0, "waiting at login");
    }
}

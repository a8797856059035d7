//! The application: shared state, listeners, background tasks, control and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditHandle;
use crate::auth::auth_query::AuthQueryCache;
use crate::client::CancelRegistry;
use crate::config::{Config, ConfigHandle};
use crate::control::{self, Control};
use crate::error::Error;
use crate::gates::Gates;
use crate::health::HostStates;
use crate::metrics::Metrics;
use crate::net::listener::{self, Listeners};
use crate::net::lobby::Lobby;
use crate::pool::{run_janitor, Pools};
use crate::routing::Hosts;
use crate::sessions::Sessions;
use crate::shutdown::{Lifecycle, ShutdownMode};
use crate::stats::Stats;
use crate::systemd::ServiceManager;
use crate::tls::TlsState;

/// Everything a task needs, handed to it explicitly (no globals).
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<ConfigHandle>,
    pub pools: Arc<Pools>,
    pub cancels: Arc<CancelRegistry>,
    /// Fires when sessions must end (after the drain, or at once).
    pub shutdown: CancellationToken,
    /// Every client session task, for the bounded drain.
    pub tracker: TaskTracker,
    /// Logged-in clients that went quiet, waiting without a task.
    pub lobby: Arc<Lobby<crate::client::Parked>>,
    /// Connected clients, for max_client_conn.
    pub clients: AtomicUsize,
    /// Per-process key for mock SCRAM salts of unknown users.
    pub mock_key: [u8; 32],
    pub stats: Stats,
    pub sessions: Arc<Sessions>,
    pub gates: Arc<Gates>,
    pub lifecycle: Lifecycle,
    pub hosts: HostStates,
    /// Backend hosts as read/write routing sees them (health monitor, roles, lag).
    pub routing: Arc<Hosts>,
    /// The port the read-write listener is bound to (listen_port, resolved when 0).
    pub listen_port: u16,
    pub metrics: Metrics,
    /// The OS user we run as (peer authentication of `pgbouncer` on the unix socket).
    pub own_uid: Option<u32>,
    /// TLS contexts for clients and servers, built at startup and rebuilt by reloads (the
    /// routing health monitors read the server context from here too).
    pub tls: Arc<arc_swap::ArcSwap<TlsState>>,
    /// auth_query answers.
    pub auth_cache: AuthQueryCache,
    /// The audit log (a no-op handle when audit_log is not set).
    pub audit: AuditHandle,
    /// Next session id (audit events, logs).
    pub session_ids: AtomicU64,
    /// Transaction mode with max_prepared_statements: the clients' statements by text, one
    /// server-side name each for the life of the process (a session that moves to another pool
    /// after a reload keeps its statements' names, which no other text ever gets).
    pub statements: Arc<crate::server::statements::Registry>,
    /// The logfile, reopened on reload (set by the binary; tests log elsewhere).
    pub log_file: std::sync::OnceLock<Arc<crate::logfile::LogFile>>,
    /// systemd's notifications (`Type=notify` units), when `$NOTIFY_SOCKET` is set.
    pub systemd: crate::systemd::Notifier,
}

#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
    listeners: Listeners,
    http: Option<tokio::net::TcpListener>,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
}

/// Sends [`Control`] requests to a running [`App`] (signals, tests).
pub type ControlSender = mpsc::UnboundedSender<Control>;

impl App {
    /// Bind the listeners (listen_port = 0 picks a free port).
    pub async fn bind(config: Config) -> Result<App, Error> {
        App::bind_under(config, ServiceManager::default()).await
    }

    /// [`App::bind`], run as a service: on the sockets the service manager passed, if any,
    /// and telling it when ready, reloading and stopping.
    pub async fn bind_under(config: Config, manager: ServiceManager) -> Result<App, Error> {
        for w in &config.warnings {
            tracing::warn!("{}:{}: {}: {}", w.file, w.line, w.key, w.message);
        }
        let tls = TlsState::build(&config).map_err(Error::Config)?;
        let listeners = Listeners::bind(&config.settings, manager.sockets).await?;
        let http = match &config.settings.metrics_listen_addr {
            Some(addr) => Some(crate::http::bind(addr).await?),
            None => None,
        };
        // A relative audit_log path is relative to the config file, like auth_file.
        let mut audit_settings = config.settings.audit.clone();
        if let Some(target) = &mut audit_settings.audit_log {
            if target != "stdout" {
                *target = crate::config::resolve_relative(&config.path, target)
                    .display()
                    .to_string();
            }
        }
        let audit = AuditHandle::start(&audit_settings).map_err(|e| {
            Error::Config(format!(
                "cannot open audit_log {}: {e}",
                config
                    .settings
                    .audit
                    .audit_log
                    .as_deref()
                    .unwrap_or_default()
            ))
        })?;
        let cancels = Arc::new(CancelRegistry::new(config.settings.peer_id));
        let config = Arc::new(ConfigHandle::new(config));
        let shutdown = CancellationToken::new();
        let tls = Arc::new(arc_swap::ArcSwap::from_pointee(tls));
        let gates = Arc::new(Gates::default());
        let shared = Arc::new(Shared {
            pools: Arc::new(Pools::new(Arc::clone(&config), Arc::clone(&gates))),
            routing: Arc::new(Hosts::new(
                shutdown.clone(),
                Arc::clone(&tls),
                Arc::clone(&config),
            )),
            config,
            cancels,
            listen_port: listeners.port(),
            shutdown,
            tracker: TaskTracker::new(),
            lobby: Arc::new(Lobby::new().map_err(Error::Io)?),
            clients: AtomicUsize::new(0),
            mock_key: rand::random(),
            stats: Stats::default(),
            sessions: Arc::default(),
            gates,
            lifecycle: Lifecycle::default(),
            hosts: HostStates::default(),
            metrics: Metrics::new(),
            own_uid: own_uid(),
            tls,
            auth_cache: AuthQueryCache::default(),
            audit,
            session_ids: AtomicU64::new(1),
            statements: Arc::default(),
            log_file: std::sync::OnceLock::new(),
            systemd: manager.notifier,
        });
        // The console's SHOW STATS row (and its pgbouncer_stats_* series) exists from the
        // start, as PgBouncer's does whenever a console (an exporter) is connected.
        let console = crate::snapshot::CONSOLE_DB;
        shared.stats.pool(console, console);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        Ok(App {
            shared,
            listeners,
            http,
            control_tx,
            control_rx,
        })
    }

    /// The first TCP listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.local_addr()
    }

    /// The HTTP (metrics/probes) listener's address, if configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The read-only listener's address (readonly_listen_port), if configured.
    pub fn readonly_addr(&self) -> Option<SocketAddr> {
        self.listeners.readonly_addr()
    }

    /// Reopen `log` by its path on every reload (SIGHUP, RELOAD), for log rotation.
    pub fn with_log_file(self, log: Arc<crate::logfile::LogFile>) -> App {
        let _ = self.shared.log_file.set(log);
        self
    }

    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// A handle to send [`Control`] requests (reload, pause, shutdown ...) to the app.
    pub fn controller(&self) -> ControlSender {
        self.control_tx.clone()
    }

    /// Serve until `shutdown` resolves, then shut down at once ([`ShutdownMode::Immediate`]):
    /// sessions end with 57P01, and the app waits up to shutdown_wait_timeout for them.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let tx = self.controller();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(Control::Shutdown(ShutdownMode::Immediate));
        });
        self.serve().await
    }

    /// Serve until a [`Control::Shutdown`] (from [`App::controller`] or the admin console)
    /// has run its course.
    pub async fn serve(self) -> Result<(), Error> {
        let App {
            shared,
            listeners,
            http,
            control_tx: _,
            mut control_rx,
        } = self;
        let accept = tokio::spawn(listener::serve(listeners, Arc::clone(&shared)));
        // The tracker token: at shutdown the parked clients leave the lobby into tracked tasks
        // before it is dropped, so the wait below covers them.
        let runtime = tokio::runtime::Handle::current();
        shared.lobby.start(runtime, shared.tracker.token())?;
        let background = spawn_background(&shared, http);
        // Queued for the notifier's thread, which waits for room at systemd's end: the loop
        // below takes signals meanwhile (a SIGTERM right after the start drains at once).
        shared.systemd.ready();
        let mut mode_rx = shared.lifecycle.subscribe();
        loop {
            tokio::select! {
                Some(c) = control_rx.recv() => spawn_control(&shared, c),
                _ = mode_rx.wait_for(Option::is_some) => break,
            }
        }
        // Queued too: the drain (and its shutdown_wait_timeout) starts now.
        shared.systemd.stopping();
        drain(&shared, &mut control_rx).await;
        shared.shutdown.cancel();
        shared.sessions.kill_all();
        shared.lobby.close();
        shared.tracker.close();
        let wait = Duration::from_secs(2).max(
            shared
                .config
                .load()
                .settings
                .shutdown_wait_timeout
                .min(Duration::from_secs(5)),
        );
        if tokio::time::timeout(wait, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still running after the shutdown");
        }
        // Then the idle server connections, each with a Terminate (PostgreSQL logged an
        // unexpected EOF for every one, cut off at exit), and every goodbye still under way in
        // the background; each is bounded (1 s).
        if !shared
            .pools
            .close_all("shutting down", Duration::from_secs(2))
            .await
        {
            tracing::warn!("server connections still closing after the shutdown");
        }
        let _ = accept.await;
        for task in background {
            let _ = task.await;
        }
        shared.audit.flush().await;
        shared.systemd.flush().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

fn spawn_control(shared: &Arc<Shared>, c: Control) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let what = format!("{c:?}");
        if let Err(e) = control::apply(&shared, c).await {
            tracing::warn!(control = %what, error = %e, "control request failed");
        }
    });
}

fn spawn_background(
    shared: &Arc<Shared>,
    http: Option<tokio::net::TcpListener>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(run_janitor(
            Arc::clone(&shared.pools),
            shared.shutdown.clone(),
        )),
        tokio::spawn(crate::pool::close_idle_clients(Arc::clone(shared))),
        tokio::spawn(crate::pool::free_idle_pools(Arc::clone(shared))),
        tokio::spawn(crate::health::run(Arc::clone(shared))),
        tokio::spawn(evict_on_host_change(Arc::clone(shared))),
        tokio::spawn(crate::metrics::run_stats_period(Arc::clone(shared))),
        tokio::spawn(crate::metrics::run_upkeep(Arc::clone(shared))),
    ];
    if let Some(l) = http {
        tasks.push(tokio::spawn(crate::http::serve(l, Arc::clone(shared))));
    }
    tasks
}

/// Wait as the shutdown mode in force says; a stronger request (or a repeated one) cuts it
/// short. Control requests keep being served meanwhile.
async fn drain(shared: &Arc<Shared>, control_rx: &mut mpsc::UnboundedReceiver<Control>) {
    let mut mode_rx = shared.lifecycle.subscribe();
    // The drain's grace period runs from when a drain was asked for (a SIGTERM after an
    // earlier SIGINT still gets the whole shutdown_wait_timeout).
    let mut drain_started = None;
    loop {
        let Some(mode) = shared.lifecycle.mode() else {
            return;
        };
        let deadline = match mode {
            ShutdownMode::Immediate => return,
            ShutdownMode::Drain => {
                let started = *drain_started.get_or_insert_with(Instant::now);
                // None past the clock's range: no limit then.
                started.checked_add(shared.config.load().settings.shutdown_wait_timeout)
            }
            ShutdownMode::WaitForClients | ShutdownMode::WaitForServers => None,
        };
        let done = match mode {
            // As PgBouncer: once no server connection is in use (session mode: once the
            // clients holding one left; transaction mode: once their transactions ended);
            // the clients left are then closed.
            ShutdownMode::WaitForServers => shared.sessions.holding_servers_ending_waiters() == 0,
            _ => shared.sessions.regular_count() == 0,
        };
        if done {
            return;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                tracing::info!("shutdown_wait_timeout reached; closing remaining sessions");
                return;
            }
            _ = mode_rx.changed() => {}
            Some(c) = control_rx.recv() => spawn_control(shared, c),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Our effective uid, from /proc (no unsafe libc call).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// When a backend host goes down or changes role, close the idle connections no pool may
/// hand out any more (checkout re-checks too; this frees them promptly).
async fn evict_on_host_change(shared: Arc<Shared>) {
    let mut changes = shared.routing.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        for pool in shared.pools.all() {
            pool.evict_expired();
        }
    }
}

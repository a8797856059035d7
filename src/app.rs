//! The application: shared state, listeners, background tasks, and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::auth_query::AuthQueryCache;
use crate::client::CancelRegistry;
use crate::config::{Config, ConfigHandle};
use crate::error::Error;
use crate::net::listener::{self, Listeners};
use crate::pool::{run_janitor, Pools};
use crate::stats::AuthFailures;
use crate::tls::TlsState;

/// Everything a task needs, handed to it explicitly (no globals).
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<ConfigHandle>,
    pub pools: Arc<Pools>,
    pub cancels: CancelRegistry,
    /// Fires when sessions must end.
    pub shutdown: CancellationToken,
    /// Every client session task, for the bounded drain.
    pub tracker: TaskTracker,
    /// Connected clients, for max_client_conn.
    pub clients: AtomicUsize,
    /// Per-process key for mock SCRAM salts of unknown users.
    pub mock_key: [u8; 32],
    /// TLS contexts for clients and servers, built at startup.
    pub tls: TlsState,
    /// Failed logins per user.
    pub auth_failures: AuthFailures,
    /// auth_query answers.
    pub auth_cache: AuthQueryCache,
}

#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
    listeners: Listeners,
}

impl App {
    /// Bind the listeners (listen_port = 0 picks a free port).
    pub async fn bind(config: Config) -> Result<App, Error> {
        for w in &config.warnings {
            tracing::warn!("{}:{}: {}: {}", w.file, w.line, w.key, w.message);
        }
        let tls = TlsState::build(&config).map_err(Error::Config)?;
        let listeners = Listeners::bind(&config.settings).await?;
        let config = Arc::new(ConfigHandle::new(config));
        let shared = Arc::new(Shared {
            pools: Arc::new(Pools::new(Arc::clone(&config))),
            config,
            cancels: CancelRegistry::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            clients: AtomicUsize::new(0),
            mock_key: rand::random(),
            tls,
            auth_failures: AuthFailures::default(),
            auth_cache: AuthQueryCache::default(),
        });
        Ok(App { shared, listeners })
    }

    /// The first TCP listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.local_addr()
    }

    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Serve until `shutdown` resolves; then stop accepting, end sessions (57P01) and wait
    /// up to shutdown_wait_timeout for them.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let App { shared, listeners } = self;
        let accept = listener::serve(listeners, Arc::clone(&shared));
        let janitor = tokio::spawn(run_janitor(
            Arc::clone(&shared.pools),
            shared.shutdown.clone(),
        ));
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = accept => {}
        }
        shared.shutdown.cancel();
        shared.tracker.close();
        let wait = shared
            .config
            .load()
            .settings
            .shutdown_wait_timeout
            .max(Duration::from_millis(100));
        if tokio::time::timeout(wait, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still running after shutdown_wait_timeout");
        }
        let _ = janitor.await;
        Ok(())
    }
}

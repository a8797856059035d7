//! pgporter in-process on 127.0.0.1:0, one instance per test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pg::quote;

/// A running pgporter. Dropping it triggers the shutdown future `App::run` was given; the task
/// itself ends with the test's runtime at the latest.
#[derive(Debug)]
pub(crate) struct Porter {
    addr: SocketAddr,
    http: Option<SocketAddr>,
    control: pgporter::app::ControlSender,
    readonly_addr: Option<SocketAddr>,
    dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    shared: Arc<pgporter::app::Shared>,
}

/// Write `pgporter.ini` and `userlist.txt` into a fresh temp dir, load, bind, and serve.
///
/// In `ini`, `{dir}` is replaced by that temp dir (e.g. `unix_socket_dir = {dir}`); relative
/// paths such as `auth_file = userlist.txt` resolve against it as the ini's directory.
pub(crate) async fn spawn_pgporter(ini: &str, userlist: &str) -> Porter {
    spawn_pgporter_with_files(ini, userlist, &[]).await
}

/// As [`spawn_pgporter`], writing `files` (name, contents) next to the ini first (an hba file,
/// an ident map ...).
pub(crate) async fn spawn_pgporter_with_files(
    ini: &str,
    userlist: &str,
    files: &[(String, String)],
) -> Porter {
    let dir = tempfile::Builder::new()
        .prefix("pgporter-porter-")
        .tempdir()
        .expect("creating pgporter's temp dir");
    let ini = ini.replace("{dir}", &dir.path().display().to_string());
    let ini_path = dir.path().join("pgporter.ini");
    std::fs::write(&ini_path, &ini).expect("writing pgporter.ini");
    std::fs::write(dir.path().join("userlist.txt"), userlist).expect("writing userlist.txt");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)
            .unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }

    let config = pgporter::config::load(&ini_path).unwrap_or_else(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        panic!(
            "pgporter rejected the test config:\n{}\n--- pgporter.ini ---\n{ini}",
            list.join("\n")
        )
    });
    let app = pgporter::App::bind(config)
        .await
        .unwrap_or_else(|e| panic!("pgporter failed to bind: {e}"));
    let addr = app.local_addr();
    let shared = app.shared();
    let http = app.http_addr();
    let control = app.controller();
    let readonly_addr = app.readonly_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Resolves on send or when the sender is dropped with the Porter.
        let shutdown = async move {
            let _ = rx.await;
        };
        app.run(shutdown).await.map_err(|e| e.to_string())
    });
    Porter {
        addr,
        http,
        control,
        readonly_addr,
        shared,
        dir,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl Porter {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics/probes HTTP address (metrics_listen_addr = 127.0.0.1:0 in the ini).
    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http
            .expect("metrics_listen_addr is not set in this test's ini")
    }

    /// Send a control request (what a signal or the admin console would send).
    pub(crate) fn control(&self, c: pgporter::Control) {
        self.control.send(c).expect("pgporter is running");
    }

    /// Rewrite pgporter.ini with `edit` and RELOAD (what SIGHUP sends); returns once the
    /// reload has taken (bounded by [`super::HANG`]).
    pub(crate) async fn reload_edited(&self, edit: impl FnOnce(&str) -> String) {
        let ini = std::fs::read_to_string(self.ini_path()).expect("reading pgporter.ini");
        std::fs::write(self.ini_path(), edit(&ini)).expect("writing pgporter.ini");
        let ok = || (self.shared().stats.reloads_ok).load(std::sync::atomic::Ordering::Relaxed);
        let before = ok();
        self.control(pgporter::Control::Reload);
        let deadline = tokio::time::Instant::now() + super::HANG;
        while ok() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reload did not take"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Wait (bounded) until the pgporter task has returned.
    pub(crate) async fn wait_stopped(&mut self, limit: std::time::Duration) {
        if let Some(task) = self.task.take() {
            let res = tokio::time::timeout(limit, task)
                .await
                .expect("pgporter did not stop in time");
            res.expect("pgporter task panicked")
                .unwrap_or_else(|e| panic!("pgporter returned an error: {e}"));
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The read-only listener's port (readonly_listen_port); panics if not configured.
    pub(crate) fn readonly_port(&self) -> u16 {
        self.readonly_addr
            .expect("readonly_listen_port is not configured")
            .port()
    }

    /// pgporter's host registry, for watching it from a spawned task.
    pub(crate) fn shared_hosts(&self) -> std::sync::Arc<pgporter::routing::Hosts> {
        std::sync::Arc::clone(&self.shared.routing)
    }

    /// pgporter's view of its backend hosts (what SHOW HOSTS will render).
    pub(crate) fn hosts(&self) -> Vec<pgporter::routing::HostSnapshot> {
        self.shared.routing.snapshot()
    }

    /// The directory holding pgporter.ini / userlist.txt (and the unix socket if configured).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn ini_path(&self) -> PathBuf {
        self.dir.path().join("pgporter.ini")
    }

    /// `host=127.0.0.1 port=.. user=.. password=.. dbname=.. sslmode=disable`, for
    /// tokio-postgres, psql, pgbench and psycopg2.
    pub(crate) fn connstring(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
            self.port(),
            quote(user),
            quote(password),
            quote(db)
        )
    }

    /// Counts of every pool, sorted by pool key.
    pub(crate) fn pool_counts(&self) -> Vec<(String, pgporter::pool::PoolCounts)> {
        let mut all: Vec<_> = self
            .shared
            .pools
            .all()
            .iter()
            .map(|p| (format!("{}@{}", p.key.user, p.key.db), p.counts()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Wait (bounded) until the pools hold `n` idle server connections: a connection goes back
    /// just after the client got its answer, so a test that needs it idle waits for it.
    pub(crate) async fn until_idle(&self, n: u32) {
        let idle = || self.pool_counts().iter().map(|(_, c)| c.idle).sum::<u32>();
        let deadline = tokio::time::Instant::now() + super::HANG;
        while idle() != n {
            assert!(tokio::time::Instant::now() < deadline, "never {n} idle");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Client sessions pgporter is serving right now.
    pub(crate) fn clients(&self) -> usize {
        self.shared
            .clients
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The running app's shared state (pools, limits and their counters).
    pub(crate) fn shared(&self) -> &pgporter::app::Shared {
        &self.shared
    }

    /// Rewrite pgporter.ini as `ini` (with `{dir}` replaced) and swap the new snapshot in, as a
    /// reload does: connected clients stay.
    pub(crate) fn store_config(&self, ini: &str) {
        let ini = ini.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(self.ini_path(), &ini).expect("writing pgporter.ini");
        let config = pgporter::config::load(&self.ini_path())
            .unwrap_or_else(|errors| panic!("pgporter rejected the new config: {errors:?}"));
        self.shared.config.store(config);
    }

    /// Trigger shutdown and wait (bounded) for `App::run` to return; panics on an error or a
    /// drain that does not finish.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let res = tokio::time::timeout(std::time::Duration::from_secs(30), task)
                .await
                .expect("pgporter did not finish shutting down within 30 s");
            res.expect("pgporter task panicked")
                .unwrap_or_else(|e| panic!("pgporter returned an error: {e}"));
        }
    }
}

impl Drop for Porter {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

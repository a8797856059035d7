//! A private replicated PostgreSQL 15 cluster per test: one primary and streaming standbys
//! (pg_basebackup -R), each on its own loopback port and unix socket directory. Unlike the
//! shared cluster in [`super::pg`], a test owns it and may stop, promote or pause its nodes.
//!
//! Cleanup: `Drop` stops every node (immediate) and removes the directory; each postmaster
//! also gets the same watchdog as the shared cluster, for a test process that dies.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::cmd;
use super::pg::{
    enable_ssl, free_port, ident, init_data_dir, literal, make_temp_dir, pg_ctl_start, quote,
    spawn_watchdog, write_server_config, RunAs, SUPERUSER,
};

/// One node: its directory (data/, socket, server.log) and port.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
}

#[derive(Debug)]
pub(crate) struct ReplCluster {
    bin: PathBuf,
    base: PathBuf,
    run_as: RunAs,
    /// nodes[0] is the primary at start.
    pub(crate) nodes: Vec<Node>,
}

impl ReplCluster {
    /// A primary and `standbys` streaming standbys, all caught up.
    pub(crate) async fn start(standbys: usize) -> ReplCluster {
        let cluster = tokio::task::spawn_blocking(move || ReplCluster::start_blocking(standbys))
            .await
            .expect("starting the replicated cluster panicked");
        for i in 1..cluster.nodes.len() {
            cluster.wait_streaming(i).await;
        }
        cluster
    }

    fn start_blocking(standbys: usize) -> ReplCluster {
        let bin = std::env::var_os("PGPORTER_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        let run_as = RunAs::detect();
        let base = make_temp_dir();
        run_as.chown(&base);
        let mut cluster = ReplCluster {
            bin,
            base,
            run_as,
            nodes: Vec::new(),
        };
        let primary = cluster.node_dir(0);
        init_data_dir(&cluster.bin, &primary, run_as);
        // The harness's server config turns ssl on; standbys get the files from the backup.
        enable_ssl(&primary, run_as);
        fs::write(
            primary.join("data/pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("writing pg_hba.conf");
        let port = cluster.start_node(&primary, write_server_config);
        cluster.nodes.push(Node { dir: primary, port });
        for i in 1..=standbys {
            let dir = cluster.node_dir(i);
            cluster.base_backup(&dir);
            let port = cluster.start_node(&dir, |dir, port| {
                // After pg_basebackup -R, postgresql.auto.conf holds the primary's settings
                // and primary_conninfo: later lines win, so append this node's own.
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("data/postgresql.auto.conf"))
                    .expect("opening postgresql.auto.conf");
                writeln!(
                    f,
                    "port = {port}\nunix_socket_directories = '{}'",
                    dir.display()
                )
                .expect("writing postgresql.auto.conf");
            });
            cluster.nodes.push(Node { dir, port });
        }
        cluster
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        let dir = self.base.join(format!("n{i}"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        self.run_as.chown(&dir);
        dir
    }

    /// Configure (with a fresh free port) and start; retried when the port was taken.
    fn start_node(&self, dir: &Path, configure: impl Fn(&Path, u16)) -> u16 {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            configure(dir, port);
            match pg_ctl_start(&self.bin, dir, self.run_as) {
                Ok(pid) => {
                    spawn_watchdog(dir, pid);
                    return port;
                }
                Err(e) => last = e,
            }
        }
        panic!("could not start PostgreSQL in {}: {last}", dir.display());
    }

    fn base_backup(&self, dir: &Path) {
        let primary = &self.nodes[0];
        let out = self
            .run_as
            .command(&self.bin.join("pg_basebackup"), dir)
            .args(["-D", "data", "-R", "-X", "stream", "-c", "fast"])
            .args(["-h", &primary.dir.display().to_string()])
            .args(["-p", &primary.port.to_string(), "-U", SUPERUSER])
            .output()
            .expect("running pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Straight to node `i` over its unix socket (trust).
    pub(crate) async fn client(&self, i: usize, user: &str, db: &str) -> Client {
        let node = &self.nodes[i];
        let connstring = format!(
            "host={} port={} user={} dbname={} sslmode=disable",
            quote(&node.dir.display().to_string()),
            node.port,
            quote(user),
            quote(db)
        );
        let (client, conn) = tokio_postgres::connect(&connstring, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to node {i} as {user}: {e}"));
        tokio::spawn(conn);
        client
    }

    pub(crate) async fn superuser(&self, i: usize) -> Client {
        self.client(i, SUPERUSER, "postgres").await
    }

    /// A role (SCRAM password) and a database it owns, created on the primary and replayed
    /// on every standby before this returns.
    pub(crate) async fn create_role_and_db(&self, role: &str, password: &str, db: &str) {
        let su = self.superuser(0).await;
        su.batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            ident(role),
            literal(password)
        ))
        .await
        .expect("create role");
        su.batch_execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            ident(db),
            ident(role)
        ))
        .await
        .expect("create database");
        for i in 1..self.nodes.len() {
            self.wait_replayed(i).await;
        }
    }

    /// Wait until standby `i` has a WAL receiver streaming from the primary.
    async fn wait_streaming(&self, i: usize) {
        let su = self.superuser(i).await;
        for _ in 0..200 {
            let row = su
                .query_opt(
                    "select 1 from pg_stat_wal_receiver where status = 'streaming'",
                    &[],
                )
                .await
                .expect("pg_stat_wal_receiver");
            if row.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("standby {i} is not streaming after 10 s");
    }

    /// Wait until standby `i` has replayed everything the primary has written so far.
    pub(crate) async fn wait_replayed(&self, i: usize) {
        let lsn: String = self
            .superuser(0)
            .await
            .query_one("select pg_current_wal_lsn()::text", &[])
            .await
            .expect("pg_current_wal_lsn")
            .get(0);
        let su = self.superuser(i).await;
        for _ in 0..400 {
            let done: bool = su
                .query_one(
                    "select pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&lsn],
                )
                .await
                .expect("pg_last_wal_replay_lsn")
                .get(0);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("standby {i} did not replay up to {lsn} within 20 s");
    }

    async fn pg_ctl(&self, i: usize, args: &[&str]) -> String {
        let mut cmd = self
            .run_as
            .command(&self.bin.join("pg_ctl"), &self.nodes[i].dir);
        cmd.args(args).args(["-D", "data"]);
        let out = cmd::run(cmd, Duration::from_secs(60)).await;
        cmd::success(&out, &format!("pg_ctl {args:?} on node {i}"))
    }

    /// `pg_ctl stop -m smart` without waiting: new connections are refused, the server
    /// stops once its last session ends.
    pub(crate) async fn stop_smart_nowait(&self, i: usize) {
        self.pg_ctl(i, &["stop", "-W", "-m", "smart"]).await;
    }

    /// Node `i`'s postmaster is running (its pid file exists).
    pub(crate) fn running(&self, i: usize) -> bool {
        self.nodes[i].dir.join("postmaster.pid").exists()
    }

    /// `pg_ctl stop -m fast`: sessions get 57P01, new connections are refused.
    pub(crate) async fn stop(&self, i: usize) {
        self.pg_ctl(i, &["stop", "-w", "-m", "fast"]).await;
    }

    /// `pg_ctl promote` (waits until the standby accepts writes).
    pub(crate) async fn promote(&self, i: usize) {
        self.pg_ctl(i, &["promote", "-w"]).await;
    }

    /// Point standby `i` at node `primary` (after a failover, as CloudNativePG does with the
    /// remaining standbys): a new primary_conninfo, reloaded; the standby follows the new
    /// timeline (recovery_target_timeline = latest, the default).
    pub(crate) async fn follow(&self, i: usize, primary: usize) {
        let p = &self.nodes[primary];
        let conninfo = format!(
            "host={} port={} user={SUPERUSER}",
            quote(&p.dir.display().to_string()),
            p.port
        );
        let su = self.superuser(i).await;
        for sql in [
            format!("ALTER SYSTEM SET primary_conninfo = {}", literal(&conninfo)),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            su.batch_execute(&sql)
                .await
                .expect("pointing the standby at the new primary");
        }
        self.wait_streaming(i).await;
    }
}

impl Drop for ReplCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = self
                .run_as
                .command(&self.bin.join("pg_ctl"), &node.dir)
                .args(["stop", "-m", "immediate", "-D", "data"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A replicated cluster, a role + database on it, and a pgporter in front with two entries:
/// `<db>` (all hosts, target_session_attrs=read-write) and `<db>_ro` (all hosts, standby),
/// both round-robin, plus the read-only listener.
#[derive(Debug)]
pub(crate) struct ReplFixture {
    // Fields drop in order: pgporter first, then the cluster.
    pub(crate) porter: super::Porter,
    pub(crate) cluster: ReplCluster,
    pub(crate) user: String,
    pub(crate) db: String,
}

impl ReplFixture {
    /// `extra`: more `[pgbouncer]` lines (health_check_period, max_standby_lag ...).
    pub(crate) async fn new(standbys: usize, pool_size: u32, extra: &str) -> ReplFixture {
        let cluster = ReplCluster::start(standbys).await;
        let n = std::process::id();
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = format!("ru_{n}_{id}");
        let db = format!("rdb_{n}_{id}");
        cluster
            .create_role_and_db(&user, super::fixture::PASSWORD, &db)
            .await;
        let hosts = vec!["127.0.0.1"; cluster.nodes.len()].join(",");
        let ports: Vec<String> = cluster.nodes.iter().map(|n| n.port.to_string()).collect();
        let ports = ports.join(",");
        let ini = format!(
            "[databases]\n\
             {db} = host={hosts} port={ports} dbname={db} target_session_attrs=read-write load_balance_hosts=round-robin\n\
             {db}_ro = host={hosts} port={ports} dbname={db} target_session_attrs=standby load_balance_hosts=round-robin\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = 0\n\
             readonly_listen_port = 0\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = userlist.txt\n\
             default_pool_size = {pool_size}\n\
             query_wait_timeout = 20\n\
             health_check_period = 0.2\n\
             server_connect_timeout = 3\n\
             {extra}\n"
        );
        let userlist = super::fixture::userlist(&[(&user, super::fixture::PASSWORD)]);
        let porter = super::spawn_pgporter(&ini, &userlist).await;
        ReplFixture {
            cluster,
            user,
            db,
            porter,
        }
    }

    /// Through pgporter: `port` is the read-write or the read-only listener's.
    pub(crate) fn connstring(&self, port: u16, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={port} user={} password={} dbname={} sslmode=disable \
             connect_timeout=20",
            quote(&self.user),
            quote(super::fixture::PASSWORD),
            quote(db)
        )
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

//! The soak's world: fd limit, a private PostgreSQL, pgporter as a child process, the fault
//! injector, and the final settle-and-measure.

use std::process::Command;
use std::sync::Arc;
use tokio::time::{Duration, Instant};

use crate::pg::PgCluster;
use crate::phases::FaultClock;
use crate::process::PorterProcess;
use crate::Opts;

pub(crate) const USER: &str = "soak";
pub(crate) const PASSWORD: &str = "soak-pw";
pub(crate) const DB: &str = "soak";

/// The soft RLIMIT_NOFILE of this process.
fn fd_limit() -> (usize, usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files"));
    let nums: Vec<usize> = line
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        nums.first().copied().unwrap_or(1024),
        nums.get(1).copied().unwrap_or(1024),
    )
}

/// Raise the soft fd limit towards `want` (up to the hard limit) with prlimit(1), so that
/// pgporter, started after this, inherits it. Returns the limit in force.
pub(crate) fn raise_fd_limit(want: usize) -> usize {
    let (soft, hard) = fd_limit();
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={target}:{hard}"))
        .status();
    fd_limit().0
}

pub(crate) struct Env {
    pub(crate) pg: &'static PgCluster,
    pub(crate) porter: PorterProcess,
}

impl Env {
    pub(crate) async fn start(o: &Opts) -> Env {
        let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
        let su = pg.superuser_client().await;
        for sql in [
            format!("create role {USER} login password '{PASSWORD}'"),
            format!("create database {DB} owner {USER}"),
        ] {
            su.batch_execute(&sql)
                .await
                .expect("creating the soak role and database");
        }
        let verifier = postgres_protocol::password::scram_sha_256(PASSWORD.as_bytes());
        let ini = format!(
            "[databases]\n\
             {DB} = host=127.0.0.1 port={port} dbname={DB} user={USER} password={PASSWORD}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = 0\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = userlist.txt\n\
             pool_mode = session\n\
             default_pool_size = {pool}\n\
             max_client_conn = {max}\n\
             query_wait_timeout = 60\n\
             client_login_timeout = 10\n\
             server_connect_timeout = 5\n",
            port = pg.port(),
            pool = o.pool,
            max = o.idle + o.workers + 1_000,
        );
        let userlist = format!("\"{USER}\" \"{verifier}\"\n");
        let porter = PorterProcess::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_pgporter")),
            &ini,
            &userlist,
        )
        .await;
        Env { pg, porter }
    }

    /// Wait (up to 30 s) for pgporter's fds to fall back to `fds_start` plus at most `pool`
    /// server connections, and PostgreSQL's backends for the soak user to at most `pool`.
    pub(crate) async fn settle(&self, fds_start: usize, pool: u32) -> (usize, i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let fds = self.porter.fds();
            let servers = server_conns(self.pg).await;
            let ok =
                fds <= fds_start + usize::try_from(pool).unwrap() && servers <= i64::from(pool);
            if ok || Instant::now() > deadline {
                return (fds, servers);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn server_conns(pg: &PgCluster) -> i64 {
    let su = pg.superuser_client().await;
    su.query_one(
        "select count(*) from pg_stat_activity where usename = $1",
        &[&USER],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(-1)
}

/// For `length`: terminate a random backend of the soak user every 3 s, and restart
/// PostgreSQL every `restart_every`. Returns what was done.
pub(crate) async fn inject_faults(
    pg: &'static PgCluster,
    length: Duration,
    restart_every: Option<Duration>,
    clock: Arc<FaultClock>,
) -> String {
    let start = Instant::now();
    let (mut terminated, mut restarts) = (0, 0);
    let mut next_restart = restart_every.map(|every| start + every);
    while start.elapsed() + Duration::from_secs(3) < length {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if next_restart.is_some_and(|at| Instant::now() >= at) {
            clock.mark();
            pg.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"])
                .await;
            clock.mark();
            restarts += 1;
            next_restart = restart_every.map(|every| Instant::now() + every);
            continue;
        }
        let su = pg.superuser_client().await;
        // Marked before as well as after: the victim's session may see its end before
        // pg_terminate_backend's answer reaches this task.
        clock.mark();
        let killed = su
            .query(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 \
                 order by random() limit 1",
                &[&USER],
            )
            .await
            .map(|rows| rows.len())
            .unwrap_or(0);
        if killed > 0 {
            clock.mark();
            terminated += killed;
        }
    }
    format!("{terminated} backends terminated, {restarts} PostgreSQL restarts")
}

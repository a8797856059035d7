//! One real PostgreSQL 15 per test process, started lazily and shared by every test.
//!
//! Parallel safety comes from names, not from locks: each test creates its own roles and
//! databases through [`PgCluster::unique_name`]. The cluster itself is immutable once started.
//!
//! Cleanup: statics are never dropped, so [`PgCluster::start`] leaves a watchdog shell next to
//! the postmaster. It polls the test process's pid, and when the process is gone (normal exit,
//! panic, SIGKILL) it stops PostgreSQL with SIGQUIT (immediate shutdown) and removes the temp
//! dir. The watchdog runs in its own process group so a Ctrl-C on `cargo test` does not kill it
//! before it has cleaned up.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

/// Where the PostgreSQL 15 binaries are; `PGPORTER_PG_BIN` overrides.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser's password (host connections use SCRAM; the harness itself uses the socket).
pub(crate) const SUPERUSER: &str = "postgres";
pub(crate) const SUPERUSER_PASSWORD: &str = "harness-superuser-secret";

/// The outcome of the one start attempt: a failure is kept so every test reports it at once
/// instead of each retrying initdb.
static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The shared cluster, started on first use (off the async worker threads).
pub(crate) async fn cluster() -> &'static PgCluster {
    let started = tokio::task::spawn_blocking(|| {
        CLUSTER.get_or_init(|| {
            std::panic::catch_unwind(PgCluster::start).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            })
        })
    })
    .await
    .expect("the cluster start thread panicked");
    match started {
        Ok(cluster) => cluster,
        Err(e) => panic!("the shared PostgreSQL cluster could not be started: {e}"),
    }
}

#[derive(Debug)]
pub(crate) struct PgCluster {
    bin: PathBuf,
    /// Temp dir (owned by the `postgres` OS user when we run as root): data/, the unix socket,
    /// server.log.
    dir: PathBuf,
    port: u16,
    /// Makes [`PgCluster::unique_name`] unique within this process (one cluster per process).
    next_id: AtomicU64,
}

/// Who runs initdb/pg_ctl: ourselves, or the `postgres` OS user when we are root.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    pub(super) fn detect() -> RunAs {
        let euid = fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if euid != 0 {
            return RunAs { ids: None };
        }
        let uid = id_of("-u");
        let gid = id_of("-g");
        RunAs {
            ids: Some((uid, gid)),
        }
    }

    pub(super) fn command(self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null());
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups (setgroups(0)) before setuid when we are root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    pub(super) fn chown(self, path: &Path) {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("running `id postgres`");
    assert!(
        out.status.success(),
        "running as root, but there is no `postgres` OS user to run PostgreSQL as \
         (initdb refuses root); install postgresql-15 or run the tests as a normal user"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = std::env::var_os("PGPORTER_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
        for tool in ["initdb", "pg_ctl", "postgres"] {
            assert!(
                bin.join(tool).is_file(),
                "PostgreSQL 15 server binaries not found: {} is missing. The integration tests \
                 need a real PostgreSQL: run scripts/test.sh (it installs postgresql-15), \
                 `apt-get install postgresql-15 postgresql-client-15`, or set PGPORTER_PG_BIN \
                 to the directory holding initdb/pg_ctl/postgres/psql/pgbench.",
                bin.join(tool).display()
            );
        }
        let run_as = RunAs::detect();
        let dir = make_temp_dir();
        run_as.chown(&dir);
        init_data_dir(&bin, &dir, run_as);
        enable_ssl(&dir, run_as);

        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            write_server_config(&dir, port);
            match pg_ctl_start(&bin, &dir, run_as) {
                Ok(postmaster_pid) => {
                    spawn_watchdog(&dir, postmaster_pid);
                    return PgCluster {
                        bin,
                        dir,
                        port,
                        next_id: AtomicU64::new(1),
                    };
                }
                // Most likely someone took the port between our probe and the server's bind.
                Err(e) => last_err = e,
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start PostgreSQL after 5 attempts: {last_err}");
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// A cluster of the test's own, for faults that would disturb every other test (restart,
    /// SIGSTOP of the postmaster). The watchdog removes it when the process ends; call
    /// [`PgCluster::stop_now`] to free it earlier.
    pub(crate) async fn start_private() -> PgCluster {
        tokio::task::spawn_blocking(PgCluster::start)
            .await
            .expect("starting a private PostgreSQL cluster")
    }

    /// The postmaster's pid (first line of postmaster.pid).
    pub(crate) fn postmaster_pid(&self) -> i32 {
        let text = fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .expect("reading postmaster.pid");
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster.pid holds a pid")
    }

    /// `pg_ctl <args>` as the cluster's owner, off the async workers; panics on failure.
    pub(crate) async fn pg_ctl(&self, args: &[&str]) {
        let (bin, dir) = (self.bin.clone(), self.dir.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            RunAs::detect()
                .command(&bin.join("pg_ctl"), &dir)
                .args(["-D", "data", "-l", "server.log"])
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .expect("running pg_ctl")
        })
        .await
        .expect("pg_ctl thread");
        assert!(
            out.status.success(),
            "pg_ctl failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop immediately (private clusters only).
    pub(crate) async fn stop_now(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]).await;
    }

    /// The directory holding PostgreSQL's client tools too (psql, pgbench).
    pub(crate) fn bin(&self, tool: &str) -> PathBuf {
        self.bin.join(tool)
    }

    /// The CA that signed PostgreSQL's server certificate (for `localhost` and `127.0.0.1`).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("pg-ca.pem")
    }

    /// The unix socket directory (local connections are `trust`).
    pub(crate) fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// `prefix_<pid>_<n>`: a role/database name no other test in any process uses.
    pub(crate) fn unique_name(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}_{}_{n}", prefix.to_lowercase(), std::process::id())
    }

    /// A libpq/tokio-postgres connection string over the harness's unix socket (trust).
    pub(crate) fn local_connstring(&self, user: &str, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={} sslmode=disable",
            quote(&self.dir.display().to_string()),
            self.port,
            quote(user),
            quote(db)
        )
    }

    /// A client connected straight to PostgreSQL as the superuser, its connection driven by a
    /// task on the current runtime.
    pub(crate) async fn superuser_client(&self) -> Client {
        self.local_client(SUPERUSER, "postgres").await
    }

    /// A client connected straight to PostgreSQL (unix socket, trust) as `user` on `db`.
    pub(crate) async fn local_client(&self, user: &str, db: &str) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.local_connstring(user, db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL directly as {user}: {e}"));
        tokio::spawn(conn);
        client
    }

    /// `CREATE ROLE name LOGIN PASSWORD '..'`; stored as a SCRAM verifier
    /// (password_encryption = scram-sha-256).
    pub(crate) async fn create_role(&self, name: &str, password: &str) {
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            ident(name),
            literal(password)
        );
        self.superuser_client()
            .await
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A new role (password `pw`) and a database it owns, named from the two prefixes
    /// ([`Self::unique_name`]): `(user, db)`.
    pub(crate) async fn owner_and_db(&self, user: &str, db: &str) -> (String, String) {
        let (user, db) = (self.unique_name(user), self.unique_name(db));
        self.create_role(&user, "pw").await;
        self.create_database(&db, &user).await;
        (user, db)
    }

    /// `CREATE DATABASE name OWNER owner`.
    pub(crate) async fn create_database(&self, name: &str, owner: &str) {
        let sql = format!("CREATE DATABASE {} OWNER {}", ident(name), ident(owner));
        self.superuser_client()
            .await
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A libpq connstring value, single-quoted when needed (any Unicode white space too:
/// tokio-postgres splits an unquoted value at a no-break space).
pub(crate) fn quote(v: &str) -> String {
    let plain = |c: char| !(c.is_whitespace() || matches!(c, '\'' | '\\' | '='));
    if !v.is_empty() && v.chars().all(plain) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A SQL identifier.
pub(crate) fn ident(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// A SQL string literal.
pub(crate) fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

pub(super) fn make_temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("pgporter-it-{}-{nanos:x}", std::process::id()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub(super) fn init_data_dir(bin: &Path, dir: &Path, run_as: RunAs) {
    let pwfile = dir.join("pwfile");
    fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n")).expect("writing pwfile");
    run_as.chown(&pwfile);
    let out = run_as
        .command(&bin.join("initdb"), dir)
        .args(["-D", "data", "-U", SUPERUSER, "--pwfile", "pwfile"])
        .args(["-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .output()
        .expect("running initdb");
    assert!(
        out.status.success(),
        "initdb failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_file(&pwfile);
    // Root can write postgres-owned files; the owner does not change.
    fs::write(
        dir.join("data/pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("writing pg_hba.conf");
}

/// PostgreSQL serves TLS (ssl = on) with a certificate from a CA made now; the key must be
/// owned by the server's user and not readable by others.
pub(super) fn enable_ssl(dir: &Path, run_as: RunAs) {
    let pki = super::certs::Pki::new(dir, "pg");
    let leaf = pki.server("pg-server");
    let data = dir.join("data");
    for (from, to) in [(&leaf.cert, "server.crt"), (&leaf.key, "server.key")] {
        let dest = data.join(to);
        fs::copy(from, &dest).unwrap_or_else(|e| panic!("copying {to}: {e}"));
        run_as.chown(&dest);
    }
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(data.join("server.key"), fs::Permissions::from_mode(0o600))
        .expect("chmod server.key");
}

pub(super) fn write_server_config(dir: &Path, port: u16) {
    // postgresql.auto.conf is read after postgresql.conf, so rewriting it on a port retry wins.
    let conf = format!(
        "listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         max_connections = 200\n\
         password_encryption = 'scram-sha-256'\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         shared_buffers = 64MB\n\
         log_min_messages = warning\n\
         log_connections = off\n\
         ssl = on\n\
         ssl_cert_file = 'server.crt'\n\
         ssl_key_file = 'server.key'\n",
        dir.display()
    );
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("data/postgresql.auto.conf"))
        .expect("opening postgresql.auto.conf");
    f.write_all(conf.as_bytes())
        .expect("writing postgresql.auto.conf");
}

/// `pg_ctl start -w`; returns the postmaster's pid.
pub(super) fn pg_ctl_start(bin: &Path, dir: &Path, run_as: RunAs) -> Result<u32, String> {
    let out = run_as
        .command(&bin.join("pg_ctl"), dir)
        .args(["start", "-w", "-t", "60", "-D", "data", "-l", "server.log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running pg_ctl: {e}"))?;
    if !out.status.success() {
        let log = fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        return Err(format!(
            "pg_ctl start failed ({}): {}{}\nserver.log:\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let pidfile = fs::read_to_string(dir.join("data/postmaster.pid"))
        .map_err(|e| format!("reading postmaster.pid: {e}"))?;
    pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("unexpected postmaster.pid: {pidfile:?}"))
}

/// A detached shell that outlives us: when this process is gone, stop PostgreSQL immediately
/// (SIGQUIT to the postmaster) and remove the temp dir.
// Never waited for on purpose: it must outlive this process (init reaps it).
#[allow(clippy::zombie_processes)]
pub(super) fn spawn_watchdog(dir: &Path, postmaster_pid: u32) {
    let script = format!(
        "trap '' INT HUP TERM; \
         while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         kill -QUIT {pm} 2>/dev/null; \
         i=0; while kill -0 {pm} 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
         kill -KILL {pm} 2>/dev/null; \
         rm -rf '{dir}'",
        me = std::process::id(),
        pm = postmaster_pid,
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawning the PostgreSQL watchdog");
}

pub(super) fn free_port() -> u16 {
    super::process::free_port()
}

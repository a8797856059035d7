//! pgporter as a child process (the built binary), for measurements that must see pgporter
//! alone: resident memory and file descriptors from /proc/<pid>. Shared with the soak tool
//! under benches/ (included there by path), so it depends on std, tokio and tempfile only.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A loopback port free when probed, for a process that binds it later (a pgporter child,
/// PostgreSQL, a configured listen_port). Taken below the kernel's ephemeral range
/// (ip_local_port_range), where bind(0) and the local ends of outgoing connections (thousands
/// in a test run, on this machine by every process) get their ports: a port probed from that
/// range and released could be handed to one of them before its binder starts. Never the same
/// port twice in one process; processes start at different places (by pid).
pub(crate) fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(1024).min(16384);
    if span < 1024 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("probing a free loopback port");
    }
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low - span + (start + n) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}

#[derive(Debug)]
pub(crate) struct PorterProcess {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PorterProcess {
    /// Write `ini` (its `listen_port = 0` replaced by a free port) and `userlist` into a temp
    /// dir, start `bin` on it, and wait (up to 30 s) until it accepts connections.
    pub(crate) async fn spawn(bin: &Path, ini: &str, userlist: &str) -> PorterProcess {
        let dir = tempfile::Builder::new()
            .prefix("pgporter-proc-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let ini = ini.replace("listen_port = 0", &format!("listen_port = {port}"));
        let ini_path = dir.path().join("pgporter.ini");
        std::fs::write(&ini_path, ini).expect("writing pgporter.ini");
        std::fs::write(dir.path().join("userlist.txt"), userlist).expect("writing userlist");
        let log = std::fs::File::create(dir.path().join("pgporter.log")).expect("log file");
        let child = Command::new(bin)
            .arg("--quiet")
            .arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut p = PorterProcess { child, addr, dir };
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("pgporter exited at startup ({status}):\n{}", p.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pgporter did not listen within 30 s:\n{}", p.log());
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What pgporter logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgporter.log")).unwrap_or_default()
    }

    /// True while the process runs.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A `/proc/<pid>/status` field in kB (VmRSS = resident now, VmHWM = peak resident).
    pub(crate) fn status_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors.
    pub(crate) fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for PorterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `dir/<name>` for the real binary: `db` on PostgreSQL at `pg_port`, listen_addr
/// 127.0.0.1, auth_file userlist.txt (written too: `user` with password "pw"), then the other
/// `[pgbouncer]` lines in `rest`. Returns the ini's path.
pub(crate) fn write_config(
    dir: &Path,
    name: &str,
    (db, user, pg_port): (&str, &str, u16),
    rest: &str,
) -> std::path::PathBuf {
    let ini = dir.join(name);
    std::fs::write(
        &ini,
        format!(
            "[databases]\n{db} = host=127.0.0.1 port={pg_port}\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nauth_file = userlist.txt\n{rest}"
        ),
    )
    .expect("writing the ini");
    std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"pw\"\n"))
        .expect("writing userlist.txt");
    ini
}

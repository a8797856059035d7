//! The real binary: SIGTERM, pidfile and logfile, and the example configs passing `--check`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ops::eventually;
use crate::support::http::get;
use crate::support::process::write_config;
use crate::support::{cluster, cmd, HANG};

pub(crate) use crate::support::process::free_port;

/// The real binary and a real SIGTERM, as Kubernetes sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_real_binary() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("u", "db").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, http_port) = (free_port(), free_port());
    write_config(
        dir.path(),
        "pgporter.ini",
        (&db, &user, cluster.port()),
        &format!(
            "listen_port = {port}\nunix_socket_dir =\n\
             metrics_listen_addr = 127.0.0.1:{http_port}\nshutdown_wait_timeout = 20\n\
             log_format = json\n"
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgporter"))
        .arg(dir.path().join("pgporter.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgporter");
    let http: std::net::SocketAddr = ([127, 0, 0, 1], http_port).into();
    let connstring =
        format!("host=127.0.0.1 port={port} user={user} password=pw dbname={db} sslmode=disable");
    let mut app = None;
    for _ in 0..100 {
        if let Ok((c, conn)) = tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            app = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = app.expect("pgporter came up");
    eventually(
        "ready",
        || async move { get(http, "/readyz").await.0 == 200 },
    )
    .await;
    app.batch_execute("begin; select 1")
        .await
        .expect("transaction");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    eventually("not ready after SIGTERM", || async move {
        get(http, "/readyz").await.0 == 503
    })
    .await;
    app.batch_execute("select 2; commit")
        .await
        .expect("transaction finishes during the drain");
    drop(app);
    let waited = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                let out = child.wait_with_output().expect("output");
                return Some((status, out.stdout));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        None
    })
    .await
    .expect("join");
    let (status, stdout) = waited.expect("pgporter exited within 10 s of the last client leaving");
    assert!(status.success(), "exit status {status}");
    let log = String::from_utf8_lossy(&stdout);
    assert!(
        log.lines()
            .any(|l| l.starts_with('{') && l.contains("SIGTERM")),
        "json logs: {log}"
    );
}

/// The ini and userlist blocks (`pgporter.ini: |`, `userlist.txt: |`) of a Kubernetes YAML.
fn yaml_blocks(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(key) = trimmed.strip_suffix(": |") {
            let indent = line.len() - trimmed.len();
            let mut body = String::new();
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                let ind = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && ind <= indent {
                    break;
                }
                body.push_str(l.get(indent + 2..).unwrap_or("").trim_end());
                body.push('\n');
                i += 1;
            }
            out.push((key.trim().to_string(), body));
            continue;
        }
        i += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_config_passes_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    let mut configs = vec![root.join("pgporter.ini")];
    for entry in std::fs::read_dir(root.join("k8s")).expect("config/k8s") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("yaml");
            let blocks = yaml_blocks(&text);
            let Some((_, ini)) = blocks.iter().find(|b| b.0 == "pgporter.ini") else {
                continue;
            };
            let dir = tempfile::tempdir().expect("tempdir").keep();
            std::fs::write(dir.join("pgporter.ini"), ini).expect("ini");
            let userlist = blocks
                .iter()
                .find(|b| b.0 == "userlist.txt")
                .map(|b| b.1.clone())
                .unwrap_or_else(|| "\"admin\" \"x\"\n".into());
            // The ini names its auth_file by an absolute path in the pod; check it beside it.
            let ini = ini.replace("/etc/pgporter/userlist.txt", "userlist.txt");
            std::fs::write(dir.join("pgporter.ini"), ini).expect("ini");
            std::fs::write(dir.join("userlist.txt"), userlist).expect("userlist");
            configs.push(dir.join("pgporter.ini"));
        }
    }
    for path in &configs {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pgporter"));
        c.arg("--check").arg(path);
        cmd::success(
            &cmd::run(c, HANG).await,
            &format!("pgporter --check {}", path.display()),
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the example ini and two Kubernetes examples, got {checked}"
    );
}

/// A bad command line exits 64, as README's "Command line" says and a bad config does (clap's
/// own exit code is 2); `--help` and `--version` still succeed.
#[tokio::test]
async fn a_bad_command_line_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("p.ini");
    std::fs::write(&ini, "[pgbouncer]\n").expect("ini");
    let ini = ini.to_str().expect("utf-8 path");
    for args in [
        vec!["--bogus", ini],
        vec!["--check", ini, "second.ini"],
        vec![],
        vec!["-d", ini],
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pgporter"));
        c.args(&args);
        let out = cmd::run(c, HANG).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(!stderr.is_empty(), "{args:?}: nothing said");
    }
    for arg in ["--help", "-h", "--version", "-V"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pgporter"));
        c.arg(arg);
        let out = cmd::success(&cmd::run(c, HANG).await, arg);
        assert!(out.contains("pgporter"), "{arg}: {out}");
    }
}

/// The real binary's pidfile and logfile as PgBouncer's: a second instance with the same
/// pidfile refuses to start and leaves the file alone; SIGHUP after a rotation (logrotate's
/// `postrotate kill -HUP`) writes to a new logfile; the pidfile goes at exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pidfile_and_logfile_rotation_of_the_real_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = |port: u16| {
        format!(
            "[databases]\nx = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_file = userlist.txt\n\
             pidfile = p.pid\nlogfile = p.log\n"
        )
    };
    std::fs::write(dir.path().join("one.ini"), ini(free_port())).expect("ini");
    std::fs::write(dir.path().join("two.ini"), ini(free_port())).expect("ini");
    std::fs::write(dir.path().join("userlist.txt"), "\"u\" \"pw\"\n").expect("userlist");
    let spawn = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_pgporter"))
            .arg(dir.path().join(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgporter")
    };
    let (pidfile, log) = (dir.path().join("p.pid"), dir.path().join("p.log"));
    let mut first = KillOnDrop(Some(spawn("one.ini")));
    let pid = first.0.as_ref().expect("child").id().to_string();
    eventually("pidfile written", || {
        let pidfile = pidfile.clone();
        let pid = pid.clone();
        async move { std::fs::read_to_string(&pidfile).is_ok_and(|t| t.trim() == pid) }
    })
    .await;

    let second = spawn("two.ini")
        .wait_with_output()
        .expect("second instance");
    assert!(!second.status.success(), "a second instance started");
    assert_eq!(
        std::fs::read_to_string(&pidfile).expect("pidfile").trim(),
        pid,
        "the second instance touched the pidfile"
    );

    std::fs::rename(&log, dir.path().join("p.log.1")).expect("rotate");
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success())
    };
    kill("-HUP");
    eventually("a new logfile after SIGHUP", || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|t| t.contains("reloaded")) }
    })
    .await;
    kill("-TERM");
    let mut child = first.0.take().expect("child");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    assert!(!pidfile.exists(), "pidfile left behind");
}

/// A spawned pgporter that a failing test does not leave running.
pub(crate) struct KillOnDrop(pub(crate) Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

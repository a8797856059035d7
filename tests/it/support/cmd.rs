//! External programs (psql, pgbench, python) with a deadline, off the async workers.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Run `cmd` to completion; kill it and panic if it takes longer than `limit`.
pub(crate) async fn run(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => out
            .expect("waiting thread panicked")
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// Panic with both streams unless the program exited 0; returns stdout.
pub(crate) fn success(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run `tests/e2e/<script>` with `python` against `fx`'s pgporter (host, port, user, password
/// and database as its arguments), within two minutes; it must succeed and print `ok_line`.
pub(crate) async fn e2e_script(
    python: &std::ffi::OsStr,
    script: &str,
    fx: &super::Fixture,
    ok_line: &str,
) {
    let mut cmd = Command::new(python);
    cmd.arg(format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(["127.0.0.1", &fx.porter.port().to_string()])
        .args([&fx.user, &fx.password, &fx.db]);
    let out = success(&run(cmd, Duration::from_secs(120)).await, script);
    assert!(out.contains(ok_line), "{out}");
}

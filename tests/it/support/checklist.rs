//! External check-list programs (tests/e2e/*): run one, echo its output into the test log,
//! count its skips, and require its final `OK`.
//!
//! Protocol: `PASS name` per check, `SKIP name: reason` per check it could not do, `OK` as
//! the last line on success; anything else goes to the log as is.

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use super::cmd::run;
use super::skip::skip;

/// Run `cmd`; panic (with its output) unless it exits 0 and ends with `OK`. Returns stdout.
pub(crate) async fn run_checklist(cmd: Command, what: &str, limit: Duration) -> String {
    let out = run(cmd, limit).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Straight to stderr, so the clients' output is in the log of a passing run too.
    let mut log = std::io::stderr().lock();
    let _ = writeln!(log, "----- {what} -----\n{stdout}");
    if !stderr.trim().is_empty() {
        let _ = writeln!(log, "----- {what} (stderr) -----\n{stderr}");
    }
    drop(log);
    for line in stdout.lines() {
        if let Some((name, reason)) = line.strip_prefix("SKIP ").and_then(|l| l.split_once(": ")) {
            skip(name, reason);
        }
    }
    assert!(
        out.status.success() && stdout.lines().last() == Some("OK"),
        "{what} failed ({}); its output is above",
        out.status
    );
    let passes = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    let _ = writeln!(std::io::stderr(), "{what}: {passes} checks passed");
    stdout
}

/// tests/e2e/<name>
pub(crate) fn e2e_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e")
        .join(name)
}

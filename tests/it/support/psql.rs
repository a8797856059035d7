//! psql (libpq) as a client: the real thing for sslmode, channel_binding and client certificates.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::cmd;

/// Run `psql "<connstring>" -XAtc <sql>` (bounded); returns its output whatever the outcome.
pub(crate) async fn psql(connstring: &str, sql: &str) -> Output {
    let cluster = super::cluster().await;
    psql_with(&cluster.bin("psql"), connstring, sql, &[]).await
}

/// Run the psql at `bin` as [`psql`] does, with `env` set (none of PGPASSWORD, PGSSLMODE or
/// PGOPTIONS is taken from the test's own environment).
pub(crate) async fn psql_with(
    bin: &Path,
    connstring: &str,
    sql: &str,
    env: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(bin);
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            connstring,
        ])
        .env("PGCONNECT_TIMEOUT", "15")
        .env_remove("PGPASSWORD")
        .env_remove("PGSSLMODE")
        .env_remove("PGOPTIONS")
        .envs(env.iter().copied());
    cmd::run(command, Duration::from_secs(30)).await
}

/// psql must succeed; returns trimmed stdout.
pub(crate) async fn psql_ok(connstring: &str, sql: &str) -> String {
    let out = psql(connstring, sql).await;
    cmd::success(&out, &format!("psql {connstring}"))
        .trim()
        .to_string()
}

/// psql must fail; returns its stderr.
pub(crate) async fn psql_err(connstring: &str, sql: &str) -> String {
    let out = psql(connstring, sql).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "psql unexpectedly succeeded: {connstring}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

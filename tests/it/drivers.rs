//! The driver compatibility matrix through pgporter (session mode, SCRAM): the same check list
//! for each driver (connect, simple query, parameters / prepared statements, a temporary table
//! across statements, a transaction rolled back, COPY, cancel, an error with its SQLSTATE, a
//! wrong password). Python drivers and JDBC run tests/e2e programs; tokio-postgres is checked
//! here; libpq through psql and pgbench is in `drivers_libpq`.
//!
//! TLS: every driver here would also run with sslmode=require once pgporter terminates client
//! TLS (`pending::TLS`); until then each test records that skip.

use std::process::Command;
use std::time::Duration;

use crate::support::checklist::{e2e_file, run_checklist};
use crate::support::skip::{pending, python, skip};
use crate::support::Fixture;

/// Record the TLS variant of `driver` as skipped while pgporter has no client TLS.
pub(crate) fn tls_pending(driver: &str) {
    if let Some(reason) = pending::TLS {
        skip(&format!("{driver}:tls"), reason);
    }
}

async fn python_driver(driver: &str) {
    let Some(python) = python(&format!("{driver} driver matrix")) else {
        return;
    };
    let fx = Fixture::new(4).await;
    let mut cmd = Command::new(python);
    cmd.arg(e2e_file("drivers.py"))
        .arg(driver)
        .args(["127.0.0.1", &fx.porter.port().to_string()])
        .args([&fx.user, &fx.password, &fx.db]);
    run_checklist(
        cmd,
        &format!("drivers.py {driver}"),
        Duration::from_secs(120),
    )
    .await;
    tls_pending(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2() {
    python_driver("psycopg2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_simple() {
    python_driver("psycopg3-simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_server_side_prepare() {
    python_driver("psycopg3-prepared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    python_driver("asyncpg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy2_psycopg2() {
    python_driver("sqlalchemy").await;
}

/// Where Debian's libpostgresql-jdbc-java puts the driver; `PGPORTER_TEST_JDBC_JAR` overrides.
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc() {
    let jar = std::env::var("PGPORTER_TEST_JDBC_JAR").unwrap_or_else(|_| JDBC_JAR.into());
    if !std::path::Path::new(&jar).is_file() {
        skip(
            "jdbc driver matrix",
            &format!("no PostgreSQL JDBC jar at {jar} (apt-get install libpostgresql-jdbc-java)"),
        );
        return;
    }
    if Command::new("java").arg("-version").output().is_err() {
        skip("jdbc driver matrix", "no `java` on PATH (Java 11+ needed)");
        return;
    }
    let fx = Fixture::new(4).await;
    let mut cmd = Command::new("java");
    cmd.arg("-cp")
        .arg(&jar)
        .arg(e2e_file("jdbc/JdbcMatrix.java"))
        .args(["127.0.0.1", &fx.porter.port().to_string()])
        .args([&fx.user, &fx.password, &fx.db]);
    run_checklist(cmd, "JdbcMatrix.java", Duration::from_secs(180)).await;
    tls_pending("jdbc");
}

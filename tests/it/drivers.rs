//! The driver compatibility matrix through pgporter (session mode, SCRAM): the same check list
//! for each driver (connect, simple query, parameters / prepared statements, a temporary table
//! across statements, a transaction rolled back, COPY, cancel, an error with its SQLSTATE, a
//! wrong password). Python drivers and JDBC run tests/e2e programs; tokio-postgres and libpq
//! (psql, pgbench) are in `drivers_native`.
//!
//! TLS: each driver here runs the check list twice, in the clear and again with
//! sslmode=require against a pgporter with client_tls_sslmode=require (certificates made by
//! the test), so every check also passes over client TLS.

use std::process::Command;
use std::time::Duration;

use crate::support::checklist::{e2e_file, run_checklist};
use crate::support::skip::{python, skip};
use crate::support::{Fixture, Spec};
use crate::tls::Certs;

/// The plain fixture, or (with `certs`) one whose pgporter requires client TLS.
async fn fixture(certs: Option<&Certs>) -> Fixture {
    let extra = certs.map_or(String::new(), |c| c.client_tls("require"));
    Fixture::custom(|_| Spec {
        pool_size: 4,
        ..Spec::new(extra)
    })
    .await
}

async fn python_driver(driver: &str) {
    let Some(python) = python(&format!("{driver} driver matrix")) else {
        return;
    };
    let certs = Certs::new();
    for (tls, sslmode) in [(None, "disable"), (Some(&certs), "require")] {
        let fx = fixture(tls).await;
        let mut cmd = Command::new(&python);
        cmd.arg(e2e_file("drivers.py"))
            .arg(driver)
            .args(["127.0.0.1", &fx.porter.port().to_string()])
            .args([&fx.user, &fx.password, &fx.db])
            .env("PGPORTER_TEST_SSLMODE", sslmode);
        run_checklist(
            cmd,
            &format!("drivers.py {driver} (sslmode={sslmode})"),
            Duration::from_secs(120),
        )
        .await;
    }
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
    let certs = Certs::new();
    for (tls, sslmode) in [(None, "disable"), (Some(&certs), "require")] {
        let fx = fixture(tls).await;
        let mut cmd = Command::new("java");
        cmd.arg("-cp")
            .arg(&jar)
            .arg(e2e_file("jdbc/JdbcMatrix.java"))
            .args(["127.0.0.1", &fx.porter.port().to_string()])
            .args([&fx.user, &fx.password, &fx.db])
            .env("PGPORTER_TEST_SSLMODE", sslmode);
        run_checklist(
            cmd,
            &format!("JdbcMatrix.java (sslmode={sslmode})"),
            Duration::from_secs(180),
        )
        .await;
    }
}

//! A client waiting for a new server connection's login: query_wait_timeout ends its wait,
//! the login goes on for the pool, and what it makes is counted once and served to the next
//! client.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use crate::admin::{find, rows, Ops};
use crate::faults_server::signal;
use crate::support::{PgCluster, HANG};

/// Continued however the test ends (a stopped postmaster outlives a failed assertion).
struct Continue(i32);
impl Drop for Continue {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// The pool's row of SHOW POOLS as (cl_active, cl_waiting, sv_active, sv_idle, sv_login).
async fn pool_counts(admin: &tokio_postgres::Client, db: &str) -> [String; 5] {
    let pools = rows(admin, "SHOW POOLS").await;
    let row = find(&pools, "database", db);
    [
        "cl_active",
        "cl_waiting",
        "sv_active",
        "sv_idle",
        "sv_login",
    ]
    .map(|c| row.get(c).unwrap_or("?").to_string())
}

/// A client gives up (query_wait_timeout) on a login held by a stopped postmaster; once the
/// postmaster goes on, the login gets in and its connection is idle in the pool, counted
/// once, and the next client is served by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_client_gave_up_on_serves_the_next_client() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 1").await;
    let admin = ops.admin().await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let stopped = Continue(postmaster);
    let connstring = ops.porter.connstring(&ops.user, "pw", &ops.db);
    let err = tokio::time::timeout(
        HANG,
        tokio_postgres::connect(&connstring, tokio_postgres::NoTls),
    )
    .await
    .expect("the client waited past query_wait_timeout")
    .err()
    .expect("logged in through a stopped postmaster");
    let db_err = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_err.code().code(), "08P01", "{db_err:?}");
    assert_eq!(
        pool_counts(&admin, &ops.db).await,
        ["0", "0", "0", "0", "1"].map(String::from)
    );
    drop(stopped);
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let counts = pool_counts(&admin, &ops.db).await;
        if counts == ["0", "0", "0", "1", "0"].map(String::from) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let servers = rows(&admin, "SHOW SERVERS").await;
    let pid = find(&servers, "database", &ops.db)
        .get("remote_pid")
        .unwrap()
        .to_string();
    let client = crate::support::connect(&connstring).await;
    let row = client
        .query_one("SELECT pg_backend_pid()::text", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        pid,
        "served by the adopted connection"
    );
    assert_eq!(
        pool_counts(&admin, &ops.db).await,
        ["1", "0", "1", "0", "0"].map(String::from)
    );
    drop(client);
}

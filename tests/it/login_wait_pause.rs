//! Server logins under way when PAUSE, KILL or RECONNECT comes: as in PgBouncer 1.18, which
//! closes them at once, nothing begun before stays idle in the pool, and a paused database
//! keeps its clients waiting, not served, until RESUME. A stopped postmaster holds the login.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use crate::admin::Ops;
use crate::faults_server::{signal, Continue};
use crate::login_wait::{backends, pool_counts};
use crate::support::{PgCluster, HANG};

/// Await `done(SHOW POOLS counts, backends of the pool's user)` up to HANG; `what` names the
/// wrong state in the failure.
async fn until(
    admin: &tokio_postgres::Client,
    su: &tokio_postgres::Client,
    ops: &Ops,
    what: &str,
    done: impl Fn(&[String; 5], i64) -> bool,
) -> [String; 5] {
    let started = tokio::time::Instant::now();
    loop {
        let counts = pool_counts(admin, &ops.db).await;
        let n = backends(su, ops, 0).await;
        if done(&counts, n) {
            return counts;
        }
        assert!(
            started.elapsed() < HANG,
            "{what}: (cl_active, cl_waiting, sv_active, sv_idle, sv_login) {counts:?}, {n} backends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client's query, in a task (its backend pid, and the client), waiting on a server login
/// that a stopped postmaster holds (the `Continue` goes on with it), when `command` (PAUSE,
/// KILL) for its database comes. The client logged in on the pool's first connection, which
/// RECONNECT then closed: its query needs a new one.
async fn during_a_login(
    command: &str,
    pg: &PgCluster,
    ops: &Ops,
    admin: &tokio_postgres::Client,
    su: &tokio_postgres::Client,
) -> (
    Continue,
    tokio::task::JoinHandle<(Result<i32, tokio_postgres::Error>, tokio_postgres::Client)>,
) {
    let client = ops.client().await;
    until(admin, su, ops, "the welcome connection", |c, _| c[3] == "1").await;
    admin
        .simple_query(&format!("RECONNECT {}", ops.db))
        .await
        .unwrap();
    until(admin, su, ops, "RECONNECT", |c, n| c[3] == "0" && n == 0).await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let stopped = Continue(postmaster);
    let query = tokio::spawn(async move {
        let row = client.query_one("SELECT pg_backend_pid()", &[]).await;
        (row.map(|r| r.get::<_, i32>(0)), client)
    });
    until(admin, su, ops, "no server login", |c, _| c[4] == "1").await;
    admin
        .simple_query(&format!("{command} {}", ops.db))
        .await
        .unwrap();
    (stopped, query)
}

/// A client's query waits on a login held by a stopped postmaster; KILL comes. As PgBouncer
/// 1.18 (checked live: the login `closing because: database removed` at the KILL, its socket
/// closed with the postmaster still stopped), the login is given up at once: gone from SHOW
/// POOLS with the postmaster still stopped, and no backend of it left once the postmaster goes
/// on. The client is ended (57P01 `database removed`). The login was closed only when it got
/// in (or at server_connect_timeout), listed until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_under_way_is_closed_at_once_by_kill() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 60").await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let (stopped, query) = during_a_login("KILL", pg, &ops, &admin, &su).await;
    let (ended, _client) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the client was not ended by KILL within 10 s")
        .unwrap();
    let err = ended.expect_err("the client was served after KILL");
    let db = crate::support::db_error(&err);
    assert_eq!(
        (db.code().code(), db.message()),
        ("57P01", "database removed")
    );
    // At once: the postmaster is still stopped.
    let started = tokio::time::Instant::now();
    loop {
        let counts = pool_counts(&admin, &ops.db).await;
        if counts[4] == "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the login is still under way 10 s after KILL: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stopped);
    until(
        &admin,
        &su,
        &ops,
        "a connection stayed open after KILL",
        |c, n| c[4] == "0" && c[3] == "0" && n == 0,
    )
    .await;
}

/// A client's query waits on a login held by a stopped postmaster; PAUSE comes, then the
/// postmaster goes on. As PgBouncer 1.18 (checked live: the login `closing because: pause
/// mode`, the client in cl_waiting, served by a new login after RESUME), the login is closed
/// when it gets in, nothing stays idle, and the client waits, unserved, until RESUME. It was
/// logged in afresh, and that connection kept idle in the paused pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_on_a_login_during_pause_waits_for_resume() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 60").await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let (stopped, query) = during_a_login("PAUSE", pg, &ops, &admin, &su).await;
    drop(stopped);
    // Awaited, not timed: the login gets in (sv_login 0) once the postmaster goes on, however
    // long that takes on a loaded machine; then its backend must go, and none stay idle.
    let counts = until(
        &admin,
        &su,
        &ops,
        "a connection stayed open in the paused pool",
        |c, n| c[4] == "0" && c[3] == "0" && n == 0,
    )
    .await;
    assert_eq!(counts[1], "1", "the client no longer waits: {counts:?}");
    assert!(!query.is_finished(), "the client was served while paused");
    admin
        .simple_query(&format!("RESUME {}", ops.db))
        .await
        .unwrap();
    let (pid, _client) = tokio::time::timeout(HANG, query)
        .await
        .expect("the client was not served after RESUME")
        .unwrap();
    let pid = pid.expect("the query failed");
    assert_eq!(
        backends(&su, &ops, pid).await,
        0,
        "a second backend is open"
    );
}

/// As above, but the login fails (server_connect_timeout) after PAUSE, before the postmaster
/// goes on: PgBouncer closed it at the PAUSE, and its client waits for RESUME; so does this
/// one, instead of being told the login failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_failing_during_pause_leaves_its_client_waiting_for_resume() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 2\nquery_wait_timeout = 60").await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let (stopped, query) = during_a_login("PAUSE", pg, &ops, &admin, &su).await;
    // The login ends at server_connect_timeout (sv_login 0), the postmaster still stopped.
    let counts = until(&admin, &su, &ops, "the login did not end", |c, _| {
        c[4] == "0"
    })
    .await;
    assert_eq!(counts[1], "1", "the client no longer waits: {counts:?}");
    assert!(!query.is_finished(), "the client was answered while paused");
    drop(stopped);
    admin
        .simple_query(&format!("RESUME {}", ops.db))
        .await
        .unwrap();
    let (pid, _client) = tokio::time::timeout(HANG, query)
        .await
        .expect("the client was not served after RESUME")
        .unwrap();
    pid.expect("the query failed");
}

/// The number of sessions PostgreSQL has counted in `db`.
async fn sessions(su: &tokio_postgres::Client, db: &str) -> i64 {
    su.query_one(
        "SELECT sessions FROM pg_stat_database WHERE datname = $1",
        &[&db],
    )
    .await
    .unwrap()
    .get(0)
}

/// The fixtures of the min_pool_size tests: the pgporter, its console, a superuser client
/// of PostgreSQL, and PostgreSQL's count of sessions in the database before any.
struct MinPool {
    ops: Ops,
    admin: tokio_postgres::Client,
    su: tokio_postgres::Client,
    before: i64,
}

/// With min_pool_size = 1 (identity_tagging off, as min_pool_size needs), the janitor's login
/// for it is held by a stopped postmaster when `command` comes for the database; then the
/// postmaster goes on.
async fn a_min_pool_size_login_then(command: &str) -> MinPool {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(
        pg,
        "server_connect_timeout = 60\nmin_pool_size = 1\nidentity_tagging = 0",
    )
    .await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let before = sessions(&su, &ops.db).await;
    // A client's login makes the pool; its first connection stays idle for min_pool_size.
    drop(ops.client().await);
    until(&admin, &su, &ops, "the welcome connection", |c, _| {
        c[3] == "1"
    })
    .await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let stopped = Continue(postmaster);
    // Closed by RECONNECT: the janitor logs in another for min_pool_size.
    admin
        .simple_query(&format!("RECONNECT {}", ops.db))
        .await
        .unwrap();
    until(&admin, &su, &ops, "no min_pool_size login", |c, _| {
        c[3] == "0" && c[4] == "1"
    })
    .await;
    admin
        .simple_query(&format!("{command} {}", ops.db))
        .await
        .unwrap();
    drop(stopped);
    MinPool {
        ops,
        admin,
        su,
        before,
    }
}

/// KILL or PAUSE: the min_pool_size login is closed when it gets in, as PgBouncer 1.18 closes
/// its logins at once then (it was kept idle in the paused pool), and no other is opened while
/// the database is paused (PgBouncer 1.18 opens one at each turn of its loop and closes it at
/// once, `pause mode`, checked live: none stays). After RESUME the pool is filled again.
async fn a_min_pool_size_login_is_closed_while_paused_by(command: &str) {
    let MinPool { ops, admin, su, .. } = a_min_pool_size_login_then(command).await;
    until(
        &admin,
        &su,
        &ops,
        &format!("a connection stayed open after {command}"),
        |c, n| c[4] == "0" && c[3] == "0" && n == 0,
    )
    .await;
    // The janitor runs every second: two and a half of its rounds open nothing.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let counts = pool_counts(&admin, &ops.db).await;
        let n = backends(&su, &ops, 0).await;
        assert!(
            counts[3] == "0" && counts[4] == "0" && n == 0,
            "a connection was opened while paused: {counts:?}, {n} backends"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .simple_query(&format!("RESUME {}", ops.db))
        .await
        .unwrap();
    until(&admin, &su, &ops, "not filled after RESUME", |c, n| {
        c[3] == "1" && n == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_pool_size_login_is_closed_after_kill() {
    a_min_pool_size_login_is_closed_while_paused_by("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_pool_size_login_is_closed_after_pause() {
    a_min_pool_size_login_is_closed_while_paused_by("PAUSE").await;
}

/// RECONNECT: the min_pool_size login begun before is closed when it gets in (it was kept
/// idle as if opened after), and the janitor opens another. PostgreSQL counts three sessions:
/// the pool's first connection (closed by the first RECONNECT), the stale login, the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_pool_size_login_is_closed_after_reconnect() {
    let MinPool {
        ops,
        admin,
        su,
        before,
    } = a_min_pool_size_login_then("RECONNECT").await;
    let started = tokio::time::Instant::now();
    loop {
        let n = sessions(&su, &ops.db).await - before;
        if n >= 3 {
            assert_eq!(n, 3);
            break;
        }
        assert!(
            started.elapsed() < HANG,
            "{n} session(s): the login begun before RECONNECT was kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until(&admin, &su, &ops, "not one idle connection", |c, n| {
        c[3] == "1" && c[4] == "0" && n == 1
    })
    .await;
}

//! A client waiting for a new server connection's login: query_wait_timeout ends its wait,
//! the login goes on for the pool, and what it makes is counted once and served to the next
//! client.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use crate::admin::{find, rows, Ops};
use crate::faults_server::{signal, Continue};
use crate::support::{PgCluster, HANG};

/// The pool's row of SHOW POOLS as (cl_active, cl_waiting, sv_active, sv_idle, sv_login).
pub(crate) async fn pool_counts(admin: &tokio_postgres::Client, db: &str) -> [String; 5] {
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

/// Stop `pg`'s postmaster and have a client give up on its login (08P01 at
/// query_wait_timeout), leaving the pool's one login under way (sv_login 1). The postmaster
/// goes on when the returned guard is dropped.
async fn a_client_gives_up_on_a_login(
    pg: &PgCluster,
    ops: &Ops,
    admin: &tokio_postgres::Client,
) -> Continue {
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
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("08P01"), "{err:?}");
    assert_eq!(
        pool_counts(admin, &ops.db).await,
        ["0", "0", "0", "0", "1"].map(String::from)
    );
    stopped
}

/// A client gives up (query_wait_timeout) on a login held by a stopped postmaster; once the
/// postmaster goes on, the login gets in and its connection is idle in the pool, counted
/// once, and the next client is served by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_client_gave_up_on_serves_the_next_client() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 1").await;
    let admin = ops.admin().await;
    let stopped = a_client_gives_up_on_a_login(pg, &ops, &admin).await;
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
    let client = crate::support::connect(&ops.porter.connstring(&ops.user, "pw", &ops.db)).await;
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

/// The client gives up on a login, and a reload replaces the pool (a changed entry) before
/// the login gets in: the connection is closed, not kept idle in the retired pool, where
/// nothing would use or close it while a session of that pool (here one holding its own
/// server in session mode) keeps the pool alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_client_gave_up_on_is_closed_when_its_pool_was_replaced() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 1").await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let holder = ops.client().await;
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Logged in on the pool's welcome; its first query needs a second server connection.
    let late = ops.client().await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let stopped = Continue(postmaster);
    let query = tokio::spawn(async move { late.simple_query("SELECT 1").await.map(|_| ()) });
    let deadline = tokio::time::Instant::now() + HANG;
    while pool_counts(&admin, &ops.db).await[4] != "1" {
        assert!(tokio::time::Instant::now() < deadline, "no server login");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = ops.db.clone();
    ops.porter
        .reload_edited(|ini| {
            let line = format!("dbname={db}\n");
            assert!(ini.contains(&line), "{ini}");
            ini.replacen(&line, &format!("dbname={db} application_name=moved\n"), 1)
        })
        .await;
    let err = tokio::time::timeout(HANG, query)
        .await
        .expect("the query waited past query_wait_timeout")
        .unwrap()
        .expect_err("served through a stopped postmaster");
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("08P01"), "{err:?}");
    drop(stopped);
    // The login gets in within moments of the postmaster going on; its backend must go.
    let started = tokio::time::Instant::now();
    let mut seen = false;
    loop {
        let n: i64 = su
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND usename = $2 AND pid <> $3",
                &[&ops.db, &ops.user, &holder_pid],
            )
            .await
            .unwrap()
            .get(0);
        seen |= n > 0;
        if n == 0 && (seen || started.elapsed() > Duration::from_secs(2)) {
            break;
        }
        assert!(
            started.elapsed() < HANG,
            "the login's server connection stayed open ({n} backends)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.batch_execute("SELECT 1").await.unwrap();
}

/// Backends of the pool's database and user, but `except`.
pub(crate) async fn backends(su: &tokio_postgres::Client, ops: &Ops, except: i32) -> i64 {
    su.query_one(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = $1 AND usename = $2 AND pid <> $3",
        &[&ops.db, &ops.user, &except],
    )
    .await
    .unwrap()
    .get(0)
}

/// The client gives up (query_wait_timeout) on a login held by a stopped postmaster, then an
/// admin runs `command` on the database before the login gets in: the connection is closed
/// when it does, not left idle in the pool, as PgBouncer 1.18 closes such a login at once
/// (checked live: `closing because: database removed` for KILL, `connect string changed` for
/// RECONNECT, `pause mode` for PAUSE).
async fn a_login_given_up_on_is_closed_after(command: &str) {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 1").await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let stopped = a_client_gives_up_on_a_login(pg, &ops, &admin).await;
    admin
        .simple_query(&format!("{command} {}", ops.db))
        .await
        .unwrap();
    drop(stopped);
    // Awaited, not timed: the login gets in (sv_login 0) once the postmaster goes on, however
    // long that takes on a loaded machine, and then its backend must go, not stay idle.
    let started = tokio::time::Instant::now();
    loop {
        let [.., idle, login] = pool_counts(&admin, &ops.db).await;
        let n = backends(&su, &ops, 0).await;
        if login == "0" && n == 0 {
            assert_eq!(idle, "0", "after {command}");
            break;
        }
        assert!(
            started.elapsed() < HANG,
            "the login's server connection stayed open after {command} \
             ({n} backends, sv_idle {idle}, sv_login {login})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_client_gave_up_on_is_closed_after_kill() {
    a_login_given_up_on_is_closed_after("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_client_gave_up_on_is_closed_after_reconnect() {
    a_login_given_up_on_is_closed_after("RECONNECT").await;
}

/// RECONNECT while a client still waits for a login: the client is served by a connection
/// logged in afresh, and the one whose login began before the RECONNECT is closed (as
/// PgBouncer closes it at once, and the waiting client gets a new one). PostgreSQL counts two
/// sessions of the database once the pool's connection is closed too (KILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_gets_a_login_begun_after_reconnect() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    let ops = Ops::on(pg, "server_connect_timeout = 60\nquery_wait_timeout = 30").await;
    let admin = ops.admin().await;
    let su = pg.superuser_client().await;
    let sessions = || async {
        let n: i64 = su
            .query_one(
                "SELECT sessions FROM pg_stat_database WHERE datname = $1",
                &[&ops.db],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    let before = sessions().await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let stopped = Continue(postmaster);
    let connstring = ops.porter.connstring(&ops.user, "pw", &ops.db);
    let client = tokio::spawn(async move { crate::support::connect(&connstring).await });
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let pools = rows(&admin, "SHOW POOLS").await;
        let row = pools.iter().find(|r| r.get("database") == Some(&ops.db));
        if row.is_some_and(|r| r.get("sv_login") == Some("1")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no server login");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .simple_query(&format!("RECONNECT {}", ops.db))
        .await
        .unwrap();
    drop(stopped);
    let client = tokio::time::timeout(HANG, client)
        .await
        .expect("the client was served")
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The stale login's backend goes; the client's stays.
    let started = tokio::time::Instant::now();
    while backends(&su, &ops, pid).await > 0 {
        assert!(started.elapsed() < HANG, "the stale login stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    // Back in the pool before KILL (which closes idle connections, not one still being reset
    // after its client left): then its backend ends, and PostgreSQL counts its session at once.
    let started = tokio::time::Instant::now();
    while pool_counts(&admin, &ops.db).await[3] != "1" {
        assert!(started.elapsed() < HANG, "the client's connection not idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin
        .simple_query(&format!("KILL {}", ops.db))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    loop {
        let n = sessions().await - before;
        if n >= 2 {
            assert_eq!(n, 2);
            break;
        }
        assert!(
            started.elapsed() < HANG,
            "{n} session(s): the client was served by the login begun before RECONNECT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_client_gave_up_on_is_closed_after_pause() {
    a_login_given_up_on_is_closed_after("PAUSE").await;
}

/// connect_query is part of the login, as in PgBouncer: server_connect_timeout bounds it too.
/// Here it waits on a lock the test holds: the login is given up at server_connect_timeout
/// (the client hears of it at once, 08006, and nothing is left in sv_login), where it held
/// its slot, and its client until query_wait_timeout, for as long as the lock was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_bounds_connect_query() {
    let cluster = crate::support::cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    let admin_user = cluster.unique_name("adm");
    cluster.create_role(&user, "pw").await;
    cluster.create_database(&db, &user).await;
    let holder = cluster.local_client(&user, &db).await;
    holder
        .simple_query("SELECT pg_advisory_lock(4242)")
        .await
        .expect("lock");
    let ini = format!(
        "[databases]\n{db} = host=127.0.0.1 port={port} dbname={db} \
         connect_query='SELECT pg_advisory_lock(4242)'\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = userlist.txt\nadmin_users = {admin_user}\n\
         server_connect_timeout = 2\nquery_wait_timeout = 60\n",
        port = cluster.port()
    );
    let userlist = format!("\"{user}\" \"pw\"\n\"{admin_user}\" \"pw\"\n");
    let porter = crate::support::spawn_pgporter(&ini, &userlist).await;
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(
        HANG,
        tokio_postgres::connect(&porter.connstring(&user, "pw", &db), tokio_postgres::NoTls),
    )
    .await
    .expect("the login waited on connect_query past server_connect_timeout")
    .err()
    .expect("logged in while connect_query waited on the lock");
    let code = err.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("08006"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "given up after {:?}",
        started.elapsed()
    );
    let (admin, conn) = tokio_postgres::connect(
        &porter.connstring(&admin_user, "pw", "pgbouncer"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("console");
    tokio::spawn(conn);
    assert_eq!(
        pool_counts(&admin, &db).await,
        ["0", "0", "0", "0", "0"].map(String::from)
    );
    drop(holder);
}

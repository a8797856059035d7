//! Live reload, drain and shutdown, pausing and closing connections (the real binary: ops_binary).

use std::process::Command;
use std::time::Duration;

use pgporter::{Control, ShutdownMode};

use crate::admin::{find, rows, Ops, ADMIN_PW};
use crate::support::http::get;
use crate::support::{cluster, connect, db_error, HANG};

/// Poll `f` every 50 ms until it returns true (bounded by [`HANG`]).
pub(crate) async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ok = tokio::time::timeout(HANG, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_pool_size_and_new_database_and_rejects_bad_config() {
    let ops = Ops::new("").await;
    let cluster = cluster().await;
    let app = ops.client().await;
    app.batch_execute("begin; create temp table t(x int); insert into t values (1)")
        .await
        .expect("open a transaction");

    let new_db = cluster.unique_name("db");
    cluster.create_database(&new_db, &ops.user).await;
    let ini_path = ops.porter.ini_path();
    let ini = std::fs::read_to_string(&ini_path).expect("ini");
    let ini = ini
        .replace("default_pool_size = 4", "default_pool_size = 7")
        .replace(
            "[pgbouncer]",
            &format!(
                "{new_db} = host=127.0.0.1 port={} dbname={new_db}\n[pgbouncer]",
                cluster.port()
            ),
        );
    std::fs::write(&ini_path, &ini).expect("write ini");
    let admin = ops.admin().await;
    admin.simple_query("RELOAD").await.expect("reload");

    // The open session kept its transaction and keeps working.
    let row = app
        .query_one("select count(*) from t", &[])
        .await
        .expect("same session");
    assert_eq!(row.get::<_, i64>(0), 1);
    app.batch_execute("commit").await.expect("commit");
    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(find(&dbs, "name", &ops.db).get("pool_size"), Some("7"));
    let cfg = rows(&admin, "SHOW CONFIG").await;
    assert_eq!(
        find(&cfg, "key", "default_pool_size").get("value"),
        Some("7")
    );
    let fresh = connect(&ops.porter.connstring(&ops.user, "pw", &new_db)).await;
    let row = fresh
        .query_one("select current_database()", &[])
        .await
        .expect("new database");
    assert_eq!(row.get::<_, String>(0), new_db);

    // A broken file is rejected whole; the running config stays.
    std::fs::write(
        &ini_path,
        ini.replace("default_pool_size = 7", "default_pool_size = lots"),
    )
    .expect("write bad ini");
    let e = admin.simple_query("RELOAD").await.expect_err("bad reload");
    assert_eq!(db_error(&e).code().code(), "F0000");
    assert!(db_error(&e).message().contains("default_pool_size"), "{e}");
    let cfg = rows(&admin, "SHOW CONFIG").await;
    assert_eq!(
        find(&cfg, "key", "default_pool_size").get("value"),
        Some("7")
    );
    app.simple_query("select 1").await.expect("still working");
    // SIGHUP's path (Control::Reload) also refuses it, and the failure is counted.
    ops.porter.control(Control::Reload);
    let http = ops.porter.http_addr();
    eventually("failed reloads counted", || async move {
        let (_, page) = get(http, "/metrics").await;
        page.contains("pgporter_reloads_total{outcome=\"failed\"} 2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_flips_readiness_refuses_new_clients_and_lets_transactions_finish() {
    let mut ops = Ops::new("shutdown_wait_timeout = 15").await;
    let http = ops.porter.http_addr();
    eventually(
        "ready",
        || async move { get(http, "/readyz").await.0 == 200 },
    )
    .await;
    let app = ops.client().await;
    app.batch_execute("begin; select 1")
        .await
        .expect("open transaction");

    ops.porter.control(Control::Shutdown(ShutdownMode::Drain));
    eventually("not ready", || async move {
        get(http, "/readyz").await.0 == 503
    })
    .await;
    let e = crate::support::clients::connect_err(&ops.porter.connstring(&ops.user, "pw", &ops.db))
        .await;
    assert_eq!(db_error(&e).code().code(), "57P03");
    // The admin console still answers during the drain.
    let admin = ops.admin().await;
    let pools = rows(&admin, "SHOW POOLS").await;
    assert_eq!(
        find(&pools, "database", &ops.db).get("cl_active"),
        Some("1")
    );

    app.batch_execute("select 2; commit")
        .await
        .expect("the transaction finishes");
    drop(app);
    // The last client left: pgporter exits long before shutdown_wait_timeout.
    ops.porter.wait_stopped(Duration::from_secs(10)).await;
    let _ = ADMIN_PW;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_closes_remaining_sessions_with_57p01() {
    let mut ops = Ops::new("shutdown_wait_timeout = 1").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("works");
    ops.porter.control(Control::Shutdown(ShutdownMode::Drain));
    ops.porter.wait_stopped(Duration::from_secs(15)).await;
    let e = app.simple_query("select 1").await.expect_err("closed");
    if let Some(db) = e.as_db_error() {
        assert_eq!(db.code().code(), "57P01");
    }
}

/// Two sessions at once, each holding its server connection: both need a slot under
/// max_db_connections = 2 (query_wait_timeout = 5 s fails the second if a slot leaked).
async fn two_at_once(ops: &Ops) {
    let (a, b) = (ops.client().await, ops.client().await);
    let (ra, rb) = tokio::join!(a.simple_query("select 1"), b.simple_query("select 1"));
    ra.expect("first session");
    rb.expect("second session: a database slot leaked");
}

/// Closing idle server connections (RECONNECT, KILL, PAUSE, a reload that replaces the pool)
/// frees their slots under max_db_connections / max_user_connections, not only in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_idle_connections_frees_database_and_user_slots() {
    let ops = Ops::new("max_db_connections = 2\nmax_user_connections = 2").await;
    let admin = ops.admin().await;
    let db = ops.db.clone();
    for cmds in [
        vec![format!("RECONNECT {db}")],
        vec![format!("KILL {db}"), format!("RESUME {db}")],
        vec![format!("PAUSE {db}"), format!("RESUME {db}")],
    ] {
        two_at_once(&ops).await;
        // Both back in the pool: the commands act on idle connections.
        ops.porter.until_idle(2).await;
        for cmd in &cmds {
            admin.simple_query(cmd).await.expect(cmd);
        }
        two_at_once(&ops).await;
    }

    // A reload that changes the database's connection string replaces its pool: a session
    // still on the old one finishes there, and its connection's slot is freed with it.
    two_at_once(&ops).await;
    let old = ops.client().await;
    old.simple_query("select 1").await.expect("on the old pool");
    let ini_path = ops.porter.ini_path();
    let ini = std::fs::read_to_string(&ini_path).expect("ini");
    let changed = format!("dbname={db} application_name=changed");
    std::fs::write(
        &ini_path,
        ini.replacen(&format!("dbname={db}"), &changed, 1),
    )
    .expect("ini");
    admin.simple_query("RELOAD").await.expect("reload");
    drop(old);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    two_at_once(&ops).await;
}

/// Admin `SET key = value` changes a running setting as a reload would (until the next RELOAD
/// re-reads the file); bad values, restart-only settings and stats users get an ERROR; a
/// driver's own session settings are accepted and ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_set_changes_a_running_setting() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    admin
        .simple_query("SET default_pool_size = 7")
        .await
        .expect("set");
    let cfg = rows(&admin, "SHOW CONFIG").await;
    assert_eq!(
        find(&cfg, "key", "default_pool_size").get("value"),
        Some("7")
    );
    for (sql, code) in [
        ("SET default_pool_size = lots", "22023"),
        ("SET listen_port = 1", "22023"),
        ("SET auth_file = 'other.txt'", "22023"),
    ] {
        let e = admin.simple_query(sql).await.expect_err(sql);
        assert_eq!(db_error(&e).code().code(), code, "{sql}");
    }
    admin
        .simple_query("SET application_name = 'a driver'")
        .await
        .expect("a session setting is accepted");
    let e = ops
        .stats_user()
        .await
        .simple_query("SET default_pool_size = 3")
        .await
        .expect_err("stats users may not");
    assert_eq!(db_error(&e).code().code(), "42501");
    admin.simple_query("RELOAD").await.expect("reload");
    let cfg = rows(&admin, "SHOW CONFIG").await;
    assert_eq!(
        find(&cfg, "key", "default_pool_size").get("value"),
        Some("4")
    );
}

/// Configuration changes apply one after the other: a RELOAD that comes while an admin SET
/// is still building its snapshot (a new scram_iterations: a PBKDF2 per plaintext userlist
/// line, off the async workers) is not undone when the SET, built from the snapshot before
/// the RELOAD, is installed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_slow_admin_set_is_not_undone() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let installed = || {
        let stats = &ops.porter.shared().stats;
        stats.reloads_ok.load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = installed();
    let set = tokio::spawn(async move {
        let r = admin.simple_query("SET scram_iterations = 300000").await;
        r.map(|_| ())
    });
    // Time for the SET to reach the console and start building (about 2.5 s in a debug
    // build: three plaintext lines).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!set.is_finished(), "the SET should still be building");
    // The RELOAD waits for the SET, whose PBKDF2s take tens of seconds on a loaded machine:
    // sent here and awaited with the SET, not within reload_edited's HANG (which it missed
    // with eight busy loops on the 2 cores).
    let ini = std::fs::read_to_string(ops.porter.ini_path()).expect("ini");
    let edited = ini.replace("default_pool_size = 4", "default_pool_size = 9");
    std::fs::write(ops.porter.ini_path(), edited).expect("ini");
    ops.porter.control(Control::Reload);
    tokio::time::timeout(Duration::from_secs(120), set)
        .await
        .expect("the SET took over two minutes")
        .unwrap()
        .expect("SET scram_iterations");
    eventually("both changes installed", || async {
        installed() >= before + 2
    })
    .await;
    let config = ops.porter.shared().config.load();
    assert_eq!(
        config.settings.default_pool_size, 9,
        "the RELOAD's value stands"
    );
}

/// A client held back by max_user_connections gets the slot when another pool's server
/// connection of the same backend user goes idle (it is closed for the client, as PgBouncer
/// does), not at query_wait_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_going_idle_in_another_pool_frees_a_shared_slot() {
    let ops = Ops::new("max_user_connections = 1").await;
    let ini_path = ops.porter.ini_path();
    let ini = std::fs::read_to_string(&ini_path).expect("ini");
    let db = &ops.db;
    let line = ini
        .lines()
        .find(|l| l.starts_with(&format!("{db} = ")))
        .expect("db line")
        .to_string();
    let second = line.replacen(&format!("{db} = "), &format!("{db}_2 = "), 1);
    std::fs::write(
        &ini_path,
        ini.replacen(&line, &format!("{line}\n{second}"), 1),
    )
    .expect("ini");
    ops.admin()
        .await
        .simple_query("RELOAD")
        .await
        .expect("reload");
    // (Logged in first: its pool learns the server's parameters with the one slot.)
    let other = connect(&ops.porter.connstring(&ops.user, "pw", &format!("{db}_2"))).await;
    let first = ops.client().await;
    first
        .simple_query("select 1")
        .await
        .expect("first holds the one slot");
    let waiting = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        other
            .simple_query("select 2")
            .await
            .map(|_| started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(first);
    let waited = waiting
        .await
        .unwrap()
        .expect("served once the other pool's server went idle");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
}

/// A drain asked for after a safe shutdown (SIGTERM after SIGINT) still gives sessions the
/// whole shutdown_wait_timeout, counted from the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_after_a_safe_shutdown_gets_its_own_grace_period() {
    let mut ops = Ops::new("shutdown_wait_timeout = 2").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("works");
    ops.porter
        .control(Control::Shutdown(ShutdownMode::WaitForServers));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ops.porter.control(Control::Shutdown(ShutdownMode::Drain));
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.simple_query("select 2")
        .await
        .expect("still inside the drain's grace period");
    ops.porter.wait_stopped(Duration::from_secs(15)).await;
}

/// TCP keepalive (PgBouncer's tcp_keepalive, on by default) on both the client's socket and
/// the server connection's, with tcp_keepidle's timing: `ss -o` shows the kernel's timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_sockets_keep_alive() {
    if Command::new("ss").arg("-V").output().is_err() {
        crate::support::skip::skip("ops::keepalive", "`ss` (iproute2) not installed");
        return;
    }
    let ops = Ops::new("tcp_keepidle = 4321\ntcp_keepintvl = 11\ntcp_keepcnt = 4").await;
    let client = ops.client().await;
    let r = rows(
        &client,
        "SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    )
    .await;
    let server_side_port = r[0].get(0).expect("client_port").to_string();
    // Once nothing is in flight the socket's timer is the keepalive one.
    let timers = |port: String| {
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            let out = Command::new("ss")
                .args([
                    "-tnoH",
                    "state",
                    "established",
                    &format!("( sport = :{port} )"),
                ])
                .output()
                .expect("ss");
            let out = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.contains("keepalive") || tokio::time::Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The kernel counts down from tcp_keepidle (4321 s = 72 min).
    let accepted = timers(ops.porter.port().to_string());
    assert!(
        accepted.contains("timer:(keepalive,72min"),
        "client side: {accepted}"
    );
    let toward_server = timers(server_side_port);
    assert!(
        toward_server.contains("timer:(keepalive,72min"),
        "server side: {toward_server}"
    );
    drop(client);
}

/// A reload that changes an entry's host list (or its routing attributes) replaces its pool:
/// the old pool kept its old hosts, unmonitored once a host was dropped and re-added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_list_replaces_the_pool() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let client = ops.client().await;
    client.simple_query("SELECT 1").await.expect("query");
    let before: Vec<_> = ops.porter.shared().pools.all();
    assert_eq!(before.len(), 1);
    let path = ops.porter.ini_path();
    let ini = std::fs::read_to_string(&path).expect("ini");
    let port = cluster().await.port();
    let changed = ini.replacen(
        &format!("host=127.0.0.1 port={port} dbname={}", ops.db),
        &format!(
            "host=127.0.0.1,127.0.0.2 port={port},{port} dbname={}",
            ops.db
        ),
        1,
    );
    assert_ne!(ini, changed, "the entry was not found");
    std::fs::write(&path, changed).expect("write ini");
    admin.simple_query("RELOAD").await.expect("reload");
    assert!(
        !ops.porter
            .shared()
            .pools
            .all()
            .iter()
            .any(|p| std::sync::Arc::ptr_eq(p, &before[0])),
        "the pool with the old host list is still in use for new sessions"
    );
    // The session on the old pool goes on.
    client.simple_query("SELECT 2").await.expect("query");
}

/// PAUSE with clients queued for a full pool: once the sessions holding servers leave, PAUSE
/// returns and the queued client stays queued until RESUME (as PgBouncer); it was handed the
/// freed connection and ran during the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_does_not_serve_queued_clients() {
    let ops = Ops::new("default_pool_size = 1\nquery_wait_timeout = 30").await;
    let holder = ops.client().await;
    holder.simple_query("select 1").await.expect("holder");
    let queued = ops.client().await;
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&ran);
    let query = tokio::spawn(async move {
        let r = queued.simple_query("select 2").await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        (r, queued)
    });
    let admin = ops.admin().await;
    one_queued(&ops, &admin).await;
    let pauser = ops.admin().await;
    let pause = tokio::spawn(async move { pauser.simple_query("PAUSE").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(holder);
    tokio::time::timeout(HANG, pause)
        .await
        .expect("PAUSE returns once the holder left")
        .expect("task")
        .expect("PAUSE");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "a queued client was served while paused"
    );
    admin.simple_query("RESUME").await.expect("resume");
    let (r, _queued) = tokio::time::timeout(HANG, query)
        .await
        .expect("served after RESUME")
        .expect("task");
    r.expect("select 2");
}

/// A reload that changes a database's entry: a logged-in client that has not sent a query
/// yet and a client queued behind the old pool both go to the new target at once (they went
/// to the old target, queued behind the old pool's sessions); SHOW POOLS counts the queued
/// client meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_idle_and_queued_clients_to_the_new_pool() {
    let ops = Ops::new("default_pool_size = 1\nquery_wait_timeout = 30").await;
    let cluster = cluster().await;
    let other = cluster.unique_name("db");
    cluster.create_database(&other, &ops.user).await;
    let holder = ops.client().await;
    holder.simple_query("select 1").await.expect("holder");
    let idle = ops.client().await;
    let queued = ops.client().await;
    let query =
        tokio::spawn(async move { queued.query_one("select current_database()", &[]).await });
    let admin = ops.admin().await;
    one_queued(&ops, &admin).await;
    let ini_path = ops.porter.ini_path();
    let ini = std::fs::read_to_string(&ini_path).expect("ini");
    let ini = ini.replace(&format!("dbname={} ", ops.db), &format!("dbname={other} "));
    let ini = ini.replace(
        &format!("dbname={}\n", ops.db),
        &format!("dbname={other}\n"),
    );
    assert!(ini.contains(&format!("dbname={other}")), "{ini}");
    std::fs::write(&ini_path, &ini).expect("write ini");
    admin.simple_query("RELOAD").await.expect("reload");
    let row = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the queued client waited behind the old pool")
        .expect("task")
        .expect("query");
    assert_eq!(row.get::<_, String>(0), other);
    let row = idle
        .query_one("select current_database()", &[])
        .await
        .expect("idle client");
    assert_eq!(row.get::<_, String>(0), other, "went to the old target");
    // The holder keeps its session (and its server) until it leaves.
    let row = holder
        .query_one("select current_database()", &[])
        .await
        .expect("holder");
    assert_eq!(row.get::<_, String>(0), ops.db);
}

/// Wait until one client of `ops`'s database is queued for a server (SHOW POOLS).
async fn one_queued(ops: &Ops, admin: &tokio_postgres::Client) {
    eventually("the client is queued", || async {
        rows(admin, "SHOW POOLS")
            .await
            .iter()
            .any(|p| p.get("database") == Some(ops.db.as_str()) && p.get("cl_waiting") == Some("1"))
    })
    .await;
}

/// An address named twice in listen_addr (directly or through a name) is listened on once,
/// as PgBouncer goes on after its "address already in use" warning; pgporter refused to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_named_twice_is_listened_on_once() {
    let port = crate::support::process::free_port();
    let fx = crate::support::Fixture::with_settings(
        1,
        &format!("listen_addr = 127.0.0.1,127.0.0.1\nlisten_port = {port}"),
    )
    .await;
    assert_eq!(fx.porter.port(), port);
    let client = fx.connect().await;
    client.simple_query("select 1").await.expect("served");
}

/// A shutdown closes the idle server connections with Terminate, and waits (bounded) for the
/// goodbyes still under way in the background, before it exits: PostgreSQL sees each client
/// leave cleanly. It logged `unexpected EOF on client connection` for every idle connection
/// (DEBUG1 outside a transaction, so a private cluster logs at that level here): the process
/// exited with them open, and cut off background goodbyes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_says_goodbye_to_idle_server_connections() {
    let pg: &'static crate::support::PgCluster =
        Box::leak(Box::new(crate::support::PgCluster::start_private().await));
    let su = pg.superuser_client().await;
    for sql in [
        "ALTER SYSTEM SET log_min_messages = debug1",
        "ALTER SYSTEM SET log_disconnections = on",
        "SELECT pg_reload_conf()",
    ] {
        su.batch_execute(sql).await.expect(sql);
    }
    drop(su);
    eventually("the new log settings", || async {
        let su = pg.superuser_client().await;
        let row = su.query_one("SHOW log_min_messages", &[]).await;
        row.expect("SHOW").get::<_, String>(0) == "debug1"
    })
    .await;
    let mut f = crate::support::Fixture::on_cluster(pg, 3, "").await;
    let clients = futures_util::future::join_all((0..3).map(|_| f.connect())).await;
    let queries = clients
        .iter()
        .map(|c| c.simple_query("select pg_sleep(0.2)"));
    for done in futures_util::future::join_all(queries).await {
        done.expect("a query");
    }
    drop(clients);
    f.porter.until_idle(3).await;
    let log_path = pg.socket_dir().join("server.log");
    let log_from = std::fs::read_to_string(&log_path)
        .expect("server.log")
        .len();
    f.porter.control(Control::Shutdown(ShutdownMode::Drain));
    f.porter.wait_stopped(HANG).await;
    let user = format!("user={} database={}", f.user, f.db);
    let mut log = String::new();
    eventually("three disconnections logged", || {
        log = std::fs::read_to_string(&log_path).expect("server.log")[log_from..].to_string();
        let n = log
            .lines()
            .filter(|l| l.contains("disconnection:") && l.contains(&user))
            .count();
        async move { n == 3 }
    })
    .await;
    for bad in ["unexpected EOF", "could not receive data from client"] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
}

/// `metrics_listen_addr = *:port` answers on every address, IPv6 as well as IPv4 (it bound
/// `0.0.0.0` alone: on an IPv6 cluster the probes and the scrape of the pod's address got no
/// answer). Skipped on a host without IPv6 loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_star_answers_over_ipv4_and_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        crate::support::skip::skip(
            "ops::metrics_on_star_answers_over_ipv4_and_ipv6",
            "no IPv6 loopback",
        );
        return;
    }
    let ops = Ops::new("metrics_listen_addr = *:0").await;
    let port = ops.porter.http_addr().port();
    for ip in ["127.0.0.1", "::1"] {
        let addr = std::net::SocketAddr::new(ip.parse().expect("ip"), port);
        assert_eq!(get(addr, "/healthz").await.0, 200, "{addr}");
    }
}

/// The metrics and probe endpoints answer a request whose lines end in a bare LF (`printf
/// 'GET /metrics HTTP/1.0\n\n' | nc`), as most HTTP servers do (RFC 9112 lets them); such a
/// request waited for a CRLF until the connection's timeout, unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_with_bare_lf_line_ends_are_answered() {
    use crate::support::http::raw;
    let ops = Ops::new("").await;
    let http = ops.porter.http_addr();
    let (status, body) = raw(http, "GET /healthz HTTP/1.0\n\n").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, page) = raw(http, "GET /metrics HTTP/1.1\nhost: localhost\n\n").await;
    assert_eq!(status, 200);
    assert!(page.contains("pgbouncer_up 1"), "{page}");
    // Mixed: LF lines, then a CRLF blank line.
    assert_eq!(
        raw(http, "GET /nope HTTP/1.1\nhost: x\r\n\r\n").await.0,
        404
    );
}

/// A database a reload removed leaves SHOW STATS and /metrics (its histograms too) once it
/// has no client, as PgBouncer 1.18 drops it (checked live: `dropping database 'd1' as it
/// does not exist anymore or inactive auto-database`, and it left SHOW STATS). Its
/// histogram series stayed for good, and its SHOW STATS row with its counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_database_leaves_show_stats_and_metrics() {
    let ops = Ops::new("").await;
    let cluster = cluster().await;
    let gone = cluster.unique_name("db");
    cluster.create_database(&gone, &ops.user).await;
    let entry = format!(
        "{gone} = host=127.0.0.1 port={} dbname={gone}\n",
        cluster.port()
    );
    (ops.porter)
        .reload_edited(|ini| ini.replace("[pgbouncer]", &format!("{entry}[pgbouncer]")))
        .await;
    let client = connect(&ops.porter.connstring(&ops.user, "pw", &gone)).await;
    client.simple_query("select 1").await.expect("select");
    drop(client);
    let http = ops.porter.http_addr();
    let label = format!("{{database=\"{gone}\"");
    let (_, page) = get(http, "/metrics").await;
    let count = format!("pgporter_query_duration_seconds_count{label}}} 1");
    assert!(page.contains(&count), "{page}");
    ops.porter
        .reload_edited(|ini| ini.replace(&entry, ""))
        .await;
    eventually("the removed database's series are dropped", || {
        let label = label.clone();
        async move { !get(http, "/metrics").await.1.contains(&label) }
    })
    .await;
    let admin = ops.admin().await;
    let stats = rows(&admin, "SHOW STATS").await;
    assert!(stats
        .iter()
        .all(|r| r.get("database") != Some(gone.as_str())));
}

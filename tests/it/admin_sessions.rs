//! Console commands acting on sessions and their server connections (RECONNECT, WAIT_CLOSE,
//! server_fast_close, reloads reaching running sessions) and the SHOW columns that follow
//! them (close_needed, request_time, local addresses, databases made through `*`).

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryRow};

use crate::admin::{find, rows, Ops, ADMIN_PW};
use crate::support::http::{get, sample};
use crate::support::{cluster, connect, db_error, HANG};

/// RECONNECT marks a server in use `close_needed`; WAIT_CLOSE returns once it is released
/// (and closed: the next client gets another backend). SHOW STATE follows PAUSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_close_waits_for_servers_marked_by_reconnect() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let db = ops.db.clone();
    let holder = ops.client().await;
    let old_pid = backend_pid(&holder).await;
    let close_needed = |servers: &[SimpleQueryRow]| {
        servers
            .iter()
            .filter(|s| s.get("database") == Some(db.as_str()))
            .map(|s| s.get("close_needed").unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(close_needed(&rows(&admin, "SHOW SERVERS").await), ["0"]);
    admin
        .simple_query(&format!("RECONNECT {db}"))
        .await
        .expect("reconnect");
    assert_eq!(close_needed(&rows(&admin, "SHOW SERVERS").await), ["1"]);

    let waiter = ops.admin().await;
    let wait_db = db.clone();
    let waiting =
        tokio::spawn(async move { waiter.simple_query(&format!("WAIT_CLOSE {wait_db}")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "WAIT_CLOSE returned while the server was in use"
    );
    // A console client that gives up on its WAIT_CLOSE / PAUSE leaves (it stayed, counted
    // against max_client_conn, until the command finished: scripts under `timeout` piled up).
    for cmd in [format!("WAIT_CLOSE {db}"), format!("PAUSE {db}")] {
        let mut gone = crate::support::raw::RawClient::login(
            ops.porter.addr(),
            &ops.admin,
            ADMIN_PW,
            "pgbouncer",
        )
        .await;
        gone.query(&cmd).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(gone);
        let deadline = tokio::time::Instant::now() + HANG;
        loop {
            let consoles = rows(&admin, "SHOW CLIENTS")
                .await
                .iter()
                .filter(|c| c.get("user") == Some(ops.admin.as_str()))
                .count();
            if consoles == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{consoles} consoles after one gave up on {cmd}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The abandoned PAUSE stays in force, as in PgBouncer.
    admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect("the abandoned PAUSE was in force");
    // Commands pipelined with a Terminate behind them all run (the Terminate was taken for
    // the client leaving: PAUSE abandoned, RESUME never run, the database left paused).
    let mut piped =
        crate::support::raw::RawClient::login(ops.porter.addr(), &ops.admin, ADMIN_PW, "pgbouncer")
            .await;
    piped.query(&format!("PAUSE {db}")).await;
    piped.query(&format!("RESUME {db}")).await;
    piped.send_msg(b'X', &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(holder);
    let mut tags = Vec::new();
    while let Some(m) = piped.read_msg().await {
        if m.tag == b'C' {
            tags.push(
                String::from_utf8_lossy(&m.body)
                    .trim_end_matches('\0')
                    .to_string(),
            );
        }
    }
    assert_eq!(tags, ["PAUSE", "RESUME"]);
    tokio::time::timeout(HANG, waiting)
        .await
        .expect("WAIT_CLOSE returns once the client left")
        .expect("task")
        .expect("WAIT_CLOSE");
    let next = ops.client().await;
    assert_ne!(
        backend_pid(&next).await,
        old_pid,
        "the marked server was reused"
    );
    assert_eq!(close_needed(&rows(&admin, "SHOW SERVERS").await), ["0"]);
    admin
        .simple_query("WAIT_CLOSE")
        .await
        .expect("nothing to wait for");
    let e = admin
        .simple_query("WAIT_CLOSE nosuchdb")
        .await
        .expect_err("unknown db");
    assert_eq!(db_error(&e).code().code(), "3D000");

    let state = |rs: Vec<SimpleQueryRow>| {
        rs.iter()
            .map(|r| {
                format!(
                    "{}={}",
                    r.get("key").unwrap_or(""),
                    r.get("value").unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        state(rows(&admin, "SHOW STATE").await),
        ["active=yes", "paused=no", "suspended=no"]
    );
    drop(next);
    admin.simple_query("PAUSE").await.expect("pause");
    assert_eq!(
        state(rows(&admin, "SHOW STATE").await),
        ["active=no", "paused=yes", "suspended=no"]
    );
    // As PgBouncer, SHOW DATABASES `paused` says whether the database is paused on its own:
    // under a bare PAUSE, no (it said yes, and then refused `RESUME db`).
    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(find(&dbs, "name", &db).get("paused"), Some("0"));
    // As PgBouncer: a second bare PAUSE, a RESUME of a database not paused on its own
    // (during a bare PAUSE), and a bare RESUME of a database-only pause are errors.
    let code = |e: tokio_postgres::Error| db_error(&e).code().code().to_string();
    let e = admin.simple_query("PAUSE").await.expect_err("paused twice");
    assert_eq!(code(e), "55000");
    let e = admin
        .simple_query(&format!("PAUSE {db}"))
        .await
        .expect_err("a database under a bare PAUSE");
    assert_eq!(code(e), "55000");
    let e = admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect_err("db not paused itself");
    assert_eq!(code(e), "55000");
    admin.simple_query("RESUME").await.expect("resume");
    admin
        .simple_query(&format!("PAUSE {db}"))
        .await
        .expect("pause db");
    let e = admin
        .simple_query("RESUME")
        .await
        .expect_err("pooler not paused");
    assert_eq!(code(e), "55000");
    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(find(&dbs, "name", &db).get("paused"), Some("1"));
    admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect("resume db");
}

async fn backend_pid(c: &Client) -> String {
    let r = rows(c, "select pg_backend_pid()").await;
    r[0].get(0).expect("pid").to_string()
}

/// SHOW DATABASES lists a database made through the `*` entry once it has a pool, as
/// PgBouncer lists its auto-databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_databases_lists_databases_made_through_the_fallback() {
    let cluster = cluster().await;
    let ops = Ops::new(&format!(
        "[databases]\n* = host=127.0.0.1 port={}",
        cluster.port()
    ))
    .await;
    let other = cluster.unique_name("db");
    cluster.create_database(&other, &ops.user).await;
    let client = connect(&ops.porter.connstring(&ops.user, "pw", &other)).await;
    client.simple_query("SELECT 1").await.expect("query");
    let admin = ops.admin().await;
    let dbs = rows(&admin, "SHOW DATABASES").await;
    let row = find(&dbs, "name", &other);
    assert_eq!(row.get("database"), Some(other.as_str()));
    assert_eq!(row.get("current_client_connections"), Some("1"));
    find(&dbs, "name", &ops.db);
    // Counted in SHOW LISTS and the metrics too (they counted configured entries only).
    let lists = rows(&admin, "SHOW LISTS").await;
    let listed = find(&lists, "list", "databases");
    assert_eq!(listed.get("items"), Some(dbs.len().to_string().as_str()));
    let (_, page) = get(ops.porter.http_addr(), "/metrics").await;
    assert_eq!(sample(&page, "pgbouncer_databases"), Some(dbs.len() as f64));
    assert!(
        page.lines()
            .any(|l| l.starts_with("pgbouncer_databases_current_connections")
                && l.contains(&format!("name=\"{other}\""))),
        "{page}"
    );
}

/// A reload that changes a database's connection string retires its pool; a server a
/// session still holds stays in SHOW SERVERS, close_needed, until WAIT_CLOSE sees it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_of_a_retired_pool_stay_visible() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let holder = ops.client().await;
    let pid = backend_pid(&holder).await;
    let path = ops.porter.ini_path();
    let ini = std::fs::read_to_string(&path).expect("ini");
    let changed = ini.replacen(
        &format!("dbname={}\n", ops.db),
        &format!("dbname={} application_name=changed\n", ops.db),
        1,
    );
    assert_ne!(ini, changed, "the entry was not found");
    std::fs::write(&path, changed).expect("write ini");
    admin.simple_query("RELOAD").await.expect("reload");
    let servers = rows(&admin, "SHOW SERVERS").await;
    let row = find(&servers, "remote_pid", &pid);
    assert_eq!(row.get("close_needed"), Some("1"));
    drop(holder);
    tokio::time::timeout(HANG, admin.simple_query(&format!("WAIT_CLOSE {}", ops.db)))
        .await
        .expect("WAIT_CLOSE returns once the client left")
        .expect("WAIT_CLOSE");
    let servers = rows(&admin, "SHOW SERVERS").await;
    assert!(servers
        .iter()
        .all(|r| r.get("remote_pid") != Some(pid.as_str())));
}

/// server_fast_close: after RECONNECT a session is not left holding its marked server until
/// it ends. One idle outside a transaction ends at once (FATAL 08P01 "database configuration
/// changed", as PgBouncer's reason); one inside a transaction keeps it until COMMIT, then
/// ends. WAIT_CLOSE returns; the next client gets a new backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_ends_sessions_at_their_next_idle_point() {
    let ops = Ops::new("server_fast_close = 1").await;
    let admin = ops.admin().await;
    let db = ops.db.clone();
    let mut idle =
        crate::support::raw::RawClient::login(ops.porter.addr(), &ops.user, "pw", &db).await;
    let idle_pid = idle.rows("select pg_backend_pid()").await.0[0].clone();
    let busy = ops.client().await;
    busy.simple_query("BEGIN").await.expect("begin");
    let busy_pid = backend_pid(&busy).await;
    admin
        .simple_query(&format!("RECONNECT {db}"))
        .await
        .expect("reconnect");
    let fatal = tokio::time::timeout(HANG, idle.read_msg())
        .await
        .expect("the idle session was not ended")
        .expect("closed without a FATAL");
    let text = String::from_utf8_lossy(&fatal.body).into_owned();
    assert_eq!(fatal.tag, b'E');
    assert!(text.starts_with("SFATAL\0"), "{text:?}");
    assert!(text.contains("database configuration changed"), "{text:?}");
    assert_eq!(fatal.sqlstate().as_deref(), Some("08P01"));
    assert!(
        idle.read_msg().await.is_none(),
        "then the connection closes"
    );
    // The transaction is not cut short: its statements run, COMMIT commits, then it ends.
    busy.simple_query("select 1")
        .await
        .expect("inside the transaction");
    let committed = busy.simple_query("COMMIT").await;
    assert!(committed.is_ok(), "COMMIT: {committed:?}");
    tokio::time::timeout(HANG, async {
        while !busy.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the session was not ended after its transaction");
    admin
        .simple_query(&format!("WAIT_CLOSE {db}"))
        .await
        .expect("wait_close");
    let next = ops.client().await;
    let pid = backend_pid(&next).await;
    assert!(
        pid != idle_pid && pid != busy_pid,
        "a marked server was reused"
    );
    // Without server_fast_close (the default) the marked session keeps its server.
    let plain = Ops::new("").await;
    let held = plain.client().await;
    let pid = backend_pid(&held).await;
    plain
        .admin()
        .await
        .simple_query(&format!("RECONNECT {}", plain.db))
        .await
        .expect("reconnect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend_pid(&held).await, pid);
}

/// A reload (here admin SET, which installs a configuration as RELOAD does) changing
/// idle_transaction_timeout reaches a session already holding its server connection, as in
/// PgBouncer; it reached only sessions opened afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_timeouts_reach_running_sessions() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let mut c =
        crate::support::raw::RawClient::login(ops.porter.addr(), &ops.user, "pw", &ops.db).await;
    let (_, status, error) = c.rows("BEGIN").await;
    assert_eq!((status, error), (b'T', None));
    admin
        .simple_query("SET idle_transaction_timeout = 1")
        .await
        .expect("set");
    let fatal = tokio::time::timeout(HANG, c.read_msg())
        .await
        .expect("the running session kept its old (no) timeout")
        .expect("closed without a FATAL");
    let text = String::from_utf8_lossy(&fatal.body).into_owned();
    assert!(text.contains("idle transaction timeout"), "{text:?}");
    assert_eq!(fatal.sqlstate().as_deref(), Some("08P01"));
}

/// SHOW CLIENTS / SERVERS request_time follows the client's latest request (it stayed at the
/// time the session got its server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_time_follows_the_latest_request() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let client = ops.client().await;
    client.simple_query("select 1").await.unwrap();
    let times = |rows: &[SimpleQueryRow], user: &str| {
        let row = find(rows, "user", user);
        (
            row.get("connect_time").unwrap_or("").to_string(),
            row.get("request_time").unwrap_or("").to_string(),
        )
    };
    let (connected, first) = times(&rows(&admin, "SHOW CLIENTS").await, &ops.user);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.simple_query("select 2").await.unwrap();
    let (_, later) = times(&rows(&admin, "SHOW CLIENTS").await, &ops.user);
    assert!(
        later > first && later > connected,
        "{connected} {first} {later}"
    );
    let (_, server) = times(&rows(&admin, "SHOW SERVERS").await, &ops.user);
    assert_eq!(server, later);
}

/// SHOW CLIENTS / SERVERS local_addr and local_port: pgporter's end of each connection; a
/// server's local_port is the client_port PostgreSQL shows for that backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_addresses_are_shown() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let client = ops.client().await;
    let pid = backend_pid(&client).await;
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let me = find(&clients, "user", &ops.user);
    assert_eq!(me.get("local_addr"), Some("127.0.0.1"));
    assert_eq!(
        me.get("local_port"),
        Some(ops.porter.addr().port().to_string().as_str())
    );
    let servers = rows(&admin, "SHOW SERVERS").await;
    let server = find(&servers, "remote_pid", &pid);
    let port: i32 = server
        .get("local_port")
        .expect("local_port")
        .parse()
        .unwrap();
    let row = client
        .query_one(
            "select client_port from pg_stat_activity where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), port);
    assert_eq!(server.get("local_addr"), Some("127.0.0.1"));
}

/// PAUSE returns only once a connection its client gave back has been reset and closed: as
/// PgBouncer counts a server running server_reset_query as in use (tested) until it is done.
/// PAUSE went by the sessions' states, which turn idle as the relay ends, before the reset:
/// it returned at once, and the reset's end put the connection on the paused pool's idle
/// list, where it stayed until RESUME (its backend connected to the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_a_connection_being_reset() {
    let ops = Ops::new("server_reset_query = select pg_sleep(2)").await;
    let admin = ops.admin().await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    let pauser = ops.admin().await;
    let db = ops.db.clone();
    let pausing =
        tokio::spawn(async move { pauser.simple_query(&format!("PAUSE {db}")).await.map(drop) });
    let deadline = tokio::time::Instant::now() + HANG;
    while find(&rows(&admin, "SHOW DATABASES").await, "name", &ops.db).get("paused") != Some("1") {
        assert!(tokio::time::Instant::now() < deadline, "PAUSE never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !pausing.is_finished(),
        "PAUSE returned with a session holding a connection"
    );
    drop(app);
    tokio::time::timeout(HANG, pausing)
        .await
        .expect("PAUSE did not return once the connection was reset")
        .expect("task")
        .expect("PAUSE");
    assert_eq!(
        server_counts(&admin, &ops.db).await,
        ["0", "0", "0", "0"],
        "connections left after PAUSE"
    );
    // Its backend goes (Terminate was sent), and stays gone while paused.
    let su = cluster().await.superuser_client().await;
    let backends = || async {
        su.query_one(
            "select count(*) from pg_stat_activity where datname = $1",
            &[&ops.db],
        )
        .await
        .expect("pg_stat_activity")
        .get::<_, i64>(0)
    };
    let deadline = tokio::time::Instant::now() + HANG;
    while backends().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a backend stayed while paused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .simple_query(&format!("RESUME {}", ops.db))
        .await
        .expect("resume");
}

/// KILL of a database whose connection is being reset after its client left closes it at
/// once (the reset stops), as PgBouncer 1.18 does (checked live: a `tested` server,
/// `closing because: database removed`). KILL found nothing idle to close, and the reset's end
/// put the connection on the killed (paused) pool's idle list, where it stayed until RESUME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_a_connection_being_reset() {
    let ops = Ops::new("server_reset_query = select pg_sleep(2)").await;
    let admin = leave_a_connection_being_reset(&ops).await;
    let counts = || server_counts(&admin, &ops.db);
    admin
        .simple_query(&format!("KILL {}", ops.db))
        .await
        .expect("kill");
    let deadline = tokio::time::Instant::now() + HANG;
    let after = loop {
        let now = counts().await;
        if now[2] == "0" {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reset never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after, ["0", "0", "0", "0"], "a connection kept after KILL");
    admin
        .simple_query(&format!("RESUME {}", ops.db))
        .await
        .expect("resume");
}

/// RECONNECT closes a connection being reset after its client left at once, as PgBouncer 1.18
/// does (checked live, `server_reset_query = select pg_sleep(3)`: the `tested` server went
/// `closing because: database configuration changed (age=0s)`, and WAIT_CLOSE returned in
/// 0.2 s with nothing left). The reset ran on, WAIT_CLOSE returned at once while the
/// connection was still there (its sessions were all gone), and the reset's end closed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_closes_a_connection_being_reset_before_wait_close_returns() {
    let ops = Ops::new("server_reset_query = select pg_sleep(15)").await;
    let admin = leave_a_connection_being_reset(&ops).await;
    let counts = || server_counts(&admin, &ops.db);
    let started = tokio::time::Instant::now();
    for command in ["RECONNECT", "WAIT_CLOSE"] {
        tokio::time::timeout(HANG, admin.simple_query(&format!("{command} {}", ops.db)))
            .await
            .unwrap_or_else(|_| panic!("{command} hung"))
            .unwrap_or_else(|e| panic!("{command}: {e}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        counts().await,
        ["0", "0", "0", "0"],
        "a connection left after RECONNECT and WAIT_CLOSE"
    );
}

/// A client used a server connection and left; returns a console once that connection is
/// being reset (SHOW POOLS: `sv_tested` 1, nothing else).
async fn leave_a_connection_being_reset(ops: &Ops) -> Client {
    let admin = ops.admin().await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    drop(app);
    let deadline = tokio::time::Instant::now() + HANG;
    while server_counts(&admin, &ops.db).await != ["0", "0", "1", "0"] {
        assert!(tokio::time::Instant::now() < deadline, "never being reset");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin
}

/// SHOW POOLS' sv_active, sv_idle, sv_tested and sv_login of `db`.
async fn server_counts(admin: &Client, db: &str) -> [String; 4] {
    let pools = rows(admin, "SHOW POOLS").await;
    let pool = find(&pools, "database", db);
    ["sv_active", "sv_idle", "sv_tested", "sv_login"]
        .map(|c| pool.get(c).unwrap_or_default().to_string())
}

/// RECONNECT while server_check_query runs on the connection a client is to get: the check is
/// cut short, the connection closed, and the client served on a new one, as PgBouncer 1.18
/// does (checked live, `server_check_delay = 0`, `server_check_query = select pg_sleep(4)`:
/// the `tested` server went `closing because: database configuration changed` at once, and
/// the waiting client was served on a new connection). The check ran on to its end, and the
/// client got the connection RECONNECT had dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_cuts_short_a_server_check_query() {
    // The check holds on once the table exists.
    let ops = Ops::new(
        "server_check_delay = 0\nserver_check_query = select pg_sleep(case when exists \
         (select from pg_class where relname = 'hold_checks') then 60 else 0 end)",
    )
    .await;
    let admin = ops.admin().await;
    let first = ops.client().await;
    let old: i32 = first
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    first
        .simple_query("create table hold_checks ()")
        .await
        .expect("create");
    drop(first);
    let deadline = tokio::time::Instant::now() + HANG;
    while server_counts(&admin, &ops.db).await != ["0", "1", "0", "0"] {
        assert!(tokio::time::Instant::now() < deadline, "never idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = ops.client().await;
    let served = tokio::spawn(async move {
        let row = next.query_one("select pg_backend_pid()", &[]).await;
        row.expect("served").get::<_, i32>(0)
    });
    while server_counts(&admin, &ops.db).await[2] != "1" {
        assert!(tokio::time::Instant::now() < deadline, "never checked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin
        .simple_query(&format!("RECONNECT {}", ops.db))
        .await
        .expect("reconnect");
    let new = tokio::time::timeout(HANG, served)
        .await
        .expect("the client waited for the check to end")
        .expect("served");
    assert_ne!(new, old, "served on the connection RECONNECT dropped");
}

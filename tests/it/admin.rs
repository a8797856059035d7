//! The admin console through tokio-postgres and psql: every command, rights, PgBouncer's
//! column names, and the metrics/probe endpoints after a known workload.

use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::support::http::{get, sample};
use crate::support::{cluster, cmd, connect, db_error, spawn_pgporter, PgCluster, Porter, HANG};

pub(crate) const ADMIN_PW: &str = "adm1n-pw";

/// A role + database behind a pgporter with an admin user `adm_*` and a stats user `st_*`.
pub(crate) struct Ops {
    pub(crate) porter: Porter,
    pub(crate) user: String,
    pub(crate) db: String,
    pub(crate) admin: String,
    pub(crate) stats: String,
}

impl Ops {
    pub(crate) async fn new(extra: &str) -> Ops {
        Ops::on(cluster().await, extra).await
    }

    /// As [`Ops::new`], on a given cluster (e.g. a private one).
    pub(crate) async fn on(cluster: &PgCluster, extra: &str) -> Ops {
        let user = cluster.unique_name("u");
        let db = cluster.unique_name("db");
        let admin = cluster.unique_name("adm");
        let stats = cluster.unique_name("st");
        cluster.create_role(&user, "pw").await;
        cluster.create_database(&db, &user).await;
        let ini = format!(
            "[databases]\n{db} = host=127.0.0.1 port={port} dbname={db}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir = {{dir}}\n\
             auth_type = scram-sha-256\nauth_file = userlist.txt\ndefault_pool_size = 4\n\
             query_wait_timeout = 5\nadmin_users = {admin}\nstats_users = {stats}\n\
             metrics_listen_addr = 127.0.0.1:0\n{extra}\n",
            port = cluster.port()
        );
        let userlist =
            format!("\"{user}\" \"pw\"\n\"{admin}\" \"{ADMIN_PW}\"\n\"{stats}\" \"{ADMIN_PW}\"\n");
        let porter = spawn_pgporter(&ini, &userlist).await;
        Ops {
            porter,
            user,
            db,
            admin,
            stats,
        }
    }

    pub(crate) async fn client(&self) -> Client {
        connect(&self.porter.connstring(&self.user, "pw", &self.db)).await
    }

    pub(crate) async fn admin(&self) -> Client {
        connect(&self.porter.connstring(&self.admin, ADMIN_PW, "pgbouncer")).await
    }

    pub(crate) async fn stats_user(&self) -> Client {
        connect(&self.porter.connstring(&self.stats, ADMIN_PW, "pgporter")).await
    }
}

pub(crate) async fn rows(client: &Client, sql: &str) -> Vec<SimpleQueryRow> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn columns(row: &SimpleQueryRow) -> Vec<&str> {
    row.columns().iter().map(|c| c.name()).collect()
}

/// The row whose column `key` equals `value`.
pub(crate) fn find<'a>(rows: &'a [SimpleQueryRow], key: &str, value: &str) -> &'a SimpleQueryRow {
    rows.iter()
        .find(|r| r.get(key) == Some(value))
        .unwrap_or_else(|| panic!("no row with {key} = {value}"))
}

/// SHOW STATS total_wait_time is time clients spent queued for a server, as PgBouncer 1.18
/// counts it (checked live: 200 queries of one client on an idle pool added 0); requests
/// given an idle connection at once add nothing (pgporter added each checkout's µs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_served_at_once_add_no_wait_time() {
    let ops = Ops::new("pool_mode = transaction").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    let admin = ops.admin().await;
    let wait = || async {
        let stats = rows(&admin, "SHOW STATS").await;
        let s = find(&stats, "database", &ops.db);
        (
            s.get("total_wait_time").map(str::to_string),
            s.get("total_xact_count").map(str::to_string),
        )
    };
    let (before, _) = wait().await;
    for _ in 0..20 {
        app.simple_query("select 1").await.expect("select");
    }
    assert_eq!(wait().await, (before, Some("21".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_have_pgbouncer_columns_and_counts() {
    let ops = Ops::new("").await;
    let app = ops.client().await;
    for _ in 0..5 {
        app.simple_query("select 1").await.expect("select");
    }
    let admin = ops.admin().await;

    let pools = rows(&admin, "SHOW POOLS").await;
    assert_eq!(columns(&pools[0]), crate::support::SHOW_POOLS);
    let pool = find(&pools, "database", &ops.db);
    assert_eq!(pool.get("cl_active"), Some("1"));
    assert_eq!(pool.get("sv_active"), Some("1"));
    assert_eq!(pool.get("pool_mode"), Some("session"));
    // As PgBouncer, load_balance_hosts is shown only for an entry with several hosts.
    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(find(&dbs, "name", &ops.db).get("load_balance_hosts"), None);

    let stats = rows(&admin, "SHOW STATS").await;
    assert_eq!(
        columns(&stats[0])[..4],
        [
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count"
        ]
    );
    let s = find(&stats, "database", &ops.db);
    assert_eq!(s.get("total_query_count"), Some("5"));
    assert_eq!(s.get("total_xact_count"), Some("5"));
    assert_eq!(s.get("total_server_assignment_count"), Some("1"));
    assert_ne!(s.get("total_received"), Some("0"));
    assert_ne!(s.get("total_sent"), Some("0"));
    let totals = rows(&admin, "SHOW STATS_TOTALS").await;
    assert_eq!(
        find(&totals, "database", &ops.db).get("query_count"),
        Some("5")
    );
    let avgs = rows(&admin, "SHOW STATS_AVERAGES").await;
    assert!(columns(&avgs[0]).contains(&"bytes_received"));

    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(
        columns(&clients[0]),
        [
            "type",
            "user",
            "database",
            "replication",
            "state",
            "addr",
            "port",
            "local_addr",
            "local_port",
            "connect_time",
            "request_time",
            "wait",
            "wait_us",
            "close_needed",
            "ptr",
            "link",
            "remote_pid",
            "tls",
            "application_name",
            "prepared_statements",
            "id"
        ]
    );
    let me = find(&clients, "user", &ops.user);
    assert_eq!(me.get("state"), Some("active"));
    assert_eq!(me.get("database"), Some(ops.db.as_str()));
    // PgBouncer's form (text, not timestamptz): `2026-11-26 20:39:44 UTC`.
    let at = me.get("connect_time").expect("connect_time");
    assert!(
        at.len() == 23 && at.ends_with(" UTC") && at.as_bytes()[10] == b' ',
        "{at:?}"
    );
    let servers = rows(&admin, "SHOW SERVERS").await;
    assert_eq!(
        find(&servers, "database", &ops.db).get("state"),
        Some("active")
    );
    // SHOW SOCKETS / ACTIVE_SOCKETS: clients and servers with PgBouncer's buffer columns.
    for cmd in ["SHOW SOCKETS", "SHOW ACTIVE_SOCKETS"] {
        let sockets = rows(&admin, cmd).await;
        let types: Vec<&str> = sockets
            .iter()
            .filter(|r| r.get("database") == Some(ops.db.as_str()))
            .filter_map(|r| r.get("type"))
            .collect();
        assert_eq!(types, ["C", "S"], "{cmd}");
        assert_eq!(columns(&sockets[0]).last(), Some(&"send_avail"), "{cmd}");
    }
    for cmd in ["SHOW PEERS", "SHOW PEER_POOLS"] {
        admin.simple_query(cmd).await.expect(cmd);
    }

    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(
        columns(&dbs[0])[..5],
        ["name", "host", "port", "database", "force_user"]
    );
    assert_eq!(find(&dbs, "name", &ops.db).get("pool_size"), Some("4"));
    let cfg = rows(&admin, "SHOW CONFIG").await;
    assert_eq!(columns(&cfg[0]), ["key", "value", "default", "changeable"]);
    assert_eq!(
        find(&cfg, "key", "default_pool_size").get("value"),
        Some("4")
    );
    let users = rows(&admin, "SHOW USERS").await;
    assert!(columns(&users[0]).contains(&"max_user_connections"));
    find(&users, "name", &ops.user);
    let lists = rows(&admin, "SHOW LISTS").await;
    // The database and the console's `pgbouncer`, as PgBouncer counts them.
    assert_eq!(find(&lists, "list", "databases").get("items"), Some("2"));
    let state = rows(&admin, "SHOW STATE").await;
    assert_eq!(find(&state, "key", "active").get("value"), Some("yes"));
    // PgBouncer's form, naming the release whose console this follows, then pgporter's own.
    let version = rows(&admin, "SHOW VERSION").await;
    let version = version[0].get("version").unwrap_or("");
    assert!(
        version.starts_with("PgBouncer 1.24.1 (pgporter "),
        "{version}"
    );
    let is_bouncer = rows(&admin, "SHOW server_version").await;
    assert_eq!(is_bouncer[0].get("server_version"), Some("1.24.1/bouncer"));
    assert!(rows(&admin, "SHOW DNS_HOSTS").await.is_empty());
    let ids = rows(&admin, "SHOW IDENTITIES").await;
    assert_eq!(find(&ids, "identity", &ops.user).get("servers"), Some("1"));
    let hosts = tokio::time::timeout(HANG, async {
        loop {
            let h = rows(&admin, "SHOW HOSTS").await;
            if !h.is_empty() {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a host probe within the deadline");
    assert_eq!(hosts[0].get("state"), Some("up"));
    // PgBouncer 1.18's SHOW TOTALS names: bytes as client/server bytes, then the averages.
    let totals = rows(&admin, "SHOW TOTALS").await;
    let names: Vec<&str> = totals.iter().filter_map(|r| r.get("name")).collect();
    for name in [
        "total_xact_count",
        "total_client_bytes",
        "total_server_bytes",
        "avg_query_count",
        "avg_client_bytes",
        "avg_wait_time",
    ] {
        assert!(
            names.contains(&name),
            "SHOW TOTALS has no {name}: {names:?}"
        );
    }
    assert_ne!(
        find(&totals, "name", "total_client_bytes").get("value"),
        Some("0")
    );
    rows(&admin, "SHOW MEM").await;
    admin.simple_query("SHOW HELP").await.expect("help");

    // Unknown commands and extended protocol: an ERROR, and the console keeps working.
    let e = admin
        .simple_query("DROP TABLE x")
        .await
        .expect_err("unknown");
    assert_eq!(db_error(&e).code().code(), "42601");
    let e = admin.query("SHOW POOLS", &[]).await.expect_err("extended");
    assert_eq!(db_error(&e).code().code(), "0A000");
    rows(&admin, "SHOW POOLS").await;

    // The metrics page after the same workload.
    let (status, page) = get(ops.porter.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let db = &ops.db;
    assert_eq!(
        sample(
            &page,
            &format!("pgbouncer_stats_queries_pooled_total{{database=\"{db}\"}}")
        ),
        Some(5.0),
        "{page}"
    );
    // Also under pgbouncer_exporter 0.11's names (from SHOW STATS_TOTALS), and described.
    for name in [
        "pgbouncer_stats_sql_transactions_pooled_total",
        "pgbouncer_stats_totals_sql_transactions_pooled_total",
        "pgbouncer_stats_totals_queries_pooled_total",
    ] {
        assert_eq!(
            sample(&page, &format!("{name}{{database=\"{db}\"}}")),
            Some(5.0),
            "{name}"
        );
        assert!(page.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    assert!(page.contains("# TYPE pgbouncer_stats_totals_client_wait_seconds_total gauge"));
    let u = &ops.user;
    assert_eq!(
        sample(
            &page,
            &format!("pgbouncer_pools_client_active_connections{{database=\"{db}\",user=\"{u}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            &format!("pgbouncer_pools_server_active_connections{{database=\"{db}\",user=\"{u}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            &format!(
                "pgporter_client_connections{{database=\"{db}\",user=\"{u}\",state=\"active\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            &format!("pgporter_query_duration_seconds_count{{database=\"{db}\"}}")
        ),
        Some(5.0)
    );
    for cancels in [
        "client_active_cancel",
        "client_waiting_cancel",
        "server_active_cancel",
        "server_being_canceled",
    ] {
        let series =
            format!("pgbouncer_pools_{cancels}_connections{{database=\"{db}\",user=\"{u}\"}}");
        assert_eq!(sample(&page, &series), Some(0.0), "{series}");
    }
    // pool_mode as the exporter labels it: empty unless the entry sets one.
    assert!(
        page.lines()
            .any(|l| l.contains(&format!("name=\"{db}\"")) && l.contains("pool_mode=\"\"")),
        "{page}"
    );
    assert!(page.contains("pgbouncer_databases_pool_size{"), "{page}");
    // pgbouncer_exporter's SHOW LISTS gauges, version and HELP lines.
    assert_eq!(sample(&page, "pgbouncer_databases"), Some(2.0), "{page}");
    assert!(
        page.contains("pgbouncer_version_info{version=\"PgBouncer 1.24.1 (pgporter "),
        "{page}"
    );
    assert!(
        page.contains("# HELP pgbouncer_pools_client_active_connections "),
        "{page}"
    );
    assert!(
        page.contains("pgporter_client_wait_seconds_bucket{"),
        "{page}"
    );
    assert_eq!(get(ops.porter.http_addr(), "/healthz").await.0, 200);
    assert_eq!(get(ops.porter.http_addr(), "/nope").await.0, 404);
    // HEAD: the status and headers, no body.
    let head = crate::support::http::request(ops.porter.http_addr(), "HEAD", "/metrics").await;
    assert_eq!(head, (200, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_users_may_only_show_and_others_are_refused() {
    let ops = Ops::new("").await;
    // Before any failure, the auth-failure and limit-rejection counters are there at 0 for
    // each auth_file user (and failures for `unknown`), so rate() sees the first one.
    let (_, page) = get(ops.porter.http_addr(), "/metrics").await;
    for user in [ops.admin.as_str(), ops.user.as_str(), "unknown"] {
        let series = format!("pgporter_auth_failures_total{{user=\"{user}\"}}");
        assert_eq!(sample(&page, &series), Some(0.0), "{series}\n{page}");
    }
    for user in [ops.admin.as_str(), ops.user.as_str()] {
        let series = format!("pgporter_limit_rejections_total{{user=\"{user}\"}}");
        assert_eq!(sample(&page, &series), Some(0.0), "{series}\n{page}");
    }
    let st = ops.stats_user().await;
    rows(&st, "SHOW POOLS").await;
    for cmd in ["PAUSE", "RELOAD", "SHUTDOWN", "KILL_CLIENT 1"] {
        let e = st.simple_query(cmd).await.expect_err(cmd);
        assert_eq!(db_error(&e).code().code(), "42501", "{cmd}");
    }
    // A plain user is not a console user at all; a wrong password fails as usual.
    let e =
        crate::support::clients::connect_err(&ops.porter.connstring(&ops.user, "pw", "pgbouncer"))
            .await;
    assert_eq!(db_error(&e).code().code(), "28000");
    let e = crate::support::clients::connect_err(&ops.porter.connstring(
        &ops.admin,
        "wrong",
        "pgbouncer",
    ))
    .await;
    assert_eq!(db_error(&e).code().code(), "28P01");
    let (_, page) = get(ops.porter.http_addr(), "/metrics").await;
    assert_eq!(
        sample(
            &page,
            &format!("pgporter_auth_failures_total{{user=\"{}\"}}", ops.admin)
        ),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_disable_enable_kill_client() {
    let ops = Ops::new("").await;
    let admin = ops.admin().await;
    let db = ops.db.clone();

    // PAUSE: a new client's first query waits until RESUME.
    admin
        .simple_query(&format!("PAUSE {db}"))
        .await
        .expect("pause");
    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(find(&dbs, "name", &db).get("paused"), Some("1"));
    let connstring = ops.porter.connstring(&ops.user, "pw", &db);
    let waiting = tokio::spawn(async move {
        let c = connect(&connstring).await;
        c.simple_query("select 1").await.map(|_| ())
    });
    let seen_waiting = tokio::time::timeout(HANG, async {
        loop {
            let pools = rows(&admin, "SHOW POOLS").await;
            if pools
                .iter()
                .any(|p| p.get("database") == Some(db.as_str()) && p.get("cl_waiting") == Some("1"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen_waiting.is_ok(), "the client never showed as waiting");
    assert!(!waiting.is_finished());
    admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect("resume");
    tokio::time::timeout(HANG, waiting)
        .await
        .expect("resumed")
        .expect("task")
        .expect("query after resume");
    let e = admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect_err("not paused");
    assert_eq!(db_error(&e).code().code(), "55000");
    let e = admin
        .simple_query("PAUSE nosuchdb")
        .await
        .expect_err("unknown db");
    assert_eq!(db_error(&e).code().code(), "3D000");

    // DISABLE refuses new clients; ENABLE lets them in again.
    admin
        .simple_query(&format!("DISABLE {db}"))
        .await
        .expect("disable");
    let e =
        crate::support::clients::connect_err(&ops.porter.connstring(&ops.user, "pw", &db)).await;
    assert_eq!(db_error(&e).code().code(), "55000");
    admin
        .simple_query(&format!("ENABLE {db}"))
        .await
        .expect("enable");

    // KILL_CLIENT ends exactly that client, with 57P01.
    let victim = ops.client().await;
    let other = ops.client().await;
    victim.simple_query("select 1").await.expect("victim works");
    // Clients of the steps above may still be leaving: wait until only these two are left.
    let deadline = tokio::time::Instant::now() + HANG;
    let ids = loop {
        let clients = rows(&admin, "SHOW CLIENTS").await;
        let ids: Vec<String> = clients
            .iter()
            .filter(|c| c.get("user") == Some(ops.user.as_str()))
            .filter_map(|c| c.get("id").map(str::to_string))
            .collect();
        if ids.len() == 2 {
            break ids;
        }
        assert!(tokio::time::Instant::now() < deadline, "clients: {ids:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // The victim connected first: lower id.
    let victim_id = ids
        .iter()
        .min_by_key(|i| i.parse::<u64>().unwrap_or(0))
        .expect("id");
    admin
        .simple_query(&format!("KILL_CLIENT {victim_id}"))
        .await
        .expect("kill_client");
    // The kill reaches the session in its relay at once, not at the client's next message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !victim.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a killed client in its relay is not disconnected without sending anything"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = victim.simple_query("select 1").await.expect_err("killed");
    if let Some(db_err) = e.as_db_error() {
        assert_eq!(db_err.code().code(), "57P01");
    }
    other
        .simple_query("select 1")
        .await
        .expect("the other client is untouched");
    let e = admin
        .simple_query("KILL_CLIENT 999999")
        .await
        .expect_err("no such client");
    assert_eq!(db_error(&e).code().code(), "42704");

    // RECONNECT and KILL db.
    admin
        .simple_query(&format!("RECONNECT {db}"))
        .await
        .expect("reconnect");
    admin
        .simple_query(&format!("KILL {db}"))
        .await
        .expect("kill");
    assert!(
        other.simple_query("select 1").await.is_err(),
        "KILL drops the clients"
    );
    admin
        .simple_query(&format!("RESUME {db}"))
        .await
        .expect("resume after kill");
    ops.client()
        .await
        .simple_query("select 1")
        .await
        .expect("works after resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_admin_console_tcp_and_unix_peer() {
    let ops = Ops::new("").await;
    let psql = cluster().await.bin("psql");
    let mut tcp = Command::new(&psql);
    tcp.args([
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        &ops.porter.port().to_string(),
    ])
    .args([
        "-U",
        &ops.admin,
        "-d",
        "pgbouncer",
        "-c",
        "SHOW POOLS",
        "-c",
        "\\x",
        "-c",
        "SHOW CLIENTS",
    ])
    .env("PGPASSWORD", ADMIN_PW)
    .env("PGSSLMODE", "disable");
    let out = cmd::success(&cmd::run(tcp, HANG).await, "psql SHOW POOLS");
    assert!(out.contains("cl_active"), "{out}");
    assert!(out.contains("-[ RECORD 1 ]"), "expanded output: {out}");
    // The `pgbouncer` user over the unix socket from our own OS user: no password needed.
    let mut unix = Command::new(&psql);
    unix.args(["-X", "-h", &ops.porter.dir().display().to_string()])
        .args([
            "-p",
            &ops.porter.port().to_string(),
            "-U",
            "pgbouncer",
            "-d",
            "pgbouncer",
        ])
        .args(["-c", "SHOW VERSION", "-c", "PAUSE", "-c", "RESUME"]);
    let out = cmd::success(&cmd::run(unix, HANG).await, "psql over the unix socket");
    assert!(out.contains("pgporter"), "{out}");
    // SHOW CLIENTS shows a unix-socket client as PgBouncer does: `unix` and the listen port
    // at both ends, and the client's process id (SO_PEERCRED) as remote_pid.
    let port = ops.porter.port().to_string();
    let mut unix = Command::new(&psql);
    unix.args(["-X", "-A", "-h", &ops.porter.dir().display().to_string()])
        .args(["-p", &port, "-U", "pgbouncer", "-d", "pgbouncer"])
        .args(["-c", "SHOW CLIENTS"]);
    let out = cmd::success(
        &cmd::run(unix, HANG).await,
        "SHOW CLIENTS over the unix socket",
    );
    let header: Vec<&str> = out.lines().next().unwrap_or("").split('|').collect();
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("C|pgbouncer|"))
        .unwrap_or_else(|| panic!("{out}"))
        .split('|')
        .collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).expect(name)];
    assert_eq!(
        [
            col("addr"),
            col("port"),
            col("local_addr"),
            col("local_port")
        ],
        ["unix", port.as_str(), "unix", port.as_str()],
        "{out}"
    );
    assert_ne!(col("remote_pid"), "0", "{out}");
    // Over TCP the `pgbouncer` user gets no such pass.
    let mut denied = Command::new(&psql);
    denied
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &ops.porter.port().to_string(),
        ])
        .args([
            "-U",
            "pgbouncer",
            "-d",
            "pgbouncer",
            "-w",
            "-c",
            "SHOW POOLS",
        ])
        .env("PGSSLMODE", "disable");
    let out = cmd::run(denied, HANG).await;
    assert!(!out.status.success());
}

/// SHOW DATABASES / SHOW USERS show the limits in force, [pgbouncer] defaults included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_columns_carry_the_configured_limits() {
    let ops = Ops::new(
        "reserve_pool_size = 2\nmax_user_client_connections = 3\nmax_db_client_connections = 4",
    )
    .await;
    let _app = ops.client().await;
    let admin = ops.admin().await;
    let dbs = rows(&admin, "SHOW DATABASES").await;
    let db = find(&dbs, "name", &ops.db);
    assert_eq!(db.get("reserve_pool_size"), Some("2"));
    assert_eq!(db.get("max_client_connections"), Some("4"));
    let users = rows(&admin, "SHOW USERS").await;
    let user = find(&users, "name", &ops.user);
    assert_eq!(user.get("max_user_client_connections"), Some("3"));
}

//! The console as PgBouncer shows it to itself: the `pgbouncer` pseudo-database in SHOW
//! DATABASES / POOLS / STATS / USERS / LISTS and in the pgbouncer_exporter metrics.

use std::time::Duration;

use crate::admin::{find, rows, Ops, ADMIN_PW};
use crate::faults_server::signal;
use crate::support::http::{get, sample};
use crate::support::raw::RawClient;
use crate::support::{db_error, PgCluster, HANG};

/// PgBouncer lists its console as a database `pgbouncer` with one pool (user `pgbouncer`,
/// statement mode, pool_size 2) holding the console clients, and counts each console command
/// as a query and a transaction in SHOW STATS; pgbouncer_exporter publishes those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_listed_as_the_pgbouncer_database() {
    // An entry named as the console is never reached (the console answers): not listed.
    let ops = Ops::new("[databases]\npgporter = host=127.0.0.1 port=9 dbname=x").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    let admin = ops.admin().await;
    // The stats user comes in through the `pgporter` alias: the same pseudo-database.
    let stats = ops.stats_user().await;
    for _ in 0..3 {
        rows(&stats, "SHOW VERSION").await;
    }
    // Three commands answered before this one.
    let totals = rows(&admin, "SHOW STATS_TOTALS").await;
    let console = find(&totals, "database", "pgbouncer");
    assert_eq!(console.get("query_count"), Some("3"));
    assert_eq!(console.get("xact_count"), Some("3"));
    for no_server in ["server_assignment_count", "bytes_received", "query_time"] {
        assert_eq!(console.get(no_server), Some("0"), "{no_server}");
    }
    let stats_rows = rows(&admin, "SHOW STATS").await;
    let names: Vec<&str> = stats_rows
        .iter()
        .filter_map(|r| r.get("database"))
        .collect();
    assert_eq!(names, [ops.db.as_str(), "pgbouncer"], "sorted by name");
    assert_eq!(
        find(&stats_rows, "database", "pgbouncer").get("total_query_count"),
        Some("4")
    );

    let dbs = rows(&admin, "SHOW DATABASES").await;
    let names: Vec<&str> = dbs.iter().filter_map(|r| r.get("name")).collect();
    assert_eq!(names, [ops.db.as_str(), "pgbouncer"]);
    let db = find(&dbs, "name", "pgbouncer");
    let port = ops.porter.port().to_string();
    for (column, value) in [
        ("host", None),
        ("port", Some(port.as_str())),
        ("database", Some("pgbouncer")),
        ("force_user", Some("pgbouncer")),
        ("pool_size", Some("2")),
        ("reserve_pool_size", Some("0")),
        ("server_lifetime", Some("3600")),
        ("pool_mode", Some("statement")),
        ("load_balance_hosts", None),
        ("current_connections", Some("0")),
        ("current_client_connections", Some("2")),
        ("paused", Some("0")),
        ("disabled", Some("0")),
    ] {
        assert_eq!(db.get(column), value, "SHOW DATABASES {column}");
    }

    let pools = rows(&admin, "SHOW POOLS").await;
    let pool = find(&pools, "database", "pgbouncer");
    for (column, value) in [
        ("user", "pgbouncer"),
        ("cl_active", "2"),
        ("cl_waiting", "0"),
        ("sv_active", "0"),
        ("sv_idle", "0"),
        ("sv_login", "0"),
        ("pool_mode", "statement"),
    ] {
        assert_eq!(pool.get(column), Some(value), "SHOW POOLS {column}");
    }
    assert_eq!(
        find(&pools, "database", &ops.db).get("cl_active"),
        Some("1")
    );

    let users = rows(&admin, "SHOW USERS").await;
    assert_eq!(
        find(&users, "name", "pgbouncer").get("current_connections"),
        Some("0")
    );
    // A console client counts for its user, as in PgBouncer.
    assert_eq!(
        find(&users, "name", &ops.admin).get("current_client_connections"),
        Some("1")
    );
    let lists = rows(&admin, "SHOW LISTS").await;
    assert_eq!(find(&lists, "list", "databases").get("items"), Some("2"));
    assert_eq!(find(&lists, "list", "pools").get("items"), Some("2"));
    assert_eq!(find(&lists, "list", "used_clients").get("items"), Some("3"));
    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(
        find(&clients, "user", &ops.stats).get("database"),
        Some("pgporter")
    );

    // The exporter's families carry the same rows; pgporter's own stay about the pools.
    let (status, page) = get(ops.porter.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let console_pool = "{database=\"pgbouncer\",user=\"pgbouncer\"}";
    assert_eq!(
        sample(
            &page,
            &format!("pgbouncer_pools_client_active_connections{console_pool}")
        ),
        Some(2.0),
        "{page}"
    );
    let console_db = format!(
        "{{name=\"pgbouncer\",host=\"\",port=\"{port}\",database=\"pgbouncer\",\
         force_user=\"pgbouncer\",pool_mode=\"statement\"}}"
    );
    assert_eq!(
        sample(&page, &format!("pgbouncer_databases_pool_size{console_db}")),
        Some(2.0),
        "{page}"
    );
    // The ten commands above.
    assert_eq!(
        sample(
            &page,
            "pgbouncer_stats_totals_queries_pooled_total{database=\"pgbouncer\"}"
        ),
        Some(10.0),
        "{page}"
    );
    assert_eq!(sample(&page, "pgbouncer_databases"), Some(2.0));
    assert_eq!(sample(&page, "pgbouncer_pools"), Some(2.0));
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with("pgporter_") && l.contains("\"pgbouncer\"")),
        "{page}"
    );
}

/// Console clients are `active` in SHOW CLIENTS, the one running the command and an idle
/// one alike, as PgBouncer 1.18 lists them (checked live); an idle
/// regular client (transaction mode, no server held) stays `idle` (pgporter's choice, README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_clients_are_listed_as_active() {
    let ops = Ops::new("pool_mode = transaction").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    let _idle_console = ops.stats_user().await;
    let admin = ops.admin().await;
    let clients = rows(&admin, "SHOW CLIENTS").await;
    for user in [&ops.admin, &ops.stats] {
        let state = find(&clients, "user", user).get("state");
        assert_eq!(state, Some("active"), "console client {user}");
    }
    assert_eq!(find(&clients, "user", &ops.user).get("state"), Some("idle"));
}

/// A server connection still logging in is listed by SHOW SERVERS in PgBouncer's state
/// `new` (counted as `sv_login` in SHOW POOLS): where it goes, pgporter's end of the socket,
/// no backend pid yet. Held there by a stopped postmaster (the kernel accepts the TCP
/// connection; nobody answers the startup packet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connection_logging_in_is_listed_as_new() {
    let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
    // The client waits for the login longer than it is held (query_wait_timeout bounds it).
    let ops = Ops::on(pg, "server_connect_timeout = 30\nquery_wait_timeout = 60").await;
    let admin = ops.admin().await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let stopped = crate::faults_server::Continue(postmaster);
    // The first client's login needs a server connection (its welcome parameters).
    let connstring = ops.porter.connstring(&ops.user, "pw", &ops.db);
    let client = tokio::spawn(async move { crate::support::connect(&connstring).await });
    let deadline = tokio::time::Instant::now() + HANG;
    // Listed from the start of the login; local_addr once the socket is open.
    let servers = loop {
        let servers = rows(&admin, "SHOW SERVERS").await;
        let opened = |s: &&tokio_postgres::SimpleQueryRow| {
            s.get("database") == Some(&ops.db) && s.get("local_port").is_some()
        };
        if servers.iter().any(|s| opened(&s)) {
            break servers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no server row while logging in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let port = pg.port().to_string();
    let server = find(&servers, "database", &ops.db);
    for (column, value) in [
        ("type", Some("S")),
        ("user", Some(ops.user.as_str())),
        ("state", Some("new")),
        ("addr", Some("127.0.0.1")),
        ("port", Some(port.as_str())),
        ("local_addr", Some("127.0.0.1")),
        ("link", None),
        ("remote_pid", Some("0")),
    ] {
        assert_eq!(server.get(column), value, "SHOW SERVERS {column}");
    }
    assert_ne!(server.get("local_port"), Some("0"));
    let pools = rows(&admin, "SHOW POOLS").await;
    assert_eq!(find(&pools, "database", &ops.db).get("sv_login"), Some("1"));
    // SHOW SOCKETS names PgBouncer's lists, as it does (seen with PgBouncer 1.18).
    let sockets = rows(&admin, "SHOW SOCKETS").await;
    let mut states: Vec<(&str, &str)> = (sockets.iter())
        .filter_map(|r| Some((r.get("type")?, r.get("state")?)))
        .collect();
    states.sort_unstable();
    assert_eq!(
        states,
        [("C", "cl_active"), ("C", "cl_waiting"), ("S", "sv_login")]
    );
    let dbs = rows(&admin, "SHOW DATABASES").await;
    assert_eq!(
        find(&dbs, "name", &ops.db).get("current_connections"),
        Some("1")
    );
    let (_, page) = get(ops.porter.http_addr(), "/metrics").await;
    let host =
        format!("pgporter_host_server_connections{{host=\"127.0.0.1:{port}\",state=\"login\"}}");
    assert_eq!(sample(&page, &host), Some(1.0), "{page}");

    drop(stopped);
    let client = tokio::time::timeout(HANG, client)
        .await
        .expect("login after SIGCONT")
        .expect("client task");
    client.simple_query("select 1").await.expect("select");
    let servers = rows(&admin, "SHOW SERVERS").await;
    let states: Vec<&str> = (servers.iter())
        .filter(|s| s.get("database") == Some(&ops.db))
        .filter_map(|s| s.get("state"))
        .collect();
    assert_eq!(states, ["active"]);
    drop(client);
    pg.stop_now().await;
}

/// PgBouncer's online restart (`-R`: SUSPEND, then SHOW FDS over the unix socket) has no
/// counterpart in pgporter. SHOW FDS answers with PgBouncer's columns and types and no rows
/// (no sockets to hand over); SUSPEND is refused, saying why and what to do instead. Both
/// need admin_users, as in PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_fds_is_empty_and_suspend_is_refused() {
    let ops = Ops::new("").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    let mut admin = RawClient::login(ops.porter.addr(), &ops.admin, ADMIN_PW, "pgbouncer").await;
    admin.query("SHOW FDS").await;
    let msgs = admin.until_ready().await.expect("an answer");
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"TCZ", "a RowDescription, no rows");
    assert_eq!(
        described(&msgs[0].body),
        [
            ("fd", 23),
            ("task", 25),
            ("user", 25),
            ("database", 25),
            ("addr", 25),
            ("port", 23),
            ("cancel", 20),
            ("link", 23),
            ("client_encoding", 25),
            ("std_strings", 25),
            ("datestyle", 25),
            ("timezone", 25),
            ("password", 25),
            ("scram_client_key", 17),
            ("scram_server_key", 17),
        ]
        .map(|(n, t)| (n.to_string(), t))
    );
    assert!(msgs[1].body.starts_with(b"SHOW\0"));

    let console = ops.admin().await;
    let e = console.simple_query("SUSPEND").await.expect_err("suspend");
    let e = db_error(&e);
    assert_eq!(e.code().code(), "0A000");
    assert!(e.message().contains("online restart"), "{}", e.message());
    assert!(
        e.hint().is_some_and(|h| h.contains("so_reuseport")),
        "{e:?}"
    );
    // Nothing was suspended: the pool still serves, the console still answers.
    app.simple_query("select 1")
        .await
        .expect("served after SUSPEND");
    let state = rows(&console, "SHOW STATE").await;
    assert_eq!(find(&state, "key", "suspended").get("value"), Some("no"));
    let e = console.simple_query("SUSPEND db").await.expect_err("arg");
    assert_eq!(db_error(&e).code().code(), "42601");

    let stats = ops.stats_user().await;
    for cmd in ["SHOW FDS", "SUSPEND"] {
        let e = stats.simple_query(cmd).await.expect_err(cmd);
        let e = db_error(&e);
        assert_eq!(
            (e.code().code(), e.message()),
            ("42501", "admin access needed"),
            "{cmd}"
        );
    }
    // SHOW HELP lists both, where PgBouncer's does, SUSPEND saying it is refused.
    let (help, mut notices) = crate::support::connect_with_messages(&ops.porter.connstring(
        &ops.admin,
        ADMIN_PW,
        "pgbouncer",
    ))
    .await;
    help.simple_query("SHOW HELP").await.expect("help");
    let notice = match notices.recv().await {
        Some(tokio_postgres::AsyncMessage::Notice(n)) => n,
        other => panic!("no notice: {other:?}"),
    };
    // As PgBouncer 1.18 (psql: `NOTICE:  Console usage` then `DETAIL:` and the list): the
    // message is "Console usage", the DETAIL a line per command, each of PgBouncer's in its
    // order (pgporter's lines may say more, and pgporter's own commands come between).
    assert_eq!(
        (notice.code().code(), notice.message()),
        ("00000", "Console usage"),
        "{notice:?}"
    );
    let detail = notice.detail().unwrap_or_default();
    assert!(detail.starts_with('\n'), "{detail:?}");
    let pgbouncer_1_18 = [
        "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION",
        "SHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM",
        "SHOW DNS_HOSTS|DNS_ZONES",
        "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS",
        "SET key = arg",
        "RELOAD",
        "PAUSE [<db>]",
        "RESUME [<db>]",
        "DISABLE <db>",
        "ENABLE <db>",
        "RECONNECT [<db>]",
        "KILL ",
        "SUSPEND",
        "SHUTDOWN",
        "WAIT_CLOSE [<db>]",
    ];
    let mut lines = detail.lines().skip(1);
    for want in pgbouncer_1_18 {
        assert!(
            lines.any(|l| l.strip_prefix('\t').is_some_and(|l| l.starts_with(want))),
            "no line {want:?} (in PgBouncer's order) in {detail:?}"
        );
    }
    for ours in [
        "\tSHOW HOSTS|IDENTITIES",
        "\tKILL_CLIENT <client_id>",
        "\tSUSPEND (refused",
    ] {
        assert!(detail.contains(ours), "{detail:?}");
    }
}

/// RowDescription's columns: (name, type oid).
fn described(body: &[u8]) -> Vec<(String, u32)> {
    let mut rest = &body[2..];
    let mut out = Vec::new();
    while let Some(nul) = rest.iter().position(|&b| b == 0) {
        let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
        let oid = u32::from_be_bytes(rest[nul + 7..nul + 11].try_into().expect("type oid"));
        out.push((name, oid));
        rest = &rest[nul + 19..];
    }
    out
}

/// A released connection running server_reset_query is counted `sv_tested` in SHOW POOLS, as
/// PgBouncer counts it, not `sv_login` (which is for connections logging in, the `new` rows of
/// SHOW SERVERS), and listed in SHOW SERVERS as `tested`, with its backend's pid, as PgBouncer
/// 1.18 lists it (checked live); SHOW SERVERS left it out, so its rows and SHOW POOLS' counts
/// disagreed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_being_reset_is_counted_as_tested() {
    let ops = Ops::new("server_reset_query = select pg_sleep(5)").await;
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("select");
    drop(app);
    let admin = ops.admin().await;
    // Read once the connection has left its client (polled: a fixed 0.3 s after a console
    // login could come before the release, or, with a 2 s reset, after it on a loaded machine).
    let deadline = tokio::time::Instant::now() + HANG;
    let counts = loop {
        let pools = rows(&admin, "SHOW POOLS").await;
        let pool = find(&pools, "database", &ops.db);
        let counts = ["sv_active", "sv_idle", "sv_tested", "sv_login"]
            .map(|c| pool.get(c).unwrap_or_default().to_string());
        if counts[0] == "0" {
            break counts;
        }
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(counts, ["0", "0", "1", "0"]);
    let servers = rows(&admin, "SHOW SERVERS").await;
    let mine: Vec<_> = servers
        .iter()
        .filter(|r| r.get("database") == Some(ops.db.as_str()))
        .map(|r| {
            (
                r.get("state").unwrap_or_default(),
                r.get("remote_pid").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].0, "tested", "{mine:?}");
    assert_ne!(mine[0].1, "0", "{mine:?}");
}

/// PAUSE, DISABLE, ENABLE, KILL, RECONNECT and WAIT_CLOSE of the console's own database get
/// PgBouncer's words (checked live with 1.18: ERROR 08P01 `cannot pause admin db:
/// pgbouncer` ...; 1.18's ENABLE says `disable`, later versions `enable`) under 0A000, not its
/// blanket 08P01, RESUME of it `database pgbouncer is not paused`, with a `*` entry (which would take any other name) or without;
/// they were 3D000 no such database. Nothing is paused or disabled, the console goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_commands_refuse_the_console_database() {
    for extra in ["", "[databases]\n* = host=127.0.0.1 port=9"] {
        let ops = Ops::new(extra).await;
        let console = ops.admin().await;
        for name in ["pgbouncer", "pgporter"] {
            for (command, action) in [
                ("PAUSE", "pause"),
                ("DISABLE", "disable"),
                ("ENABLE", "enable"),
                ("KILL", "kill"),
                ("RECONNECT", "reconnect"),
                ("WAIT_CLOSE", "wait in"),
            ] {
                let cmd = format!("{command} {name}");
                let e = console.simple_query(&cmd).await.expect_err(&cmd);
                let e = db_error(&e);
                assert_eq!(
                    (e.code().code(), e.message()),
                    (
                        "0A000",
                        format!("cannot {action} admin db: {name}").as_str()
                    ),
                    "{extra:?}: {cmd}"
                );
            }
            let e = console
                .simple_query(&format!("RESUME {name}"))
                .await
                .expect_err("resume");
            let e = db_error(&e);
            assert_eq!(
                (e.code().code(), e.message()),
                ("55000", format!("database {name} is not paused").as_str()),
                "{extra:?}"
            );
        }
        let state = rows(&console, "SHOW STATE").await;
        assert_eq!(find(&state, "key", "paused").get("value"), Some("no"));
        let dbs = rows(&console, "SHOW DATABASES").await;
        let row = find(&dbs, "name", "pgbouncer");
        assert_eq!(
            (row.get("paused"), row.get("disabled")),
            (Some("0"), Some("0"))
        );
        let app = ops.client().await;
        app.simple_query("select 1").await.expect("served");
        ops.stats_user().await;
    }
}

/// A console login's startup parameters are checked as PgBouncer 1.18 checks every login's,
/// before authentication (a wrong password is not looked at): `options`, `replication`, a
/// name no setting has and any setting pgporter does not follow itself (on the console there
/// is no server to SET it on) get `FATAL 08P01 unsupported startup parameter: <name>`, as
/// from PgBouncer (checked live: `options=-c work_mem=1MB`, `foo=bar`, `work_mem=1MB`,
/// `search_path=foo`). The ones it follows and ignore_startup_parameters get in. They were
/// taken whatever they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_unsupported_startup_parameters() {
    let ops = Ops::new("ignore_startup_parameters = extra_float_digits").await;
    let addr = ops.porter.addr();
    for (name, value) in [
        ("options", "-c work_mem=1MB"),
        ("foo", "bar"),
        ("work_mem", "1MB"),
        ("search_path", "foo"),
        ("replication", "database"),
        ("bad-name", "x"),
    ] {
        for db in ["pgbouncer", "pgporter"] {
            let mut c = RawClient::connect(addr).await;
            let startup: [(&[u8], &[u8]); 3] = [
                (b"user", ops.admin.as_bytes()),
                (b"database", db.as_bytes()),
                (name.as_bytes(), value.as_bytes()),
            ];
            c.send(&crate::support::raw::startup_packet(&startup)).await;
            let m = c.read_msg().await.expect("an answer to the startup packet");
            assert_eq!(
                (
                    m.error_field(b'S').as_deref(),
                    m.sqlstate().as_deref(),
                    m.error_field(b'M')
                ),
                (
                    Some("FATAL"),
                    Some("08P01"),
                    Some(format!("unsupported startup parameter: {name}"))
                ),
                "{db}: {name}={value}"
            );
            assert!(c.read_msg().await.is_none(), "{db}: {name}: then EOF");
        }
    }
    let params = [
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("IntervalStyle", "iso_8601"),
        ("application_name", "console"),
        ("extra_float_digits", "2"),
        ("replication", "off"),
    ];
    let (mut c, _) = RawClient::login_with(addr, &ops.admin, ADMIN_PW, "pgbouncer", &params).await;
    let (_, status, error) = c.rows("SHOW VERSION").await;
    assert_eq!((status, error), (b'I', None));
}

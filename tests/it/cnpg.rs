//! CloudNativePG's Pooler runs on pgporter: the pgbouncer.ini, pg_hba.conf and certificates
//! its instance manager generates, unchanged but for paths and ports (see `support::cnpg`),
//! in front of a cluster set up as the operator sets it up. People log in with SCRAM through
//! `auth_query` (CloudNativePG's SECURITY DEFINER `public.user_search`, run by
//! `cnpg_pooler_pgbouncer`, which logs in to PostgreSQL with its TLS client certificate);
//! the instance manager's own traffic on the admin console works: the SHOW commands its
//! exporter scrapes, PAUSE / RESUME, and RELOAD after it rewrote the files.

use std::process::Command;
use std::time::Duration;

use crate::support::checklist::{e2e_file, run_checklist};
use crate::support::cmd;
use crate::support::cnpg::{pgbouncer_ini, show, Pooler, APP, AUTH_USER};
use crate::support::skip::python;
use crate::support::{connect, simple_value, HANG, SHOW_POOLS};

/// The SHOW LISTS rows the exporter turns into cnpg_pgbouncer_lists_* gauges.
const LISTS: [&str; 12] = [
    "databases",
    "users",
    "pools",
    "free_clients",
    "used_clients",
    "login_clients",
    "free_servers",
    "used_servers",
    "dns_names",
    "dns_zones",
    "dns_queries",
    "dns_pending",
];

/// The SHOW STATS columns the exporter reads (PgBouncer 1.23+ names).
const STATS: [&str; 17] = [
    "database",
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_configuration_serves_scram_logins_through_user_search() {
    let pooler = Pooler::deploy().await;
    let (user, password) = APP;
    let verify = format!(
        "sslmode=verify-full sslrootcert={}",
        pooler.pg.ca_file().display()
    );

    // psql over TLS (the cluster's server certificate, as the Pooler serves it); the server
    // leg is TLS too, and pgporter logged in as the auth_user with its certificate.
    let out = pooler
        .psql(
            &pooler.connstring(user, password, user, &verify),
            "SELECT current_user || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await;
    assert_eq!(cmd::success(&out, "psql as app").trim(), "app true");
    let su = pooler.pg.superuser_client().await;
    let auth_leg = simple_value(
        &su,
        &format!(
            "SELECT s.ssl || ' ' || s.client_dn FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.usename = '{AUTH_USER}' \
             AND a.datname = 'postgres'"
        ),
    )
    .await
    .expect("the auth_user's connection to auth_dbname postgres");
    assert!(
        auth_leg.starts_with("true ") && auth_leg.contains(&format!("CN={AUTH_USER}")),
        "{auth_leg}"
    );

    // libpq's sslmode=require (the butler's) and the `options` and extra_float_digits
    // startup parameters it may send, which ignore_startup_parameters drops as PgBouncer does.
    let out = pooler
        .psql(
            &pooler.connstring(user, password, "postgres", "sslmode=require"),
            "SHOW statement_timeout",
            &[(
                "PGOPTIONS",
                "-c statement_timeout=5s -c extra_float_digits=2",
            )],
        )
        .await;
    assert_eq!(cmd::success(&out, "psql with PGOPTIONS").trim(), "0");

    // Refused: a wrong password, the auth_user (no password: certificate only), a user
    // PostgreSQL does not know; all as a wrong password (28P01).
    for (who, pw) in [(user, "wrong"), (AUTH_USER, "guess"), ("nobody", "x")] {
        let out = pooler
            .psql(
                &pooler.connstring(who, pw, "postgres", "sslmode=require"),
                "SELECT 1",
                &[],
            )
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(&format!(
                    "password authentication failed for user \"{who}\""
                )),
            "{who}: {err}"
        );
    }

    // SQLAlchemy 2 engines with psycopg2 and psycopg 3, as the butler builds them.
    if let Some(python) = python("cnpg_pooler.py (SQLAlchemy through the CNPG pooler)") {
        let mut cmd = Command::new(python);
        cmd.arg(e2e_file("cnpg_pooler.py"))
            .args(["127.0.0.1", &pooler.porter.port().to_string()])
            .args([user, password, user]);
        run_checklist(cmd, "cnpg_pooler.py", Duration::from_secs(120)).await;
    }

    // What the exporter scrapes, over the unix socket as `pgbouncer` (no password): first as
    // pgx opens the connection (its startup parameters, the simple-protocol preconditions).
    if let Some(python) = python("cnpg_pooler.py console (the exporter's connection)") {
        let mut cmd = Command::new(python);
        cmd.arg(e2e_file("cnpg_pooler.py"))
            .arg("console")
            .arg(pooler.porter.dir())
            .arg(pooler.porter.port().to_string());
        run_checklist(cmd, "cnpg_pooler.py console", Duration::from_secs(60)).await;
    }
    let console = pooler.console().await;
    let (columns, rows) = show(&console, "SHOW LISTS;").await;
    assert_eq!(columns, ["list", "items"]);
    for name in LISTS {
        let row = rows
            .iter()
            .find(|r| r[0].as_deref() == Some(name))
            .unwrap_or_else(|| panic!("SHOW LISTS has no {name}: {rows:?}"));
        let items = row[1].as_deref().unwrap_or_default();
        assert!(items.parse::<i64>().is_ok(), "{name}: {items:?}");
    }
    let (columns, rows) = show(&console, "SHOW POOLS;").await;
    assert_eq!(columns, SHOW_POOLS);
    for (db, pool_user) in [(user, user), ("postgres", AUTH_USER)] {
        let row = rows
            .iter()
            .find(|r| r[0].as_deref() == Some(db) && r[1].as_deref() == Some(pool_user))
            .unwrap_or_else(|| panic!("SHOW POOLS has no {db}/{pool_user}: {rows:?}"));
        for (i, value) in row.iter().enumerate().take(15).skip(2) {
            let value = value.as_deref().unwrap_or_default();
            assert!(value.parse::<i64>().is_ok(), "{}: {value:?}", columns[i]);
        }
        assert_eq!(row[15].as_deref(), Some("session"));
    }
    let (columns, rows) = show(&console, "SHOW STATS;").await;
    for name in STATS {
        assert!(columns.iter().any(|c| c == name), "{name}: {columns:?}");
    }
    let app = rows
        .iter()
        .find(|r| r[0].as_deref() == Some(user))
        .unwrap_or_else(|| panic!("SHOW STATS has no {user}: {rows:?}"));
    let xacts = app[columns
        .iter()
        .position(|c| c == "total_xact_count")
        .unwrap_or(0)]
    .as_deref()
    .and_then(|v| v.parse::<i64>().ok())
    .unwrap_or(0);
    assert!(xacts >= 1, "{app:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_manager_pauses_resumes_and_reloads_rewritten_files() {
    let pooler = Pooler::deploy().await;
    let (user, password) = APP;
    let plain = pooler.connstring(user, password, user, "sslmode=disable");
    let console = pooler.console().await;

    // PAUSE (the Pooler's spec.pgbouncer.paused): in session mode it returns once the
    // session holding a server connection has left; a client arriving meanwhile waits.
    let holder = connect(&plain).await;
    assert_eq!(
        simple_value(&holder, "SELECT 1").await.as_deref(),
        Some("1")
    );
    let pauser = pooler.console().await;
    let pause = tokio::spawn(async move {
        pauser
            .simple_query("PAUSE")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pause.is_finished(), "PAUSE returned with a session open");
    let (_, state) = show(&console, "SHOW STATE").await;
    assert!(
        state.contains(&vec![Some("paused".into()), Some("yes".into())]),
        "{state:?}"
    );
    let waiter = {
        let plain = plain.clone();
        tokio::spawn(async move {
            let client = connect(&plain).await;
            simple_value(&client, "SELECT 'served'").await
        })
    };
    drop(holder);
    tokio::time::timeout(HANG, pause)
        .await
        .expect("PAUSE did not return once the session left")
        .expect("PAUSE task")
        .expect("PAUSE");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a client was served while paused");
    show(&console, "RESUME").await;
    let served = tokio::time::timeout(HANG, waiter)
        .await
        .expect("the waiting client was not served after RESUME")
        .expect("waiter task");
    assert_eq!(served.as_deref(), Some("served"));

    // The certificate pgporter's server connections present (all of them; PostgreSQL checks
    // it where pg_hba.conf says `cert`), the newest one's, before the renewal. (PAUSE closed
    // the auth_user's idle connection, as PgBouncer's PAUSE closes idle servers.)
    let su = pooler.pg.superuser_client().await;
    let serial_sql = |who: &str| {
        format!(
            "SELECT s.client_serial::text FROM pg_stat_ssl s JOIN pg_stat_activity a \
             USING (pid) WHERE a.usename = '{who}' ORDER BY a.backend_start DESC LIMIT 1"
        )
    };
    let before = simple_value(&su, &serial_sql(user)).await.expect("serial");

    // The instance manager rewrites the files it changed (each written to a temp file and
    // renamed over, mode 0600) and sends RELOAD: a new pool mode and pool size (parameters
    // kept sorted), and a renewed certificate for the auth_user.
    let ini = pgbouncer_ini(pooler.configs(), pooler.pg.port(), "transaction")
        .replace(
            "client_tls_ca_file",
            "default_pool_size = 10\nclient_tls_ca_file",
        )
        .replace("{dir}", &pooler.porter.dir().display().to_string());
    let (cert, key) = pooler.renewed_auth_user_cert();
    let auth_dir = pooler.configs().join("authUser");
    for (path, text) in [
        (pooler.porter.ini_path(), ini.into_bytes()),
        (auth_dir.join("tls.crt"), std::fs::read(cert).expect("cert")),
        (auth_dir.join("tls.key"), std::fs::read(key).expect("key")),
    ] {
        write_atomic(&path, &text);
    }
    show(&console, "RELOAD").await;
    let (columns, config) = show(&console, "SHOW CONFIG").await;
    let value = |key: &str| {
        config
            .iter()
            .find(|r| r[0].as_deref() == Some(key))
            .and_then(|r| r[columns.iter().position(|c| c == "value").unwrap_or(1)].clone())
    };
    assert_eq!(value("pool_mode").as_deref(), Some("transaction"));
    assert_eq!(value("default_pool_size").as_deref(), Some("10"));

    // A person created since, unknown to auth_query's cache: looked up over a server
    // connection made with the renewed certificate.
    pooler.pg.create_role("bob", "bob-secret").await;
    let bob = connect(&pooler.connstring("bob", "bob-secret", "postgres", "sslmode=disable")).await;
    assert_eq!(
        simple_value(&bob, "SELECT current_user").await.as_deref(),
        Some("bob")
    );
    let after = simple_value(&su, &serial_sql(AUTH_USER))
        .await
        .expect("auth_user serial");
    assert_ne!(
        before, after,
        "the auth_user still logs in with the old certificate"
    );
    let (_, pools) = show(&console, "SHOW POOLS").await;
    let bob_pool = pools
        .iter()
        .find(|r| r[0].as_deref() == Some("postgres") && r[1].as_deref() == Some("bob"))
        .unwrap_or_else(|| panic!("no postgres/bob pool: {pools:?}"));
    assert_eq!(bob_pool[15].as_deref(), Some("transaction"));
}

/// Write `path` as the instance manager does (fileutils.WriteFileAtomic): a temp file in the
/// same directory, mode 0600, renamed over the old one.
fn write_atomic(path: &std::path::Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp-cnpg");
    std::fs::write(&tmp, contents).expect("writing the temp file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("renaming over");
}

/// CloudNativePG's `[databases]` is `*` alone: the console's per-database commands must reach
/// a database no client has used yet (or whose pool was freed), as PgBouncer registers the
/// auto-database for PAUSE, KILL, DISABLE, RECONNECT and WAIT_CLOSE; RESUME and ENABLE then
/// find it. pgporter answered `no such database` unless the database had a pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_commands_reach_databases_behind_the_star_entry() {
    let pooler = Pooler::deploy().await;
    let (user, password) = APP;
    let console = pooler.console().await;

    show(&console, "PAUSE app").await;
    let (columns, dbs) = show(&console, "SHOW DATABASES").await;
    let paused = columns.iter().position(|c| c == "paused").unwrap_or(0);
    let app = dbs
        .iter()
        .find(|r| r[0].as_deref() == Some(user))
        .unwrap_or_else(|| panic!("SHOW DATABASES does not list the paused app: {dbs:?}"));
    assert_eq!(app[paused].as_deref(), Some("1"), "{app:?}");
    let plain = pooler.connstring(user, password, user, "sslmode=disable");
    let waiter = tokio::spawn(async move {
        let client = connect(&plain).await;
        simple_value(&client, "SELECT 'served'").await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "a client of the paused app was served"
    );
    show(&console, "RESUME app").await;
    let served = tokio::time::timeout(HANG, waiter)
        .await
        .expect("the client was not served after RESUME app")
        .expect("waiter task");
    assert_eq!(served.as_deref(), Some("served"));

    // DISABLE a database before its first client; ENABLE finds it again.
    pooler.pg.create_database("archive", user).await;
    show(&console, "DISABLE archive").await;
    let archive = pooler.connstring(user, password, "archive", "sslmode=disable");
    let refused = tokio_postgres::connect(&archive, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a client of the disabled archive logged in");
    assert_eq!(crate::support::db_error(&refused).code().code(), "55000");
    show(&console, "ENABLE archive").await;
    let client = connect(&archive).await;
    assert_eq!(
        simple_value(&client, "SELECT 1").await.as_deref(),
        Some("1")
    );
    drop(client);

    for cmd in ["RECONNECT reports", "WAIT_CLOSE reports", "KILL reports"] {
        show(&console, cmd).await;
    }
    show(&console, "RESUME reports").await;
    // RECONNECT and WAIT_CLOSE register the database too, as PgBouncer 1.18's (checked live):
    // SHOW DATABASES lists it, ENABLE finds it, RESUME says it is not paused.
    show(&console, "RECONNECT billing").await;
    show(&console, "WAIT_CLOSE ledger").await;
    let (_, dbs) = show(&console, "SHOW DATABASES").await;
    for name in ["billing", "ledger"] {
        assert!(
            dbs.iter().any(|r| r[0].as_deref() == Some(name)),
            "SHOW DATABASES does not list {name}: {dbs:?}"
        );
    }
    show(&console, "ENABLE billing").await;
    let err = console
        .simple_query("RESUME ledger")
        .await
        .map(|_| ())
        .expect_err("RESUME of a database not paused succeeded");
    let e = crate::support::db_error(&err);
    assert_eq!(e.message(), "database ledger is not paused", "{e:?}");
    // Never named before (RESUME registers nothing): refused. The console's own name is
    // PgBouncer's `cannot pause admin db` (see admin_console).
    for (cmd, code) in [
        ("RESUME never_named", "3D000"),
        ("PAUSE pgbouncer", "0A000"),
    ] {
        let err = console
            .simple_query(cmd)
            .await
            .err()
            .unwrap_or_else(|| panic!("{cmd} succeeded"));
        let e = crate::support::db_error(&err);
        assert_eq!(e.code().code(), code, "{cmd}: {}", e.message());
    }
}

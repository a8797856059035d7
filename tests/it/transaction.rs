//! Transaction pool mode: a server connection goes back to the pool at the end of each
//! transaction, except while the client holds it inside a transaction or has a named prepared
//! statement open; what a client SETs of the tracked parameters follows the client.

use std::process::Command;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::support::checks::backend_running;
use crate::support::cmd::{e2e_script, run, success};
use crate::support::shared_account::SharedAccount;
use crate::support::skip::python;
use crate::support::{Fixture, Spec};

/// One server connection, transaction mode, a short query_wait_timeout; the fixture's user
/// is an admin too (SHOW POOLS).
async fn fixture(extra: &str) -> Fixture {
    one_connection("transaction", extra).await
}

/// One server connection in pool mode `mode`, a short query_wait_timeout; the fixture's user
/// is an admin too (SHOW POOLS).
pub(crate) async fn one_connection(mode: &str, extra: &str) -> Fixture {
    Fixture::custom(|n| Spec {
        pool_size: 1,
        ..Spec::new(format!(
            "pool_mode = {mode}\nquery_wait_timeout = 2\nadmin_users = {}\n{extra}",
            n.user
        ))
    })
    .await
}

/// The first column of the first row of a simple query.
pub(crate) async fn value(client: &Client, sql: &str) -> String {
    crate::support::simple_value(client, sql)
        .await
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

async fn backend_pid(client: &Client) -> String {
    value(client, "select pg_backend_pid()").await
}

/// A second client's request, while the only server connection is kept: it waits out
/// query_wait_timeout.
async fn held_back(fx: &Fixture) {
    let other = fx.connect().await;
    let err = other
        .simple_query("select 1")
        .await
        .expect_err("the only server connection is taken");
    let message = &crate::support::db_error(&err).message();
    assert!(message.starts_with("query_wait_timeout"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_take_turns_on_one_server_connection() {
    let fx = fixture("").await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    let pid = backend_pid(&a).await;
    for _ in 0..3 {
        assert_eq!(backend_pid(&b).await, pid);
        assert_eq!(backend_pid(&a).await, pid);
    }
    // Extended protocol too (tokio-postgres: a named statement, closed once its last Row is
    // dropped).
    let sum: i32 = b
        .query_one("select $1::int4 + 1", &[&41i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 42);
    assert_eq!(backend_pid(&a).await, pid);

    assert_eq!(fx.shown_pool_mode().await.as_deref(), Some("transaction"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_inside_a_transaction_keeps_its_connection() {
    let fx = fixture("").await;
    let a = fx.connect().await;
    a.batch_execute("create table t (x int); begin; insert into t values (1)")
        .await
        .unwrap();
    held_back(&fx).await;
    a.batch_execute("commit").await.unwrap();
    assert_eq!(
        value(&fx.connect().await, "select count(*) from t").await,
        "1"
    );

    // A failed transaction ('E') holds it as well, until the client ends it.
    a.batch_execute("begin").await.unwrap();
    assert!(a.batch_execute("select 1/0").await.is_err());
    held_back(&fx).await;
    a.batch_execute("rollback").await.unwrap();
    assert_eq!(value(&fx.connect().await, "select 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_prepared_statement_keeps_the_connection_until_closed() {
    // Without max_prepared_statements (see transaction_prepared.rs for with).
    let fx = fixture("max_prepared_statements = 0").await;
    let a = fx.connect().await;
    let stmt = a.prepare("select $1::int8 * 2").await.unwrap();
    held_back(&fx).await;
    for i in 0..3i64 {
        let row = a.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), i * 2);
    }
    // tokio-postgres closes a dropped statement (Close + Sync): the connection goes back.
    drop(stmt);
    assert_eq!(value(&fx.connect().await, "select 3").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_client_sets_follows_the_client() {
    let fx = fixture("").await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    let default_tz = value(&b, "show timezone").await;
    a.batch_execute("set timezone = 'Asia/Tokyo'; set application_name = 'alpha'")
        .await
        .unwrap();
    // b gets the same server connection, as it was welcomed.
    assert_eq!(value(&b, "show timezone").await, default_tz);
    assert_eq!(value(&b, "show application_name").await, "");
    assert_eq!(value(&a, "show timezone").await, "Asia/Tokyo");
    assert_eq!(value(&a, "show application_name").await, "alpha");
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_copy_and_errors_between_turns() {
    let fx = fixture("").await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    // A cancel reaches the server connection the client holds now.
    let token = a.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = a.simple_query("select pg_sleep(30)").await;
        (a, r)
    });
    backend_running(&fx, "pg_sleep(30)").await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (a, r) = sleeper.await.unwrap();
    assert_eq!(r.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert_eq!(value(&b, "select 1").await, "1");

    // COPY both ways, then the other client.
    a.batch_execute("create table c (x int)").await.unwrap();
    let sink = a.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(value(&b, "select sum(x) from c").await, "3");
    let out = a.copy_out("copy c to stdout").await.unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(out).await.unwrap();
    assert_eq!(chunks.concat(), b"1\n2\n");
    assert_eq!(value(&b, "select 4").await, "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_clients_outnumber_server_connections() {
    let fx = fixture("").await;
    let mut init = Command::new(fx.cluster.bin("pgbench"));
    init.args(["-i", "-s", "1", "-q"])
        .arg(fx.cluster.local_connstring(&fx.user, &fx.db));
    success(&run(init, Duration::from_secs(120)).await, "pgbench -i");
    // -M prepared: each client's statements are parsed on the one server connection once.
    for mode in ["simple", "extended", "prepared"] {
        let mut cmd = Command::new(fx.cluster.bin("pgbench"));
        // pgbench 15 prepares each statement when first used, with a blocking PQprepare:
        // its thread's other clients wait meanwhile, so one inside a transaction (holding the
        // one server connection) would never be served. One thread per client.
        let threads = if mode == "prepared" { "6" } else { "2" };
        cmd.args(["-c", "6", "-j", threads, "-t", "40", "-M", mode])
            .args(["-h", "127.0.0.1", "-p", &fx.porter.port().to_string()])
            .args(["-U", &fx.user])
            .arg(&fx.db)
            .env("PGPASSWORD", &fx.password)
            .env("PGSSLMODE", "disable");
        let out = success(
            &run(cmd, Duration::from_secs(120)).await,
            &format!("pgbench -M {mode}"),
        );
        assert!(
            out.contains("number of transactions actually processed: 240/240"),
            "-M {mode}: 6 clients on 1 server connection:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_with_their_prepared_statements() {
    let Some(python) = python("transaction mode with Python drivers") else {
        return;
    };
    // Two connections per driver: without max_prepared_statements each holds its server
    // connection once it prepares; with it, they share one.
    for (pool_size, extra) in [(2, "max_prepared_statements = 0"), (1, "")] {
        python_drivers(&python, pool_size, extra).await;
    }
}

async fn python_drivers(python: &std::ffi::OsStr, pool_size: u32, extra: &str) {
    let fx = Fixture::custom(|_| Spec {
        pool_size,
        ..Spec::new(format!(
            "pool_mode = transaction\nquery_wait_timeout = 10\n{extra}"
        ))
    })
    .await;
    e2e_script(python, "transaction_mode.py", &fx, "transaction mode: ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transaction_is_tagged_with_its_own_person() {
    // alice and bob through the shared account, one server connection between them: each
    // transaction runs on a connection tagged for the person who sent it.
    let sa = SharedAccount::new(1, "pool_mode = transaction\nquery_wait_timeout = 5").await;
    let (alice, bob) = (sa.connect(&sa.alice).await, sa.connect(&sa.bob).await);
    for round in 0..2 {
        alice
            .batch_execute(&format!("insert into datasets(name) values ('a{round}')"))
            .await
            .unwrap();
        bob.batch_execute(&format!(
            "begin; insert into datasets(name) values ('b{round}'); commit"
        ))
        .await
        .unwrap();
    }
    let (a, b) = (Some(sa.alice.clone()), Some(sa.bob.clone()));
    assert_eq!(
        sa.change_log().await,
        vec![
            (a.clone(), "INSERT".into(), "a0".into()),
            (b.clone(), "INSERT".into(), "b0".into()),
            (a, "INSERT".into(), "a1".into()),
            (b, "INSERT".into(), "b1".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_into_transaction_mode_replaces_the_pool() {
    let fx = Fixture::new(1).await;
    let a = fx.connect().await;
    let old_pid = backend_pid(&a).await;
    held_back(&fx).await;
    (fx.porter)
        .reload_edited(|ini| ini.replace("pool_mode = session\n", "pool_mode = transaction\n"))
        .await;
    // The session-mode session keeps its connection (never reset for transaction mode's
    // clients); the new pool's clients take turns on a fresh one once it is closed.
    assert_eq!(backend_pid(&a).await, old_pid);
    drop(a);
    let (b, c) = (fx.connect().await, fx.connect().await);
    let pid = backend_pid(&b).await;
    assert_ne!(pid, old_pid);
    assert_eq!(backend_pid(&c).await, pid);
    assert_eq!(backend_pid(&b).await, pid);
}

/// A reload takes `user=` out of the entry: a transaction-mode session served as that forced
/// user is not served as it any longer; its next transaction ends it with `08P01 database
/// configuration changed` (it went on as the forced user: the pool, looking the same, was not
/// replaced, and a replaced one was succeeded by the forced user's pool). A new session goes
/// in as itself. (PgBouncer 1.18 keeps the removed forced user for every client, held or new:
/// `WARNING losing forced user not supported, keeping old setting`, checked live.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_a_removed_forced_user_is_not_served_as_it() {
    use crate::support::fixture::{userlist, PASSWORD};
    let cluster = crate::support::cluster().await;
    let person = cluster.unique_name("w");
    cluster.create_role(&person, "w-pw").await;
    let fx = Fixture::custom(|n| Spec {
        userlist: Some(userlist(&[(&n.user, PASSWORD), (&person, "w-pw")])),
        ..Spec::new("pool_mode = transaction")
    })
    .await;
    let (db, forced) = (fx.db.clone(), fx.user.clone());
    let plain = format!("dbname={db}\n");
    let with_user = format!("dbname={db} user={forced}\n");
    (fx.porter)
        .reload_edited(|ini| ini.replace(&plain, &with_user))
        .await;
    let connstring = fx.porter.connstring(&person, "w-pw", &db);
    let held = crate::support::connect(&connstring).await;
    assert_eq!(value(&held, "select current_user").await, forced);
    (fx.porter)
        .reload_edited(|ini| ini.replace(&with_user, &plain))
        .await;
    let e = held
        .simple_query("select current_user")
        .await
        .expect_err("the session went on as the removed forced user");
    let e = crate::support::db_error(&e);
    assert_eq!(e.code(), &SqlState::PROTOCOL_VIOLATION, "{e:?}");
    assert_eq!(e.message(), "database configuration changed");
    let fresh = crate::support::connect(&connstring).await;
    assert_eq!(value(&fresh, "select current_user").await, person);
}

/// SIGINT (SHUTDOWN WAIT_FOR_SERVERS) as in PgBouncer: running transactions finish, no new
/// one starts (57P01), and the process exits once no server connection is in use, without
/// waiting for idle clients to leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_shutdown_waits_for_transactions_not_for_idle_clients() {
    let mut fx = fixture("").await;
    let idle = fx.connect().await;
    assert_eq!(value(&idle, "select 1").await, "1");
    let busy = fx.connect().await;
    busy.batch_execute("begin; select 1").await.unwrap();
    fx.porter.control(pgporter::Control::Shutdown(
        pgporter::shutdown::ShutdownMode::WaitForServers,
    ));
    // The request is applied by a task of its own: wait until it is in force (a sleep let
    // the next transaction in first on a loaded machine).
    let deadline = tokio::time::Instant::now() + crate::support::HANG;
    while fx.porter.shared().lifecycle.mode().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shutdown never took"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = idle
        .simple_query("select 2")
        .await
        .expect_err("no new transaction");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    busy.batch_execute("select 3; commit")
        .await
        .expect("the running transaction finishes");
    fx.porter.wait_stopped(Duration::from_secs(10)).await;
}

/// track_extra_parameters: a reported parameter beyond PgBouncer's own list (here
/// `default_transaction_read_only`, which PostgreSQL 14+ reports) follows the client that SET
/// it, and the next client on the connection gets the login value back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_tracked_parameters_follow_their_client() {
    let fx = fixture("track_extra_parameters = default_transaction_read_only").await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    let pid = backend_pid(&a).await;
    a.batch_execute("set default_transaction_read_only = on")
        .await
        .unwrap();
    assert_eq!(backend_pid(&b).await, pid, "one server connection");
    assert_eq!(value(&b, "show default_transaction_read_only").await, "off");
    assert_eq!(value(&a, "show default_transaction_read_only").await, "on");
    assert_eq!(value(&b, "show default_transaction_read_only").await, "off");
}

/// A track_extra_parameters name the server does not report (PostgreSQL 15 does not report
/// search_path) cannot be tracked: a client's startup value is still set back for the next
/// client, as any untracked startup parameter's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreported_extra_tracked_parameter_does_not_leak() {
    use crate::support::raw::RawClient;
    let fx = fixture("track_extra_parameters = search_path").await;
    let (mut a, _) = RawClient::login_with(
        fx.porter.addr(),
        &fx.user,
        &fx.password,
        &fx.db,
        &[("search_path", "pg_catalog")],
    )
    .await;
    assert_eq!(a.rows("show search_path").await.0, ["pg_catalog"]);
    let b = fx.connect().await;
    assert_eq!(value(&b, "show search_path").await, "\"$user\", public");
}

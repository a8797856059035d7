//! Faults on the PostgreSQL side, made by a real server: backends terminated mid-query and
//! mid-COPY, a restart under load, a stalled postmaster and a stalled backend. After each, the
//! pool is back to its baseline and the next client gets a clean server connection.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt as _, StreamExt as _};
use tokio::time::{timeout, Instant};
use tokio_postgres::NoTls;

use crate::support::checks::{
    assert_clean, backend_running, pool_at_baseline, server_conns_at_most,
};
use crate::support::{Fixture, PgCluster, HANG};

async fn terminate(fx: &Fixture, pid: i32) {
    fx.superuser()
        .await
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .expect("pg_terminate_backend");
}

pub(crate) fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("running kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// A stopped process (`kill -STOP`) continued however the test ends: a stopped postmaster
/// outlives a failed assertion.
pub(crate) struct Continue(pub(crate) i32);

impl Drop for Continue {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// Everything that must hold after a fault: baseline pool, bounded backends, clean next client.
async fn recovered(fx: &Fixture, size: u32) {
    pool_at_baseline(fx, size).await;
    server_conns_at_most(fx, i64::from(size)).await;
    let next = fx.connect().await;
    assert_clean(&next).await;
    drop(next);
    pool_at_baseline(fx, size).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_query() {
    let fx = Fixture::new(2).await;
    let client = fx.connect().await;
    let query = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
    let pid = backend_running(&fx, "pg_sleep(60)").await;
    terminate(&fx, pid).await;
    let outcome = timeout(HANG, query).await.expect("client hung").unwrap();
    let err = outcome.expect_err("the query survived pg_terminate_backend");
    if let Some(db) = err.as_db_error() {
        // PostgreSQL's own FATAL, relayed, or pgporter's report of the lost connection.
        assert!(
            ["57P01", "08006"].contains(&db.code().code()),
            "unexpected error {db:?}"
        );
    }
    recovered(&fx, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_copy_in() {
    let fx = Fixture::new(2).await;
    fx.direct()
        .await
        .batch_execute("create table t (x int)")
        .await
        .unwrap();
    let client = fx.connect().await;
    let sink = client.copy_in("copy t from stdin").await.expect("copy in");
    pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\n2\n3\n")).await.unwrap();
    sink.flush().await.unwrap();
    let pid = backend_running(&fx, "copy t from stdin").await;
    terminate(&fx, pid).await;
    let finished = timeout(HANG, async {
        // More data, then the end: one of them must fail.
        let _ = sink.send(Bytes::from_static(b"4\n")).await;
        sink.finish().await
    })
    .await
    .expect("COPY hung after its backend was terminated");
    assert!(finished.is_err(), "COPY succeeded on a terminated backend");
    let rows: i64 = fx
        .direct()
        .await
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    recovered(&fx, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_copy_out() {
    let fx = Fixture::new(2).await;
    let client = fx.connect().await;
    let stream = client
        .copy_out("copy (select g, repeat('x', 100) from generate_series(1, 50000000) g) to stdout")
        .await
        .expect("copy out");
    pin_mut!(stream);
    stream.next().await.expect("first chunk").expect("data");
    let pid = backend_running(&fx, "generate_series(1, 50000000)").await;
    terminate(&fx, pid).await;
    let end = timeout(HANG, async {
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok::<_, tokio_postgres::Error>(())
    })
    .await
    .expect("COPY OUT hung after its backend was terminated");
    assert!(end.is_err(), "COPY OUT completed on a terminated backend");
    recovered(&fx, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_backend_and_vanished_client_free_the_slot() {
    let fx = Fixture::new(1).await;
    let (client, conn) = tokio_postgres::connect(&fx.connstring(), NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    client.simple_query("select 1").await.unwrap();
    let pid: i32 = fx
        .superuser()
        .await
        .query_one(
            "select pid from pg_stat_activity where usename = $1",
            &[&fx.user],
        )
        .await
        .unwrap()
        .get(0);
    signal(pid, "-STOP");
    let stuck = tokio::spawn(async move { client.simple_query("select 2").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn_task.abort();
    let _ = stuck.await;
    // The only slot belonged to the stalled backend; the next client must still be served.
    let served = timeout(HANG, async {
        let c = fx.connect().await;
        c.simple_query("select 3").await.map(|_| ())
    })
    .await;
    signal(pid, "-CONT");
    served
        .expect("next client not served while the old backend is stalled")
        .expect("next client's query");
    recovered(&fx, 1).await;
}

/// The pid of the backend serving a fresh client of `fx` (which leaves at once), with
/// `timeout` to answer.
pub(crate) async fn served_by(fx: &Fixture) -> i32 {
    let c = timeout(HANG, fx.connect()).await.expect("login hung");
    let row = timeout(HANG, c.query_one("select pg_backend_pid()", &[]))
        .await
        .expect("the query hung (handed a dead server connection?)")
        .unwrap();
    row.get(0)
}

/// server_check_query (PgBouncer's): a connection idle past server_check_delay is tested
/// before a client gets it. A backend that stopped answering while idle (SIGSTOP: a host
/// gone without closing its sockets) is closed and the client served by a new one; with it
/// it was handed out and the client hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backend_that_stopped_answering_fails_the_check() {
    // The check gives up (1 s) before the client's wait does (query_wait_timeout = 2).
    let fx = Fixture::with_settings(2, "server_check_delay = 0\nserver_reset_timeout = 1").await;
    let pid = served_by(&fx).await;
    pool_at_baseline(&fx, 2).await;
    signal(pid, "-STOP");
    let next = {
        let client = served_by(&fx);
        pin_mut!(client);
        // While the check waits on the stopped backend, SHOW POOLS counts it sv_tested.
        let tested = async {
            while !fx.porter.pool_counts().iter().any(|(_, c)| c.tested == 1) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            () = tested => {}
            _ = &mut client => panic!("served before the check was seen"),
        }
        timeout(HANG, client).await
    };
    signal(pid, "-CONT");
    let next = next.expect("the next client hung on the stopped backend");
    assert_ne!(next, pid, "the stopped backend was handed out");
    recovered(&fx, 2).await;
}

/// query_wait_timeout bounds the checks too: with every idle connection on a host that
/// stopped answering, a client waited server_reset_timeout for each in turn (75 s for five
/// under query_wait_timeout = 10; here 3 x 30 s, past HANG); it gets PgBouncer's
/// `query_wait_timeout` when its wait is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_stopped_backends_end_at_query_wait_timeout() {
    let fx = Fixture::with_settings(
        3,
        "server_check_delay = 0\nserver_reset_timeout = 30\nquery_wait_timeout = 2",
    )
    .await;
    let clients = futures_util::future::join_all((0..3).map(|_| fx.connect())).await;
    let mut pids = Vec::new();
    for c in &clients {
        let row = c.query_one("select pg_backend_pid()", &[]).await.unwrap();
        pids.push(row.get::<_, i32>(0));
    }
    drop(clients);
    pool_at_baseline(&fx, 3).await;
    pids.iter().for_each(|pid| signal(*pid, "-STOP"));
    let outcome = timeout(HANG, async {
        let c = fx.connect().await;
        c.simple_query("select 1").await.map(|_| ())
    })
    .await;
    pids.iter().for_each(|pid| signal(*pid, "-CONT"));
    let err = outcome
        .expect("the client waited out one check after another")
        .expect_err("served by a stopped backend");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "08P01", "{db:?}");
    assert_eq!(
        db.message(),
        "query_wait_timeout (held back by server_check_query)"
    );
    recovered(&fx, 3).await;
}

/// The check runs only past the delay: with the default 30 s an idle connection is reused
/// as is; with a delay of 0 and a failing check query every idle connection is closed and
/// each client gets a new one (no error reaches the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_runs_only_past_the_delay() {
    let fx = Fixture::with_settings(1, "server_check_query = select 1/0").await;
    let first = served_by(&fx).await;
    pool_at_baseline(&fx, 1).await;
    assert_eq!(
        served_by(&fx).await,
        first,
        "30 s not passed: reused unchecked"
    );
    pool_at_baseline(&fx, 1).await;

    let strict =
        Fixture::with_settings(1, "server_check_query = select 1/0\nserver_check_delay = 0").await;
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.push(served_by(&strict).await);
        pool_at_baseline(&strict, 1).await;
    }
    pids.dedup();
    assert_eq!(
        pids.len(),
        3,
        "a connection failing the check was reused: {pids:?}"
    );
    recovered(&strict, 1).await;
}

/// `c` and the pid of its server connection.
async fn with_pid(c: tokio_postgres::Client) -> (tokio_postgres::Client, i32) {
    let row = timeout(HANG, c.query_one("select pg_backend_pid()", &[]))
        .await
        .expect("the query hung")
        .unwrap();
    (c, row.get(0))
}

/// A client queued behind the one holding the pool's only connection: its task, once it
/// waits (served, it returns its client and server pid).
async fn queued(fx: &Fixture) -> tokio::task::JoinHandle<(tokio_postgres::Client, i32)> {
    let connstring = fx.connstring();
    let waiter =
        tokio::spawn(async move { with_pid(crate::support::connect(&connstring).await).await });
    let deadline = Instant::now() + HANG;
    while !fx.porter.pool_counts().iter().any(|(_, c)| c.waiting == 1) {
        assert!(Instant::now() < deadline, "the client did not queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiter
}

/// server_check_delay and server_check_query changed by RELOAD or admin SET while a client
/// waits for a server reach that client's check, as in PgBouncer (which reads both when it
/// hands a server out): the check was run under the pool's settings as the wait began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_server_check_reaches_waiting_clients() {
    let fx = Fixture::with_settings(
        1,
        "server_check_query = select 1/0\nquery_wait_timeout = 30",
    )
    .await;
    let (holder, first) = with_pid(fx.connect().await).await;
    let waiter = queued(&fx).await;
    // Checked at every reuse from now on: the failing check closes the connection it gets.
    fx.porter
        .reload_edited(|ini| ini.to_string() + "server_check_delay = 0\n")
        .await;
    drop(holder);
    let (holder, second) = timeout(HANG, waiter).await.expect("not served").unwrap();
    assert_ne!(
        second, first,
        "handed out unchecked, under the delay as the wait began"
    );

    let waiter = queued(&fx).await;
    // A check that passes: the connection is handed out as it is.
    fx.porter.control(pgporter::Control::Set {
        key: "server_check_query".into(),
        value: "select 1".into(),
    });
    let deadline = Instant::now() + HANG;
    while fx.porter.shared().config.load().settings.server_check_query != "select 1" {
        assert!(Instant::now() < deadline, "SET did not take");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(holder);
    let (last, third) = timeout(HANG, waiter).await.expect("not served").unwrap();
    assert_eq!(third, second, "checked with the query as the wait began");
    drop(last);
    recovered(&fx, 1).await;
}

/// server_reset_timeout, which bounds a server check, changed by RELOAD while a client waits
/// for a server: its check gives up at the new value (it ran under the pool's settings as
/// the wait began, here the full 10 s of a check that does not answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_server_reset_timeout_bounds_a_waiting_clients_check() {
    let fx = Fixture::with_settings(
        1,
        "server_check_query = select pg_sleep(10)\nserver_check_delay = 0\n\
         server_reset_timeout = 30\nquery_wait_timeout = 30",
    )
    .await;
    // A new connection is never checked.
    let (holder, first) = with_pid(fx.connect().await).await;
    let waiter = queued(&fx).await;
    fx.porter
        .reload_edited(|ini| ini.replace("server_reset_timeout = 30", "server_reset_timeout = 1"))
        .await;
    let released = Instant::now();
    drop(holder);
    let (last, second) = timeout(HANG, waiter).await.expect("not served").unwrap();
    let waited = released.elapsed();
    assert_ne!(second, first, "the check that does not answer passed");
    assert!(
        waited < Duration::from_secs(6),
        "served after {waited:?}: the check was not cut at the reloaded 1 s"
    );
    drop(last);
    fx.porter
        .reload_edited(|ini| ini.replace("select pg_sleep(10)", "select 1"))
        .await;
    recovered(&fx, 1).await;
}

/// A cluster of this test's own (restarts and a stopped postmaster would hurt other tests).
async fn private_cluster() -> &'static PgCluster {
    Box::leak(Box::new(PgCluster::start_private().await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load() {
    let pg = private_cluster().await;
    let fx =
        Fixture::on_cluster(pg, 4, "server_connect_timeout = 5\nquery_wait_timeout = 20").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let connstring = fx.connstring();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let round = timeout(HANG, async {
                    let (c, conn) = tokio_postgres::connect(&connstring, NoTls).await?;
                    tokio::spawn(conn);
                    for _ in 0..3 {
                        c.simple_query("select 1").await?;
                    }
                    Ok::<_, tokio_postgres::Error>(())
                })
                .await
                .expect("a load client hung");
                let counter = if round.is_ok() { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"])
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    eprintln!(
        "restart under load: {} sessions ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    recovered(&fx, 4).await;

    // Idle pooled connections killed by a restart must not be handed to the next clients.
    let clients: Vec<_> = futures_util::future::join_all((0..4).map(|_| fx.connect())).await;
    for c in &clients {
        c.simple_query("select 1").await.unwrap();
    }
    drop(clients);
    pool_at_baseline(&fx, 4).await;
    assert!(fx.porter.pool_counts().iter().any(|(_, c)| c.idle > 0));
    pg.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"])
        .await;
    let clients: Vec<_> = futures_util::future::join_all((0..4).map(|_| fx.connect())).await;
    for c in &clients {
        c.simple_query("select 1")
            .await
            .expect("a client got a server connection that died in the restart");
    }
    drop(clients);
    recovered(&fx, 4).await;
    pg.stop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_postmaster_hits_server_connect_timeout() {
    let pg = private_cluster().await;
    // query_wait_timeout, which bounds the login too, is not what ends it here.
    let fx =
        Fixture::on_cluster(pg, 2, "server_connect_timeout = 2\nquery_wait_timeout = 10").await;
    let postmaster = pg.postmaster_pid();
    signal(postmaster, "-STOP");
    let started = Instant::now();
    let outcome = timeout(HANG, tokio_postgres::connect(&fx.connstring(), NoTls)).await;
    let elapsed = started.elapsed();
    signal(postmaster, "-CONT");
    let err = match outcome.expect("login hung although server_connect_timeout = 2") {
        Ok(_) => panic!("logged in through a stopped postmaster"),
        Err(e) => e,
    };
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(db.message().contains("timed out"), "{}", db.message());
    assert!(
        elapsed >= Duration::from_millis(1900),
        "gave up after {elapsed:?}"
    );
    recovered(&fx, 2).await;
    pg.stop_now().await;
}

/// A backend terminated (pg_terminate_backend) while its session is idle: the client gets
/// PostgreSQL's own FATAL 57P01 and then EOF, as on a direct connection; a second FATAL of
/// pgporter's (08006 server closed the connection) followed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_fatal_is_the_clients_last_message() {
    let fx = Fixture::new(1).await;
    let mut c =
        crate::support::raw::RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db)
            .await;
    let pid: i32 = c.rows("select pg_backend_pid()").await.0[0]
        .parse()
        .unwrap();
    terminate(&fx, pid).await;
    let m = timeout(HANG, c.read_msg())
        .await
        .expect("no FATAL")
        .expect("closed without PostgreSQL's FATAL");
    assert_eq!((m.tag, m.sqlstate().as_deref()), (b'E', Some("57P01")));
    let next = timeout(HANG, c.read_msg()).await.expect("no EOF");
    assert!(
        next.is_none(),
        "a second message followed: {:?}",
        next.map(|m| (m.tag, m.sqlstate()))
    );
    recovered(&fx, 1).await;
}

//! The routing health monitors follow RELOAD and admin SET (health_check_period,
//! max_standby_lag, max_standby_lag_bytes) while they run, keeping their connection and what
//! they know of their hosts.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::{all_up, concurrent, host, ports, until_hosts, where_am_i};
use crate::support::ReplFixture;

/// Keep writing on the primary until pgporter's view of the host at `port` satisfies `ok`
/// (bounded).
async fn write_until(
    fx: &ReplFixture,
    writer: &tokio_postgres::Client,
    port: u16,
    what: &str,
    ok: impl Fn(&pgporter::routing::HostStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        writer
            .batch_execute("insert into w values (1)")
            .await
            .expect("insert");
        let hosts = fx.porter.hosts();
        if host(&hosts, port).is_some_and(|h| ok(&h.status)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: hosts are {hosts:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A standby whose replay is paused falls behind; the lag limits and the check period it is
/// judged by come from RELOAD and SET, without restarting pgporter or its monitors: they were
/// copied when a monitor started, so a reload reached only monitors started later (none,
/// for hosts already monitored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_monitors_follow_a_reload() {
    // Checked once at start, then (for an hour) only when poked.
    let fx = ReplFixture::new(2, 10, "health_check_period = 3600").await;
    let (p1, p2) = (fx.cluster.port(1), fx.cluster.port(2));
    let alias = fx.connstring(fx.porter.port(), &format!("{}_ro", fx.db));
    assert!(where_am_i(&alias).await.is_ok());
    all_up(&fx).await;

    let writer = fx.cluster.client(0, &fx.user, &fx.db).await;
    writer
        .batch_execute("create table w (i int)")
        .await
        .expect("create");
    fx.cluster.wait_replayed(1).await;
    let su1 = fx.cluster.superuser(1).await;
    su1.batch_execute("select pg_wal_replay_pause()")
        .await
        .expect("pause");
    for _ in 0..5 {
        writer
            .batch_execute("insert into w values (1)")
            .await
            .expect("insert");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = host(&fx.porter.hosts(), p1).expect("p1").status.clone();
    assert_eq!(s.lag_bytes.unwrap_or(0), 0, "checked again already: {s:?}");

    // A shorter period: checked every 0.2 s from now on, so the lag is seen and timed.
    fx.porter
        .reload_edited(|ini| ini.replace("health_check_period = 3600", "health_check_period = 0.2"))
        .await;
    write_until(&fx, &writer, p1, "lag seen under the new period", |s| {
        s.lag_bytes.unwrap_or(0) > 0 && s.lag.unwrap_or_default() > Duration::from_secs(1)
    })
    .await;
    let s = host(&fx.porter.hosts(), p1).expect("p1").status.clone();
    assert!(!s.lagging, "no lag limit yet: {s:?}");

    // A lag limit the standby is over: out of the read-only rotation.
    fx.porter
        .reload_edited(|ini| ini.to_string() + "max_standby_lag = 1\n")
        .await;
    until_hosts(&fx, "standby 1 over the reloaded max_standby_lag", |h| {
        host(h, p1).is_some_and(|s| s.status.lagging)
    })
    .await;
    let seen = concurrent(4, &alias).await;
    assert_eq!(ports(&seen), BTreeSet::from([p2]), "lagging standby used");

    // Raised above its lag: back in rotation (a fresh pool, the read-only listener's, has no
    // idle connections to reuse).
    fx.porter
        .reload_edited(|ini| ini.replace("max_standby_lag = 1\n", "max_standby_lag = 3600\n"))
        .await;
    until_hosts(&fx, "standby 1 under the raised max_standby_lag", |h| {
        host(h, p1).is_some_and(|s| !s.status.lagging)
    })
    .await;
    let ro = fx.connstring(fx.porter.readonly_port(), &fx.db);
    assert_eq!(ports(&concurrent(4, &ro).await), BTreeSet::from([p1, p2]));

    // The byte limit, by admin SET.
    fx.porter.control(pgporter::Control::Set {
        key: "max_standby_lag_bytes".into(),
        value: "1".into(),
    });
    until_hosts(&fx, "standby 1 over the SET max_standby_lag_bytes", |h| {
        host(h, p1).is_some_and(|s| s.status.lagging)
    })
    .await;
    su1.batch_execute("select pg_wal_replay_resume()")
        .await
        .expect("resume");
    until_hosts(&fx, "standby 1 caught up", |h| {
        host(h, p1).is_some_and(|s| !s.status.lagging)
    })
    .await;
}

/// failover_wait_timeout changed by RELOAD reaches sessions already waiting for a primary,
/// measured from the outage's start as before: the wait was fixed when the pool was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_failover_wait_reaches_waiting_sessions() {
    let fx = ReplFixture::new(1, 10, "failover_wait_timeout = 60").await;
    let primary = fx.cluster.port(0);
    let rw = fx.connstring(fx.porter.port(), &fx.db);
    assert!(where_am_i(&rw).await.is_ok());
    all_up(&fx).await;
    fx.cluster.stop(0).await;
    until_hosts(&fx, "primary down", |h| {
        host(h, primary).is_some_and(|s| s.status.liveness == pgporter::routing::Liveness::Down)
    })
    .await;
    let waiting = tokio::spawn(async move { where_am_i(&rw).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "no primary, yet not waiting");

    let reloaded = Instant::now();
    fx.porter
        .reload_edited(|ini| ini.replace("failover_wait_timeout = 60", "failover_wait_timeout = 1"))
        .await;
    let answer = tokio::time::timeout(crate::support::HANG, waiting)
        .await
        .expect("the session hung")
        .expect("session task");
    let took = reloaded.elapsed();
    let err = answer.expect_err("served with no primary");
    assert!(
        err.contains("08006") && err.contains("failover_wait_timeout"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(10),
        "ended {took:?} after the reload"
    );
}

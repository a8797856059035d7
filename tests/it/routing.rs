//! Read/write routing against a real primary and two streaming standbys (issue 5): reads
//! spread over standbys, writes refused on the read-only endpoint with a hint, a standby lost
//! or lagging taken out of rotation, and a failover new sessions do not feel.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::{connect, db_error, ReplFixture, HANG};

const WHERE: &str = "select pg_is_in_recovery(), inet_server_port()";

/// One new session: connect, ask where it landed, close. Never panics.
pub(crate) async fn where_am_i(connstring: &str) -> Result<(bool, u16), String> {
    let session = async {
        let (client, conn) = tokio_postgres::connect(connstring, NoTls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tokio::spawn(conn);
        let row = client
            .query_one(WHERE, &[])
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("query: {}: {}", db.code().code(), db.message()),
                None => format!("query: {e}"),
            })?;
        let port: i32 = row.get(1);
        Ok((row.get(0), u16::try_from(port).unwrap_or(0)))
    };
    tokio::time::timeout(HANG, session)
        .await
        .unwrap_or_else(|_| Err("session hung".into()))
}

/// `n` sessions open at the same time (so each needs its own server connection): where
/// each one landed.
pub(crate) async fn concurrent(n: usize, connstring: &str) -> Vec<(bool, u16)> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(connect(connstring).await);
    }
    let mut seen = Vec::new();
    for c in &clients {
        let row = c.query_one(WHERE, &[]).await.expect("where am i");
        let port: i32 = row.get(1);
        seen.push((row.get(0), u16::try_from(port).unwrap_or(0)));
    }
    seen
}

pub(crate) fn ports(seen: &[(bool, u16)]) -> BTreeSet<u16> {
    seen.iter().map(|(_, p)| *p).collect()
}

/// Wait (bounded) until pgporter's host snapshot satisfies `ok`.
pub(crate) async fn until_hosts(
    fx: &ReplFixture,
    what: &str,
    ok: impl Fn(&[pgporter::routing::HostSnapshot]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hosts = fx.porter.hosts();
        if ok(&hosts) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: hosts are {hosts:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the monitors have seen every host up (the first pool starts them).
pub(crate) async fn all_up(fx: &ReplFixture) {
    let n = fx.cluster.nodes.len();
    until_hosts(fx, "every host up", |h| {
        h.len() == n
            && h.iter()
                .all(|s| s.status.liveness == pgporter::routing::Liveness::Up)
    })
    .await;
}

pub(crate) fn host(
    hosts: &[pgporter::routing::HostSnapshot],
    port: u16,
) -> Option<&pgporter::routing::HostSnapshot> {
    hosts.iter().find(|h| h.addr == format!("127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_writes_guarded_and_a_lost_standby_is_not_felt() {
    let fx = ReplFixture::new(2, 10, "audit_log = {dir}/audit.log").await;
    let (p0, p1, p2) = (fx.cluster.port(0), fx.cluster.port(1), fx.cluster.port(2));
    let rw_port = fx.porter.port();
    let ro_port = fx.porter.readonly_port();
    let rw = fx.connstring(rw_port, &fx.db);
    let ro_listener = fx.connstring(ro_port, &fx.db);
    let ro_alias = fx.connstring(rw_port, &format!("{}_ro", fx.db));

    // Writes through the read-write endpoint land on the primary.
    let writer = connect(&rw).await;
    let row = writer.query_one(WHERE, &[]).await.expect("rw where");
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, i32>(1)),
        (false, i32::from(p0))
    );
    writer
        .batch_execute("create table t (i int); insert into t values (1)")
        .await
        .expect("write through the read-write endpoint");
    fx.cluster.wait_replayed(1).await;
    fx.cluster.wait_replayed(2).await;
    all_up(&fx).await;

    // Reads through both read-only endpoints are spread over both standbys.
    for (what, cs) in [("listener", &ro_listener), ("alias", &ro_alias)] {
        let seen = concurrent(4, cs).await;
        assert!(seen.iter().all(|(standby, _)| *standby), "{what}: {seen:?}");
        assert_eq!(ports(&seen), BTreeSet::from([p1, p2]), "{what}: {seen:?}");
    }

    // Writes through the read-only endpoints fail with 25006 and pgporter's hint.
    let ro = connect(&ro_listener).await;
    for sql in [
        "create temporary table tmp (i int)",
        "insert into t values (2)",
    ] {
        let e = ro.batch_execute(sql).await.expect_err(sql);
        let e = db_error(&e);
        assert_eq!(
            e.code(),
            &SqlState::READ_ONLY_SQL_TRANSACTION,
            "{sql}: {e:?}"
        );
        let hint = e.hint().unwrap_or_default();
        assert!(
            hint.contains("read-only endpoint") && hint.contains(&format!("port {rw_port}")),
            "{hint}"
        );
    }
    ro.query_one("select 1", &[])
        .await
        .expect("the session goes on");
    let alias = connect(&ro_alias).await;
    let e = alias
        .batch_execute("create temporary table tmp (i int)")
        .await
        .expect_err("temp table on the alias");
    let hint = db_error(&e).hint().unwrap_or_default().to_string();
    assert!(hint.contains(&format!("database \"{}\"", fx.db)), "{hint}");
    drop((ro, alias));

    // The audit log names the host each session really ran on (it named the entry's first
    // host, the primary, for every session).
    fx.porter.shared().audit.flush().await;
    let audit = std::fs::read_to_string(fx.porter.dir().join("audit.log")).expect("audit log");
    let hosts: BTreeSet<String> = audit
        .lines()
        .filter(|l| {
            l.contains("\"event\":\"session_start\"") && !l.contains("\"backend_pid\":null")
        })
        .filter_map(|l| {
            l.split("\"backend_host\":\"")
                .nth(1)?
                .split('"')
                .next()
                .map(String::from)
        })
        .collect();
    let expected: BTreeSet<String> = [p0, p1, p2]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    assert_eq!(hosts, expected, "{audit}");

    // Stop one standby while read-only sessions keep coming.
    // Each worker goes on until it has run 3 sessions started after the stop.
    let stopped_at = Arc::new(OnceLock::new());
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (stopped_at, cs) = (Arc::clone(&stopped_at), ro_listener.clone());
        workers.push(tokio::spawn(async move {
            let (mut log, mut after) = (Vec::new(), 0);
            let deadline = Instant::now() + Duration::from_secs(60);
            while after < 3 && Instant::now() < deadline {
                let started = Instant::now();
                if stopped_at.get().is_some_and(|s| started >= *s) {
                    after += 1;
                }
                log.push((started, where_am_i(&cs).await));
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fx.cluster.stop(1).await;
    let stopped = Instant::now();
    stopped_at.set(stopped).expect("set once");
    let mut log = Vec::new();
    for w in workers {
        log.extend(w.await.expect("worker"));
    }
    // Sessions started once the standby was gone must all work, on the other standby. A
    // session whose query was running on the standby when it stopped gets PostgreSQL's own
    // 57P01 (as it would without a pooler): counted, not asserted.
    let after: Vec<_> = log.iter().filter(|(t, _)| *t >= stopped).collect();
    let failed = log.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "standby loss: {} read-only sessions, {} started after the stop (all must work), \
         {failed} failed (in flight on the stopping standby)",
        log.len(),
        after.len()
    );
    assert!(after.len() >= 9, "{log:?}");
    for (_, r) in &after {
        assert_eq!(
            r.as_ref().ok(),
            Some(&(true, p2)),
            "after the stop: {log:?}"
        );
    }
    // In flight on the stopping standby: PostgreSQL's FATAL 57P01 (or our 08006 after the
    // server's EOF). When the FATAL lands between the two round trips of query_one (prepare,
    // then execute), tokio-postgres takes it as an unsolicited error, ends the connection and
    // reports "connection closed" for the execute - as it would without a pooler.
    for (_, r) in &log {
        if let Err(e) = r {
            assert!(
                e.starts_with("query: 57P01")
                    || e.starts_with("query: 08006")
                    || e == "query: connection closed",
                "{e}"
            );
        }
    }

    // No standby left: the read-only listener (prefer-standby) falls back to the primary,
    // where default_transaction_read_only still refuses writes.
    fx.cluster.stop(2).await;
    until_hosts(&fx, "both standbys down", |h| {
        host(h, p2).is_some_and(|s| s.status.liveness == pgporter::routing::Liveness::Down)
    })
    .await;
    let ro = connect(&ro_listener).await;
    let row = ro.query_one(WHERE, &[]).await.expect("ro on the primary");
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, i32>(1)),
        (false, i32::from(p0))
    );
    let e = ro
        .batch_execute("insert into t values (3)")
        .await
        .expect_err("write");
    assert_eq!(db_error(&e).code(), &SqlState::READ_ONLY_SQL_TRANSACTION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_standby_leaves_rotation_and_comes_back() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("pgporter=debug")
        .with_test_writer()
        .try_init();
    let fx = ReplFixture::new(2, 10, "max_standby_lag = 1").await;
    let (p1, p2) = (fx.cluster.port(1), fx.cluster.port(2));
    let alias = fx.connstring(fx.porter.port(), &format!("{}_ro", fx.db));
    // First use of a pool starts the monitors.
    assert!(where_am_i(&alias).await.is_ok());
    all_up(&fx).await;
    // One idle connection is reused, three new ones alternate over both standbys.
    assert_eq!(
        ports(&concurrent(4, &alias).await),
        BTreeSet::from([p1, p2])
    );

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
    // Keep writing until pgporter sees standby 1 lagging.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        writer
            .batch_execute("insert into w values (1)")
            .await
            .expect("insert");
        let hosts = fx.porter.hosts();
        if host(&hosts, p1).is_some_and(|h| h.status.lagging) {
            let s = &host(&hosts, p1).expect("p1").status;
            assert!(
                s.lag_bytes.unwrap_or(0) > 0 && s.lag.unwrap_or_default() > Duration::from_secs(1),
                "{s:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "standby 1 never seen lagging: {hosts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = concurrent(4, &alias).await;
    assert_eq!(
        ports(&seen),
        BTreeSet::from([p2]),
        "lagging standby still used: {seen:?}; hosts now: {:#?}",
        fx.porter.hosts()
    );

    su1.batch_execute("select pg_wal_replay_resume()")
        .await
        .expect("resume");
    until_hosts(&fx, "standby 1 caught up", |h| {
        host(h, p1).is_some_and(|s| !s.status.lagging)
    })
    .await;
    // A fresh pool (the read-only listener) spreads over both again.
    let ro = fx.connstring(fx.porter.readonly_port(), &fx.db);
    assert_eq!(ports(&concurrent(4, &ro).await), BTreeSet::from([p1, p2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_new_sessions_wait_for_the_promoted_standby() {
    let fx = ReplFixture::new(
        2,
        10,
        "failover_wait_timeout = 30\nmetrics_listen_addr = 127.0.0.1:0",
    )
    .await;
    let (p0, p1, p2) = (fx.cluster.port(0), fx.cluster.port(1), fx.cluster.port(2));
    let rw = fx.connstring(fx.porter.port(), &fx.db);
    assert_eq!(where_am_i(&rw).await, Ok((false, p0)));
    all_up(&fx).await;
    let held = connect(&rw).await;
    held.query_one("select 1", &[]).await.expect("held session");
    // Idle standby connections on both standbys in the standby-only pool.
    let alias = fx.connstring(fx.porter.port(), &format!("{}_ro", fx.db));
    assert_eq!(
        ports(&concurrent(2, &alias).await),
        BTreeSet::from([p1, p2])
    );

    fx.cluster.stop(0).await;
    // The session on the dead primary gets a clean error, not a hang.
    let e = tokio::time::timeout(HANG, held.simple_query("select 1"))
        .await
        .expect("the session on the dead primary hung")
        .expect_err("the primary is gone");
    if let Some(db) = e.as_db_error() {
        assert!(["57P01", "08006"].contains(&db.code().code()), "{db:?}");
    } else {
        assert!(e.is_closed(), "{e:?}");
    }

    // New read-write sessions during the outage.
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let cs = rw.clone();
        sessions.push(tokio::spawn(async move {
            let r = where_am_i(&cs).await;
            (r, Instant::now())
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promote = Instant::now();
    let seen_primary = {
        let hosts = fx.porter.shared_hosts();
        tokio::spawn(async move {
            let addr = format!("127.0.0.1:{p1}");
            loop {
                let primary = hosts
                    .snapshot()
                    .iter()
                    .any(|h| h.addr == addr && h.status.role == pgporter::routing::Role::Primary);
                if primary {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    fx.cluster.promote(1).await;
    let promoted = promote.elapsed();
    let mut results = Vec::new();
    for s in sessions {
        results.push(s.await.expect("session task"));
    }
    let failed = results.iter().filter(|(r, _)| r.is_err()).count();
    let first = results
        .iter()
        .filter(|(r, _)| r.is_ok())
        .map(|(_, t)| t.saturating_duration_since(promote))
        .min();
    let seen = tokio::time::timeout(HANG, seen_primary)
        .await
        .expect("pgporter never saw the new primary")
        .expect("poller")
        .saturating_duration_since(promote);
    eprintln!(
        "failover: pg_ctl promote -> first new read-write session through pgporter: {first:?} \
         (pg_ctl promote -w took {promoted:?}, pgporter saw the new primary after {seen:?}); \
         {} new sessions during the outage, {failed} failed",
        results.len()
    );
    for (r, _) in &results {
        assert_eq!(
            r,
            &Ok((false, p1)),
            "a session during the outage: {results:?}"
        );
    }
    assert_eq!(failed, 0);
    // Afterwards: writes on the new primary, reads on the remaining standby.
    let writer = connect(&rw).await;
    writer
        .batch_execute("create table after_failover (i int)")
        .await
        .expect("write on the new primary");
    let ro = fx.connstring(fx.porter.readonly_port(), &fx.db);
    assert_eq!(where_am_i(&ro).await, Ok((true, p2)));
    // The promoted host's idle standby-pool connections are never handed out again.
    let seen = concurrent(4, &alias).await;
    assert!(seen.iter().all(|s| *s == (true, p2)), "{seen:?}");
    // One primary in the metrics: the old one, down, claims no role (it stayed "primary").
    let (_, page) = crate::support::http::get(fx.porter.http_addr(), "/metrics").await;
    let role = |p: u16, r: &str| {
        let series = format!("pgporter_backend_role{{host=\"127.0.0.1:{p}\",role=\"{r}\"}}");
        crate::support::http::sample(&page, &series)
    };
    let primaries: Vec<u16> = [p0, p1, p2]
        .into_iter()
        .filter(|&p| role(p, "primary") == Some(1.0))
        .collect();
    assert_eq!(primaries, [p1], "{page}");
    assert_eq!(
        (role(p0, "unknown"), role(p2, "standby")),
        (Some(1.0), Some(1.0)),
        "{page}"
    );
}

/// The health monitor logs in with a pool's credentials. When that login is refused (the role
/// disabled, a connection limit, a changed password) the host answered: it is not down, and
/// sessions on it (of this or any other user) go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_health_check_login_is_not_a_dead_host() {
    let fx = ReplFixture::new(0, 2, "").await;
    let rw = fx.connstring(fx.porter.port(), &fx.db);
    let session = connect(&rw).await;
    session.query_one(WHERE, &[]).await.expect("first query");
    all_up(&fx).await;
    let admin = fx.cluster.superuser(0).await;
    admin
        .batch_execute(&format!("ALTER ROLE \"{}\" NOLOGIN", fx.user))
        .await
        .expect("disable the role");
    let killed = admin
        .query(
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where application_name = 'pgporter health check'",
            &[],
        )
        .await
        .expect("end the monitor's connection");
    assert!(!killed.is_empty(), "no health check connection found");
    // Several check periods (0.2 s) with the monitor's login refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hosts = fx.porter.hosts();
    assert!(
        hosts
            .iter()
            .all(|h| h.status.liveness == pgporter::routing::Liveness::Up),
        "{hosts:?}"
    );
    session
        .query_one(WHERE, &[])
        .await
        .expect("the session on the host goes on");
    admin
        .batch_execute(&format!("ALTER ROLE \"{}\" LOGIN", fx.user))
        .await
        .expect("enable the role");
}

/// A pgporter in front of `cluster` with one routed read-write entry and the given userlist
/// (`fixture::userlist` for plaintext passwords).
pub(crate) async fn routed_porter(
    cluster: &crate::support::replica::ReplCluster,
    db: &str,
    userlist: &str,
    extra: &str,
) -> crate::support::Porter {
    let hosts = vec!["127.0.0.1"; cluster.nodes.len()].join(",");
    let ports: Vec<String> = cluster.nodes.iter().map(|n| n.port.to_string()).collect();
    let ini = format!(
        "[databases]\n\
         {db} = host={hosts} port={ports} dbname={db} target_session_attrs=read-write\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = userlist.txt\nquery_wait_timeout = 20\n\
         health_check_period = 0.2\nserver_connect_timeout = 3\n{extra}\n",
        ports = ports.join(",")
    );
    crate::support::spawn_pgporter(&ini, userlist).await
}

/// The first user to reach a host cannot log in to PostgreSQL (CONNECTION LIMIT 0): the
/// health monitor, which logs in with a pool's credentials, tries the next pool's user
/// instead of leaving the host unchecked (which kept everyone out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_user_does_not_blind_the_health_monitor() {
    let cluster = crate::support::replica::ReplCluster::start(0).await;
    let db = format!("rdb_refused_{}", std::process::id());
    cluster.create_role_and_db("alice_r", "pw-a", &db).await;
    let su = cluster.superuser(0).await;
    su.batch_execute("CREATE ROLE carol_r LOGIN PASSWORD 'pw-c' CONNECTION LIMIT 0")
        .await
        .expect("carol");
    let porter = routed_porter(
        &cluster,
        &db,
        &crate::support::fixture::userlist(&[("alice_r", "pw-a"), ("carol_r", "pw-c")]),
        "failover_wait_timeout = 5",
    )
    .await;
    let conn = |user: &str, pw: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password={pw} dbname={db} sslmode=disable",
            porter.port()
        )
    };
    // carol's own session fails (PostgreSQL refuses her); she came first.
    assert!(where_am_i(&conn("carol_r", "pw-c")).await.is_err());
    let alice = where_am_i(&conn("alice_r", "pw-a")).await;
    assert_eq!(alice, Ok((false, cluster.port(0))), "alice's session");
}

/// A smart shutdown waits for sessions to end: pgporter's health check connection and its
/// idle pooled connections must not keep it waiting. The host takes no new connections
/// (draining): out of rotation, its idle connections closed, a session on it left to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smart_shutdown_is_not_held_open_by_pgporter() {
    let cluster = crate::support::replica::ReplCluster::start(0).await;
    let db = format!("rdb_smart_{}", std::process::id());
    cluster.create_role_and_db("alice_s", "pw-a", &db).await;
    let porter = routed_porter(
        &cluster,
        &db,
        &crate::support::fixture::userlist(&[("alice_s", "pw-a")]),
        "",
    )
    .await;
    let connstring = format!(
        "host=127.0.0.1 port={} user=alice_s password=pw-a dbname={db} sslmode=disable",
        porter.port()
    );
    // One idle pooled connection, one session that stays.
    assert_eq!(where_am_i(&connstring).await, Ok((false, cluster.port(0))));
    let session = connect(&connstring).await;
    session.query_one(WHERE, &[]).await.expect("session");
    cluster.stop_smart_nowait(0).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hosts = porter.hosts();
        if hosts
            .iter()
            .all(|h| h.status.liveness == pgporter::routing::Liveness::Draining)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never draining: {hosts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    session
        .query_one(WHERE, &[])
        .await
        .expect("the session on the draining host goes on");
    drop(session);
    while cluster.running(0) {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "the smart shutdown is still waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same database and user on the read-write and the read-only listener are two pools;
/// SHOW POOLS counts each one's clients and servers once (they were mixed and doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_and_read_only_pools_are_counted_apart() {
    let fx = ReplFixture::new(1, 4, "metrics_listen_addr = 127.0.0.1:0").await;
    let rw = connect(&fx.connstring(fx.porter.port(), &fx.db)).await;
    let ro = connect(&fx.connstring(fx.porter.readonly_port(), &fx.db)).await;
    assert!(!rw.query_one(WHERE, &[]).await.unwrap().get::<_, bool>(0));
    assert!(ro.query_one(WHERE, &[]).await.unwrap().get::<_, bool>(0));
    let snapshot = pgporter::snapshot::Snapshot::take(fx.porter.shared());
    let rows: Vec<(String, u64, u64)> = snapshot
        .pools
        .iter()
        .filter(|p| p.database == fx.db)
        .map(|p| (p.label().into_owned(), p.cl_active, p.sv_active))
        .collect();
    // Told apart by name too: the same (database, user) twice is a duplicate series for
    // pgbouncer_exporter (and pgporter's own pool gauges kept only one of them).
    let ro = format!("{} (read-only)", fx.db);
    assert_eq!(
        rows,
        [(fx.db.clone(), 1, 1), (ro.clone(), 1, 1)],
        "(name, cl_active, sv_active) per pool"
    );
    let (_, page) = crate::support::http::get(fx.porter.http_addr(), "/metrics").await;
    let series = format!(
        "pgporter_server_connections{{database=\"{ro}\",user=\"{}\",state=\"active\"}}",
        fx.user
    );
    assert_eq!(
        crate::support::http::sample(&page, &series),
        Some(1.0),
        "{page}"
    );
}

/// Right after start, before the monitors' first checks: a burst of read-only sessions is
/// still spread over both standbys (in session mode they keep their host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_burst_is_spread_over_the_standbys() {
    let fx = ReplFixture::new(2, 8, "").await;
    let ro = fx.connstring(fx.porter.port(), &format!("{}_ro", fx.db));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&ro).await);
    }
    let firsts = clients.iter().map(|c| c.query_one(WHERE, &[]));
    let mut seen = Vec::new();
    for row in futures_util::future::join_all(firsts).await {
        let row = row.expect("where am i");
        let port: i32 = row.get(1);
        seen.push(u16::try_from(port).unwrap_or(0));
    }
    let standbys = [fx.cluster.port(1), fx.cluster.port(2)];
    for s in standbys {
        assert_eq!(
            seen.iter().filter(|p| **p == s).count(),
            2,
            "sessions per host: {seen:?}"
        );
    }
}

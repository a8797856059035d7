//! The deployment pgporter is for, as one story (see `support::rubin`): several people log in
//! at once right after pgporter starts, each on the primary (read-write) or a standby
//! (read-only); session state never outlives its session; two people share one account and
//! are told apart; the primary dies, a standby is promoted, and every person's new sessions
//! (those who logged in before and those who never did) land on the new primary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::routing::where_am_i;
use crate::support::rubin::{Rubin, Via, PEOPLE};
use crate::support::HANG;

/// `(in recovery, port)` of each session, opened all at once.
async fn land(rubin: &Rubin, who: &[(&str, Via)]) -> Vec<Result<(bool, u16), String>> {
    let sessions = who.iter().map(|(p, via)| {
        let cs = rubin.connstring(p, *via);
        async move { where_am_i(&cs).await }
    });
    join_all(sessions).await
}

/// Session state of the current server session: temp tables, work_mem, TimeZone, pid.
async fn state(c: &tokio_postgres::Client) -> (i64, String, String, i32) {
    let row = c
        .query_one(
            "select (select count(*) from pg_class where relnamespace = pg_my_temp_schema()), \
             current_setting('work_mem'), current_setting('TimeZone'), pg_backend_pid()",
            &[],
        )
        .await
        .expect("session state");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Leave state behind in a session: a temp table (as the butler's data ID uploads) and SETs.
async fn dirty(c: &tokio_postgres::Client) -> i32 {
    c.batch_execute(
        "create temporary table upload (id int); insert into upload values (1); \
         set work_mem = '7MB'; set time zone 'America/Santiago'",
    )
    .await
    .expect("temp table and SETs");
    let (temps, work_mem, tz, pid) = state(c).await;
    assert_eq!(
        (temps, work_mem.as_str(), tz.as_str()),
        (1, "7MB", "America/Santiago")
    );
    pid
}

/// Wait (bounded) until no server connection is in use: a session's connection goes back
/// just after its client left.
async fn all_idle(rubin: &Rubin) {
    let deadline = Instant::now() + HANG;
    while rubin
        .porter
        .pool_counts()
        .iter()
        .any(|(_, c)| c.idle != c.total)
    {
        assert!(Instant::now() < deadline, "server connections still in use");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Open sessions of `person` through `via` one after another until one gets server
/// connection `pid` again (each must look clean); how many it took.
async fn clean_on_reuse(rubin: &Rubin, person: &str, via: Via, pid: i32) {
    for _ in 0..8 {
        all_idle(rubin).await;
        let c = rubin.connect(person, via).await;
        let (temps, work_mem, tz, got) = state(&c).await;
        assert_eq!(
            (temps, work_mem.as_str()),
            (0, "4MB"),
            "{person} via {via:?}: another session's state (pid {got}, TimeZone {tz})"
        );
        assert_ne!(tz, "America/Santiago", "{person} via {via:?}");
        if got == pid {
            return;
        }
    }
    panic!("{person} via {via:?} never got server connection {pid} again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sessions_and_a_failover() {
    // A failover longer than max_standby_lag (CloudNativePG takes tens of seconds).
    let rubin = Rubin::new("max_standby_lag = 1").await;
    let (p0, p1, p2) = (
        rubin.cluster.port(0),
        rubin.cluster.port(1),
        rubin.cluster.port(2),
    );

    // 1. Right after start, alice, bob and carol log in at the same moment, each on every
    //    endpoint of their own (no shared account yet: every server login is SCRAM
    //    passthrough): read-write sessions on the primary, read-only ones spread over both
    //    standbys (each person has a pool of their own; round-robin used to start every
    //    pool on the first standby), then through the shared account.
    let mut who = Vec::new();
    for p in ["alice", "bob", "carol"] {
        for via in [Via::ReadWrite, Via::ReadOnlyListener, Via::ReadOnlyEntry] {
            who.push((p, via));
        }
    }
    let seen = land(&rubin, &who).await;
    let mut on = BTreeMap::<u16, usize>::new();
    for ((p, via), r) in who.iter().zip(&seen) {
        if *via == Via::ReadWrite {
            assert_eq!(r, &Ok((false, p0)), "{p} via {via:?}: {seen:?}");
        } else {
            let standby = matches!(r, Ok((true, port)) if [p1, p2].contains(port));
            assert!(standby, "{p} via {via:?}: {seen:?}");
            *on.entry(r.as_ref().map_or(0, |(_, port)| *port))
                .or_default() += 1;
        }
    }
    assert!(
        on.len() == 2 && on.values().all(|n| *n >= 2),
        "sessions per standby: {on:?}"
    );
    for r in land(&rubin, &[("alice", Via::Shared), ("bob", Via::Shared)]).await {
        assert_eq!(r, Ok((false, p0)), "through the shared account");
    }

    // 2. Session mode: a person's temp tables and SETs are gone for their next session on the
    //    same server connection (and the shared account's for the next person).
    for via in [Via::ReadWrite, Via::ReadOnlyListener, Via::Shared] {
        let pid = {
            let c = rubin.connect("alice", via).await;
            if via == Via::ReadOnlyListener {
                // A standby refuses temp tables (25006): only SETs there.
                c.batch_execute("set work_mem = '7MB'; set time zone 'America/Santiago'")
                    .await
                    .expect("SETs");
                state(&c).await.3
            } else {
                dirty(&c).await
            }
        };
        clean_on_reuse(&rubin, "alice", via, pid).await;
    }
    let bob = rubin.connect("bob", Via::Shared).await;
    let (temps, work_mem, _, _) = state(&bob).await;
    assert_eq!((temps, work_mem.as_str()), (0, "4MB"), "bob after alice");
    drop(bob);

    // 3. The shared account: the trigger and the audit log name the person, not rubin.
    let alice = rubin.connect("alice", Via::Shared).await;
    alice
        .batch_execute("insert into datasets(name) values ('raw/1')")
        .await
        .expect("alice writes");
    let bob = rubin.connect("bob", Via::Shared).await;
    bob.batch_execute("update datasets set name = 'raw/2' where name = 'raw/1'")
        .await
        .expect("bob writes");
    let log = rubin.change_log(0).await;
    let who_did: Vec<_> = log
        .iter()
        .map(|(c, db, op, _)| (c.as_deref(), db.as_str(), op.as_str()))
        .collect();
    assert_eq!(
        who_did,
        [
            (Some("alice"), "rubin", "INSERT"),
            (Some("bob"), "rubin", "UPDATE")
        ]
    );
    drop((alice, bob));

    // 4. Failover. Sessions held across it: alice on the primary, bob on a standby.
    let held_rw = rubin.connect("alice", Via::ReadWrite).await;
    assert_eq!(state(&held_rw).await.0, 0);
    let held_ro = rubin.connect("bob", Via::ReadOnlyListener).await;
    let ro_port: i32 = held_ro
        .query_one("select inet_server_port()", &[])
        .await
        .expect("held ro")
        .get(0);
    rubin.cluster.stop(0).await;
    let e = tokio::time::timeout(HANG, held_rw.simple_query("select 1"))
        .await
        .expect("the session on the dead primary hung")
        .expect_err("the primary is gone");
    assert!(
        e.is_closed()
            || e.as_db_error()
                .is_some_and(|d| ["57P01", "08006"].contains(&d.code().code())),
        "{e:?}"
    );
    // New sessions during the outage: alice and bob (who logged in before), dave (never did).
    let outage: Vec<_> = ["alice", "bob", "dave"]
        .iter()
        .map(|p| {
            let cs = rubin.connstring(p, Via::ReadWrite);
            tokio::spawn(async move { where_am_i(&cs).await })
        })
        .collect();
    // The read-only endpoints keep serving through the outage, longer than max_standby_lag:
    // the standbys lost their WAL receiver with the primary, but there is nothing newer
    // for them to miss (they were taken out of rotation as lagging).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for r in land(
        &rubin,
        &[("bob", Via::ReadOnlyListener), ("dave", Via::ReadOnlyEntry)],
    )
    .await
    {
        assert!(
            matches!(r, Ok((true, port)) if [p1, p2].contains(&port)),
            "during the outage: {r:?}"
        );
    }
    let promote = Instant::now();
    rubin.cluster.promote(1).await;
    rubin.cluster.follow(2, 1).await;
    for (p, s) in ["alice", "bob", "dave"].iter().zip(outage) {
        let r = s.await.expect("session task");
        assert_eq!(r, Ok((false, p1)), "{p}'s session during the outage");
    }
    eprintln!(
        "failover: outage sessions done {:?} after the promote",
        promote.elapsed()
    );
    // The remaining standby streams from the new primary (max_standby_lag is short here).
    let deadline = Instant::now() + HANG;
    let p2_addr = format!("127.0.0.1:{p2}");
    while !rubin.porter.hosts().iter().any(|h| {
        h.addr == p2_addr && h.status.role == pgporter::routing::Role::Standby && !h.status.lagging
    }) {
        assert!(Instant::now() < deadline, "{:#?}", rubin.porter.hosts());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After it: everyone, on every endpoint (carol's only login was before the failover).
    let mut who = Vec::new();
    for (p, _) in PEOPLE {
        for via in [
            Via::ReadWrite,
            Via::ReadOnlyListener,
            Via::ReadOnlyEntry,
            Via::Shared,
        ] {
            who.push((p, via));
        }
    }
    let seen = land(&rubin, &who).await;
    for ((p, via), r) in who.iter().zip(&seen) {
        let want = match via {
            Via::ReadWrite | Via::Shared => (false, p1),
            Via::ReadOnlyListener | Via::ReadOnlyEntry => (true, p2),
        };
        assert_eq!(r, &Ok(want), "{p} via {via:?} after the failover: {seen:?}");
    }
    // The read-only session held on a standby goes on (on the remaining standby it was on).
    let port: i32 = held_ro
        .query_one("select inet_server_port()", &[])
        .await
        .expect("the read-only session goes on")
        .get(0);
    assert_eq!(port, ro_port);

    // The shared account after the failover: still told apart, on the new primary.
    let carol = rubin.connect("carol", Via::Shared).await;
    carol
        .batch_execute("insert into datasets(name) values ('raw/3')")
        .await
        .expect("carol writes on the new primary");
    let log = rubin.change_log(1).await;
    assert_eq!(
        log.last()
            .map(|(c, db, _, n)| (c.as_deref(), db.as_str(), n.as_str())),
        Some((Some("carol"), "rubin", "raw/3")),
        "{log:?}"
    );
    let audit = rubin.audit().await;
    let carol_start = audit
        .lines()
        .rfind(|l| {
            l.contains("\"event\":\"session_start\"")
                && l.contains("\"client_user\":\"carol\"")
                && l.contains("\"database\":\"butler_shared\"")
        })
        .unwrap_or_default();
    assert!(
        carol_start.contains(&format!("\"backend_host\":\"127.0.0.1:{p1}\""))
            && carol_start.contains("\"backend_user\":\"rubin\""),
        "{carol_start}"
    );
    let statement = audit
        .lines()
        .rfind(|l| l.contains("\"event\":\"statement\"") && l.contains("raw/3"))
        .unwrap_or_default();
    assert!(
        statement.contains("\"client_user\":\"carol\""),
        "{statement}"
    );

    // SHOW HOSTS and the metrics agree with what happened.
    let hosts = rubin.admin("SHOW HOSTS").await;
    let mut shown = BTreeSet::new();
    for row in &hosts {
        let get = |k: &str| {
            row.iter()
                .find(|(c, _)| c == k)
                .and_then(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        shown.insert(format!("{} {} {}", get("port"), get("state"), get("role")));
    }
    // A host that is down keeps the role it was last seen in.
    let want = BTreeSet::from([
        format!("{p0} down primary"),
        format!("{p1} up primary"),
        format!("{p2} up standby"),
    ]);
    assert_eq!(shown, want, "SHOW HOSTS: {hosts:?}");
    let page = crate::support::http::get(rubin.porter.http_addr(), "/metrics")
        .await
        .1;
    let up = |p: u16| {
        crate::support::http::sample(
            &page,
            &format!("pgporter_backend_up{{host=\"127.0.0.1:{p}\"}}"),
        )
    };
    assert_eq!(
        (up(p0), up(p1), up(p2)),
        (Some(0.0), Some(1.0), Some(1.0)),
        "{page}"
    );
    let role = |p: u16, r: &str| {
        crate::support::http::sample(
            &page,
            &format!("pgporter_backend_role{{host=\"127.0.0.1:{p}\",role=\"{r}\"}}"),
        )
    };
    assert_eq!(
        (role(p1, "primary"), role(p2, "standby")),
        (Some(1.0), Some(1.0)),
        "{page}"
    );
}

/// Wait (bounded) for `name` in `dir`, written by the script; panics with its output when the
/// script ended first.
async fn wait_for_file(dir: &std::path::Path, name: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join(name).exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut pipe = pipe;
                let _ = pipe.read_to_string(&mut text);
            }
            panic!("the script ended ({status}) before {name}:\n{text}");
        }
        assert!(Instant::now() < deadline, "no {name} from the script");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SQLAlchemy engines (psycopg2 and psycopg 3, pool_pre_ping) of passthrough users across a
/// RELOAD that replaces their pool and then a failover: tests/e2e/rubin_failover.py.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_engines_through_a_reload_and_a_failover() {
    let Some(python) = crate::support::skip::python("rubin failover with SQLAlchemy") else {
        return;
    };
    let rubin = Rubin::new("").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(format!(
        "{}/tests/e2e/rubin_failover.py",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args(["--dir", &dir.path().display().to_string()])
    .args(["--host", "127.0.0.1", "--dbname", "butler"])
    .args(["--port", &rubin.porter.port().to_string()])
    .args(["--ro-port", &rubin.porter.readonly_port().to_string()])
    .args(["--primary", &rubin.cluster.port(0).to_string()])
    .args(["--promoted", &rubin.cluster.port(1).to_string()])
    .args(["--app-name", "butler-v2"])
    .args(["--person", "alice:psycopg2:alice-pw"])
    .args(["--person", "bob:psycopg:bob-pw"])
    .args(["--reader", "carol:psycopg2:carol-pw"])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("starting python");

    wait_for_file(dir.path(), "ready-1", &mut child).await;
    rubin
        .porter
        .reload_edited(|ini| {
            ini.replace(
                " target_session_attrs=read-write\n",
                " target_session_attrs=read-write application_name=butler-v2\n",
            )
            .replace("default_pool_size = 6", "default_pool_size = 5")
        })
        .await;
    std::fs::write(dir.path().join("go-1"), "").expect("go-1");

    wait_for_file(dir.path(), "ready-2", &mut child).await;
    rubin.cluster.stop(0).await;
    std::fs::write(dir.path().join("go-2"), "").expect("go-2");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    rubin.cluster.promote(1).await;
    rubin.cluster.follow(2, 1).await;

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("waiting thread")
        .expect("python output");
    let stdout = crate::support::cmd::success(&out, "rubin_failover.py");
    eprintln!("{stdout}");
    assert!(stdout.contains("\nOK"), "{stdout}");
}

/// The first session's error within this long (a failover wait would take 20 s; a login and
/// a query on a loaded machine need far less than 10).
const AT_ONCE: Duration = Duration::from_secs(10);

/// A session's error (at login or at its first query): SQLSTATE and message, and how long
/// it took to come.
async fn session_error(connstring: &str) -> (String, String, Duration) {
    let started = Instant::now();
    let session = async {
        let (client, conn) = tokio_postgres::connect(connstring, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.simple_query("select 1").await.map(|_| ())
    };
    let e = tokio::time::timeout(HANG, session)
        .await
        .expect("the session hung")
        .expect_err("the session worked");
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e:?}"));
    (
        db.code().code().to_string(),
        db.message().to_string(),
        started.elapsed(),
    )
}

/// Hosts the health monitor cannot log in to are never checked: no failover will make them
/// eligible, so a session must get the login's own error at once, not wait
/// failover_wait_timeout and then hear "no server available". Two ways to get there in this
/// deployment: `butler_shared` without its `password=` (rubin's SCRAM verifier alone cannot
/// log alice in as rubin), and a pg_hba.conf that rejects pgporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_monitor_cannot_make_fails_at_once() {
    let rubin = Rubin::new("").await;
    // Before any session (so no other pool gives the monitors a login that works).
    rubin
        .porter
        .reload_edited(|ini| ini.replace(" password=rubin-backend-pw", ""))
        .await;
    let (code, e, took) = session_error(&rubin.connstring("alice", Via::Shared)).await;
    assert!(
        code == "08006" && e.contains("no usable password"),
        "{code} {e} after {took:?}"
    );
    assert!(took < AT_ONCE, "{e} after {took:?}");
    // SHOW HOSTS says why these hosts are not used.
    let hosts = rubin.admin("SHOW HOSTS").await;
    assert_eq!(hosts.len(), rubin.cluster.nodes.len(), "{hosts:?}");
    for row in hosts {
        let error = row
            .iter()
            .find(|(c, _)| c == "error")
            .and_then(|(_, v)| v.clone());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("cannot log in")),
            "{row:?}"
        );
    }

    // Every node refuses pgporter's address; alice's own entry this time.
    for i in 0..rubin.cluster.nodes.len() {
        let hba = rubin.cluster.nodes[i].dir.join("data/pg_hba.conf");
        let text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(&hba, text.replace("scram-sha-256", "reject")).expect("pg_hba.conf");
        rubin
            .cluster
            .superuser(i)
            .await
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
    }
    let (code, e, took) = session_error(&rubin.connstring("alice", Via::ReadWrite)).await;
    assert!(
        code == "28000" && e.contains("pg_hba.conf rejects connection"),
        "{code} {e} after {took:?}"
    );
    assert!(took < AT_ONCE, "{e} after {took:?}");
}

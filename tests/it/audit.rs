//! The audit log: statement events for writes in both protocols (and only writes under
//! `write`), outcomes and row counts, redaction, reopen, auth failures, a 10,000-statement
//! burst through a tiny queue.

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;

use crate::support::{SharedAccount, HANG};

/// Every event written so far (after a writer flush).
pub(crate) async fn events(sa: &SharedAccount, file: &str) -> Vec<Value> {
    sa.porter.shared().audit.flush().await;
    let text = std::fs::read_to_string(sa.porter.dir().join(file)).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub(crate) fn statements(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "statement")
        .collect()
}

fn texts(events: &[Value]) -> Vec<String> {
    statements(events)
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Wait (bounded) for a session_end to be written; all events then.
async fn until_session_end(sa: &SharedAccount) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let evs = events(sa, "audit.log").await;
        if evs.iter().any(|e| e["event"] == "session_end") {
            return evs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session_end: {evs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const LOG: &str = "audit_log = {dir}/audit.log\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_logged_with_outcomes_in_both_protocols() {
    let sa = SharedAccount::new(2, LOG).await;
    let alice = sa.connect(&sa.alice).await;
    alice.batch_execute("create table t (x int)").await.unwrap();
    alice
        .simple_query("insert into t values (1), (2)")
        .await
        .unwrap();
    alice.simple_query("update t set x = x + 10").await.unwrap();
    alice.simple_query("select * from t").await.unwrap();
    alice
        .execute("insert into t values ($1)", &[&5i32])
        .await
        .unwrap();
    alice
        .execute("update t set x = $1 where x = 5", &[&6i32])
        .await
        .unwrap();
    alice
        .query("select x from t where x > $1", &[&0i32])
        .await
        .unwrap();
    alice
        .execute("delete from t where x = $1", &[&6i32])
        .await
        .unwrap();
    let sink = alice.copy_in("copy t from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"7\n8\n9\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);
    alice.simple_query("delete from t").await.unwrap();
    let e = alice
        .simple_query("insert into missing values (1)")
        .await
        .unwrap_err();
    assert!(e.as_db_error().is_some());
    let pid: i32 = alice
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(alice);

    // Wait (bounded) for the session to end and its session_end to be written.
    let deadline = tokio::time::Instant::now() + HANG;
    let evs = loop {
        let evs = events(&sa, "audit.log").await;
        if evs.iter().any(|e| e["event"] == "session_end") {
            break evs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session_end: {evs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let stmts = statements(&evs);
    let got: Vec<(&str, &str, Option<u64>, Option<&str>)> = stmts
        .iter()
        .map(|e| {
            (
                e["protocol"].as_str().unwrap(),
                e["text"].as_str().unwrap(),
                e["rows"].as_u64(),
                e["sqlstate"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("simple", "create table t (x int)", Some(0), None),
            ("simple", "insert into t values (1), (2)", Some(2), None),
            ("simple", "update t set x = x + 10", Some(2), None),
            ("extended", "insert into t values ($1)", Some(1), None),
            ("extended", "update t set x = $1 where x = 5", Some(1), None),
            ("extended", "delete from t where x = $1", Some(1), None),
            ("extended", "copy t from stdin", Some(3), None),
            ("simple", "delete from t", Some(5), None),
            (
                "simple",
                "insert into missing values (1)",
                None,
                Some("42P01")
            ),
        ],
        "{stmts:#?}"
    );
    for s in &stmts {
        assert_eq!(s["client_user"], sa.alice.as_str());
        assert_eq!(s["backend_pid"], pid);
        assert!(s["duration_ms"].as_f64().is_some());
    }
    assert_eq!(stmts[1]["tags"][0], "INSERT 0 2");
    assert_eq!(stmts[8]["outcome"], "error");
    let start = evs.iter().find(|e| e["event"] == "session_start").unwrap();
    assert_eq!(start["client_user"], sa.alice.as_str());
    assert_eq!(start["backend_user"], sa.rubin.as_str());
    assert_eq!(start["backend_pid"], pid);
    assert_eq!(start["client_addr"], "127.0.0.1");
    assert_eq!(start["tls"], false);
    let end = evs.iter().find(|e| e["event"] == "session_end").unwrap();
    assert_eq!(end["session_id"], start["session_id"]);
    assert!(end["statements"].as_u64().unwrap() >= 12);
    assert!(end["bytes_in"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_none_redaction_and_auth_failures() {
    let sa = SharedAccount::new(
        2,
        "audit_log = {dir}/audit.log\naudit_statements = all\naudit_max_statement_length = 40",
    )
    .await;
    let alice = sa.connect(&sa.alice).await;
    alice.simple_query("select 1").await.unwrap();
    let pw = crate::support::fixture::PASSWORD;
    alice
        .batch_execute(&format!("ALTER ROLE \"{}\" PASSWORD '{pw}'", sa.rubin))
        .await
        .unwrap();
    let long = format!("select '{}'", "y".repeat(100));
    alice.simple_query(&long).await.unwrap();
    let bad = sa.porter.connstring(&sa.bob, "wrong", &sa.db);
    assert!(tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .is_err());
    let evs = events(&sa, "audit.log").await;
    let t = texts(&evs);
    assert_eq!(t[0], "select 1", "all logs reads: {t:?}");
    assert!(
        t[1].contains("PASSWORD '***'") && !t[1].contains(pw),
        "{t:?}"
    );
    assert_eq!(t[2].len(), 40);
    assert_eq!(statements(&evs)[2]["truncated"], true);
    let fail = evs
        .iter()
        .find(|e| e["event"] == "auth_failure")
        .expect("auth_failure");
    assert_eq!(fail["client_user"], sa.bob.as_str());
    assert_eq!(fail["client_addr"], "127.0.0.1");

    let none = SharedAccount::new(2, "audit_log = {dir}/audit.log\naudit_statements = none").await;
    let bob = none.connect(&none.bob).await;
    bob.batch_execute("insert into datasets(name) values ('n')")
        .await
        .unwrap();
    let evs = events(&none, "audit.log").await;
    assert!(statements(&evs).is_empty(), "{evs:?}");
    assert!(evs.iter().any(|e| e["event"] == "session_start"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_starts_a_new_file_after_rotation() {
    let sa = SharedAccount::new(2, LOG).await;
    let alice = sa.connect(&sa.alice).await;
    alice
        .batch_execute("insert into datasets(name) values ('before')")
        .await
        .unwrap();
    let _ = events(&sa, "audit.log").await;
    let dir = sa.porter.dir();
    std::fs::rename(dir.join("audit.log"), dir.join("audit.log.1")).unwrap();
    alice
        .batch_execute("insert into datasets(name) values ('rotated')")
        .await
        .unwrap();
    sa.porter.shared().audit.reopen();
    alice
        .batch_execute("insert into datasets(name) values ('after')")
        .await
        .unwrap();
    let old = texts(&events(&sa, "audit.log.1").await);
    let new = texts(&events(&sa, "audit.log").await);
    assert_eq!(
        old,
        vec![
            "insert into datasets(name) values ('before')",
            "insert into datasets(name) values ('rotated')"
        ]
    );
    assert_eq!(new, vec!["insert into datasets(name) values ('after')"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_statements_is_logged_in_full() {
    const N: i32 = 10_000;
    let sa = SharedAccount::new(2, "audit_log = {dir}/audit.log\naudit_queue_size = 16").await;
    let alice = sa.connect(&sa.alice).await;
    alice
        .batch_execute("create table burst (i int)")
        .await
        .unwrap();
    let stmt = alice
        .prepare("insert into burst values ($1)")
        .await
        .unwrap();
    // Pipelined: up to 256 Executes in flight at once.
    let results: Vec<_> = futures_util::stream::iter(0..N)
        .map(|i| {
            let alice = &alice;
            let stmt = &stmt;
            async move { alice.execute(stmt, &[&i]).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    assert!(results.iter().all(|r| matches!(r, Ok(1))));
    // Every response came after its event was queued; the session's end is checked too.
    drop(stmt);
    drop(alice);
    let evs = until_session_end(&sa).await;
    let inserts: Vec<&Value> = statements(&evs)
        .into_iter()
        .filter(|e| e["text"] == "insert into burst values ($1)")
        .collect();
    assert_eq!(inserts.len(), N as usize);
    assert!(inserts
        .iter()
        .all(|e| e["rows"] == 1 && e["outcome"] == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_copy_from_is_logged_with_its_row_count() {
    use crate::support::cmd::{run, success};
    let sa = SharedAccount::new(2, LOG).await;
    let data = sa.porter.dir().join("rows.txt");
    std::fs::write(&data, "c1\nc2\nc3\nc4\n").unwrap();
    let mut cmd = std::process::Command::new(sa.cluster.bin("psql"));
    cmd.arg(sa.connstring(&sa.bob))
        .args(["-X", "-q", "-c"])
        .arg(format!("\\copy datasets(name) from '{}'", data.display()))
        .env("PGCONNECT_TIMEOUT", "10");
    success(
        &run(cmd, std::time::Duration::from_secs(30)).await,
        "psql \\copy",
    );
    let evs = events(&sa, "audit.log").await;
    let copy = statements(&evs)
        .into_iter()
        .find(|e| e["text"].as_str().is_some_and(|t| t.starts_with("COPY")))
        .unwrap_or_else(|| panic!("no COPY event: {evs:#?}"));
    assert_eq!(copy["protocol"], "simple");
    assert_eq!(copy["rows"], 4);
    assert_eq!(copy["tags"][0], "COPY 4");
    assert_eq!(sa.change_log().await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_copy_in_leaves_the_server_connection_reusable() {
    // tokio-postgres pipelines a Sync behind the COPY's Execute; PostgreSQL ignores it in
    // copy-in mode. The connection must still count as idle afterwards and be pooled.
    let sa = SharedAccount::new(1, "").await;
    let alice = sa.connect(&sa.alice).await;
    let pid: i32 = alice
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let sink = alice
        .copy_in("copy datasets(name) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"a\nb\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    drop(alice);
    let alice = sa.connect(&sa.alice).await;
    let again: i32 = alice
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, pid, "the connection was closed instead of pooled");
}

/// Writes that reach the server without a logged text of their own are still logged: a
/// FunctionCall message (by function oid), a prepared statement pgporter has no text for (SQL
/// PREPARE), and a named statement the client tried to redefine (PostgreSQL keeps, and runs,
/// the first definition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_and_unknown_statements_are_logged() {
    use crate::support::raw::RawClient;
    let sa = SharedAccount::new(2, LOG).await;
    let mut c = RawClient::login(sa.porter.addr(), &sa.alice, sa.password(&sa.alice), &sa.db).await;
    // FunctionCall of pg_catalog.now() (oid 1299), no arguments, text result.
    c.send_msg(b'F', &[0, 0, 0x05, 0x13, 0, 0, 0, 0, 0, 0])
        .await;
    c.until_ready().await.unwrap();
    // SQL PREPARE, executed through the protocol.
    c.rows("PREPARE ins AS INSERT INTO datasets(name) VALUES ('via prepare')")
        .await;
    c.send_msg(b'B', b"\0ins\0\0\0\0\0\0\0").await;
    c.send_msg(b'E', b"\0\0\0\0\0").await;
    c.send_msg(b'S', b"").await;
    c.until_ready().await.unwrap();
    // A named statement redefined: the server refuses (42P05) and runs the first one.
    c.send_msg(
        b'P',
        b"s1\0INSERT INTO datasets(name) VALUES ('first')\0\0\0",
    )
    .await;
    c.send_msg(b'S', b"").await;
    c.until_ready().await.unwrap();
    c.send_msg(b'P', b"s1\0SELECT 1\0\0\0").await;
    c.send_msg(b'S', b"").await;
    c.until_ready().await.unwrap();
    c.send_msg(b'B', b"\0s1\0\0\0\0\0\0\0").await;
    c.send_msg(b'E', b"\0\0\0\0\0").await;
    c.send_msg(b'S', b"").await;
    c.until_ready().await.unwrap();
    // A first definition that failed: the name is free and the second one runs.
    c.send_msg(b'P', b"s2\0SELECT * FROM no_such_table\0\0\0")
        .await;
    c.send_msg(b'S', b"").await;
    c.until_ready().await.unwrap();
    c.send_msg(b'P', b"s2\0DELETE FROM datasets WHERE name = 'first'\0\0\0")
        .await;
    c.send_msg(b'B', b"\0s2\0\0\0\0\0\0\0").await;
    c.send_msg(b'E', b"\0\0\0\0\0").await;
    c.send_msg(b'S', b"").await;
    c.until_ready().await.unwrap();
    drop(c);
    let evs = until_session_end(&sa).await;
    let logged = texts(&evs);
    assert!(
        logged.contains(&"<function call, oid 1299>".to_string()),
        "{logged:?}"
    );
    assert!(
        logged.contains(&"<unknown prepared statement \"ins\">".to_string()),
        "{logged:?}"
    );
    let first = "INSERT INTO datasets(name) VALUES ('first')";
    assert!(logged.iter().any(|t| t.contains(first)), "{logged:?}");
    assert!(
        logged.iter().any(|t| t.starts_with("DELETE FROM datasets")),
        "{logged:?}"
    );
}

/// A statement refused for naming the identity settings is in the log (in `write` mode too),
/// with its 42501.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_spoof_attempts_are_logged() {
    let sa = SharedAccount::new(2, LOG).await;
    let alice = sa.connect(&sa.alice).await;
    alice
        .simple_query("SET pgporter.client_user = 'bob'")
        .await
        .expect_err("refused");
    alice
        .simple_query("insert into datasets(name) values ('after')")
        .await
        .unwrap();
    drop(alice);
    let evs = until_session_end(&sa).await;
    let refused = statements(&evs)
        .into_iter()
        .find(|e| e["text"] == "SET pgporter.client_user = 'bob'")
        .unwrap_or_else(|| panic!("no event for the refused statement: {evs:#?}"));
    assert_eq!(refused["outcome"], "error");
    assert_eq!(refused["sqlstate"], "42501");
    assert_eq!(refused["client_user"], sa.alice.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_mode_session_is_one_session_with_every_statement() {
    let sa = SharedAccount::new(1, &format!("{LOG}pool_mode = transaction\n")).await;
    let alice = sa.connect(&sa.alice).await;
    let bob = sa.connect(&sa.bob).await;
    for round in 0..3 {
        alice
            .simple_query(&format!("insert into datasets(name) values ('a{round}')"))
            .await
            .unwrap();
        // bob's turn on the one server connection in between (tagged for bob: a new one).
        bob.simple_query("select 1").await.unwrap();
    }
    drop(alice);
    let evs = until_session_end(&sa).await;
    let mine = |kind: &str| -> Vec<&Value> {
        evs.iter()
            .filter(|e| e["event"] == kind && e["client_user"] == sa.alice.as_str())
            .collect()
    };
    assert_eq!(mine("session_start").len(), 1, "{evs:#?}");
    assert_eq!(texts(&evs).len(), 3, "{evs:#?}");
    let end = mine("session_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["statements"].as_u64(), Some(3), "{evs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_in_one_transaction_is_named_in_the_next() {
    // Transaction mode: the Parse and the executions are different transactions, on whichever
    // connection each gets; the log still names what ran.
    for renaming in ["", "max_prepared_statements = 0\n"] {
        let sa = SharedAccount::new(1, &format!("{LOG}pool_mode = transaction\n{renaming}")).await;
        let alice = sa.connect(&sa.alice).await;
        let insert = alice
            .prepare("insert into datasets(name) values ($1)")
            .await
            .unwrap();
        for n in 0..2 {
            alice.execute(&insert, &[&format!("p{n}")]).await.unwrap();
        }
        drop((insert, alice));
        let evs = until_session_end(&sa).await;
        let logged = texts(&evs);
        assert_eq!(
            logged, ["insert into datasets(name) values ($1)"; 2],
            "{renaming:?}: {evs:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_portal_is_logged_with_the_rows_it_returned() {
    let sa = SharedAccount::new(1, &format!("{LOG}audit_statements = all\n")).await;
    let mut alice = sa.connect(&sa.alice).await;
    let tx = alice.transaction().await.unwrap();
    let stmt = tx
        .prepare("select g from generate_series(1, 10) g")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    // Execute with a row limit: 4 rows, PortalSuspended; then the other 6.
    assert_eq!(tx.query_portal(&portal, 4).await.unwrap().len(), 4);
    assert_eq!(tx.query_portal(&portal, 0).await.unwrap().len(), 6);
    tx.commit().await.unwrap();
    drop(alice);
    let evs = until_session_end(&sa).await;
    let rows: Vec<(Option<u64>, Value)> = statements(&evs)
        .iter()
        .filter(|e| e["text"] == "select g from generate_series(1, 10) g")
        .map(|e| (e["rows"].as_u64(), e["tags"].clone()))
        .collect();
    assert_eq!(rows.len(), 2, "{evs:#?}");
    assert_eq!(rows[0].0, Some(4), "{evs:#?}");
    assert_eq!(rows[1].0, Some(6), "{evs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_shows_in_the_metrics() {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let sa = SharedAccount::new(
        2,
        "audit_log = {dir}/audit.log\naudit_queue_size = 4\nmetrics_listen_addr = 127.0.0.1:0",
    )
    .await;
    let queue = || sa.porter.shared().audit.queue().expect("auditing is on");
    assert_eq!((queue().capacity, queue().stalls), (4, 0));
    // Rotate to a FIFO that is read only later: the writer blocks once the pipe is full.
    let dir = sa.porter.dir();
    std::fs::rename(dir.join("audit.log"), dir.join("audit.log.1")).unwrap();
    let fifo = dir.join("audit.log");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    sa.porter.shared().audit.reopen();
    let alice = sa.connect(&sa.alice).await;
    let writes = tokio::spawn(async move {
        for i in 0..2_000 {
            let sql = format!("insert into datasets(name) values ('stall {i}')");
            alice.batch_execute(&sql).await.expect("insert");
        }
    });
    // A stall may also come earlier, while the writer is merely slow: wait for the queue to
    // be full as well, which it stays while the FIFO is unread.
    let deadline = tokio::time::Instant::now() + HANG;
    while queue().stalls == 0 || queue().queued < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stall: {:?}",
            queue()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Drain the FIFO until the writes are done.
    let done = Arc::new(AtomicBool::new(false));
    let drain = std::thread::spawn({
        let done = Arc::clone(&done);
        move || {
            let mut buf = vec![0u8; 1 << 16];
            while !done.load(Ordering::Relaxed) {
                if !matches!(reader.read(&mut buf), Ok(n) if n > 0) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    });
    tokio::time::timeout(HANG, writes)
        .await
        .expect("the writes finish once the log is read")
        .unwrap();
    sa.porter.shared().audit.flush().await;
    done.store(true, Ordering::Relaxed);
    drain.join().unwrap();
    let (status, body) = crate::support::http::get(sa.porter.http_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    assert!(value("pgporter_audit_queue_full_total") >= 1.0);
    assert_eq!(value("pgporter_audit_queue_size"), 4.0);
    assert_eq!(value("pgporter_audit_queue_events"), 0.0);
}

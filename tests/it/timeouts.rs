//! PgBouncer's session timeouts: query_timeout, idle_transaction_timeout, client_idle_timeout.
//! Each ends the session with FATAL 08P01 and PgBouncer's text; the server connection is
//! closed (a running query cancelled), never handed to the next client.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use tokio::time::Instant;

use crate::support::raw::{Msg, RawClient};
use crate::support::{Fixture, HANG};

async fn raw(f: &Fixture) -> RawClient {
    RawClient::login(f.porter.addr(), &f.user, &f.password, &f.db).await
}

/// The FATAL the session ends with, then EOF; its text and how long it took.
async fn fatal(c: &mut RawClient) -> (String, Option<String>, Duration) {
    let started = Instant::now();
    loop {
        let m: Msg = tokio::time::timeout(HANG, c.read_msg())
            .await
            .expect("no FATAL in time")
            .expect("closed without a FATAL");
        if m.tag == b'E' {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            assert!(text.starts_with("SFATAL\0"), "{text:?}");
            assert!(c.read_msg().await.is_none(), "then the connection closes");
            return (text, m.sqlstate(), started.elapsed());
        }
    }
}

/// The session ends with FATAL 08P01 naming `what`, within `within` (then EOF).
async fn ends_08p01(c: &mut RawClient, what: &str, within: Duration) {
    let (text, code, took) = fatal(c).await;
    assert!(text.contains(what), "{text:?}");
    assert_eq!(code.as_deref(), Some("08P01"));
    assert!(took < within, "took {took:?}");
}

async fn server_count(f: &Fixture, query: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '{query}'",
        f.db
    );
    f.superuser()
        .await
        .query_one(&sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_ends_the_session_and_cancels_the_query() {
    let f = Fixture::with_settings(1, "query_timeout = 1").await;
    let mut c = raw(&f).await;
    assert_eq!(c.rows("SELECT 1").await.0, ["1"]);
    c.query("SELECT pg_sleep(30) -- slow one").await;
    ends_08p01(&mut c, "query timeout", Duration::from_secs(10)).await;
    let deadline = Instant::now() + HANG;
    while server_count(&f, "%slow one%").await > 0 {
        assert!(Instant::now() < deadline, "the query kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Quick statements and an idle session are not affected.
    let mut d = raw(&f).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.rows("SELECT 2").await.0, ["2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_rolls_back_and_ends_the_session() {
    let f = Fixture::with_settings(1, "idle_transaction_timeout = 1").await;
    (f.direct().await)
        .batch_execute("CREATE TABLE itx (a int)")
        .await
        .unwrap();
    let mut c = raw(&f).await;
    let (_, status, _) = c.rows("BEGIN; INSERT INTO itx VALUES (1)").await;
    assert_eq!(status, b'T');
    let (text, code, _) = fatal(&mut c).await;
    assert!(text.contains("idle transaction timeout"), "{text:?}");
    assert_eq!(code.as_deref(), Some("08P01"));
    let n: i64 = (f.direct().await)
        .query_one("SELECT count(*) FROM itx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the transaction was committed");
    // Outside a transaction a session may idle.
    let mut d = raw(&f).await;
    assert_eq!(d.rows("SELECT 1").await.0, ["1"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.rows("SELECT 2").await.0, ["2"]);
}

fn ended_by_transaction_timeout(text: &str, code: Option<&str>) {
    assert!(text.contains("transaction timeout"), "{text:?}");
    assert_eq!(code, Some("08P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_ends_a_long_transaction_not_a_long_session() {
    let f = Fixture::with_settings(1, "transaction_timeout = 1").await;
    // Many short transactions, together longer than the limit.
    let mut d = raw(&f).await;
    for n in 0..6 {
        assert_eq!(
            d.rows(&format!("SELECT {n}, pg_sleep(0.25)")).await.0.len(),
            1
        );
    }
    // Pipelined in one write, each its own transaction.
    let mut batch = Vec::new();
    for _ in 0..5 {
        batch.extend(b"Q\0\0\0\x19SELECT pg_sleep(0.3)\0");
    }
    d.send(&batch).await;
    for _ in 0..5 {
        let msgs = tokio::time::timeout(HANG, d.until_ready())
            .await
            .expect("answers in time")
            .expect("not ended");
        assert!(msgs.iter().all(|m| m.tag != b'E'), "{msgs:?}");
    }
    // One transaction of short statements, none idle long: ended at 1 s (on the pool's one
    // server connection, which d gives back).
    drop(d);
    let mut c = raw(&f).await;
    // The limit runs from the BEGIN's arrival, so time it from before the BEGIN is sent.
    let started = Instant::now();
    let (_, status, _) = c.rows("BEGIN").await;
    assert_eq!(status, b'T');
    let (text, code) = 'ended: loop {
        assert!(started.elapsed() < HANG, "no transaction timeout");
        c.query("SELECT pg_sleep(0.2)").await;
        loop {
            let m: Msg = tokio::time::timeout(HANG, c.read_msg())
                .await
                .expect("an answer in time")
                .expect("closed without a FATAL");
            match m.tag {
                b'E' => break 'ended (String::from_utf8_lossy(&m.body).into_owned(), m.sqlstate()),
                b'Z' => break,
                _ => {}
            }
        }
    };
    assert!(text.starts_with("SFATAL\0"), "{text:?}");
    ended_by_transaction_timeout(&text, code.as_deref());
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert!(c.read_msg().await.is_none(), "then the connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_counts_an_extended_batch_waiting_for_its_sync() {
    // Parse, Bind, Execute, Flush: the answers come, and PostgreSQL keeps the implicit
    // transaction open until the Sync, which this client does not send.
    let f = Fixture::with_settings(1, "transaction_timeout = 1").await;
    let mut c = raw(&f).await;
    c.send_all(&[
        (b'P', b"\0select 1\0\0\0"),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        (b'E', b"\0\0\0\0\0"),
        (b'H', b""),
    ])
    .await;
    let (text, code, waited) = fatal(&mut c).await;
    ended_by_transaction_timeout(&text, code.as_deref());
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_turned_on_counts_from_the_start_of_an_open_transaction() {
    let f = Fixture::with_settings(1, "").await;
    let mut c = raw(&f).await;
    let (_, status, _) = c.rows("BEGIN").await;
    assert_eq!(status, b'T');
    tokio::time::sleep(Duration::from_millis(4000)).await;
    // Open 4 s already: over at once, without waiting for the client. Counted from the reload
    // it would end 3 s after it; timed from before the reload, 2.5 s leave a loaded machine
    // room for the reload and the FATAL (0.9 s timed after the reload did not).
    let reloading = Instant::now();
    f.porter
        .reload_edited(|ini| ini.replace("[pgbouncer]\n", "[pgbouncer]\ntransaction_timeout = 3\n"))
        .await;
    let (text, code, _) = fatal(&mut c).await;
    ended_by_transaction_timeout(&text, code.as_deref());
    let waited = reloading.elapsed();
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_clients_without_a_server() {
    let f = Fixture::with_settings(2, "client_idle_timeout = 2").await;
    // Holds a server: left alone, as in PgBouncer.
    let mut busy = raw(&f).await;
    assert_eq!(busy.rows("SELECT 1").await.0, ["1"]);
    // Never asked for anything (parked in the lobby after 100 ms). Logged in late in a
    // wall-clock second, where counting whole seconds closed it almost a second early.
    let late = |ms: u32| ms > 850;
    while !late(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_millis(),
    ) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Timed from before the login: pgporter's idle clock starts before the client has read
    // the login's last message, so a clock started after it could see the close early.
    let started = Instant::now();
    let mut quiet = raw(&f).await;
    let (text, code, _) = fatal(&mut quiet).await;
    let took = started.elapsed();
    assert!(text.contains("client_idle_timeout"), "{text:?}");
    assert_eq!(code.as_deref(), Some("08P01"));
    // Never early (the idle time was kept in whole seconds: a client quiet since 10.9 s was
    // closed at 12.0 s, after 1.1 s); the check runs five times a second.
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    assert_eq!(busy.rows("SELECT 2").await.0, ["2"]);
}

/// 0 turns a limit off (PgBouncer's meaning): `client_login_timeout = 0` and
/// `server_reset_timeout = 0` let logins and resets take their time (they failed at once);
/// `server_lifetime = 0` uses each server connection for one client only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_means_no_limit_and_lifetime_zero_means_once() {
    let f = Fixture::with_settings(
        1,
        "client_login_timeout = 0\nserver_reset_timeout = 0\nserver_lifetime = 0",
    )
    .await;
    let mut pids = Vec::new();
    for _ in 0..3 {
        let mut c = raw(&f).await;
        let (rows, _, error) = c.rows("SELECT pg_backend_pid()").await;
        assert_eq!(error, None);
        pids.push(rows[0].clone());
        drop(c);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pids.dedup();
    assert_eq!(
        pids.len(),
        3,
        "a server connection served two clients: {pids:?}"
    );
}

/// autodb_idle_timeout: a pool made for a database reached through `*` is freed once unused
/// (any logged-in user can name databases: they must not pile up); a configured database's
/// pool stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_of_star_databases_are_freed_when_unused() {
    let f = Fixture::with_settings(2, "autodb_idle_timeout = 1").await;
    let other = f.cluster.unique_name("db");
    f.cluster.create_database(&other, &f.user).await;
    let ini = std::fs::read_to_string(f.porter.ini_path())
        .unwrap()
        .replacen(
            "[databases]\n",
            &format!(
                "[databases]\n* = host=127.0.0.1 port={}\n",
                f.cluster.port()
            ),
            1,
        );
    f.porter.store_config(&ini);
    let has = |db: &str| {
        f.porter
            .pool_counts()
            .iter()
            .any(|(k, _)| k.ends_with(&format!("@{db}")))
    };
    let mut mine = raw(&f).await;
    assert_eq!(mine.rows("SELECT 1").await.0, ["1"]);
    let mut star = RawClient::login(f.porter.addr(), &f.user, &f.password, &other).await;
    assert_eq!(
        star.rows("SELECT current_database()").await.0,
        std::slice::from_ref(&other)
    );
    // In use: kept however long.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(has(&other), "a pool in use was freed");
    drop(star);
    let deadline = Instant::now() + HANG;
    while has(&other) {
        assert!(Instant::now() < deadline, "the unused * pool stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(mine);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(has(&f.db), "a configured database's pool was freed");
}

/// A client that sends part of a message and stalls: before a whole header it holds no
/// server (another client is served; client_idle_timeout closes it); with the header sent
/// it holds one, and query_timeout frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_mid_message_does_not_hold_a_server_for_good() {
    let f = Fixture::with_settings(1, "client_idle_timeout = 1\nquery_timeout = 1").await;
    let mut header = raw(&f).await;
    header.send(b"Q\0\0").await;
    let mut other = raw(&f).await;
    assert_eq!(other.rows("SELECT 1").await.0, ["1"]);
    drop(other);
    let (text, _, _) = fatal(&mut header).await;
    assert!(text.contains("client_idle_timeout"), "{text:?}");

    let mut body = raw(&f).await;
    body.send(b"Q\0\0\0\x20SELE").await;
    let (text, code, _) = fatal(&mut body).await;
    assert!(text.contains("query timeout"), "{text:?}");
    assert_eq!(code.as_deref(), Some("08P01"));
    let mut next = raw(&f).await;
    assert_eq!(next.rows("SELECT 2").await.0, ["2"]);
}

/// query_timeout shorter than query_wait_timeout bounds the wait for a server too, as in
/// PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_bounds_the_wait_for_a_server() {
    let f = Fixture::with_settings(1, "query_timeout = 1\nquery_wait_timeout = 30").await;
    let mut holder = raw(&f).await;
    assert_eq!(holder.rows("SELECT 1").await.0, ["1"]);
    let mut waiter = raw(&f).await;
    waiter.query("SELECT 2").await;
    ends_08p01(&mut waiter, "query timeout", Duration::from_secs(10)).await;
    assert_eq!(holder.rows("SELECT 3").await.0, ["3"]);
}

/// asyncpg's prepare sends Parse, Describe, Flush and no Sync; a simple query later ends that
/// batch and leaves the server idle. query_timeout must not take such a session for busy and
/// end it while idle (it did, after query_timeout, with `FATAL query timeout`); nor one whose
/// count of answers became unknown (an error with a Query pipelined behind the failing batch),
/// which must still time out a slow query later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_spares_idle_sessions_after_unsynced_batches() {
    let f = Fixture::with_settings(2, "query_timeout = 1").await;
    let mut c = raw(&f).await;
    let mut parse = b"s1\0select $1::int\0".to_vec();
    parse.extend_from_slice(&[0, 0]);
    c.send_msg(b'P', &parse).await;
    c.send_msg(b'D', b"Ss1\0").await;
    c.send_msg(b'H', &[]).await;
    // ParseComplete, ParameterDescription, RowDescription.
    for tag in [b'1', b't', b'T'] {
        assert_eq!(c.read_msg().await.expect("answer").tag, tag);
    }
    assert_eq!(
        c.rows("select 1").await,
        (vec!["1".to_string()], b'I', None)
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        c.rows("select 2").await,
        (vec!["2".to_string()], b'I', None),
        "an idle session was ended"
    );

    let mut d = raw(&f).await;
    let mut parse = b"\0select 1/0\0".to_vec();
    parse.extend_from_slice(&[0, 0]);
    d.send_msg(b'P', &parse).await;
    d.send_msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    d.send_msg(b'E', &[0, 0, 0, 0, 0]).await;
    d.query("select 'skipped'").await;
    d.send_msg(b'S', &[]).await;
    let msgs = d.until_ready().await.expect("answers");
    assert!(msgs
        .iter()
        .any(|m| m.sqlstate().as_deref() == Some("22012")));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        d.rows("select 3").await,
        (vec!["3".to_string()], b'I', None),
        "an idle session was ended"
    );
    // A lone Flush then asks for nothing: still idle.
    d.send_msg(b'H', &[]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        d.rows("select 4").await,
        (vec!["4".to_string()], b'I', None),
        "an idle session was ended after a Flush"
    );
    // The count stays unknown for the rest of the session; a slow query still times out.
    d.query("select pg_sleep(8)").await;
    ends_08p01(&mut d, "query timeout", Duration::from_secs(6)).await;
}

/// A Parse that fails, seen through a Flush, makes PostgreSQL skip everything up to the next
/// Sync, a simple Query included (no answer at all). Counting an answer for it left the
/// session looking busy for good: `FATAL query timeout` while idle. A lone Flush after a
/// Query did the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_spares_sessions_after_queries_the_server_skipped() {
    let f = Fixture::with_settings(1, "query_timeout = 1").await;
    let mut c = raw(&f).await;
    c.send_msg(b'P', b"\0selec 1\0\0\0").await;
    c.send_msg(b'H', &[]).await;
    let error = c.read_msg().await.expect("the Parse's error");
    assert_eq!(error.sqlstate().as_deref(), Some("42601"));
    skipped_query_then_idle(&mut c).await;
    c.send_msg(b'H', &[]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        c.rows("select 3").await,
        (vec!["3".to_string()], b'I', None),
        "an idle session was ended after a Flush"
    );
}

/// With the server skipping to the next Sync: a Query (skipped, no answer), the Sync (only
/// ReadyForQuery), then idle past query_timeout, and the session still answers.
async fn skipped_query_then_idle(c: &mut RawClient) {
    c.query("select 'skipped'").await;
    c.send_msg(b'S', &[]).await;
    let answers = c.until_ready().await.expect("the Sync's answer");
    assert_eq!(answers.len(), 1, "only ReadyForQuery: {answers:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        c.rows("select 2").await,
        (vec!["2".to_string()], b'I', None),
        "an idle session was ended"
    );
}

/// The same after an extended-protocol COPY that fails: the server skips to the Sync, a Query
/// sent after the error included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_spares_sessions_after_a_failed_extended_copy() {
    let f = Fixture::with_settings(1, "query_timeout = 1").await;
    (f.direct().await)
        .batch_execute("CREATE TABLE ext_copy (x int)")
        .await
        .unwrap();
    let mut c = raw(&f).await;
    c.send_msg(b'P', b"\0copy ext_copy from stdin\0\0\0").await;
    c.send_msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]).await;
    c.send_msg(b'E', &[0, 0, 0, 0, 0]).await;
    c.send_msg(b'H', &[]).await;
    loop {
        let m = c.read_msg().await.expect("until CopyInResponse");
        if m.tag == b'G' {
            break;
        }
    }
    c.send_msg(b'f', b"given up\0").await;
    let error = c.read_msg().await.expect("the copy's error");
    assert_eq!(error.sqlstate().as_deref(), Some("57014"));
    skipped_query_then_idle(&mut c).await;
}

/// PgBouncer 1.24+'s per-database query_wait_timeout and per-user timeouts ([users]) apply
/// before the [pgbouncer] values, and a reload brings them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_and_per_user_timeouts() {
    let f = Fixture::with_settings(1, "query_wait_timeout = 60").await;
    let (db, user) = (f.db.clone(), f.user.clone());
    f.porter
        .reload_edited(|ini| {
            let line = format!("dbname={db}\n");
            assert!(ini.contains(&line), "{ini}");
            ini.replacen(&line, &format!("dbname={db} query_wait_timeout=1\n"), 1)
                + &format!("[users]\n{user} = idle_transaction_timeout=3\n")
        })
        .await;
    let mut holder = raw(&f).await;
    let (_, status, _) = holder.rows("BEGIN").await;
    assert_eq!(status, b'T');
    // The database's 1 s, not the global 60 s.
    let mut waiter = raw(&f).await;
    waiter.query("SELECT 1").await;
    ends_08p01(&mut waiter, "query_wait_timeout", Duration::from_secs(10)).await;
    // The user's idle_transaction_timeout (none globally).
    let (text, _, took) = fatal(&mut holder).await;
    assert!(text.contains("idle transaction timeout"), "{text:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// pool_idle_timeout (PgBouncer 1.25): a configured database's pool is freed once it has had
/// no client and no server connection that long (server_idle_timeout closes the last one);
/// the next client gets a new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_frees_empty_pools() {
    let f = Fixture::with_settings(2, "pool_idle_timeout = 1\nserver_idle_timeout = 1").await;
    let pools = || f.porter.pool_counts().len();
    let mut c = raw(&f).await;
    assert_eq!(c.rows("SELECT 1").await.0, ["1"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(pools(), 1, "a pool with a client was freed");
    drop(c);
    let deadline = Instant::now() + HANG;
    while pools() > 0 {
        assert!(Instant::now() < deadline, "the empty pool stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut again = raw(&f).await;
    assert_eq!(again.rows("SELECT 2").await.0, ["2"]);
}

/// A reload that changes only a [users] timeout reaches a session holding a server connection,
/// as a change in [pgbouncer] does (PgBouncer's janitor reads the current values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_per_user_timeout_reaches_running_sessions() {
    let f = Fixture::with_settings(1, "").await;
    let mut c = raw(&f).await;
    let (_, status, _) = c.rows("BEGIN").await;
    assert_eq!(status, b'T');
    let user = f.user.clone();
    f.porter
        .reload_edited(|ini| {
            ini.to_string() + &format!("[users]\n{user} = idle_transaction_timeout=1\n")
        })
        .await;
    ends_08p01(&mut c, "idle transaction timeout", Duration::from_secs(10)).await;
}

/// As in PgBouncer (whose janitor measures waiting clients against the current value), a
/// reload that changes query_wait_timeout reaches clients already waiting for a server
/// connection: shortened, a long wait ends at once; lengthened, a wait goes on past the old
/// limit and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_query_wait_timeout_reaches_waiting_clients() {
    let f = Fixture::with_settings(1, "query_wait_timeout = 60").await;
    let set = |from: &'static str, to: &'static str| {
        move |ini: &str| {
            assert!(ini.contains(from), "{ini}");
            ini.replacen(from, to, 1)
        }
    };
    let mut holder = raw(&f).await;
    assert_eq!(holder.rows("SELECT 1").await.0, ["1"]);
    let mut waiter = raw(&f).await;
    waiter.query("SELECT 2").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.porter
        .reload_edited(set("query_wait_timeout = 60", "query_wait_timeout = 1"))
        .await;
    ends_08p01(&mut waiter, "query_wait_timeout", Duration::from_secs(10)).await;

    // 4 s, not 1, under the waiter: its RELOAD must take before the old limit ends the wait,
    // which 1 s did not leave a loaded machine.
    f.porter
        .reload_edited(set("query_wait_timeout = 1", "query_wait_timeout = 4"))
        .await;
    let mut waiter = raw(&f).await;
    waiter.query("SELECT 3").await;
    f.porter
        .reload_edited(set("query_wait_timeout = 4", "query_wait_timeout = 60"))
        .await;
    tokio::time::sleep(Duration::from_millis(5000)).await;
    drop(holder);
    let answer = waiter.until_ready().await.expect("the waiter was served");
    let tags: Vec<u8> = answer.iter().map(|m| m.tag).collect();
    assert!(!tags.contains(&b'E') && tags.contains(&b'D'), "{tags:?}");
}

/// A host that accepts the TCP connection but never answers the startup packet (a hung
/// server, a half-dead proxy): as in PgBouncer 1.18 (checked live), the waiting client ends at
/// its query_wait_timeout with FATAL 08P01, not at the far longer server_connect_timeout, and
/// the login goes on without it (the socket stays open, counted sv_login) until
/// server_connect_timeout. It waited the whole server_connect_timeout and got 08006. While it
/// waits at login (the pool's first server connection), it is listed as PgBouncer 1.18 lists
/// it: waiting (cl_waiting), but not timed (SHOW POOLS maxwait and SHOW CLIENTS wait 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_login_that_never_answers_ends_at_query_wait_timeout() {
    use tokio::io::AsyncReadExt;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let ini = crate::support::fixture::ini(
        &[("silent", port)],
        2,
        "server_connect_timeout = 60\nquery_wait_timeout = 5\nadmin_users = adm",
    );
    let userlist = crate::support::fixture::userlist(&[("u", "pw"), ("adm", "pw")]);
    let porter = crate::support::porter::spawn_pgporter(&ini, &userlist).await;
    let admin = crate::support::connect(&porter.connstring("adm", "pw", "pgbouncer")).await;
    let started = Instant::now();
    let connstring = porter.connstring("u", "pw", "silent");
    let client = tokio::spawn(async move {
        tokio_postgres::connect(&connstring, tokio_postgres::NoTls)
            .await
            .map(|_| ())
    });
    let (mut login, _) = tokio::time::timeout(HANG, silent.accept())
        .await
        .expect("no server login")
        .unwrap();
    let mut startup = [0u8; 1024];
    assert!(
        login.read(&mut startup).await.unwrap() > 0,
        "no startup packet"
    );
    // Over a second in: a timed wait would show maxwait 1.
    tokio::time::sleep_until(started + Duration::from_millis(1200)).await;
    let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
    let pool = crate::admin::find(&pools, "database", "silent");
    let shown = ["cl_waiting", "sv_login", "maxwait", "maxwait_us"].map(|c| pool.get(c));
    assert_eq!(shown, [Some("1"), Some("1"), Some("0"), Some("0")]);
    let clients = crate::admin::rows(&admin, "SHOW CLIENTS").await;
    let waiter = crate::admin::find(&clients, "database", "silent");
    let shown = ["state", "wait", "wait_us"].map(|c| waiter.get(c));
    assert_eq!(shown, [Some("waiting"), Some("0"), Some("0")]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "checked too late"
    );

    let err = tokio::time::timeout(HANG, client)
        .await
        .expect("the client waited past query_wait_timeout")
        .unwrap()
        .expect_err("logged in through a silent server");
    let took = started.elapsed();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (db.severity(), db.code().code(), db.message()),
        (
            "FATAL",
            "08P01",
            "query_wait_timeout (held back by a server login)"
        )
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The login is the pool's: still under way, its socket open.
    let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
    let pool = crate::admin::find(&pools, "database", "silent");
    assert_eq!(
        (pool.get("cl_waiting"), pool.get("sv_login")),
        (Some("0"), Some("1"))
    );
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), login.read(&mut byte))
            .await
            .is_err(),
        "the login was given up with its client"
    );
}

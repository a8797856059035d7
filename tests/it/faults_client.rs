//! Faults on the client side: clients that vanish mid-transaction, mid-COPY and mid-result,
//! stall half-way through a message, read a huge result slowly, send cancels with bad keys,
//! or follow an SSLRequest with garbage. After each, the pool is back to its baseline and the
//! next client gets a clean server connection.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{pin_mut, SinkExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_postgres::NoTls;

use crate::support::checks::{
    assert_clean, backend_running, pool_at_baseline, server_conns_at_most,
};
use crate::support::fixture::{ini, userlist};
use crate::support::process::PorterProcess;
use crate::support::raw::RawClient;
use crate::support::{Fixture, HANG};

/// After a login-timeout fault: raise client_login_timeout again (a reload) so that the
/// recovery checks' own logins do not race a 1 s limit on a loaded machine.
fn relax_login_timeout(fx: &Fixture, size: u32) {
    fx.porter.store_config(&ini(
        &[(&fx.db, fx.cluster.port())],
        size,
        "client_login_timeout = 60",
    ));
}

async fn recovered(fx: &Fixture, size: u32) {
    pool_at_baseline(fx, size).await;
    server_conns_at_most(fx, i64::from(size)).await;
    let next = fx.connect().await;
    assert_clean(&next).await;
    drop(next);
    pool_at_baseline(fx, size).await;
}

/// Connect with tokio-postgres and return the client plus the task driving its socket:
/// aborting the task closes the socket without a Terminate.
async fn abortable(fx: &Fixture) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, conn) = tokio_postgres::connect(&fx.connstring(), NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_transaction() {
    let fx = Fixture::new(1).await;
    fx.direct()
        .await
        .batch_execute("create table kept (x int)")
        .await
        .unwrap();
    let (client, task) = abortable(&fx).await;
    client
        .batch_execute(
            "set search_path = pg_catalog; set statement_timeout = 1234; \
             set porter.tag = 'dirty'; prepare p as select 1; listen ch; \
             select pg_advisory_lock(42); \
             begin; create temp table tt (x int); insert into public.kept values (1); \
             declare c cursor for select 1",
        )
        .await
        .unwrap();
    task.abort();
    recovered(&fx, 1).await;
    let rows: i64 = fx
        .direct()
        .await
        .query_one("select count(*) from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "an abandoned transaction was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_copy_in() {
    let fx = Fixture::new(1).await;
    fx.direct()
        .await
        .batch_execute("create table t (x int)")
        .await
        .unwrap();
    let (client, task) = abortable(&fx).await;
    let sink = client.copy_in("copy t from stdin").await.expect("copy in");
    pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\n2\n")).await.unwrap();
    sink.flush().await.unwrap();
    task.abort();
    recovered(&fx, 1).await;
    let rows: i64 = fx
        .direct()
        .await
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "an abandoned COPY was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_large_result() {
    let fx = Fixture::new(1).await;
    let mut raw = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    raw.query("select repeat('x', 1000) from generate_series(1, 2000000)")
        .await;
    let mut got = 0;
    while got < 256 * 1024 {
        let n = raw.read_some(64 * 1024).await;
        assert!(n > 0, "result ended early");
        got += n;
    }
    drop(raw);
    recovered(&fx, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_startup_packet_hits_client_login_timeout() {
    let fx = Fixture::with_settings(1, "client_login_timeout = 1").await;
    // The login timeout runs from the accept: timed from before the connect.
    let started = Instant::now();
    let mut sock = TcpStream::connect(fx.porter.addr()).await.unwrap();
    // Length word says 100 bytes; only 10 follow.
    let mut half = BytesMut::new();
    half.put_i32(100);
    half.put_i32(196_608);
    half.put_slice(b"us");
    sock.write_all(&half).await.unwrap();
    let mut answer = Vec::new();
    timeout(HANG, sock.read_to_end(&mut answer))
        .await
        .expect("pgporter kept a silent half-started client past client_login_timeout")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(900));
    let msg = crate::support::raw::Msg {
        tag: answer.first().copied().unwrap_or(0),
        body: answer.get(5..).unwrap_or_default().to_vec(),
    };
    assert_eq!(msg.sqlstate().as_deref(), Some("08P01"), "{answer:?}");
    relax_login_timeout(&fx, 1);
    recovered(&fx, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_sasl_message_hits_client_login_timeout() {
    let fx = Fixture::with_settings(1, "client_login_timeout = 1").await;
    let mut raw = RawClient::connect(fx.porter.addr()).await;
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", fx.user.as_str()), ("database", fx.db.as_str())],
        &mut out,
    )
    .unwrap();
    raw.send(&out).await;
    let sasl = raw.read_msg().await.expect("AuthenticationSASL");
    assert_eq!(sasl.tag, b'R');
    // A SASLInitialResponse header promising 200 bytes, and 3 of them.
    raw.send(b"p\0\0\0\xccSCR").await;
    let reply = raw
        .read_msg()
        .await
        .expect("an ErrorResponse before closing");
    assert_eq!(reply.sqlstate().as_deref(), Some("08P01"));
    assert!(raw.read_msg().await.is_none(), "still open after the error");
    relax_login_timeout(&fx, 1);
    recovered(&fx, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_of_a_huge_result_keeps_pgporter_memory_bounded() {
    let fx = Fixture::new(1).await;
    let ini = ini(&[(&fx.db, fx.cluster.port())], 1, "");
    let list = userlist(&[(&fx.user, &fx.password)]);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_pgporter"));
    let porter = PorterProcess::spawn(bin, &ini, &list).await;
    let mut raw = RawClient::login(porter.addr(), &fx.user, &fx.password, &fx.db).await;
    let rss_before = porter.status_kb("VmRSS");
    // About 1 GB of rows; PostgreSQL produces them far faster than we read.
    raw.query("select repeat('x', 1000) from generate_series(1, 1000000)")
        .await;
    let mut read = 0usize;
    let mut peak = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        read += raw.read_some(16 * 1024).await;
        peak = peak.max(porter.status_kb("VmRSS"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "slow reader: read {} kB in 4 s; pgporter RSS {} kB before, peak {} kB",
        read / 1024,
        rss_before,
        peak
    );
    assert!(read > 0);
    assert!(
        peak < rss_before + 32 * 1024,
        "pgporter buffered the result: RSS {rss_before} kB -> {peak} kB"
    );
    drop(raw);
    // The process pgporter must still serve, with a clean server connection.
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
            porter.addr().port(),
            fx.user,
            fx.password,
            fx.db
        ),
        NoTls,
    )
    .await
    .expect("connect after the slow reader");
    tokio::spawn(conn);
    assert_clean(&client).await;
}

/// A CancelRequest with this key on a fresh connection; returns once pgporter closed it.
async fn send_cancel(fx: &Fixture, pid: i32, secret: i32) {
    let mut sock = TcpStream::connect(fx.porter.addr()).await.unwrap();
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, secret, &mut out);
    sock.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    timeout(HANG, sock.read_to_end(&mut rest))
        .await
        .expect("cancel connection left open")
        .ok();
    assert!(rest.is_empty(), "a cancel request got an answer: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_unknown_or_stale_key_is_ignored() {
    let fx = Fixture::new(2).await;
    // A stale key: its session is gone.
    let gone = fx.connect().await;
    let stale = gone.cancel_token();
    drop(gone);
    pool_at_baseline(&fx, 2).await;

    let busy = fx.connect().await;
    let sleeping = tokio::spawn(async move {
        busy.simple_query("select pg_sleep(1.5)")
            .await
            .map(|_| busy)
    });
    backend_running(&fx, "pg_sleep(1.5)").await;
    for (pid, secret) in [(0, 0), (1, 2), (i32::MAX, -1), (-5, 7)] {
        send_cancel(&fx, pid, secret).await;
    }
    stale.cancel_query(NoTls).await.expect("stale cancel sent");
    let busy = timeout(HANG, sleeping)
        .await
        .expect("hung")
        .unwrap()
        .expect("a query was cancelled by a key that is not its own");

    // The right key still works.
    let token = busy.cancel_token();
    let long = tokio::spawn(async move { busy.simple_query("select pg_sleep(30)").await });
    backend_running(&fx, "pg_sleep(30)").await;
    token.cancel_query(NoTls).await.unwrap();
    let err = timeout(HANG, long)
        .await
        .expect("cancel did not land")
        .unwrap()
        .expect_err("query not cancelled");
    assert_eq!(err.as_db_error().map(|d| d.code().code()), Some("57014"));
    recovered(&fx, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_then_garbage() {
    let fx = Fixture::new(1).await;
    let ssl_request: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    for (together, garbage) in [
        (false, &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..]), // a TLS ClientHello
        (false, &b"GET / HTTP/1.1\r\n\r\n"[..]),
        (false, &b"\xff\xff\xff\xff\x00\x03\x00\x00"[..]),
        (true, &b"\x00\x00\x00\x08\x04\xd2\x16\x2f"[..]),
    ] {
        let mut sock = TcpStream::connect(fx.porter.addr()).await.unwrap();
        let mut first = ssl_request.to_vec();
        if together {
            first.extend_from_slice(garbage);
        }
        sock.write_all(&first).await.unwrap();
        if !together {
            let mut n = [0u8; 1];
            sock.read_exact(&mut n).await.expect("answer to SSLRequest");
            assert_eq!(&n, b"N");
            let _ = sock.write_all(garbage).await;
        }
        let mut rest = Vec::new();
        timeout(Duration::from_secs(10), sock.read_to_end(&mut rest))
            .await
            .expect("pgporter neither answered nor closed after SSLRequest + garbage")
            .ok();
        assert!(
            rest.is_empty() || rest.first() == Some(&b'E'),
            "unexpected answer {rest:?}"
        );
    }
    recovered(&fx, 1).await;
}

/// Regression: a client logging in on a cold pool used to keep the server connection made
/// for its welcome, so a burst of idle clients held every server while the logins queued
/// behind them hit client_login_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_burst_on_a_cold_pool() {
    // Generous limits: under the old behaviour 18 of these logins never get a server.
    let fx = Fixture::with_settings(2, "client_login_timeout = 30\nquery_wait_timeout = 30").await;
    let connstring = fx.connstring();
    let logins = (0..20).map(|_| tokio_postgres::connect(&connstring, NoTls));
    let mut clients = Vec::new();
    for login in futures_util::future::join_all(logins).await {
        let (client, conn) = login.expect("a login of the burst failed");
        tokio::spawn(conn);
        clients.push(client);
    }
    // Logged in and idle: nobody holds a server connection.
    for (_, c) in fx.porter.pool_counts() {
        assert!(c.total <= 2 && c.idle == c.total, "{c:?}");
    }
    // Session mode: a server stays with its client until it leaves, so one after another.
    for c in clients {
        c.simple_query("select 1").await.expect("query");
    }
    recovered(&fx, 2).await;
}

/// A client that leaves in the middle of a message pgporter had started forwarding (a
/// CopyData outside COPY: the server waits for its body): the server connection is closed,
/// not reset; the reset query would be read as the rest of that body and the next client
/// waited for server_reset_timeout (15 s) before a new connection was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishes_mid_message() {
    let fx = Fixture::new(1).await;
    let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    assert_eq!(c.rows("select 1").await.2, None);
    let mut partial = vec![b'd'];
    partial.extend_from_slice(&104i32.to_be_bytes());
    partial.extend_from_slice(&[b'x'; 10]);
    c.send(&partial).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    let started = Instant::now();
    let next = timeout(Duration::from_secs(10), async {
        let mut n = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
        n.rows("select 2").await
    })
    .await
    .expect("the next client waited for the reset of a connection cut mid-message");
    assert_eq!(next, (vec!["2".to_string()], b'I', None));
    assert!(started.elapsed() < Duration::from_secs(10));
    recovered(&fx, 1).await;
}

/// A CancelRequest for a client waiting for a server connection (pool full) ends its wait:
/// its request is answered as PostgreSQL answers a cancelled one (ERROR 57014, then
/// ReadyForQuery; for an extended batch the error at once and ReadyForQuery at its Sync) and
/// never runs; the session goes on. It was dropped: the request ran once a server freed,
/// after the client had given up on it (asyncpg's timeout: the row was inserted anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_waiting_for_a_server_cancels_the_request() {
    let fx = Fixture::with_settings(1, "query_wait_timeout = 60").await;
    (fx.direct().await)
        .batch_execute("CREATE TABLE waited (x int)")
        .await
        .unwrap();
    let holder = fx.connect().await;
    holder.simple_query("select 1").await.unwrap();
    let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    c.query("insert into waited values (1)").await;
    let msgs = cancel_while_queued(&fx, &mut c).await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("57014"));
    assert_eq!(msgs[1].body, b"I");

    // An extended batch, cancelled the same way.
    c.extended("insert into waited values (2)").await;
    let msgs = cancel_while_queued(&fx, &mut c).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, [b'E', b'Z'], "{msgs:?}");

    // The session goes on: served once the holder leaves; neither insert ran.
    drop(holder);
    assert_eq!(
        c.rows("select count(*) from waited").await,
        (vec!["0".to_string()], b'I', None)
    );
    drop(c);
    recovered(&fx, 1).await;
}

/// A cancel that comes while pgporter sets a just-granted server connection up for the client
/// (its own SETs of the client's startup parameters, before the request is sent) cancels the
/// client's request the same way. It went to the server, to pgporter's SET (a FATAL for the
/// client, or ignored by an idle backend and the request ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_a_server_is_set_up_cancels_the_request() {
    let fx = Fixture::new(1).await;
    (fx.direct().await)
        .batch_execute("CREATE TABLE set_up (x int)")
        .await
        .unwrap();
    let pid = crate::faults_server::served_by(&fx).await;
    pool_at_baseline(&fx, 1).await;
    // The backend stops answering: pgporter's SET waits on it.
    crate::faults_server::signal(pid, "-STOP");
    let params = [("application_name", "set-up"), ("TimeZone", "UTC+3")];
    let (mut c, _) =
        RawClient::login_with(fx.porter.addr(), &fx.user, &fx.password, &fx.db, &params).await;
    c.query("insert into set_up values (1)").await;
    let deadline = Instant::now() + HANG;
    while !fx.porter.pool_counts().iter().any(|(_, n)| n.idle == 0) {
        assert!(Instant::now() < deadline, "the server was never granted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the session counts as holding its server (PAUSE, WAIT_CLOSE and SHOW
    // SERVERS see it; they missed it when the link was published only after the set-up).
    let snapshot = pgporter::snapshot::Snapshot::take(fx.porter.shared());
    assert!(
        snapshot
            .servers
            .iter()
            .any(|s| s.pid == pid && s.state == "active"),
        "{:?}",
        snapshot.servers
    );
    let (key_pid, secret) = c.key.expect("BackendKeyData");
    send_cancel(&fx, key_pid, secret).await;
    crate::faults_server::signal(pid, "-CONT");
    let msgs = timeout(HANG, c.until_ready())
        .await
        .expect("the cancelled request was not answered")
        .expect("answers");
    let codes: Vec<_> = msgs.iter().filter_map(|m| m.sqlstate()).collect();
    assert_eq!(codes, ["57014"], "{msgs:?}");
    assert_eq!(
        c.rows("select count(*) from set_up").await,
        (vec!["0".to_string()], b'I', None),
        "the cancelled request ran"
    );
    assert_eq!(
        c.rows("select current_setting('application_name')").await,
        (vec!["set-up".to_string()], b'I', None),
    );
    drop(c);
    recovered(&fx, 1).await;
}

/// Parse, Bind, Execute and Flush of `sql`: a batch without its Sync.
async fn unsynced_batch(c: &mut RawClient, sql: &str) {
    let parse = format!("\0{sql}\0\0\0");
    c.send_all(&[
        (b'P', parse.as_bytes()),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        (b'E', b"\0\0\0\0\0"),
        (b'H', b""),
    ])
    .await;
}

/// The session's next message is its FATAL (`what`, 08P01), within 10 s; then it closes.
async fn ends_with(c: &mut RawClient, what: &str) {
    let started = Instant::now();
    let m = timeout(HANG, c.read_msg())
        .await
        .expect("the session was not ended")
        .expect("a FATAL before the close");
    assert_eq!(m.error_field(b'S').as_deref(), Some("FATAL"), "{m:?}");
    assert_eq!(m.error_field(b'M').as_deref(), Some(what), "{m:?}");
    assert_eq!(m.sqlstate().as_deref(), Some("08P01"), "{m:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{m:?}");
    assert!(c.read_msg().await.is_none(), "then the connection closes");
}

/// A batch cancelled while it waited for a server connection is skipped up to its Sync
/// (ERROR 57014 at once). Holding no server connection meanwhile, the session is idle:
/// client_idle_timeout ends it when the Sync never comes. It waited for good, counted as
/// waiting for a server and out of every limit's reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cancelled_while_waiting_and_never_synced_ends_at_client_idle_timeout() {
    let fx = Fixture::with_settings(1, "query_wait_timeout = 60\nclient_idle_timeout = 1").await;
    let holder = fx.connect().await;
    holder.simple_query("select 1").await.unwrap();
    let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    unsynced_batch(&mut c, "select 1").await;
    let (pid, secret) = c.key.expect("BackendKeyData");
    let deadline = Instant::now() + HANG;
    while !fx.porter.pool_counts().iter().any(|(_, n)| n.waiting == 1) {
        assert!(Instant::now() < deadline, "the client never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_cancel(&fx, pid, secret).await;
    answered_57014(&mut c).await;
    ends_with(&mut c, "client_idle_timeout").await;
    assert_eq!(holder.simple_query("select 2").await.unwrap().len(), 3);
}

/// The same batch cancelled while its server connection is set up: skipped up to its Sync
/// with the connection held, so the session's limits run as for a request in progress, and
/// query_timeout ends a session whose Sync never comes; the connection serves the next
/// client. Only a kill reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cancelled_while_set_up_and_never_synced_ends_at_query_timeout() {
    let fx = Fixture::with_settings(1, "query_timeout = 1").await;
    let pid = crate::faults_server::served_by(&fx).await;
    pool_at_baseline(&fx, 1).await;
    // The backend stops answering: pgporter's SET of the client's parameters waits on it.
    crate::faults_server::signal(pid, "-STOP");
    let params = [("application_name", "set-up"), ("TimeZone", "UTC+3")];
    let (mut c, _) =
        RawClient::login_with(fx.porter.addr(), &fx.user, &fx.password, &fx.db, &params).await;
    unsynced_batch(&mut c, "select 1").await;
    let deadline = Instant::now() + HANG;
    while !fx.porter.pool_counts().iter().any(|(_, n)| n.idle == 0) {
        assert!(Instant::now() < deadline, "the server was never granted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (key_pid, secret) = c.key.expect("BackendKeyData");
    send_cancel(&fx, key_pid, secret).await;
    crate::faults_server::signal(pid, "-CONT");
    answered_57014(&mut c).await;
    ends_with(&mut c, "query timeout").await;
    let mut next = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    assert_eq!(next.rows("select 2").await.0, ["2"]);
}

/// Once `c` waits for a server connection, cancel its request; its answer through
/// ReadyForQuery.
async fn cancel_while_queued(fx: &Fixture, c: &mut RawClient) -> Vec<crate::support::raw::Msg> {
    let (pid, secret) = c.key.expect("BackendKeyData");
    let deadline = Instant::now() + HANG;
    while !fx.porter.pool_counts().iter().any(|(_, n)| n.waiting == 1) {
        assert!(Instant::now() < deadline, "the client never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_cancel(fx, pid, secret).await;
    timeout(HANG, c.until_ready())
        .await
        .expect("the cancelled request was not answered")
        .expect("answers")
}

/// The next message `c` gets is the cancelled batch's 57014.
async fn answered_57014(c: &mut RawClient) {
    let cancelled = timeout(HANG, c.read_msg()).await.expect("no answer");
    let cancelled = cancelled.expect("the cancelled batch's error");
    assert_eq!(
        cancelled.sqlstate().as_deref(),
        Some("57014"),
        "{cancelled:?}"
    );
}

//! Misbehaving clients and resource limits: pgporter answers or closes, never hangs, and
//! keeps serving everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::checks::backend_running;
use crate::support::{db_error, Fixture, HANG};

/// What the server did with a bad opening: answered with an ErrorResponse, or closed.
#[derive(Debug, PartialEq, Eq)]
enum Reaction {
    ErrorResponse,
    Closed,
}

/// Send `bytes` as the very first thing on a fresh connection and see what happens.
async fn send_raw(fx: &Fixture, bytes: &[u8]) -> Reaction {
    let mut sock = TcpStream::connect(fx.porter.addr())
        .await
        .expect("tcp connect");
    // The peer may close while we are still writing; that counts as closing.
    if sock.write_all(bytes).await.is_err() {
        return Reaction::Closed;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf)).await;
    match read {
        Err(_) => panic!(
            "pgporter neither answered nor closed within 10 s after {:?}",
            String::from_utf8_lossy(bytes)
        ),
        Ok(Ok(_)) | Ok(Err(_)) if buf.first() == Some(&b'E') => Reaction::ErrorResponse,
        Ok(Ok(_)) if buf.is_empty() => Reaction::Closed,
        Ok(Err(_)) if buf.is_empty() => Reaction::Closed, // reset
        Ok(_) => panic!("unexpected answer to a bad startup: {buf:?}"),
    }
}

async fn still_serves(fx: &Fixture) {
    let client = fx.connect().await;
    let row = client
        .query_one("select 1::int4", &[])
        .await
        .expect("select 1");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_startup_packet() {
    let fx = Fixture::new(2).await;
    let reaction = send_raw(&fx, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    eprintln!("garbage startup -> {reaction:?}");
    still_serves(&fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_startup_length_is_refused_without_hanging() {
    let fx = Fixture::new(2).await;
    let mut packet = Vec::new();
    packet.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    packet.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    packet.extend_from_slice(b"user\0x\0\0");
    let reaction = send_raw(&fx, &packet).await;
    eprintln!("oversized startup -> {reaction:?}");
    // A tiny length (< 8) is just as invalid.
    let reaction = send_raw(&fx, &[0, 0, 0, 2]).await;
    eprintln!("undersized startup -> {reaction:?}");
    still_serves(&fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_frees_the_pool_slot() {
    let fx = Fixture::new(1).await;
    let (client, conn) = tokio_postgres::connect(&fx.connstring(), NoTls)
        .await
        .expect("connect");
    let conn_task = tokio::spawn(conn);
    let query = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Dropping the connection future closes the socket without a Terminate.
    conn_task.abort();
    let _ = query.await;

    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        let client = fx.connect().await;
        client.simple_query("select 1").await
    })
    .await
    .expect("the next client was not served within 10 s");
    next.expect("the next client's query failed");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served, but only after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhausted_client_gets_query_wait_timeout() {
    let fx = Fixture::new(1).await;
    let holder = fx.connect().await;
    holder
        .simple_query("select 1")
        .await
        .expect("holder's query");

    let started = Instant::now();
    // The refusal may come at login or at the first query, depending on when the server is
    // assigned; either way it must be the query_wait_timeout error.
    let outcome = tokio::time::timeout(HANG, async {
        let (client, conn) = tokio_postgres::connect(&fx.connstring(), NoTls).await?;
        tokio::spawn(conn);
        client.simple_query("select 1").await.map(|_| ())
    })
    .await
    .expect("waiting client hung well past query_wait_timeout");
    let elapsed = started.elapsed();
    let err = outcome.expect_err("second client was served although the pool (size 1) was busy");
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION, "{err:?}");
    assert!(
        db.message().contains("query_wait_timeout"),
        "{}",
        db.message()
    );
    assert!(
        elapsed < Duration::from_secs(2 + 3),
        "query_wait_timeout = 2 s, but the error took {elapsed:?}"
    );
    // The holder is unaffected.
    holder
        .simple_query("select 2")
        .await
        .expect("holder still works");
}

/// A startup packet with `version` and `params`, sent raw; returns the first message back.
async fn first_answer(fx: &Fixture, version: u32, params: &[(&str, &str)]) -> (u8, Vec<u8>) {
    let packet = startup_packet(fx, version, params);
    let mut c = crate::support::raw::RawClient::connect(fx.porter.addr()).await;
    c.send(&packet).await;
    let m = c.read_msg().await.expect("an answer");
    (m.tag, m.body)
}

/// A startup packet for the fixture's user and database, with `version` and `params`.
fn startup_packet(fx: &Fixture, version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in [("user", fx.user.as_str()), ("database", fx.db.as_str())]
        .iter()
        .chain(params)
    {
        for s in [k, v] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).expect("a small packet");
    let mut packet = len.to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// A client that asks for encryption again after an `N` (SSLRequest or GSSENCRequest, as many
/// times as it likes) gets `N` each time, as from PgBouncer 1.18 (checked live: 200
/// SSLRequests in a row, each answered `N`; PostgreSQL 15 ends a second SSLRequest with FATAL
/// 0A000 `unsupported frontend protocol 1234.5679`); then its startup packet logs in.
/// pgporter ended the connection with an error at the fourth request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_encryption_requests_are_each_answered_n() {
    const SSL: u32 = 80_877_103;
    const GSS: u32 = 80_877_104;
    let fx = Fixture::new(1).await;
    let mut sock = TcpStream::connect(fx.porter.addr())
        .await
        .expect("tcp connect");
    for (i, code) in [SSL, SSL, GSS, SSL, SSL, GSS, SSL].into_iter().enumerate() {
        let mut request = 8u32.to_be_bytes().to_vec();
        request.extend_from_slice(&code.to_be_bytes());
        sock.write_all(&request).await.expect("request sent");
        let mut answer = [0u8; 1];
        tokio::time::timeout(HANG, sock.read_exact(&mut answer))
            .await
            .expect("answered within HANG")
            .expect("an answer");
        assert_eq!(answer, *b"N", "request {i} ({code})");
    }
    let packet = startup_packet(&fx, 0x0003_0000, &[]);
    sock.write_all(&packet).await.expect("startup sent");
    let mut tag = [0u8; 1];
    tokio::time::timeout(HANG, sock.read_exact(&mut tag))
        .await
        .expect("answered within HANG")
        .expect("an answer");
    assert_eq!(tag, *b"R", "the login goes on");
}

/// A client asking for protocol 3.2, or naming `_pq_.` options, is told 3.0 (the whole version
/// number, as PostgreSQL sends it: libpq 18 refuses anything below 3.0) and which options
/// pgporter ignores; then the login goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_minor_versions_are_negotiated_down_to_3_0() {
    let fx = Fixture::new(1).await;
    let (tag, body) = first_answer(&fx, 0x0003_0002, &[]).await;
    assert_eq!(tag, b'v');
    assert_eq!(body, [0, 3, 0, 0, 0, 0, 0, 0]);
    let (tag, body) = first_answer(&fx, 0x0003_0000, &[("_pq_.foo", "1")]).await;
    assert_eq!(tag, b'v');
    assert_eq!(body, b"\0\x03\0\0\0\0\0\x01_pq_.foo\0");
    let (tag, _) = first_answer(&fx, 0x0003_0000, &[]).await;
    assert_eq!(tag, b'R', "a plain 3.0 startup needs no negotiation");
    // Another major version: PostgreSQL's FATAL 0A000.
    let (tag, body) = first_answer(&fx, 0x0002_0000, &[]).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(tag, b'E');
    assert!(text.contains("C0A000\0"), "{text:?}");
    assert!(
        text.contains("unsupported frontend protocol 2.0"),
        "{text:?}"
    );
}

/// A replication connection cannot go through a pooler: refused at login (PgBouncer 1.18's
/// message), while `replication=false` is an ordinary session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connections_are_refused() {
    let fx = Fixture::new(1).await;
    for (value, refused) in [("database", true), ("true", true), ("false", false)] {
        let (addr, user, password, db) = (
            fx.porter.addr(),
            fx.user.clone(),
            fx.password.clone(),
            fx.db.clone(),
        );
        // A refused login panics in the helper: its task fails.
        let outcome = tokio::spawn(async move {
            let params = [("replication", value)];
            crate::support::raw::RawClient::login_with(addr, &user, &password, &db, &params).await
        })
        .await;
        assert_eq!(outcome.is_err(), refused, "replication={value}");
    }
    still_serves(&fx).await;
}

/// A startup parameter the server refuses, found when the client's first query SETs it on a
/// reused server connection: a FATAL (the client's login failing late), not an ERROR and EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_startup_parameter_is_fatal() {
    // Pool size 1: the idle connection is reused and SET; size 2: a new one may be opened
    // with the client's parameters, and PostgreSQL refuses that login.
    for size in [1, 2] {
        refused_startup_parameter(size).await;
    }
}

async fn refused_startup_parameter(size: u32) {
    let fx = Fixture::new(size).await;
    drop(
        fx.connect()
            .await
            .simple_query("SELECT 1")
            .await
            .expect("warm-up query"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, _) = crate::support::raw::RawClient::login_with(
        fx.porter.addr(),
        &fx.user,
        &fx.password,
        &fx.db,
        &[("TimeZone", "Bogus/Zone")],
    )
    .await;
    c.query("SELECT 1").await;
    let m = c.read_msg().await.expect("an error");
    assert_eq!(m.sqlstate().as_deref(), Some("22023"));
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert!(text.starts_with("SFATAL\0"), "{text:?}");
    assert!(c.read_msg().await.is_none(), "then the connection closes");
}

/// A client that leaves while it waits for a server connection (closing, or Terminate behind
/// its query) leaves the queue, and its query never runs (PgBouncer drops it too): an
/// application that timed out and retried must not get its write applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_waiting_has_nothing_run() {
    let fx = Fixture::with_settings(1, "query_wait_timeout = 30").await;
    let direct = fx.direct().await;
    direct
        .batch_execute("CREATE TABLE ghost (x int)")
        .await
        .unwrap();
    let holder = fx.connect().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    for terminate in [false, true] {
        let mut c =
            crate::support::raw::RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db)
                .await;
        c.query("INSERT INTO ghost VALUES (42)").await;
        let deadline = Instant::now() + HANG;
        while fx.porter.pool_counts().iter().all(|(_, n)| n.waiting == 0) {
            assert!(Instant::now() < deadline, "the client never queued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if terminate {
            c.send(b"X\0\0\0\x04").await;
        }
        drop(c);
        while fx.porter.pool_counts().iter().any(|(_, n)| n.waiting > 0) {
            assert!(
                Instant::now() < deadline,
                "the departed client stayed queued"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    holder.batch_execute("COMMIT").await.unwrap();
    drop(holder);
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serves(&fx).await;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM ghost", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a departed client's query ran");
}

/// A request sent together with its Terminate (fire and forget) runs, as on PostgreSQL, also
/// when its server connection has to be opened or is busy for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_with_its_terminate_runs() {
    let fx = Fixture::with_settings(2, "query_wait_timeout = 30").await;
    let direct = fx.direct().await;
    direct
        .batch_execute("CREATE TABLE fired (x int)")
        .await
        .unwrap();
    for i in 0..10 {
        let mut c =
            crate::support::raw::RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db)
                .await;
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query(
            &format!("INSERT INTO fired VALUES ({i})"),
            &mut out,
        )
        .unwrap();
        out.extend_from_slice(b"X\0\0\0\x04");
        c.send(&out).await;
        drop(c);
    }
    let deadline = Instant::now() + HANG;
    loop {
        let n: i64 = direct
            .query_one("SELECT count(*) FROM fired", &[])
            .await
            .unwrap()
            .get(0);
        if n == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 10 fire-and-forget inserts ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serves(&fx).await;
}

/// Over max_client_conn a client gets `FATAL 53300 no more connections allowed`, also a libpq
/// client with its default sslmode=prefer (its SSLRequest is answered first; otherwise libpq
/// reports only "server sent an error response during SSL exchange").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refusal_reaches_libpq_clients() {
    let fx = Fixture::with_settings(1, "max_client_conn = 1").await;
    let _holder = fx.connect().await;
    for ssl in ["prefer", "disable"] {
        let conn = format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} sslmode={ssl}",
            fx.porter.port(),
            fx.user,
            fx.password,
            fx.db
        );
        let err = crate::support::psql::psql_err(&conn, "SELECT 1").await;
        assert!(
            err.contains("no more connections allowed"),
            "sslmode={ssl}: {err}"
        );
    }
}

/// A request sent in the same write as the login (here the startup packet, trust auth) is
/// answered at once, as PostgreSQL does: it does not wait for the client's next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_behind_the_login_is_answered() {
    let fx = Fixture::with_settings(1, "auth_type = trust").await;
    let mut c = crate::support::raw::RawClient::connect(fx.porter.addr()).await;
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", fx.user.as_str()), ("database", fx.db.as_str())],
        &mut out,
    )
    .unwrap();
    postgres_protocol::message::frontend::query("SELECT 'pipelined'", &mut out).unwrap();
    c.send(&out).await;
    let mut tags = Vec::new();
    let mut rows = 0;
    while rows == 0 || tags.last() != Some(&b'Z') {
        let m = c
            .read_msg()
            .await
            .expect("no answer to the pipelined query");
        if m.tag == b'D' {
            rows += 1;
        }
        tags.push(m.tag);
    }
    assert_eq!(rows, 1, "{:?}", String::from_utf8_lossy(&tags));
}

/// With max_client_conn reached, a CancelRequest is still forwarded (it is not a client): a
/// driver's timeout cancel matters most when the pooler is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_forwarded_when_max_client_conn_is_reached() {
    let fx = Fixture::with_settings(2, "max_client_conn = 2").await;
    let sleeper = fx.connect().await;
    let _other = fx.connect().await;
    let token = sleeper.cancel_token();
    let started = Instant::now();
    let running = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(30)").await });
    backend_running(&fx, "pg_sleep(30)").await;
    token.cancel_query(NoTls).await.expect("cancel sent");
    let e = tokio::time::timeout(HANG, running)
        .await
        .expect("the query was not cancelled")
        .expect("task")
        .expect_err("cancelled");
    assert_eq!(db_error(&e).code(), &SqlState::QUERY_CANCELED);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// disable_pqexec, as PgBouncer's: a simple Query (one packet, many statements) ends the
/// session with FATAL 08P01 "PQexec disallowed"; the extended protocol works, and the session
/// that was refused took no server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_pqexec_refuses_simple_queries() {
    let fx = Fixture::with_settings(1, "disable_pqexec = 1").await;
    let extended = fx.connect().await;
    let row = extended
        .query_one("select $1::int4", &[&7i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let simple = fx.connect().await;
    let err = simple
        .simple_query("select 1; drop table x")
        .await
        .expect_err("refused");
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION);
    assert_eq!(db.message(), "PQexec disallowed");
    assert!(simple.is_closed() || simple.simple_query("select 1").await.is_err());
    // Mid-session too: the extended client still has its connection, then is refused.
    let err = extended
        .simple_query("select 2")
        .await
        .expect_err("refused");
    assert_eq!(db_error(&err).message(), "PQexec disallowed");
    let again = fx.connect().await;
    let row = again.query_one("select 3::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}

/// A Flush with a body is refused by PostgreSQL (`ERROR 08P01 invalid message format`, checked
/// live), which then skips everything up to the next Sync, as after any failed
/// extended-protocol message. pgporter took a Flush for a message that asks for nothing, so a
/// client leaving right after one had its server connection taken for idle: the release's
/// reset query went to a server skipping to a Sync, and the client's socket and the pool's
/// only connection were held until server_reset_timeout (here 60 s); in transaction mode the
/// connection was released at the Flush and the error never reached the client. Found by the
/// fuzz round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_after_a_flush_with_a_body_is_let_go_at_once() {
    use crate::support::raw::RawClient;
    use crate::support::Spec;
    let fx = Fixture::custom(|_| Spec {
        pool_size: 1,
        ..Spec::new("server_reset_timeout = 60\nquery_wait_timeout = 120")
    })
    .await;
    let login = || RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db);
    let bad_flush = b"H\0\0\0\x07abc";

    // Answered as PostgreSQL answers it; after the Sync the connection is clean and kept.
    let mut c = login().await;
    let (pid, _, _) = c.rows("select pg_backend_pid()").await;
    c.send(bad_flush).await;
    c.send_msg(b'S', &[]).await;
    let msgs = c.until_ready().await.expect("an answer");
    let error = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("08P01"));
    assert_eq!(
        error.error_field(b'M').as_deref(),
        Some("invalid message format")
    );
    drop(c);
    let mut next = login().await;
    assert_eq!(next.rows("select pg_backend_pid()").await.0, pid, "kept");
    drop(next);

    // Leaving before any Sync: the client is let go and the next one served at once.
    let mut c = login().await;
    c.rows("select 1").await;
    c.send(bad_flush).await;
    let m = c.read_msg().await.expect("the ErrorResponse");
    assert_eq!(m.sqlstate().as_deref(), Some("08P01"));
    let start = Instant::now();
    c.sock.shutdown().await.expect("shutdown");
    let closed = tokio::time::timeout(Duration::from_secs(10), c.read_msg()).await;
    assert!(
        matches!(closed, Ok(None)),
        "not closed within 10 s of the client leaving"
    );
    let mut next = login().await;
    let (rows, status, error) = next.rows("select 1").await;
    assert_eq!((rows, status, error), (vec!["1".to_string()], b'I', None));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the next client waited {:?}",
        start.elapsed()
    );

    // In transaction mode the connection was released at the Flush, as if it asked nothing,
    // and the client never got the error (PgBouncer 1.18 passes it on, checked live).
    let fx = Fixture::custom(|_| Spec {
        pool_size: 1,
        ..Spec::new("pool_mode = transaction")
    })
    .await;
    let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    c.rows("select 1").await;
    c.send(bad_flush).await;
    c.send_msg(b'S', &[]).await;
    let msgs = c.until_ready().await.expect("an answer");
    let codes: Vec<_> = msgs.iter().map(|m| (m.tag, m.sqlstate())).collect();
    assert_eq!(
        codes,
        [(b'E', Some("08P01".to_string())), (b'Z', None)],
        "transaction mode"
    );
}

/// One byte of a type no client may send, and nothing after it: PostgreSQL ends the session at
/// once (`FATAL 08P01 invalid frontend message type 1`, checked live; PgBouncer 1.18 waits
/// for the length word). pgporter waited for the whole header, so the client heard nothing
/// until client_idle_timeout. Refused where the read waits between requests: right after the
/// login, between transactions (transaction mode), and for a client back from the lobby.
/// The fuzz round's lone-byte cases try it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_unknown_type_byte_is_refused_at_once() {
    use crate::support::raw::RawClient;
    use crate::support::Spec;
    let fx = Fixture::custom(|_| Spec {
        pool_size: 1,
        ..Spec::new("pool_mode = transaction")
    })
    .await;
    let lobby = &fx.porter.shared().lobby;
    for when in ["after login", "between transactions", "parked"] {
        let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
        match when {
            "between transactions" => assert_eq!(c.rows("select 1").await.1, b'I'),
            "parked" => {
                let deadline = Instant::now() + HANG;
                while lobby.parked() != 1 {
                    assert!(Instant::now() < deadline, "never parked");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => {}
        }
        c.send(&[0x01]).await;
        let answer = tokio::time::timeout(Duration::from_secs(10), c.read_msg())
            .await
            .unwrap_or_else(|_| panic!("{when}: no answer within 10 s"))
            .unwrap_or_else(|| panic!("{when}: closed without a word"));
        assert_eq!(answer.sqlstate().as_deref(), Some("08P01"), "{when}");
        assert_eq!(answer.error_field(b'S').as_deref(), Some("FATAL"), "{when}");
        let closed = tokio::time::timeout(Duration::from_secs(10), c.read_msg()).await;
        assert!(matches!(closed, Ok(None)), "{when}: not closed");
    }
    still_serves(&fx).await;
}

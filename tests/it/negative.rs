//! Misbehaving clients and resource limits: pgporter answers or closes, never hangs, and
//! keeps serving everyone else.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

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

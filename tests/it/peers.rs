//! `[peers]`: two pgporter processes behind one address (replicas behind a Service). A
//! CancelRequest for a client of one that reaches the other is forwarded to the first.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::checks::backend_running;
use crate::support::raw::RawClient;
use crate::support::{spawn_pgporter, Fixture, HANG};

/// A CancelRequest with `key`, sent to `addr` on a connection of its own.
async fn cancel(addr: SocketAddr, (pid, secret): (i32, i32)) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    sock.write_all(&packet).await.unwrap();
    // pgporter closes the connection once the cancel is passed on.
    let _ = tokio::time::timeout(HANG, sock.read(&mut [0u8; 1])).await;
}

/// The SQLSTATE a `pg_sleep(30)` on `c` ends with, within `limit` (None: still running).
async fn sleep_ends_with(c: &mut RawClient, limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let m = tokio::time::timeout_at(deadline, c.read_msg())
            .await
            .ok()??;
        if m.tag == b'E' {
            return m.sqlstate();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaching_the_other_peer_is_forwarded() {
    let a = Fixture::with_settings(2, "peer_id = 1").await;
    let ini = std::fs::read_to_string(a.porter.ini_path()).unwrap();
    let userlist = std::fs::read_to_string(a.porter.dir().join("userlist.txt")).unwrap();
    assert!(ini.contains("peer_id = 1"), "{ini}");
    let b = spawn_pgporter(&ini.replace("peer_id = 1", "peer_id = 2"), &userlist).await;
    let peers = |id: u16, port: u16| format!("\n[peers]\n{id} = host=127.0.0.1 port={port}\n");
    let (port_a, port_b) = (a.porter.port(), b.port());
    a.porter
        .reload_edited(|ini| ini.to_string() + &peers(2, port_b))
        .await;
    b.reload_edited(|ini| ini.to_string() + &peers(1, port_a))
        .await;

    // A client of A, cancelled through B.
    let mut c = RawClient::login(a.porter.addr(), &a.user, &a.password, &a.db).await;
    let key = c.key.expect("BackendKeyData");
    assert_eq!(key.0 >> 16, 1, "the key names its issuer");
    let cancelled = Some("57014".to_string());
    assert_eq!(
        sleep_cancelled_via(&a, &mut c, b.addr(), key, 10).await,
        cancelled
    );
    // Through A itself, as always.
    assert_eq!(
        sleep_cancelled_via(&a, &mut c, a.porter.addr(), key, 10).await,
        cancelled
    );
    // A key with no hops left is not forwarded again (then A ends that sleep).
    let spent = (key.0, key.1 & !0b11);
    assert_eq!(
        sleep_cancelled_via(&a, &mut c, b.addr(), spent, 2).await,
        None
    );
    cancel(a.porter.addr(), key).await;
    assert_eq!(
        sleep_ends_with(&mut c, Duration::from_secs(10)).await,
        cancelled
    );
}

/// Start a `pg_sleep(30)` on `c` (idle, a client of `fx`), cancel it through `addr` with `key`
/// once it runs: how it ended within `secs` seconds (None: still running; then it is left
/// running).
async fn sleep_cancelled_via(
    fx: &Fixture,
    c: &mut RawClient,
    addr: SocketAddr,
    key: (i32, i32),
    secs: u64,
) -> Option<String> {
    c.query("SELECT pg_sleep(30)").await;
    backend_running(fx, "pg_sleep(30)").await;
    cancel(addr, key).await;
    let code = sleep_ends_with(c, Duration::from_secs(secs)).await;
    if code.is_some() {
        let _ = c.read_msg().await; // its ReadyForQuery
    }
    code
}

/// SHOW PEERS lists the [peers] section, as PgBouncer's (pool_size: default_pool_size when
/// not given), and follows a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_peers_lists_the_peers() {
    let ops = crate::admin::Ops::new("peer_id = 1\n[peers]\n2 = host=10.0.0.2 port=6433\n").await;
    let admin = ops.admin().await;
    let got = |rows: Vec<tokio_postgres::SimpleQueryRow>| -> Vec<[String; 4]> {
        let col = |r: &tokio_postgres::SimpleQueryRow, c: &str| r.get(c).unwrap().to_string();
        (rows.iter())
            .map(|r| ["peer_id", "host", "port", "pool_size"].map(|c| col(r, c)))
            .collect()
    };
    let peers = got(crate::admin::rows(&admin, "SHOW PEERS").await);
    assert_eq!(peers, [["2", "10.0.0.2", "6433", "4"].map(String::from)]);
    ops.porter
        .reload_edited(|ini| ini.to_string() + "1 = host=/tmp/p1 pool_size=8\n")
        .await;
    let peers = got(crate::admin::rows(&admin, "SHOW PEERS").await);
    assert_eq!(
        peers,
        [
            ["1", "/tmp/p1", "6432", "8"].map(String::from),
            ["2", "10.0.0.2", "6433", "4"].map(String::from)
        ]
    );
}

/// A peer that does not answer (its listen queue full: the kernel drops the SYNs, as a
/// firewall would) costs a forwarded cancel server_connect_timeout, not the kernel's two
/// minutes of SYN retries (bounded only by client_login_timeout before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_for_a_silent_peer_gives_up_after_server_connect_timeout() {
    let silent = tokio::net::TcpSocket::new_v4().unwrap();
    silent.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent = silent.listen(0).unwrap();
    let port = silent.local_addr().unwrap().port();
    // Fill the queue: nothing is ever accepted.
    let mut queued = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
            queued.push(s);
        }
    }
    let a = Fixture::with_settings(
        1,
        &format!(
            "peer_id = 1\nserver_connect_timeout = 1\n[peers]\n2 = host=127.0.0.1 port={port}"
        ),
    )
    .await;
    // A key peer 2 issued, with all its hops.
    let started = tokio::time::Instant::now();
    cancel(a.porter.addr(), ((2 << 16) | 7, 0b11)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    drop(queued);
}

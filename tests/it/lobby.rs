//! Quiet clients wait in the lobby without a task of their own: parked shortly after their
//! login, served as usual on their first request, and killed, closed and shut down like any
//! other session.

use std::time::Duration;

use pgporter::Control;
use pgporter::ShutdownMode;

use crate::admin::{find, rows, Ops};
use crate::support::http::{get, sample};
use crate::support::raw::RawClient;
use crate::support::HANG;

/// Wait (bounded) until exactly `n` clients are parked.
async fn parked(ops: &Ops, n: usize) {
    let lobby = &ops.porter.shared().lobby;
    let deadline = tokio::time::Instant::now() + HANG;
    while lobby.parked() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} parked clients, have {}",
            lobby.parked()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn login(ops: &Ops) -> RawClient {
    RawClient::login(ops.porter.addr(), &ops.user, "pw", &ops.db).await
}

/// The SHOW CLIENTS id of the client with this port.
async fn client_id(ops: &Ops, port: u16) -> String {
    let admin = ops.admin().await;
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let row = find(&clients, "port", &port.to_string());
    assert_eq!(row.get("state"), Some("idle"));
    row.get("id").expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_client_is_parked_and_served_when_it_speaks() {
    let ops = Ops::new("").await;
    let app = ops.client().await;
    parked(&ops, 1).await;
    let page = get(ops.porter.http_addr(), "/metrics").await.1;
    assert_eq!(
        sample(&page, "pgporter_clients_parked"),
        Some(1.0),
        "{page}"
    );

    // Back from the lobby with its session intact: temp tables and SETs live on.
    app.simple_query("CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (7); SET work_mem = '3MB'")
        .await
        .expect("first request after parking");
    parked(&ops, 0).await;
    let r = app
        .query_one("SELECT x, current_setting('work_mem') FROM t", &[])
        .await
        .expect("same session");
    assert_eq!(
        (r.get::<_, i32>(0), r.get::<_, String>(1)),
        (7, "3MB".into())
    );

    // A parked client that leaves is gone from SHOW CLIENTS and from the lobby.
    let quiet = login(&ops).await;
    let port = quiet.sock.local_addr().expect("addr").port();
    parked(&ops, 1).await;
    client_id(&ops, port).await;
    drop(quiet);
    parked(&ops, 0).await;
    let admin = ops.admin().await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let clients = rows(&admin, "SHOW CLIENTS").await;
        let listed = clients
            .iter()
            .any(|r| r.get("port") == Some(&port.to_string()));
        // Counted against max_client_conn no more: the app client and this console remain.
        if !listed && ops.porter.clients() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed client still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_and_shutdown_reach_parked_clients() {
    let mut ops = Ops::new("").await;
    let mut victim = login(&ops).await;
    let mut other = login(&ops).await;
    parked(&ops, 2).await;

    let id = client_id(&ops, victim.sock.local_addr().expect("addr").port()).await;
    let admin = ops.admin().await;
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .expect("kill_client");
    let m = victim.read_msg().await.expect("an error before the close");
    assert_eq!(m.sqlstate().as_deref(), Some("57P01"));
    // PgBouncer's words for KILL_CLIENT (its code is 08P01).
    assert_eq!(
        m.error_field(b'M').as_deref(),
        Some("admin forced disconnect")
    );
    assert!(victim.read_msg().await.is_none(), "closed after the error");
    parked(&ops, 1).await;

    ops.porter
        .control(Control::Shutdown(ShutdownMode::Immediate));
    let m = other.read_msg().await.expect("an error before the close");
    assert_eq!(m.sqlstate().as_deref(), Some("57P01"));
    assert_eq!(
        m.error_field(b'M').as_deref(),
        Some("pooler is shutting down")
    );
    assert!(other.read_msg().await.is_none(), "closed after the error");
    ops.porter.wait_stopped(HANG).await;
}

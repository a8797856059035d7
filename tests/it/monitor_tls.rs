//! The routing health monitors and server TLS: they log in with the server_tls_* settings in
//! force, and tell a TLS setup that fails (the host unverifiable, SHOW HOSTS says why) from a
//! host that hangs up during the handshake (down).

use crate::support::certs::Pki;

/// The routing health monitors log in with the server TLS settings in force: a RELOAD that
/// makes them verify-full against a CA that did not sign PostgreSQL's certificate makes the
/// monitor's login fail (the host is not used, SHOW HOSTS says why, the session on it goes on,
/// a new one hears the TLS error at once), and one naming the right CA heals it. The
/// monitors kept logging in with the TLS setup they started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_tls_reload_reaches_the_health_monitors() {
    use pgporter::routing::Liveness;

    let fx = crate::support::ReplFixture::new(0, 2, "server_tls_sslmode = require").await;
    let rw = fx.connstring(fx.porter.port(), &fx.db);
    let held = crate::support::connect(&rw).await;
    held.query_one("select 1", &[])
        .await
        .expect("first session");
    let shared = fx.porter.shared();
    let addr = pgporter::server::ServerAddr::new("127.0.0.1", fx.cluster.port(0));
    let shown = || shared.hosts.get(&addr, &shared.routing);
    crate::ops::eventually("the host checked up", || async {
        shown().is_some_and(|h| h.up)
    })
    .await;
    let su = fx.cluster.superuser(0).await;
    let monitor_tls = "select coalesce(bool_and(s.ssl), false) from pg_stat_activity a \
                       join pg_stat_ssl s using (pid) \
                       where a.application_name = 'pgporter health check'";
    let over_tls: bool = su.query_one(monitor_tls, &[]).await.unwrap().get(0);
    assert!(over_tls, "the health check logs in over TLS");

    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Pki::new(other_dir.path(), "other");
    let verify_full = |ca: &std::path::Path| {
        format!(
            "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}",
            ca.display()
        )
    };
    let wrong = verify_full(other.ca_file());
    (fx.porter)
        .reload_edited(|ini| ini.replace("server_tls_sslmode = require", &wrong))
        .await;
    crate::ops::eventually("SHOW HOSTS says why the host is not used", || async {
        shown().is_some_and(|h| {
            !h.up
                && h.error.as_deref().is_some_and(|e| {
                    e.starts_with(
                        "health check cannot log in: TLS handshake with the server failed",
                    ) && e.contains("certificate")
                })
        })
    })
    .await;
    let status = fx.porter.hosts()[0].status.clone();
    assert_eq!(status.liveness, Liveness::Unknown, "{status:?}");
    held.query_one("select 1", &[])
        .await
        .expect("the session already on the host goes on");
    let started = tokio::time::Instant::now();
    let e = match tokio_postgres::connect(&rw, tokio_postgres::NoTls).await {
        Err(e) => e,
        Ok((client, conn)) => {
            tokio::spawn(conn);
            let e = client.simple_query("select 1").await;
            e.expect_err("no server connection can be made")
        }
    };
    let e = crate::support::db_error(&e);
    assert_eq!(e.code().code(), "08006", "{e:?}");
    assert!(
        e.message().contains("TLS handshake with the server failed"),
        "{e:?}"
    );
    // Against query_wait_timeout = 20: 10 s is room enough on a loaded machine.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{e}"
    );

    // The CA that signed PostgreSQL's certificate: the monitor's verify-full login works.
    let right = verify_full(&fx.cluster.nodes[0].dir.join("pg-ca.pem"));
    (fx.porter)
        .reload_edited(|ini| ini.replace(&wrong, &right))
        .await;
    crate::ops::eventually("the host checked up again", || async {
        shown().is_some_and(|h| h.up && h.error.is_none())
    })
    .await;
    assert_eq!(fx.porter.hosts()[0].status.refused, None);
    let fresh = crate::support::connect(&rw).await;
    fresh.query_one("select 1", &[]).await.expect("new session");
    let over_tls: bool = su.query_one(monitor_tls, &[]).await.unwrap().get(0);
    assert!(over_tls, "the health check logs in over TLS");
}

/// A host that says `S` to the SSLRequest and hangs up during the handshake (a server going
/// down) is down, as one that refuses the TCP connection: the monitor took any I/O error of
/// the handshake for a TLS setup that cannot work, so the host was unknown, "health check
/// cannot log in: TLS handshake ... failed", and skipped the checks of the next 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_hanging_up_during_the_tls_handshake_is_down() {
    use pgporter::routing::Liveness;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let fake_port = fake.local_addr().expect("addr").port();
    let hangs_up = tokio::spawn(async move {
        while let Ok((mut c, _)) = fake.accept().await {
            tokio::spawn(async move {
                let mut ssl_request = [0u8; 8];
                if c.read_exact(&mut ssl_request).await.is_ok() {
                    let _ = c.write_all(b"S").await;
                }
            });
        }
    });
    let ini = format!(
        "[databases]\n\
         db = host=127.0.0.1 port={fake_port} dbname=db target_session_attrs=read-write\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = userlist.txt\nserver_tls_sslmode = require\n\
         health_check_period = 0.2\nserver_connect_timeout = 3\nfailover_wait_timeout = 1\n"
    );
    let porter =
        crate::support::spawn_pgporter(&ini, &crate::support::fixture::userlist(&[("u", "pw")]))
            .await;
    // A client makes the pool, whose login the monitor uses; it gets no server.
    let connstring = format!(
        "host=127.0.0.1 port={} user=u password=pw dbname=db sslmode=disable",
        porter.port()
    );
    let client = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.simple_query("select 1").await.map(|_| ())
    });
    crate::ops::eventually("the host checked down", || async {
        porter
            .hosts()
            .first()
            .is_some_and(|h| h.status.liveness == Liveness::Down)
    })
    .await;
    let status = porter.hosts()[0].status.clone();
    assert_eq!(status.refused, None, "{status:?}");
    let _ = tokio::time::timeout(crate::support::HANG, client).await;
    hangs_up.abort();
}

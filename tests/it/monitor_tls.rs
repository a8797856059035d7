//! The routing health monitors and server TLS: they log in with the server_tls_* settings in
//! force; a TLS setup that fails makes the host unverifiable (SHOW HOSTS says why).

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
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");

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

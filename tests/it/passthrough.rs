//! SCRAM passthrough: auth_file holds only the user's SCRAM verifier (as in pg_authid), yet
//! pgporter logs in to PostgreSQL as that user with the ClientKey recovered from the client.

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::psql::psql_ok;
use crate::support::{db_error, Fixture, Spec, HANG};
use crate::tls::{conn, server_verify_full, Certs};

fn scram_only_userlist(user: &str, secret: &str) -> String {
    format!("\"{user}\" \"{secret}\"\n")
}

/// A pgporter whose userlist holds only the test user's SCRAM verifier (`extra`: more
/// [pgbouncer] lines).
async fn scram_only(extra: &str) -> Fixture {
    Fixture::custom(|n| Spec {
        userlist: Some(scram_only_userlist(&n.user, &n.scram_secret)),
        ..Spec::new(extra)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_secret_only_user_reaches_postgres() {
    let fx = scram_only("").await;
    // Twice: the second login reuses the pooled connection made with the learned key.
    for _ in 0..2 {
        let client = fx.connect().await;
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query through a passthrough connection");
        assert_eq!(row.get::<_, String>(0), fx.user);
    }
    // Two at once: the second needs a second server connection, made with the keys alone.
    let a = fx.connect().await;
    let b = fx.connect().await;
    a.batch_execute("SELECT 1").await.unwrap();
    b.batch_execute("SELECT 1").await.unwrap();

    let wrong = fx.porter.connstring(&fx.user, "wrong", &fx.db);
    let err = tokio::time::timeout(HANG, tokio_postgres::connect(&wrong, NoTls))
        .await
        .expect("hung")
        .err()
        .expect("wrong password accepted");
    assert_eq!(db_error(&err).code(), &SqlState::INVALID_PASSWORD);
    assert_eq!(fx.porter.shared().stats.auth_failures_of(&fx.user), 1);
}

/// The acceptance line: verify-full + channel_binding=require to pgporter, pgporter to
/// PostgreSQL over verified TLS, and no plaintext password anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_verify_full_channel_binding_no_plaintext() {
    let certs = Certs::new();
    let fx = Fixture::custom(|n| Spec {
        userlist: Some(scram_only_userlist(&n.user, &n.scram_secret)),
        ..Spec::new(format!(
            "{}{}",
            certs.client_tls("require"),
            server_verify_full(&n.pg_ca)
        ))
    })
    .await;
    let ca = certs.pki.ca_file().display().to_string();
    let out = psql_ok(
        &conn(
            &fx,
            &format!("sslmode=verify-full sslrootcert={ca} channel_binding=require"),
        ),
        "SELECT current_user || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(out, format!("{} true", fx.user));
}

/// `auth_type = plain` (or an hba `password` line) with only a SCRAM verifier stored: the
/// cleartext password is checked against the verifier, as PostgreSQL and PgBouncer do, and the
/// login yields the ClientKey the pool logs in with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_password_is_checked_against_a_scram_verifier() {
    let fx = scram_only("auth_type = plain").await;
    let client = fx.connect().await;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query through a passthrough connection");
    assert_eq!(row.get::<_, String>(0), fx.user);
    let wrong = fx.porter.connstring(&fx.user, "not-it", &fx.db);
    let Err(err) = tokio_postgres::connect(&wrong, tokio_postgres::NoTls).await else {
        panic!("a wrong password logged in");
    };
    assert_eq!(
        crate::support::db_error(&err).code(),
        &tokio_postgres::error::SqlState::INVALID_PASSWORD
    );
}

/// SCRAM passthrough behind a monitored (routed) entry: the userlist holds only the user's
/// verifier and no password is configured anywhere, so the health monitor, which logs in with
/// the pool's credentials, has none until a client has logged in. The client's keys serve the
/// monitor too: the host comes up and the session lands on the primary, where the monitor
/// used to mark the host down (no password) and the client got no server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_users_are_routed_by_the_health_monitor() {
    let cluster = crate::support::replica::ReplCluster::start(1).await;
    let db = format!("rdb_pass_{}", std::process::id());
    cluster.create_role_and_db("pass_r", "pw-p", &db).await;
    let secret: String = cluster
        .superuser(0)
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'pass_r'",
            &[],
        )
        .await
        .expect("the verifier")
        .get(0);
    let porter = crate::routing::routed_porter(
        &cluster,
        &db,
        &scram_only_userlist("pass_r", &secret),
        "failover_wait_timeout = 10",
    )
    .await;
    let conn = format!(
        "host=127.0.0.1 port={} user=pass_r password=pw-p dbname={db} sslmode=disable",
        porter.port()
    );
    for _ in 0..2 {
        let landed = crate::routing::where_am_i(&conn).await;
        assert_eq!(landed, Ok((false, cluster.port(0))), "on the primary");
    }
}

/// A reload that replaces the pool (here: a new application_name for the entry) hands the
/// new pool the passthrough keys the old one learned: a transaction-mode session moves to it
/// between transactions and needs a new server connection, before any client logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_pool_keeps_the_learned_keys() {
    let fx = scram_only("pool_mode = transaction").await;
    let client = fx.connect().await;
    client.batch_execute("SELECT 1").await.unwrap();
    let db = fx.db.clone();
    fx.porter
        .reload_edited(|ini| {
            let line = format!("dbname={db}\n");
            assert!(ini.contains(&line), "{ini}");
            ini.replacen(&line, &format!("dbname={db} application_name=moved\n"), 1)
        })
        .await;
    let name: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("a transaction on the replacing pool")
        .get(0);
    assert_eq!(name, "moved", "a connection of the new pool");
}

/// The keys a replacing pool learned from a client of its own are newer than those of the
/// pool it replaced, and stay: a session moving over from the old pool does not bring back
/// the old keys. Here the password changed along with the entry (new verifier in the
/// userlist): a client with the new password logs in to the new pool and holds a
/// connection; the old pool's transaction-mode session moves over and needs a second one,
/// which the old keys no longer open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_session_does_not_bring_back_stale_keys() {
    let fx = scram_only("pool_mode = transaction").await;
    let old = fx.connect().await;
    old.batch_execute("SELECT 1").await.unwrap();
    let superuser = fx.superuser().await;
    let role = crate::support::pg::ident(&fx.user);
    superuser
        .batch_execute(&format!("ALTER ROLE {role} PASSWORD 'pw-new'"))
        .await
        .expect("ALTER ROLE");
    let secret: String = superuser
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&fx.user],
        )
        .await
        .expect("the new verifier")
        .get(0);
    std::fs::write(
        fx.porter.dir().join("userlist.txt"),
        scram_only_userlist(&fx.user, &secret),
    )
    .expect("writing the userlist");
    let db = fx.db.clone();
    fx.porter
        .reload_edited(|ini| {
            let line = format!("dbname={db}\n");
            ini.replacen(&line, &format!("dbname={db} application_name=moved\n"), 1)
        })
        .await;
    let new = crate::support::connect(&fx.porter.connstring(&fx.user, "pw-new", &fx.db)).await;
    new.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let name: String = old
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .expect("a second connection of the new pool, with the new keys")
        .get(0);
    assert_eq!(name, "moved");
    new.batch_execute("COMMIT").await.unwrap();
}

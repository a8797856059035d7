//! Login outcomes a client sees: PgBouncer's SQLSTATEs and messages.

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::{db_error, Fixture, HANG};

/// Connect and expect the server to refuse with an ErrorResponse.
async fn refused(connstring: &str) -> tokio_postgres::Error {
    match tokio::time::timeout(HANG, tokio_postgres::connect(connstring, NoTls))
        .await
        .expect("login hung")
    {
        Ok(_) => panic!("login unexpectedly succeeded: {connstring}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_password_logs_in_with_scram() {
    let fx = Fixture::new(2).await;
    let client = fx.connect().await;
    let row = client
        .query_one("select current_user::text, current_database()::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), fx.user);
    assert_eq!(row.get::<_, String>(1), fx.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_28p01() {
    let fx = Fixture::new(2).await;
    let err = refused(&fx.porter.connstring(&fx.user, "not-the-password", &fx.db)).await;
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{err:?}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{}\"", fx.user)
    );
    // The right password still works afterwards.
    fx.connect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_looks_like_wrong_password() {
    let fx = Fixture::new(2).await;
    let stranger = fx.cluster.unique_name("nobody");
    let err = refused(&fx.porter.connstring(&stranger, "whatever", &fx.db)).await;
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{err:?}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{stranger}\"")
    );
}

/// A client that never authenticates leaves no pool behind: no SHOW POOLS row, no metrics
/// labels, and (with min_pool_size) no server logins as whatever user it made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_log_in_make_no_pools() {
    let fx = Fixture::with_settings(2, "min_pool_size = 1\nidentity_tagging = 0").await;
    for i in 0..20 {
        let mut c = crate::support::raw::RawClient::connect(fx.porter.addr()).await;
        let mut out = bytes::BytesMut::new();
        let user = format!("ghost{i}");
        postgres_protocol::message::frontend::startup_message(
            [("user", user.as_str()), ("database", fx.db.as_str())],
            &mut out,
        )
        .expect("startup");
        c.send(&out).await;
        assert_eq!(c.read_msg().await.expect("auth request").tag, b'R');
    }
    let err = refused(&fx.porter.connstring("ghost-pw", "whatever", &fx.db)).await;
    assert_eq!(db_error(&err).code(), &SqlState::INVALID_PASSWORD);
    fx.connect().await;
    let pools: Vec<String> = fx
        .porter
        .pool_counts()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(pools, [format!("{}@{}", fx.user, fx.db)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_3d000() {
    let fx = Fixture::new(2).await;
    let err = refused(
        &fx.porter
            .connstring(&fx.user, &fx.password, "no_such_database"),
    )
    .await;
    assert_eq!(
        db_error(&err).code(),
        &SqlState::INVALID_CATALOG_NAME,
        "{err:?}"
    );
}

//! auth_user + auth_query: a user missing from auth_file is looked up in pg_shadow.

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::pg::{SUPERUSER, SUPERUSER_PASSWORD};
use crate::support::{db_error, fixture, Fixture, Spec, HANG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_missing_from_auth_file_is_looked_up() {
    let fx = Fixture::custom(|_| Spec {
        // Only the auth_user is listed.
        userlist: Some(fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)])),
        ..Spec::new(format!("auth_user = {SUPERUSER}\n"))
    })
    .await;
    let client = fx.connect().await;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query as a user found by auth_query");
    assert_eq!(row.get::<_, String>(0), fx.user);

    for (user, password) in [(fx.user.as_str(), "wrong"), ("no_such_role_here", "x")] {
        let err = tokio::time::timeout(
            HANG,
            tokio_postgres::connect(&fx.porter.connstring(user, password, &fx.db), NoTls),
        )
        .await
        .expect("hung")
        .err()
        .expect("login accepted");
        assert_eq!(
            db_error(&err).code(),
            &SqlState::INVALID_PASSWORD,
            "{user}: {err:?}"
        );
    }
}

//! The edges of login: the admin console under max_client_conn.

use crate::admin::{find, rows, Ops};
use crate::support::clients::connect_err;
use crate::support::db_error;

/// As PgBouncer (1.18, checked live): a console login is never refused by max_client_conn,
/// but it is counted, so consoles can fill the cap for everyone else (FATAL 53300; PgBouncer
/// 1.18 says 08P01). Both the admin and the stats user get in over the cap, and SHOW POOLS
/// counts them all in the console's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_get_in_over_max_client_conn_and_count_against_it() {
    let ops = Ops::new("max_client_conn = 2").await;
    let admin = ops.admin().await;
    let _stats = ops.stats_user().await;
    // Both slots are taken by consoles: an application client is refused ...
    let app = ops.porter.connstring(&ops.user, "pw", &ops.db);
    let e = connect_err(&app).await;
    let db = db_error(&e);
    assert_eq!(
        (db.code().code(), db.message()),
        ("53300", "no more connections allowed (max_client_conn)")
    );
    // ... a third and a fourth console are not.
    let stats = ops.stats_user().await;
    let again = ops.admin().await;
    let pools = rows(&stats, "SHOW POOLS").await;
    assert_eq!(
        find(&pools, "database", "pgbouncer").get("cl_active"),
        Some("4")
    );
    drop((admin, again, stats));
    // Once the consoles are gone the application gets in again.
    crate::limits::eventually("a console slot freed", || async {
        tokio_postgres::connect(&app, tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
}

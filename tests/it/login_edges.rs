//! The edges of login: the admin console under the client caps (max_client_conn,
//! max_db_client_connections, max_user_client_connections).

use crate::admin::{find, rows, Ops, ADMIN_PW};
use crate::support::clients::connect_err;
use crate::support::{connect, db_error};

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

/// As PgBouncer 1.24+ (where these caps come from; 1.18 has neither and refuses to start with
/// them): a console client counts as a client of the `pgbouncer` database (capped by the
/// [pgbouncer] max_db_client_connections) and of its user (max_user_client_connections). A
/// user of admin_users is counted but never refused; a stats user over a cap is refused with
/// 53300 naming it. SHOW DATABASES and SHOW USERS show the caps and the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_clients_count_against_the_client_caps() {
    let ops = Ops::new("max_db_client_connections = 2").await;
    let first = ops.admin().await;
    let second = ops.admin().await;
    let third = ops.admin().await;
    let stats = ops.porter.connstring(&ops.stats, ADMIN_PW, "pgbouncer");
    let e = connect_err(&stats).await;
    let db = db_error(&e);
    assert_eq!(
        (db.code().code(), db.message()),
        (
            "53300",
            "client connections exceeded (max_db_client_connections)"
        )
    );
    let dbs = rows(&first, "SHOW DATABASES").await;
    let console = find(&dbs, "name", "pgbouncer");
    assert_eq!(console.get("max_client_connections"), Some("2"));
    assert_eq!(console.get("current_client_connections"), Some("3"));
    // Application databases keep their own count.
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("app served");
    drop((second, third));
    crate::limits::eventually("a console slot freed", || async {
        tokio_postgres::connect(&stats, tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;

    // max_user_client_connections: per [users] entry, for the admin and the stats user.
    let (adm, st) = (ops.admin.clone(), ops.stats.clone());
    ops.porter
        .reload_edited(|ini| {
            let ini = ini.replace("max_db_client_connections = 2", "");
            format!(
                "{ini}\n[users]\n{adm} = max_user_client_connections=1\n\
                 {st} = max_user_client_connections=1\n"
            )
        })
        .await;
    let _st = connect(&stats).await;
    let e = connect_err(&stats).await;
    assert_eq!(
        db_error(&e).message(),
        "client connections exceeded (max_user_client_connections)"
    );
    let _again = ops.admin().await;
    let users = rows(&first, "SHOW USERS").await;
    let admin_row = find(&users, "name", &ops.admin);
    assert_eq!(admin_row.get("max_user_client_connections"), Some("1"));
    assert_eq!(admin_row.get("current_client_connections"), Some("2"));
    let rejections = &ops.porter.shared().pools.limits().rejections;
    assert_eq!(rejections.get(&ops.stats, "max_user_client_connections"), 1);
}

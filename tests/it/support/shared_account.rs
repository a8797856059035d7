//! `SharedAccount`: alice and bob (pgporter users only) sharing one backend role `rubin_*`
//! through a forced-user database entry, with the example identity trigger installed.

use tokio_postgres::Client;

use super::fixture::{ini, userlist, PASSWORD};
use super::pg::{cluster, PgCluster};
use super::porter::{spawn_pgporter, Porter};

/// The example trigger from config/.
pub(crate) const TRIGGER_SQL: &str = include_str!("../../../config/identity_trigger.sql");

#[derive(Debug)]
pub(crate) struct SharedAccount {
    pub(crate) cluster: &'static PgCluster,
    /// The backend role every client shares.
    pub(crate) rubin: String,
    pub(crate) alice: String,
    pub(crate) bob: String,
    pub(crate) db: String,
    pub(crate) porter: Porter,
}

impl SharedAccount {
    /// A database owned by `rubin_*` with the trigger installed, behind a pgporter whose
    /// database entry forces user=rubin; `extra` goes into [pgbouncer] (`{alice}` / `{bob}`
    /// stand for the generated user names).
    pub(crate) async fn new(pool_size: u32, extra: &str) -> SharedAccount {
        let cluster = cluster().await;
        let rubin = cluster.unique_name("rubin");
        let alice = cluster.unique_name("alice");
        let bob = cluster.unique_name("bob");
        let db = cluster.unique_name("db");
        cluster.create_role(&rubin, PASSWORD).await;
        cluster.create_database(&db, &rubin).await;
        cluster
            .local_client(&rubin, &db)
            .await
            .batch_execute(TRIGGER_SQL)
            .await
            .expect("installing the identity trigger");
        // Room for the pool's first server login, which the first client's login waits for
        // within query_wait_timeout: the fixture's 2 s ran out under the CI's load (a new
        // database's first backend). A test's own value in `extra` comes later and wins.
        let extra = format!("query_wait_timeout = 20\n{extra}")
            .replace("{alice}", &alice)
            .replace("{bob}", &bob);
        let ini = ini(&[(&db, cluster.port())], pool_size, &extra).replace(
            &format!("dbname={db}\n"),
            &format!("dbname={db} user={rubin} password={PASSWORD}\n"),
        );
        let users = userlist(&[(&alice, "alice-pw"), (&bob, "bob-pw")]);
        let porter = spawn_pgporter(&ini, &users).await;
        SharedAccount {
            cluster,
            rubin,
            alice,
            bob,
            db,
            porter,
        }
    }

    pub(crate) fn password(&self, user: &str) -> &'static str {
        if user == self.alice {
            "alice-pw"
        } else {
            "bob-pw"
        }
    }

    pub(crate) fn connstring(&self, user: &str) -> String {
        self.porter.connstring(user, self.password(user), &self.db)
    }

    /// A client through pgporter as `user`.
    pub(crate) async fn connect(&self, user: &str) -> Client {
        super::clients::connect(&self.connstring(user)).await
    }

    /// Straight to PostgreSQL as rubin (socket, trust).
    pub(crate) async fn direct(&self) -> Client {
        self.cluster.local_client(&self.rubin, &self.db).await
    }

    /// `(client_user, operation, row name)` of change_log, in order.
    pub(crate) async fn change_log(&self) -> Vec<(Option<String>, String, String)> {
        self.direct()
            .await
            .query(
                "select client_user, operation, row_data->>'name' from change_log order by id",
                &[],
            )
            .await
            .expect("reading change_log")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

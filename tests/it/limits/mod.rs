//! Connection limits and fair sharing (issue 6), against the real PostgreSQL.
//!
//! Most tests use a shared account: clients `alice` and `bob` (pgporter users only) reach one
//! PostgreSQL role through a [databases] entry with a forced `user=`, so they share one pool
//! and differ only in identity.

mod caps;
mod cross;
mod even;
mod flood;
mod share;

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::support::fixture::{userlist, PASSWORD};
use crate::support::{cluster, spawn_pgporter, PgCluster, Porter, HANG};

/// The name clients connect to for the shared account.
pub(crate) const SHARED_DB: &str = "shared";

/// `[pgbouncer]` lines every test starts from (plain auth keeps hundreds of logins cheap).
fn base_settings(pool_size: u32, query_wait_timeout: &str) -> String {
    format!(
        "listen_addr = 127.0.0.1\n\
         listen_port = 0\n\
         unix_socket_dir =\n\
         auth_type = plain\n\
         auth_file = userlist.txt\n\
         pool_mode = session\n\
         default_pool_size = {pool_size}\n\
         query_wait_timeout = {query_wait_timeout}\n"
    )
}

/// A pgporter.ini from [databases] lines, extra [pgbouncer] lines and [users] lines.
pub(crate) fn ini(databases: &[String], settings: &str, users: &str) -> String {
    format!(
        "[databases]\n{}\n[pgbouncer]\n{settings}\n[users]\n{users}\n",
        databases.join("\n")
    )
}

/// Two roles and a database (owned by the first) on the shared cluster, and a pgporter serving
/// the database with `settings`: (cluster, first user, second user, database, pgporter).
pub(crate) async fn two_users_one_db(
    settings: &str,
) -> (&'static PgCluster, String, String, String, Porter) {
    let cluster = cluster().await;
    let (u1, u2, db) = (
        cluster.unique_name("u"),
        cluster.unique_name("u"),
        cluster.unique_name("db"),
    );
    cluster.create_role(&u1, PASSWORD).await;
    cluster.create_role(&u2, PASSWORD).await;
    cluster.create_database(&db, &u1).await;
    let line = format!("{db} = host=127.0.0.1 port={}", cluster.port());
    let porter = spawn_pgporter(
        &ini(&[line], settings, ""),
        &userlist(&[(&u1, PASSWORD), (&u2, PASSWORD)]),
    )
    .await;
    (cluster, u1, u2, db, porter)
}

/// One PostgreSQL role and database shared by every client identity through `user=`.
#[derive(Debug)]
pub(crate) struct SharedAccount {
    pub(crate) cluster: &'static PgCluster,
    pub(crate) backend: String,
    pub(crate) db: String,
    pub(crate) porter: Porter,
    /// The [databases] line, for configs written later (reload).
    pub(crate) db_line: String,
}

impl SharedAccount {
    /// `settings`: extra [pgbouncer] lines; `users`: [users] lines.
    pub(crate) async fn new(
        pool_size: u32,
        query_wait_timeout: &str,
        settings: &str,
        users: &str,
    ) -> SharedAccount {
        let cluster = cluster().await;
        let backend = cluster.unique_name("rubin");
        let db = cluster.unique_name("db");
        cluster.create_role(&backend, PASSWORD).await;
        cluster.create_database(&db, &backend).await;
        let db_line = format!(
            "{SHARED_DB} = host=127.0.0.1 port={} dbname={db} user={backend} password={PASSWORD}",
            cluster.port()
        );
        let settings = format!("{}{settings}", base_settings(pool_size, query_wait_timeout));
        let porter = spawn_pgporter(
            &ini(std::slice::from_ref(&db_line), &settings, users),
            &identities_userlist(),
        )
        .await;
        SharedAccount {
            cluster,
            backend,
            db,
            porter,
            db_line,
        }
    }

    pub(crate) fn connstring(&self, identity: &str) -> String {
        self.porter.connstring(identity, PASSWORD, SHARED_DB)
    }

    pub(crate) async fn connect(&self, identity: &str) -> Client {
        crate::support::connect(&self.connstring(identity)).await
    }

    pub(crate) async fn try_connect(
        &self,
        identity: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        try_connect(&self.connstring(identity)).await
    }

    /// Server connections PostgreSQL sees for the shared role and database.
    pub(crate) async fn backends(&self) -> i64 {
        backends(self.cluster, Some(&self.backend), Some(&self.db)).await
    }

    /// Wait until PostgreSQL sees `n` of them (see [`until_backends`]).
    pub(crate) async fn until_backends(&self, n: i64) {
        until_backends(self.cluster, Some(&self.backend), Some(&self.db), n).await;
    }
}

/// The client identities of the shared-account tests.
pub(crate) const IDENTITIES: &[&str] = &["alice", "bob", "carol"];

fn identities_userlist() -> String {
    let users: Vec<(&str, &str)> = IDENTITIES.iter().map(|u| (*u, PASSWORD)).collect();
    userlist(&users)
}

/// Connect through pgporter, bounded by [`HANG`]; the error is returned, not panicked on.
pub(crate) async fn try_connect(connstring: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio::time::timeout(HANG, tokio_postgres::connect(connstring, NoTls))
        .await
        .unwrap_or_else(|_| panic!("connect hung: {connstring}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// `select 1` bounded by [`HANG`].
pub(crate) async fn select1(client: &Client) -> Result<(), tokio_postgres::Error> {
    tokio::time::timeout(HANG, client.simple_query("select 1"))
        .await
        .expect("select 1 hung")
        .map(|_| ())
}

/// Client backends in pg_stat_activity, optionally for one role and/or database.
pub(crate) async fn backends(cluster: &PgCluster, user: Option<&str>, db: Option<&str>) -> i64 {
    let su = cluster.superuser_client().await;
    let row = su
        .query_one(
            "select count(*) from pg_stat_activity where backend_type = 'client backend' \
             and ($1::text is null or usename = $1) and ($2::text is null or datname = $2)",
            &[&user, &db],
        )
        .await
        .expect("counting backends");
    row.get(0)
}

/// Wait (up to [`HANG`]) until PostgreSQL runs `n` client backends for `user` / `db`. A
/// connection pgporter closed (a Terminate sent) stays in pg_stat_activity until its backend
/// has exited, which a loaded machine delays past the next client's login and query: a count
/// read at once saw the closed one too. A limit pgporter exceeded for good still fails here.
pub(crate) async fn until_backends(
    cluster: &PgCluster,
    user: Option<&str>,
    db: Option<&str>,
    n: i64,
) {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let seen = backends(cluster, user, db).await;
        if seen == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PostgreSQL runs {seen} backends for {user:?} / {db:?}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll `check` every 50 ms until it is true; panic with `what` after [`HANG`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + HANG;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ErrorResponse's SQLSTATE and message inside a tokio-postgres error.
pub(crate) fn code_and_message(e: &tokio_postgres::Error) -> (String, String) {
    let db = crate::support::db_error(e);
    (db.code().code().to_string(), db.message().to_string())
}

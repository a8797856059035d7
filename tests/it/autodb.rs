//! Databases reached through the `*` entry that the console named: registered (listed in
//! SHOW DATABASES, found by RESUME / ENABLE) and, once idle, forgotten after
//! autodb_idle_timeout unless paused or disabled.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use crate::admin::{rows, Ops};
use crate::support::{cluster, db_error, HANG};

/// SHOW DATABASES' row for `name` as (paused, disabled), if listed.
async fn listed(admin: &tokio_postgres::Client, name: &str) -> Option<(String, String)> {
    let dbs = rows(admin, "SHOW DATABASES").await;
    let row = dbs.iter().find(|r| r.get("name") == Some(name))?;
    let get = |c: &str| row.get(c).unwrap_or("?").to_string();
    Some((get("paused"), get("disabled")))
}

/// Wait until SHOW DATABASES no longer lists `name`.
async fn until_forgotten(admin: &tokio_postgres::Client, name: &str) {
    let deadline = tokio::time::Instant::now() + HANG;
    while listed(admin, name).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A name a console command registered for a `*` database (an admin's typo, a script naming
/// many) is forgotten after autodb_idle_timeout, as PgBouncer frees an idle auto-database;
/// it stayed for good. A paused one stays, paused, as in PgBouncer 1.18 (checked live: a
/// PAUSEd autodb past autodb_idle_timeout is not dropped and its clients still wait); a
/// disabled one stays disabled, where PgBouncer 1.18 drops it and so forgets the DISABLE
/// (checked live: `dropping database 'k3' as it does not exist anymore or inactive
/// auto-database`, then a client of k3 was served). Once resumed and enabled, they go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_registered_for_star_databases_are_forgotten_when_idle() {
    let pg = cluster().await;
    let extra = format!(
        "autodb_idle_timeout = 1\n[databases]\n* = host=127.0.0.1 port={}\n",
        pg.port()
    );
    let ops = Ops::on(pg, &extra).await;
    let admin = ops.admin().await;
    let [typo, held, off] = ["typo", "held", "off"].map(|n| pg.unique_name(n));
    for cmd in [
        format!("RECONNECT {typo}"),
        format!("PAUSE {held}"),
        format!("DISABLE {off}"),
    ] {
        admin.simple_query(&cmd).await.unwrap();
    }
    assert!(
        listed(&admin, &typo).await.is_some(),
        "{typo} not registered"
    );
    until_forgotten(&admin, &typo).await;
    let err = admin
        .simple_query(&format!("ENABLE {typo}"))
        .await
        .map(|_| ())
        .expect_err("ENABLE found a forgotten name");
    assert_eq!(db_error(&err).code().code(), "3D000");
    // Well past the timeout: the paused and the disabled names stay, as they were.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let [p, d] = [("1", "0"), ("0", "1")].map(|(a, b)| Some((a.to_string(), b.to_string())));
    assert_eq!(listed(&admin, &held).await, p, "{held}");
    assert_eq!(listed(&admin, &off).await, d, "{off}");
    admin.simple_query(&format!("RESUME {held}")).await.unwrap();
    admin.simple_query(&format!("ENABLE {off}")).await.unwrap();
    until_forgotten(&admin, &held).await;
    until_forgotten(&admin, &off).await;
}

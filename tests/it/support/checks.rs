//! After-fault checks: the pool is back to its baseline, PostgreSQL holds no more connections
//! than the pool allows, and the next client gets a clean server connection.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::Fixture;

/// Wait (up to 15 s) until pgporter serves no client, no pool has waiters, every server
/// connection is idle in its pool and no pool exceeds `size`; panics with the counts otherwise.
pub(crate) async fn pool_at_baseline(fx: &Fixture, size: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let counts = fx.porter.pool_counts();
        let clients = fx.porter.clients();
        let settled = clients == 0
            && counts
                .iter()
                .all(|(_, c)| c.waiting == 0 && c.idle == c.total && c.total <= size);
        if settled {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pool not back to baseline after 15 s: clients {clients}, pools {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Backends PostgreSQL runs for the fixture's user.
pub(crate) async fn server_conns(fx: &Fixture) -> i64 {
    fx.superuser()
        .await
        .query_one(
            "select count(*) from pg_stat_activity where usename = $1",
            &[&fx.user],
        )
        .await
        .expect("counting backends")
        .get(0)
}

/// Wait (up to 15 s) until PostgreSQL runs at most `max` backends for the fixture's user.
pub(crate) async fn server_conns_at_most(fx: &Fixture, max: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n = server_conns(fx).await;
        if n <= max {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PostgreSQL still runs {n} backends for {} (pool allows {max})",
            fx.user
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pid of the fixture user's backend whose query contains `needle`, once it is running
/// (bounded by [`super::HANG`]). A CancelRequest sent before that is lost: PostgreSQL ignores
/// a cancel for a backend that is not yet running the query, so tests wait for this instead
/// of sleeping.
pub(crate) async fn backend_running(fx: &Fixture, needle: &str) -> i32 {
    backend_running_as(&fx.superuser().await, &fx.user, needle).await
}

/// As [`backend_running`], for `user`'s backend, read through the superuser client `su`.
pub(crate) async fn backend_running_as(su: &Client, user: &str, needle: &str) -> i32 {
    let deadline = tokio::time::Instant::now() + super::HANG;
    loop {
        let rows = su
            .query(
                "select pid from pg_stat_activity where usename = $1 and state = 'active' \
                 and query like '%' || $2 || '%'",
                &[&user, &needle],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backend running {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session state a previous client may have left behind, as one comparable row.
pub(crate) async fn session_state(client: &Client) -> Vec<String> {
    let msgs = client
        .simple_query(
            "select \
               coalesce(pg_current_xact_id_if_assigned()::text, 'no-xact'), \
               (select count(*) from pg_class where relnamespace = pg_my_temp_schema()), \
               (select count(*) from pg_prepared_statements), \
               (select count(*) from pg_cursors), \
               (select count(*) from pg_locks where locktype = 'advisory' \
                  and pid = pg_backend_pid()), \
               (select count(*) from pg_listening_channels()), \
               current_setting('search_path'), \
               current_setting('statement_timeout'), \
               current_setting('application_name'), \
               coalesce(current_setting('porter.tag', true), '')",
        )
        .await
        .expect("reading session state");
    let row = msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    (0..row.len())
        .map(|i| row.get(i).unwrap_or("NULL").to_string())
        .collect()
}

/// What [`session_state`] reads on a fresh server connection.
pub(crate) const CLEAN: [&str; 10] = [
    "no-xact",
    "0",
    "0",
    "0",
    "0",
    "0",
    "\"$user\", public",
    "0",
    "",
    "",
];

/// Panics unless the client's server connection carries no state of an earlier session.
pub(crate) async fn assert_clean(client: &Client) {
    assert_eq!(
        session_state(client).await,
        CLEAN,
        "dirty server connection handed out"
    );
}

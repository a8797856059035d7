//! max_user_client_connections and max_db_client_connections at login (53300), and limits
//! lowered by a reload while clients are connected.

use std::sync::Arc;

use super::{base_settings, code_and_message, eventually, ini, select1, SharedAccount};

/// The 11th client of a user capped at 10 is refused with 53300 naming the limit; another
/// user still connects; a freed slot can be used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_client_connections_refuses_the_eleventh() {
    let acct = SharedAccount::new(12, "5", "", "alice = max_user_client_connections=10\n").await;
    let mut alices = Vec::new();
    for _ in 0..10 {
        alices.push(acct.connect("alice").await);
    }
    let err = acct.try_connect("alice").await.expect_err("11th alice");
    let (code, message) = code_and_message(&err);
    assert_eq!(code, "53300");
    assert_eq!(
        message,
        "client connections exceeded (max_user_client_connections)"
    );
    let bob = acct.connect("bob").await;
    select1(&bob).await.expect("bob still served");
    // Everyone already in keeps working.
    for a in &alices {
        select1(a).await.expect("connected alice");
    }
    let limits = Arc::clone(acct.porter.shared().pools.limits());
    assert_eq!(
        limits
            .rejections
            .get("alice", "max_user_client_connections"),
        1
    );
    assert_eq!(
        limits.rejections.get("bob", "max_user_client_connections"),
        0
    );

    drop(alices.pop());
    eventually("a freed alice slot is usable", || async {
        acct.try_connect("alice").await.is_ok()
    })
    .await;
}

/// max_db_client_connections, globally and per [databases] entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_client_connections_counts_every_user() {
    let acct = SharedAccount::new(4, "5", "max_db_client_connections = 100\n", "").await;
    // Lower it for this database only, through the entry (a reload swaps the snapshot in).
    let line = format!("{} max_db_client_connections=2", acct.db_line);
    acct.porter.store_config(&ini(
        &[line],
        &format!("{}max_db_client_connections = 100\n", base_settings(4, "5")),
        "",
    ));
    let _a = acct.connect("alice").await;
    let _b = acct.connect("bob").await;
    let err = acct
        .try_connect("carol")
        .await
        .expect_err("third client of the db");
    assert_eq!(
        code_and_message(&err),
        (
            "53300".to_string(),
            "client connections exceeded (max_db_client_connections)".to_string()
        )
    );
}

/// Lowering limits on reload drops no one; new grants stop until usage falls below them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_limits_apply_without_dropping_clients() {
    let acct = SharedAccount::new(5, "1", "", "").await;
    let mut alices = Vec::new();
    for _ in 0..3 {
        let c = acct.connect("alice").await;
        select1(&c).await.expect("alice");
        alices.push(c);
    }
    assert_eq!(acct.backends().await, 3);
    acct.porter.store_config(&ini(
        std::slice::from_ref(&acct.db_line),
        &format!("{}max_db_connections = 2\n", base_settings(5, "1")),
        "alice = max_user_client_connections=2\n",
    ));
    // Connected clients stay and keep their server connections.
    for a in &alices {
        select1(a).await.expect("alice after reload");
    }
    // A fourth alice is refused at login; bob logs in but gets no server connection.
    let err = acct
        .try_connect("alice")
        .await
        .expect_err("alice over the new cap");
    assert_eq!(code_and_message(&err).0, "53300");
    let bob = acct.connect("bob").await;
    let err = select1(&bob)
        .await
        .expect_err("db over the new max_db_connections");
    assert_eq!(
        code_and_message(&err).1,
        "query_wait_timeout (held back by max_db_connections)"
    );
    // Two alices leave: the first release is closed (3 > 2), the second is kept idle (2 is
    // within the limit) and goes to the next client.
    drop(alices.pop());
    drop(alices.pop());
    eventually("usage falls to the limit", || async {
        acct.backends().await == 2
    })
    .await;
    let bob = acct.connect("bob").await;
    select1(&bob)
        .await
        .expect("bob served once usage is within the limit");
    // Bob's own connection replaced alice's idle one (identity tagging), closed just before.
    acct.until_backends(2).await;
}

/// As PgBouncer 1.24+: a [users] `pool_size` sizes the pools of that backend user, before the
/// database's `pool_size=` and default_pool_size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_pool_size_sizes_that_users_pools() {
    let acct = SharedAccount::new(5, "1", "", "").await;
    acct.porter.store_config(&ini(
        std::slice::from_ref(&acct.db_line),
        &base_settings(5, "1"),
        &format!("{} = pool_size=1 reserve_pool_size=0\n", acct.backend),
    ));
    let holder = acct.connect("alice").await;
    select1(&holder).await.expect("first session");
    let second = acct.connect("bob").await;
    let err = select1(&second)
        .await
        .expect_err("the pool of one is taken");
    assert_eq!(
        code_and_message(&err),
        (
            "08P01".to_string(),
            "query_wait_timeout (held back by pool_size)".to_string()
        )
    );
    assert_eq!(acct.backends().await, 1);
}

/// As PgBouncer 1.24+: [users] `query_wait_timeout` and `client_idle_timeout` go by the user
/// the client logged in as (PgBouncer's `client->login_user_credentials`), not the forced
/// backend user of the pool, whose entry sets the server-side timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_wait_and_idle_timeouts_follow_the_login_user() {
    let users = "alice = query_wait_timeout=1 client_idle_timeout=1\n";
    let acct = SharedAccount::new(1, "30", "", users).await;
    let holder = acct.connect("bob").await;
    select1(&holder).await.expect("bob holds the pool of one");
    let alice = acct.connect("alice").await;
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), select1(&alice))
        .await
        .expect("alice's own query_wait_timeout (1 s), not the global 30 s")
        .expect_err("no server for alice");
    assert_eq!(code_and_message(&err).0, "08P01");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // An idle alice is closed after her 1 s; an idle bob (no limit of his own) is not.
    let idle_alice = acct.connect("alice").await;
    let idle_bob = acct.connect("bob").await;
    eventually("alice closed by her client_idle_timeout", || async {
        idle_alice.is_closed()
    })
    .await;
    drop(holder);
    select1(&idle_bob).await.expect("bob kept");
}

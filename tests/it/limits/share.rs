//! max_user_pool_share and fair order inside one shared pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{code_and_message, eventually, select1, SharedAccount};

/// Alice opens 40 sessions on a pool of 10 capped at 5 per identity: she gets 5 server
/// connections, the other 35 wait, and bob, arriving later, is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_gets_at_most_its_share() {
    let acct = SharedAccount::new(10, "30", "max_user_pool_share = 5\n", "").await;
    // The first login makes the pool's first connection (welcome parameters); after that
    // logins need no server connection.
    let mut alices = vec![acct.connect("alice").await];
    for _ in 1..40 {
        alices.push(acct.connect("alice").await);
    }
    let served = Arc::new(AtomicUsize::new(0));
    let mut queries = Vec::new();
    for client in alices {
        let served = Arc::clone(&served);
        queries.push(tokio::spawn(async move {
            // Session mode: a served client keeps its server connection while it stays.
            if client.simple_query("select 1").await.is_ok() {
                served.fetch_add(1, Ordering::SeqCst);
            }
            client
        }));
    }
    eventually("5 alice sessions served", || {
        let served = Arc::clone(&served);
        async move { served.load(Ordering::SeqCst) == 5 }
    })
    .await;

    let started = Instant::now();
    let bob = acct.connect("bob").await;
    select1(&bob).await.expect("bob's query");
    let bob_wait = started.elapsed();

    // Still 5: the other 35 alice sessions wait while 4 connections of the pool sit unused
    // (awaited until all 40 are served or queued: 35 queries sent by spawned tasks need not
    // all have arrived on a loaded machine).
    let pool = acct
        .porter
        .shared()
        .pools
        .all()
        .into_iter()
        .next()
        .expect("the shared pool");
    eventually("every alice session served or queued", || {
        let waiting = usize::try_from(pool.counts().waiting).unwrap_or(0);
        let all = served.load(Ordering::SeqCst) + waiting;
        async move { all >= 40 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served.load(Ordering::SeqCst),
        5,
        "alice went over her share"
    );
    assert_eq!(acct.backends().await, 6, "5 for alice + 1 for bob");
    assert_eq!(pool.held_by("alice"), 5);
    assert_eq!(pool.held_by("bob"), 1);
    assert_eq!(pool.counts().waiting, 35);
    eprintln!("bob served in {bob_wait:?} while alice had 35 sessions waiting");
    drop(bob);
    for q in queries {
        q.abort();
    }
}

/// A waiting identity holding nothing goes before one holding several, although it came later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_connection_goes_to_the_identity_holding_least() {
    let acct = SharedAccount::new(2, "30", "", "").await;
    let a1 = acct.connect("alice").await;
    let a2 = acct.connect("alice").await;
    select1(&a1).await.expect("a1");
    select1(&a2).await.expect("a2");
    // Alice queues first, bob second; the pool (2) is full with alice's.
    let a3 = acct.connect("alice").await;
    let a3_query = tokio::spawn(async move { select1(&a3).await.map(|()| a3) });
    let pool = acct.porter.shared().pools.all().pop().expect("pool");
    eventually("alice's third session waits", || {
        let pool = Arc::clone(&pool);
        async move { pool.counts().waiting == 1 }
    })
    .await;
    let bob = acct.connect("bob").await;
    let bob_query = tokio::spawn(async move { select1(&bob).await.map(|()| bob) });
    eventually("bob waits too", || {
        let pool = Arc::clone(&pool);
        async move { pool.counts().waiting == 2 }
    })
    .await;
    drop(a1);
    let bob = tokio::time::timeout(Duration::from_secs(10), bob_query)
        .await
        .expect("bob served after alice's release")
        .expect("bob task")
        .expect("bob query");
    assert!(!a3_query.is_finished(), "alice overtook bob");
    assert_eq!(pool.held_by("bob"), 1);
    drop(bob);
    a3_query
        .await
        .expect("a3 task")
        .expect("alice served once bob leaves");
    drop(a2);
}

/// A percentage share, and the query_wait_timeout error naming the share as the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_as_percentage_and_its_timeout_error() {
    // 50% of 3 = 2 (rounded up).
    let acct = SharedAccount::new(3, "1", "max_user_pool_share = 50%\n", "").await;
    let a1 = acct.connect("alice").await;
    let a2 = acct.connect("alice").await;
    let a3 = acct.connect("alice").await;
    select1(&a1).await.expect("a1");
    select1(&a2).await.expect("a2");
    let err = select1(&a3)
        .await
        .expect_err("alice's third connection is over her share");
    let (code, message) = code_and_message(&err);
    assert_eq!(code, "08P01");
    assert_eq!(
        message,
        "query_wait_timeout (held back by max_user_pool_share)"
    );
    // The third slot of the pool is still there for someone else.
    let bob = acct.connect("bob").await;
    select1(&bob).await.expect("bob");
    let limits = acct.porter.shared().pools.limits();
    assert_eq!(limits.rejections.get("alice", "query_wait_timeout"), 1);
}

//! Limits across pools (max_db_connections, max_user_connections), the reserve pool, and the
//! query_wait_timeout error.

use std::time::Duration;

use tokio::time::Instant;

use super::{backends, base_settings, code_and_message, eventually, ini, select1, try_connect};
use crate::support::fixture::{userlist, PASSWORD};
use crate::support::{cluster, spawn_pgporter, Porter};

fn connstring(porter: &Porter, user: &str, db: &str) -> String {
    porter.connstring(user, PASSWORD, db)
}

/// Two users' pools on one database share max_db_connections; an idle connection of one pool
/// is closed to make room for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_holds_across_pools() {
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
    let settings = format!("{}max_db_connections = 2\n", base_settings(5, "1"));
    let porter = spawn_pgporter(
        &ini(&[line], &settings, ""),
        &userlist(&[(&u1, PASSWORD), (&u2, PASSWORD)]),
    )
    .await;
    let first = try_connect(&connstring(&porter, &u1, &db))
        .await
        .expect("u1");
    let second = try_connect(&connstring(&porter, &u1, &db))
        .await
        .expect("u1");
    select1(&first).await.expect("u1 first");
    select1(&second).await.expect("u1 second");
    // u2's pool has room (5) but the database has not: its login waits, then fails.
    let err = try_connect(&connstring(&porter, &u2, &db))
        .await
        .expect_err("database full");
    assert_eq!(
        code_and_message(&err),
        (
            "08P01".to_string(),
            "query_wait_timeout (held back by max_db_connections)".to_string()
        )
    );
    // u1's second session leaves: its connection goes idle in u1's pool, and is closed when
    // u2 needs the slot.
    drop(second);
    eventually("u1's connection is back in its pool", || async {
        porter
            .shared()
            .pools
            .all()
            .iter()
            .any(|p| p.counts().idle == 1)
    })
    .await;
    let u2c = try_connect(&connstring(&porter, &u2, &db))
        .await
        .expect("u2 after room was made");
    select1(&u2c).await.expect("u2 query");
    assert_eq!(backends(cluster, None, Some(&db)).await, 2);
    assert_eq!(backends(cluster, Some(&u2), Some(&db)).await, 1);
}

/// Pools sharing a full max_db_connections even out: a connection coming back to a pool that
/// holds two more than a starved sibling is closed and its slot goes to the sibling's client
/// (handed to its own pool's next client, the other pool starved for as long as this one's
/// clients kept coming); once even, connections stay with their pool (moving one at every
/// checkin made both pools reconnect on almost every session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_sharing_a_full_limit_even_out_and_then_keep_their_connections() {
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
    let settings = format!("{}max_db_connections = 2\n", base_settings(5, "60"));
    let porter = spawn_pgporter(
        &ini(&[line], &settings, ""),
        &userlist(&[(&u1, PASSWORD), (&u2, PASSWORD)]),
    )
    .await;
    let waiting = |user: &str| {
        let user = user.to_string();
        let shared = porter.shared();
        move || {
            let n: u32 = (shared.pools.all().iter())
                .filter(|p| *p.key.user == *user)
                .map(|p| p.counts().waiting)
                .sum();
            async move { n == 1 }
        }
    };
    let pid = |c: tokio_postgres::Client| async move {
        let row = c.query_one("select pg_backend_pid()", &[]).await.unwrap();
        (row.get::<_, i32>(0), c)
    };
    // u2's pool has met the server once (its first client's login waits for a connection).
    let c = try_connect(&connstring(&porter, &u2, &db))
        .await
        .expect("u2");
    select1(&c).await.expect("u2's first query");
    drop(c);
    let mut held = Vec::new();
    for _ in 0..2 {
        let c = try_connect(&connstring(&porter, &u1, &db))
            .await
            .expect("u1");
        select1(&c).await.expect("u1 holds a slot");
        held.push(c);
    }
    let queued = |user: &str| {
        let cs = connstring(&porter, user, &db);
        tokio::spawn(async move {
            let c = try_connect(&cs).await.expect("login");
            select1(&c).await.map(|()| c)
        })
    };
    // u1 holds both slots, u2 holds none: u1's next connection back goes to u2.
    let other = queued(&u2);
    eventually("u2's client waits", waiting(&u2)).await;
    let newer = queued(&u1);
    eventually("u1's newer client waits", waiting(&u1)).await;
    drop(held.remove(0));
    let other = tokio::time::timeout(crate::support::HANG, other)
        .await
        .expect("u2's client was not given the slot u1 had two of")
        .expect("join")
        .expect("u2's query");
    assert!(!newer.is_finished(), "u1's newer client was served first");
    // One each now: u1's connections back go to u1's own clients (the same backend), also
    // when u2's client has waited longer.
    let second_u2 = queued(&u2);
    eventually("u2's second client waits", waiting(&u2)).await;
    let (kept, last) = pid(held.remove(0)).await;
    drop(last);
    let served = |task: tokio::task::JoinHandle<Result<tokio_postgres::Client, _>>| async {
        let c = tokio::time::timeout(crate::support::HANG, task)
            .await
            .expect("u1's client hung")
            .expect("join")
            .expect("u1's query");
        pid(c).await
    };
    let (first_pid, newer) = served(newer).await;
    assert_eq!(first_pid, kept, "the even pools swapped a connection");
    let newest = queued(&u1);
    eventually("u1's newest client waits", waiting(&u1)).await;
    drop(newer);
    let (second_pid, _newest) = served(newest).await;
    assert_eq!(
        second_pid, kept,
        "u1's connection went to u2's older client: a reconnect"
    );
    assert!(!second_u2.is_finished());
    drop(other);
    second_u2
        .await
        .expect("join")
        .expect("u2's second client, next");
    assert!(backends(cluster, None, Some(&db)).await <= 2);
}

/// A slot is not moved to a sibling pool that could not use it: bob's client waits on a full
/// max_db_connections and on his own full max_user_connections, so alice's connection coming
/// back goes to alice's next client, the same backend (closing it freed nothing bob could take
/// and made alice reconnect at every session for as long as he waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_not_moved_to_a_pool_that_cannot_use_it() {
    let cluster = cluster().await;
    let (alice, bob, d1, d2) = (
        cluster.unique_name("u"),
        cluster.unique_name("u"),
        cluster.unique_name("db"),
        cluster.unique_name("db"),
    );
    for u in [&alice, &bob] {
        cluster.create_role(u, PASSWORD).await;
    }
    cluster.create_database(&d1, &alice).await;
    cluster.create_database(&d2, &alice).await;
    let lines = [
        format!(
            "{d1} = host=127.0.0.1 port={} max_db_connections=2",
            cluster.port()
        ),
        format!("{d2} = host=127.0.0.1 port={}", cluster.port()),
    ];
    let porter = spawn_pgporter(
        &ini(
            &lines,
            &base_settings(5, "60"),
            &format!("{bob} = max_user_connections=1\n"),
        ),
        &userlist(&[(&alice, PASSWORD), (&bob, PASSWORD)]),
    )
    .await;
    let connect = |user: &str, db: &str| {
        let cs = connstring(&porter, user, db);
        async move { try_connect(&cs).await.expect("login") }
    };
    // bob: a pool on d1 that met the server once, then his one connection held on d2.
    let b = connect(&bob, &d1).await;
    select1(&b).await.expect("bob on d1");
    drop(b);
    let bob_d2 = connect(&bob, &d2).await;
    select1(&bob_d2)
        .await
        .expect("bob holds his one connection on d2");
    // alice fills d1.
    let a1 = connect(&alice, &d1).await;
    let a2 = connect(&alice, &d1).await;
    let kept: i32 = a1
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    select1(&a2).await.expect("alice's second");
    let queued = |user: &str| {
        let cs = connstring(&porter, user, &d1);
        tokio::spawn(async move {
            let c = try_connect(&cs).await.expect("login");
            let row = c.query_one("select pg_backend_pid()", &[]).await?;
            Ok::<_, tokio_postgres::Error>((row.get::<_, i32>(0), c))
        })
    };
    let waiting = |user: &str| {
        let user = user.to_string();
        let shared = porter.shared();
        move || {
            let n: u32 = (shared.pools.all().iter())
                .filter(|p| *p.key.user == *user)
                .map(|p| p.counts().waiting)
                .sum();
            async move { n == 1 }
        }
    };
    let bob_d1 = queued(&bob);
    eventually("bob's client waits on d1", waiting(&bob)).await;
    let alice_next = queued(&alice);
    eventually("alice's next client waits", waiting(&alice)).await;
    drop(a1);
    let (got, _c) = tokio::time::timeout(crate::support::HANG, alice_next)
        .await
        .expect("alice's next client")
        .expect("join")
        .expect("query");
    assert_eq!(
        got, kept,
        "alice's connection was closed for bob, who could not use it"
    );
    assert!(
        !bob_d1.is_finished(),
        "bob got past his own max_user_connections"
    );
    // Once his d2 session and one of alice's leave, bob is served.
    drop(bob_d2);
    drop(a2);
    let (_, _b) = tokio::time::timeout(crate::support::HANG, bob_d1)
        .await
        .expect("bob, once his d2 session left")
        .expect("join")
        .expect("query");
}

/// One backend user's pools on two databases share max_user_connections ([users] override).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_holds_across_pools() {
    let cluster = cluster().await;
    let (u, d1, d2) = (
        cluster.unique_name("u"),
        cluster.unique_name("db"),
        cluster.unique_name("db"),
    );
    cluster.create_role(&u, PASSWORD).await;
    cluster.create_database(&d1, &u).await;
    cluster.create_database(&d2, &u).await;
    let lines: Vec<String> = [&d1, &d2]
        .iter()
        .map(|d| format!("{d} = host=127.0.0.1 port={}", cluster.port()))
        .collect();
    let porter = spawn_pgporter(
        &ini(
            &lines,
            &base_settings(5, "1"),
            &format!("{u} = max_user_connections=1\n"),
        ),
        &userlist(&[(&u, PASSWORD)]),
    )
    .await;
    let on_d1 = try_connect(&connstring(&porter, &u, &d1))
        .await
        .expect("d1");
    select1(&on_d1).await.expect("d1 query");
    let err = try_connect(&connstring(&porter, &u, &d2))
        .await
        .expect_err("user at max_user_connections");
    assert_eq!(
        code_and_message(&err).1,
        "query_wait_timeout (held back by max_user_connections)"
    );
    drop(on_d1);
    eventually("the d1 connection is idle", || async {
        porter
            .shared()
            .pools
            .all()
            .iter()
            .any(|p| p.counts().idle == 1)
    })
    .await;
    let on_d2 = try_connect(&connstring(&porter, &u, &d2))
        .await
        .expect("d2");
    select1(&on_d2).await.expect("d2 query");
    assert_eq!(backends(cluster, Some(&u), None).await, 1);
}

/// The reserve pool opens only after reserve_pool_timeout; beyond it, query_wait_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_only_after_its_timeout() {
    let acct = super::SharedAccount::new(
        1,
        "4",
        "reserve_pool_size = 1\nreserve_pool_timeout = 1\n",
        "",
    )
    .await;
    let holder = acct.connect("alice").await;
    select1(&holder).await.expect("first session");
    let second = acct.connect("bob").await;
    let started = Instant::now();
    select1(&second)
        .await
        .expect("served from the reserve pool");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "reserve pool used after {waited:?}, before reserve_pool_timeout"
    );
    assert_eq!(acct.backends().await, 2);
    // Pool and reserve are both in use: the next client times out, naming the pool size.
    let third = acct.connect("carol").await;
    let err = select1(&third).await.expect_err("pool and reserve full");
    assert_eq!(
        code_and_message(&err),
        (
            "08P01".to_string(),
            "query_wait_timeout (held back by pool_size)".to_string()
        )
    );
    // A released reserve connection is closed: the pool goes back to its size.
    drop(second);
    eventually("the reserve connection is closed", || async {
        acct.backends().await == 1
    })
    .await;
    drop(holder);
}

/// A client whose login times out while it waits for a server connection gives its place
/// back: nothing leaks, later clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_waits_leak_nothing() {
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
    let settings = format!(
        "{}max_db_connections = 1\nclient_login_timeout = 1\n",
        base_settings(5, "10")
    );
    // u1's own login makes a server connection, which may take more than 1 s on a loaded
    // machine: the 1 s limit comes in by reload once u1 holds the slot.
    let porter = spawn_pgporter(
        &ini(
            std::slice::from_ref(&line),
            &format!(
                "{}max_db_connections = 1
",
                base_settings(5, "10")
            ),
            "",
        ),
        &userlist(&[(&u1, PASSWORD), (&u2, PASSWORD)]),
    )
    .await;
    let holder = try_connect(&connstring(&porter, &u1, &db))
        .await
        .expect("u1");
    // A logged-in client holds no server until its first request; this one takes the
    // database's only slot for its session.
    holder.simple_query("select 1").await.expect("u1's query");
    porter.store_config(&ini(std::slice::from_ref(&line), &settings, ""));
    // u2's first login needs a server connection (welcome parameters) and waits for the
    // database slot until client_login_timeout ends it.
    for _ in 0..3 {
        let err = try_connect(&connstring(&porter, &u2, &db))
            .await
            .expect_err("login timeout");
        assert_eq!(code_and_message(&err).1, "client_login_timeout");
    }
    let waiting: u32 = porter
        .shared()
        .pools
        .all()
        .iter()
        .map(|p| p.counts().waiting)
        .sum();
    assert_eq!(waiting, 0, "abandoned waiters left in the queue");
    drop(holder);
    eventually("u1's connection is idle", || async {
        porter
            .shared()
            .pools
            .all()
            .iter()
            .any(|p| p.counts().idle == 1)
    })
    .await;
    // A login that makes a server connection may take more than 1 s on a loaded machine.
    porter.store_config(&ini(
        &[line],
        &format!("{}max_db_connections = 1\n", base_settings(5, "10")),
        "",
    ));
    let u2c = try_connect(&connstring(&porter, &u2, &db))
        .await
        .expect("u2 once u1 left");
    select1(&u2c).await.expect("u2 query");
    let totals: u32 = porter
        .shared()
        .pools
        .all()
        .iter()
        .map(|p| p.counts().total)
        .sum();
    assert_eq!(
        totals, 1,
        "one server connection in all: u1's was closed for u2"
    );
}

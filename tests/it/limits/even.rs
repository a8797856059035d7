//! Pools sharing a full max_db_connections / max_user_connections: a slot moves to a starved
//! sibling pool to even them out, and only to one that can use it; once even, connections stay
//! with their pool.

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::{backends, base_settings, eventually, ini, try_connect, two_users_one_db};
use crate::support::fixture::{userlist, PASSWORD};
use crate::support::{cluster, spawn_pgporter, Porter, HANG};

/// A client of `user` on `db` that logs in and asks for its backend's pid, waiting for a
/// server connection as long as it takes.
fn queued(
    porter: &Porter,
    user: &str,
    db: &str,
) -> JoinHandle<Result<(i32, Client), tokio_postgres::Error>> {
    let connstring = porter.connstring(user, PASSWORD, db);
    tokio::spawn(async move {
        let c = try_connect(&connstring).await.expect("login");
        let row = c.query_one("select pg_backend_pid()", &[]).await?;
        Ok((row.get::<_, i32>(0), c))
    })
}

/// What a queued client got: its backend's pid and the client.
async fn served(
    client: JoinHandle<Result<(i32, Client), tokio_postgres::Error>>,
    who: &str,
) -> (i32, Client) {
    tokio::time::timeout(HANG, client)
        .await
        .unwrap_or_else(|_| panic!("{who} was not served"))
        .expect("join")
        .expect("query")
}

/// True once `user`'s pools have exactly one client waiting.
fn one_waiting<'a>(
    porter: &'a Porter,
    user: &'a str,
) -> impl FnMut() -> std::future::Ready<bool> + 'a {
    move || {
        let n: u32 = (porter.shared().pools.all().iter())
            .filter(|p| *p.key.user == *user)
            .map(|p| p.counts().waiting)
            .sum();
        std::future::ready(n == 1)
    }
}

/// A connection coming back to a pool that holds two more than a starved sibling is closed
/// and its slot goes to the sibling's client (handed to its own pool's next client, the other
/// pool starved for as long as this one's clients kept coming); once even, connections stay
/// with their pool, also when the other pool's client has waited longer (moving one at every
/// checkin made both pools reconnect on almost every session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_sharing_a_full_limit_even_out_and_then_keep_their_connections() {
    let (cluster, u1, u2, db, porter) = two_users_one_db(&format!(
        "{}max_db_connections = 2\n",
        base_settings(5, "60")
    ))
    .await;
    // u2's pool has met the server once (its first client's login waits for a connection).
    drop(served(queued(&porter, &u2, &db), "u2's first client").await);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(served(queued(&porter, &u1, &db), "u1").await);
    }
    // u1 holds both slots, u2 none: u1's next connection back goes to u2.
    let other = queued(&porter, &u2, &db);
    eventually("u2's client waits", one_waiting(&porter, &u2)).await;
    let newer = queued(&porter, &u1, &db);
    eventually("u1's newer client waits", one_waiting(&porter, &u1)).await;
    drop(held.remove(0));
    let other = served(other, "u2's client, when u1 held both slots").await;
    assert!(!newer.is_finished(), "u1's newer client was served first");
    // One each now: u1's connections back go to u1's own clients, the same backend.
    let second_u2 = queued(&porter, &u2, &db);
    eventually("u2's second client waits", one_waiting(&porter, &u2)).await;
    let (kept, last) = held.remove(0);
    drop(last);
    let (pid, newer) = served(newer, "u1's newer client").await;
    assert_eq!(pid, kept, "the even pools swapped a connection");
    let newest = queued(&porter, &u1, &db);
    eventually("u1's newest client waits", one_waiting(&porter, &u1)).await;
    drop(newer);
    let (pid, _newest) = served(newest, "u1's newest client").await;
    assert_eq!(
        pid, kept,
        "u1's connection went to u2's older client: a reconnect"
    );
    assert!(!second_u2.is_finished());
    drop(other);
    served(second_u2, "u2's second client").await;
    // Connections moved between the two users' pools were closed and opened again: awaited
    // until the closed ones' backends left.
    eventually("at most 2 backends", || async {
        backends(cluster, None, Some(&db)).await <= 2
    })
    .await;
}

/// A slot is not moved to a sibling pool that could not use it: bob's client waits on a full
/// max_db_connections and on his own full max_user_connections, so alice's connection coming
/// back goes to alice's next client, the same backend (closing it freed nothing bob could take
/// and made alice reconnect at every session for as long as he waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_not_moved_to_a_pool_that_cannot_use_it() {
    let (alice, bob, d1, d2, porter) = d1_full_and_bob_capped(&base_settings(5, "60")).await;
    // bob: a pool on d1 that met the server once, then his one connection held on d2.
    drop(served(queued(&porter, &bob, &d1), "bob on d1").await);
    let (_, bob_d2) = served(queued(&porter, &bob, &d2), "bob on d2").await;
    // alice fills d1.
    let (kept, a1) = served(queued(&porter, &alice, &d1), "alice").await;
    let (_, a2) = served(queued(&porter, &alice, &d1), "alice's second").await;
    let bob_d1 = queued(&porter, &bob, &d1);
    eventually("bob's client waits on d1", one_waiting(&porter, &bob)).await;
    let alice_next = queued(&porter, &alice, &d1);
    eventually("alice's next client waits", one_waiting(&porter, &alice)).await;
    drop(a1);
    let (pid, _c) = served(alice_next, "alice's next client").await;
    assert_eq!(
        pid, kept,
        "alice's connection was closed for bob, who could not use it"
    );
    assert!(
        !bob_d1.is_finished(),
        "bob got past his own max_user_connections"
    );
    // Once his d2 session and one of alice's leave, bob is served.
    drop(bob_d2);
    drop(a2);
    served(bob_d1, "bob, once his d2 session left").await;
}

/// Transaction mode: bob waits on d1's full max_db_connections and on his own
/// max_user_connections, held by his idle connection on d2 (idle before he started waiting,
/// so nothing ever returns it). Once alice's transactions end and d1 has room, that idle
/// connection is closed and bob is served (he waited out query_wait_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_held_by_two_limits_is_served_once_both_free() {
    let settings = format!("{}pool_mode = transaction\n", base_settings(5, "10"));
    let (alice, bob, d1, d2, porter) = d1_full_and_bob_capped(&settings).await;
    let (_, _bob_d2) = served(queued(&porter, &bob, &d2), "bob on d2").await;
    let mut alices = Vec::new();
    for _ in 0..2 {
        let c = try_connect(&porter.connstring(&alice, PASSWORD, &d1))
            .await
            .expect("alice");
        c.batch_execute("begin; select 1")
            .await
            .expect("alice's transaction");
        alices.push(c);
    }
    let bob_d1 = queued(&porter, &bob, &d1);
    eventually("bob waits on d1", one_waiting(&porter, &bob)).await;
    for c in &alices {
        c.batch_execute("commit").await.expect("commit");
    }
    served(bob_d1, "bob, once alice's transactions ended").await;
}

/// alice and bob, databases d1 (max_db_connections = 2) and d2, bob capped at one server
/// connection (max_user_connections = 1), pgporter with `settings`: (alice, bob, d1, d2,
/// pgporter).
async fn d1_full_and_bob_capped(settings: &str) -> (String, String, String, String, Porter) {
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
    let port = cluster.port();
    let lines = [
        format!("{d1} = host=127.0.0.1 port={port} max_db_connections=2"),
        format!("{d2} = host=127.0.0.1 port={port}"),
    ];
    let porter = spawn_pgporter(
        &ini(
            &lines,
            settings,
            &format!("{bob} = max_user_connections=1\n"),
        ),
        &userlist(&[(&alice, PASSWORD), (&bob, PASSWORD)]),
    )
    .await;
    (alice, bob, d1, d2, porter)
}

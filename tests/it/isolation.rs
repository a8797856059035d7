//! Isolation: many clients with distinct identities leave random session state behind (temp
//! tables, SET, prepared statements, cursors, advisory locks, LISTEN, open transactions) and
//! vanish politely or abruptly; no client ever observes another's state on a reused server
//! connection, nor another identity's server connection.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::time::timeout;
use tokio_postgres::NoTls;

use crate::support::checks::{session_state, CLEAN};
use crate::support::fixture::{ini, userlist, PASSWORD};
use crate::support::{cluster, spawn_pgporter, Porter, HANG};

const USERS: usize = 3;
const CLIENTS_PER_USER: usize = 4;
const ROUNDS: usize = 8;
const POOL_SIZE: u32 = 2;

/// The first value of the first row (empty when there is none).
async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    crate::support::simple_value(client, sql)
        .await
        .unwrap_or_default()
}

/// Random session state, tagged with `tag` where the state has a name or a value.
fn dirty_statements(rng: &mut impl Rng, tag: &str, lock: i64) -> Vec<String> {
    let all = [
        format!("set porter.tag = '{tag}'"),
        format!("set search_path = s_{tag}, public"),
        format!("set statement_timeout = {}", rng.gen_range(1000..100_000)),
        format!("set application_name = 'app_{tag}'"),
        format!("create temp table tt_{tag} (x int)"),
        format!("prepare p_{tag} as select 1"),
        format!("select pg_advisory_lock({lock})"),
        format!("listen ch_{tag}"),
        format!("begin; declare c_{tag} cursor with hold for select 1; commit"),
    ];
    all.into_iter().filter(|_| rng.gen_bool(0.6)).collect()
}

async fn one_client(porter_addr: u16, user: String, db: String, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..ROUNDS {
        let connstring = format!(
            "host=127.0.0.1 port={porter_addr} user={user} password={PASSWORD} dbname={db} \
             sslmode=disable"
        );
        let (client, conn) = timeout(HANG, tokio_postgres::connect(&connstring, NoTls))
            .await
            .expect("connect hung")
            .expect("connect");
        let task = tokio::spawn(conn);
        // What a new session sees: no trace of anyone before it, and its own identity.
        assert_eq!(session_state(&client).await, CLEAN, "{user} round {round}");
        assert_eq!(value(&client, "select current_user").await, user);

        let tag = format!("{seed}_{round}");
        let lock = i64::try_from(seed).unwrap_or(0) * 100 + i64::try_from(round).unwrap_or(0);
        let statements = dirty_statements(&mut rng, &tag, lock);
        for sql in &statements {
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let in_tx = rng.gen_bool(0.3);
        if in_tx {
            client
                .batch_execute("begin; create temp table inside_tx (x int)")
                .await
                .unwrap();
        }
        // Our own state is still ours (nobody swapped the server connection under us).
        if statements.iter().any(|s| s.starts_with("set porter.tag")) {
            assert_eq!(
                value(&client, "select current_setting('porter.tag')").await,
                tag
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
        if rng.gen_bool(0.5) {
            drop(client); // polite: Terminate
            let _ = task.await;
        } else {
            task.abort(); // abrupt: the socket just closes
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_sees_another_clients_state() {
    let cluster = cluster().await;
    let db = cluster.unique_name("iso");
    let users: Vec<String> = (0..USERS).map(|_| cluster.unique_name("iso_u")).collect();
    for u in &users {
        cluster.create_role(u, PASSWORD).await;
    }
    cluster.create_database(&db, &users[0]).await;
    let list: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let porter: Porter = spawn_pgporter(
        &ini(
            &[(&db, cluster.port())],
            POOL_SIZE,
            "query_wait_timeout = 60",
        ),
        &userlist(&list),
    )
    .await;
    let port = porter.port();

    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        for j in 0..CLIENTS_PER_USER {
            let seed = u64::try_from(i * CLIENTS_PER_USER + j + 1).unwrap();
            tasks.push(tokio::spawn(one_client(
                port,
                user.clone(),
                db.clone(),
                seed,
            )));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(120), t)
            .await
            .expect("isolation clients hung")
            .expect("an isolation client failed");
    }
    // Every identity has its own pool, none above its size, all idle again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while porter.clients() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "clients linger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = porter.pool_counts();
    assert_eq!(counts.len(), USERS, "{counts:?}");
    for (_, c) in &counts {
        assert!(c.total <= POOL_SIZE && c.waiting == 0, "{counts:?}");
    }
}

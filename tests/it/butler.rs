//! The Rubin data butler (lsst-daf-butler) through pgporter, end to end: tests/e2e/butler_e2e.py
//! run by two people (alice on SQLAlchemy + psycopg2, bob on SQLAlchemy's default driver,
//! psycopg 3) with per-user SCRAM credentials in pgporter's userlist, over one shared backend
//! account forced by `user=` in the [databases] entry. See README "Using pgporter with the
//! butler".
//!
//! Steps waiting for other pgporter features are skipped with a printed, counted reason by the
//! script (none today: the read-only endpoint and the audit trail steps both run).

use std::process::Command;
use std::time::Duration;

use crate::support::checklist::{e2e_file, run_checklist};
use crate::support::fixture::userlist;
use crate::support::pg::{ident, literal};
use crate::support::skip::python;
use crate::support::{cluster, spawn_pgporter};

const ALICE_PW: &str = "alice-butler-pw";
const BOB_PW: &str = "bob-butler-pw";
const BACKEND_PW: &str = "shared-backend-pw";

/// A SCRAM verifier for `password`, as PostgreSQL itself computes it (pg_authid.rolpassword).
async fn scram_verifier(password: &str) -> String {
    let cluster = cluster().await;
    let role = cluster.unique_name("verifier");
    let su = cluster.superuser_client().await;
    su.batch_execute(&format!(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE {} PASSWORD {}",
        ident(&role),
        literal(password)
    ))
    .await
    .expect("create verifier role");
    let secret: String = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .expect("read verifier")
        .get(0);
    su.batch_execute(&format!("DROP ROLE {}", ident(&role)))
        .await
        .expect("drop verifier role");
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn butler_end_to_end() {
    let Some(python) = python("butler end-to-end") else {
        return;
    };
    let cluster = cluster().await;
    let backend = cluster.unique_name("rubin");
    let db = cluster.unique_name("butler");
    cluster.create_role(&backend, BACKEND_PW).await;
    cluster.create_database(&db, &backend).await;
    // The registry needs btree_gist; extensions are per database.
    cluster
        .local_client("postgres", &db)
        .await
        .batch_execute("CREATE EXTENSION btree_gist")
        .await
        .expect("create extension btree_gist");

    // alice: plaintext secret; bob: a SCRAM verifier (pgporter never sees his password).
    let users = userlist(&[("alice", ALICE_PW), ("bob", &scram_verifier(BOB_PW).await)]);
    let ini = format!(
        "[databases]\n\
         butler = host=127.0.0.1 port={port} dbname={db} user={backend} password={BACKEND_PW}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = 0\n\
         readonly_listen_port = 0\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = userlist.txt\n\
         pool_mode = session\n\
         default_pool_size = 8\n\
         query_wait_timeout = 30\n\
         audit_log = {{dir}}/audit.log\n",
        port = cluster.port(),
    );
    let porter = spawn_pgporter(&ini, &users).await;
    let work = tempfile::Builder::new()
        .prefix("pgporter-butler-")
        .tempdir()
        .expect("temp dir");

    let mut cmd = Command::new(python);
    cmd.arg(e2e_file("butler_e2e.py"))
        .arg("--workdir")
        .arg(work.path())
        .args(["--host", "127.0.0.1", "--port", &porter.port().to_string()])
        .args(["--dbname", "butler"])
        .args(["--readonly-port", &porter.readonly_port().to_string()])
        .args(["--person", &format!("alice:psycopg2:{ALICE_PW}")])
        .args(["--person", &format!("bob:psycopg:{BOB_PW}")])
        .arg("--audit-log")
        .arg(porter.dir().join("audit.log"));
    let out = run_checklist(cmd, "butler_e2e.py", Duration::from_secs(600)).await;
    for step in [
        "create",
        "dimensions",
        "put-get",
        "tagged",
        "temp-table-queries",
        "readonly",
        "audit",
    ] {
        assert!(
            out.contains(&format!("STEP {step}")),
            "step {step} did not run"
        );
    }

    // Behind pgporter's back: everything was written by the one shared backend account.
    let direct = cluster.local_client(&backend, &db).await;
    let owners: Vec<String> = direct
        .query(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("table owners")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, [backend.as_str()]);
    let runs: i64 = direct
        .query_one(
            "SELECT count(*) FROM collection WHERE name LIKE '%/run1'",
            &[],
        )
        .await
        .expect("collections")
        .get(0);
    assert_eq!(runs, 2);
}

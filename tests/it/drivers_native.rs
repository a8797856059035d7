//! The driver matrix, continued: tokio-postgres (in-process) and libpq through psql and
//! pgbench. Same check list as `drivers`; each check prints `PASS driver:check`.

use std::io::Write as _;
use std::process::{Command, Stdio};

use std::time::Duration;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt as _, TryStreamExt as _};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::checks::backend_running;
use crate::support::cmd::{run, success};
use crate::support::skip::skip;
use crate::support::{db_error, Fixture};

fn pass(check: &str) {
    let _ = writeln!(std::io::stderr(), "PASS {check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    pass("tokio-postgres:connect");
    let rows = client
        .simple_query("SELECT 1; SELECT 2")
        .await
        .expect("simple");
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "2"], "{rows:?}");
    pass("tokio-postgres:simple-query");
    let stmt = client.prepare("SELECT $1::int * 2").await.expect("prepare");
    for i in 0..3 {
        let v: i32 = client.query_one(&stmt, &[&i]).await.expect("bind").get(0);
        assert_eq!(v, 2 * i);
    }
    let named: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql",
            &[],
        )
        .await
        .expect("pg_prepared_statements")
        .get(0);
    assert!(named >= 1, "no named prepared statement on the server");
    pass("tokio-postgres:params-prepared");
    client
        .batch_execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text)")
        .await
        .expect("create temp");
    client
        .execute(
            "INSERT INTO t VALUES ($1, $2), ($3, $4)",
            &[&1, &"one", &2, &"two"],
        )
        .await
        .expect("insert");
    assert_eq!(count_t(&client).await, 2);
    pass("tokio-postgres:temp-table");
    let mut client = client;
    {
        let tx = client.transaction().await.expect("begin");
        tx.execute("INSERT INTO t VALUES (3, 'three')", &[])
            .await
            .expect("insert in tx");
        tx.rollback().await.expect("rollback");
    }
    assert_eq!(count_t(&client).await, 2);
    pass("tokio-postgres:rollback");
    let sink = client.copy_in("COPY t FROM STDIN").await.expect("copy in");
    pin_mut!(sink);
    sink.send(Bytes::from_static(b"10\tten\n11\televen\n"))
        .await
        .expect("copy data");
    assert_eq!(sink.as_mut().finish().await.expect("copy done"), 2);
    let out: Vec<Bytes> = client
        .copy_out("COPY (SELECT id, name FROM t WHERE id >= 10 ORDER BY id) TO STDOUT")
        .await
        .expect("copy out")
        .try_collect()
        .await
        .expect("copy out data");
    assert_eq!(out.concat(), b"10\tten\n11\televen\n");
    pass("tokio-postgres:copy");
    let token = client.cancel_token();
    let canceller = async {
        backend_running(&fx, "pg_sleep(30)").await;
        token.cancel_query(NoTls).await
    };
    let query = tokio::time::timeout(
        Duration::from_secs(20),
        client.simple_query("SELECT pg_sleep(30)"),
    );
    let (ended, sent) = tokio::join!(query, canceller);
    let err = ended
        .expect("the cancelled query did not end")
        .expect_err("pg_sleep(30) was not cancelled");
    sent.expect("cancel request");
    assert_eq!(db_error(&err).code(), &SqlState::QUERY_CANCELED);
    pass("tokio-postgres:cancel");
    let err = client
        .query("SELECT * FROM no_such_table WHERE x = $1", &[&1])
        .await
        .expect_err("no error");
    assert_eq!(db_error(&err).code(), &SqlState::UNDEFINED_TABLE);
    assert_eq!(count_t(&client).await, 4);
    pass("tokio-postgres:error-sqlstate");
    let wrong = fx.porter.connstring(&fx.user, "wrong-password", &fx.db);
    let Err(err) = tokio_postgres::connect(&wrong, NoTls).await else {
        panic!("wrong password accepted");
    };
    assert_eq!(db_error(&err).code(), &SqlState::INVALID_PASSWORD);
    pass("tokio-postgres:wrong-password");
    tokio_postgres_tls().await;
    pass("tokio-postgres:tls");
}

/// sslmode=require against client_tls_sslmode=require, verifying pgporter's certificate,
/// with SCRAM-SHA-256-PLUS channel binding required; a plaintext login is refused.
async fn tokio_postgres_tls() {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let certs = crate::tls::Certs::new();
    let fx = Fixture::with_settings(2, &certs.client_tls("require")).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.pki.ca_file()).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let connstring = fx
        .porter
        .connstring(&fx.user, &fx.password, &fx.db)
        .replace("sslmode=disable", "sslmode=require channel_binding=require");
    let (client, conn) = tokio_postgres::connect(&connstring, tls)
        .await
        .expect("TLS login with channel binding");
    tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query over TLS")
        .get(0);
    assert_eq!(one, 1);
    let plain =
        tokio_postgres::connect(&fx.porter.connstring(&fx.user, &fx.password, &fx.db), NoTls).await;
    assert!(plain.is_err(), "a plaintext login was accepted");
}

async fn count_t(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0)
}

/// psql with the fixture's connection string, quiet, unaligned, tuples only, verbose errors.
fn psql(fx: &Fixture, password: &str) -> Command {
    let mut cmd = Command::new(fx.cluster.bin("psql"));
    cmd.arg(fx.porter.connstring(&fx.user, password, &fx.db))
        .args(["-X", "-q", "-A", "-t", "-v", "VERBOSITY=verbose"])
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_libpq() {
    let fx = Fixture::new(4).await;
    let script = fx.porter.dir().join("matrix.sql");
    std::fs::write(
        &script,
        "SELECT 1;\n\
         PREPARE twice(int) AS SELECT $1 * 2;\n\
         EXECUTE twice(21);\n\
         CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text);\n\
         INSERT INTO t VALUES (1, 'one'), (2, 'two');\n\
         SELECT count(*) FROM t;\n\
         BEGIN;\n\
         INSERT INTO t VALUES (3, 'three');\n\
         ROLLBACK;\n\
         SELECT count(*) FROM t;\n\
         \\copy t FROM stdin\n\
         10\tten\n\
         11\televen\n\
         \\.\n\
         \\copy (SELECT id, name FROM t WHERE id >= 10 ORDER BY id) TO stdout\n\
         SELECT * FROM no_such_table;\n\
         SELECT count(*) FROM t;\n",
    )
    .expect("write script");
    let mut cmd = psql(&fx, &fx.password);
    cmd.arg("-f").arg(&script);
    let out = run(cmd, Duration::from_secs(60)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = writeln!(
        std::io::stderr(),
        "----- psql -f matrix.sql -----\n{stdout}{stderr}"
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["1", "42", "2", "2", "10\tten", "11\televen", "4"],
        "{stderr}"
    );
    pass("psql:connect");
    pass("psql:simple-query");
    pass("psql:params-prepared");
    pass("psql:temp-table");
    pass("psql:rollback");
    pass("psql:copy");
    assert!(
        stderr.contains("ERROR:  42P01:"),
        "no SQLSTATE in: {stderr}"
    );
    pass("psql:error-sqlstate");

    // Ctrl-C: psql sends a CancelRequest to pgporter with the key pgporter gave it.
    let mut cmd = psql(&fx, &fx.password);
    cmd.args(["-c", "SELECT pg_sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn psql");
    let pid = child.id().to_string();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    backend_running(&fx, "pg_sleep(30)").await;
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let out = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("psql did not end after Ctrl-C")
        .expect("task")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("57014"), "cancel: {stderr}");
    pass("psql:cancel");

    let mut cmd = psql(&fx, "wrong-password");
    cmd.args(["-c", "SELECT 1"]);
    let out = run(cmd, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    pass("psql:wrong-password");
    // psql over TLS (require, verify-full, channel_binding, client certificates): tests/it/tls.rs.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_libpq_protocols() {
    let fx = Fixture::new(4).await;
    let pgbench = |args: &[&str]| {
        let mut cmd = Command::new(fx.cluster.bin("pgbench"));
        cmd.args(args)
            .args(["-h", "127.0.0.1", "-p", &fx.porter.port().to_string()])
            .args(["-U", &fx.user])
            .arg(&fx.db)
            .env("PGPASSWORD", &fx.password)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    };
    // Initialisation through pgporter: DDL, then COPY FROM STDIN of 100,000 rows.
    let out = success(
        &run(pgbench(&["-i", "-s", "1", "-q"]), Duration::from_secs(180)).await,
        "pgbench -i through pgporter",
    );
    let _ = writeln!(std::io::stderr(), "{out}");
    pass("pgbench:copy");
    for mode in ["simple", "extended", "prepared"] {
        let what = format!("pgbench -M {mode}");
        let out = success(
            &run(
                pgbench(&["-M", mode, "-S", "-t", "50", "-c", "2", "-j", "1"]),
                Duration::from_secs(120),
            )
            .await,
            &what,
        );
        assert!(
            out.contains("number of transactions actually processed: 100/100"),
            "{what}:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0 "),
            "{what}:\n{out}"
        );
        pass(&format!("pgbench:{mode}"));
    }
    skip("pgbench:cancel", "pgbench never sends a CancelRequest");
    // libpq over TLS is covered by psql in tests/it/tls.rs.
}

//! Login outcomes a client sees: PgBouncer's SQLSTATEs and messages.

use std::process::Command;

use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::fixture::userlist;
use crate::support::pg::{ident, literal, quote};
use crate::support::psql::psql_ok;
use crate::support::raw::RawClient;
use crate::support::{cmd, connect, db_error, simple_value, Fixture, Spec, HANG};

/// Connect and expect the server to refuse with an ErrorResponse.
async fn refused(connstring: &str) -> tokio_postgres::Error {
    match tokio::time::timeout(HANG, tokio_postgres::connect(connstring, NoTls))
        .await
        .expect("login hung")
    {
        Ok(_) => panic!("login unexpectedly succeeded: {connstring}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_password_logs_in_with_scram() {
    let fx = Fixture::new(2).await;
    let client = fx.connect().await;
    let row = client
        .query_one("select current_user::text, current_database()::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), fx.user);
    assert_eq!(row.get::<_, String>(1), fx.db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_28p01() {
    let fx = Fixture::new(2).await;
    let err = refused(&fx.porter.connstring(&fx.user, "not-the-password", &fx.db)).await;
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{err:?}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{}\"", fx.user)
    );
    // The right password still works afterwards.
    fx.connect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_looks_like_wrong_password() {
    let fx = Fixture::new(2).await;
    let stranger = fx.cluster.unique_name("nobody");
    let err = refused(&fx.porter.connstring(&stranger, "whatever", &fx.db)).await;
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{err:?}");
    assert_eq!(
        db.message(),
        format!("password authentication failed for user \"{stranger}\"")
    );
}

/// A client that never authenticates leaves no pool behind: no SHOW POOLS row, no metrics
/// labels, and (with min_pool_size) no server logins as whatever user it made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_log_in_make_no_pools() {
    let fx = Fixture::with_settings(2, "min_pool_size = 1\nidentity_tagging = 0").await;
    for i in 0..20 {
        let mut c = crate::support::raw::RawClient::connect(fx.porter.addr()).await;
        let mut out = bytes::BytesMut::new();
        let user = format!("ghost{i}");
        postgres_protocol::message::frontend::startup_message(
            [("user", user.as_str()), ("database", fx.db.as_str())],
            &mut out,
        )
        .expect("startup");
        c.send(&out).await;
        assert_eq!(c.read_msg().await.expect("auth request").tag, b'R');
    }
    let err = refused(&fx.porter.connstring("ghost-pw", "whatever", &fx.db)).await;
    assert_eq!(db_error(&err).code(), &SqlState::INVALID_PASSWORD);
    fx.connect().await;
    let pools: Vec<String> = fx
        .porter
        .pool_counts()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(pools, [format!("{}@{}", fx.user, fx.db)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_3d000() {
    let fx = Fixture::new(2).await;
    let err = refused(
        &fx.porter
            .connstring(&fx.user, &fx.password, "no_such_database"),
    )
    .await;
    assert_eq!(
        db_error(&err).code(),
        &SqlState::INVALID_CATALOG_NAME,
        "{err:?}"
    );
}

/// The salt length and iteration count a server-first-message (`r=..,s=..,i=..`) announces.
fn salt_and_iterations(server_first: &str) -> (usize, u32) {
    let attr = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {server_first}"))
    };
    let salt = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, attr("s="))
        .expect("salt is base64");
    (salt.len(), attr("i=").parse().expect("iterations"))
}

/// What pgporter announces to a SCRAM login as `user` on the fixture's database.
async fn announced(fx: &Fixture, user: &str) -> (usize, u32) {
    salt_and_iterations(&RawClient::scram_server_first(fx.porter.addr(), user, &fx.db).await)
}

/// tokio-postgres and psql (libpq) log in through pgporter as the fixture's user.
async fn both_clients_log_in(fx: &Fixture, password: &str) {
    let connstring = fx.porter.connstring(&fx.user, password, &fx.db);
    let client = connect(&connstring).await;
    assert_eq!(
        simple_value(&client, "select 1").await.as_deref(),
        Some("1")
    );
    assert_eq!(psql_ok(&connstring, "select current_user").await, fx.user);
}

/// scram_iterations (PgBouncer 1.22+): the verifier pgporter builds from a plaintext userlist
/// entry has that many PBKDF2 iterations, announced in server-first-message and run by real
/// clients (tokio-postgres, psql); an unknown user's mock exchange announces the same count;
/// RELOAD and admin SET with a new count build the verifier again; a count of 0 is refused;
/// SHOW CONFIG shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_iterations_of_plaintext_userlist_entries() {
    let fx = Fixture::custom(|n| {
        Spec::new(format!("scram_iterations = 1000\nadmin_users = {}", n.user))
    })
    .await;
    assert_eq!(announced(&fx, &fx.user).await, (16, 1000));
    both_clients_log_in(&fx, &fx.password).await;
    let stranger = fx.cluster.unique_name("nobody");
    assert_eq!(announced(&fx, &stranger).await, (16, 1000));

    fx.porter
        .reload_edited(|ini| ini.replace("scram_iterations = 1000", "scram_iterations = 2000"))
        .await;
    assert_eq!(announced(&fx, &fx.user).await, (16, 2000));
    both_clients_log_in(&fx, &fx.password).await;

    let admin = connect(&fx.porter.connstring(&fx.user, &fx.password, "pgbouncer")).await;
    admin
        .simple_query("SET scram_iterations = 3000")
        .await
        .expect("SET scram_iterations");
    assert_eq!(announced(&fx, &fx.user).await, (16, 3000));
    assert_eq!(announced(&fx, &stranger).await, (16, 3000));
    both_clients_log_in(&fx, &fx.password).await;
    let err = admin
        .simple_query("SET scram_iterations = 0")
        .await
        .expect_err("0 iterations");
    assert_eq!(db_error(&err).code().code(), "22023", "{err:?}");
    assert!(
        db_error(&err).message().contains("scram_iterations"),
        "{err:?}"
    );
    assert_eq!(announced(&fx, &fx.user).await, (16, 3000));

    let config = admin
        .simple_query("SHOW CONFIG")
        .await
        .expect("SHOW CONFIG");
    let row = config
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.get("key") == Some("scram_iterations") => Some(r),
            _ => None,
        })
        .expect("a scram_iterations row");
    let shown = ["value", "default", "changeable"].map(|c| row.get(c));
    assert_eq!(shown, [Some("3000"), Some("4096"), Some("yes")]);
}

/// SASLprep as PostgreSQL: a userlist password with a no-break space (U+00A0) gets the
/// verifier of its prepared form (a plain space), so a client typing either logs in through
/// pgporter, as it does straight to PostgreSQL (to which pgporter logs in with the userlist's
/// password as written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_verifiers_saslprep_the_password() {
    const PASSWORD: &str = "pen\u{a0}cil";
    let fx = Fixture::custom(|n| Spec {
        userlist: Some(userlist(&[(&n.user, PASSWORD)])),
        ..Spec::new("")
    })
    .await;
    fx.superuser()
        .await
        .batch_execute(&format!(
            "ALTER ROLE {} PASSWORD {}",
            ident(&fx.user),
            literal(PASSWORD)
        ))
        .await
        .expect("ALTER ROLE");
    for password in [PASSWORD, "pen cil"] {
        let direct = format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
            fx.cluster.port(),
            quote(&fx.user),
            quote(password),
            quote(&fx.db)
        );
        connect(&direct).await;
        both_clients_log_in(&fx, password).await;
    }
    let err = refused(&fx.porter.connstring(&fx.user, "pencil", &fx.db)).await;
    assert_eq!(
        db_error(&err).code(),
        &SqlState::INVALID_PASSWORD,
        "{err:?}"
    );
}

/// A scram_iterations that is no iteration count refuses the configuration, naming the file,
/// line and key (the real binary's `--check`, exit 64 as for any bad configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_iterations_that_is_no_count_refuses_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("userlist.txt"), "\"u\" \"pw\"\n").expect("userlist");
    for (value, message) in [
        (
            "0",
            "scram_iterations: \"0\" is out of range: an iteration count is 1 to 2147483647",
        ),
        ("many", "scram_iterations: \"many\" is not an integer"),
    ] {
        let ini = dir.path().join("p.ini");
        std::fs::write(
            &ini,
            format!("[pgbouncer]\nauth_file = userlist.txt\nscram_iterations = {value}\n"),
        )
        .expect("ini");
        let mut check = Command::new(env!("CARGO_BIN_EXE_pgporter"));
        check.arg("--check").arg(&ini);
        let out = cmd::run(check, HANG).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{value}: {stderr}");
        let expected = format!("pgporter: {}:3: {message}", ini.display());
        assert!(stderr.contains(&expected), "{value}: {stderr}");
    }
}

//! The edges of login: the admin console under the client caps (max_client_conn,
//! max_db_client_connections, max_user_client_connections), startup packets whose values are
//! not UTF-8, and application_names longer than PostgreSQL keeps.

use crate::admin::{find, rows, Ops, ADMIN_PW};
use crate::support::clients::connect_err;
use crate::support::raw::{startup_packet, RawClient};
use crate::support::{connect, db_error};

/// As PgBouncer (1.18, checked live): a console login is never refused by max_client_conn,
/// but it is counted, so consoles can fill the cap for everyone else (FATAL 53300; PgBouncer
/// 1.18 says 08P01). Both the admin and the stats user get in over the cap, and SHOW POOLS
/// counts them all in the console's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_get_in_over_max_client_conn_and_count_against_it() {
    let ops = Ops::new("max_client_conn = 2").await;
    let admin = ops.admin().await;
    let _stats = ops.stats_user().await;
    // Both slots are taken by consoles: an application client is refused ...
    let app = ops.porter.connstring(&ops.user, "pw", &ops.db);
    let e = connect_err(&app).await;
    let db = db_error(&e);
    assert_eq!(
        (db.code().code(), db.message()),
        ("53300", "no more connections allowed (max_client_conn)")
    );
    // ... a third and a fourth console are not.
    let stats = ops.stats_user().await;
    let again = ops.admin().await;
    let pools = rows(&stats, "SHOW POOLS").await;
    assert_eq!(
        find(&pools, "database", "pgbouncer").get("cl_active"),
        Some("4")
    );
    drop((admin, again, stats));
    // Once the consoles are gone the application gets in again.
    crate::limits::eventually("a console slot freed", || async {
        tokio_postgres::connect(&app, tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
}

/// A connection over max_client_conn that sends nothing is refused within 2 s (53300), not
/// held for client_login_timeout: only a console may log in over the cap, and it must say so
/// at once. The refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_over_max_client_conn_is_refused_at_once() {
    let ops =
        Ops::new("max_client_conn = 1\nclient_login_timeout = 60\naudit_log = {dir}/audit.log")
            .await;
    let _app = ops.client().await;
    let started = tokio::time::Instant::now();
    let mut silent = RawClient::connect(ops.porter.addr()).await;
    let m = silent
        .read_msg()
        .await
        .expect("an error, not a silent close");
    assert_eq!(m.sqlstate().as_deref(), Some("53300"));
    // Against client_login_timeout = 60: 10 s is room enough on a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(silent.read_msg().await.is_none(), "closed after the error");
    // Audited as any refusal over the cap.
    let log = ops.porter.dir().join("audit.log");
    crate::limits::eventually("the audit log's limit_rejection", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            event["event"] == "limit_rejection" && event["reason"] == "max_client_conn"
        })
    })
    .await;
}

/// The same 2 s bound holds for a connection from a trusted proxy address
/// (proxy_protocol_trusted), whose PROXY header is read first: sending nothing, or half a
/// header, it was held until client_login_timeout. (PgBouncer 1.18 has no PROXY protocol;
/// over max_client_conn it stops accepting, so such a connection waits in the backlog.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_proxy_over_max_client_conn_is_refused_at_once() {
    let ops = Ops::new(
        "max_client_conn = 1\nclient_login_timeout = 60\nproxy_protocol_trusted = 127.0.0.0/8",
    )
    .await;
    let _app = ops.client().await;
    for sent in [&b""[..], b"PROXY TCP4 192.0.2.7 "] {
        let started = tokio::time::Instant::now();
        let mut silent = RawClient::connect(ops.porter.addr()).await;
        silent.send(sent).await;
        let m = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read_msg())
            .await
            .expect("held past 20 s")
            .expect("an error, not a silent close");
        assert_eq!(m.sqlstate().as_deref(), Some("53300"), "after {sent:?}");
        // 2 s, with room for a loaded machine; client_login_timeout (the bug) is 60 s.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(silent.read_msg().await.is_none(), "closed after the error");
    }
}

/// As PgBouncer 1.24+ (where these caps come from; 1.18 has neither and refuses to start with
/// them): a console client counts as a client of the `pgbouncer` database (capped by the
/// [pgbouncer] max_db_client_connections) and of its user (max_user_client_connections). A
/// user of admin_users is counted but never refused; a stats user over a cap is refused with
/// 53300 naming it. SHOW DATABASES and SHOW USERS show the caps and the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_clients_count_against_the_client_caps() {
    let ops = Ops::new("max_db_client_connections = 2").await;
    let first = ops.admin().await;
    let second = ops.admin().await;
    let third = ops.admin().await;
    let stats = ops.porter.connstring(&ops.stats, ADMIN_PW, "pgbouncer");
    let e = connect_err(&stats).await;
    let db = db_error(&e);
    assert_eq!(
        (db.code().code(), db.message()),
        (
            "53300",
            "client connections exceeded (max_db_client_connections)"
        )
    );
    let dbs = rows(&first, "SHOW DATABASES").await;
    let console = find(&dbs, "name", "pgbouncer");
    assert_eq!(console.get("max_client_connections"), Some("2"));
    assert_eq!(console.get("current_client_connections"), Some("3"));
    // Application databases keep their own count.
    let app = ops.client().await;
    app.simple_query("select 1").await.expect("app served");
    drop((second, third));
    crate::limits::eventually("a console slot freed", || async {
        tokio_postgres::connect(&stats, tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;

    // max_user_client_connections: per [users] entry, for the admin and the stats user.
    let (adm, st) = (ops.admin.clone(), ops.stats.clone());
    ops.porter
        .reload_edited(|ini| {
            let ini = ini.replace("max_db_client_connections = 2", "");
            format!(
                "{ini}\n[users]\n{adm} = max_user_client_connections=1\n\
                 {st} = max_user_client_connections=1\n"
            )
        })
        .await;
    let _st = connect(&stats).await;
    let e = connect_err(&stats).await;
    assert_eq!(
        db_error(&e).message(),
        "client connections exceeded (max_user_client_connections)"
    );
    let _again = ops.admin().await;
    let users = rows(&first, "SHOW USERS").await;
    let admin_row = find(&users, "name", &ops.admin);
    assert_eq!(admin_row.get("max_user_client_connections"), Some("1"));
    assert_eq!(admin_row.get("current_client_connections"), Some("2"));
    let rejections = &ops.porter.shared().pools.limits().rejections;
    assert_eq!(rejections.get(&ops.stats, "max_user_client_connections"), 1);
}

/// PostgreSQL takes any bytes in a startup packet. An application_name in Latin-1 is taken and
/// cleaned as PostgreSQL 15 cleans it (`caf\xe9` becomes `caf?`, checked live): the welcome,
/// the server, SHOW CLIENTS and the audit log say `caf?`. Bytes pgporter cannot pass on are refused with
/// PostgreSQL's SQLSTATE: a user (28000), a database (3D000), a TimeZone (22023), a parameter
/// pgporter would SET on the server (22021, what the server says to those bytes in SQL); an
/// ignored parameter
/// passes whatever its bytes. (PgBouncer 1.18 logs a Latin-1 application_name in and ends
/// the session at its first query: FATAL 08P01 "invalid server parameter".) All were refused
/// with 08P01 "parameter is not UTF-8".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_values_that_are_not_utf8() {
    let ops =
        Ops::new("ignore_startup_parameters = extra_float_digits\naudit_log = {dir}/audit.log")
            .await;
    let (user, db) = (ops.user.as_bytes(), ops.db.as_bytes());
    let login: [(&[u8], &[u8]); 4] = [
        (b"user", user),
        (b"database", db),
        (b"application_name", b"caf\xe9"),
        (b"extra_float_digits", b"\xe9"),
    ];
    let (mut c, welcome) = RawClient::login_bytes(ops.porter.addr(), &login, "pw").await;
    assert!(
        welcome.contains(&("application_name".into(), "caf?".into())),
        "{welcome:?}"
    );
    let (values, _, error) = c.rows("select current_setting('application_name')").await;
    assert_eq!((values, error), (vec!["caf?".to_string()], None));
    let admin = ops.admin().await;
    let clients = rows(&admin, "SHOW CLIENTS").await;
    let port = c.sock.local_addr().expect("addr").port().to_string();
    assert_eq!(
        find(&clients, "port", &port).get("application_name"),
        Some("caf?")
    );

    // The audit log's session_start (written at the first server connection) names it too.
    let log = ops.porter.dir().join("audit.log");
    crate::limits::eventually("the audit log's session_start", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            event["event"] == "session_start" && event["application_name"] == "caf?"
        })
    })
    .await;

    let answer = |code: &str, message: &str| (Some(code.to_string()), Some(message.to_string()));
    assert_eq!(
        refused(
            ops.porter.addr(),
            &[(b"user", b"caf\xe9"), (b"database", db)]
        )
        .await,
        answer("28000", "role \"caf\\xe9\" does not exist")
    );
    assert_eq!(
        refused(
            ops.porter.addr(),
            &[(b"user", user), (b"database", b"caf\xe9")]
        )
        .await,
        answer("3D000", "no such database: caf\\xe9")
    );
    assert_eq!(
        refused(
            ops.porter.addr(),
            &[
                (b"user", user),
                (b"database", db),
                (b"search_path", b"caf\xe9")
            ]
        )
        .await,
        answer(
            "22021",
            "invalid byte sequence for encoding \"UTF8\": 0xe9 (startup parameter \"search_path\")"
        )
    );
    assert_eq!(
        refused(
            ops.porter.addr(),
            &[
                (b"user", user),
                (b"database", db),
                (b"TimeZone", b"caf\xe9")
            ]
        )
        .await,
        answer(
            "22023",
            "invalid value for parameter \"TimeZone\": \"caf\\xe9\""
        )
    );
    // The first client was served throughout, and pgporter still is.
    let (values, _, error) = c.rows("select 1").await;
    assert_eq!((values, error), (vec!["1".to_string()], None));
    ops.client()
        .await
        .simple_query("select 1")
        .await
        .expect("served");
}

/// PostgreSQL keeps 63 bytes of an application_name (NAMEDATALEN - 1; it says so in a NOTICE
/// and reports the cut value): checked live, PostgreSQL 15 welcomes an 80-byte name with its
/// first 63 bytes, and PgBouncer 1.18 shows those 63 in SHOW CLIENTS (once the client had a
/// server connection) and SHOW SERVERS. pgporter welcomes and lists what the server holds;
/// it showed all 80 bytes everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_application_name_is_cut_as_postgresql_cuts_it() {
    let ops = Ops::new("").await;
    let long = format!("{}{}{}", "a".repeat(30), "b".repeat(30), "c".repeat(20));
    let kept = &long[..63];
    let (mut c, welcome) = RawClient::login_with(
        ops.porter.addr(),
        &ops.user,
        "pw",
        &ops.db,
        &[("application_name", &long)],
    )
    .await;
    assert!(
        welcome.contains(&("application_name".into(), kept.into())),
        "{welcome:?}"
    );
    let (values, _, error) = c.rows("select current_setting('application_name')").await;
    assert_eq!((values, error), (vec![kept.to_string()], None));
    let admin = ops.admin().await;
    let port = c.sock.local_addr().expect("addr").port().to_string();
    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(
        find(&clients, "port", &port).get("application_name"),
        Some(kept)
    );
    // Session mode: the client holds its server connection.
    let servers = rows(&admin, "SHOW SERVERS").await;
    let server = find(&servers, "database", &ops.db);
    assert_eq!(server.get("application_name"), Some(kept));
}

/// A startup packet that names a parameter twice logs in with the last value, as PostgreSQL
/// and PgBouncer take it (pgporter refused it: 08P01 duplicate parameter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_startup_parameter_takes_its_last_value() {
    let ops = Ops::new("").await;
    let (user, db) = (ops.user.as_bytes(), ops.db.as_bytes());
    let login: [(&[u8], &[u8]); 5] = [
        (b"user", b"nobody"),
        (b"application_name", b"first"),
        (b"database", db),
        (b"user", user),
        (b"application_name", b"second"),
    ];
    let (mut c, welcome) = RawClient::login_bytes(ops.porter.addr(), &login, "pw").await;
    assert!(
        welcome.contains(&("application_name".into(), "second".into())),
        "{welcome:?}"
    );
    let (values, _, error) = c
        .rows("select current_user || ' ' || current_setting('application_name')")
        .await;
    assert_eq!(
        (values, error),
        (vec![format!("{} second", ops.user)], None)
    );
}

/// The answer to a startup packet of `params`: the ErrorResponse's SQLSTATE and message,
/// after which the connection must be closed.
async fn refused(
    addr: std::net::SocketAddr,
    params: &[(&[u8], &[u8])],
) -> (Option<String>, Option<String>) {
    let mut c = RawClient::connect(addr).await;
    c.send(&startup_packet(params)).await;
    let m = c.read_msg().await.expect("an answer");
    assert!(c.read_msg().await.is_none(), "closed after the error");
    (m.sqlstate(), m.error_field(b'M'))
}

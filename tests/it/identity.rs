//! Per-user identity on a shared backend account: session tags seen by a trigger, tags that
//! survive the client's own resets, spoof attempts refused, PROXY protocol.

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::raw::RawClient;
use crate::support::{db_error, Fixture, SharedAccount, HANG};

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
        _ => None,
    })?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_records_each_person_through_the_shared_account() {
    let sa = SharedAccount::new(2, "").await;
    let alice = sa.connect(&sa.alice).await;
    let bob = sa.connect(&sa.bob).await;
    let who = alice.query_one("select current_user", &[]).await.unwrap();
    assert_eq!(
        who.get::<_, String>(0),
        sa.rubin,
        "alice runs as the shared account"
    );
    alice
        .execute("insert into datasets(name) values ($1)", &[&"a1"])
        .await
        .unwrap();
    bob.batch_execute("insert into datasets(name) values ('b1')")
        .await
        .unwrap();
    alice
        .batch_execute("update datasets set name = 'a1x' where name = 'a1'")
        .await
        .unwrap();
    bob.execute("delete from datasets where name = $1", &[&"b1"])
        .await
        .unwrap();
    let log = sa.change_log().await;
    let a = Some(sa.alice.clone());
    let b = Some(sa.bob.clone());
    assert_eq!(
        log,
        vec![
            (a.clone(), "INSERT".into(), "a1".into()),
            (b.clone(), "INSERT".into(), "b1".into()),
            (a, "UPDATE".into(), "a1x".into()),
            (b, "DELETE".into(), "b1".into()),
        ]
    );
    let addrs = sa
        .direct()
        .await
        .query("select distinct client_addr from change_log", &[])
        .await
        .unwrap();
    assert_eq!(addrs.len(), 1);
    assert_eq!(
        addrs[0].get::<_, Option<String>>(0).as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_survives_the_clients_own_resets_and_role_changes() {
    let sa = SharedAccount::new(1, "").await;
    let alice = sa.connect(&sa.alice).await;
    let steps = [
        "RESET ALL",
        "DISCARD ALL",
        &format!("SET ROLE \"{}\"", sa.rubin),
        "RESET ROLE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "RESET SESSION AUTHORIZATION",
    ];
    for (i, step) in steps.iter().enumerate() {
        alice
            .batch_execute(step)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        alice
            .execute(
                "insert into datasets(name) values ($1)",
                &[&format!("s{i}")],
            )
            .await
            .unwrap();
    }
    let log = sa.change_log().await;
    assert_eq!(log.len(), steps.len());
    assert!(
        log.iter()
            .all(|(who, _, _)| who.as_deref() == Some(sa.alice.as_str())),
        "{log:?}"
    );
    let alice_pid: i32 = alice
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(alice);

    // Pool of one: bob must not inherit alice's tagged connection.
    let bob = sa.connect(&sa.bob).await;
    bob.batch_execute("insert into datasets(name) values ('bob')")
        .await
        .unwrap();
    let bob_pid: i32 = bob
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(alice_pid, bob_pid);
    drop(bob);
    // ... but bob's next session reuses bob's.
    let bob = sa.connect(&sa.bob).await;
    let again: i32 = bob
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, bob_pid);
    bob.batch_execute("insert into datasets(name) values ('bob2')")
        .await
        .unwrap();
    let log = sa.change_log().await;
    assert_eq!(log[steps.len()].0.as_deref(), Some(sa.bob.as_str()));
    assert_eq!(log[steps.len() + 1].0.as_deref(), Some(sa.bob.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofing_the_tag_is_refused_in_simple_and_extended_protocol() {
    let sa = SharedAccount::new(2, "").await;
    let alice = sa.connect(&sa.alice).await;
    for sql in [
        "SET pgporter.client_user = 'bob'",
        "reset PGPORTER.CLIENT_USER",
        "select 1; set \"pgporter\".\"client_addr\" = '6.6.6.6'",
        "SHOW pgporter.client_user",
    ] {
        let e = alice.simple_query(sql).await.expect_err(sql);
        assert_eq!(
            db_error(&e).code(),
            &SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
        assert!(db_error(&e).message().contains("identity"), "{sql}");
    }
    let e = alice
        .query(
            "select set_config('pgporter.client_user', $1, false)",
            &[&"bob"],
        )
        .await
        .expect_err("extended spoof");
    assert_eq!(db_error(&e).code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    // The session goes on, in both protocols. Inside a transaction block the refusal aborts
    // the transaction, as PostgreSQL's own error would.
    alice.batch_execute("begin").await.unwrap();
    alice
        .execute("insert into datasets(name) values ($1)", &[&"rolled back"])
        .await
        .unwrap();
    let e = alice
        .simple_query("set local pgporter.client_user = 'bob'")
        .await
        .expect_err("spoof in a transaction");
    assert_eq!(db_error(&e).code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    let e = alice
        .execute("insert into datasets(name) values ($1)", &[&"ignored"])
        .await
        .expect_err("the transaction is aborted");
    assert_eq!(db_error(&e).code(), &SqlState::IN_FAILED_SQL_TRANSACTION);
    alice.batch_execute("commit").await.unwrap();
    alice
        .execute("insert into datasets(name) values ($1)", &[&"after"])
        .await
        .unwrap();
    let v = first_value(&alice.simple_query("select 41 + 1").await.unwrap());
    assert_eq!(v.as_deref(), Some("42"));
    // A value is data: prose naming both parts is stored (it ended psycopg 3's session).
    let prose = "note: client_addr is recorded by PgPorter";
    alice
        .execute("insert into datasets(name) values ($1)", &[&prose])
        .await
        .expect("a value mentioning the names in prose");
    // The name as a bind parameter value, or Unicode-escaped in the text: refused too (a bind
    // value inside a batch cannot be held back: the session ends, FATAL 42501).
    let e = alice
        .simple_query(r#"SET U&"pgp\006Frter".client_user = 'bob'"#)
        .await
        .expect_err("escaped spoof");
    assert_eq!(db_error(&e).code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    let spoofer = sa.connect(&sa.alice).await;
    let e = spoofer
        .query(
            "select set_config($1, $2, false)",
            &[&"pgporter.client_user", &"bob"],
        )
        .await
        .expect_err("bind-parameter spoof");
    assert_eq!(db_error(&e).code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    // The name inside a larger value (an array, JSON, padding) counts too.
    let e = spoofer
        .query(
            "select set_config(($1::text[])[1], $2, false)",
            &[&vec!["pgporter.client_user"], &"bob"],
        )
        .await
        .expect_err("the name inside an array value");
    assert_eq!(db_error(&e).code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    let log = sa.change_log().await;
    assert_eq!(
        log,
        vec![
            (Some(sa.alice.clone()), "INSERT".into(), "after".into()),
            (Some(sa.alice.clone()), "INSERT".into(), prose.into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_users_may_read_the_tag_others_may_not() {
    let sa = SharedAccount::new(2, "admin_users = {alice}").await;
    let alice = sa.connect(&sa.alice).await;
    let tag = alice
        .simple_query("SHOW pgporter.client_user")
        .await
        .unwrap();
    assert_eq!(first_value(&tag).as_deref(), Some(sa.alice.as_str()));
    for step in ["RESET ALL", "DISCARD ALL", "RESET pgporter.client_user"] {
        alice.batch_execute(step).await.unwrap();
    }
    let tag = alice
        .simple_query("SHOW pgporter.client_user")
        .await
        .unwrap();
    assert_eq!(first_value(&tag).as_deref(), Some(sa.alice.as_str()));
    let addr = alice
        .simple_query("SHOW pgporter.client_addr")
        .await
        .unwrap();
    assert_eq!(first_value(&addr).as_deref(), Some("127.0.0.1"));
    let bob = sa.connect(&sa.bob).await;
    let e = bob
        .simple_query("SHOW pgporter.client_user")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).code(), &SqlState::INSUFFICIENT_PRIVILEGE);
}

/// Connect through a raw socket that first sends `header`.
async fn connect_with_header(
    sa: &SharedAccount,
    user: &str,
    header: &[u8],
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut tcp = TcpStream::connect(sa.porter.addr())
        .await
        .expect("connecting to pgporter");
    tcp.write_all(header).await.expect("sending the header");
    let config: tokio_postgres::Config = sa.connstring(user).parse().expect("connstring");
    let (client, conn) = tokio::time::timeout(HANG, config.connect_raw(tcp, NoTls))
        .await
        .expect("connect hung")?;
    tokio::spawn(conn);
    Ok(client)
}

fn v2_header(src: std::net::SocketAddrV4) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.extend_from_slice(&[0x21, 0x11, 0, 12]);
    v.extend_from_slice(&src.ip().octets());
    v.extend_from_slice(&[127, 0, 0, 1]);
    v.extend_from_slice(&src.port().to_be_bytes());
    v.extend_from_slice(&6432u16.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_trusted_addresses_sets_the_client_address() {
    let sa = SharedAccount::new(3, "proxy_protocol_trusted = 127.0.0.0/8, ::1").await;
    let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 6432\r\n";
    let alice = connect_with_header(&sa, &sa.alice, v1).await.expect("v1");
    alice
        .batch_execute("insert into datasets(name) values ('v1')")
        .await
        .unwrap();
    let bob = connect_with_header(
        &sa,
        &sa.bob,
        &v2_header("198.51.100.9:40000".parse().unwrap()),
    )
    .await
    .expect("v2");
    bob.batch_execute("insert into datasets(name) values ('v2')")
        .await
        .unwrap();
    // Without a header, a trusted address is itself.
    let plain = sa.connect(&sa.alice).await;
    plain
        .batch_execute("insert into datasets(name) values ('plain')")
        .await
        .unwrap();
    let rows = sa
        .direct()
        .await
        .query(
            "select client_user, client_addr from change_log order by id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (sa.alice.clone(), "192.0.2.7".into()),
            (sa.bob.clone(), "198.51.100.9".into()),
            (sa.alice.clone(), "127.0.0.1".into()),
        ]
    );
    // Malformed from a trusted address: closed.
    let bad = connect_with_header(&sa, &sa.alice, b"PROXY TCP4 nonsense\r\n").await;
    assert!(bad.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_untrusted_addresses_close_the_connection() {
    for extra in ["", "proxy_protocol_trusted = 10.0.0.0/8"] {
        let sa = SharedAccount::new(2, extra).await;
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 6432\r\n";
        let v2 = v2_header("198.51.100.9:40000".parse().unwrap());
        for (name, header) in [("v1", &v1[..]), ("v2", &v2[..])] {
            let Err(e) = connect_with_header(&sa, &sa.alice, header).await else {
                panic!("{name} header accepted with '{extra}'");
            };
            if extra.is_empty() {
                // Off: the header is an invalid startup packet, answered as PostgreSQL would.
                assert_eq!(db_error(&e).code(), &SqlState::PROTOCOL_VIOLATION, "{name}");
            }
        }
        // Ordinary clients still get in.
        let ok = sa.connect(&sa.alice).await;
        ok.batch_execute("select 1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoof_inside_a_large_streamed_query_ends_the_session_unexecuted() {
    let sa = SharedAccount::new(2, "").await;
    let alice = sa.connect(&sa.alice).await;
    let filler = "x".repeat(100_000);
    let sql =
        format!("insert into datasets(name) values ('{filler}'); set pgporter.client_user = 'bob'");
    let e = alice.simple_query(&sql).await.expect_err("large spoof");
    let db = db_error(&e);
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(db.severity(), "FATAL");
    assert!(
        alice.simple_query("select 1").await.is_err(),
        "session must be over"
    );
    assert!(sa.change_log().await.is_empty(), "nothing of it ran");
    // A large statement that does not name the GUC streams through as usual.
    let alice = sa.connect(&sa.alice).await;
    alice
        .batch_execute(&format!("insert into datasets(name) values ('{filler}')"))
        .await
        .unwrap();
    assert_eq!(sa.change_log().await.len(), 1);
}

/// identity_guc changed while running (admin SET, or a reload): server connections tagged
/// under the old name are not handed out again; new sessions carry the new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_identity_guc_is_on_every_new_session() {
    let sa = SharedAccount::new(1, "admin_users = {alice}").await;
    let alice = sa.connect(&sa.alice).await;
    let tag = alice
        .simple_query("SHOW pgporter.client_user")
        .await
        .unwrap();
    assert_eq!(first_value(&tag).as_deref(), Some(sa.alice.as_str()));
    drop(alice);
    // Back in the pool, tagged under the old name, before the change.
    sa.porter.until_idle(1).await;
    let admin = crate::support::connect(&sa.porter.connstring(
        &sa.alice,
        sa.password(&sa.alice),
        "pgbouncer",
    ))
    .await;
    admin
        .simple_query("SET identity_guc = 'myorg.person'")
        .await
        .expect("set identity_guc");
    let alice = sa.connect(&sa.alice).await;
    let tag = alice
        .simple_query("SELECT current_setting('myorg.person', true)")
        .await
        .unwrap();
    assert_eq!(first_value(&tag).as_deref(), Some(sa.alice.as_str()));
}

/// A Parse refused for naming an identity setting: the messages after it are skipped up to
/// the client's Sync, the server connection held meanwhile, so the session's limits run as
/// for any batch not yet synced. A client that never sends the Sync is ended by
/// query_timeout and its connection freed for the next client (only a kill reached it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_parse_never_synced_ends_at_query_timeout() {
    let f = Fixture::with_settings(1, "query_timeout = 1").await;
    let addr = f.porter.addr();
    let mut c = RawClient::login(addr, &f.user, &f.password, &f.db).await;
    assert_eq!(c.rows("SELECT 1").await.0, ["1"]);
    c.send_all(&[
        (b'P', b"\0SHOW pgporter.client_user\0\0\0"),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        (b'E', b"\0\0\0\0\0"),
        (b'H', b""),
    ])
    .await;
    let refused = c.read_msg().await.expect("the refusal");
    assert_eq!(refused.sqlstate().as_deref(), Some("42501"), "{refused:?}");
    let started = Instant::now();
    let ended = tokio::time::timeout(HANG, c.read_msg())
        .await
        .expect("the session held its server connection past query_timeout")
        .expect("a FATAL before the close");
    assert_eq!(ended.error_field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(ended.sqlstate().as_deref(), Some("08P01"));
    assert_eq!(ended.error_field(b'M').as_deref(), Some("query timeout"));
    assert!(started.elapsed() < Duration::from_secs(10), "{ended:?}");
    assert!(c.read_msg().await.is_none(), "then the connection closes");
    let mut next = RawClient::login(addr, &f.user, &f.password, &f.db).await;
    assert_eq!(next.rows("SELECT 2").await.0, ["2"]);
}

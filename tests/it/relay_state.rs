//! What the relay must know about the server it relays to: how many answers are still due
//! (COPY failures, Syncs the server ignores), the transaction a refused statement aborts, and
//! the parameters in effect, so that no client inherits another's answers or settings.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use crate::support::fixture::Fixture;
use crate::support::raw::RawClient;

async fn raw(f: &Fixture) -> RawClient {
    RawClient::login(f.porter.addr(), &f.user, &f.password, &f.db).await
}

async fn raw_with(f: &Fixture, params: &[(&str, &str)]) -> (RawClient, Vec<(String, String)>) {
    RawClient::login_with(f.porter.addr(), &f.user, &f.password, &f.db, params).await
}

async fn direct_value(f: &Fixture, sql: &str) -> String {
    f.direct().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// The server rejects a COPY row and leaves copy mode; the client never sends CopyDone (it
/// need not) and leaves with two queries in flight. Their answers must not reach the next
/// client: the server connection is closed, not reset and reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_never_hands_a_busy_server_to_the_next_client() {
    let f = Fixture::new(1).await;
    (f.direct().await)
        .batch_execute("CREATE TABLE ct (a int)")
        .await
        .unwrap();
    let mut a = raw(&f).await;
    a.query("COPY ct FROM STDIN").await;
    assert_eq!(a.read_msg().await.unwrap().tag, b'G');
    a.send_msg(b'd', b"x\n").await;
    let msgs = a.until_ready().await.unwrap();
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("22P02"));
    a.extended("SELECT 'stale-1' FROM pg_sleep(0.3)").await;
    a.extended("SELECT 'stale-2' FROM pg_sleep(0.6)").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(a);

    let mut b = raw(&f).await;
    for want in ["b-first", "b-second", "b-third"] {
        let (rows, status, error) = b.rows(&format!("SELECT '{want}'")).await;
        assert_eq!((rows, status, error), (vec![want.to_string()], b'I', None));
    }
}

/// One simple Query with two COPY FROM STDIN; a Sync sent inside the second copy is ignored by
/// PostgreSQL. The count of answers due stays right: a refused statement afterwards is
/// answered (it waits for that count to reach zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_inside_the_second_copy_of_a_query_is_not_awaited() {
    let f = Fixture::new(1).await;
    (f.direct().await)
        .batch_execute("CREATE TABLE ct (a int)")
        .await
        .unwrap();
    let mut c = raw(&f).await;
    c.query("COPY ct FROM STDIN; COPY ct FROM STDIN").await;
    assert_eq!(c.read_msg().await.unwrap().tag, b'G');
    c.send_msg(b'd', b"1\n").await;
    c.send_msg(b'c', b"").await;
    assert_eq!(c.read_msg().await.unwrap().tag, b'C');
    assert_eq!(c.read_msg().await.unwrap().tag, b'G');
    c.send_msg(b'S', b"").await;
    c.send_msg(b'd', b"2\n").await;
    c.send_msg(b'c', b"").await;
    let msgs = c.until_ready().await.unwrap();
    assert_eq!(msgs.len(), 2, "CommandComplete, ReadyForQuery: {msgs:?}");
    let (_, status, error) = c
        .rows("SELECT current_setting('pgporter.client_user')")
        .await;
    assert_eq!((status, error.as_deref()), (b'I', Some("42501")));
    let (rows, _, _) = c.rows("SELECT count(*) FROM ct").await;
    assert_eq!(rows, ["2"]);
}

/// A statement refused for naming the identity GUCs inside a transaction block aborts the
/// transaction as PostgreSQL's own error would: ReadyForQuery says 'E' and COMMIT rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_aborts_the_transaction() {
    let f = Fixture::new(1).await;
    (f.direct().await)
        .batch_execute("CREATE TABLE tx (a int)")
        .await
        .unwrap();
    let mut c = raw(&f).await;
    assert_eq!(c.rows("BEGIN").await.1, b'T');
    assert_eq!(c.rows("INSERT INTO tx VALUES (1)").await.1, b'T');
    let (_, status, error) = c
        .rows("SELECT current_setting('pgporter.client_user')")
        .await;
    assert_eq!((status, error.as_deref()), (b'E', Some("42501")));
    let (_, status, error) = c.rows("SELECT 1").await;
    assert_eq!((status, error.as_deref()), (b'E', Some("25P02")));
    c.query("COMMIT").await;
    let msgs = c.until_ready().await.unwrap();
    assert_eq!(&msgs[0].body[..8], b"ROLLBACK");
    assert_eq!(msgs.last().unwrap().body, b"I");

    // The same through the extended protocol (the Parse is refused).
    assert_eq!(c.rows("BEGIN").await.1, b'T');
    assert_eq!(c.rows("INSERT INTO tx VALUES (2)").await.1, b'T');
    c.extended("SELECT current_setting('pgporter.client_addr')")
        .await;
    let msgs = c.until_ready().await.unwrap();
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("42501"));
    assert_eq!(msgs.last().unwrap().body, b"E");
    let (_, status, _) = c.rows("COMMIT").await;
    assert_eq!(status, b'I');
    assert_eq!(direct_value(&f, "SELECT count(*)::text FROM tx").await, "0");
}

/// A client's startup parameters are its own: the server connection it caused to be opened
/// does not keep them as its defaults for the next client (who gets what a direct login gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_do_not_outlive_their_client() {
    let f = Fixture::new(1).await;
    let asked = [
        ("DateStyle", "German, DMY"),
        ("TimeZone", "Asia/Tokyo"),
        ("search_path", "pg_catalog"),
        ("extra_float_digits", "0"),
        ("application_name", "alpha"),
    ];
    let (mut a, _) = raw_with(&f, &asked).await;
    for (name, value) in asked {
        assert_eq!(a.rows(&format!("SHOW {name}")).await.0, [value]);
    }
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut b, welcome) = raw_with(&f, &[]).await;
    for (name, _) in asked {
        let direct = direct_value(&f, &format!("SHOW {name}")).await;
        assert_eq!(
            b.rows(&format!("SHOW {name}")).await.0,
            vec![direct.clone()]
        );
        if let Some((_, said)) = welcome.iter().find(|(k, _)| k == name) {
            assert_eq!(*said, direct, "welcome's {name}");
        }
    }
}

/// Without a reset query the session's own SETs stay on the connection (the operator's
/// choice), but the parameters pgporter keeps track of are right for each client: what it
/// asked for at login, else what the connection started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_parameters_follow_each_client_without_a_reset_query() {
    let f = Fixture::with_settings(1, "server_reset_query =").await;
    let german = [("DateStyle", "German, DMY")];
    let (mut a, _) = raw_with(&f, &german).await;
    assert_eq!(a.rows("SHOW DateStyle").await.0, ["German, DMY"]);
    a.rows("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'Asia/Tokyo'")
        .await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut c, _) = raw_with(&f, &german).await;
    assert_eq!(c.rows("SHOW DateStyle").await.0, ["German, DMY"]);
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut d, _) = raw_with(&f, &[]).await;
    let (datestyle, timezone) = (
        direct_value(&f, "SHOW DateStyle").await,
        direct_value(&f, "SHOW TimeZone").await,
    );
    assert_eq!(d.rows("SHOW DateStyle").await.0, [datestyle]);
    assert_eq!(d.rows("SHOW TimeZone").await.0, [timezone]);
}

/// Parameters PostgreSQL does not report (search_path, extra_float_digits, statement_timeout)
/// are SET for every client that asks, also on a reused connection whose reset cleared them
/// without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreported_parameters_are_applied_on_every_checkout() {
    let f = Fixture::new(1).await;
    let asked = [
        ("extra_float_digits", "3"),
        ("search_path", "pg_catalog"),
        ("statement_timeout", "12345ms"),
    ];
    for round in 0..3 {
        let (mut c, _) = raw_with(&f, &asked).await;
        for (name, value) in asked {
            let shown = c.rows(&format!("SHOW {name}")).await.0;
            assert_eq!(shown, [value], "round {round}: {name}");
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A COPY whose data and CopyDone are pipelined before its CopyInResponse, with a slow query
/// behind it: however the relay counts that, the server connection the client leaves with the
/// query still running never hands its answer to the next client (the release checks that
/// only the reset's own answers come back), with or without a reset query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_flight_never_reach_the_next_client() {
    for reset in ["", "server_reset_query ="] {
        let f = Fixture::with_settings(1, reset).await;
        (f.direct().await)
            .batch_execute("CREATE TABLE ct (a int)")
            .await
            .unwrap();
        let mut a = raw(&f).await;
        // One write: the relay sees it all before the server's CopyInResponse.
        a.send_all(&[
            (b'Q', b"COPY ct FROM STDIN\0"),
            (b'd', b"7\n"),
            (b'c', b""),
            (b'P', b"\0SELECT 'stale' FROM pg_sleep(0.6)\0\0\0"),
            (b'B', b"\0\0\0\0\0\0\0\0"),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
        ])
        .await;
        let first = a.until_ready().await.unwrap();
        assert!(first.iter().any(|m| m.tag == b'G'), "{first:?}");
        drop(a);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut b = raw(&f).await;
        for want in ["b-first", "b-second"] {
            let (rows, status, error) = b.rows(&format!("SELECT '{want}'")).await;
            assert_eq!(
                (rows, status, error),
                (vec![want.to_string()], b'I', None),
                "{reset:?}"
            );
        }
    }
}

/// On a reused connection only application_name differs (the reset cleared it): its SET goes
/// ahead of the client's first request without a round trip, and its answer never reaches
/// the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_is_set_ahead_of_the_first_request() {
    let f = Fixture::new(1).await;
    for name in ["first app", "second app", "first app"] {
        let (mut c, _) = raw_with(&f, &[("application_name", name)]).await;
        // The SET's own ParameterStatus is not passed on: the welcome said so already.
        c.query("SELECT 0").await;
        let msgs = c.until_ready().await.unwrap();
        assert!(msgs.iter().all(|m| m.tag != b'S'), "{msgs:?}");
        let (rows, status, error) = c.rows("SHOW application_name").await;
        assert_eq!((rows, status, error), (vec![name.to_string()], b'I', None));
        let (rows, _, _) = c.rows("SELECT 1").await;
        assert_eq!(rows, ["1"]);
        drop(c);
        // The one server connection goes back to the pool each time (a sleep here saw it
        // still on its way back on a loaded machine).
        f.porter.until_idle(1).await;
    }
}

/// A client's own RESET ALL / DISCARD ALL / RESET application_name returns application_name
/// to the connection's login value (empty here, as through PgBouncer), never to an earlier
/// client's: server connections are not opened with a client's application_name (they were,
/// and asyncpg's pool reset or psycopg2's reset() then showed another person's application).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_never_brings_back_an_earlier_clients_application_name() {
    let f = Fixture::new(1).await;
    let (mut a, _) = raw_with(&f, &[("application_name", "earlier-app")]).await;
    assert_eq!(a.rows("SHOW application_name").await.0, ["earlier-app"]);
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for reset in ["RESET ALL", "DISCARD ALL", "RESET application_name"] {
        for params in [&[("application_name", "later-app")][..], &[]] {
            let (mut b, _) = raw_with(&f, params).await;
            let (_, _, error) = b.rows(reset).await;
            assert_eq!(error, None, "{reset}");
            let (rows, _, _) = b.rows("SHOW application_name").await;
            assert_eq!(rows, [""], "after {reset} with {params:?}");
            drop(b);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A cancel for a client that leaves right after sending it must not reach the next client of
/// the same server connection: the connection is not reset and handed on while the cancel is
/// still being delivered. (A regression guard: with the release build the race hit the next
/// client in 28 of 30 tries before the fix and 0 of 30 after; this debug-build harness rarely
/// loses it either way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_reaches_the_next_client() {
    let f = Fixture::new(1).await;
    for round in 0..10 {
        let mut a = raw(&f).await;
        assert_eq!(a.rows("SELECT 1").await.0, ["1"]);
        let mut b = raw(&f).await;
        b.query("SELECT 'b done' FROM pg_sleep(0.3)").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        // B waits for A's connection; A cancels (nothing of its own is running) and leaves.
        let mut cancel = RawClient::connect(f.porter.addr()).await;
        let (pid, secret) = a.key.unwrap();
        let mut packet = Vec::new();
        for word in [16, 80_877_102, pid, secret] {
            packet.extend_from_slice(&i32::to_be_bytes(word));
        }
        cancel.send(&packet).await;
        tokio::time::sleep(Duration::from_micros(100 * (round % 5))).await;
        a.send_msg(b'X', b"").await;
        drop(a);
        let msgs = b.until_ready().await.unwrap();
        let errors: Vec<_> = msgs.iter().filter_map(|m| m.sqlstate()).collect();
        assert!(errors.is_empty(), "round {round}: B got {errors:?}");
        drop(cancel);
    }
}

/// A server connection opened after `ALTER ROLE ... SET` logs in with other values than the
/// pool's first one, which every client is welcomed with: the session is SET to what its
/// client was told (a driver believing UTF8 on a LATIN1 session stores garbage; believing
/// standard_conforming_strings on when it is off lets a crafted value out of its literal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_matches_its_welcome_after_the_role_defaults_change() {
    let f = Fixture::new(2).await;
    let (mut first, welcome) = raw_with(&f, &[]).await;
    let told = |name: &str| {
        welcome
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in the welcome"))
    };
    assert_eq!(
        first.rows("SHOW client_encoding").await.0,
        [told("client_encoding")]
    );
    // `first` keeps the pool's only connection: the next client's is opened after the change.
    let su = f.superuser().await;
    su.batch_execute(&format!(
        "ALTER ROLE {u} SET client_encoding = 'LATIN1'; \
         ALTER ROLE {u} SET DateStyle = 'SQL, DMY'; \
         ALTER ROLE {u} SET standard_conforming_strings = off; \
         ALTER ROLE {u} SET TimeZone = 'America/Sao_Paulo'",
        u = f.user
    ))
    .await
    .unwrap();
    let (mut second, welcome2) = raw_with(&f, &[]).await;
    for name in [
        "client_encoding",
        "DateStyle",
        "standard_conforming_strings",
        "TimeZone",
    ] {
        let said = welcome2.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        assert_eq!(said, Some(&told(name)), "welcome's {name}");
        let shown = second.rows(&format!("SHOW {name}")).await.0;
        assert_eq!(shown, [told(name)], "{name} in effect");
    }
    drop(first);
}

/// Startup values are parsed as PostgreSQL parses them at login: a list stays a list, an
/// unquoted name is folded to lower case (asyncpg's server_settings, PgJDBC's currentSchema).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_valued_startup_parameters_keep_their_meaning() {
    let f = Fixture::new(1).await;
    let (mut c, _) = raw_with(&f, &[("search_path", "MySchema, public")]).await;
    assert_eq!(
        c.rows("SELECT current_setting('search_path')").await.0,
        ["MySchema, public"]
    );
    assert_eq!(
        c.rows("SELECT array_to_string(current_schemas(false), ',')")
            .await
            .0,
        ["public"],
        "myschema does not exist, public does: the list was parsed as two names"
    );
    drop(c);
    let (mut d, _) = raw_with(&f, &[("search_path", "\"$user\", pg_catalog")]).await;
    assert_eq!(
        d.rows("SELECT current_setting('search_path')").await.0,
        ["\"$user\", pg_catalog"]
    );
}

/// A startup value PostgreSQL normalizes (`iso` for DateStyle) reaches the client in
/// PostgreSQL's spelling too, as a ParameterStatus ahead of its first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normalized_startup_value_is_reported_to_the_client() {
    let f = Fixture::new(1).await;
    let (mut c, _) = raw_with(&f, &[("DateStyle", "iso")]).await;
    c.query("SELECT 1").await;
    let msgs = c.until_ready().await.unwrap();
    let status: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| String::from_utf8_lossy(&m.body).replace('\0', " "))
        .collect();
    assert_eq!(status, ["DateStyle ISO, MDY "], "{msgs:?}");
}

/// A value set in a client's own spelling (asyncpg sends `client_encoding='utf-8'`, quotes
/// included; `iso` for DateStyle) is recorded as PostgreSQL spells it: the next client, which
/// asked for neither, is not told `'utf-8'` (psycopg 3 then failed: no such codec) or `iso`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_spelling_is_not_reported_to_the_next_client() {
    let f = Fixture::new(1).await;
    let (mut a, _) = raw_with(&f, &[("client_encoding", "'utf-8'"), ("DateStyle", "iso")]).await;
    assert_eq!(a.rows("SELECT 1").await.2, None);
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut b, welcome) = raw_with(&f, &[]).await;
    let told = |name: &str| {
        welcome
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(told("client_encoding").as_deref(), Some("UTF8"));
    b.query("SELECT 1").await;
    let msgs = b.until_ready().await.unwrap();
    let status: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| String::from_utf8_lossy(&m.body).replace('\0', " "))
        .collect();
    assert!(status.is_empty(), "{status:?}");
    let (rows, _, _) = b
        .rows("SELECT current_setting('client_encoding') || ' ' || current_setting('DateStyle')")
        .await;
    assert_eq!(rows, ["UTF8 ISO, MDY"]);
    // The same spelling again needs no SET (and is answered as PostgreSQL spells it).
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, _) = raw_with(&f, &[("client_encoding", "'utf-8'")]).await;
    assert_eq!(c.rows("SHOW client_encoding").await.0, ["UTF8"]);
}

/// `ALTER SYSTEM SET TimeZone` + reload reaches a pooled connection at its next command: in
/// the answer to pgporter's own SET sent ahead of the client's request. The client hears of
/// it (ParameterStatus) like a direct session would; the next client is set back to what it
/// was welcomed with. (A private cluster: ALTER SYSTEM would reach every other test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_reload_is_reported_to_the_client_it_reaches() {
    let pg = Box::leak(Box::new(crate::support::PgCluster::start_private().await));
    let f = Fixture::on_cluster(pg, 1, "").await;
    let (mut x, welcome) = raw_with(&f, &[("application_name", "x")]).await;
    let told = |w: &[(String, String)]| {
        w.iter()
            .find(|(k, _)| k == "TimeZone")
            .map(|(_, v)| v.clone())
            .expect("TimeZone in the welcome")
    };
    let zone = told(&welcome);
    assert_eq!(x.rows("SHOW TimeZone").await.0, std::slice::from_ref(&zone));
    drop(x);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let su = f.superuser().await;
    su.batch_execute("ALTER SYSTEM SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    // pg_reload_conf only signals the postmaster, which signals the backends once it has
    // read the file: a new session showing the zone means the pooled backend was told.
    let deadline = tokio::time::Instant::now() + crate::support::HANG;
    while direct_value(&f, "SHOW TimeZone").await != "Asia/Tokyo" {
        assert!(tokio::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Another application_name: pgporter's SET goes ahead of the first request.
    let (mut b, welcome) = raw_with(&f, &[("application_name", "b")]).await;
    assert_eq!(told(&welcome), zone);
    b.query("SHOW TimeZone").await;
    let msgs = b.until_ready().await.unwrap();
    let reported: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| String::from_utf8_lossy(&m.body).replace('\0', " "))
        .collect();
    assert!(
        reported.iter().any(|s| s == "TimeZone Asia/Tokyo "),
        "the client was not told: {reported:?}"
    );
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut c, welcome) = raw_with(&f, &[("application_name", "c")]).await;
    assert_eq!(c.rows("SHOW TimeZone").await.0, [told(&welcome)]);
    su.batch_execute("ALTER SYSTEM RESET TimeZone")
        .await
        .unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}

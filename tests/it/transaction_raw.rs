//! Transaction mode at the protocol level (a hand-written client, message by message): where
//! a transaction ends, which prepared statements are open, and what a leaving client leaves
//! behind on the server connection the next client gets.

use std::time::Duration;

use crate::support::raw::{Msg, RawClient};
use crate::support::{Fixture, Spec};

/// One server connection in transaction mode: every client below gets the same one.
async fn fixture(extra: &str) -> Fixture {
    Fixture::custom(|_| Spec {
        pool_size: 1,
        ..Spec::new(format!(
            "pool_mode = transaction\nquery_wait_timeout = 3\n{extra}"
        ))
    })
    .await
}

async fn login(fx: &Fixture, params: &[(&str, &str)]) -> RawClient {
    RawClient::login_with(fx.porter.addr(), &fx.user, &fx.password, &fx.db, params)
        .await
        .0
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

async fn parse(c: &mut RawClient, name: &str, sql: &str) {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend([0, 0]);
    c.send_msg(b'P', &body).await;
}

/// Bind the unnamed portal to statement `name` with text parameters, then Execute it.
async fn bind_execute(c: &mut RawClient, name: &str, params: &[&str]) {
    let mut body = cstr("");
    body.extend(cstr(name));
    body.extend([0, 0]);
    body.extend(
        i16::try_from(params.len())
            .expect("few parameters")
            .to_be_bytes(),
    );
    for p in params {
        body.extend(i32::try_from(p.len()).expect("a short value").to_be_bytes());
        body.extend(p.as_bytes());
    }
    body.extend([0, 0]);
    c.send_msg(b'B', &body).await;
    c.send_msg(b'E', &[0, 0, 0, 0, 0]).await;
}

async fn close_statement(c: &mut RawClient, name: &str) {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    c.send_msg(b'C', &body).await;
}

async fn sync(c: &mut RawClient) -> Vec<Msg> {
    c.send_msg(b'S', &[]).await;
    c.until_ready().await.expect("connection ended")
}

fn error_of(msgs: &[Msg]) -> Option<String> {
    msgs.iter().find(|m| m.tag == b'E').and_then(Msg::sqlstate)
}

async fn value(c: &mut RawClient, sql: &str) -> String {
    let (rows, _, error) = c.rows(sql).await;
    assert_eq!(error, None, "{sql}");
    rows.into_iter().next().unwrap_or_default()
}

async fn leave(mut c: RawClient) {
    c.send_msg(b'X', &[]).await;
    // Wait for pgporter to close it: the release has run by then.
    assert!(c.read_msg().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_protocol_copy_keeps_its_connection_until_done() {
    // libpq's PQexecParams of a COPY: Parse, Bind, Execute, Sync; the server ignores that
    // Sync in copy-in mode, and the copy's rows come after a pause.
    let fx = fixture("").await;
    let mut a = login(&fx, &[]).await;
    value(&mut a, "create table t (x int)").await;
    parse(&mut a, "", "copy t from stdin").await;
    bind_execute(&mut a, "", &[]).await;
    a.send_msg(b'S', &[]).await;
    // ParseComplete, BindComplete, CopyInResponse.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(a.read_msg().await.expect("answer").tag);
    }
    assert_eq!(got, b"12G");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send_msg(b'd', b"1\n2\n").await;
    a.send_msg(b'c', &[]).await;
    let msgs = sync(&mut a).await;
    let done = msgs
        .iter()
        .find(|m| m.tag == b'C')
        .expect("CommandComplete");
    assert_eq!(done.body, b"COPY 2\0");
    assert_eq!(value(&mut a, "select count(*) from t").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_skipped_after_an_error_is_cleaned_up_when_the_client_leaves() {
    let fx = fixture("max_prepared_statements = 0").await;
    let mut a = login(&fx, &[]).await;
    parse(&mut a, "oneshot", "select 1 / $1::int").await;
    bind_execute(&mut a, "oneshot", &["0"]).await;
    close_statement(&mut a, "oneshot").await;
    assert_eq!(error_of(&sync(&mut a).await).as_deref(), Some("22012"));
    leave(a).await;
    let mut b = login(&fx, &[]).await;
    parse(&mut b, "oneshot", "select 42").await;
    bind_execute(&mut b, "oneshot", &[]).await;
    let msgs = sync(&mut b).await;
    assert_eq!(
        error_of(&msgs),
        None,
        "no 42P05: the statement was deallocated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_parse_is_followed_by_its_name() {
    let fx = fixture("max_prepared_statements = 0").await;
    let list: Vec<String> = (0..14_000).map(|i| i.to_string()).collect();
    let big = format!("select 1 where 1 in ({})", list.join(","));
    assert!(big.len() > 70_000);
    let mut a = login(&fx, &[]).await;
    // Unnamed: nothing held afterwards.
    parse(&mut a, "", &big).await;
    bind_execute(&mut a, "", &[]).await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    let mut b = login(&fx, &[]).await;
    assert_eq!(value(&mut b, "select 'b'").await, "b");
    // Named: held until closed.
    parse(&mut a, "big", &big).await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    b.query("select 'b'").await;
    let held = b.read_msg().await.expect("an answer");
    assert_eq!(
        held.sqlstate().as_deref(),
        Some("08P01"),
        "query_wait_timeout"
    );
    close_statement(&mut a, "big").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    let mut c = login(&fx, &[]).await;
    assert_eq!(value(&mut c, "select 'c'").await, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_query_always_still_runs_when_statements_are_left_open() {
    let fx = fixture("server_reset_query_always = 1").await;
    let mut a = login(&fx, &[]).await;
    parse(&mut a, "s1", "select 1").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    value(&mut a, "set work_mem = '66MB'").await;
    leave(a).await;
    let mut b = login(&fx, &[]).await;
    assert_eq!(value(&mut b, "show work_mem").await, "4MB");
    parse(&mut b, "s1", "select 2").await;
    assert_eq!(error_of(&sync(&mut b).await), None, "s1 was deallocated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_stay_with_their_client() {
    let fx = fixture("").await;
    // default_transaction_read_only is reported by PostgreSQL 14+, but not one of the
    // parameters every client gets put back.
    let params = [
        ("statement_timeout", "50"),
        ("search_path", "nowhere"),
        ("default_transaction_read_only", "on"),
    ];
    let mut a = login(&fx, &params).await;
    let mut b = login(&fx, &[]).await;
    for _ in 0..2 {
        assert_eq!(value(&mut a, "show statement_timeout").await, "50ms");
        assert_eq!(value(&mut a, "show search_path").await, "nowhere");
        assert_eq!(
            value(&mut a, "show default_transaction_read_only").await,
            "on"
        );
        assert_eq!(value(&mut b, "show statement_timeout").await, "0");
        assert_eq!(value(&mut b, "show search_path").await, "\"$user\", public");
        assert_eq!(
            value(&mut b, "show default_transaction_read_only").await,
            "off"
        );
    }
    leave(a).await;
    assert_eq!(value(&mut b, "show statement_timeout").await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_statements_keep_postgresql_semantics() {
    let fx = fixture("").await;
    let mut a = login(&fx, &[]).await;
    // A Close skipped after an error: the statement stays open, as in PostgreSQL.
    parse(&mut a, "oneshot", "select 1 / $1::int").await;
    bind_execute(&mut a, "oneshot", &["0"]).await;
    close_statement(&mut a, "oneshot").await;
    assert_eq!(error_of(&sync(&mut a).await).as_deref(), Some("22012"));
    let mut b = login(&fx, &[]).await;
    parse(&mut b, "oneshot", "select 42").await;
    bind_execute(&mut b, "oneshot", &[]).await;
    assert_eq!(error_of(&sync(&mut b).await), None, "b's own oneshot");
    bind_execute(&mut a, "oneshot", &["1"]).await;
    let msgs = sync(&mut a).await;
    assert_eq!(error_of(&msgs), None);
    assert!(msgs.iter().any(|m| m.tag == b'D' && m.body.ends_with(b"1")));
    // Closed now; a second Parse of an open name is refused; ParseComplete and CloseComplete
    // come in order, one per message.
    close_statement(&mut a, "oneshot").await;
    parse(&mut a, "again", "select 1").await;
    parse(&mut a, "again", "select 2").await;
    let msgs = sync(&mut a).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"31EZ", "{msgs:?}");
    assert_eq!(error_of(&msgs).as_deref(), Some("42P05"));
    bind_execute(&mut a, "oneshot", &["1"]).await;
    assert_eq!(error_of(&sync(&mut a).await).as_deref(), Some("26000"));
    // A statement b prepared with the same text: parsed once on the server, answered to both.
    parse(&mut a, "mine", "select 42").await;
    bind_execute(&mut a, "mine", &[]).await;
    let msgs = sync(&mut a).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12DCZ", "{msgs:?}");
    let (rows, _, _) = a
        .rows("select count(*) from pg_prepared_statements where statement = 'select 42'")
        .await;
    assert_eq!(rows, ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_statements_renamed_the_relay_still_holds_what_it_must() {
    let fx = fixture("").await;
    let mut a = login(&fx, &[]).await;
    parse(&mut a, "s1", "select 1").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    // Leaving inside a transaction: the Terminate is not forwarded, the connection goes back
    // (closed: it is mid-transaction) and the next client is served.
    value(&mut a, "begin").await;
    tokio::time::timeout(Duration::from_secs(10), leave(a))
        .await
        .expect("the session ends");
    let mut b = login(&fx, &[]).await;
    assert_eq!(value(&mut b, "select 'b'").await, "b");
    // The spoof check still refuses statements naming the identity settings.
    let (_, _, error) = b
        .rows("select set_config('pgporter.client_user', 'mallory', false)")
        .await;
    assert_eq!(error.as_deref(), Some("42501"));
    // A simple query pipelined behind a failing unsynced batch (skipped by the server): the
    // answers that follow still reach the right messages.
    parse(&mut b, "s9", "select 9").await;
    assert_eq!(error_of(&sync(&mut b).await), None);
    b.send_all(&[
        (b'P', b"\0select 1/0\0\0\0"),
        (b'B', b"\0\0\0\0\0\0\0\0"),
        (b'E', b"\0\0\0\0\0"),
        (b'Q', b"select 1\0"),
        (b'S', b""),
    ])
    .await;
    assert_eq!(
        error_of(&b.until_ready().await.expect("answers")).as_deref(),
        Some("22012")
    );
    parse(&mut b, "s2", "select 2").await;
    bind_execute(&mut b, "s2", &[]).await;
    bind_execute(&mut b, "s9", &[]).await;
    let msgs = sync(&mut b).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12DC2DCZ", "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_shared_statement_is_out_of_reach() {
    let fx = fixture("").await;
    let (mut a, mut b) = (login(&fx, &[]).await, login(&fx, &[]).await);
    parse(&mut a, "s1", "select 7").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    // b shares the connection and can read pgporter's name for it.
    let shared = value(&mut b, "select name from pg_prepared_statements").await;
    assert!(shared.starts_with("pgporter_"), "{shared}");
    bind_execute(&mut b, &shared, &[]).await;
    assert_eq!(error_of(&sync(&mut b).await).as_deref(), Some("26000"));
    close_statement(&mut b, &shared).await;
    assert_eq!(error_of(&sync(&mut b).await), None);
    bind_execute(&mut a, "s1", &[]).await;
    assert_eq!(
        error_of(&sync(&mut a).await),
        None,
        "a's statement is intact"
    );
    // SQL reaches it: a's next use fails once, and the one after parses it again.
    value(&mut b, &format!("deallocate {shared}")).await;
    bind_execute(&mut a, "s1", &[]).await;
    assert_eq!(error_of(&sync(&mut a).await).as_deref(), Some("26000"));
    bind_execute(&mut a, "s1", &[]).await;
    let msgs = sync(&mut a).await;
    assert_eq!(error_of(&msgs), None);
    assert!(msgs.iter().any(|m| m.tag == b'D' && m.body.ends_with(b"7")));
}

/// A message type not valid after login ends the session with FATAL 08P01, as PgBouncer's
/// `unknown pkt` does, and is not passed on: the server connection stays good for the next
/// client. (It used to be forwarded: PostgreSQL closed the connection, the client heard
/// nothing and waited forever, and when it followed a query, got the server's FATAL while
/// its session stayed open.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_message_type_ends_the_session() {
    let fx = fixture("").await;
    let mut a = login(&fx, &[]).await;
    let (pid, _, _) = a.rows("select pg_backend_pid()").await;
    for pipelined_behind_a_query in [false, true] {
        let mut c = login(&fx, &[]).await;
        if pipelined_behind_a_query {
            c.send_all(&[(b'Q', b"select 1\0"), (b'?', b"xx")]).await;
        } else {
            c.send_msg(b'?', b"xx").await;
        }
        let mut msgs = Vec::new();
        while let Some(m) = c.read_msg().await {
            msgs.push(m);
        }
        let last = msgs.last().expect("an answer");
        assert_eq!(last.sqlstate().as_deref(), Some("08P01"));
        assert!(String::from_utf8_lossy(&last.body).contains("FATAL"));
        let (now, status, error) = a.rows("select pg_backend_pid()").await;
        assert_eq!((status, error), (b'I', None));
        // Behind a query the message came with the connection busy: that one is closed.
        if !pipelined_behind_a_query {
            assert_eq!(now, pid, "the connection the message never reached is kept");
        }
    }
    // A session-mode pool refuses it the same way.
    let fx = Fixture::custom(|_| Spec {
        pool_size: 1,
        ..Spec::new("pool_mode = session\n")
    })
    .await;
    let mut c = login(&fx, &[]).await;
    let (pid, _, _) = c.rows("select pg_backend_pid()").await;
    c.send_msg(b'?', b"xx").await;
    let m = c.read_msg().await.expect("the FATAL");
    assert_eq!(m.sqlstate().as_deref(), Some("08P01"));
    assert!(c.read_msg().await.is_none(), "the session ended");
    let mut d = login(&fx, &[]).await;
    assert_eq!(
        d.rows("select pg_backend_pid()").await.0,
        pid,
        "connection kept"
    );
}

/// A Close or Describe of a statement with bytes after its name is refused by PostgreSQL
/// (`08P01 invalid message format`, checked live) before it acts on it; pgporter passes it on
/// as it came instead of rewriting it to a well-formed message under its own name, so the
/// client gets that error through pgporter too and its statement stays open. (The fuzz round
/// found it: the Close was answered CloseComplete, the Describe described.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_or_describe_with_bytes_after_its_name_is_refused_as_by_postgresql() {
    let fx = fixture("").await;
    let (mut a, mut b) = (login(&fx, &[]).await, login(&fx, &[]).await);
    parse(&mut a, "s1", "select 7").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    let shared = value(&mut b, "select name from pg_prepared_statements").await;
    for (c, name) in [(&mut a, "s1"), (&mut b, shared.as_str())] {
        for tag in [b'C', b'D'] {
            let mut body = vec![b'S'];
            body.extend(cstr(name));
            body.extend(b"xx");
            c.send_msg(tag, &body).await;
            let msgs = sync(c).await;
            let what = format!("{} of {name}", char::from(tag));
            assert_eq!(error_of(&msgs).as_deref(), Some("08P01"), "{what}");
            let m = msgs.iter().find(|m| m.tag == b'E').expect("the error");
            let text = m.error_field(b'M');
            assert_eq!(text.as_deref(), Some("invalid message format"), "{what}");
        }
    }
    bind_execute(&mut a, "s1", &[]).await;
    let msgs = sync(&mut a).await;
    assert_eq!(error_of(&msgs), None, "s1 is still open");
    assert!(msgs.iter().any(|m| m.tag == b'D' && m.body.ends_with(b"7")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_parsed_behind_a_pipelined_discard_all_are_kept() {
    let fx = fixture("").await;
    let (mut a, mut b) = (login(&fx, &[]).await, login(&fx, &[]).await);
    parse(&mut b, "x", "select 99").await;
    assert_eq!(error_of(&sync(&mut b).await), None);
    // The connection loses b's statement (pgporter parses it again when b next uses it).
    value(&mut a, "discard all").await;
    // DISCARD ALL, then, before its answer came, a Parse: it runs after the DISCARD, so the
    // statement it makes stays, as on PostgreSQL (it was forgotten with the others; then a
    // Bind of it got 26000, and b's next use 42P05 from pgporter's own Parse, on every use,
    // the connection holding a statement pgporter believed gone).
    a.send_all(&[
        (b'Q', b"discard all\0"),
        (b'P', b"s9\0select 99\0\0\0"),
        (b'S', b""),
    ])
    .await;
    for _ in 0..2 {
        let msgs = a.until_ready().await.expect("answers");
        assert_eq!(error_of(&msgs), None, "{msgs:?}");
    }
    for (c, name) in [(&mut a, "s9"), (&mut b, "x")] {
        bind_execute(c, name, &[]).await;
        let msgs = sync(c).await;
        assert_eq!(error_of(&msgs), None, "{name}: {msgs:?}");
        assert!(msgs
            .iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"99")));
    }
    // The same behind an extended-protocol DEALLOCATE ALL, in its own batch.
    parse(&mut a, "", "deallocate all").await;
    bind_execute(&mut a, "", &[]).await;
    parse(&mut a, "s10", "select 10").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    bind_execute(&mut a, "s10", &[]).await;
    bind_execute(&mut a, "s9", &[]).await;
    let msgs = sync(&mut a).await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"2DCEZ", "s10 is there, s9 is not: {msgs:?}");
    assert_eq!(error_of(&msgs).as_deref(), Some("26000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reparse_after_a_skipped_parse_does_not_change_a_shared_statement() {
    let fx = fixture("").await;
    let (mut a, mut c) = (login(&fx, &[]).await, login(&fx, &[]).await);
    parse(&mut c, "keep", "select 1").await;
    assert_eq!(error_of(&sync(&mut c).await), None);
    // The connection loses c's statement (pgporter parses it again when c next uses it).
    value(&mut a, "discard all").await;
    // A Parse skipped after an error, then a second Parse of its name with another text: on
    // PostgreSQL the first never happened and the second makes the statement. It went as a
    // Parse of pgporter's statement for the first text, which the server took: that
    // statement held the second text, and c's use of it then got 42P05 (it was forgotten as
    // never made, parsed again) on every use, while a's name was gone (26000).
    a.send_all(&[
        (b'B', b"\0nosuch\0\0\0\0\0\0\0"),
        (b'E', b"\0\0\0\0\0"),
        (b'P', b"b\0select 1\0\0\0"),
        (b'S', b""),
        (b'P', b"b\0select 7\0\0\0"),
        (b'S', b""),
    ])
    .await;
    let msgs = a.until_ready().await.expect("answers");
    assert_eq!(error_of(&msgs).as_deref(), Some("26000"));
    let msgs = a.until_ready().await.expect("answers");
    assert_eq!(error_of(&msgs), None, "{msgs:?}");
    for (on_a, name, want) in [(true, "b", "7"), (false, "keep", "1"), (true, "b", "7")] {
        let client = if on_a { &mut a } else { &mut c };
        bind_execute(client, name, &[]).await;
        let msgs = sync(client).await;
        assert_eq!(error_of(&msgs), None, "{name}: {msgs:?}");
        let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
        assert!(row.body.ends_with(want.as_bytes()), "{name}: {msgs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_closed_and_parsed_again_in_one_batch_stays_open() {
    // pgx after "cached plan must not change result type": a Close of its statement and a
    // Parse under the same name, pipelined.
    let fx = fixture("max_prepared_statements = 0").await;
    let mut a = login(&fx, &[]).await;
    parse(&mut a, "s", "select 1").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    close_statement(&mut a, "s").await;
    parse(&mut a, "s", "select 1").await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    bind_execute(&mut a, "s", &[]).await;
    assert_eq!(error_of(&sync(&mut a).await), None);
    // a kept its connection while its statement was open (the CloseComplete ended it, and
    // the connection went on to the next client, statement and all: 42P05), and leaves it
    // cleared.
    leave(a).await;
    let mut b = login(&fx, &[]).await;
    parse(&mut b, "s", "select 2").await;
    bind_execute(&mut b, "s", &[]).await;
    let msgs = sync(&mut b).await;
    assert_eq!(error_of(&msgs), None, "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_or_deallocate_all_lets_the_connection_go() {
    let fx = fixture("max_prepared_statements = 0").await;
    let mut a = login(&fx, &[]).await;
    let mut b = login(&fx, &[]).await;
    for reset in ["discard all", "deallocate all"] {
        parse(&mut a, "s1", "select 1").await;
        parse(&mut a, "s2", "select 2").await;
        assert_eq!(error_of(&sync(&mut a).await), None);
        value(&mut a, reset).await;
        // Without a statement open, a's connection went back at its transaction's end (b
        // would wait query_wait_timeout for the only one otherwise).
        assert_eq!(value(&mut b, "select 'b'").await, "b", "after {reset}");
    }
}

/// A lone Flush outside a transaction asks PostgreSQL for nothing (with no server connection
/// held, no answer is pending): pgporter takes no connection for it. Counted by the checks
/// run as a connection is handed out (server_check_delay = 0: at every reuse), each of which
/// takes a number from a sequence. PgBouncer 1.18 (live, transaction mode) takes one for it
/// and holds it until the client's next ReadyForQuery (SHOW POOLS: sv_active 1, sv_idle 0);
/// pgporter took one and gave it back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_flush_takes_no_server_connection() {
    let fx =
        fixture("server_check_delay = 0\nserver_check_query = select nextval('porter_checks')\n")
            .await;
    let mut a = login(&fx, &[]).await;
    let mut b = login(&fx, &[]).await;
    // The first check fails (no sequence yet): that connection is closed, a new one is not
    // checked.
    value(&mut b, "create sequence porter_checks").await;
    value(&mut b, "select nextval('porter_checks')").await;
    let taken = |v: String| v.parse::<i64>().expect("a number");
    let before = taken(value(&mut b, "select last_value from porter_checks").await);
    a.send_msg(b'H', &[]).await;
    // Sent apart (a Flush read in one piece with a Query would go with it, on the Query's
    // connection): b's query in between. Once a's Query is answered, its Flush was read.
    assert_eq!(value(&mut b, "select 'b'").await, "b");
    a.query("select 'a'").await;
    let msgs = a.until_ready().await.expect("answered");
    assert_eq!(error_of(&msgs), None);
    let after = taken(value(&mut b, "select last_value from porter_checks").await);
    assert_eq!(
        after - before,
        3,
        "a's Query and b's two: one connection each, none for the Flush"
    );
    // A Flush inside a batch still reaches PostgreSQL, which sends what it has so far.
    parse(&mut a, "", "select 'a'").await;
    bind_execute(&mut a, "", &[]).await;
    a.send_msg(b'H', &[]).await;
    while a.read_msg().await.expect("answered").tag != b'C' {}
    assert_eq!(error_of(&sync(&mut a).await), None);
}

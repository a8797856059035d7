use super::*;
use crate::client::tracker::TxTracker;

/// A Renaming fed the way the relay feeds it, with the tracker's counts.
struct Fed {
    r: Renaming,
    t: TxTracker,
}

impl std::ops::Deref for Fed {
    type Target = Renaming;
    fn deref(&self) -> &Renaming {
        &self.r
    }
}

impl std::ops::DerefMut for Fed {
    fn deref_mut(&mut self) -> &mut Renaming {
        &mut self.r
    }
}

impl Fed {
    /// A client message: true when it is held for a rewrite (the tracker then sees the
    /// replacement, see `send`).
    fn client(&mut self, tag: u8, body: Option<&[u8]>) -> bool {
        let failed = self.t.status() == b'E';
        let held = self.r.on_client(tag, body, self.t.syncs_sent(), failed);
        if !held {
            self.t.on_client(tag);
        }
        held
    }
    fn server(&mut self, tag: u8, body: Option<&[u8]>) {
        self.t.on_server(tag, body.unwrap_or_default());
        self.r.on_server(tag, body, self.t.readies());
    }
}

const SELECT_1: &[u8] = b"select 1\0\0\0";

fn parse(name: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut b = name.to_vec();
    b.push(0);
    b.extend_from_slice(tail);
    b
}

fn bind(name: &[u8]) -> Vec<u8> {
    let mut b = b"\0".to_vec();
    b.extend_from_slice(name);
    b.extend_from_slice(b"\0\0\0\0\0\0\0");
    b
}

fn close(name: &[u8]) -> Vec<u8> {
    let mut b = b"S".to_vec();
    b.extend_from_slice(name);
    b.push(0);
    b
}

/// Send one client message through `r`; returns what goes to the server, as (tag, body).
fn send(r: &mut Fed, tag: u8, body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut buf = BytesMut::new();
    put_message(&mut buf, tag, |b| b.put_slice(body));
    let held = r.client(tag, Some(body));
    if held {
        assert_eq!(r.rewrite(&mut buf), Rewritten::Done);
    }
    let out = messages(&buf);
    if held {
        for (tag, _) in &out {
            assert!(r.take_passing());
            r.t.on_client(*tag);
        }
    }
    assert!(!r.take_passing());
    out
}

fn messages(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(len) = front_len(buf) {
        out.push((buf[0], buf[5..len].to_vec()));
        buf = &buf[len..];
    }
    out
}

fn renaming(server: ServerStatements, registry: &Arc<Registry>, keep: u32) -> Fed {
    Fed {
        r: Renaming::new(ClientStatements::new(keep), server, Arc::clone(registry)),
        t: TxTracker::default(),
    }
}

/// A client on a fresh connection, keeping 10 statements per connection.
fn fresh() -> Fed {
    renaming(
        ServerStatements::default(),
        &Arc::new(Registry::default()),
        10,
    )
}

/// [`fresh`], with `s1` (SELECT_1) prepared and its batch answered.
fn with_s1() -> Fed {
    let mut r = fresh();
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    send(&mut r, frontend::SYNC, b"");
    r.on_complete();
    ready(&mut r);
    r
}

/// An ErrorResponse from the server.
fn error(r: &mut Fed, code: &str, message: &str) {
    let mut msg = BytesMut::new();
    backend::error_response(
        &mut msg,
        crate::protocol::backend::Severity::Error,
        code,
        message,
        None,
    );
    r.server(backend::ERROR_RESPONSE, msg.get(5..));
}

fn ready(r: &mut Fed) {
    r.server(backend::READY_FOR_QUERY, Some(b"I"));
}

#[test]
fn a_statement_is_parsed_once_per_connection_under_pgporters_name() {
    let registry = Arc::new(Registry::default());
    let mut a = renaming(ServerStatements::default(), &registry, 10);
    assert_eq!(
        send(&mut a, frontend::PARSE, &parse(b"s1", SELECT_1)),
        vec![(frontend::PARSE, parse(b"pgporter_1", SELECT_1))]
    );
    assert_eq!(
        send(&mut a, frontend::BIND, &bind(b"s1")),
        vec![(frontend::BIND, bind(b"pgporter_1"))]
    );
    assert_eq!(
        send(&mut a, frontend::DESCRIBE, b"Ss1\0"),
        vec![(frontend::DESCRIBE, b"Spgporter_1\0".to_vec())]
    );
    send(&mut a, frontend::SYNC, b"");
    assert_eq!(a.on_complete(), Answer::Pass);
    ready(&mut a);
    assert!(a.releasable());

    // Another client on the same connection prepares the same text under another name: the
    // server is asked nothing new, and the answer still comes in its place.
    let mut b = renaming(std::mem::take(&mut a.server), &registry, 10);
    assert_eq!(
        send(&mut b, frontend::PARSE, &parse(b"_pg3_0", SELECT_1)),
        vec![(frontend::CLOSE, close(NOTHING))]
    );
    send(&mut b, frontend::SYNC, b"");
    assert_eq!(b.on_complete(), Answer::ToParseComplete);
    let mut answer = BytesMut::from(&[backend::CLOSE_COMPLETE, 0, 0, 0, 4][..]);
    assert!(b.convert(&mut answer));
    assert_eq!(answer[0], backend::PARSE_COMPLETE);
    assert_eq!(b.on_complete(), Answer::Pass, "the converted answer passes");
    ready(&mut b);

    // The first client, on a fresh connection: its statement is parsed there first.
    let mut a2 = Fed {
        r: Renaming::new(
            std::mem::replace(&mut a.client, ClientStatements::new(10)),
            ServerStatements::default(),
            Arc::clone(&registry),
        ),
        t: TxTracker::default(),
    };
    assert_eq!(
        send(&mut a2, frontend::BIND, &bind(b"s1")),
        vec![
            (frontend::PARSE, parse(b"pgporter_1", SELECT_1)),
            (frontend::BIND, bind(b"pgporter_1"))
        ]
    );
    assert_eq!(
        send(&mut a2, frontend::BIND, &bind(b"s1")),
        vec![(frontend::BIND, bind(b"pgporter_1"))],
        "once is enough"
    );
    send(&mut a2, frontend::SYNC, b"");
    assert_eq!(
        a2.on_complete(),
        Answer::Drop,
        "pgporter's own ParseComplete"
    );
    ready(&mut a2);
    assert_eq!(a2.server.len(), 1);
}

#[test]
fn unnamed_and_unknown_names_pass_unchanged() {
    let mut r = fresh();
    assert!(!r.client(frontend::PARSE, Some(&parse(b"", SELECT_1))));
    assert!(!r.client(frontend::BIND, Some(&bind(b""))));
    assert!(!r.client(frontend::BIND, Some(&bind(b"sql_prepared"))));
    assert!(!r.client(frontend::DESCRIBE, Some(b"Pportal\0")));
    assert!(!r.client(frontend::CLOSE, Some(&close(b"sql_prepared"))));
    assert!(!r.client(frontend::PARSE, Some(b"no nul")));
    assert_eq!(r.pending.len(), 3, "Parse and Close answers are all queued");
    for _ in 0..3 {
        assert_eq!(r.on_complete(), Answer::Pass);
    }
}

#[test]
fn a_full_connection_closes_its_least_recently_used_statement() {
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 2);
    send(&mut r, frontend::PARSE, &parse(b"a", b"select 'a'\0\0\0"));
    send(&mut r, frontend::PARSE, &parse(b"b", b"select 'b'\0\0\0"));
    send(&mut r, frontend::BIND, &bind(b"a"));
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"c", b"select 'c'\0\0\0")),
        vec![
            (frontend::CLOSE, close(b"pgporter_2")),
            (frontend::PARSE, parse(b"pgporter_3", b"select 'c'\0\0\0"))
        ]
    );
    assert_eq!(
        send(&mut r, frontend::BIND, &bind(b"b")),
        vec![
            (frontend::CLOSE, close(b"pgporter_1")),
            (frontend::PARSE, parse(b"pgporter_2", b"select 'b'\0\0\0")),
            (frontend::BIND, bind(b"pgporter_2"))
        ]
    );
    send(&mut r, frontend::SYNC, b"");
    let answers: Vec<Answer> = (0..7).map(|_| r.on_complete()).collect();
    use Answer::{Drop, Pass};
    assert_eq!(answers, [Pass, Pass, Drop, Pass, Drop, Drop, Pass]);
    ready(&mut r);
    assert_eq!(r.server.len(), 2);
}

#[test]
fn what_the_server_skipped_after_an_error_is_undone() {
    let mut r = with_s1();
    // Execute fails, then Close s1 and Parse s2 are skipped.
    send(&mut r, frontend::EXECUTE, b"\0\0\0\0\0");
    assert_eq!(
        send(&mut r, frontend::CLOSE, &close(b"s1")),
        vec![(frontend::CLOSE, close(NOTHING))]
    );
    send(&mut r, frontend::PARSE, &parse(b"s2", b"select 2\0\0\0"));
    send(&mut r, frontend::SYNC, b"");
    r.server(backend::ERROR_RESPONSE, None);
    ready(&mut r);
    assert!(
        r.client.names.contains_key(&b"s1"[..]),
        "the Close was skipped"
    );
    assert!(!r.client.names.contains_key(&b"s2"[..]), "so was the Parse");
    assert_eq!(r.server.len(), 1);
    // Now the Close goes through.
    send(&mut r, frontend::CLOSE, &close(b"s1"));
    send(&mut r, frontend::SYNC, b"");
    assert_eq!(r.on_complete(), Answer::Pass);
    ready(&mut r);
    assert!(r.client.names.is_empty());
    assert_eq!(r.server.len(), 1, "the statement stays for other clients");
}

#[test]
fn discard_all_forgets_every_statement() {
    let mut r = fresh();
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    send(&mut r, frontend::QUERY, b"discard all\0");
    assert_eq!(r.on_complete(), Answer::Pass);
    r.server(backend::COMMAND_COMPLETE, Some(b"DISCARD ALL\0"));
    assert!(r.client.names.is_empty() && r.server.is_empty());
}

/// What the client sent behind a DISCARD ALL / DEALLOCATE ALL, before its answer came, runs
/// after it: the statements it makes are kept, what it closes stays closed.
#[test]
fn what_follows_a_pipelined_discard_all_is_done_again() {
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    let tail = |t: &str| format!("select '{t}'\0\0\0").into_bytes();
    send(&mut r, frontend::PARSE, &parse(b"a", &tail("a")));
    send(&mut r, frontend::PARSE, &parse(b"b", &tail("b")));
    send(&mut r, frontend::SYNC, b"");
    for _ in 0..2 {
        r.on_complete();
    }
    ready(&mut r);
    send(&mut r, frontend::QUERY, b"discard all\0");
    // A Parse of a text the connection has (sent as a Close of nothing), a new one, a Close,
    // a second Parse of an open name with its own text (PostgreSQL's 42P05, but not here).
    let sent = [
        send(&mut r, frontend::PARSE, &parse(b"b2", &tail("b"))),
        send(&mut r, frontend::PARSE, &parse(b"d", &tail("d"))),
        send(&mut r, frontend::CLOSE, &close(b"a")),
        send(&mut r, frontend::PARSE, &parse(b"b", &tail("b"))),
    ];
    assert_eq!(sent[0], [(frontend::CLOSE, close(NOTHING))]);
    assert_eq!(
        sent[1],
        [(frontend::PARSE, parse(b"pgporter_3", &tail("d")))]
    );
    assert_eq!(
        sent[3],
        [(frontend::PARSE, parse(b"pgporter_2", &tail("b")))]
    );
    send(&mut r, frontend::SYNC, b"");
    r.server(backend::COMMAND_COMPLETE, Some(b"DISCARD ALL\0"));
    ready(&mut r);
    let answers: Vec<Answer> = (0..4).map(|_| r.on_complete()).collect();
    assert_eq!(answers[0], Answer::ToParseComplete);
    ready(&mut r);
    let mut names: Vec<&[u8]> = r.client.names.keys().map(|k| &k[..]).collect();
    names.sort_unstable();
    assert_eq!(names, [&b"b"[..], b"b2", b"d"]);
    let held = |r: &Fed, t| r.server.has(&registry.intern(&tail(t)));
    assert!(held(&r, "b") && held(&r, "d") && !held(&r, "a"));
    // b2's statement, which the DISCARD took, is parsed again at its next use.
    assert!(!r.unsure());
    // pgporter's Close of a statement the DISCARD took: still dropped, nothing to undo.
    let mut r = renaming(
        ServerStatements::default(),
        &Arc::new(Registry::default()),
        1,
    );
    send(&mut r, frontend::PARSE, &parse(b"a", &tail("a")));
    send(&mut r, frontend::SYNC, b"");
    r.on_complete();
    ready(&mut r);
    send(&mut r, frontend::QUERY, b"discard all\0");
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"e", &tail("e"))),
        [
            (frontend::CLOSE, close(b"pgporter_1")),
            (frontend::PARSE, parse(b"pgporter_2", &tail("e")))
        ]
    );
    r.server(backend::COMMAND_COMPLETE, Some(b"DISCARD ALL\0"));
    ready(&mut r);
    error(&mut r, "42601", "syntax error");
    send(&mut r, frontend::SYNC, b"");
    ready(&mut r);
    assert!(r.server.is_empty() && r.client.names.is_empty());
}

/// A second Parse of an open name with another text, which the server takes (the statement
/// was not there: a DEALLOCATE ALL ahead of it, a Parse skipped after an error): pgporter's
/// statement then holds that text on the server; it is closed before anything is parsed
/// there, and the client's name stands for a statement of its text.
#[test]
fn a_statement_holding_another_text_is_closed_before_use() {
    let mut r = with_s1();
    send(&mut r, frontend::QUERY, b"deallocate all\0");
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"s1", b"select 2\0\0\0")),
        [(frontend::PARSE, parse(b"pgporter_1", b"select 2\0\0\0"))],
        "PostgreSQL answers 42P05 unless the DEALLOCATE runs first"
    );
    send(&mut r, frontend::SYNC, b"");
    r.server(backend::COMMAND_COMPLETE, Some(b"DEALLOCATE ALL\0"));
    ready(&mut r);
    assert_eq!(r.on_complete(), Answer::Pass);
    ready(&mut r);
    assert!(r.server.is_empty() && !r.unsure());
    assert_eq!(
        send(&mut r, frontend::BIND, &bind(b"s1")),
        [
            (frontend::CLOSE, close(b"pgporter_1")),
            (frontend::PARSE, parse(b"pgporter_2", b"select 2\0\0\0")),
            (frontend::BIND, bind(b"pgporter_2"))
        ]
    );
    // The same after a Parse skipped behind an error.
    let mut r = fresh();
    send(&mut r, frontend::BIND, &bind(b"nosuch"));
    send(&mut r, frontend::PARSE, &parse(b"b", SELECT_1));
    send(&mut r, frontend::SYNC, b"");
    send(&mut r, frontend::PARSE, &parse(b"b", b"select 7\0\0\0"));
    send(&mut r, frontend::SYNC, b"");
    error(
        &mut r,
        "26000",
        "prepared statement \"nosuch\" does not exist",
    );
    ready(&mut r);
    assert_eq!(r.on_complete(), Answer::Pass);
    ready(&mut r);
    let b = r.client.names.get(&b"b"[..]).map(|s| s.tail.clone());
    assert_eq!(b.as_deref(), Some(&b"select 7\0\0\0"[..]));
    assert_eq!(r.server.foreign.len(), 1);
}

#[test]
fn a_large_bind_is_renamed_once_its_names_are_read() {
    let mut r = fresh();
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    assert!(r.client(frontend::BIND, None));
    let values = vec![7u8; 100_000];
    let mut body = bind(b"s1");
    body.extend_from_slice(&values);
    let mut whole = BytesMut::new();
    put_message(&mut whole, frontend::BIND, |b| b.put_slice(&body));
    let mut buf = BytesMut::from(&whole[..7]);
    assert_eq!(r.rewrite(&mut buf), Rewritten::NeedMore);
    buf.extend_from_slice(&whole[7..20_000]);
    assert_eq!(r.rewrite(&mut buf), Rewritten::Done);
    assert!(r.take_passing() && !r.take_passing());
    buf.extend_from_slice(&whole[20_000..]);
    let mut expected = bind(b"pgporter_1");
    expected.extend_from_slice(&values);
    assert_eq!(messages(&buf), vec![(frontend::BIND, expected)]);

    // Another statement's large Bind passes as it is.
    assert!(r.client(frontend::BIND, None));
    let mut other = BytesMut::new();
    put_message(&mut other, frontend::BIND, |b| {
        b.put_slice(&bind(b"other"));
        b.put_slice(&values);
    });
    let before = other.clone();
    assert_eq!(r.rewrite(&mut other), Rewritten::Done);
    assert_eq!(other, before);
    assert!(r.take_passing());
}

#[test]
fn a_large_named_parse_pins_the_client() {
    let mut r = fresh();
    assert!(!r.client(frontend::PARSE, None));
    r.on_chunk(b"\0select", false);
    r.on_chunk(b" 1\0\0\0", true);
    assert!(r.releasable(), "unnamed");
    assert!(!r.client(frontend::PARSE, None));
    r.on_chunk(b"big\0select", true);
    assert!(!r.releasable());
    assert_eq!(r.pending.len(), 2);
}

#[test]
fn a_second_parse_of_a_name_is_refused_by_the_server() {
    let mut r = fresh();
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"s1", b"select 2\0\0\0")),
        vec![(frontend::PARSE, parse(b"pgporter_1", b"select 2\0\0\0"))],
        "PostgreSQL answers 42P05"
    );
    assert_eq!(r.client.names.get(&b"s1"[..]).map(|s| s.id), Some(1));
}

#[test]
fn a_close_and_reparse_both_skipped_leave_the_old_statement() {
    let mut r = with_s1();
    let old = r.client.names.get(&b"s1"[..]).map(|s| s.id);
    // Execute fails; Close s1 and Parse s1 (another text) are skipped.
    send(&mut r, frontend::EXECUTE, b"\0\0\0\0\0");
    send(&mut r, frontend::CLOSE, &close(b"s1"));
    send(&mut r, frontend::PARSE, &parse(b"s1", b"select 2\0\0\0"));
    send(&mut r, frontend::SYNC, b"");
    r.server(backend::ERROR_RESPONSE, None);
    ready(&mut r);
    assert_eq!(r.client.names.get(&b"s1"[..]).map(|s| s.id), old);
    assert_eq!(r.server.len(), 1, "the new text never reached the server");
}

#[test]
fn a_message_held_for_another_reason_is_not_rewritten() {
    // A Terminate, or a statement the spoof check refused: held by the tracker or the check.
    let mut r = fresh();
    let mut buf = BytesMut::from(&[frontend::TERMINATE, 0, 0, 0, 4][..]);
    assert_eq!(r.rewrite(&mut buf), Rewritten::Stop);
    assert!(!r.take_passing());
}

#[test]
fn a_query_the_server_skipped_is_not_counted() {
    let mut r = with_s1();
    // Bind, Execute fails; then a Query and a Parse, skipped up to the Sync.
    send(&mut r, frontend::BIND, &bind(b"s1"));
    send(&mut r, frontend::EXECUTE, b"\0\0\0\0\0");
    r.server(backend::ERROR_RESPONSE, None);
    send(&mut r, frontend::QUERY, b"select 1\0");
    send(&mut r, frontend::PARSE, &parse(b"s2", SELECT_1));
    send(&mut r, frontend::SYNC, b"");
    ready(&mut r);
    assert!(!r.client.names.contains_key(&b"s2"[..]), "skipped");
    // The next answer is the next Parse's.
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"s3", SELECT_1)),
        vec![(frontend::CLOSE, close(NOTHING))]
    );
    assert_eq!(r.on_complete(), Answer::ToParseComplete);
}

#[test]
fn in_a_failed_transaction_block_a_parse_is_refused_as_postgresql_would() {
    let mut r = fresh();
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    send(&mut r, frontend::SYNC, b"");
    r.on_complete();
    r.server(backend::READY_FOR_QUERY, Some(b"E"));
    // The connection has the text: still sent as a Parse, which fails with 25P02.
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"s2", SELECT_1)),
        vec![(frontend::PARSE, parse(b"pgporter_1", SELECT_1))]
    );
    send(&mut r, frontend::SYNC, b"");
    r.server(backend::ERROR_RESPONSE, None);
    r.server(backend::READY_FOR_QUERY, Some(b"E"));
    assert!(!r.client.names.contains_key(&b"s2"[..]));
    assert_eq!(r.server.len(), 1, "the connection still has it");
}

#[test]
fn a_changed_result_type_makes_the_next_parse_fresh() {
    let mut r = fresh();
    send(
        &mut r,
        frontend::PARSE,
        &parse(b"s1", b"select * from t\0\0\0"),
    );
    send(&mut r, frontend::SYNC, b"");
    r.on_complete();
    ready(&mut r);
    send(&mut r, frontend::BIND, &bind(b"s1"));
    send(&mut r, frontend::SYNC, b"");
    error(&mut r, "0A000", "cached plan must not change result type");
    ready(&mut r);
    // The client prepares again (asyncpg does): the old statement is closed first.
    send(&mut r, frontend::CLOSE, &close(b"s1"));
    assert_eq!(
        send(
            &mut r,
            frontend::PARSE,
            &parse(b"s1", b"select * from t\0\0\0")
        ),
        vec![
            (frontend::CLOSE, close(b"pgporter_1")),
            (
                frontend::PARSE,
                parse(b"pgporter_1", b"select * from t\0\0\0")
            )
        ]
    );
}

#[test]
fn a_lost_count_matters_once_an_answer_must_be_dropped_or_changed() {
    let mut r = with_s1();
    send(&mut r, frontend::PARSE, &parse(b"", SELECT_1));
    r.lose();
    assert!(!r.unsure(), "only the unnamed statement's answer is queued");
    // A new name goes as it is and keeps the client here; a known one is renamed.
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"s2", SELECT_1)),
        vec![(frontend::PARSE, parse(b"s2", SELECT_1))]
    );
    assert!(!r.releasable());
    assert_eq!(
        send(&mut r, frontend::BIND, &bind(b"s1")),
        vec![(frontend::BIND, bind(b"pgporter_1"))]
    );
    assert!(!r.unsure());
    // A statement the connection lacks would need an answer dropped.
    r.server.clear();
    send(&mut r, frontend::BIND, &bind(b"s1"));
    assert!(r.unsure());
}

#[test]
fn another_clients_statement_cannot_be_reached_by_its_name() {
    let mut r = with_s1();
    assert!(is_ours(b"pgporter_12") && !is_ours(b"pgporter_") && !is_ours(b"pgporter_x"));
    let mut b = renaming(
        std::mem::take(&mut r.server),
        &Arc::new(Registry::default()),
        10,
    );
    assert_eq!(
        send(&mut b, frontend::BIND, &bind(b"pgporter_1")),
        vec![(frontend::BIND, bind(NOTHING))],
        "answered as an unknown name (26000)"
    );
    assert_eq!(
        send(&mut b, frontend::DESCRIBE, b"Spgporter_1\0"),
        vec![(frontend::DESCRIBE, b"Spgporter_0\0".to_vec())]
    );
    assert_eq!(
        send(&mut b, frontend::CLOSE, &close(b"pgporter_1")),
        vec![(frontend::CLOSE, close(NOTHING))]
    );
    assert_eq!(b.on_complete(), Answer::Pass);
    assert_eq!(b.server.len(), 1, "still there for its client");
}

#[test]
fn a_statement_dropped_behind_pgporters_back_is_parsed_again() {
    // A client's SQL `DEALLOCATE pgporter_1`: the next Bind of it fails with 26000.
    let mut r = with_s1();
    error(
        &mut r,
        "26000",
        "prepared statement \"pgporter_1\" does not exist",
    );
    assert!(r.server.is_empty());
    assert_eq!(
        send(&mut r, frontend::BIND, &bind(b"s1")),
        vec![
            (frontend::PARSE, parse(b"pgporter_1", SELECT_1)),
            (frontend::BIND, bind(b"pgporter_1"))
        ]
    );
}

#[test]
fn once_lost_a_parse_of_a_known_name_goes_under_that_name() {
    let mut r = with_s1();
    r.lose();
    assert_eq!(
        send(&mut r, frontend::PARSE, &parse(b"s1", b"select 6\0\0\0")),
        vec![(frontend::PARSE, parse(b"s1", b"select 6\0\0\0"))]
    );
    assert_eq!(
        send(&mut r, frontend::BIND, &bind(b"s1")),
        vec![(frontend::BIND, bind(b"s1"))],
        "the client's own statement now"
    );
}

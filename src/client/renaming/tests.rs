use super::*;

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
fn send(r: &mut Renaming, tag: u8, body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut buf = BytesMut::new();
    put_message(&mut buf, tag, |b| b.put_slice(body));
    if r.on_client(tag, Some(body), true) {
        assert_eq!(r.rewrite(&mut buf), Rewritten::Done);
    }
    let out = messages(&buf);
    for _ in &out {
        assert!(r.take_passing() || out.len() == 1);
    }
    out
}

fn messages(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(len) = message_len(buf) {
        out.push((buf[0], buf[5..len].to_vec()));
        buf = &buf[len..];
    }
    out
}

fn renaming(server: ServerStatements, registry: &Arc<Registry>, keep: u32) -> Renaming {
    Renaming::new(ClientStatements::new(keep), server, Arc::clone(registry))
}

fn ready(r: &mut Renaming) {
    r.on_server(backend::READY_FOR_QUERY, Some(b"I"), 0);
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
    let mut a2 = Renaming::new(
        std::mem::replace(&mut a.client, ClientStatements::new(10)),
        ServerStatements::default(),
        Arc::clone(&registry),
    );
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
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    assert!(!r.on_client(frontend::PARSE, Some(&parse(b"", SELECT_1)), true));
    assert!(!r.on_client(frontend::BIND, Some(&bind(b"")), true));
    assert!(!r.on_client(frontend::BIND, Some(&bind(b"sql_prepared")), true));
    assert!(!r.on_client(frontend::DESCRIBE, Some(b"Pportal\0"), true));
    assert!(!r.on_client(frontend::CLOSE, Some(&close(b"sql_prepared")), true));
    assert!(!r.on_client(frontend::PARSE, Some(b"no nul"), true));
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
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    send(&mut r, frontend::SYNC, b"");
    r.on_complete();
    ready(&mut r);
    // Execute fails, then Close s1 and Parse s2 are skipped.
    send(&mut r, frontend::EXECUTE, b"\0\0\0\0\0");
    assert_eq!(
        send(&mut r, frontend::CLOSE, &close(b"s1")),
        vec![(frontend::CLOSE, close(NOTHING))]
    );
    send(&mut r, frontend::PARSE, &parse(b"s2", b"select 2\0\0\0"));
    send(&mut r, frontend::SYNC, b"");
    assert!(!r.has_names() || r.client.names.len() == 1);
    r.on_server(backend::ERROR_RESPONSE, None, 0);
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
    assert!(!r.has_names());
    assert_eq!(r.server.len(), 1, "the statement stays for other clients");
}

#[test]
fn discard_all_forgets_every_statement() {
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    r.on_server(backend::COMMAND_COMPLETE, Some(b"DISCARD ALL\0"), 0);
    assert!(!r.has_names() && r.server.is_empty());
}

#[test]
fn a_large_bind_is_renamed_once_its_names_are_read() {
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    assert!(r.on_client(frontend::BIND, None, true));
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
    assert!(r.on_client(frontend::BIND, None, true));
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
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    assert!(!r.on_client(frontend::PARSE, None, true));
    r.on_chunk(b"\0select", false);
    r.on_chunk(b" 1\0\0\0", true);
    assert!(r.releasable(), "unnamed");
    assert!(!r.on_client(frontend::PARSE, None, true));
    r.on_chunk(b"big\0select", true);
    assert!(!r.releasable());
    assert_eq!(r.pending.len(), 2);
}

#[test]
fn a_second_parse_of_a_name_is_refused_by_the_server() {
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
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
    let registry = Arc::new(Registry::default());
    let mut r = renaming(ServerStatements::default(), &registry, 10);
    send(&mut r, frontend::PARSE, &parse(b"s1", SELECT_1));
    send(&mut r, frontend::SYNC, b"");
    r.on_complete();
    ready(&mut r);
    let old = r.client.names.get(&b"s1"[..]).map(|s| s.id);
    // Execute fails; Close s1 and Parse s1 (another text) are skipped.
    send(&mut r, frontend::EXECUTE, b"\0\0\0\0\0");
    send(&mut r, frontend::CLOSE, &close(b"s1"));
    send(&mut r, frontend::PARSE, &parse(b"s1", b"select 2\0\0\0"));
    send(&mut r, frontend::SYNC, b"");
    r.on_server(backend::ERROR_RESPONSE, None, 0);
    ready(&mut r);
    assert_eq!(r.client.names.get(&b"s1"[..]).map(|s| s.id), old);
    assert_eq!(r.server.len(), 1, "the new text never reached the server");
}

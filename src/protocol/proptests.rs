//! Property tests for every parser of untrusted bytes in `protocol/` (run in CI with the unit
//! tests; the cargo-fuzz targets under `fuzz/` drive the same entry points for longer).
//!
//! Properties: no panic on any input; no allocation beyond the declared bounds; round trip
//! where a format is both encoded and decoded; a stream scanned in arbitrary pieces gives the
//! same message boundaries as the stream scanned whole.

#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::backend::{self, ErrorFields};
use super::frontend::{self, SaslInitialResponse};
use super::scan::{closures, Flow, Scanner};
use super::startup::{self, CancelKey, FirstPacket, StartupParams};
use super::{parse_message, ProtocolError, MAX_CONTROL_MESSAGE};

/// A framed message: tag, length word, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Cut `bytes` at the given points (each taken modulo the length), in order.
fn split_at_points(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| if bytes.is_empty() { 0 } else { p % bytes.len() })
        .collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

/// A C string without NULs.
fn cstr() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

/// Messages with small bodies, some of them ReadyForQuery ('Z'), whose bodies the relay wants.
fn messages() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec(
        (
            prop_oneof![Just(b'Z'), Just(b'D'), Just(b'C'), Just(b'X'), any::<u8>()],
            vec(any::<u8>(), 0..300),
        ),
        0..12,
    )
}

/// What one scan session saw: (tag, body if wanted) per message, the bytes forwarded, and
/// whether it stopped or failed.
#[derive(Debug, PartialEq, Eq)]
struct ScanLog {
    visits: Vec<(u8, Vec<u8>)>,
    forwarded: usize,
    stopped: bool,
    failed: bool,
}

/// Feed `chunks` through a Scanner the way the relay does: append to a buffer, scan what is
/// not yet cleared, forward (drop) the cleared prefix and scan again, keep the rest for the
/// next read.
fn scan_chunks(chunks: &[Vec<u8>], max_body: usize, stop_tag: Option<u8>) -> ScanLog {
    let mut scanner = Scanner::new(max_body);
    let mut buf: Vec<u8> = Vec::new();
    let mut log = ScanLog {
        visits: Vec::new(),
        forwarded: 0,
        stopped: false,
        failed: false,
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let visits = &mut log.visits;
            let result = scanner.scan(
                &buf,
                &mut closures(
                    |t| t == backend::READY_FOR_QUERY,
                    |t, body: &[u8]| {
                        visits.push((t, body.to_vec()));
                        if Some(t) == stop_tag {
                            Flow::StopBefore
                        } else {
                            Flow::Continue
                        }
                    },
                ),
            );
            match result {
                Ok(s) => {
                    assert!(s.forward <= buf.len(), "forwarded more than it was given");
                    buf.drain(..s.forward);
                    log.forwarded += s.forward;
                    if s.stopped {
                        log.stopped = true;
                        return log;
                    }
                    if s.forward == 0 || buf.is_empty() {
                        break;
                    }
                }
                Err(_) => {
                    log.failed = true;
                    return log;
                }
            }
        }
    }
    log
}

/// A header no scanner accepts: a length word below 4, or beyond any limit.
fn bad_header() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop_oneof![i32::MIN..4, 0x4000_0000..=i32::MAX],
    )
        .prop_map(|(tag, len)| {
            let mut v = vec![tag];
            v.extend_from_slice(&len.to_be_bytes());
            v
        })
}

proptest! {
    #[test]
    fn startup_decode_never_panics(body in vec(any::<u8>(), 0..512)) {
        let _ = startup::decode(&body);
    }

    #[test]
    fn startup_decode_never_panics_after_a_known_code(
        code in prop_oneof![
            Just(startup::SSL_REQUEST_CODE),
            Just(startup::GSSENC_REQUEST_CODE),
            Just(startup::CANCEL_REQUEST_CODE),
            Just(startup::PROTOCOL_3_0),
            Just(startup::PROTOCOL_3_0 + 2),
        ],
        rest in vec(any::<u8>(), 0..300),
    ) {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(&rest);
        let _ = startup::decode(&body);
    }

    #[test]
    fn startup_params_round_trip(
        minor in 0u16..4,
        params in vec(("[^\u{0}]{1,16}", cstr()), 0..8),
    ) {
        let mut unique: Vec<(String, String)> = Vec::new();
        for (k, v) in params {
            if !unique.iter().any(|(have, _)| *have == k) {
                unique.push((k, v));
            }
        }
        let mut body = (startup::PROTOCOL_3_0 + i32::from(minor)).to_be_bytes().to_vec();
        for (k, v) in &unique {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let decoded = startup::decode(&body).unwrap();
        prop_assert_eq!(decoded, FirstPacket::Startup(StartupParams { minor, params: unique, not_utf8: vec![] }));
    }

    #[test]
    fn cancel_request_round_trip(pid in any::<i32>(), secret in any::<i32>()) {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(pid, secret, &mut buf);
        // decode() takes the body after the length word.
        let decoded = startup::decode(&buf[4..]).unwrap();
        prop_assert_eq!(decoded, FirstPacket::Cancel(CancelKey { pid, secret }));
    }

    #[test]
    fn parse_message_never_panics_and_respects_max(
        bytes in vec(any::<u8>(), 0..64),
        max in 0usize..1024,
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.capacity();
        match parse_message(&mut buf, max) {
            Ok(Some(msg)) => {
                prop_assert!(msg.body.len() <= max);
                prop_assert_eq!(buf.len(), bytes.len() - 5 - msg.body.len());
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), bytes.len());
                // Waiting for a body reserves at most the declared (bounded) size.
                prop_assert!(buf.capacity() <= (2 * before).max(5 + max) + 64,
                    "capacity {} after waiting, max {}", buf.capacity(), max);
            }
            Err(ProtocolError::BadLength(_) | ProtocolError::TooLong { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn a_huge_declared_length_allocates_nothing(len in 0x10_0000i32.., tag in any::<u8>()) {
        let mut buf = BytesMut::new();
        buf.put_u8(tag);
        buf.put_i32(len);
        prop_assert!(parse_message(&mut buf, MAX_CONTROL_MESSAGE).is_err());
        prop_assert!(buf.capacity() < 1024);
    }

    #[test]
    fn parse_message_round_trips_any_split(msgs in messages(), points in vec(any::<usize>(), 0..8)) {
        let stream: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in split_at_points(&stream, &points) {
            buf.extend_from_slice(&chunk);
            while let Some(msg) = parse_message(&mut buf, 1000).unwrap() {
                got.push((msg.tag, msg.body.to_vec()));
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn scanner_chunked_equals_whole(msgs in messages(), points in vec(any::<usize>(), 0..10)) {
        let stream: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        let whole = scan_chunks(std::slice::from_ref(&stream), 1 << 20, None);
        let chunked = scan_chunks(&split_at_points(&stream, &points), 1 << 20, None);
        prop_assert_eq!(&whole, &chunked);
        // Every message seen once, wanted bodies whole, everything forwarded.
        let expected: Vec<(u8, Vec<u8>)> = msgs
            .iter()
            .map(|(t, b)| (*t, if *t == b'Z' { b.clone() } else { Vec::new() }))
            .collect();
        prop_assert_eq!(whole.visits, expected);
        prop_assert_eq!(whole.forwarded, stream.len());
        prop_assert!(!whole.failed && !whole.stopped);
    }

    #[test]
    fn scanner_stops_at_the_same_byte_however_split(
        msgs in messages(),
        points in vec(any::<usize>(), 0..10),
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        let whole = scan_chunks(std::slice::from_ref(&stream), 1 << 20, Some(frontend::TERMINATE));
        let chunked =
            scan_chunks(&split_at_points(&stream, &points), 1 << 20, Some(frontend::TERMINATE));
        prop_assert_eq!(&whole, &chunked);
        let stop_at = msgs.iter().position(|(t, _)| *t == frontend::TERMINATE);
        if let Some(i) = stop_at {
            let offset: usize = msgs[..i].iter().map(|(_, b)| 5 + b.len()).sum();
            prop_assert!(whole.stopped);
            prop_assert_eq!(whole.forwarded, offset);
        }
    }

    #[test]
    fn scanner_on_garbage_agrees_whole_and_chunked(
        bytes in vec(any::<u8>(), 0..600),
        points in vec(any::<usize>(), 0..10),
        max_body in 0usize..2000,
    ) {
        let whole = scan_chunks(std::slice::from_ref(&bytes), max_body, None);
        let chunked = scan_chunks(&split_at_points(&bytes, &points), max_body, None);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn valid_messages_before_a_bad_header_are_forwarded_however_split(
        msgs in messages(),
        bad in bad_header(),
        points in vec(any::<usize>(), 0..10),
    ) {
        let mut stream: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).collect();
        let valid = stream.len();
        stream.extend_from_slice(&bad);
        let whole = scan_chunks(std::slice::from_ref(&stream), 1 << 20, None);
        let chunked = scan_chunks(&split_at_points(&stream, &points), 1 << 20, None);
        prop_assert_eq!(&whole, &chunked);
        prop_assert!(whole.failed);
        prop_assert_eq!(whole.forwarded, valid);
    }

    #[test]
    fn sasl_initial_response_never_panics(body in vec(any::<u8>(), 0..200)) {
        if let Some(r) = SaslInitialResponse::parse(&body) {
            prop_assert!(!r.mechanism.contains(&0));
            prop_assert!(r.data.len() < body.len());
        }
        let _ = frontend::password_body(&body);
    }

    #[test]
    fn sasl_initial_response_round_trip(
        mechanism in "[A-Z0-9-]{1,20}",
        data in proptest::option::of(vec(any::<u8>(), 0..200)),
    ) {
        let mut buf = BytesMut::new();
        let payload = data.clone().unwrap_or_default();
        postgres_protocol::message::frontend::sasl_initial_response(&mechanism, &payload, &mut buf)
            .unwrap();
        let msg = parse_message(&mut buf, 1000).unwrap().unwrap();
        prop_assert_eq!(msg.tag, frontend::PASSWORD);
        let parsed = SaslInitialResponse::parse(&msg.body).unwrap();
        prop_assert_eq!(parsed.mechanism, mechanism.as_bytes());
        prop_assert_eq!(parsed.data, &payload[..]);
        // A -1 length is "no initial response".
        let mut none = mechanism.clone().into_bytes();
        none.push(0);
        none.extend_from_slice(&(-1i32).to_be_bytes());
        prop_assert_eq!(SaslInitialResponse::parse(&none).unwrap().data, &[] as &[u8]);
    }

    #[test]
    fn password_body_round_trip(password in "[^\u{0}]{0,40}") {
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::password_message(password.as_bytes(), &mut buf)
            .unwrap();
        let msg = parse_message(&mut buf, 1000).unwrap().unwrap();
        prop_assert_eq!(frontend::password_body(&msg.body), Some(password.as_bytes()));
    }

    #[test]
    fn backend_decoders_never_panic(body in vec(any::<u8>(), 0..200)) {
        if let Some(f) = ErrorFields::parse(&body) {
            let _ = (f.code(), f.message(), f.severity(), f.to_string());
        }
        let _ = backend::parse_parameter_status(&body);
        let _ = backend::parse_backend_key_data(&body);
        let _ = backend::parse_authentication(&body);
    }

    #[test]
    fn error_fields_round_trip(fields in vec((1u8..=255, cstr()), 0..8)) {
        let fields = ErrorFields { fields };
        let mut buf = BytesMut::new();
        fields.encode(&mut buf);
        let msg = parse_message(&mut buf, 10_000).unwrap().unwrap();
        prop_assert_eq!(msg.tag, backend::ERROR_RESPONSE);
        prop_assert_eq!(ErrorFields::parse(&msg.body), Some(fields));
    }

    #[test]
    fn error_response_round_trip(
        code in "[0-9A-Z]{5}",
        text in cstr(),
        hint in proptest::option::of(cstr()),
    ) {
        let mut buf = BytesMut::new();
        backend::error_response(&mut buf, backend::Severity::Fatal, &code, &text, hint.as_deref());
        let msg = parse_message(&mut buf, 10_000).unwrap().unwrap();
        let f = ErrorFields::parse(&msg.body).unwrap();
        prop_assert_eq!(f.code(), code.as_str());
        prop_assert_eq!(f.message(), text.as_str());
        prop_assert_eq!(f.severity(), "FATAL");
    }

    #[test]
    fn parameter_status_and_key_data_round_trip(
        name in cstr(),
        value in cstr(),
        pid in any::<i32>(),
        secret in any::<i32>(),
    ) {
        let mut buf = BytesMut::new();
        backend::parameter_status(&mut buf, &name, &value);
        backend::backend_key_data(&mut buf, pid, secret);
        let ps = parse_message(&mut buf, 1000).unwrap().unwrap();
        prop_assert_eq!(backend::parse_parameter_status(&ps.body), Some((name, value)));
        let kd = parse_message(&mut buf, 1000).unwrap().unwrap();
        prop_assert_eq!(backend::parse_backend_key_data(&kd.body), Some((pid, secret)));
    }
}

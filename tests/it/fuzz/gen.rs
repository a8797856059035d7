//! The fuzz cases: what a hostile (or badly broken) client sends after a proper login, drawn
//! from a seeded RNG so that a seed replays its case exactly.

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng};

/// One thing the fuzzed client does.
#[derive(Debug, Clone)]
pub(super) enum Step {
    /// Write these bytes on the session's connection (`label` says what they are).
    Bytes { label: String, bytes: Vec<u8> },
    /// A CancelRequest with a random key, on a connection of its own.
    CancelRandom { pid: i32, secret: i32 },
    /// Disconnect here (the last step; what was sent may end mid-message).
    Disconnect,
}

/// How a case ends when it did not disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Sync and a marker query follow; pgporter must answer the marker or close.
    Marker,
    /// The stream ends inside a frame whose body would take too much padding: disconnect.
    Unfinished,
    /// The client disconnects (a step of the case): the connection must close; what the
    /// server answered to what came before is not compared (pgporter, as PgBouncer, drops it
    /// with the client).
    Left,
    /// A Terminate comes before the end: the connection must close; pgporter's answers
    /// need only be the start of PostgreSQL's (it closes the client at the Terminate, as
    /// PgBouncer does, without waiting for the answers still due).
    Terminated,
    /// A frame that no server accepts (an unknown type, a length under 4 or over
    /// PostgreSQL's limit for its type: 1 GiB, 10,000 bytes for the short ones): the
    /// connection must close (an ErrorResponse first is allowed).
    Dead,
    /// The only step is one byte of an unknown message type, and nothing follows it:
    /// PostgreSQL refuses it at once (FATAL 08P01 invalid frontend message type), without
    /// waiting for a length word.
    Lone,
}

/// How the case's client reaches pgporter (PostgreSQL is always reached over plain TCP: the
/// answers do not depend on the transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// Plain TCP, the garbage sent while the session is active (after its setup queries).
    Plain,
    /// Plain TCP, quiet after login until pgporter parked it in the lobby; the garbage is
    /// the first thing it sends (no setup queries; an own cancel finds nothing running).
    Parked,
    /// TLS (SSLRequest, then the handshake).
    Tls,
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) seed: u64,
    pub(super) steps: Vec<Step>,
    pub(super) ending: Ending,
    /// Cancel a running query with the session's own key before the garbage (parked: a
    /// CancelRequest with its key while it is parked and nothing runs).
    pub(super) cancel_own: bool,
    /// Leave with a Terminate (else: drop the socket) once the marker is answered.
    pub(super) terminate: bool,
    pub(super) transport: Transport,
    /// The first step's bytes come in two writes, a moment apart (parked: the lobby hands
    /// the client back on a part of a message; TLS: in two records).
    pub(super) split_first: Option<usize>,
    /// TLS: a disconnect is an abrupt TCP close in the middle of a TLS record (else a
    /// close_notify and FIN).
    pub(super) tls_abrupt: bool,
}

impl Case {
    /// The case as a replayable list (for a failure message).
    pub(super) fn describe(&self) -> String {
        let mut s = format!(
            "seed {:#x}: cancel_own={} terminate={} ending={:?} transport={:?} \
             split_first={:?} tls_abrupt={}\n",
            self.seed,
            self.cancel_own,
            self.terminate,
            self.ending,
            self.transport,
            self.split_first,
            self.tls_abrupt
        );
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Bytes { label, bytes } => {
                    let shown: Vec<u8> = bytes.iter().copied().take(96).collect();
                    s.push_str(&format!(
                        "  {i:2} {label} ({} bytes) {}{}\n",
                        bytes.len(),
                        hex(&shown),
                        if bytes.len() > 96 { " ..." } else { "" }
                    ));
                }
                other => s.push_str(&format!("  {i:2} {other:?}\n")),
            }
        }
        s
    }

    /// Every byte the case writes on the session's connection, in order.
    pub(super) fn stream(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for step in &self.steps {
            if let Step::Bytes { bytes, .. } = step {
                out.extend_from_slice(bytes);
            }
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message: tag, length (body + 4), body.
pub(super) fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(
        &i32::try_from(body.len() + 4)
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Frontend message types PostgreSQL 15 reads after login.
const FRONTEND_TAGS: &[u8] = b"QPBDESHCXFdcf";

/// PostgreSQL's largest message (PQ_LARGE_MESSAGE_LIMIT, 1 GiB - 1).
const PG_LARGE: i64 = 0x3fff_ffff;

/// PostgreSQL's largest body of the message types below (PQ_SMALL_MESSAGE_LIMIT): a longer
/// one ends the session at its header.
const PG_SMALL: i64 = 10_000;
const PG_SMALL_TAGS: &[u8] = b"XCDEHScf";

/// The most padding a case writes to complete a frame whose length it declared too long.
const MAX_PAD: usize = 64 * 1024;

const SQL: &[&str] = &[
    "select 1",
    "select $1::int4",
    "select $1::text, $2::int8",
    "select 1/0",
    "select pg_sleep(0.01)",
    "begin",
    "commit",
    "rollback",
    "begin; select 1",
    "select 1; select 2",
    "copy fuzz_t from stdin",
    "copy fuzz_r to stdout",
    "copy (select generate_series(1, 3)) to stdout",
    "insert into fuzz_t values ('x')",
    "set statement_timeout = 777",
    "set local work_mem = '2MB'",
    "prepare fzq as select 2",
    "deallocate all",
    "discard all",
    "listen fuzz_other",
    "notify fuzz_chan, 'x'",
    "savepoint s1",
    "no such syntax",
    "",
    ";",
];

const NAMES: &[&str] = &["", "", "s1", "s2", "fzp", "pgporter_1", "p1"];

fn name(rng: &mut StdRng) -> String {
    if rng.gen_ratio(1, 8) {
        format!("n{}", rng.gen_range(0..1000))
    } else {
        (*NAMES.choose(rng).unwrap_or(&"")).to_string()
    }
}

fn sql(rng: &mut StdRng) -> String {
    (*SQL.choose(rng).unwrap_or(&"select 1")).to_string()
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen()).collect()
}

fn parse(rng: &mut StdRng) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, &name(rng));
    cstr(&mut body, &sql(rng));
    let n: i16 = rng.gen_range(0..4);
    body.extend_from_slice(&n.to_be_bytes());
    // Sometimes fewer type OIDs than declared (a malformed message).
    let given = if rng.gen_ratio(1, 5) {
        rng.gen_range(0..=n)
    } else {
        n
    };
    for _ in 0..given {
        let oid: u32 = *[0u32, 23, 25, 20, 16, rng.gen()].choose(rng).unwrap_or(&0);
        body.extend_from_slice(&oid.to_be_bytes());
    }
    frame(b'P', &body)
}

fn bind(rng: &mut StdRng) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, &name(rng));
    cstr(&mut body, &name(rng));
    let nfmt: i16 = *[0, 1, 2, 3, -1].choose(rng).unwrap_or(&0);
    body.extend_from_slice(&nfmt.to_be_bytes());
    for _ in 0..nfmt.max(0) {
        let f: i16 = *[0, 1, 2, -1].choose(rng).unwrap_or(&0);
        body.extend_from_slice(&f.to_be_bytes());
    }
    let nparams: i16 = *[0, 0, 1, 2, 3, -1].choose(rng).unwrap_or(&0);
    body.extend_from_slice(&nparams.to_be_bytes());
    let given = if rng.gen_ratio(1, 5) {
        rng.gen_range(0..3)
    } else {
        nparams.max(0)
    };
    for _ in 0..given {
        match rng.gen_range(0..4) {
            0 => body.extend_from_slice(&(-1i32).to_be_bytes()),
            1 => {
                let v = rng.gen_range(0..100_000).to_string();
                body.extend_from_slice(&i32::try_from(v.len()).unwrap_or(0).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
            2 => {
                let v = random_bytes(rng, 8);
                body.extend_from_slice(&i32::try_from(v.len()).unwrap_or(0).to_be_bytes());
                body.extend_from_slice(&v);
            }
            _ => body.extend_from_slice(&rng.gen_range(-5i32..100_000).to_be_bytes()),
        }
    }
    let nres: i16 = *[0, 1, 2, -1].choose(rng).unwrap_or(&0);
    body.extend_from_slice(&nres.to_be_bytes());
    for _ in 0..nres.max(0) {
        let f: i16 = *[0, 1, 7].choose(rng).unwrap_or(&0);
        body.extend_from_slice(&f.to_be_bytes());
    }
    frame(b'B', &body)
}

fn kind(rng: &mut StdRng) -> u8 {
    *[b'S', b'P', b'S', b'P', b'X', 0]
        .choose(rng)
        .unwrap_or(&b'S')
}

/// One valid-looking (possibly semantically wrong) message, with its label.
fn message(rng: &mut StdRng) -> (String, Vec<u8>) {
    match rng.gen_range(0..14) {
        0 | 1 => {
            let q = sql(rng);
            let mut body = Vec::new();
            cstr(&mut body, &q);
            (format!("Query {q:?}"), frame(b'Q', &body))
        }
        2 => ("Parse".into(), parse(rng)),
        3 => ("Bind".into(), bind(rng)),
        4 => {
            let mut body = vec![kind(rng)];
            cstr(&mut body, &name(rng));
            ("Describe".into(), frame(b'D', &body))
        }
        5 => {
            let mut body = Vec::new();
            cstr(&mut body, &name(rng));
            body.extend_from_slice(&rng.gen_range(-1i32..3).to_be_bytes());
            ("Execute".into(), frame(b'E', &body))
        }
        6 => ("Sync".into(), frame(b'S', &[])),
        7 => ("Flush".into(), frame(b'H', &[])),
        8 => {
            let mut body = vec![kind(rng)];
            cstr(&mut body, &name(rng));
            ("Close".into(), frame(b'C', &body))
        }
        9 => {
            let data = if rng.gen_bool(0.5) {
                b"row\n".to_vec()
            } else {
                random_bytes(rng, 40)
            };
            ("CopyData".into(), frame(b'd', &data))
        }
        10 => ("CopyDone".into(), frame(b'c', &[])),
        11 => {
            let mut body = Vec::new();
            cstr(&mut body, "fuzz says no");
            ("CopyFail".into(), frame(b'f', &body))
        }
        12 => {
            // FunctionCall of a random OID with no arguments.
            let mut body = rng.gen::<u32>().to_be_bytes().to_vec();
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            ("FunctionCall".into(), frame(b'F', &body))
        }
        _ => {
            let mut body = Vec::new();
            cstr(&mut body, "select 'pipelined'");
            ("Query pipelined".into(), frame(b'Q', &body))
        }
    }
}

/// The case drawn from `seed`. A session-mode client holds its server connection from its
/// first request on, and the relay waits for whole headers, so a lone type byte is tried in
/// session mode only as a parked client's first byte.
pub(super) fn case(seed: u64, session: bool) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let n = rng.gen_range(1..=16);
    // How hostile the case is: the chance in 40 that a step is one of the kinds (20-27) that
    // usually end the session, so that some cases get far and leave their connection.
    let hostile = *[0, 1, 4, 12].choose(&mut rng).unwrap_or(&4);
    let mut disconnect = false;
    for _ in 0..n {
        let kind = if rng.gen_range(0..40) < hostile {
            rng.gen_range(20..28)
        } else {
            *[0, 28, 29]
                .choose_weighted(&mut rng, |k| if *k == 0 { 18 } else { 1 })
                .unwrap_or(&0)
        };
        match kind {
            0..=19 => {
                let (label, bytes) = message(&mut rng);
                steps.push(Step::Bytes { label, bytes });
            }
            20 => {
                // A random type byte with a well-formed length.
                let tag: u8 = rng.gen();
                let body = random_bytes(&mut rng, 12);
                steps.push(Step::Bytes {
                    label: format!("type {tag:#04x}"),
                    bytes: frame(tag, &body),
                });
            }
            21 | 22 => {
                // A known type with a wrong length word.
                let (label, mut bytes) = message(&mut rng);
                let body = i64::try_from(bytes.len()).unwrap_or(0) - 1;
                let len: i64 = match rng.gen_range(0..7) {
                    0 => rng.gen_range(0..4),
                    1 => -rng.gen_range(1..100_000),
                    2 => i64::from(i32::MIN),
                    3 => rng.gen_range(PG_LARGE + 1..=i64::from(i32::MAX)),
                    4 => (body + 4 - rng.gen_range(1..4)).max(0),
                    5 => body + 4 + rng.gen_range(1..64),
                    _ => body + 4 + rng.gen_range(64..20_000),
                };
                let word = i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes();
                bytes[1..5].copy_from_slice(&word);
                steps.push(Step::Bytes {
                    label: format!("{label} with length {len}"),
                    bytes,
                });
            }
            23 => {
                // A frame cut short, then the client goes.
                let (label, bytes) = message(&mut rng);
                let cut = rng.gen_range(1..bytes.len().max(2));
                steps.push(Step::Bytes {
                    label: format!("{label} cut at {cut}"),
                    bytes: bytes[..cut.min(bytes.len())].to_vec(),
                });
                disconnect = true;
                break;
            }
            24 => steps.push(Step::CancelRandom {
                pid: rng.gen(),
                secret: rng.gen(),
            }),
            25 => {
                let bytes = if rng.gen_bool(0.5) {
                    vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
                } else {
                    super::super::support::raw::startup_packet(&[(b"user", b"x")])
                };
                steps.push(Step::Bytes {
                    label: "SSLRequest/startup after login".into(),
                    bytes,
                });
            }
            26 => {
                steps.push(Step::Bytes {
                    label: "Terminate".into(),
                    bytes: frame(b'X', &[]),
                });
                break;
            }
            27 => {
                disconnect = true;
                break;
            }
            _ => {
                // A copy started and fed at random.
                let q = *[
                    "copy fuzz_t from stdin",
                    "copy fuzz_r to stdout",
                    "copy (select 1) to stdout",
                ]
                .choose(&mut rng)
                .unwrap_or(&"copy fuzz_t from stdin");
                let mut body = Vec::new();
                cstr(&mut body, q);
                let mut bytes = frame(b'Q', &body);
                for _ in 0..rng.gen_range(0..4) {
                    let m = match rng.gen_range(0..4) {
                        0 | 1 => frame(b'd', &random_bytes(&mut rng, 30)),
                        2 => frame(b'c', &[]),
                        _ => frame(b'f', b"gave up\0"),
                    };
                    bytes.extend_from_slice(&m);
                }
                steps.push(Step::Bytes {
                    label: format!("COPY {q:?} and copy messages"),
                    bytes,
                });
            }
        }
    }
    let mut case = Case {
        seed,
        steps,
        ending: Ending::Marker,
        cancel_own: rng.gen_ratio(1, 4),
        terminate: rng.gen_bool(0.5),
        transport: Transport::Plain,
        split_first: None,
        tls_abrupt: false,
    };
    // Drawn after the steps, so that a seed's steps are those it had before transports.
    case.transport = match rng.gen_range(0..10) {
        0 | 1 => Transport::Parked,
        2 | 3 => Transport::Tls,
        _ => Transport::Plain,
    };
    case.tls_abrupt = case.transport == Transport::Tls && rng.gen_bool(0.5);
    if case.transport == Transport::Parked {
        match rng.gen_range(0..8) {
            // Gone while parked, without a word or after half a header.
            0 => {
                case.steps = match rng.gen_range(0..3) {
                    0 => Vec::new(),
                    n => vec![Step::Bytes {
                        label: "half a header".into(),
                        bytes: frame(b'Q', b"select 1\0")[..n * 2].to_vec(),
                    }],
                };
                disconnect = true;
            }
            1 | 2 => case.split_first = split_point(&mut rng, &case.steps),
            _ => {}
        }
    } else if rng.gen_ratio(1, 6) {
        // Active clients too (over TLS: the first message in two records).
        case.split_first = split_point(&mut rng, &case.steps);
    }
    if (case.transport == Transport::Parked || !session) && rng.gen_ratio(1, 30) {
        let tag = loop {
            let t: u8 = rng.gen();
            if !FRONTEND_TAGS.contains(&t) {
                break t;
            }
        };
        case.steps = vec![Step::Bytes {
            label: format!("a lone type byte {tag:#04x}"),
            bytes: vec![tag],
        }];
        case.ending = Ending::Lone;
        return case;
    }
    if disconnect {
        case.steps.push(Step::Disconnect);
        case.ending = Ending::Left;
        return case;
    }
    case.ending = complete(&mut case);
    if case.ending == Ending::Unfinished {
        case.steps.push(Step::Disconnect);
    }
    case
}

/// Where to split the first step's bytes in two writes.
fn split_point(rng: &mut StdRng, steps: &[Step]) -> Option<usize> {
    let first = steps.iter().find_map(|s| match s {
        Step::Bytes { bytes, .. } => Some(bytes.len()),
        _ => None,
    })?;
    (first > 1).then(|| rng.gen_range(1..first))
}

/// Walk the case's frames as PostgreSQL reads them and pad the last one when its length
/// promises more than was sent (up to [`MAX_PAD`]), so that a marker behind it is read.
fn complete(case: &mut Case) -> Ending {
    let stream = case.stream();
    let mut at = 0usize;
    while at < stream.len() {
        let tag = stream[at];
        if !FRONTEND_TAGS.contains(&tag) {
            return Ending::Dead;
        }
        let Some(word) = stream.get(at + 1..at + 5) else {
            // A header cut short: the server waits for the rest of it.
            return Ending::Unfinished;
        };
        let len = i64::from(i32::from_be_bytes([word[0], word[1], word[2], word[3]]));
        if !(4..=PG_LARGE).contains(&len) {
            return Ending::Dead;
        }
        // PostgreSQL closes at the header; pgporter may wait for the body first (it reads
        // some bodies whole), so the body is sent (padded) all the same.
        let over_pg_limit = PG_SMALL_TAGS.contains(&tag) && len > PG_SMALL + 4;
        let end = at + 1 + usize::try_from(len).unwrap_or(0);
        if tag == b'X' && end <= stream.len() && !over_pg_limit {
            return Ending::Terminated;
        }
        if end > stream.len() {
            let pad = end - stream.len();
            if pad > MAX_PAD {
                return Ending::Unfinished;
            }
            case.steps.push(Step::Bytes {
                label: "padding".into(),
                bytes: vec![0; pad],
            });
            return if over_pg_limit {
                Ending::Dead
            } else {
                Ending::Marker
            };
        }
        if over_pg_limit {
            return Ending::Dead;
        }
        at = end;
    }
    Ending::Marker
}

//! Fuzz cases on the admin console: random words, SHOW and SET with random arguments, bytes
//! that are not UTF-8, extended-protocol and unknown messages, broken lengths. Every request
//! gets its answer (an ErrorResponse allowed) and ReadyForQuery, or the connection closes;
//! no command the words can form changes what the pool serves.

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::checks::pool_at_baseline;
use crate::support::raw::RawClient;

use super::gen::frame;
use super::{fixture, panics, seeds, watch_panics, BOUND};

const SHOWN: &[&str] = &[
    "pools",
    "clients",
    "servers",
    "stats",
    "databases",
    "users",
    "config",
    "lists",
    "mem",
    "fds",
    "dns_hosts",
    "dns_zones",
    "sockets",
    "active_sockets",
    "totals",
    "stats_totals",
    "stats_averages",
    "version",
    "state",
    "help",
    "hosts",
    "identities",
    "peers",
    "fuzzword",
    "",
    "pools pools",
    "pools;",
    "\"pools\"",
    "'pools'",
    "POOLS",
    "pools -- x",
];

const WORDS: &[&str] = &[
    "show",
    "set",
    "=",
    "'x'",
    "\"q\"",
    ";",
    "''",
    "-1",
    "99999999999999999999999",
    "1e9",
    "on",
    "off",
    "to",
    "fuzzword",
    "log_connections",
    "verbose",
    "\\",
    "(",
    "'unterminated",
    "select",
    "1",
    "",
    "  ",
    "\t",
    "\u{e9}t\u{e9}",
];

const SET_KEYS: &[&str] = &[
    "log_connections",
    "log_disconnections",
    "verbose",
    "fuzz_key",
    "",
    "\"verbose\"",
    "x.y",
];

const SET_VALUES: &[&str] = &[
    "1",
    "0",
    "on",
    "'1'",
    "-1",
    "2147483648",
    "99999999999999999999",
    "'",
    "''",
    "1.5",
    "abc",
    "'a''b'",
    "= 1",
    "1 2",
    "",
];

fn command(rng: &mut StdRng) -> Vec<u8> {
    let pick = |rng: &mut StdRng, list: &[&str]| (*list.choose(rng).unwrap_or(&"")).to_string();
    match rng.gen_range(0..5) {
        0 | 1 => format!("show {}", pick(rng, SHOWN)).into_bytes(),
        2 => format!(
            "set {} {} {}",
            pick(rng, SET_KEYS),
            pick(rng, &["=", "to", "", "=="]),
            pick(rng, SET_VALUES)
        )
        .into_bytes(),
        3 => (0..rng.gen_range(1..6))
            .map(|_| pick(rng, WORDS))
            .collect::<Vec<_>>()
            .join(" ")
            .into_bytes(),
        _ => (0..rng.gen_range(0..20))
            .map(|_| rng.gen_range(1..=255u8))
            .collect(),
    }
}

/// One request on the console, its label, and whether it must end the session.
fn request(rng: &mut StdRng) -> (String, Vec<u8>, bool) {
    match rng.gen_range(0..10) {
        0..=5 => {
            let mut body = command(rng);
            let label = format!("Query {:?}", String::from_utf8_lossy(&body));
            body.push(0);
            (label, frame(b'Q', &body), false)
        }
        6 => {
            let tag = *b"PBDECHFdcf".choose(rng).unwrap_or(&b'P');
            let body: Vec<u8> = (0..rng.gen_range(0..10)).map(|_| rng.gen()).collect();
            let mut bytes = frame(tag, &body);
            bytes.extend_from_slice(&frame(b'S', &[]));
            (format!("{} and Sync", char::from(tag)), bytes, false)
        }
        7 => {
            // Any type but the two that get a ReadyForQuery of their own, then Sync: an
            // extended-protocol one is refused up to the Sync, as by PostgreSQL.
            let tag = match rng.gen() {
                b'S' | b'Q' => b'x',
                t => t,
            };
            let mut bytes = frame(tag, b"x\0");
            bytes.extend_from_slice(&frame(b'S', &[]));
            (format!("type {tag:#04x} and Sync"), bytes, false)
        }
        8 => {
            let len = *[-1i32, 0, 3, i32::MAX, i32::MIN].choose(rng).unwrap_or(&0);
            let mut bytes = vec![b'Q'];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(b"show pools\0");
            (format!("Query with length {len}"), bytes, true)
        }
        _ => (
            "Query with two statements".into(),
            frame(b'Q', b"show version; show pools\0"),
            false,
        ),
    }
}

/// Send `bytes` and read to the ReadyForQuery (true), or to EOF (false); Err on a hang.
async fn exchange(c: &mut RawClient, bytes: &[u8]) -> Result<bool, String> {
    if c.sock.write_all(bytes).await.is_err() {
        return Ok(false);
    }
    let mut buf = Vec::new();
    loop {
        let mut at = 0;
        while buf.len() >= at + 5 {
            let len = i32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]);
            let total = usize::try_from(len).map_err(|_| "bad length from pgporter")? + 1;
            if buf.len() < at + total {
                break;
            }
            if buf[at] == b'Z' {
                return Ok(true);
            }
            at += total;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(BOUND, c.sock.read(&mut chunk)).await {
            Err(_) => return Err("no answer within 10 s".into()),
            Ok(Ok(0) | Err(_)) => return Ok(false),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_answers_or_closes_and_keeps_serving() {
    watch_panics();
    let certs = crate::tls::Certs::new();
    let (fx, _) = fixture("session", &certs).await;
    // A tenth of the pool modes' cases (at least 10, or the one being replayed).
    let all = seeds();
    let n = (all.len() / 10).max(10);
    let seeds: Vec<u64> = all.into_iter().take(n).collect();
    for &seed in &seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, "pgbouncer").await;
        let mut sent = Vec::new();
        for _ in 0..rng.gen_range(1..12) {
            let (label, bytes, ends) = request(&mut rng);
            sent.push(label);
            let replay = || format!("seed {seed:#x}, requests {sent:#?}");
            let answered = exchange(&mut c, &bytes)
                .await
                .unwrap_or_else(|e| panic!("admin fuzz: {e}; {}", replay()));
            assert!(
                !(ends && answered),
                "admin fuzz: a broken length was answered; {}",
                replay()
            );
            if !answered {
                break;
            }
        }
        drop(c);
        let found = panics();
        assert!(
            found.is_empty(),
            "pgporter panicked: {found:?} (seed {seed:#x})"
        );
        pool_at_baseline(&fx, 1).await;
        let mut admin =
            RawClient::login(fx.porter.addr(), &fx.user, &fx.password, "pgbouncer").await;
        let (_, status, error) = admin.rows("show version").await;
        assert_eq!(
            (status, error),
            (b'I', None),
            "seed {seed:#x}: console after the case"
        );
        let mut next = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
        let (rows, status, error) = next.rows("select 1").await;
        assert_eq!(
            (rows, status, error),
            (vec!["1".to_string()], b'I', None),
            "seed {seed:#x}: the pool after the case"
        );
    }
}

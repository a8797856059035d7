//! `Scanner` over buffers shaped like real traffic: a large result set (many DataRow messages)
//! server-to-client, and a pgbench -S exchange in both directions.

use criterion::{black_box, Criterion, Throughput};
use pgporter::protocol::scan::{closures, Flow, Scanner};

fn msg(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

/// DataRow with one int4 column holding `i` as text.
fn data_row(out: &mut Vec<u8>, i: usize) {
    let text = i.to_string();
    let mut body = 1i16.to_be_bytes().to_vec();
    body.extend_from_slice(&(text.len() as i32).to_be_bytes());
    body.extend_from_slice(text.as_bytes());
    msg(out, b'D', &body);
}

fn result_set(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rd = 1i16.to_be_bytes().to_vec();
    rd.extend_from_slice(b"aid\0");
    rd.extend_from_slice(&[0; 6]);
    rd.extend_from_slice(&23i32.to_be_bytes());
    rd.extend_from_slice(&4i16.to_be_bytes());
    rd.extend_from_slice(&(-1i32).to_be_bytes());
    rd.extend_from_slice(&0i16.to_be_bytes());
    msg(&mut out, b'T', &rd);
    for i in 0..rows {
        data_row(&mut out, i);
    }
    msg(&mut out, b'C', format!("SELECT {rows}\0").as_bytes());
    msg(&mut out, b'Z', b"I");
    out
}

/// `exchanges` pgbench -S round trips: client Query, server RowDescription/DataRow/
/// CommandComplete/ReadyForQuery.
fn pgbench_exchange(exchanges: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..exchanges {
        let q = format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {};\0",
            1 + i * 7919
        );
        msg(&mut up, b'Q', q.as_bytes());
        let one = result_set(1);
        down.extend_from_slice(&one);
    }
    (up, down)
}

/// Scan `buf` as the relay does, in `chunk`-sized reads, counting the messages seen.
fn scan_all(buf: &[u8], chunk: usize, want_body: fn(u8) -> bool) -> usize {
    let mut scanner = Scanner::new(1 << 30);
    let mut seen = 0usize;
    let mut start = 0usize;
    let mut end = chunk.min(buf.len());
    while start < buf.len() {
        let mut visit = closures(want_body, |_, _| {
            seen += 1;
            Flow::Continue
        });
        let r = scanner
            .scan(&buf[start..end], &mut visit)
            .expect("valid stream");
        start += r.forward;
        if start == end || r.forward == 0 {
            end = (end + chunk).min(buf.len());
        }
    }
    seen
}

fn server_want(tag: u8) -> bool {
    tag == b'Z'
}

fn client_want(_: u8) -> bool {
    false
}

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    let rows = result_set(10_000);
    g.throughput(Throughput::Bytes(rows.len() as u64));
    g.bench_function("datarow_10k_in_8k_reads", |b| {
        b.iter(|| scan_all(black_box(&rows), 8192, server_want))
    });
    let (up, down) = pgbench_exchange(1000);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("pgbench_select_1k_client_to_server", |b| {
        b.iter(|| scan_all(black_box(&up), 8192, client_want))
    });
    g.bench_function("pgbench_select_1k_server_to_client", |b| {
        b.iter(|| scan_all(black_box(&down), 8192, server_want))
    });
    g.finish();
}

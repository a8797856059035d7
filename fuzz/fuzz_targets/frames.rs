//! Frame reading: `parse_message` and the relay's streaming `Scanner`. The first bytes choose
//! the limit and where the stream is split; scanning in pieces must agree with scanning whole.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgporter::protocol::parse_message;
use pgporter::protocol::scan::{closures, Flow, Scanner};

/// Visits (tag, wanted body), bytes forwarded, and whether the scan failed.
fn scan(chunks: &[&[u8]], max: usize) -> (Vec<(u8, Vec<u8>)>, usize, bool) {
    let mut scanner = Scanner::new(max);
    let (mut buf, mut visits, mut forwarded) = (Vec::new(), Vec::new(), 0);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        // As the relay does: forward what was cleared, then scan the rest again.
        loop {
            let step = scanner.scan(
                &buf,
                &mut closures(
                    |t| t == b'Z',
                    |t, b: &[u8]| {
                        visits.push((t, b.to_vec()));
                        Flow::Continue
                    },
                ),
            );
            match step {
                Ok(s) => {
                    assert!(s.forward <= buf.len());
                    buf.drain(..s.forward);
                    forwarded += s.forward;
                    if s.forward == 0 || buf.is_empty() {
                        break;
                    }
                }
                Err(_) => return (visits, forwarded, true),
            }
        }
    }
    (visits, forwarded, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], stream)) = data.split_first_chunk::<2>().map(|(h, r)| (h, r)) else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([a, b]));

    let mut buf = BytesMut::from(stream);
    let cap = buf.capacity();
    while let Ok(Some(msg)) = parse_message(&mut buf, max) {
        assert!(msg.body.len() <= max);
    }
    assert!(
        buf.capacity() <= (2 * cap).max(5 + max) + 64,
        "allocated beyond the limit"
    );

    let step = usize::from(a % 17) + 1;
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    assert_eq!(scan(&[stream], max), scan(&pieces, max));
});

//! The first packet of a connection: SSLRequest / GSSENCRequest / CancelRequest / StartupMessage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgporter::protocol::startup::{decode, FirstPacket};

fuzz_target!(|body: &[u8]| {
    if let Ok(FirstPacket::Startup(s)) = decode(body) {
        // Parameters that are not UTF-8 are kept apart: such a packet does not re-encode
        // from `params`; each kept apart is one that is not UTF-8.
        if !s.not_utf8.is_empty() {
            for (k, v) in &s.not_utf8 {
                assert!(k.contains('\u{fffd}') || std::str::from_utf8(v).is_err());
            }
            return;
        }
        // Each name once (a repeated one keeps its last value).
        for (i, (k, _)) in s.params.iter().enumerate() {
            assert!(s.params.iter().skip(i + 1).all(|(other, _)| other != k));
        }
        // Whatever decodes re-encodes to the same bytes, unless a name was repeated: then
        // the re-encoded packet decodes to the same parameters.
        let mut again = (196_608 + i32::from(s.minor)).to_be_bytes().to_vec();
        for (k, v) in &s.params {
            again.extend_from_slice(k.as_bytes());
            again.push(0);
            again.extend_from_slice(v.as_bytes());
            again.push(0);
        }
        again.push(0);
        if again != body {
            assert!(matches!(decode(&again), Ok(FirstPacket::Startup(t)) if t == s));
        }
    }
});

//! The first packet of a connection: SSLRequest / GSSENCRequest / CancelRequest / StartupMessage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgporter::protocol::startup::{decode, FirstPacket};

fuzz_target!(|body: &[u8]| {
    if let Ok(FirstPacket::Startup(s)) = decode(body) {
        // Whatever decodes re-encodes to the same bytes.
        let mut again = (196_608 + i32::from(s.minor)).to_be_bytes().to_vec();
        for (k, v) in &s.params {
            again.extend_from_slice(k.as_bytes());
            again.push(0);
            again.extend_from_slice(v.as_bytes());
            again.push(0);
        }
        again.push(0);
        assert_eq!(again, body);
    }
});

//! The PROXY protocol header comes before anything else from a trusted peer: any bytes, no
//! panic, and a parsed header never claims more bytes than it was given.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{classify, parse};

fn v2_signature() -> Vec<u8> {
    b"\r\n\r\n\0\r\nQUIT\n".to_vec()
}

proptest! {
    #[test]
    fn proxy_parser_never_panics(
        prefix in prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY ".to_vec()),
            Just(b"PROXY TCP4 ".to_vec()),
            Just(b"PROXY TCP6 ".to_vec()),
            Just(v2_signature()),
        ],
        rest in vec(any::<u8>(), 0..300),
    ) {
        let mut buf = prefix;
        buf.extend_from_slice(&rest);
        let _ = classify(&buf);
        if let Ok(Some((_header, used))) = parse(&buf) {
            prop_assert!(used <= buf.len());
        }
    }
}

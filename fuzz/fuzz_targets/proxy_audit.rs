//! PROXY protocol header (v1/v2) and the audit classifier / redaction.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pgporter::net::proxy::classify(data);
    if let Ok(Some((_header, used))) = pgporter::net::proxy::parse(data) {
        assert!(used <= data.len());
    }
    let _ = pgporter::audit::is_read_only(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pgporter::audit::redact(text);
    }
});

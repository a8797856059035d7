//! The admin console's command parser (any SQL text a console user sends).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let _ = pgporter::admin::parse(sql);
    }
});

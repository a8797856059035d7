//! Config parsers: pgbouncer.ini (with %include served from memory), userlist.txt,
//! [databases] connection strings, auth_hba_file and auth_ident_file. The first byte picks the
//! parser.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgporter::config::hba::{parse_hba, parse_ident};
use pgporter::config::{parse_connstring, parse_ini_with, parse_userlist};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 5 {
        0 => {
            let included = text.to_string();
            let _ = parse_ini_with(text, "main.ini", &mut |_p: &Path| Ok(included.clone()));
        }
        // Plaintext secrets cost a PBKDF2 each; keep inputs short so executions stay fast.
        1 if text.len() < 512 => {
            let _ = parse_userlist(text, "userlist.txt");
        }
        3 => {
            let included = text.to_string();
            let _ = parse_hba(text, &|_name: &str| Ok(included.clone()));
        }
        4 => {
            let _ = parse_ident(text);
        }
        _ => {
            let _ = parse_connstring("db", text);
        }
    }
});

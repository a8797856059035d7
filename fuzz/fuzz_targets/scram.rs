//! SCRAM-SHA-256 server: client-first then client-final, split where the first byte says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgporter::auth::scram::ScramServer;
use pgporter::auth::Secret;

/// RFC 7677's example verifier (user "user", password "pencil").
const SECRET: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (first, fin) = rest.split_at(usize::from(cut).min(rest.len()));
    let secret = Secret::parse(SECRET).unwrap().scram().unwrap().clone();
    let mut server = ScramServer::new(secret);
    if server.client_first(first).is_ok() {
        // A random client-final cannot carry a valid proof.
        assert!(server.client_final(fin).is_err());
        assert!(server.client_key().is_none());
    }
    let mut mock = ScramServer::mock("user", b"key");
    if mock.client_first(first).is_ok() {
        assert!(mock.client_final(fin).is_err());
    }
});

//! Authentication-phase and server message decoders: SASLInitialResponse, PasswordMessage,
//! ErrorResponse fields (which must round-trip), ParameterStatus, BackendKeyData.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgporter::protocol::backend::{self, ErrorFields};
use pgporter::protocol::frontend::{password_body, SaslInitialResponse};
use pgporter::protocol::parse_message;

fuzz_target!(|body: &[u8]| {
    if let Some(r) = SaslInitialResponse::parse(body) {
        assert!(r.data.len() < body.len());
    }
    let _ = password_body(body);
    let _ = backend::parse_parameter_status(body);
    let _ = backend::parse_backend_key_data(body);
    let _ = backend::parse_authentication(body);
    if let Some(fields) = ErrorFields::parse(body) {
        let _ = fields.to_string();
        let mut buf = BytesMut::new();
        fields.encode(&mut buf);
        let msg = parse_message(&mut buf, usize::MAX >> 1).unwrap().unwrap();
        assert_eq!(ErrorFields::parse(&msg.body), Some(fields));
    }
});

//! Property tests for the SCRAM server: any bytes as client-first / client-final never panic,
//! and a full exchange against postgres-protocol's client succeeds exactly when the password is
//! right and the client's final message is untouched.

#![allow(clippy::unwrap_used)]

use postgres_protocol::authentication::sasl::{ChannelBinding as ClientCb, ScramSha256};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// A verifier for `password` with a small iteration count, so each case stays cheap.
fn secret(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
    // Hi(password, salt, i) = PBKDF2-HMAC-SHA-256, one block (RFC 5802 §2.2).
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &[&block]);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &[&u]);
        for (s, x) in salted.iter_mut().zip(u) {
            *s ^= x;
        }
    }
    let client_key = hmac(&salted, &[b"Client Key"]);
    ScramSecret {
        iterations,
        salt: salt.to_vec(),
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, &[b"Server Key"]),
    }
}

/// Client-first-like text: mostly well-formed, with random attributes, flags and nonces.
fn client_first_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("n".to_string()),
            Just("y".to_string()),
            Just("p=tls-server-end-point".to_string()),
            "[a-z=]{0,3}"
        ],
        prop_oneof![
            Just("".to_string()),
            Just("a=".to_string()),
            "a=[a-z]{0,4}",
            "[^,]{0,4}"
        ],
        prop_oneof![
            Just("n=".to_string()),
            "n=[^,]{0,8}",
            "m=[^,]{0,4}",
            "[^,]{0,4}"
        ],
        prop_oneof!["r=[!-~&&[^,]]{0,24}", "[^,]{0,6}"],
        vec("[a-z]=[^,]{0,6}|[^,]{0,4}", 0..3),
    )
        .prop_map(|(flag, authzid, user, nonce, ext)| {
            let mut s = format!("{flag},{authzid},{user},{nonce}");
            for e in ext {
                s.push(',');
                s.push_str(&e);
            }
            s
        })
}

proptest! {
    #[test]
    fn client_first_never_panics(msg in vec(any::<u8>(), 0..300)) {
        let mut server = ScramServer::new(secret("pw", b"salt", 1));
        if server.client_first(&msg).is_ok() {
            // Whatever was accepted, a garbage final is refused, not a panic.
            prop_assert!(server.client_final(&msg).is_err());
        }
    }

    #[test]
    fn structured_client_first_never_panics(msg in client_first_like()) {
        let mut server = ScramServer::mock("someone", b"key", 4096);
        if let Ok(reply) = server.client_first(msg.as_bytes()) {
            let reply = String::from_utf8(reply).unwrap();
            prop_assert!(reply.starts_with("r="));
        }
    }

    #[test]
    fn client_final_never_panics(
        first in client_first_like(),
        fin in prop_oneof![
            vec(any::<u8>(), 0..300),
            "c=[A-Za-z0-9+/=]{0,8},r=[!-~&&[^,]]{0,60}(,[a-z]=[^,]{0,5}){0,2},p=[A-Za-z0-9+/=]{0,48}"
                .prop_map(String::into_bytes),
        ],
    ) {
        let mut server = ScramServer::new(secret("pw", b"salt", 1));
        let _ = server.client_first(first.as_bytes());
        let _ = server.client_final(&fin);
        prop_assert_eq!(server.client_key(), None);
    }

    #[test]
    fn exchange_succeeds_exactly_with_the_right_password(
        password in "[!-~]{1,20}",
        other in "[!-~]{1,20}",
        salt in vec(any::<u8>(), 1..24),
        iterations in 1u32..16,
    ) {
        let verifier = secret(&password, &salt, iterations);
        for (attempt, expect_ok) in [(&password, true), (&other, other == password)] {
            let mut server = ScramServer::new(verifier.clone());
            let mut client = ScramSha256::new(attempt.as_bytes(), ClientCb::unsupported());
            let server_first = server.client_first(client.message()).unwrap();
            client.update(&server_first).unwrap();
            let result = server.client_final(client.message());
            prop_assert_eq!(result.is_ok(), expect_ok, "{:?}", result);
            if let Ok(server_final) = result {
                prop_assert!(client.finish(&server_final).is_ok());
                prop_assert!(server.client_key().is_some());
            } else {
                prop_assert_eq!(result, Err(AuthError::Failed));
            }
        }
    }

    #[test]
    fn a_tampered_client_final_never_succeeds(
        password in "[!-~]{1,20}",
        salt in vec(any::<u8>(), 1..24),
        at in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let mut server = ScramServer::new(secret(&password, &salt, 2));
        let mut client = ScramSha256::new(password.as_bytes(), ClientCb::unsupported());
        let server_first = server.client_first(client.message()).unwrap();
        client.update(&server_first).unwrap();
        let mut fin = client.message().to_vec();
        let i = at % fin.len();
        fin[i] ^= xor;
        prop_assert!(server.client_final(&fin).is_err());
        prop_assert_eq!(server.client_key(), None);
    }
}

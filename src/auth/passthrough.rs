//! The client side of SCRAM-SHA-256(-PLUS) toward PostgreSQL without a password: the ClientKey
//! recovered from the user's own login (`ScramServer::client_key`) and the ServerKey from the
//! stored verifier are exactly what a client proof and the server-signature check need.
//!
//! Also the strict parser for server-first-message used for every SCRAM login pgporter makes:
//! attributes in order (`r`, `s`, `i`), the nonce must extend ours, the iteration count bounded.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;

/// The most PBKDF2 iterations pgporter will run for a server (PostgreSQL's default is 4096).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Keys that stand in for a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(..)")
    }
}

/// A parsed server-first-message.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFirst<'a> {
    pub nonce: &'a str,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// `r=<client nonce + server nonce>,s=<salt>,i=<iterations>[,extensions]`.
pub fn parse_server_first<'a>(
    msg: &'a [u8],
    client_nonce: &str,
) -> Result<ServerFirst<'a>, AuthError> {
    let text =
        std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("server-first not UTF-8"))?;
    let mut fields = text.split(',');
    let mut next = |name: &'static str, prefix: &str| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(prefix))
            .ok_or(AuthError::Malformed(name))
    };
    let nonce = next("expected nonce attribute", "r=")?;
    let salt = next("expected salt attribute", "s=")?;
    let iterations = next("expected iteration attribute", "i=")?;
    if nonce.len() <= client_nonce.len()
        || !nonce.starts_with(client_nonce)
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(AuthError::Malformed("server nonce does not extend ours"));
    }
    let salt = STANDARD
        .decode(salt)
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::Malformed("invalid salt"))?;
    let iterations: u32 = iterations
        .parse()
        .ok()
        .filter(|i| (1..=MAX_ITERATIONS).contains(i))
        .ok_or(AuthError::Malformed("iteration count out of range"))?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

enum State {
    Initial,
    FirstSent,
    FinalSent { server_signature: [u8; 32] },
    Done,
}

/// SCRAM client from [`ScramKeys`].
pub struct KeyScramClient {
    keys: ScramKeys,
    /// tls-server-end-point data when binding to the TLS channel (SCRAM-SHA-256-PLUS).
    channel_binding: Option<Vec<u8>>,
    nonce: String,
    state: State,
}

impl std::fmt::Debug for KeyScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyScramClient")
            .field("plus", &self.channel_binding.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyScramClient {
    pub fn new(keys: ScramKeys, channel_binding: Option<Vec<u8>>) -> Self {
        let mut raw = [0u8; 18];
        OsRng.fill_bytes(&mut raw);
        KeyScramClient {
            keys,
            channel_binding,
            nonce: STANDARD.encode(raw),
            state: State::Initial,
        }
    }

    pub fn mechanism(&self) -> &'static str {
        if self.channel_binding.is_some() {
            super::scram::SCRAM_SHA_256_PLUS
        } else {
            super::scram::SCRAM_SHA_256
        }
    }

    fn gs2_header(&self) -> &'static str {
        if self.channel_binding.is_some() {
            "p=tls-server-end-point,,"
        } else {
            "n,,"
        }
    }

    /// client-first-message.
    pub fn client_first(&mut self) -> Vec<u8> {
        self.state = State::FirstSent;
        format!("{}n=,r={}", self.gs2_header(), self.nonce).into_bytes()
    }

    /// Handle server-first-message; returns client-final-message.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::FirstSent) {
            return Err(AuthError::Malformed("unexpected server-first"));
        }
        self.state = State::Done;
        let first = parse_server_first(msg, &self.nonce)?;
        let mut cbind = self.gs2_header().as_bytes().to_vec();
        cbind.extend_from_slice(self.channel_binding.as_deref().unwrap_or_default());
        let without_proof = format!("c={},r={}", STANDARD.encode(cbind), first.nonce);
        let auth_message = format!(
            "n=,r={},{},{without_proof}",
            self.nonce,
            String::from_utf8_lossy(msg)
        );
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = self.keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.state = State::FinalSent {
            server_signature: hmac(&self.keys.server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Check server-final-message (`v=<ServerSignature>`).
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), AuthError> {
        let State::FinalSent { server_signature } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::Malformed("unexpected server-final"));
        };
        let given = msg
            .strip_prefix(b"v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or(AuthError::Malformed("invalid server-final"))?;
        if bool::from(given.as_slice().ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(AuthError::Failed)
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::verifier::DEFAULT_ITERATIONS;
    use crate::auth::scram::ScramServer;
    use crate::auth::Secret;

    fn secret(pw: &str) -> crate::auth::ScramSecret {
        let text = postgres_protocol::password::scram_sha_256(pw.as_bytes());
        Secret::parse(&text, DEFAULT_ITERATIONS)
            .unwrap()
            .scram()
            .unwrap()
            .clone()
    }

    /// Recover the ClientKey from a password login, then log in again with the keys alone.
    #[test]
    fn passthrough_round_trip() {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let secret = secret("hunter2");
        let mut server = ScramServer::new(secret.clone());
        let mut client = ScramSha256::new(b"hunter2", ChannelBinding::unsupported());
        let sf = server.client_first(client.message()).unwrap();
        client.update(&sf).unwrap();
        let fin = server.client_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
        let client_key = server.client_key().unwrap();

        for cb in [None, Some(vec![7u8; 32])] {
            let keys = ScramKeys {
                client_key,
                server_key: secret.server_key,
            };
            let mut ours = KeyScramClient::new(keys, cb.clone());
            let mut server =
                ScramServer::new(secret.clone()).with_channel_binding(cb.map(Into::into));
            server
                .select_mechanism(ours.mechanism().as_bytes())
                .unwrap();
            let sf = server.client_first(&ours.client_first()).unwrap();
            let cf = ours.server_first(&sf).unwrap();
            let fin = server.client_final(&cf).unwrap();
            ours.server_final(&fin).unwrap();
        }
    }

    #[test]
    fn wrong_key_fails_and_bad_server_signature_is_caught() {
        let secret = secret("pw");
        let keys = ScramKeys {
            client_key: [1; 32],
            server_key: secret.server_key,
        };
        let mut ours = KeyScramClient::new(keys, None);
        let mut server = ScramServer::new(secret);
        let sf = server.client_first(&ours.client_first()).unwrap();
        let cf = ours.server_first(&sf).unwrap();
        assert_eq!(server.client_final(&cf), Err(AuthError::Failed));
        assert_eq!(
            ours.server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn strict_server_first() {
        let ok = parse_server_first(b"r=abcXYZ,s=c2FsdA==,i=4096", "abc").unwrap();
        assert_eq!((ok.nonce, ok.iterations), ("abcXYZ", 4096));
        for (msg, why) in [
            (
                &b"r=abc,s=c2FsdA==,i=4096"[..],
                "server nonce does not extend ours",
            ),
            (
                b"r=xyzabc,s=c2FsdA==,i=4096",
                "server nonce does not extend ours",
            ),
            (b"s=c2FsdA==,r=abcX,i=4096", "expected nonce attribute"),
            (b"r=abcX,i=4096,s=c2FsdA==", "expected salt attribute"),
            (b"r=abcX,s=c2FsdA==", "expected iteration attribute"),
            (b"r=abcX,s=c2FsdA==,i=0", "iteration count out of range"),
            (
                b"r=abcX,s=c2FsdA==,i=99999999999",
                "iteration count out of range",
            ),
            (
                b"r=abcX,s=c2FsdA==,i=4096000",
                "iteration count out of range",
            ),
            (b"r=abcX,s=!!,i=4096", "invalid salt"),
        ] {
            assert_eq!(
                parse_server_first(msg, "abc"),
                Err(AuthError::Malformed(why)),
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }
}

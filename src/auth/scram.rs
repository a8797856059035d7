//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) verifying from StoredKey/ServerKey.
//!
//! Usage: `ScramServer::new(secret)`, then `client_first(SASLInitialResponse data)` returns the
//! server-first-message, then `client_final(SASLResponse data)` returns the server-final-message
//! (`v=...`) or `AuthError::Failed`. An unknown user gets `ScramServer::mock(user, mock_key,
//! iterations)`, which runs the same exchange with a deterministic fake salt and always fails,
//! so unknown users look like wrong passwords.
//!
//! Pure: no I/O, and the exchange runs no PBKDF2 (the verifier is precomputed), only a few
//! HMAC/SHA-256 calls. PBKDF2 runs where a password meets a salt: [`verifier`] (a verifier
//! built from a plaintext password) and [`verify_plain`].
//! Parsing follows PostgreSQL's `auth-scram.c`: the SCRAM username (`n=`) is ignored (the
//! startup-packet user is authoritative), authzid and mandatory extensions are rejected, optional
//! extensions are skipped, and the proof must be the last attribute of client-final-message.
//! Any exchange error leaves the state machine finished; a new `ScramServer` is needed to retry.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use subtle::ConstantTimeEq;

use super::{AuthError, ScramSecret};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
pub mod verifier;

/// The mechanism names offered in AuthenticationSASL.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel-binding type supported (RFC 5929), as PostgreSQL.
const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Upper bound on a client SCRAM message; real ones are ~100 bytes (a few hundred with channel
/// binding data).
const MAX_MESSAGE_LEN: usize = 4096;
/// Raw server nonce length before base64, as PostgreSQL's SCRAM_RAW_NONCE_LEN.
const SERVER_NONCE_LEN: usize = 18;

/// The gs2-cbind-flag of client-first-message (RFC 5802 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelBinding {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports channel binding but believes the server does not. Accepted
    /// only when SCRAM-SHA-256-PLUS was not offered; otherwise it is a downgrade attack
    /// (PostgreSQL: "channel binding negotiation error").
    ClientOnly,
    /// `p=tls-server-end-point` with SCRAM-SHA-256-PLUS: the client-final `c=` must cover the
    /// hash of our TLS certificate.
    Required,
}

enum State {
    Initial,
    ServerFirstSent {
        channel_binding: ChannelBinding,
        /// client-first-message as the client sent it: the gs2 header (its first
        /// `gs2_len` bytes, e.g. `n,,`), then client-first-message-bare.
        client_first: String,
        gs2_len: usize,
        /// server-first-message; the nonce (client's, then ours) is `server_first[2..nonce_end]`.
        server_first: String,
        nonce_end: usize,
    },
    Succeeded {
        client_key: [u8; 32],
    },
    Finished,
}

/// Server side of one SCRAM-SHA-256 exchange.
pub struct ScramServer {
    secret: ScramSecret,
    mock: bool,
    /// tls-server-end-point data of the TLS connection; `Some` offers SCRAM-SHA-256-PLUS.
    end_point: Option<std::sync::Arc<[u8]>>,
    /// The client chose SCRAM-SHA-256-PLUS.
    plus: bool,
    /// Fixed server nonce for deterministic tests; random otherwise.
    server_nonce: Option<String>,
    state: State,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No keys, nonces or messages.
        let state = match self.state {
            State::Initial => "Initial",
            State::ServerFirstSent { .. } => "ServerFirstSent",
            State::Succeeded { .. } => "Succeeded",
            State::Finished => "Finished",
        };
        f.debug_struct("ScramServer")
            .field("mock", &self.mock)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Start an exchange verifying against `secret`.
    pub fn new(secret: ScramSecret) -> Self {
        ScramServer {
            secret,
            mock: false,
            end_point: None,
            plus: false,
            server_nonce: None,
            state: State::Initial,
        }
    }

    /// Start an exchange for a user that does not exist (or cannot use SCRAM). The salt is
    /// derived from `mock_key` and `user` so repeated attempts for the same name see the same
    /// salt, like PostgreSQL's `scram_mock_salt`; `client_final` always fails. `iterations`
    /// is `scram_iterations`, as PgBouncer's (and PostgreSQL 16's) mock announces the
    /// configured count: an unknown user then looks like one whose verifier pgporter built.
    pub fn mock(user: &str, mock_key: &[u8], iterations: u32) -> Self {
        let digest = Sha256::new()
            .chain_update(mock_key)
            .chain_update(user)
            .finalize();
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        OsRng.fill_bytes(&mut stored_key);
        OsRng.fill_bytes(&mut server_key);
        let secret = ScramSecret {
            iterations: iterations.max(1),
            salt: digest[..verifier::SALT_LEN].to_vec(),
            stored_key,
            server_key,
        };
        ScramServer {
            secret,
            mock: true,
            end_point: None,
            plus: false,
            server_nonce: None,
            state: State::Initial,
        }
    }

    /// Offer SCRAM-SHA-256-PLUS bound to this TLS end point (the hash of our certificate).
    pub fn with_channel_binding(mut self, end_point: Option<std::sync::Arc<[u8]>>) -> Self {
        self.end_point = end_point;
        self
    }

    /// The mechanisms to list in AuthenticationSASL, PLUS first when offered (as PostgreSQL).
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.end_point.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Record the mechanism named in SASLInitialResponse.
    pub fn select_mechanism(&mut self, name: &[u8]) -> Result<(), AuthError> {
        if name == SCRAM_SHA_256.as_bytes() {
            self.plus = false;
        } else if name == SCRAM_SHA_256_PLUS.as_bytes() && self.end_point.is_some() {
            self.plus = true;
        } else {
            return Err(AuthError::Malformed("unsupported SASL mechanism"));
        }
        Ok(())
    }

    /// Like `new`, with a fixed server nonce (for recorded test vectors).
    #[cfg(test)]
    pub(crate) fn with_server_nonce(secret: ScramSecret, server_nonce: &str) -> Self {
        ScramServer {
            server_nonce: Some(server_nonce.to_owned()),
            ..Self::new(secret)
        }
    }

    /// Handle client-first-message (SASLInitialResponse data); returns server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Initial => {}
            succeeded @ State::Succeeded { .. } => {
                self.state = succeeded; // a stray message does not undo a success
                return Err(AuthError::Malformed("unexpected message"));
            }
            State::ServerFirstSent { .. } | State::Finished => {
                return Err(AuthError::Malformed("unexpected message"))
            }
        }
        let msg = as_text(msg)?;
        let first = parse_client_first(msg)?;
        match (first.channel_binding, self.plus) {
            (ChannelBinding::Required, false) => {
                return Err(AuthError::Malformed("channel binding not supported"))
            }
            (ChannelBinding::NotSupported | ChannelBinding::ClientOnly, true) => {
                return Err(AuthError::Malformed(
                    "SCRAM-SHA-256-PLUS selected without channel binding",
                ))
            }
            (ChannelBinding::ClientOnly, false) if self.end_point.is_some() => {
                return Err(AuthError::Malformed("channel binding negotiation error"))
            }
            _ => {}
        }

        // `r=<client nonce><server nonce>,s=<salt>,i=<iterations>`, built in place (one
        // allocation, no formatting machinery: this runs at every login).
        let mut server_first = String::with_capacity(
            first.client_nonce.len()
                + 4 * SERVER_NONCE_LEN / 3
                + 4 * self.secret.salt.len() / 3
                + 24,
        );
        server_first.push_str("r=");
        server_first.push_str(first.client_nonce);
        match &self.server_nonce {
            Some(n) => server_first.push_str(n),
            None => {
                let mut raw = [0u8; SERVER_NONCE_LEN];
                OsRng.fill_bytes(&mut raw);
                STANDARD.encode_string(raw, &mut server_first);
            }
        }
        let nonce_end = server_first.len();
        server_first.push_str(",s=");
        STANDARD.encode_string(&self.secret.salt, &mut server_first);
        server_first.push_str(",i=");
        let _ = write!(server_first, "{}", self.secret.iterations);
        let reply = server_first.as_bytes().to_vec();
        self.state = State::ServerFirstSent {
            channel_binding: first.channel_binding,
            client_first: msg.to_owned(),
            gs2_len: first.gs2_header.len(),
            server_first,
            nonce_end,
        };
        Ok(reply)
    }

    /// Handle client-final-message (SASLResponse data); returns server-final-message
    /// (`v=<ServerSignature>`) when the proof verifies, `AuthError::Failed` when it does not.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Finished);
        let State::ServerFirstSent {
            channel_binding,
            client_first,
            gs2_len,
            server_first,
            nonce_end,
        } = state
        else {
            if let State::Succeeded { .. } = state {
                self.state = state; // a stray message does not undo a success
            }
            return Err(AuthError::Malformed("unexpected message"));
        };
        let fin = parse_client_final(as_text(msg)?)?;
        let (gs2_header, client_first_bare) = client_first.split_at(gs2_len);
        let nonce = &server_first[2..nonce_end];

        let mut cbind_input = String::with_capacity(128);
        if channel_binding == ChannelBinding::Required {
            let end_point = self.end_point.as_deref().unwrap_or_default();
            STANDARD.encode_string(
                [gs2_header.as_bytes(), end_point].concat(),
                &mut cbind_input,
            );
        } else {
            STANDARD.encode_string(gs2_header, &mut cbind_input);
        }
        if fin.channel_binding != cbind_input {
            return Err(AuthError::Malformed("channel binding mismatch"));
        }
        if !bool::from(fin.nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(AuthError::Malformed("nonce mismatch"));
        }
        // A 32-byte proof is 44 characters of base64: a longer one cannot be one (and would
        // not fit the buffer), a shorter one decodes to fewer bytes.
        let mut decoded = [0u8; 48];
        let proof: [u8; 32] = (fin.proof.len() <= 64)
            .then(|| STANDARD.decode_slice(fin.proof, &mut decoded).ok())
            .flatten()
            .and_then(|n| decoded.get(..n)?.try_into().ok())
            .ok_or(AuthError::Malformed("invalid proof"))?;

        // AuthMessage = client-first-message-bare "," server-first-message ","
        // client-final-message-without-proof, fed to the HMACs in its parts.
        let auth_message = [
            client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            fin.without_proof.as_bytes(),
        ];
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let valid = bool::from(stored_key.ct_eq(&self.secret.stored_key));
        if self.mock || !valid {
            return Err(AuthError::Failed);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        self.state = State::Succeeded { client_key };
        let mut server_final = String::with_capacity(48);
        server_final.push_str("v=");
        STANDARD.encode_string(server_signature, &mut server_final);
        Ok(server_final.into_bytes())
    }

    /// The client's ClientKey, recovered from its proof, once the exchange has succeeded. With it
    /// pgporter can answer a PostgreSQL SCRAM challenge for the same verifier (passthrough).
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            State::Succeeded { client_key } => Some(client_key),
            _ => None,
        }
    }
}

/// Does the cleartext `password` match the verifier (for `plain` / hba `password` logins, as
/// PostgreSQL's `plain_crypt_verify`)? Derives the password's ClientKey with the verifier's
/// salt and iterations (SASLprep as PostgreSQL) and compares its hash with StoredKey; returns
/// the ClientKey on a match. Runs PBKDF2: call it off the async workers.
pub fn verify_plain(secret: &ScramSecret, password: &[u8]) -> Option<[u8; 32]> {
    let (client_key, _) = verifier::keys(password, &secret.salt, secret.iterations);
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    bool::from(stored_key.ct_eq(&secret.stored_key)).then_some(client_key)
}

/// HMAC-SHA-256 of the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn as_text(msg: &[u8]) -> Result<&str, AuthError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(AuthError::Malformed("message too long"));
    }
    if msg.contains(&0) {
        return Err(AuthError::Malformed("message contains a NUL byte"));
    }
    std::str::from_utf8(msg).map_err(|_| AuthError::Malformed("message is not valid UTF-8"))
}

/// The value of `<name>=<value>` if `field` is that attribute.
fn attr(field: &str, name: u8) -> Option<&str> {
    match field.as_bytes() {
        [n, b'=', ..] if *n == name => Some(&field[2..]),
        _ => None,
    }
}

/// Any well-formed `<letter>=<value>` attribute (used for skipped extensions).
fn is_attr(field: &str) -> bool {
    matches!(field.as_bytes(), [n, b'=', ..] if n.is_ascii_alphabetic())
}

#[derive(Debug)]
struct ClientFirst<'a> {
    channel_binding: ChannelBinding,
    /// The gs2 header; client-first-message-bare is the rest of the message.
    gs2_header: &'a str,
    client_nonce: &'a str,
}

/// `gs2-cbind-flag "," [authzid] "," "n=" saslname "," "r=" nonce ["," extensions]`
fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, AuthError> {
    let mut parts = msg.splitn(3, ',');
    let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
        (Some(f), Some(a), Some(b)) => (f, a, b),
        _ => return Err(AuthError::Malformed("invalid gs2 header")),
    };
    let channel_binding = match flag {
        "n" => ChannelBinding::NotSupported,
        "y" => ChannelBinding::ClientOnly,
        _ => match attr(flag, b'p') {
            Some(TLS_SERVER_END_POINT) => ChannelBinding::Required,
            Some(_) => return Err(AuthError::Malformed("channel binding not supported")),
            None => return Err(AuthError::Malformed("invalid channel binding flag")),
        },
    };
    match authzid {
        "" | "a=" => {}
        _ if attr(authzid, b'a').is_some() => {
            return Err(AuthError::Malformed("authorization identity not supported"))
        }
        _ => return Err(AuthError::Malformed("invalid gs2 header")),
    }
    let gs2_header = &msg[..flag.len() + authzid.len() + 2];

    let mut fields = bare.split(',');
    let user = fields.next().unwrap_or_default();
    if attr(user, b'm').is_some() {
        return Err(AuthError::Malformed("mandatory extensions not supported"));
    }
    // The SCRAM username is ignored, as in PostgreSQL: the startup packet's user is used.
    attr(user, b'n').ok_or(AuthError::Malformed("expected username attribute"))?;
    let client_nonce = fields
        .next()
        .and_then(|f| attr(f, b'r'))
        .ok_or(AuthError::Malformed("expected nonce attribute"))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(AuthError::Malformed("invalid nonce"));
    }
    if !fields.all(is_attr) {
        return Err(AuthError::Malformed("invalid attribute"));
    }
    Ok(ClientFirst {
        channel_binding,
        gs2_header,
        client_nonce,
    })
}

#[derive(Debug)]
struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    without_proof: &'a str,
    proof: &'a str,
}

/// `"c=" base64 "," "r=" nonce ["," extensions] "," "p=" base64`
fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, AuthError> {
    let (without_proof, last) = msg
        .rsplit_once(',')
        .ok_or(AuthError::Malformed("missing proof"))?;
    let proof = attr(last, b'p').ok_or(AuthError::Malformed("missing proof"))?;
    let mut fields = without_proof.split(',');
    let channel_binding = fields
        .next()
        .and_then(|f| attr(f, b'c'))
        .ok_or(AuthError::Malformed("expected channel binding attribute"))?;
    let nonce = fields
        .next()
        .and_then(|f| attr(f, b'r'))
        .ok_or(AuthError::Malformed("expected nonce attribute"))?;
    for field in fields {
        if attr(field, b'p').is_some() {
            return Err(AuthError::Malformed("proof must be the last attribute"));
        }
        if !is_attr(field) {
            return Err(AuthError::Malformed("invalid attribute"));
        }
    }
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

//! SCRAM-SHA-256 keys from a password, as PostgreSQL's `scram_build_secret` builds a verifier
//! (RFC 5802 §3, RFC 7677): the password SASLprep'd (RFC 4013), PBKDF2-HMAC-SHA-256 with one
//! output block over the salt (SaltedPassword), then ClientKey = HMAC(SaltedPassword, "Client
//! Key"), StoredKey = H(ClientKey) and ServerKey = HMAC(SaltedPassword, "Server Key").
//!
//! Runs PBKDF2, whose cost is the iteration count: call it at config load or off the async
//! workers.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::hmac;
use crate::auth::ScramSecret;

/// PostgreSQL's and PgBouncer's default iteration count (RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length of a new verifier, as PostgreSQL's SCRAM_DEFAULT_SALT_LEN.
pub(super) const SALT_LEN: usize = 16;

/// A verifier for `password` with a fresh random salt and `iterations` (at least 1; 0 is
/// taken as 1, which is what PBKDF2 computes for it).
pub fn build(password: &[u8], iterations: u32) -> ScramSecret {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    build_with_salt(password, &salt, iterations)
}

/// As [`build`], with a given salt (for comparing with a verifier made elsewhere).
pub fn build_with_salt(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
    let iterations = iterations.max(1);
    let (client_key, server_key) = keys(password, salt, iterations);
    ScramSecret {
        iterations,
        salt: salt.to_vec(),
        stored_key: Sha256::digest(client_key).into(),
        server_key,
    }
}

/// (ClientKey, ServerKey) of `password` with this salt and iteration count.
pub(super) fn keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = salted_password(&prepare(password), salt, iterations);
    (
        hmac(&salted, &[b"Client Key"]),
        hmac(&salted, &[b"Server Key"]),
    )
}

/// The password as SCRAM hashes it, as PostgreSQL's `pg_saslprep` has it: SASLprep'd, or the
/// bytes as given when they are not UTF-8, when SASLprep refuses them (a prohibited or
/// unassigned character) or when nothing is left after its mapping (PostgreSQL counts an empty
/// result as prohibited).
fn prepare(password: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(prepared)) if !prepared.is_empty() => match prepared {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        },
        _ => Cow::Borrowed(password),
    }
}

/// PBKDF2-HMAC-SHA-256 (RFC 8018 §5.2) with one 32-byte output block, SCRAM's Hi(): U1 =
/// HMAC(password, salt || INT(1)), Ui = HMAC(password, Ui-1), result U1 ^ ... ^ Un. The keyed
/// HMAC state is cloned for each round rather than keyed again (half the hashing).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = Hmac::<Sha256>::new_from_slice(password).expect("HMAC accepts keys of any length");
    let mut u: [u8; 32] = (prf.clone())
        .chain_update(salt)
        .chain_update(1u32.to_be_bytes())
        .finalize()
        .into_bytes()
        .into();
    let mut result = u;
    for _ in 1..iterations {
        u = prf.clone().chain_update(u).finalize().into_bytes().into();
        for (r, b) in result.iter_mut().zip(u) {
            *r ^= b;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::ScramServer;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    /// `password` with the salt and iterations of `reference` (a verifier as pg_authid holds
    /// it) gives exactly its keys.
    fn same_as(password: &str, reference: &str) {
        let reference = ScramSecret::parse(reference).unwrap();
        let built = build_with_salt(password.as_bytes(), &reference.salt, reference.iterations);
        assert_eq!(built, reference, "{password:?}");
    }

    #[test]
    fn rfc7677_keys_and_exchange() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = build_with_salt(b"pencil", &salt, 4096);
        assert_eq!(
            STANDARD.encode(secret.stored_key),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
        assert_eq!(
            STANDARD.encode(secret.server_key),
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        // RFC 7677 §3's exchange, to its server-final-message, against the built verifier.
        let nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let mut server = ScramServer::with_server_nonce(secret, nonce);
        let first = server
            .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(
            first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// Verifiers PostgreSQL 15 stored (`SET password_encryption = 'scram-sha-256'; CREATE
    /// ROLE .. PASSWORD ..`, then pg_authid), recomputed from their salts.
    #[test]
    fn same_keys_as_postgresql() {
        same_as(
            "pencil",
            "SCRAM-SHA-256$4096:IkMCxQGD5ebjg0RnJKEKHg==$\
             1VjeiZ9eCw97ZjnBVZpvB+vXizGjVTBQvOV0L2oGzoA=:\
             mXiXObWH+/gc5RDopBQMnDc7qdw99xg0TwE4n3pUpho=",
        );
        // An ASCII control character: SASLprep prohibits it, the bytes are hashed as given.
        same_as(
            "pen\u{7}cil",
            "SCRAM-SHA-256$4096:sE1vWiOe2JhlqTR2g3xSgw==$\
             5NrOr/Wg5mJagn4ZqHBaWIRqEeE5jStP1ez197q/CxI=:\
             TMQFykxItpyEYqXQWqoqVmDg/50n2nNpc0cPJ4ja36w=",
        );
        // A private-use character: prohibited too.
        same_as(
            "pen\u{E000}cil",
            "SCRAM-SHA-256$4096:qd1R3n8yaSQgwcwiGfcVcQ==$\
             xztZgTFvdFo3WmUExikmcrUtKSl2jhjbe8vinHdcsO0=:\
             cmItaW092iSDrPR+jEKmp0F7yqoo/FyhYtt6Ms1nqdg=",
        );
    }

    /// SASLprep's mapping, checked against PostgreSQL 15's verifiers (as above): a soft
    /// hyphen (U+00AD) maps to nothing, a no-break space (U+00A0) to a space; a password of
    /// nothing but soft hyphens is hashed as given (PostgreSQL refuses an empty result).
    #[test]
    fn saslprep_as_postgresql() {
        same_as(
            "pen\u{AD}cil",
            "SCRAM-SHA-256$4096:xk2sCdHSI4nIbNnBkQNS1w==$\
             0Ieyum0uFfkt8Ga0Wt4aXhBZEhnFqcAgSjjdEaBiSWM=:\
             vYDRucwKX9OnJRsb5TwA9SJ06gRXNofxIWa5dqMwKVk=",
        );
        same_as(
            "pen\u{A0}cil",
            "SCRAM-SHA-256$4096:bEgEZZf5Yhy0KVdYI/AK1w==$\
             60ctY41/3r8NFCPha25RcS9MwBxdQLlsO8ZJQaowe/U=:\
             FGPn44t2BIuyDkPkwuQOj8yMgeJy04Z4RtkK4qKO/ks=",
        );
        same_as(
            "\u{AD}",
            "SCRAM-SHA-256$4096:FmFivKWvsR9ObogRsVXmiw==$\
             2ekxidcEcuOVvx6Bim7xUYs6INxdugEe4rzJXsQvTms=:\
             WimHJQfWWWtLQj3igo31laaSSepk/bEHcfbsJvY50cM=",
        );
        let salt = [7u8; SALT_LEN];
        let with = |pw: &[u8]| build_with_salt(pw, &salt, 16);
        assert_eq!(with("pen\u{AD}cil".as_bytes()), with(b"pencil"));
        assert_eq!(with("pen\u{A0}cil".as_bytes()), with(b"pen cil"));
        // Not UTF-8: the bytes as given.
        assert_ne!(with(b"pen\xffcil"), with(b"pencil"));
        assert_eq!(prepare(b"pen\xffcil"), &b"pen\xffcil"[..]);
    }

    #[test]
    fn iterations_and_salt() {
        let a = build(b"pw", 1000);
        let b = build(b"pw", 1000);
        assert_eq!((a.iterations, a.salt.len()), (1000, SALT_LEN));
        assert_ne!(a.salt, b.salt, "a fresh salt each time");
        // The count matters: the same salt with another count gives other keys.
        assert_eq!(build_with_salt(b"pw", &a.salt, 1000), a);
        assert_ne!(build_with_salt(b"pw", &a.salt, 1001), a);
        // One round is HMAC(password, salt || INT(1)) itself.
        let one = hmac(b"pw", &[&a.salt, &1u32.to_be_bytes()]);
        assert_eq!(salted_password(b"pw", &a.salt, 1), one);
        assert_eq!(build_with_salt(b"pw", &a.salt, 0).iterations, 1);
    }
}

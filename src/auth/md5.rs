//! md5 password challenge (AuthenticationMD5Password) verification.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::{AuthError, Secret};

/// Check a client's md5 response (`md5` + hex(md5(hex(md5(password || user)) || salt))) against a
/// stored secret (plaintext or md5). Constant-time comparison.
///
/// `response` is the PasswordMessage payload, with or without its trailing NUL. A SCRAM secret
/// cannot answer an md5 challenge: `AuthError::Unsupported("md5")`.
pub fn verify(
    secret: &Secret,
    user: &str,
    salt: [u8; 4],
    response: &[u8],
) -> Result<(), AuthError> {
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    let inner: [u8; 32] = match secret {
        Secret::Md5(stored) => {
            let hex = stored.as_bytes().get(3..).ok_or(AuthError::Failed)?;
            hex.try_into().map_err(|_| AuthError::Failed)?
        }
        Secret::Plain { password, .. } => hex32(
            &Md5::new()
                .chain_update(password)
                .chain_update(user)
                .finalize()
                .into(),
        ),
        Secret::Scram(_) => return Err(AuthError::Unsupported("md5")),
    };
    let outer: [u8; 16] = Md5::new()
        .chain_update(inner)
        .chain_update(salt)
        .finalize()
        .into();
    let mut expected = [0u8; 35];
    expected[..3].copy_from_slice(b"md5");
    expected[3..].copy_from_slice(&hex32(&outer));
    if bool::from(expected.as_slice().ct_eq(response)) {
        Ok(())
    } else {
        Err(AuthError::Failed)
    }
}

/// Lowercase hex of a 16-byte digest.
fn hex32(digest: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::verifier::DEFAULT_ITERATIONS;
    use postgres_protocol::authentication::md5_hash;

    const SALT: [u8; 4] = [0x2a, 0x3d, 0x8f, 0xe0];

    fn md5_secret(user: &str, password: &str) -> Secret {
        let digest: [u8; 16] = Md5::new()
            .chain_update(password)
            .chain_update(user)
            .finalize()
            .into();
        let hex = hex32(&digest);
        Secret::parse(
            &format!("md5{}", std::str::from_utf8(&hex).unwrap()),
            DEFAULT_ITERATIONS,
        )
        .unwrap()
    }

    #[test]
    fn known_vector() {
        // postgres-protocol's own test vector.
        let secret = Secret::parse("password", DEFAULT_ITERATIONS).unwrap();
        let resp = b"md562af4dd09bbb41884907a838a3233294";
        assert_eq!(verify(&secret, "md5_user", SALT, resp), Ok(()));
        let secret = md5_secret("md5_user", "password");
        assert!(matches!(secret, Secret::Md5(_)));
        assert_eq!(verify(&secret, "md5_user", SALT, resp), Ok(()));
    }

    #[test]
    fn plain_and_md5_secrets_against_client() {
        for (user, password) in [("alice", "s3cret"), ("bob", "pässwörd"), ("", "x")] {
            let resp = md5_hash(user.as_bytes(), password.as_bytes(), SALT);
            let mut with_nul = resp.clone().into_bytes();
            with_nul.push(0);
            for secret in [
                Secret::parse(password, DEFAULT_ITERATIONS).unwrap(),
                md5_secret(user, password),
            ] {
                assert_eq!(verify(&secret, user, SALT, resp.as_bytes()), Ok(()));
                assert_eq!(verify(&secret, user, SALT, &with_nul), Ok(()));
                // Wrong salt, wrong password, truncated, trailing garbage.
                assert_eq!(
                    verify(&secret, user, [0; 4], resp.as_bytes()),
                    Err(AuthError::Failed)
                );
                let wrong = md5_hash(user.as_bytes(), b"wrong", SALT);
                assert_eq!(
                    verify(&secret, user, SALT, wrong.as_bytes()),
                    Err(AuthError::Failed)
                );
                assert_eq!(
                    verify(&secret, user, SALT, &resp.as_bytes()[..34]),
                    Err(AuthError::Failed)
                );
                let mut extra = with_nul.clone();
                extra.push(b'x');
                assert_eq!(verify(&secret, user, SALT, &extra), Err(AuthError::Failed));
                assert_eq!(verify(&secret, user, SALT, b""), Err(AuthError::Failed));
            }
        }
    }

    #[test]
    fn plain_secret_is_bound_to_user() {
        let secret = Secret::parse("pw", DEFAULT_ITERATIONS).unwrap();
        let resp = md5_hash(b"alice", b"pw", SALT);
        assert_eq!(
            verify(&secret, "mallory", SALT, resp.as_bytes()),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn scram_secret_is_unsupported() {
        let secret = Secret::parse(
            &postgres_protocol::password::scram_sha_256(b"pw"),
            DEFAULT_ITERATIONS,
        )
        .unwrap();
        let resp = md5_hash(b"u", b"pw", SALT);
        assert_eq!(
            verify(&secret, "u", SALT, resp.as_bytes()),
            Err(AuthError::Unsupported("md5"))
        );
    }
}

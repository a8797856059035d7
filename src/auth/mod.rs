//! Client authentication: pure state machines over stored secrets. The I/O lives in
//! `client::login`.

pub mod md5;
pub mod scram;
mod secret;

pub use secret::{ScramSecret, Secret};

/// Why an authentication exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, unknown user (indistinguishable), or a proof that does not verify.
    #[error("password authentication failed")]
    Failed,
    /// The client's message does not follow the protocol (bad SCRAM syntax, wrong nonce ...).
    #[error("malformed authentication message: {0}")]
    Malformed(&'static str),
    /// The stored secret cannot be used with this method (e.g. md5 auth with a SCRAM secret).
    #[error("stored secret does not support {0} authentication")]
    Unsupported(&'static str),
}

//! Stored secrets as PostgreSQL writes them: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`,
//! `md5<32 hex>`, or plaintext. Parsed once at config load.

/// A parsed SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A user's stored credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Plaintext password. `scram` holds a SCRAM verifier derived from it once at load (random
    /// salt, 4096 iterations), so SCRAM logins never run PBKDF2.
    Plain { password: String, scram: ScramSecret },
    /// `md5` + hex(md5(password || user)), as stored by PostgreSQL.
    Md5(String),
    Scram(ScramSecret),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret material.
        match self {
            Secret::Plain { .. } => f.write_str("Secret::Plain(..)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(..)"),
            Secret::Scram(s) => write!(f, "Secret::Scram({s:?})"),
        }
    }
}

impl Secret {
    /// Parse a stored secret. A string that looks like a SCRAM or md5 secret but is malformed is
    /// an error; anything else is a plaintext password.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let _ = text;
        Err("unimplemented".into())
    }

    /// The plaintext, if this secret has one (needed to log in to PostgreSQL on the user's behalf).
    pub fn plaintext(&self) -> Option<&str> {
        match self {
            Secret::Plain { password, .. } => Some(password),
            _ => None,
        }
    }

    /// The SCRAM verifier to check a client against, if any.
    pub fn scram(&self) -> Option<&ScramSecret> {
        match self {
            Secret::Plain { scram, .. } | Secret::Scram(scram) => Some(scram),
            Secret::Md5(_) => None,
        }
    }
}

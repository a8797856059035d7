//! Stored secrets as PostgreSQL writes them: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`,
//! `md5<32 hex>`, or plaintext. Parsed once at config load.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::scram::verifier;

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

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

impl ScramSecret {
    /// Parse `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    pub fn parse(text: &str) -> Result<ScramSecret, String> {
        match text.strip_prefix(SCRAM_PREFIX) {
            Some(rest) => Self::parse_body(rest),
            None => Err("not a SCRAM-SHA-256 secret".into()),
        }
    }

    fn parse_body(rest: &str) -> Result<ScramSecret, String> {
        const BAD: &str = "malformed SCRAM-SHA-256 secret: expected \
                           SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
        let (params, keys) = rest.split_once('$').ok_or(BAD)?;
        let (iterations, salt) = params.split_once(':').ok_or(BAD)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(BAD)?;
        if !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err("malformed SCRAM-SHA-256 secret: iteration count is not a number".into());
        }
        let iterations: u32 = match iterations.parse() {
            Ok(n) if n >= 1 => n,
            _ => return Err("malformed SCRAM-SHA-256 secret: invalid iteration count".into()),
        };
        let salt = match STANDARD.decode(salt) {
            Ok(s) if !s.is_empty() => s,
            _ => return Err("malformed SCRAM-SHA-256 secret: invalid salt".into()),
        };
        let stored_key =
            decode_key(stored_key).ok_or("malformed SCRAM-SHA-256 secret: invalid StoredKey")?;
        let server_key =
            decode_key(server_key).ok_or("malformed SCRAM-SHA-256 secret: invalid ServerKey")?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

/// `md5` followed by exactly 32 lowercase hex digits (PostgreSQL's MD5_PASSWD_LEN / charset).
fn is_md5_secret(text: &str) -> bool {
    text.len() == 35
        && text.starts_with("md5")
        && text.as_bytes()[3..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A user's stored credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Plaintext password. `scram` holds a SCRAM verifier derived from it once at load (random
    /// salt, `scram_iterations` iterations), so SCRAM logins never run PBKDF2.
    Plain {
        password: String,
        scram: ScramSecret,
    },
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
    ///
    /// Like PostgreSQL's `get_password_type`, `md5` counts as an md5 secret only when followed by
    /// exactly 32 lowercase hex digits; other `md5...` strings are plaintext. Unlike PostgreSQL, a
    /// string starting with `SCRAM-SHA-256$` that does not parse is rejected rather than taken as
    /// a plaintext password (it is almost certainly a mangled verifier). Error messages never
    /// contain the secret. An empty string is rejected: PgBouncer treats it as "no password".
    ///
    /// For plaintext this runs PBKDF2 (`scram_iterations` rounds) once to derive the SCRAM
    /// verifier, so call it at config load or off the async workers, not per login.
    pub fn parse(text: &str, scram_iterations: u32) -> Result<Secret, String> {
        if text.is_empty() {
            return Err("empty password".into());
        }
        if let Some(rest) = text.strip_prefix(SCRAM_PREFIX) {
            return ScramSecret::parse_body(rest).map(Secret::Scram);
        }
        if is_md5_secret(text) {
            return Ok(Secret::Md5(text.to_owned()));
        }
        Ok(Secret::Plain {
            password: text.to_owned(),
            scram: verifier::build(text.as_bytes(), scram_iterations),
        })
    }

    /// A plaintext secret whose verifier was built with another iteration count gets a new one
    /// built with `scram_iterations` (PBKDF2 again); other secrets are left as they are.
    pub fn rebuild_verifier(&mut self, scram_iterations: u32) {
        if let Secret::Plain { password, scram } = self {
            if scram.iterations != scram_iterations {
                *scram = verifier::build(password.as_bytes(), scram_iterations);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::verifier::DEFAULT_ITERATIONS;
    use super::*;

    /// RFC 7677 §3 ("pencil"), in PostgreSQL's pg_authid format.
    const PENCIL: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn scram_secret() {
        let Ok(Secret::Scram(s)) = Secret::parse(PENCIL, DEFAULT_ITERATIONS) else {
            panic!("not scram")
        };
        assert_eq!(s.iterations, 4096);
        assert_eq!(STANDARD.encode(&s.salt), "W22ZaJ0SNY7soEsUEjb6gQ==");
        assert_eq!(
            STANDARD.encode(s.stored_key),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
        assert_eq!(
            STANDARD.encode(s.server_key),
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert_eq!(ScramSecret::parse(PENCIL), Ok(s));
        assert!(ScramSecret::parse("md5abc").is_err());

        let generated = postgres_protocol::password::scram_sha_256(b"pw");
        let Ok(Secret::Scram(s)) = Secret::parse(&generated, DEFAULT_ITERATIONS) else {
            panic!("not scram")
        };
        assert_eq!((s.iterations, s.salt.len()), (4096, 16));
    }

    #[test]
    fn malformed_scram_secrets() {
        let keys = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        for bad in [
            "SCRAM-SHA-256$".to_owned(),
            "SCRAM-SHA-256$4096".to_owned(),
            format!(
                "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${}",
                &keys[..44]
            ),
            format!("SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==${keys}"),
            format!("SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==${keys}"),
            format!("SCRAM-SHA-256$+4096:W22ZaJ0SNY7soEsUEjb6gQ==${keys}"),
            format!("SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==${keys}"),
            format!("SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==${keys}"),
            format!("SCRAM-SHA-256$4096:${keys}"),
            format!("SCRAM-SHA-256$4096:not*base64${keys}"),
            format!(
                "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:{}",
                &keys[45..]
            ),
            format!(
                "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${}:AAAA",
                &keys[..44]
            ),
            format!("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${keys}$extra"),
            format!("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==${keys}:extra"),
        ] {
            let err = Secret::parse(&bad, DEFAULT_ITERATIONS).expect_err(&bad);
            assert!(err.starts_with("malformed SCRAM-SHA-256 secret"), "{err}");
            assert!(
                !err.contains("W22Z") && !err.contains("WG5d"),
                "error echoes secret: {err}"
            );
        }
    }

    #[test]
    fn md5_secrets() {
        let md5 = "md5a3556571e93b0d20722ba62be61e8c2d";
        assert_eq!(
            Secret::parse(md5, DEFAULT_ITERATIONS),
            Ok(Secret::Md5(md5.to_owned()))
        );
        // Not exactly md5 + 32 lowercase hex: plaintext, as in PostgreSQL.
        for plain in [
            "md5",
            "md5a3556571e93b0d20722ba62be61e8c2",
            "md5a3556571e93b0d20722ba62be61e8c2d0",
            "md5A3556571E93B0D20722BA62BE61E8C2D",
            "md5a3556571e93b0d20722ba62be61e8c2g",
            "MD5a3556571e93b0d20722ba62be61e8c2d",
        ] {
            assert!(
                matches!(
                    Secret::parse(plain, DEFAULT_ITERATIONS),
                    Ok(Secret::Plain { .. })
                ),
                "{plain}"
            );
        }
    }

    #[test]
    fn plaintext() {
        let secret = Secret::parse("hunter2", DEFAULT_ITERATIONS).unwrap();
        assert_eq!(secret.plaintext(), Some("hunter2"));
        let scram = secret.scram().unwrap();
        assert_eq!((scram.iterations, scram.salt.len()), (4096, 16));
        assert_eq!(format!("{secret:?}"), "Secret::Plain(..)");
        // A fresh random salt per parse.
        assert_ne!(
            Secret::parse("hunter2", DEFAULT_ITERATIONS)
                .unwrap()
                .scram()
                .unwrap()
                .salt,
            scram.salt
        );
        assert_eq!(
            Secret::parse("", DEFAULT_ITERATIONS),
            Err("empty password".to_owned())
        );
        assert!(matches!(
            Secret::parse(" ", DEFAULT_ITERATIONS),
            Ok(Secret::Plain { .. })
        ));
    }

    /// The verifier of a plaintext password has the count asked for, and is built again when
    /// the count changes; stored secrets stay as they are.
    #[test]
    fn plaintext_with_other_iterations() {
        let mut secret = Secret::parse("hunter2", 1000).unwrap();
        let first = secret.scram().unwrap().clone();
        assert_eq!(first.iterations, 1000);
        assert!(crate::auth::scram::verify_plain(&first, b"hunter2").is_some());
        secret.rebuild_verifier(1000);
        assert_eq!(secret.scram(), Some(&first));
        secret.rebuild_verifier(2000);
        let second = secret.scram().unwrap();
        assert_eq!(second.iterations, 2000);
        assert!(crate::auth::scram::verify_plain(second, b"hunter2").is_some());
        let mut stored = Secret::parse(PENCIL, 1000).unwrap();
        stored.rebuild_verifier(2000);
        assert_eq!(stored.scram().unwrap().iterations, 4096);
    }

    #[test]
    fn debug_hides_material() {
        let dbg = format!("{:?}", Secret::parse(PENCIL, DEFAULT_ITERATIONS).unwrap());
        assert_eq!(dbg, "Secret::Scram(ScramSecret { iterations: 4096, .. })");
    }
}

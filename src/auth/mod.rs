//! Client authentication: pure state machines over stored secrets. The I/O lives in
//! `client::login`.

pub mod auth_query;
pub mod hba;
pub mod md5;
pub mod passthrough;
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

use crate::config::{AuthType, HbaMethod, HbaRule};

/// How one client must authenticate, decided from auth_type (and the hba rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Trust,
    Plain,
    Md5,
    ScramSha256,
    /// TLS client certificate; `map` names an auth_ident_file map (hba `map=`), `None` for
    /// auth_type = cert (any map may vouch for the name).
    Cert {
        map: Option<String>,
    },
    /// The connecting process's OS user (unix socket peer credentials), directly or through
    /// the ident map `map`.
    Peer {
        map: Option<String>,
    },
}

/// Why no method applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// No hba line matched.
    NoEntry,
    /// The first matching hba line says `reject`.
    Rejected,
}

/// The method for a client: auth_type, or for auth_type = hba the first matching rule.
pub fn plan(
    auth_type: AuthType,
    rules: &[HbaRule],
    transport: hba::Transport,
    database: &str,
    user: &str,
) -> Result<Method, PlanError> {
    Ok(match auth_type {
        AuthType::Trust => Method::Trust,
        AuthType::Plain => Method::Plain,
        AuthType::Md5 => Method::Md5,
        AuthType::ScramSha256 => Method::ScramSha256,
        AuthType::Cert => Method::Cert { map: None },
        AuthType::Hba => {
            let rule = hba::find(rules, transport, database, user).ok_or(PlanError::NoEntry)?;
            match rule.method {
                HbaMethod::Trust => Method::Trust,
                HbaMethod::Reject => return Err(PlanError::Rejected),
                HbaMethod::Md5 => Method::Md5,
                HbaMethod::Password => Method::Plain,
                HbaMethod::ScramSha256 => Method::ScramSha256,
                HbaMethod::Cert => Method::Cert {
                    map: rule.map.clone(),
                },
                HbaMethod::Peer => Method::Peer {
                    map: rule.map.clone(),
                },
            }
        }
    })
}

/// Whether a certificate name `cn` may log in as `user`: equal names, or an ident-map entry
/// (in `map` if given, else in any map).
pub fn cert_name_allowed(
    ident: &[crate::config::hba::IdentEntry],
    map: Option<&str>,
    cn: &str,
    user: &str,
) -> bool {
    if cn == user && map.is_none() {
        return true;
    }
    ident
        .iter()
        .any(|e| map.map_or(true, |want| want == e.map) && e.cert_name == cn && e.user == user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hba::IdentEntry;

    #[test]
    fn cert_names_and_maps() {
        let ident = [IdentEntry {
            map: "laptops".into(),
            cert_name: "alice-laptop".into(),
            user: "alice".into(),
        }];
        assert!(cert_name_allowed(&ident, None, "bob", "bob"));
        assert!(cert_name_allowed(&ident, None, "alice-laptop", "alice"));
        assert!(cert_name_allowed(
            &ident,
            Some("laptops"),
            "alice-laptop",
            "alice"
        ));
        // With a map named, only the map decides (as PostgreSQL).
        assert!(!cert_name_allowed(&ident, Some("laptops"), "bob", "bob"));
        assert!(!cert_name_allowed(
            &ident,
            Some("other"),
            "alice-laptop",
            "alice"
        ));
        assert!(!cert_name_allowed(&ident, None, "alice-laptop", "bob"));
    }
}

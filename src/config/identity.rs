//! pgporter's own keys for identity tagging and the audit log (see README "Identity and
//! audit"): typed settings and their value parsers.

use super::settings::parse_strtol_u32;

/// Which statements go to the audit log (`audit_statements`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditStatements {
    None,
    /// Everything except statements known to be read-only (conservative).
    Write,
    All,
}

/// Session tagging with the client's identity.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Default true: tag server sessions (and refuse statements naming the identity GUCs).
    /// reload: yes (new server connections)
    pub identity_tagging: bool,
    /// Default `pgporter.client_user`. reload: yes
    pub identity_guc: String,
    /// Default `pgporter.client_addr`; empty = not set. reload: yes
    pub identity_addr_guc: String,
    /// Default false: append ` - user@addr` to application_name. reload: yes
    pub application_name_add_user: bool,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            identity_tagging: true,
            identity_guc: "pgporter.client_user".into(),
            identity_addr_guc: "pgporter.client_addr".into(),
            application_name_add_user: false,
        }
    }
}

/// The audit log.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// A file path (appended to) or `stdout`; default none = no audit log. reload: no
    pub audit_log: Option<String>,
    /// Default write. reload: yes (new sessions)
    pub audit_statements: AuditStatements,
    /// Default 4096 bytes of SQL text per statement event. reload: yes
    pub audit_max_statement_length: usize,
    /// Default 10000 events queued for the writer before sessions wait. reload: no
    pub audit_queue_size: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            audit_log: None,
            audit_statements: AuditStatements::Write,
            audit_max_statement_length: 4096,
            audit_queue_size: 10_000,
        }
    }
}

pub(super) fn parse_audit_statements(v: &str) -> Result<AuditStatements, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(AuditStatements::None),
        "write" => Ok(AuditStatements::Write),
        "all" => Ok(AuditStatements::All),
        _ => Err(format!("{v:?}: use none, write or all")),
    }
}

pub(super) fn parse_positive(v: &str) -> Result<usize, String> {
    match parse_strtol_u32(v)? {
        0 => Err("must be at least 1".into()),
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

/// A custom (placeholder) GUC name: `prefix.name`, letters, digits and `_`, lower-cased as
/// PostgreSQL does. `empty_ok`: the empty string turns the GUC off.
pub(super) fn parse_custom_guc(v: &str, empty_ok: bool) -> Result<String, String> {
    let name = v.trim().to_ascii_lowercase();
    if name.is_empty() && empty_ok {
        return Ok(name);
    }
    let parts: Vec<&str> = name.split('.').collect();
    let ok = parts.len() == 2
        && name.len() <= 63
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "{v:?} is not a custom GUC name (two identifiers joined by a dot, e.g. pgporter.client_user)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_guc_names() {
        assert_eq!(parse_custom_guc("Acme.Who", false).unwrap(), "acme.who");
        assert!(parse_custom_guc("nodot", false).is_err());
        assert!(parse_custom_guc("a.b.c", false).is_err());
        assert!(parse_custom_guc("a.b; drop", false).is_err());
        assert!(parse_custom_guc("", false).is_err());
        assert_eq!(parse_custom_guc("", true).unwrap(), "");
        assert_eq!(parse_audit_statements("ALL").unwrap(), AuditStatements::All);
        assert!(parse_audit_statements("some").is_err());
        assert!(parse_positive("0").is_err());
    }
}

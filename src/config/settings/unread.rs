//! What pgporter does not read from a PgBouncer configuration, and the warnings it gives:
//! keys it does not implement yet, keys that mean nothing here (with why), unknown sections.

use super::super::{ConfigWarning, RawIni};

/// PgBouncer keys pgporter knows but does not implement yet: accepted with a warning so an
/// existing pgbouncer.ini loads unchanged.
pub(super) const NOT_IMPLEMENTED: &[&str] = &[
    "auth_ldap_options",
    "syslog",
    "syslog_facility",
    "syslog_ident",
    "user",
];

/// PgBouncer keys that mean nothing here, with why; accepted with that warning.
pub(super) const NO_EFFECT: &[(&str, &str)] = &[
    (
        "server_login_retry",
        "a client needing a new server connection always tries the server again; with routing, failover_wait_timeout governs waiting for a host",
    ),
    ("pkt_buf", "pgporter sizes its buffers itself"),
    ("sbuf_loopcnt", "pgporter sizes its buffers itself"),
    ("tcp_defer_accept", "not used by pgporter"),
    ("dns_max_ttl", "host names are resolved at each connect"),
    ("dns_nxdomain_ttl", "host names are resolved at each connect"),
    ("dns_zone_check_period", "host names are resolved at each connect"),
    ("resolv_conf", "host names are resolved by the system resolver"),
    (
        "cancel_wait_timeout",
        "a CancelRequest is passed on at once on a connection of its own, it never waits for a pool",
    ),
    (
        "client_tls_dheparams",
        "rustls offers no finite-field DHE cipher suites (ECDHE only)",
    ),
    (
        "conffile",
        "pgporter reloads the file it was started with",
    ),
    ("job_name", "a Windows service setting"),
    ("service_name", "a Windows service setting"),
    (
        "suspend_timeout",
        "SUSPEND (for PgBouncer's online restart) is not implemented; so_reuseport and a drain replace it",
    ),
];

/// One warning per section pgporter does not read.
pub(super) fn section_warnings(raw: &RawIni, warnings: &mut Vec<ConfigWarning>) {
    let mut seen: Vec<&str> = Vec::new();
    for e in &raw.entries {
        let s = e.section.as_str();
        if matches!(s, "pgbouncer" | "databases" | "users" | "peers") || seen.contains(&s) {
            continue;
        }
        seen.push(s);
        warnings.push(ConfigWarning {
            file: e.file.clone(),
            line: e.line,
            key: format!("[{s}]"),
            message: "unknown section, ignored".into(),
        });
    }
}

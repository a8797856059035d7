//! SHOW CONFIG: key, value, default, changeable (PgBouncer's columns).

use std::time::Duration;

use super::resultset::{ResultSet, Type::Text};
use crate::config::{AuthType, LogFormat, Settings};

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

fn auth(a: AuthType) -> &'static str {
    match a {
        AuthType::ScramSha256 => "scram-sha-256",
        AuthType::Md5 => "md5",
        AuthType::Plain => "plain",
        AuthType::Trust => "trust",
        AuthType::Hba => "hba",
        AuthType::Cert => "cert",
    }
}

fn sslmode(m: crate::config::SslMode) -> String {
    use crate::config::SslMode::*;
    match m {
        Disable => "disable",
        Allow => "allow",
        Prefer => "prefer",
        Require => "require",
        VerifyCa => "verify-ca",
        VerifyFull => "verify-full",
    }
    .to_string()
}

fn protocols(p: crate::config::TlsProtocols) -> String {
    match (p.tls12, p.tls13) {
        (true, true) => "secure",
        (true, false) => "tlsv1.2",
        (false, true) => "tlsv1.3",
        (false, false) => "",
    }
    .to_string()
}

fn ciphers(c: &crate::config::TlsCiphers) -> String {
    match c {
        crate::config::TlsCiphers::Default => "default".to_string(),
        crate::config::TlsCiphers::Named(names) => names.join(":"),
    }
}

fn tls13(names: Option<&[String]>) -> String {
    names.map_or_else(|| "default".to_string(), |n| n.join(":"))
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

fn b(v: bool) -> String {
    if v { "1" } else { "0" }.to_string()
}

/// (key, value, reloadable) for every setting, in key order.
fn rows(s: &Settings) -> Vec<(&'static str, String, bool)> {
    let mut v = vec![
        ("admin_users", s.admin_users.join(","), true),
        (
            "application_name_add_host",
            b(s.application_name_add_host),
            true,
        ),
        ("auth_file", s.auth_file.clone().unwrap_or_default(), true),
        ("auth_type", auth(s.auth_type).to_string(), true),
        ("client_login_timeout", secs(s.client_login_timeout), true),
        ("default_pool_size", s.default_pool_size.to_string(), true),
        (
            "ignore_startup_parameters",
            s.ignore_startup_parameters.join(","),
            true,
        ),
        (
            "track_extra_parameters",
            s.track_extra_parameters.join(","),
            true,
        ),
        ("listen_addr", s.listen_addr.join(","), false),
        ("listen_port", s.listen_port.to_string(), false),
        ("log_connections", b(s.log_connections), true),
        ("log_disconnections", b(s.log_disconnections), true),
        (
            "log_format",
            match s.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
                LogFormat::Pgbouncer => "pgbouncer",
            }
            .to_string(),
            false,
        ),
        ("log_pooler_errors", b(s.log_pooler_errors), true),
        ("log_stats", b(s.log_stats), true),
        ("worker_threads", s.worker_threads.to_string(), false),
        ("logfile", s.logfile.clone().unwrap_or_default(), false),
        ("verbose", s.verbose.to_string(), false),
        ("login_notify_message", s.login_notify_message.clone(), true),
        ("pool_idle_timeout", secs(s.pool_idle_timeout), true),
        ("query_wait_notify", secs(s.query_wait_notify), true),
        ("max_client_conn", s.max_client_conn.to_string(), true),
        ("max_db_connections", s.max_db_connections.to_string(), true),
        ("max_packet_size", s.max_packet_size.to_string(), true),
        (
            "max_prepared_statements",
            s.max_prepared_statements.to_string(),
            true,
        ),
        (
            "max_user_connections",
            s.max_user_connections.to_string(),
            true,
        ),
        (
            "metrics_listen_addr",
            s.metrics_listen_addr.clone().unwrap_or_default(),
            false,
        ),
        ("listen_backlog", s.listen_backlog.to_string(), false),
        ("min_pool_size", s.min_pool_size.to_string(), true),
        ("pidfile", s.pidfile.clone().unwrap_or_default(), false),
        ("pool_mode", s.pool_mode.as_str().to_string(), true),
        ("query_wait_timeout", secs(s.query_wait_timeout), true),
        (
            "server_connect_timeout",
            secs(s.server_connect_timeout),
            true,
        ),
        ("server_check_delay", secs(s.server_check_delay), true),
        ("server_check_query", s.server_check_query.clone(), true),
        ("server_fast_close", b(s.server_fast_close), true),
        ("server_idle_timeout", secs(s.server_idle_timeout), true),
        ("server_lifetime", secs(s.server_lifetime), true),
        ("server_reset_query", s.server_reset_query.clone(), true),
        (
            "server_reset_query_always",
            b(s.server_reset_query_always),
            true,
        ),
        ("server_reset_timeout", secs(s.server_reset_timeout), true),
        ("shutdown_wait_timeout", secs(s.shutdown_wait_timeout), true),
        ("so_reuseport", b(s.so_reuseport), false),
        ("peer_id", s.peer_id.to_string(), false),
        ("disable_pqexec", b(s.disable_pqexec), true),
        ("server_round_robin", b(s.server_round_robin), true),
        ("stats_period", secs(s.stats_period), true),
        ("stats_users", s.stats_users.join(","), true),
        ("unix_socket_dir", s.unix_socket_dir.clone(), false),
        ("unix_socket_group", s.unix_socket_group.clone(), false),
        (
            "unix_socket_mode",
            // Octal, as it is written (PgBouncer prints 511, and reads `511` as decimal; here
            // the file's value is always octal, so the shown one reads back the same).
            format!("0{:o}", s.unix_socket_mode),
            false,
        ),
        ("query_timeout", secs(s.query_timeout), true),
        (
            "idle_transaction_timeout",
            secs(s.idle_transaction_timeout),
            true,
        ),
        ("transaction_timeout", secs(s.transaction_timeout), true),
        ("client_idle_timeout", secs(s.client_idle_timeout), true),
        ("autodb_idle_timeout", secs(s.autodb_idle_timeout), true),
        ("tcp_keepalive", b(s.tcp_keepalive), true),
        ("tcp_keepcnt", s.tcp_keepcnt.to_string(), true),
        ("tcp_keepidle", secs(s.tcp_keepidle), true),
        ("tcp_keepintvl", secs(s.tcp_keepintvl), true),
        (
            "tcp_user_timeout",
            s.tcp_user_timeout.as_millis().to_string(),
            true,
        ),
        ("tcp_socket_buffer", s.tcp_socket_buffer.to_string(), true),
        ("reserve_pool_size", s.reserve_pool_size.to_string(), true),
        ("reserve_pool_timeout", secs(s.reserve_pool_timeout), true),
        (
            "max_db_client_connections",
            s.max_db_client_connections.to_string(),
            true,
        ),
        (
            "max_user_client_connections",
            s.max_user_client_connections.to_string(),
            true,
        ),
        ("fair_sharing", b(s.fair_sharing), true),
        ("auth_user", s.auth_user.clone().unwrap_or_default(), true),
        ("auth_query", s.auth_query.clone(), true),
        (
            "auth_dbname",
            s.auth_dbname.clone().unwrap_or_default(),
            true,
        ),
        (
            "auth_hba_file",
            s.auth_hba_file.clone().unwrap_or_default(),
            true,
        ),
        ("client_tls_sslmode", sslmode(s.client_tls_sslmode), true),
        ("client_tls_key_file", opt(&s.client_tls_key_file), true),
        ("client_tls_cert_file", opt(&s.client_tls_cert_file), true),
        ("client_tls_ca_file", opt(&s.client_tls_ca_file), true),
        (
            "client_tls_protocols",
            protocols(s.client_tls_protocols),
            true,
        ),
        ("client_tls_ciphers", ciphers(&s.client_tls_ciphers), true),
        (
            "client_tls13_ciphers",
            tls13(s.client_tls13_ciphers.as_deref()),
            true,
        ),
        (
            "client_tls_ecdhcurve",
            s.client_tls_ecdhcurve
                .as_deref()
                .map_or_else(|| "auto".to_string(), |g| g.join(":")),
            true,
        ),
        ("server_tls_sslmode", sslmode(s.server_tls_sslmode), true),
        ("server_tls_key_file", opt(&s.server_tls_key_file), true),
        ("server_tls_cert_file", opt(&s.server_tls_cert_file), true),
        ("server_tls_ca_file", opt(&s.server_tls_ca_file), true),
        (
            "server_tls_protocols",
            protocols(s.server_tls_protocols),
            true,
        ),
        ("server_tls_ciphers", ciphers(&s.server_tls_ciphers), true),
        (
            "server_tls13_ciphers",
            tls13(s.server_tls13_ciphers.as_deref()),
            true,
        ),
        ("auth_ident_file", opt(&s.auth_ident_file), true),
        ("auth_query_cache_ttl", secs(s.auth_query_cache_ttl), true),
        ("auth_failure_delay", secs(s.auth_failure_delay), true),
        ("scram_iterations", s.scram_iterations.to_string(), true),
        (
            "max_user_pool_share",
            // 0 = no cap (an empty value is not accepted back).
            s.max_user_pool_share.map_or_else(
                || "0".into(),
                |share| match share {
                    crate::config::PoolShare::Count(n) => n.to_string(),
                    crate::config::PoolShare::Percent(p) => format!("{p}%"),
                },
            ),
            true,
        ),
        (
            "proxy_protocol_trusted",
            s.proxy_protocol_trusted
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            true,
        ),
        (
            "readonly_listen_port",
            s.routing
                .readonly_listen_port
                .map_or_else(String::new, |p| p.to_string()),
            false,
        ),
        (
            "health_check_period",
            secs(s.routing.health_check_period),
            true,
        ),
        ("max_standby_lag", secs(s.routing.max_standby_lag), true),
        (
            "max_standby_lag_bytes",
            s.routing.max_standby_lag_bytes.to_string(),
            true,
        ),
        (
            "failover_wait_timeout",
            secs(s.routing.failover_wait_timeout),
            true,
        ),
        ("identity_tagging", b(s.identity.identity_tagging), true),
        ("identity_guc", s.identity.identity_guc.clone(), true),
        (
            "identity_addr_guc",
            s.identity.identity_addr_guc.clone(),
            true,
        ),
        (
            "application_name_add_user",
            b(s.identity.application_name_add_user),
            true,
        ),
        ("audit_log", opt(&s.audit.audit_log), false),
        (
            "audit_statements",
            match s.audit.audit_statements {
                crate::config::AuditStatements::None => "none",
                crate::config::AuditStatements::Write => "write",
                crate::config::AuditStatements::All => "all",
            }
            .to_string(),
            true,
        ),
        (
            "audit_max_statement_length",
            s.audit.audit_max_statement_length.to_string(),
            true,
        ),
        (
            "audit_queue_size",
            s.audit.audit_queue_size.to_string(),
            false,
        ),
    ];
    v.sort_by_key(|r| r.0);
    v
}

pub(super) fn config(s: &Settings) -> ResultSet {
    let defaults: std::collections::HashMap<&str, String> = rows(&Settings::default())
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    let mut rs = ResultSet::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for (k, v, reloadable) in rows(s) {
        rs.push(vec![
            k.into(),
            v.into(),
            defaults.get(k).cloned().unwrap_or_default().into(),
            if reloadable { "yes" } else { "no" }.into(),
        ]);
    }
    rs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value SHOW CONFIG prints reads back as the same setting (SET key = value works
    /// with what SHOW CONFIG shows), and no key is listed twice.
    #[test]
    fn values_read_back() {
        let mut s = Settings::default();
        s.client_tls_protocols.tls13 = false;
        s.max_user_pool_share = Some(crate::config::PoolShare::Percent(30));
        s.proxy_protocol_trusted = vec!["10.0.0.0/8".parse().unwrap()];
        s.routing.readonly_listen_port = Some(6433);
        let shown = rows(&s);
        let mut keys: Vec<_> = shown.iter().map(|r| r.0).collect();
        keys.dedup();
        assert_eq!(keys.len(), shown.len(), "a key listed twice");
        // The defaults too (an unset cap was shown as '', which SET refused).
        for (key, value, _) in rows(&Settings::default()).iter().chain(&shown) {
            let mut back = Settings::default();
            assert_eq!(back.apply(key, value), Ok(true), "{key} = {value:?}");
            let again = rows(&back);
            let (_, v2, _) = again.iter().find(|r| r.0 == *key).unwrap();
            assert_eq!(v2, value, "{key}");
        }
    }
}

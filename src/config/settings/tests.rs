use std::path::Path;

use super::*;
use crate::config::ini::parse_ini_with;

fn load(text: &str) -> (Settings, Vec<ConfigError>, Vec<ConfigWarning>) {
    let raw = parse_ini_with(text, "p.ini", &mut |_: &Path| Err("no includes".into())).unwrap();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let settings = Settings::from_ini(&raw, &mut errors, &mut warnings);
    (settings, errors, warnings)
}

fn ok(text: &str) -> Settings {
    let (s, errors, _) = load(text);
    assert!(errors.is_empty(), "{errors:?}");
    s
}

fn one_error(text: &str) -> ConfigError {
    let (_, mut errors, _) = load(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn defaults_without_section() {
    let s = ok("");
    assert_eq!(s.listen_port, 6432);
    assert_eq!(s.auth_type, AuthType::ScramSha256);
    assert_eq!(s.max_packet_size, MAX_PACKET_SIZE_LIMIT);
}

#[test]
fn every_kind_of_value() {
    let s = ok("[pgporter]\n\
        listen_addr = 127.0.0.1, ::1 ,,\n\
        listen_port = 7000\n\
        unix_socket_dir =\n\
        unix_socket_mode = 0700\n\
        auth_type = MD5\n\
        auth_file = users.txt\n\
        pool_mode = Session\n\
        max_client_conn = 1000\n\
        default_pool_size = 5\n\
        min_pool_size = 1\n\
        max_db_connections = 50\n\
        max_user_connections = 40\n\
        server_reset_query =\n\
        server_connect_timeout = 0.5\n\
        server_idle_timeout = 500ms\n\
        server_lifetime = 2min\n\
        query_wait_timeout = 1h\n\
        client_login_timeout = 30s\n\
        ignore_startup_parameters = extra_float_digits, Search_Path\n\
        application_name_add_host = yes\n\
        log_connections = Off\n\
        log_disconnections = 0\n\
        log_pooler_errors = FALSE\n\
        admin_users = admin, root\n\
        stats_users = stats\n\
        logfile = /var/log/p.log\n\
        pidfile =\n\
        max_packet_size = 65536\n\
        server_reset_timeout = 3\n\
        shutdown_wait_timeout = 1.5\n\
        tcp_user_timeout = 2500\n\
        server_check_query =\n\
        server_check_delay = 0\n\
        listen_backlog = 4096\n\
        so_reuseport = 1\n");
    assert_eq!(s.listen_addr, vec!["127.0.0.1", "::1"]);
    assert_eq!(s.listen_port, 7000);
    assert_eq!(s.unix_socket_dir, "");
    assert_eq!(s.unix_socket_mode, 0o700);
    assert_eq!(s.auth_type, AuthType::Md5);
    assert_eq!(s.auth_file.as_deref(), Some("users.txt"));
    assert_eq!(s.pool_mode, PoolMode::Session);
    assert_eq!(
        (s.max_client_conn, s.default_pool_size, s.min_pool_size),
        (1000, 5, 1)
    );
    assert_eq!((s.max_db_connections, s.max_user_connections), (50, 40));
    assert_eq!(s.server_reset_query, "");
    // PgBouncer's unit for tcp_user_timeout is milliseconds.
    assert_eq!(s.tcp_user_timeout, Duration::from_millis(2500));
    assert_eq!(s.server_check_query, "");
    assert_eq!(s.server_check_delay, Duration::ZERO);
    assert_eq!((s.listen_backlog, s.so_reuseport), (4096, true));
    assert_eq!(s.server_connect_timeout, Duration::from_millis(500));
    assert_eq!(s.server_idle_timeout, Duration::from_millis(500));
    assert_eq!(s.server_lifetime, Duration::from_secs(120));
    assert_eq!(s.query_wait_timeout, Duration::from_secs(3600));
    assert_eq!(s.client_login_timeout, Duration::from_secs(30));
    assert_eq!(
        s.ignore_startup_parameters,
        vec!["extra_float_digits", "search_path"]
    );
    assert!(s.application_name_add_host);
    assert!(!s.log_connections && !s.log_disconnections && !s.log_pooler_errors);
    assert_eq!(s.admin_users, vec!["admin", "root"]);
    assert_eq!(s.stats_users, vec!["stats"]);
    assert_eq!(s.logfile.as_deref(), Some("/var/log/p.log"));
    assert_eq!(s.pidfile, None);
    assert_eq!(s.max_packet_size, 65536);
    assert_eq!(s.server_reset_timeout, Duration::from_secs(3));
    assert_eq!(s.shutdown_wait_timeout, Duration::from_millis(1500));
}

#[test]
fn repeated_key_last_wins() {
    let s = ok("[pgbouncer]\nlisten_port = 1000\nlisten_port = 2000\n");
    assert_eq!(s.listen_port, 2000);
}

#[test]
fn booleans() {
    for (v, want) in [
        ("1", true),
        ("yes", true),
        ("ON", true),
        ("True", true),
        ("0", false),
        ("No", false),
        ("off", false),
        ("false", false),
        // PgBouncer 1.18 reads booleans as integers: it starts with these (SHOW CONFIG
        // shows tcp_keepalive 2, log_disconnections -1, log_connections 0 for 0x0).
        ("2", true),
        ("-1", true),
        ("0x0", false),
        ("-0", false),
        (" 010 ", true),
    ] {
        assert_eq!(parse_bool(v), Ok(want), "{v}");
    }
    for v in ["", "y", "-+1", "--1", "1.0", "2x"] {
        assert!(parse_bool(v).is_err(), "{v}");
    }
    let e = one_error("[pgbouncer]\n\nlog_connections = maybe\n");
    assert_eq!(
        (e.file.as_str(), e.line, e.key.as_str()),
        ("p.ini", 3, "log_connections")
    );
    assert!(e.message.contains("not a boolean"), "{e}");
    assert!(
        e.to_string().starts_with("p.ini:3: log_connections: "),
        "{e}"
    );
}

#[test]
fn integers() {
    for (v, needle) in [
        ("-1", "negative"),
        ("abc", "not an integer"),
        ("", "not an integer"),
        ("12x", "not an integer"),
        ("4294967296", "out of range"),
    ] {
        let e = one_error(&format!("[pgbouncer]\nmax_client_conn = {v}\n"));
        assert_eq!((e.line, e.key.as_str()), (2, "max_client_conn"));
        assert!(e.message.contains(needle), "{v}: {e}");
    }
    let e = one_error("[pgbouncer]\nlisten_port = 65536\n");
    assert!(e.message.contains("out of range"), "{e}");
    assert_eq!(
        ok("[pgbouncer]\nmax_client_conn = 4294967295\n").max_client_conn,
        u32::MAX
    );
}

/// scram_iterations: an integer (as PgBouncer's, strtol base 0) of at least 1 and at most
/// PostgreSQL's INT_MAX; 0 (which PgBouncer takes, and then no SCRAM login works) and text are
/// errors naming the line and key.
#[test]
fn scram_iterations() {
    assert_eq!(ok("").scram_iterations, 4096);
    assert_eq!(
        ok("[pgbouncer]\nscram_iterations = 1\n").scram_iterations,
        1
    );
    assert_eq!(
        ok("[pgbouncer]\nscram_iterations = 0x400\n").scram_iterations,
        1024
    );
    assert_eq!(
        ok("[pgbouncer]\nscram_iterations = 2147483647\n").scram_iterations,
        i32::MAX.unsigned_abs()
    );
    for (v, needle) in [
        (
            "0",
            "\"0\" is out of range: an iteration count is 1 to 2147483647",
        ),
        ("-0", "is out of range"),
        ("2147483648", "is out of range"),
        ("-5", "\"-5\" must not be negative"),
        ("many", "\"many\" is not an integer"),
        ("", "is not an integer"),
        ("4096.5", "is not an integer"),
    ] {
        let e = one_error(&format!("[pgbouncer]\n\nscram_iterations = {v}\n"));
        assert_eq!((e.line, e.key.as_str()), (3, "scram_iterations"), "{v}");
        assert!(e.message.contains(needle), "{v}: {e}");
    }
}

/// [pgbouncer] integers read as PgBouncer's `strtol(v, &end, 0)`; [databases] stays decimal
/// (PgBouncer's `atoi`).
#[test]
fn integers_in_strtol_bases() {
    for (v, n) in [
        ("10", 10),
        ("0x10", 16),
        ("0XfF", 255),
        ("010", 8),
        ("0", 0),
        ("00", 0),
        ("+12", 12),
        ("-0", 0),
        ("-0x0", 0),
    ] {
        let s = ok(&format!("[pgbouncer]\nmax_client_conn = {v}\n"));
        assert_eq!(s.max_client_conn, n, "{v}");
    }
    assert_eq!(ok("[pgbouncer]\nlisten_port = 0x1538\n").listen_port, 5432);
    assert_eq!(
        ok("[pgbouncer]\nmax_packet_size = 0x400\n").max_packet_size,
        1024
    );
    for (v, needle) in [
        ("08", "leading 0 means octal"),
        ("0x", "not an integer"),
        ("0xg", "not an integer"),
        ("+-1", "not an integer"),
        ("- 1", "not an integer"),
        ("-0x10", "negative"),
        ("0x100000000", "out of range"),
    ] {
        let e = one_error(&format!("[pgbouncer]\nmax_client_conn = {v}\n"));
        assert!(e.message.contains(needle), "{v}: {e}");
    }
    // [databases]/[users] values stay decimal.
    assert_eq!(parse_u32("010"), Ok(10));
    assert!(parse_u32("0x10").is_err());
}

#[test]
fn durations() {
    // Durations are read with strtod, as PgBouncer 1.18 reads them (live: SHOW CONFIG
    // showed 16, 100, 5 and 25): hex, exponents and a sign, but no octal.
    assert_eq!(parse_duration("0x10"), Ok(Duration::from_secs(16)));
    assert_eq!(parse_duration("010"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("1e2"), Ok(Duration::from_secs(100)));
    assert_eq!(parse_duration("+5"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("2.5E1"), Ok(Duration::from_secs(25)));
    assert_eq!(parse_millis("0x10"), Ok(Duration::from_millis(16)));
    assert_eq!(parse_millis("1e3"), Ok(Duration::from_secs(1)));
    assert_eq!(parse_millis("30s"), Ok(Duration::from_secs(30)));
    let loaded = ok(
        "[pgbouncer]\nserver_idle_timeout = 1e2\nquery_timeout = +5\n\
                     client_idle_timeout = 0x10\nidle_transaction_timeout = 2.5E1\n",
    );
    assert_eq!(loaded.server_idle_timeout, Duration::from_secs(100));
    assert_eq!(loaded.query_timeout, Duration::from_secs(5));
    assert_eq!(loaded.client_idle_timeout, Duration::from_secs(16));
    assert_eq!(loaded.idle_transaction_timeout, Duration::from_secs(25));
    assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("10 s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("3min"), Ok(Duration::from_secs(180)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    for bad in [
        "-1", "", "abc", "5 days", "1.2.3", ".", "1e", "0x", "inf", "nan", "+", "1e999",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    let e = one_error("[pgbouncer]\nserver_lifetime = soon\n");
    assert_eq!((e.line, e.key.as_str()), (2, "server_lifetime"));
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn socket_mode_is_octal() {
    assert_eq!(
        ok("[pgbouncer]\nunix_socket_mode = 777\n").unix_socket_mode,
        0o777
    );
    assert_eq!(
        one_error("[pgbouncer]\nunix_socket_mode = 0789\n").key,
        "unix_socket_mode"
    );
    assert!(parse_mode("01777").is_err());
}

#[test]
fn auth_type_and_pool_mode() {
    assert_eq!(parse_auth_type("SCRAM-SHA-256"), Ok(AuthType::ScramSha256));
    assert_eq!(parse_auth_type("plain"), Ok(AuthType::Plain));
    assert_eq!(parse_auth_type("trust"), Ok(AuthType::Trust));
    assert_eq!(parse_auth_type("hba"), Ok(AuthType::Hba));
    assert_eq!(parse_auth_type("cert"), Ok(AuthType::Cert));
    let e = one_error("[pgbouncer]\nauth_type = pam\n");
    assert!(e.message.contains("not supported yet"), "{e}");
    assert!(parse_auth_type("kerberos").unwrap_err().contains("unknown"));

    assert_eq!(
        ok("[pgbouncer]\npool_mode = Transaction\n").pool_mode,
        PoolMode::Transaction
    );
    assert_eq!(
        ok("[pgbouncer]\npool_mode = statement\n").pool_mode,
        PoolMode::Statement
    );
    assert!(parse_pool_mode("weird").unwrap_err().contains("unknown"));
}

#[test]
fn max_packet_size_limit() {
    let s = ok("[pgbouncer]\nmax_packet_size = 1073741823\n");
    assert_eq!(s.max_packet_size, (1 << 30) - 1);
    // PgBouncer's default (2147483647) is accepted and clamped to PostgreSQL's limit.
    let s = ok("[pgbouncer]\nmax_packet_size = 2147483647\n");
    assert_eq!(s.max_packet_size, (1 << 30) - 1);
    assert!(one_error("[pgbouncer]\nmax_packet_size = 0\n")
        .message
        .contains("at least 1"));
}

#[test]
fn all_errors_reported_at_once() {
    let (_, errors, _) = load(
        "[pgbouncer]\nlisten_port = x\nlog_connections = maybe\nserver_lifetime = -5\npool_mode = row\n",
    );
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "listen_port"),
            (3, "log_connections"),
            (4, "server_lifetime"),
            (5, "pool_mode")
        ]
    );
}

#[test]
fn unknown_and_unimplemented_keys_warn() {
    let (s, errors, warnings) = load(
        "[pgbouncer]\nauth_ldap_options = x\nSYSLOG = 1\nno_such_key = 1\n\
         [peers]\n1 = host=x\n[weird]\na = b\n[databases]\n[users]\n",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(s.listen_port, 6432);
    let got: Vec<(usize, &str, &str)> = warnings
        .iter()
        .map(|w| (w.line, w.key.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (8, "[weird]", "unknown section, ignored"),
            (2, "auth_ldap_options", "not implemented yet, ignored"),
            (3, "syslog", "not implemented yet, ignored"),
            (4, "no_such_key", "unknown key, ignored"),
        ]
    );
}

#[test]
fn not_implemented_list_is_disjoint_from_fields() {
    let mut s = Settings::default();
    for key in NOT_IMPLEMENTED
        .iter()
        .chain(NO_EFFECT.iter().map(|(k, _)| k))
    {
        assert_eq!(s.apply(key, "1"), Ok(false), "{key} is implemented");
    }
}

#[test]
fn keys_without_meaning_here_say_why() {
    let (_, errors, warnings) = load(
        "[pgbouncer]
pkt_buf = 8192
",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .message
            .starts_with("no effect in pgporter (pgporter sizes its buffers itself"),
        "{:?}",
        warnings[0].message
    );
}

#[test]
fn routing_keys() {
    let s = ok("[pgbouncer]\n");
    assert_eq!(s.routing, RoutingSettings::default());
    assert_eq!(s.routing.failover_wait_timeout, Duration::from_secs(30));
    let s = ok(
        "[pgbouncer]\nreadonly_listen_port = 6433\nhealth_check_period = 250ms\n\
                max_standby_lag = 5\nmax_standby_lag_bytes = 1048576\nfailover_wait_timeout = 0\n",
    );
    assert_eq!(s.routing.readonly_listen_port, Some(6433));
    assert_eq!(s.routing.health_check_period, Duration::from_millis(250));
    assert_eq!(s.routing.max_standby_lag, Duration::from_secs(5));
    assert_eq!(s.routing.max_standby_lag_bytes, 1 << 20);
    assert_eq!(s.routing.failover_wait_timeout, Duration::ZERO);
    assert_eq!(
        ok("[pgbouncer]\nreadonly_listen_port =\n")
            .routing
            .readonly_listen_port,
        None
    );
    assert_eq!(
        one_error("[pgbouncer]\nhealth_check_period = 0\n").key,
        "health_check_period"
    );
    assert_eq!(
        one_error("[pgbouncer]\nreadonly_listen_port = x\n").key,
        "readonly_listen_port"
    );
}

//! `load()` end to end: ini + `%include` + auth_file from a temporary directory.

use super::*;

#[test]
fn load_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir(p.join("conf.d")).unwrap();
    std::fs::write(
        p.join("pgbouncer.ini"),
        "[pgporter]\nauth_file = users.txt\nsyslog = 1\n%include conf.d/dbs.ini\n",
    )
    .unwrap();
    std::fs::write(
        p.join("conf.d/dbs.ini"),
        "[databases]\napp = host=127.0.0.1 dbname=real\n* = port=5433\n[users]\nu = max_user_connections=2\n",
    )
    .unwrap();
    std::fs::write(p.join("users.txt"), "\"u\" \"pw\"\n").unwrap();

    let config = load(&p.join("pgbouncer.ini")).unwrap();
    assert_eq!(config.settings.auth_file.as_deref(), Some("users.txt"));
    assert_eq!(
        config.database("app").unwrap().dbname.as_deref(),
        Some("real")
    );
    assert_eq!(config.database("other").unwrap().hosts[0].port, 5433);
    // No host: the unix socket in unix_socket_dir (default /tmp), as PgBouncer.
    assert_eq!(config.database("other").unwrap().hosts[0].host, "/tmp");
    assert_eq!(config.users["u"].max_user_connections, Some(2));
    assert_eq!(config.userlist["u"].plaintext(), Some("pw"));
    assert_eq!(config.warnings.len(), 1);
    assert_eq!(config.warnings[0].key, "syslog");
}

/// The auth_file's plaintext passwords get verifiers with scram_iterations; stored verifiers
/// keep theirs. An admin `SET scram_iterations` builds the plaintext ones again (new salt),
/// and only when the count changes.
#[test]
fn plaintext_verifiers_follow_scram_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("p.ini");
    std::fs::write(
        &ini,
        "[pgbouncer]\nauth_file = u.txt\nscram_iterations = 1000\n",
    )
    .unwrap();
    let stored = crate::auth::scram::verifier::build(b"pw", 4096);
    let stored = format!(
        "SCRAM-SHA-256$4096:{}$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:\
         AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &stored.salt)
    );
    std::fs::write(
        dir.path().join("u.txt"),
        format!("\"plain\" \"pw\"\n\"scram\" \"{stored}\"\n"),
    )
    .unwrap();
    let config = load(&ini).unwrap();
    let iterations = |c: &Config, user: &str| c.userlist[user].scram().unwrap().iterations;
    assert_eq!(iterations(&config, "plain"), 1000);
    assert_eq!(iterations(&config, "scram"), 4096);
    let plain = config.userlist["plain"].scram().unwrap();
    assert!(crate::auth::scram::verify_plain(plain, b"pw").is_some());

    let set = config
        .with_setting("scram_iterations", "2000")
        .unwrap()
        .unwrap();
    assert_eq!(set.settings.scram_iterations, 2000);
    assert_eq!(iterations(&set, "plain"), 2000);
    assert_eq!(iterations(&set, "scram"), 4096);
    let rebuilt = set.userlist["plain"].scram().unwrap();
    assert_ne!(rebuilt.salt, plain.salt);
    assert!(crate::auth::scram::verify_plain(rebuilt, b"pw").is_some());
    assert_eq!(set.userlist["plain"].plaintext(), Some("pw"));
    // The same count: the verifier is kept as it is.
    let same = set
        .with_setting("scram_iterations", "2000")
        .unwrap()
        .unwrap();
    assert_eq!(same.userlist["plain"], set.userlist["plain"]);
    assert!(config.with_setting("scram_iterations", "0").is_err());
}

/// The admin console's cheap "is this ours?" agrees with what SET would do.
#[test]
fn is_setting_agrees_with_with_setting() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("p.ini");
    std::fs::write(&ini, "[pgbouncer]\n").unwrap();
    let config = load(&ini).unwrap();
    for key in [
        "listen_port",
        "Max_Client_Conn",
        "auth_file",
        "scram_iterations",
        "health_check_period",
        "application_name",
        "DateStyle",
        "syslog",
    ] {
        for value in ["", "1", "x"] {
            let ours = !matches!(config.with_setting(key, value), Ok(None));
            assert_eq!(Config::is_setting(key), ours, "{key} = {value:?}");
        }
    }
}

#[test]
fn load_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("p.ini");
    std::fs::write(
        &ini,
        "[pgbouncer]\nlisten_port = x\nauth_file = missing.txt\n[databases]\nd = nope=1\n",
    )
    .unwrap();
    let errors = load(&ini).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["listen_port", "d", "auth_file"]);
}

#[test]
fn pool_mode_of_a_pool_user_then_database_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("p.ini");
    std::fs::write(
        &ini,
        "[pgbouncer]\npool_mode = transaction\n[databases]\nsess = pool_mode=session\n\
         * = host=127.0.0.1\n[users]\nbatch = pool_mode=transaction\n",
    )
    .unwrap();
    let config = load(&ini).unwrap();
    assert_eq!(config.pool_mode("other", "alice"), PoolMode::Transaction);
    assert_eq!(config.pool_mode("sess", "alice"), PoolMode::Session);
    assert_eq!(config.pool_mode("sess", "batch"), PoolMode::Transaction);
}

#[test]
fn timeouts_of_a_pool_user_then_database_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("p.ini");
    std::fs::write(
        &ini,
        "[pgbouncer]\nquery_wait_timeout = 100\nquery_timeout = 50\nserver_lifetime = 3000\n\
         client_idle_timeout = 0\n\
         [databases]\nshort = query_wait_timeout=3 server_lifetime=60\n* = host=127.0.0.1\n\
         [users]\nbatch = query_wait_timeout=0 query_timeout=0 idle_transaction_timeout=7 \
         client_idle_timeout=9\n",
    )
    .unwrap();
    let config = load(&ini).unwrap();
    let secs = std::time::Duration::from_secs;
    assert_eq!(config.query_wait_timeout("other", "alice"), secs(100));
    assert_eq!(config.query_wait_timeout("short", "alice"), secs(3));
    assert_eq!(config.query_wait_timeout("short", "batch"), secs(0));
    assert_eq!(config.server_lifetime("other"), secs(3000));
    assert_eq!(config.server_lifetime("short"), secs(60));
    assert_eq!(config.client_idle_timeout("alice"), secs(0));
    assert_eq!(config.client_idle_timeout("batch"), secs(9));
    let alice = config.session_timeouts("alice");
    assert_eq!((alice.query, alice.idle_transaction), (secs(50), secs(0)));
    // As PgBouncer: a per-user query_timeout of 0 is not set, the [pgbouncer] value applies
    // (query_wait_timeout = 0 above is no limit).
    let batch = config.session_timeouts("batch");
    assert_eq!((batch.query, batch.idle_transaction), (secs(50), secs(7)));
}

/// min_pool_size is not applied under identity tagging (the default): a [databases] entry's
/// is warned about as the [pgbouncer] key is (it was silently not applied).
#[test]
fn min_pool_size_under_tagging_is_warned_about_wherever_it_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("p.ini");
    let write = |tagging: &str| {
        std::fs::write(
            &ini,
            format!(
                "[databases]\napp = host=127.0.0.1 min_pool_size=2\nother = host=127.0.0.1\n\
                 [pgbouncer]\nauth_file = users.txt\nmin_pool_size = 1\n{tagging}"
            ),
        )
        .unwrap();
    };
    std::fs::write(dir.path().join("users.txt"), "\"u\" \"pw\"\n").unwrap();
    write("");
    let config = load(&ini).unwrap();
    let mut warned: Vec<(&str, usize)> = config
        .warnings
        .iter()
        .filter(|w| w.message.contains("identity_tagging"))
        .map(|w| (w.key.as_str(), w.line))
        .collect();
    warned.sort();
    assert_eq!(warned, [("app", 2), ("min_pool_size", 6)]);
    write("identity_tagging = 0\n");
    let config = load(&ini).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

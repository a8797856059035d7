use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::ini::parse_ini_with;
use crate::config::PoolMode;

fn raw(text: &str) -> RawIni {
    parse_ini_with(text, "d.ini", &mut |_: &Path| Err("no includes".into())).unwrap()
}

#[test]
fn defaults() {
    let e = parse_connstring("app", "").unwrap();
    assert_eq!(e.name, "app");
    assert_eq!(
        e.hosts,
        vec![HostPort {
            host: DEFAULT_HOST.into(),
            port: 5432
        }]
    );
    assert_eq!(e.target_session_attrs, SessionAttrs::Any);
    assert_eq!(e.load_balance_hosts, LoadBalance::RoundRobin);
    assert_eq!(e.dbname, None);
    assert_eq!(e.user, None);
    assert!(e.connect_params.is_empty());
}

#[test]
fn all_keys() {
    let e = parse_connstring(
        "app",
        "host=db.example port = 6000 dbname=real user=u password=p auth_user=au pool_size=3 \
         min_pool_size=1 max_db_connections=9 application_name=x Client_Encoding=UTF8 \
         datestyle='ISO, MDY' timezone=UTC pool_mode=session connect_query='select 1' \
         reserve_pool=2 max_db_client_connections=5",
    )
    .unwrap();
    assert_eq!(
        (e.hosts[0].host.as_str(), e.hosts[0].port),
        ("db.example", 6000)
    );
    assert_eq!(e.dbname.as_deref(), Some("real"));
    assert_eq!(e.user.as_deref(), Some("u"));
    assert_eq!(e.password.as_deref(), Some("p"));
    assert_eq!(e.auth_user.as_deref(), Some("au"));
    assert_eq!(
        (e.pool_size, e.min_pool_size, e.max_db_connections),
        (Some(3), Some(1), Some(9))
    );
    let params: Vec<(&str, &str)> = e
        .connect_params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        params,
        vec![
            ("application_name", "x"),
            ("client_encoding", "UTF8"),
            ("datestyle", "ISO, MDY"),
            ("timezone", "UTC")
        ]
    );
}

#[test]
fn quoted_values_and_escapes() {
    let e = parse_connstring(
        "x",
        r"password='it''s a \ secret'   user = 'the user'  dbname=a''b host=''",
    )
    .unwrap();
    assert_eq!(e.password.as_deref(), Some(r"it's a \ secret"));
    assert_eq!(e.user.as_deref(), Some("the user"));
    assert_eq!(e.dbname.as_deref(), Some("a''b"));
    assert_eq!(e.hosts[0].host, DEFAULT_HOST);
}

/// As PgBouncer (1.18 shows `dbname=a\b` as `a\b` in SHOW DATABASES, and refuses
/// `dbname='c\'d'`): a backslash is kept as written, never an escape.
#[test]
fn a_backslash_is_an_ordinary_character() {
    let e = parse_connstring("x", r"password=a\b\ dbname='c\\d e' user='f\'").unwrap();
    assert_eq!(e.password.as_deref(), Some(r"a\b\"));
    assert_eq!(e.dbname.as_deref(), Some(r"c\\d e"));
    assert_eq!(e.user.as_deref(), Some(r"f\"));
    assert!(parse_connstring("x", r"dbname='c\'d'").is_err());
}

#[test]
fn repeated_connstring_key_last_wins() {
    let e = parse_connstring("x", "port=1 port=2 timezone=a timezone=b").unwrap();
    assert_eq!(e.hosts[0].port, 2);
    assert_eq!(
        e.connect_params,
        vec![("timezone".to_string(), "b".to_string())]
    );
}

#[test]
fn connstring_errors() {
    for (value, needle) in [
        ("bogus=1", "unknown parameter \"bogus\""),
        ("host", "missing \"=\""),
        ("=x", "missing key"),
        ("password='unterminated", "unterminated"),
        ("port=0", "port"),
        ("port=70000", "out of range"),
        ("pool_size=-x", "pool_size: "),
        ("pool_size=-", "pool_size: "),
        ("pool_mode=row", "unknown pool_mode"),
    ] {
        let err = parse_connstring("x", value).unwrap_err();
        assert!(err.contains(needle), "{value}: {err}");
    }
    // Values, which may be passwords, are not echoed.
    let err = parse_connstring("x", "password='hunter2").unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn databases_section_with_fallback() {
    let (mut errors, raw) = (
        Vec::new(),
        raw("[databases]\napp = dbname=a\n\"my db\" = dbname=b\n* = host=fallback\napp = dbname=c\n"),
    );
    let (dbs, fallback) = from_ini(&raw, "", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(dbs.len(), 2);
    assert_eq!(dbs["app"].dbname.as_deref(), Some("c"));
    assert_eq!(dbs["my db"].dbname.as_deref(), Some("b"));
    let fallback = fallback.unwrap();
    assert_eq!(
        (fallback.name.as_str(), fallback.hosts[0].host.as_str()),
        ("*", "fallback")
    );
}

#[test]
fn database_errors_carry_location() {
    let mut errors = Vec::new();
    let raw = raw("[databases]\nok = dbname=x\nbad = dbname=x frobnicate=1\nworse = port=x\n");
    let (dbs, _) = from_ini(&raw, "", &mut errors);
    assert_eq!(dbs.len(), 1);
    let got: Vec<(&str, usize, &str)> = errors
        .iter()
        .map(|e| (e.file.as_str(), e.line, e.key.as_str()))
        .collect();
    assert_eq!(got, vec![("d.ini", 3, "bad"), ("d.ini", 4, "worse")]);
    assert!(errors[0].message.contains("frobnicate"));
}

#[test]
fn users_section() {
    let mut errors = Vec::new();
    let raw = raw(
        "[users]\nalice = pool_mode=session max_user_connections=3\n\
         bob = max_user_client_connections = 7\ncarol = pool_size=1 reserve_pool_size=2\n\
         dave = pool_mode=statement\nerin = pool_mode=transaction\nfrank = colour=red\n",
    );
    let users = users_from_ini(&raw, &mut errors);
    assert_eq!(users["alice"].pool_mode, Some(PoolMode::Session));
    assert_eq!(users["alice"].max_user_connections, Some(3));
    assert_eq!(users["alice"].pool_size, None);
    assert_eq!(users["bob"].max_user_client_connections, Some(7));
    assert_eq!(users["bob"].pool_mode, None);
    assert_eq!(users["carol"].pool_size, Some(1));
    assert_eq!(users["carol"].reserve_pool_size, Some(2));
    assert_eq!(users["erin"].pool_mode, Some(PoolMode::Transaction));
    assert_eq!(users["dave"].pool_mode, Some(PoolMode::Statement));
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, vec![(7, "frank")]);
    assert!(errors[0].message.contains("unknown parameter \"colour\""));
}

/// As in PgBouncer, a negative count (its default, -1) is "not set" in [databases] and [users].
#[test]
fn negative_counts_are_not_set() {
    let e = parse_connstring(
        "x",
        "pool_size=-1 min_pool_size=-1 reserve_pool=-2 max_db_connections=-1 max_db_client_connections=-1",
    )
    .unwrap();
    assert_eq!(
        (e.pool_size, e.min_pool_size, e.reserve_pool_size),
        (None, None, None)
    );
    assert_eq!(
        (e.max_db_connections, e.max_db_client_connections),
        (None, None)
    );
    assert_eq!(
        parse_connstring("x", "pool_size=0").unwrap().pool_size,
        Some(0)
    );
    let mut errors = Vec::new();
    let raw = raw("[users]\nalice = pool_size=-1 reserve_pool_size=-1 max_user_connections=-1 max_user_client_connections=-1\n");
    let users = users_from_ini(&raw, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let a = &users["alice"];
    assert_eq!((a.pool_size, a.reserve_pool_size), (None, None));
    assert_eq!(
        (a.max_user_connections, a.max_user_client_connections),
        (None, None)
    );
}

/// PgBouncer 1.24+'s per-user timeouts: durations, `-1` = not set.
#[test]
fn users_per_user_timeouts() {
    let mut errors = Vec::new();
    let raw = raw(
        "[users]\nalice = query_timeout=30 idle_transaction_timeout=5 transaction_timeout=1min \
         client_idle_timeout=600 query_wait_timeout=-1 max_user_connections=2\n\
         bob = query_timeout=soon\n",
    );
    let users = users_from_ini(&raw, &mut errors);
    let alice = &users["alice"];
    assert_eq!(alice.max_user_connections, Some(2));
    assert_eq!(alice.query_timeout, Some(Duration::from_secs(30)));
    assert_eq!(alice.idle_transaction_timeout, Some(Duration::from_secs(5)));
    assert_eq!(alice.transaction_timeout, Some(Duration::from_secs(60)));
    assert_eq!(alice.client_idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(alice.query_wait_timeout, None);
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, vec![(3, "bob")]);
    assert!(
        errors[0].message.starts_with("query_timeout: "),
        "{}",
        errors[0]
    );
}

#[test]
fn host_lists_and_routing_keys() {
    let e = parse_connstring(
        "app",
        "host=pg-0,pg-1,pg-2 port=5432 target_session_attrs=read-write load_balance_hosts=round-robin",
    )
    .unwrap();
    let hosts: Vec<(&str, u16)> = e.hosts.iter().map(|h| (h.host.as_str(), h.port)).collect();
    assert_eq!(hosts, vec![("pg-0", 5432), ("pg-1", 5432), ("pg-2", 5432)]);
    assert_eq!(e.target_session_attrs, SessionAttrs::Primary);
    assert_eq!(e.load_balance_hosts, LoadBalance::RoundRobin);

    let e = parse_connstring("app", "port=1,2 host=a,/sock target_session_attrs=standby").unwrap();
    let hosts: Vec<(&str, u16)> = e.hosts.iter().map(|h| (h.host.as_str(), h.port)).collect();
    assert_eq!(hosts, vec![("a", 1), ("/sock", 2)]);
    assert!(e.target_session_attrs.is_read_only());

    for (attrs, want) in [
        ("any", SessionAttrs::Any),
        ("primary", SessionAttrs::Primary),
        ("read-only", SessionAttrs::Standby),
        ("Prefer-Standby", SessionAttrs::PreferStandby),
    ] {
        let e = parse_connstring("x", &format!("target_session_attrs={attrs}")).unwrap();
        assert_eq!(e.target_session_attrs, want, "{attrs}");
    }
    for (lb, want) in [
        ("disable", LoadBalance::Disable),
        ("random", LoadBalance::Random),
        ("least-connections", LoadBalance::LeastConnections),
    ] {
        let e = parse_connstring("x", &format!("load_balance_hosts={lb}")).unwrap();
        assert_eq!(e.load_balance_hosts, want, "{lb}");
    }
}

#[test]
fn host_list_errors() {
    for (value, needle) in [
        ("host=a,b,c port=1,2", "2 ports given for 3 hosts"),
        ("host=a,b port=1,x", "port"),
        ("target_session_attrs=writer", "target_session_attrs"),
        ("load_balance_hosts=yes", "load_balance_hosts"),
    ] {
        let err = parse_connstring("x", value).unwrap_err();
        assert!(err.contains(needle), "{value}: {err}");
    }
}

#[test]
fn doubled_quotes_inside_a_quoted_value() {
    let e = parse_connstring(
        "cq",
        "host=h connect_query='set my.x=''y''' auth_query='select ''a\\b'''",
    )
    .unwrap();
    assert_eq!(e.connect_query.as_deref(), Some("set my.x='y'"));
    assert_eq!(e.auth_query.as_deref(), Some("select 'a\\b'"));
}

/// PgBouncer's per-database server_lifetime (0 = not set) and query_wait_timeout (-1 = not
/// set, 0 = no limit).
#[test]
fn per_database_timeouts() {
    let mut errors = Vec::new();
    let raw = raw(
        "[databases]\napp = host=h server_lifetime=30 Query_Wait_Timeout=5\n\
         zero = host=h server_lifetime=0 query_wait_timeout=0\nunset = host=h query_wait_timeout=-1\n",
    );
    let (dbs, _) = from_ini(&raw, "", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let got = |db: &str| (dbs[db].server_lifetime, dbs[db].query_wait_timeout);
    let secs = |n| Some(Duration::from_secs(n));
    assert_eq!(got("app"), (secs(30), secs(5)));
    assert_eq!(got("zero"), (None, secs(0)));
    assert_eq!(got("unset"), (None, None));
}

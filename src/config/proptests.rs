//! Property tests for the config parsers (ini, userlist, connstrings): no panic on any text,
//! and what is rendered in the documented syntax parses back to what was rendered.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

use super::databases::split_pairs;
use super::ini::parse_ini_with;
use super::{parse_connstring, parse_userlist, DEFAULT_HOST};
use crate::auth::Secret;

/// Lines assembled from the tokens the ini lexer cares about.
fn ini_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[".to_string()),
        Just("]".to_string()),
        Just("=".to_string()),
        Just("\"".to_string()),
        Just(";".to_string()),
        Just("#".to_string()),
        Just("%include ".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\u{feff}".to_string()),
        Just("pgbouncer".to_string()),
        Just("databases".to_string()),
        "[a-z0-9./]{1,6}",
        "[^\n]{1,3}",
    ];
    vec(vec(token, 0..8).prop_map(|t| t.concat()), 0..12).prop_map(|l| l.join("\n"))
}

/// One `key = value` line to render: (quoted?, key, value).
fn entry() -> impl Strategy<Value = (bool, String, String)> {
    prop_oneof![
        (
            Just(false),
            "[A-Za-z_*][A-Za-z0-9_.*-]{0,10}",
            "[ -~]{0,30}"
        ),
        (Just(true), "[^\n\r\u{feff}]{1,12}", "[ -~]{0,30}"),
    ]
}

fn quote_ini_key(k: &str) -> String {
    format!("\"{}\"", k.replace('"', "\"\""))
}

/// PgBouncer's single quoting: `''` for a quote, a backslash as is.
fn quote_conn(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

proptest! {
    #[test]
    fn ini_parser_never_panics(text in ini_like(), include in ini_like()) {
        // Every %include resolves to `include`, so nesting and cycles are exercised too.
        let _ = parse_ini_with(&text, "main.ini", &mut |_p: &Path| Ok(include.clone()));
        let _ = parse_ini_with(&text, "main.ini", &mut |_p: &Path| Err("gone".into()));
    }

    #[test]
    fn ini_round_trip(
        sections in vec(
            (
                prop_oneof![Just("pgbouncer".to_string()), Just("databases".to_string()), Just("users".to_string()), "[a-z]{1,8}"],
                vec(entry(), 0..6),
            ),
            0..5,
        ),
    ) {
        let mut text = String::new();
        let mut expected = Vec::new();
        for (section, entries) in &sections {
            text.push_str(&format!("[{section}]\n"));
            let section = if section == "pgporter" { "pgbouncer" } else { section.as_str() };
            for (quoted, key, value) in entries {
                let written = if *quoted { quote_ini_key(key) } else { key.clone() };
                text.push_str(&format!("  {written} = {value}\n"));
                let key = if section == "pgbouncer" { key.to_lowercase() } else { key.clone() };
                expected.push((section.to_string(), key, value.trim().to_string()));
            }
        }
        let raw = parse_ini_with(&text, "main.ini", &mut |_p: &Path| Err("no".into())).unwrap();
        let got: Vec<(String, String, String)> = raw
            .entries
            .into_iter()
            .map(|e| (e.section, e.key, e.value))
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn userlist_parser_never_panics(
        lines in vec(
            prop_oneof![
                "[^\n]{0,20}",
                ("[^\n]{0,8}", "md5[0-9a-f]{32}|[ -~]{0,6}")
                    .prop_map(|(u, s)| format!("\"{u}\" \"{s}\"")),
            ],
            0..6,
        ),
    ) {
        // One PBKDF2 round per plaintext line: the parser is what is tested here.
        let _ = parse_userlist(&lines.join("\n"), "userlist.txt", 1, &mut Vec::new());
    }

    #[test]
    fn userlist_round_trip(users in vec(("[^\n\r\u{feff}]{1,16}", "md5[0-9a-f]{32}"), 0..8)) {
        let mut text = String::new();
        let mut expected = HashMap::new();
        for (user, secret) in &users {
            text.push_str(&format!(
                "\"{}\" \"{}\" trailing words\n",
                user.replace('"', "\"\""),
                secret
            ));
            expected.insert(user.clone(), Secret::Md5(secret.clone()));
        }
        let parsed = parse_userlist(&text, "userlist.txt", 1, &mut Vec::new());
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn connstring_parser_never_panics(text in "[^\u{0}]{0,60}", kv in vec(("[a-z_]{1,12}", "[^\u{0}]{0,10}"), 0..5)) {
        let _ = split_pairs(&text);
        let _ = parse_connstring("db", &text);
        let joined: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={}", quote_conn(v))).collect();
        let _ = parse_connstring("db", &joined.join(" "));
    }

    #[test]
    fn connstring_round_trip(
        pairs in vec(
            (
                prop_oneof![
                    Just("dbname".to_string()), Just("user".to_string()), Just("password".to_string()),
                    Just("application_name".to_string()), Just("auth_user".to_string()),
                ],
                "[^\u{0}]{0,16}",
                prop_oneof![Just("=".to_string()), Just(" = ".to_string()), Just("\t=  ".to_string())],
            ),
            0..8,
        ),
        port in 1u16..,
        pool_size in any::<u32>(),
    ) {
        let mut text = format!("port={port} pool_size = {pool_size}");
        let mut last: HashMap<&str, String> = HashMap::new();
        for (key, value, eq) in &pairs {
            text.push_str(&format!(" {key}{eq}{}", quote_conn(value)));
            last.insert(key.as_str(), value.clone());
        }
        let e = parse_connstring("db", &text).unwrap();
        // Host lists have their own tests; with no host= the default socket directory is used.
        prop_assert_eq!(e.hosts.len(), 1);
        prop_assert_eq!(e.hosts[0].host.as_str(), DEFAULT_HOST);
        prop_assert_eq!(e.hosts[0].port, port);
        prop_assert_eq!(e.dbname, last.get("dbname").cloned());
        prop_assert_eq!(e.user, last.get("user").cloned());
        prop_assert_eq!(e.password, last.get("password").cloned());
        prop_assert_eq!(e.auth_user, last.get("auth_user").cloned());
        let app: Vec<(String, String)> = last
            .get("application_name")
            .map(|v| vec![("application_name".to_string(), v.clone())])
            .unwrap_or_default();
        prop_assert_eq!(e.connect_params, app);
    }
}

/// Words and punctuation the hba / ident lexers care about.
fn hba_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("local".to_string()),
        Just("host".to_string()),
        Just("hostssl".to_string()),
        Just("all".to_string()),
        Just("scram-sha-256".to_string()),
        Just("cert".to_string()),
        Just("127.0.0.1/32".to_string()),
        Just("::1/128".to_string()),
        Just("@inc".to_string()),
        Just("\"".to_string()),
        Just(",".to_string()),
        Just("\\\n".to_string()),
        Just("#".to_string()),
        Just("map=".to_string()),
        Just(" ".to_string()),
        "[^\n]{1,4}",
    ];
    vec(vec(token, 0..10).prop_map(|t| t.join(" ")), 0..8).prop_map(|l| l.join("\n"))
}

proptest! {
    #[test]
    fn hba_and_ident_parsers_never_panic(text in hba_like(), include in hba_like()) {
        let _ = super::hba::parse_hba(&text, &|_name: &str| Ok(include.clone()));
        let _ = super::hba::parse_hba(&text, &|_name: &str| Err("gone".into()));
        let _ = super::hba::parse_ident(&text);
    }
}

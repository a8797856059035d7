//! Startup parameters whose bytes are not UTF-8. PostgreSQL takes any bytes in a startup
//! packet; pgporter, which passes parameters on to its server connections in SQL (UTF-8),
//! takes what it can pass on as PostgreSQL would use it, and refuses the rest with the
//! SQLSTATE PostgreSQL gives.

use crate::config::Config;
use crate::error::Error;
use crate::protocol::startup::StartupParams;

/// Settle `startup`'s parameters that are not UTF-8 (before anything reads its parameters):
/// - `user`: no such user can exist (pgporter's names are UTF-8): 28000 `role "..." does not
///   exist`, as PostgreSQL says for an unknown role;
/// - `database`: 3D000 `no such database`, as for any unknown database (no pool is made for
///   it through a `*` entry);
/// - `application_name`: PostgreSQL 15 keeps printable ASCII only, any other byte becomes `?`
///   (`caf\xe9` -> `caf?`); pgporter does the same and passes the result on, so the client,
///   SHOW CLIENTS, the audit log and the server all see what PostgreSQL would have made of it;
/// - what pgporter drops anyway (ignore_startup_parameters, `_pq_.` options,
///   `session_authorization`): dropped;
/// - `options`, `replication` and names that are not plain identifiers (a name that is not
///   UTF-8 is not): 08P01 `unsupported startup parameter`, as with any value;
/// - the parameters PgBouncer tracks besides application_name (`client_encoding`,
///   `DateStyle`, `IntervalStyle`, `TimeZone`, `standard_conforming_strings`), whose valid
///   values are all ASCII: 22023 `invalid value for parameter`, as PostgreSQL says;
/// - any other parameter, which pgporter would SET on the server connection: 22021 `invalid
///   byte sequence for encoding "UTF8"`, the server's own answer to those bytes in SQL
///   (PostgreSQL takes them in a startup packet for a string GUC such as `search_path`).
pub(super) fn settle(startup: &mut StartupParams, config: &Config) -> Result<(), Error> {
    for (name, value) in std::mem::take(&mut startup.not_utf8) {
        let lower = name.to_ascii_lowercase();
        match (name.as_str(), lower.as_str()) {
            ("user", _) => return Err(Error::UnknownRole(escaped(&value))),
            ("database", _) => return Err(Error::UnknownDatabase(escaped(&value))),
            (_, "application_name") => startup.params.push((name, printable_ascii(&value))),
            (_, lower) if dropped(lower, config) => {}
            (_, "options" | "replication") => {
                return Err(super::params::unsupported(&name, &escaped(&value)))
            }
            _ if !super::params::is_guc_name(&name) => {
                return Err(super::params::unsupported(&name, &escaped(&value)))
            }
            (_, lower) if ASCII_VALUED.contains(&lower) => {
                let value = escaped(&value);
                return Err(Error::InvalidParameterValue { name, value });
            }
            _ => {
                let bytes = invalid_sequence(&value);
                return Err(Error::NotUtf8 { name, bytes });
            }
        }
    }
    Ok(())
}

/// Startup parameters whose valid values are ASCII (lower case).
const ASCII_VALUED: [&str; 5] = [
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
];

/// Parameters pgporter drops whatever their value (as `ClientParams::from_startup` does).
fn dropped(lower: &str, config: &Config) -> bool {
    lower == "session_authorization"
        || lower.starts_with("_pq_.")
        || config
            .settings
            .ignore_startup_parameters
            .iter()
            .any(|i| i == lower)
}

/// PostgreSQL 15's cleaning of application_name (`pg_clean_ascii`): bytes outside printable
/// ASCII become `?`.
fn printable_ascii(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| {
            if (32..=126).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// `value` for a message: its UTF-8 as is, other bytes as `\xNN`.
fn escaped(value: &[u8]) -> String {
    let mut text = String::new();
    for chunk in value.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    text
}

/// The first sequence of `value` that is not UTF-8, as PostgreSQL names it (`0xe9 0x28`).
fn invalid_sequence(value: &[u8]) -> String {
    let bad = match std::str::from_utf8(value) {
        Ok(_) => &[][..],
        Err(e) => {
            let rest = value.get(e.valid_up_to()..).unwrap_or_default();
            rest.get(..e.error_len().unwrap_or(rest.len()))
                .unwrap_or_default()
        }
    };
    let bytes: Vec<String> = bad.iter().map(|b| format!("0x{b:02x}")).collect();
    bytes.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(not_utf8: &[(&str, &[u8])]) -> StartupParams {
        StartupParams {
            minor: 0,
            params: vec![("user".into(), "alice".into())],
            not_utf8: (not_utf8.iter())
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }

    fn config(settings: &str) -> Config {
        let raw =
            crate::config::parse_ini(&format!("[pgbouncer]\n{settings}\n"), "t.ini").expect("ini");
        crate::config::from_raw(std::path::Path::new("t.ini"), raw).expect("config")
    }

    fn settled(not_utf8: &[(&str, &[u8])], config: &Config) -> Result<StartupParams, Error> {
        let mut s = startup(not_utf8);
        settle(&mut s, config).map(|()| s)
    }

    #[test]
    fn application_name_is_cleaned_as_postgresql_15_does() {
        let config = config("");
        let s = settled(&[("application_name", b"caf\xe9 \x01\xc3\xa9")], &config).unwrap();
        assert_eq!(s.get("application_name"), Some("caf? ???"));
        assert!(s.not_utf8.is_empty());
    }

    #[test]
    fn refusals_carry_postgresql_sqlstates() {
        let config = config("ignore_startup_parameters = extra_float_digits");
        let refused = |p: &[(&str, &[u8])]| {
            let e = settled(p, &config).expect_err("refused");
            (e.sqlstate(), e.to_string())
        };
        assert_eq!(
            refused(&[("user", b"al\xe9")]),
            ("28000", "role \"al\\xe9\" does not exist".into())
        );
        assert_eq!(
            refused(&[("database", b"db\xff")]),
            ("3D000", "no such database: db\\xff".into())
        );
        assert_eq!(
            refused(&[("search_path", b"caf\xe9")]),
            (
                "22021",
                "invalid byte sequence for encoding \"UTF8\": 0xe9 (startup parameter \"search_path\")"
                    .into()
            )
        );
        assert_eq!(
            refused(&[("TimeZone", b"caf\xe9")]),
            (
                "22023",
                "invalid value for parameter \"TimeZone\": \"caf\\xe9\"".into()
            )
        );
        assert_eq!(refused(&[("client_encoding", b"\xe9")]).0, "22023");
        assert_eq!(refused(&[("my.setting", b"\xe9x")]).0, "22021");
        assert_eq!(refused(&[("options", b"-c x=\xe9")]).0, "08P01");
        assert_eq!(refused(&[("x\u{fffd}", b"v")]).0, "08P01");
        // Dropped whatever the bytes.
        for name in ["extra_float_digits", "_pq_.x", "session_authorization"] {
            let s = settled(&[(name, b"\xe9")], &config).unwrap();
            assert_eq!(s.params.len(), 1, "{name}");
        }
    }

    #[test]
    fn invalid_sequences_are_named_as_postgresql_does() {
        assert_eq!(invalid_sequence(b"caf\xe9"), "0xe9");
        assert_eq!(invalid_sequence(b"\xe9\x28abc"), "0xe9");
        assert_eq!(invalid_sequence(b"\xf0\x9f\x98"), "0xf0 0x9f 0x98");
        assert_eq!(escaped(b"caf\xc3\xa9\xe9"), "caf\u{e9}\\xe9");
    }
}

//! `client_tls_ciphers` / `server_tls_ciphers`: PgBouncer hands the value to OpenSSL, so an
//! operator's file holds OpenSSL cipher strings (`HIGH:!aNULL:!MD5`,
//! `ECDHE+AESGCM:ECDHE+CHACHA20`). pgporter uses rustls, whose nine suites are all ECDHE + AEAD
//! (OpenSSL's HIGH): a string is read the way OpenSSL reads it, over those nine.
//!
//! - Words are separated by `:`, `,` or spaces; `A+B` means suites in both A and B; a word is a
//!   suite name (rustls's, IANA's or OpenSSL's) or a group (`ALL`, `DEFAULT`, `HIGH`, `ECDHE`,
//!   `aECDSA`, `aRSA`, `AESGCM`, `AES128`, `CHACHA20` ...). A bare word adds its suites, `!`
//!   removes them for good, `-` removes them (a later word may add them back), `+` moves them
//!   to the end; `@STRENGTH`-style directives are ignored.
//! - Groups of suites rustls does not have (`aNULL`, `MD5`, `RC4`, `3DES`, `kRSA`, `CBC` ...)
//!   and names it does not know select nothing, as OpenSSL ignores what matches nothing.
//! - As in OpenSSL, the string governs TLS 1.2: the TLS 1.3 suites are all on unless the value
//!   names some of them (`TLS13_AES_256_GCM_SHA384` or `TLS_AES_256_GCM_SHA384`), less any it
//!   excludes by name (`!TLS_CHACHA20_POLY1305_SHA256`).
//! - `PROFILE=SYSTEM` (the distribution's crypto policy) is every suite; `SUITEB128` and its
//!   kin the ECDSA AES-GCM ones.
//! - A value that leaves no suite at all is an error listing the names rustls knows.

use super::security::TlsCiphers;

/// One rustls suite and what OpenSSL's groups would say of it.
struct Suite {
    rustls: &'static str,
    /// OpenSSL's name (for TLS 1.3, the IANA name, which OpenSSL also uses).
    openssl: &'static str,
    /// Authentication (`ECDSA`, `RSA`; empty for TLS 1.3) and bulk cipher (`AES256`,
    /// `AES128`, both GCM, or `CHACHA20`).
    auth: &'static str,
    enc: &'static str,
}

impl Suite {
    fn tls13(&self) -> bool {
        self.auth.is_empty()
    }
}

const fn suite(
    rustls: &'static str,
    openssl: &'static str,
    auth: &'static str,
    enc: &'static str,
) -> Suite {
    Suite {
        rustls,
        openssl,
        auth,
        enc,
    }
}

/// rustls's ring provider, in its order (`ALL_CIPHER_SUITES`; a test keeps the two equal).
const SUITES: [Suite; 9] = [
    suite(
        "TLS13_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
        "",
        "AES256",
    ),
    suite(
        "TLS13_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
        "",
        "AES128",
    ),
    suite(
        "TLS13_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        "",
        "CHACHA20",
    ),
    suite(
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDSA",
        "AES256",
    ),
    suite(
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDSA",
        "AES128",
    ),
    suite(
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDSA",
        "CHACHA20",
    ),
    suite(
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "RSA",
        "AES256",
    ),
    suite(
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "RSA",
        "AES128",
    ),
    suite(
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "RSA",
        "CHACHA20",
    ),
];

/// The suites one word (no prefix, no `+`) selects, as a bit set over [`SUITES`].
fn select(word: &str) -> u16 {
    let w = word.to_ascii_uppercase();
    let by = |f: &dyn Fn(&Suite) -> bool| {
        SUITES
            .iter()
            .enumerate()
            .filter(|(_, s)| f(s))
            .fold(0u16, |set, (i, _)| set | 1 << i)
    };
    match w.as_str() {
        // PROFILE=SYSTEM: the distribution's crypto policy (RHEL, Fedora), which admits these.
        "ALL" | "DEFAULT" | "HIGH" | "ECDHE" | "EECDH" | "KEECDH" | "KECDHE" | "AEAD"
        | "TLSV1.2" | "PROFILE=SYSTEM" => by(&|s| !s.tls13()),
        // NSA Suite B: ECDSA with AES-GCM.
        "SUITEB128" | "SUITEB128ONLY" | "SUITEB128C2" | "SUITEB192" => {
            by(&|s| s.auth == "ECDSA" && s.enc.starts_with("AES"))
        }
        "ECDSA" | "AECDSA" => by(&|s| s.auth == "ECDSA"),
        "ARSA" => by(&|s| s.auth == "RSA"),
        "AES" | "AESGCM" => by(&|s| !s.tls13() && s.enc.starts_with("AES")),
        "AES128" | "AES256" | "CHACHA20" => by(&|s| !s.tls13() && s.enc == w),
        // A suite's own name; anything else (aNULL, MD5, RC4, 3DES, kRSA, a CBC suite ...)
        // names nothing rustls has.
        _ => by(&|s| s.rustls == w || s.openssl == w),
    }
}

/// Read a cipher value (see the module doc). PgBouncer's own keywords (`default`, `secure`,
/// `fast`, `normal`, `compat`, `legacy`, `insecure`, `all`) mean every suite.
pub(super) fn parse_ciphers(v: &str) -> Result<TlsCiphers, String> {
    let words: Vec<&str> = v.split([',', ':', ' ']).filter(|w| !w.is_empty()).collect();
    let keywords = [
        "default", "secure", "fast", "normal", "compat", "legacy", "insecure", "all",
    ];
    if words
        .iter()
        .all(|w| keywords.iter().any(|k| w.eq_ignore_ascii_case(k)))
    {
        return Ok(TlsCiphers::Default);
    }
    let tls13 = SUITES
        .iter()
        .enumerate()
        .filter(|(_, s)| s.tls13())
        .fold(0u16, |set, (i, _)| set | 1 << i);
    let (mut chosen, mut banned) = (0u16, 0u16);
    for word in words {
        let (op, body) = match word.as_bytes()[0] {
            op @ (b'!' | b'-' | b'+') => (op, &word[1..]),
            _ => (b' ', word),
        };
        if body.starts_with('@') {
            continue;
        }
        let mut parts = body.split('+').filter(|p| !p.is_empty()).peekable();
        if parts.peek().is_none() {
            continue;
        }
        let set = parts.fold(u16::MAX, |set, part| set & select(part));
        match op {
            b'!' => {
                chosen &= !set;
                banned |= set;
            }
            b'-' => chosen &= !set,
            // Order is rustls's own: moving to the end changes nothing here.
            b'+' => {}
            _ => chosen |= set & !banned,
        }
    }
    // TLS 1.3 suites follow only TLS 1.3 names, as OpenSSL's separate TLS 1.3 list does: all
    // of them unless some are named, less those excluded by name.
    if chosen & tls13 == 0 {
        if chosen == 0 {
            return Err(format!(
                "{v:?} selects no cipher suite pgporter's TLS library (rustls) has: it has {} \
                 (OpenSSL names {}), all of them in OpenSSL's HIGH group; or use default",
                SUITES.map(|s| s.rustls).join(", "),
                SUITES.map(|s| s.openssl).join(", ")
            ));
        }
        chosen |= tls13 & !banned;
    }
    if chosen == (1 << SUITES.len()) - 1 {
        return Ok(TlsCiphers::Default);
    }
    Ok(TlsCiphers::Named(
        SUITES
            .iter()
            .enumerate()
            .filter(|(i, _)| chosen & 1 << i != 0)
            .map(|(_, s)| s.rustls.to_string())
            .collect(),
    ))
}

/// `client_tls13_ciphers` / `server_tls13_ciphers` (PgBouncer 1.24+; OpenSSL's separate TLS 1.3
/// list: suite names, IANA's or rustls's, separated by `:`). Empty or `default`: None, the
/// `*_tls_ciphers` value decides. Names rustls does not have select nothing, as in
/// `*_tls_ciphers`; a value that selects no suite at all is an error.
pub(super) fn parse_tls13_ciphers(v: &str) -> Result<Option<Vec<String>>, String> {
    let words: Vec<&str> = v.split([',', ':', ' ']).filter(|w| !w.is_empty()).collect();
    if words.is_empty() || words == ["default"] {
        return Ok(None);
    }
    let tls13 = || SUITES.iter().filter(|s| s.tls13());
    let names: Vec<String> = tls13()
        .filter(|s| words.iter().any(|w| *w == s.rustls || *w == s.openssl))
        .map(|s| s.rustls.to_string())
        .collect();
    if names.is_empty() {
        return Err(format!(
            "{v:?} selects no TLS 1.3 cipher suite rustls has ({})",
            tls13().map(|s| s.openssl).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Some(names))
}

/// `client_tls_ecdhcurve`: the key exchange groups clients may use, as rustls names them
/// (`X25519`, `secp256r1`, `secp384r1`); OpenSSL's spellings are accepted (`prime256v1`,
/// `P-256`, `P-384`, `x25519`), several separated by `:` as in OpenSSL's curve lists.
/// `auto` or empty: None, rustls's default (all three). Names of groups rustls does not have
/// select nothing; `none` (PgBouncer: no ECDH) or a value selecting no group is an error,
/// since every suite rustls has uses ECDHE.
pub(super) fn parse_ecdh_curve(v: &str) -> Result<Option<Vec<String>>, String> {
    let words: Vec<&str> = v.split([',', ':', ' ']).filter(|w| !w.is_empty()).collect();
    if words.is_empty() || words.iter().all(|w| w.eq_ignore_ascii_case("auto")) {
        return Ok(None);
    }
    const GROUPS: [(&str, &[&str]); 3] = [
        ("X25519", &["x25519"]),
        ("secp256r1", &["secp256r1", "prime256v1", "p-256"]),
        ("secp384r1", &["secp384r1", "p-384"]),
    ];
    let names: Vec<String> = GROUPS
        .iter()
        .filter(|(_, aliases)| {
            words
                .iter()
                .any(|w| aliases.iter().any(|a| w.eq_ignore_ascii_case(a)))
        })
        .map(|(name, _)| (*name).to_string())
        .collect();
    if names.is_empty() {
        return Err(format!(
            "{v:?} selects no key exchange group rustls has (X25519, prime256v1, secp384r1); \
             every suite needs ECDHE"
        ));
    }
    Ok(Some(names))
}

impl TlsCiphers {
    /// These suites with their TLS 1.3 ones replaced by `tls13` (when set).
    pub fn with_tls13(&self, tls13: Option<&[String]>) -> TlsCiphers {
        let Some(tls13) = tls13 else {
            return self.clone();
        };
        let chosen = |s: &Suite| match self {
            TlsCiphers::Default => true,
            TlsCiphers::Named(names) => names.iter().any(|n| n == s.rustls),
        };
        TlsCiphers::Named(
            SUITES
                .iter()
                .filter(|s| {
                    if s.tls13() {
                        tls13.iter().any(|n| n == s.rustls)
                    } else {
                        chosen(s)
                    }
                })
                .map(|s| s.rustls.to_string())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls13_list_replaces_only_the_tls13_suites() {
        let tls13 = parse_tls13_ciphers("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
            .unwrap()
            .unwrap();
        assert_eq!(
            tls13,
            ["TLS13_AES_256_GCM_SHA384", "TLS13_CHACHA20_POLY1305_SHA256"]
        );
        let TlsCiphers::Named(both) = parse_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
            .unwrap()
            .with_tls13(Some(&tls13))
        else {
            panic!("named suites");
        };
        assert_eq!(
            both,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(parse_tls13_ciphers("").unwrap(), None);
        assert_eq!(parse_tls13_ciphers("default").unwrap(), None);
        assert!(parse_tls13_ciphers("ECDHE-RSA-AES128-GCM-SHA256").is_err());
        assert_eq!(
            parse_tls13_ciphers("TLS_AES_128_CCM_SHA256:TLS_AES_128_GCM_SHA256").unwrap(),
            Some(vec!["TLS13_AES_128_GCM_SHA256".to_string()])
        );
        assert_eq!(TlsCiphers::Default.with_tls13(None), TlsCiphers::Default);
    }

    #[test]
    fn ecdh_curves_in_openssl_spelling() {
        let names = |v: &str| parse_ecdh_curve(v).unwrap();
        assert_eq!(names("auto"), None);
        assert_eq!(names(""), None);
        assert_eq!(names("prime256v1"), Some(vec!["secp256r1".to_string()]));
        assert_eq!(
            names("P-384:X25519:brainpoolP512r1"),
            Some(vec!["X25519".to_string(), "secp384r1".to_string()])
        );
        assert!(parse_ecdh_curve("none").is_err());
        assert!(parse_ecdh_curve("secp521r1").is_err());
    }

    fn named(v: &str) -> Vec<String> {
        match parse_ciphers(v).unwrap() {
            TlsCiphers::Named(n) => n,
            TlsCiphers::Default => SUITES.map(|s| s.rustls.to_string()).to_vec(),
        }
    }

    #[test]
    fn the_table_is_rustls_own() {
        let ring: Vec<&str> = rustls::crypto::ring::ALL_CIPHER_SUITES
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect();
        assert_eq!(ring, SUITES.map(|s| s.rustls).to_vec());
    }

    #[test]
    fn pgbouncer_keywords_and_common_openssl_strings() {
        for v in [
            "fast",
            "default",
            "HIGH:!aNULL:!MD5",
            "HIGH:MEDIUM:+3DES:!aNULL",
            "ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH",
            "ECDHE+AESGCM:ECDHE+CHACHA20:!SHA1",
        ] {
            assert_eq!(parse_ciphers(v), Ok(TlsCiphers::Default), "{v}");
        }
        // Mozilla's "intermediate" list (only the ECDHE+GCM/ChaCha parts exist in rustls).
        let intermediate = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
            ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
            ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
            DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";
        assert_eq!(parse_ciphers(intermediate), Ok(TlsCiphers::Default));
    }

    #[test]
    fn groups_exclusions_and_tls13() {
        let tls13 = [
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
        ];
        // The string governs TLS 1.2; TLS 1.3 stays on.
        assert_eq!(
            named("ECDHE+AESGCM:!aECDSA"),
            [
                &tls13[..],
                &[
                    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
                ]
            ]
            .concat()
        );
        assert_eq!(
            named("HIGH:!CHACHA20:-AES128:AES128+aRSA"),
            [
                &tls13[..],
                &[
                    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                ]
            ]
            .concat()
        );
        // Naming a TLS 1.3 suite (rustls or IANA spelling) chooses among those too.
        assert_eq!(
            named("tls13_aes_256_gcm_sha384"),
            ["TLS13_AES_256_GCM_SHA384"]
        );
        assert_eq!(
            named("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256"),
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        // A TLS 1.3 suite excluded by name stays out.
        assert!(!named("HIGH:!TLS_CHACHA20_POLY1305_SHA256")
            .contains(&"TLS13_CHACHA20_POLY1305_SHA256".to_string()));
        assert_eq!(parse_ciphers("PROFILE=SYSTEM"), Ok(TlsCiphers::Default));
        assert_eq!(
            named("SUITEB128"),
            [
                &tls13[..],
                &[
                    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
                ]
            ]
            .concat()
        );
        // Nothing rustls has: an error naming what it has.
        let e = parse_ciphers("ECDHE-RSA-AES128-SHA:!HIGH").unwrap_err();
        assert!(e.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{e}");
        assert!(parse_ciphers("HIGH:!HIGH").is_err());
    }

    /// What SHOW CONFIG prints (the names joined by `:`) reads back as the same list.
    #[test]
    fn shown_value_reads_back() {
        for v in ["ECDHE+AESGCM:!aECDSA", "TLS13_AES_256_GCM_SHA384", "AES256"] {
            let TlsCiphers::Named(n) = parse_ciphers(v).unwrap() else {
                panic!("{v}")
            };
            assert_eq!(parse_ciphers(&n.join(":")), Ok(TlsCiphers::Named(n)));
        }
    }
}

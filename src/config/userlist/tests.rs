use super::*;
use crate::auth::scram::verifier::DEFAULT_ITERATIONS;

#[test]
fn line_syntax() {
    assert_eq!(parse_line(""), Ok(None));
    assert_eq!(parse_line("  ; comment"), Ok(None));
    assert_eq!(parse_line("# comment"), Ok(None));
    assert_eq!(
        parse_line(r#""alice" "secret""#),
        Ok(Some(("alice".into(), "secret".into())))
    );
    assert_eq!(
        parse_line(r#"  "a""b"   "x""y""z"  "extra" ignored "#),
        Ok(Some((r#"a"b"#.into(), r#"x"y"z"#.into())))
    );
    assert_eq!(
        parse_line(r#""bob" """#),
        Ok(Some(("bob".into(), String::new())))
    );
}

#[test]
fn line_errors_do_not_leak_secret() {
    for line in [
        r#"alice "pw""#,
        r#""alice" pw"#,
        r#""alice "pw""#,
        r#""" "pw""#,
        r#""alice" "hunter2"#,
    ] {
        let err = parse_line(line).unwrap_err();
        assert!(
            !err.contains("hunter2") && !err.contains("pw\""),
            "{line}: {err}"
        );
    }
    assert!(parse_line(r#""alice" "hunter2"#)
        .unwrap_err()
        .contains("closing"));
}

/// A line that cannot be read is left out with a warning naming file and line; the users on
/// the other lines stay (pgporter refused the whole configuration; PgBouncer keeps the users
/// before the bad line).
#[test]
fn unreadable_lines_are_left_out_with_a_warning() {
    let mut warnings = Vec::new();
    let users = parse_userlist(
        "; header\nnot quoted\n\"a\" \"pw\"\n\"x\"\n\"b\" \"pw\n\"c\" \"pw\"\n",
        "users.txt",
        DEFAULT_ITERATIONS,
        &mut warnings,
    );
    let got: Vec<(&str, usize)> = warnings.iter().map(|e| (e.file.as_str(), e.line)).collect();
    assert_eq!(
        got,
        vec![("users.txt", 2), ("users.txt", 4), ("users.txt", 5)]
    );
    assert!(warnings.iter().all(|w| w.message.ends_with("left out")));
    let mut names: Vec<&str> = users.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "c"]);
}

// The cases below go through `Secret::parse` (src/auth/secret.rs).

#[test]
fn plaintext_md5_and_scram_secrets() {
    let text = concat!(
        "\"alice\" \"plain pw\"\n",
        "\"bob\" \"md5e8a48653851e28c69d0506508fb27fc5\"\n",
        "\"carol\" \"SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$",
        "mCDSGnf5PE1a3IG5n5eIx+uwbwyWrUrX3CdEFSwl1tw=:",
        "XRQfQzYOMNi5o/u46wAvd1kTeSKaxCdcgwRVaz2k5Mw=\"\n",
        "\"we\"\"ird\" \"x\" \"ignored\"\n",
    );
    let users = parse_userlist(text, "users.txt", DEFAULT_ITERATIONS, &mut Vec::new());
    assert_eq!(users.len(), 4);
    assert_eq!(users["alice"].plaintext(), Some("plain pw"));
    assert!(matches!(users["bob"], Secret::Md5(_)));
    assert!(matches!(users["carol"], Secret::Scram(_)));
    assert_eq!(users["we\"ird"].plaintext(), Some("x"));
}

#[test]
fn malformed_scram_secret_is_a_warning_without_the_secret() {
    let mut errs = Vec::new();
    // A later broken line for a user also drops the earlier secret (a botched password change
    // must not leave the old password working).
    let users = parse_userlist(
        "\"carol\" \"oldpw\"\n\"carol\" \"SCRAM-SHA-256$nonsense\"\n",
        "u.txt",
        DEFAULT_ITERATIONS,
        &mut errs,
    );
    assert!(users.is_empty());
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].key.as_str()), (2, "carol"));
    assert!(!errs[0].message.contains("nonsense"), "{}", errs[0].message);
}

#[test]
fn last_line_for_a_user_wins() {
    let users = parse_userlist(
        "\"a\" \"one\"\n\"a\" \"two\"\n",
        "u.txt",
        DEFAULT_ITERATIONS,
        &mut Vec::new(),
    );
    assert_eq!(users["a"].plaintext(), Some("two"));
}

#[test]
fn an_empty_password_is_no_password_with_a_warning() {
    let mut warnings = Vec::new();
    let text = "\"a\" \"one\"\n\"monitor\" \"\"\n\"a\" \"\"\n";
    let users = parse_userlist(text, "u.txt", DEFAULT_ITERATIONS, &mut warnings);
    assert!(users.is_empty(), "the later empty line wins for a");
    let got: Vec<(usize, &str)> = warnings.iter().map(|w| (w.line, w.key.as_str())).collect();
    assert_eq!(got, vec![(2, "monitor"), (3, "a")]);
}

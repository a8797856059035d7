use std::collections::HashMap;
use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<RawIni, Vec<ConfigError>> {
    parse_ini_with(text, "main.ini", &mut |p: &Path| {
        Err(format!("no file {}", p.display()))
    })
}

/// Parse `main.ini` from an in-memory file set.
fn parse_files(files: &[(&str, &str)]) -> Result<RawIni, Vec<ConfigError>> {
    let map: HashMap<String, String> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let main = map.get("main.ini").cloned().unwrap_or_default();
    parse_ini_with(&main, "main.ini", &mut |p: &Path| {
        map.get(&p.display().to_string())
            .cloned()
            .ok_or_else(|| "not found".to_string())
    })
}

fn kv(raw: &RawIni) -> Vec<(&str, &str, &str)> {
    raw.entries
        .iter()
        .map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str()))
        .collect()
}

#[test]
fn sections_keys_comments_and_indentation() {
    let raw = parse(
        "; comment\n# other comment\n\n[PgBouncer]\n  Listen_Port = 6433\n\tpool_mode=session\n\
         [databases] ; backends\n  MyDb = host=/tmp dbname=x  \n   ; indented comment\n",
    )
    .unwrap();
    assert_eq!(
        kv(&raw),
        vec![
            ("pgbouncer", "listen_port", "6433"),
            ("pgbouncer", "pool_mode", "session"),
            ("databases", "MyDb", "host=/tmp dbname=x"),
        ]
    );
    assert_eq!(raw.entries[0].file, "main.ini");
    assert_eq!(raw.entries[0].line, 5);
    assert_eq!(raw.entries[2].line, 8);
}

#[test]
fn pgporter_alias_and_crlf() {
    let raw = parse("[pgporter]\r\nlisten_port = 1\r\n[PGPORTER]\r\nadmin_users = a\r\n").unwrap();
    assert_eq!(
        kv(&raw),
        vec![
            ("pgbouncer", "listen_port", "1"),
            ("pgbouncer", "admin_users", "a")
        ]
    );
}

#[test]
fn repeated_key_last_wins() {
    let raw = parse("[pgbouncer]\nlisten_port = 1\nLISTEN_PORT = 2\n").unwrap();
    let e = raw.get("pgbouncer", "listen_port").unwrap();
    assert_eq!((e.value.as_str(), e.line), ("2", 3));
}

#[test]
fn values_kept_as_written() {
    let raw = parse("[pgbouncer]\nserver_reset_query = DISCARD ALL; -- x # y\nempty =\n").unwrap();
    assert_eq!(
        raw.get("pgbouncer", "server_reset_query").unwrap().value,
        "DISCARD ALL; -- x # y"
    );
    assert_eq!(raw.get("pgbouncer", "empty").unwrap().value, "");
}

#[test]
fn quoted_keys() {
    let raw = parse("[databases]\n\"my db\" = dbname=x\n\"a\"\"b=c\"=dbname=y\n").unwrap();
    assert_eq!(
        kv(&raw),
        vec![
            ("databases", "my db", "dbname=x"),
            ("databases", "a\"b=c", "dbname=y")
        ]
    );
}

#[test]
fn syntax_errors_all_reported_with_lines() {
    let errs = parse(
        "orphan = 1\n[pgbouncer]\njust words\n[unterminated\n= 5\nmy key = 1\n\"open = 1\n[]\nok = 1\n\
         [users] x\n",
    )
    .unwrap_err();
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 3, 4, 5, 6, 7, 8, 10]);
    assert!(errs.iter().all(|e| e.file == "main.ini"));
    assert_eq!(errs[0].key, "orphan");
    assert!(errs[0].message.contains("outside"), "{errs:?}");
    assert!(errs[1].message.contains("syntax error"), "{errs:?}");
}

#[test]
fn include_relative_to_including_file() {
    let raw = parse_files(&[
        (
            "main.ini",
            "[pgbouncer]\nlisten_port = 1\n%include conf.d/a.ini\nadmin_users = z\n",
        ),
        (
            "conf.d/a.ini",
            "max_client_conn = 5\n%include b.ini\n[databases]\nx = dbname=x\n",
        ),
        ("conf.d/b.ini", "default_pool_size = 7\n"),
    ])
    .unwrap();
    assert_eq!(
        kv(&raw),
        vec![
            ("pgbouncer", "listen_port", "1"),
            ("pgbouncer", "max_client_conn", "5"),
            ("pgbouncer", "default_pool_size", "7"),
            ("databases", "x", "dbname=x"),
            // The section the include ended in stays current.
            ("databases", "admin_users", "z"),
        ]
    );
    let e = raw.get("pgbouncer", "default_pool_size").unwrap();
    assert_eq!((e.file.as_str(), e.line), ("conf.d/b.ini", 1));
}

#[test]
fn include_errors_are_located() {
    let errs = parse_files(&[
        (
            "main.ini",
            "[pgbouncer]\n%include missing.ini\n%include\n%include a.ini\n",
        ),
        ("a.ini", "bad line\n"),
    ])
    .unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!((errs[0].file.as_str(), errs[0].line), ("main.ini", 2));
    assert!(errs[0].message.contains("missing.ini"));
    assert_eq!(errs[0].key, "%include");
    assert_eq!((errs[1].file.as_str(), errs[1].line), ("main.ini", 3));
    assert_eq!((errs[2].file.as_str(), errs[2].line), ("a.ini", 1));
}

#[test]
fn include_cycle_is_an_error() {
    let errs = parse_files(&[
        ("main.ini", "[pgbouncer]\n%include sub/a.ini\n"),
        ("sub/a.ini", "%include ../main.ini\n"),
    ])
    .unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].file.as_str(), errs[0].line), ("sub/a.ini", 1));
    assert!(errs[0].message.contains("cycle"), "{errs:?}");
}

#[test]
fn self_include_is_a_cycle() {
    let errs = parse_files(&[("main.ini", "%include ./main.ini\n")]).unwrap_err();
    assert!(errs[0].message.contains("cycle"), "{errs:?}");
}

#[test]
fn include_depth_is_limited() {
    // main -> f1 -> ... -> f11: eleven levels below main.
    let names: Vec<String> = (1..=11).map(|i| format!("f{i}.ini")).collect();
    let mut files: Vec<(String, String)> = vec![("main.ini".into(), "%include f1.ini\n".into())];
    for i in 1..=11 {
        files.push((names[i - 1].clone(), format!("%include f{}.ini\n", i + 1)));
    }
    files.push(("f12.ini".into(), "[pgbouncer]\nx = 1\n".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let errs = parse_files(&refs).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("nested"), "{errs:?}");
    assert_eq!(errs[0].file, "f10.ini");

    // Ten levels are fine.
    let mut ok = refs.clone();
    ok[10] = ("f10.ini", "[pgbouncer]\nx = 1\n");
    assert!(parse_files(&ok).is_ok());
}

#[test]
fn quoted_include_path_and_bom() {
    let raw = parse_files(&[
        (
            "main.ini",
            "\u{feff}[pgbouncer]\n%include \"my dir/x.ini\"\n",
        ),
        ("my dir/x.ini", "a = 1\n"),
    ])
    .unwrap();
    assert_eq!(kv(&raw), vec![("pgbouncer", "a", "1")]);
}

#[test]
fn include_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/inc.ini"),
        "[databases]\nx = dbname=y\n",
    )
    .unwrap();
    let main = dir.path().join("main.ini");
    std::fs::write(&main, "[pgbouncer]\n%include sub/inc.ini\n").unwrap();
    let raw = read_ini_file(&main).unwrap();
    assert_eq!(kv(&raw), vec![("databases", "x", "dbname=y")]);
    assert!(raw.entries[0].file.ends_with("inc.ini"));
}

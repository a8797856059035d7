//! `log_format = pgbouncer` on the real binary: the logfile and stdout carry PgBouncer 1.18's
//! line shape (the lines compared with PgBouncer's own, captured live, in src/logformat), and
//! pgbadger, when installed, reads them as a PgBouncer log.

use std::process::{Command, Stdio};

use crate::ops::eventually;
use crate::ops_binary::{free_port, KillOnDrop};
use crate::support::cluster;
use crate::support::process::write_config;
use crate::support::skip::skip;

/// `2026-11-27 20:32:51.618 UTC [27117] LOG <message>`: the pid, level and message of a line
/// of PgBouncer's shape, as pgbadger's `pgbouncer3` and CloudNativePG's regex split it.
pub(crate) fn split(line: &str) -> Option<(u32, &str, &str)> {
    let (stamp, rest) = (line.get(..23)?, line.get(23..)?);
    let digits = |r: std::ops::Range<usize>| stamp[r].bytes().all(|b| b.is_ascii_digit());
    let shape = stamp.as_bytes();
    let stamp_ok = digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && digits(17..19)
        && digits(20..23)
        && (
            shape[4], shape[7], shape[10], shape[13], shape[16], shape[19],
        ) == (b'-', b'-', b' ', b':', b':', b'.');
    if !stamp_ok {
        return None;
    }
    let rest = rest.strip_prefix(" UTC [")?;
    let (pid, rest) = rest.split_once("] ")?;
    let (level, message) = rest.split_once(' ')?;
    let known = ["LOG", "WARNING", "ERROR", "FATAL", "DEBUG", "NOISE"];
    (known.contains(&level) && !message.is_empty()).then_some((pid.parse().ok()?, level, message))
}

/// `C-0x1a: db/user@127.0.0.1:5000 <text>` -> (`C`, db, user, `<text>`), as pgbadger's
/// session-id and db/user@host patterns read it.
pub(crate) fn object(message: &str) -> Option<(char, &str, &str, &str)> {
    let (id, rest) = message.split_once(": ")?;
    let kind = id.chars().next()?;
    let hex = id.get(4..)?;
    if !(id.get(1..4)? == "-0x" && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
        return None;
    }
    let (db, rest) = rest.split_once('/')?;
    let (user, rest) = rest.split_once('@')?;
    let (_addr, text) = rest.split_once(' ')?;
    Some((kind, db, user, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_log_format_of_the_real_binary() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lf", "lfdb").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    write_config(
        dir.path(),
        "p.ini",
        (&db, &user, cluster.port()),
        &format!(
            "listen_port = {port}\nunix_socket_dir = {}\nlogfile = p.log\n\
             log_format = pgbouncer\nstats_period = 1\nserver_idle_timeout = 1\n\
             admin_users = {user}\n",
            dir.path().display()
        ),
    );
    let mut child = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_pgporter"))
            .arg(dir.path().join("p.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgporter"),
    ));
    let pid = child.0.as_ref().expect("child").id();
    let logfile = dir.path().join("p.log");
    let log = || std::fs::read_to_string(&logfile).unwrap_or_default();
    let connect_to = |host: &str, db: &str, password: &str| {
        let connstring = format!(
            "host={host} port={port} user={user} password={password} dbname={db} \
             sslmode=disable"
        );
        async move { tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await }
    };
    let connect = |password: &str| connect_to("127.0.0.1", &db, password);
    let socket_dir = dir.path().display().to_string();
    eventually("listening", || async { log().contains("process up: ") }).await;
    // A pool session over TCP, then an admin console one over the unix socket.
    let sessions = [
        ("127.0.0.1", db.as_str(), "select 1"),
        (socket_dir.as_str(), "pgbouncer", "show version"),
    ];
    for (host, db, sql) in sessions {
        let (client, conn) = connect_to(host, db, "pw").await.expect("login");
        let conn = tokio::spawn(conn);
        client.simple_query(sql).await.expect("query");
        drop(client);
        let _ = conn.await;
    }
    eventually("the close lines", || async {
        log()
            .matches("closing because: client close request")
            .count()
            == 2
    })
    .await;
    assert!(connect("wrong").await.is_err(), "a wrong password got in");
    eventually(
        "the failed login, a stats line, the idle server's close",
        || async {
            let l = log();
            l.contains(" ERROR C-0x")
                && l.contains(" LOG stats: ")
                && l.contains("closing because: server idle timeout")
        },
    )
    .await;
    let kill = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    };
    kill("-HUP");
    eventually("the reload line", || async {
        log().contains("got SIGHUP, re-reading config")
    })
    .await;
    kill("-INT");
    let child = child.0.take().expect("child");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(out.status.success(), "exit status {}", out.status);
    let log = log();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        log,
        "stdout and the logfile differ"
    );

    let lines: Vec<(u32, &str, &str)> = log
        .lines()
        .map(|l| split(l).unwrap_or_else(|| panic!("not PgBouncer's line shape: {l:?}\n{log}")))
        .collect();
    assert!(lines.iter().all(|(p, _, _)| *p == pid), "pid: {log}");
    let has = |level: &str, pred: &dyn Fn(&str) -> bool| {
        lines.iter().any(|(_, l, m)| *l == level && pred(m))
    };
    let client_line = |m: &str, text: &str| {
        object(m).is_some_and(|(k, d, u, t)| k == 'C' && d == db && u == user && t == text)
    };
    // `unix(<pid>):<port>`, as PgBouncer names a unix socket client.
    let unix_client = |m: &str| {
        m.split_once('@')
            .and_then(|(_, rest)| rest.strip_prefix("unix("))
            .and_then(|rest| rest.split_once("):"))
            .is_some_and(|(pid, rest)| {
                pid.parse::<u32>().is_ok_and(|p| p > 0) && rest.starts_with(&format!("{port} "))
            })
    };
    let console = |m: &str, text: &str| {
        unix_client(m)
            && object(m).is_some_and(|(k, d, u, t)| {
                k == 'C' && (d, u) == ("pgbouncer", &user) && t.starts_with(text)
            })
    };
    let checks: [(&str, bool); 13] = [
        (
            "console login attempt",
            has("LOG", &|m| {
                console(
                    m,
                    &format!("login attempt: db=pgbouncer user={user} tls=no"),
                )
            }),
        ),
        (
            "console closing because",
            has("LOG", &|m| {
                console(m, "closing because: client close request (age=")
            }),
        ),
        (
            "listening on",
            has("LOG", &|m| m == format!("listening on 127.0.0.1:{port}")),
        ),
        (
            "process up",
            has("LOG", &|m| m.starts_with("process up: pgporter ")),
        ),
        (
            "login attempt",
            has("LOG", &|m| {
                client_line(m, &format!("login attempt: db={db} user={user} tls=no"))
            }),
        ),
        (
            "new connection to server",
            has("LOG", &|m| {
                object(m).is_some_and(|(k, d, u, t)| {
                    k == 'S'
                        && d == db
                        && u == user
                        && t.starts_with("new connection to server (from 127.0.0.1:")
                })
            }),
        ),
        (
            "closing because",
            has("LOG", &|m| {
                object(m).is_some_and(|(k, d, u, t)| {
                    k == 'C'
                        && (d, u) == (&db, &user)
                        && t.starts_with("closing because: client close request (age=")
                        && t.ends_with("s)")
                })
            }),
        ),
        (
            "server closing because",
            has("LOG", &|m| {
                object(m).is_some_and(|(k, d, u, t)| {
                    k == 'S'
                        && (d, u) == (&db, &user)
                        && t.starts_with("closing because: server idle timeout (age=")
                        && t.ends_with("s)")
                })
            }),
        ),
        (
            "password authentication failed",
            has("ERROR", &|m| {
                object(m).is_some_and(|(k, d, u, t)| {
                    k == 'C' && (d, u) == (&db, &user) && t == "password authentication failed"
                })
            }),
        ),
        ("stats", has("LOG", &|m| stats_numbers(m).is_some())),
        (
            "SIGHUP",
            has("LOG", &|m| m == "got SIGHUP, re-reading config"),
        ),
        ("SIGINT", has("LOG", &|m| m == "got SIGINT, shutting down")),
        (
            "exit",
            lines.last().map(|(_, _, m)| *m) == Some("server connections dropped, exiting"),
        ),
    ];
    for (what, ok) in checks {
        assert!(ok, "no {what} line in:\n{log}");
    }
    // The login and its close name the same session (SHOW CLIENTS ptr), a registered one.
    let id_of = |text: &str| {
        lines.iter().find_map(|(_, _, m)| {
            let (id, _) = m.split_once(": ")?;
            object(m)
                .is_some_and(|o| o.3.starts_with(text))
                .then_some(id)
        })
    };
    let login = id_of("login attempt: ").expect("a login line");
    assert_ne!(login, "C-0x0", "{log}");
    // (The console session's close may come first: the first close line need not be it.)
    let closed = lines.iter().any(|(_, _, m)| {
        m.split_once(": ").is_some_and(|(id, _)| id == login)
            && object(m).is_some_and(|o| o.3.starts_with("closing because: "))
    });
    assert!(closed, "no close line for {login}: {log}");
    pgbadger_reads(&dir.path().join("p.log"), &db);
}

/// `stats: 47 xacts/s, 337 queries/s, in 20436 B/s, out 13389 B/s, xact 4305 us, query 575 us,
/// wait 1050 us`: its seven numbers.
fn stats_numbers(m: &str) -> Option<Vec<u64>> {
    let rest = m.strip_prefix("stats: ")?;
    let mut numbers = Vec::new();
    let shape: String = rest
        .split(' ')
        .map(|w| match w.parse::<u64>() {
            Ok(n) => {
                numbers.push(n);
                "N"
            }
            Err(_) => w,
        })
        .collect::<Vec<_>>()
        .join(" ");
    (shape == "N xacts/s, N queries/s, in N B/s, out N B/s, xact N us, query N us, wait N us")
        .then_some(numbers)
}

/// pgbadger counts the login, the stats lines
/// and the failed login as it does in PgBouncer's log.
fn pgbadger_reads(log: &std::path::Path, db: &str) {
    let installed = Command::new("pgbadger")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        skip(
            "log_format::pgbouncer_log_format_of_the_real_binary (pgbadger part)",
            "pgbadger not installed (apt-get install pgbadger)",
        );
        return;
    }
    let json = log.with_extension("json");
    // `pgbouncer3`: pgbadger's name for PgBouncer's `[pid]` lines (its `pgbouncer` format has
    // the pid without brackets and reads nothing of PgBouncer 1.18's log either). Detection
    // finds it too, but only in a log of ten lines or more.
    let out = Command::new("pgbadger")
        .args(["-q", "-f", "pgbouncer3", "-x", "json", "-o"])
        .arg(&json)
        .arg(log)
        .output()
        .expect("pgbadger");
    assert!(
        out.status.success(),
        "pgbadger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("json");
    let connections = &report["pgb_connection_info"];
    // The login and the refused one (its login attempt line), as pgbadger counts PgBouncer's.
    assert_eq!(connections["database"][db], 2, "connections: {connections}");
    let stats = &report["pgb_overall_stat"];
    assert!(
        stats["queries_number"].as_u64().is_some_and(|n| n >= 1),
        "stats lines: {stats}"
    );
    let errors = report["pgb_error_info"].as_object().expect("errors");
    assert!(
        // As on PgBouncer's log: its ERROR line and its pooler error.
        errors
            .keys()
            .any(|k| k.contains("ERROR:  password authentication failed"))
            && errors
                .keys()
                .any(|k| k.contains("pooler error: SASL authentication failed")),
        "errors: {errors:?}"
    );
}

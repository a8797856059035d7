use std::time::{Duration, UNIX_EPOCH};

use super::*;

/// 2026-11-27 20:32:51.618 UTC.
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_795_811_571_618)
}

fn line(level: Level, message: &str, pairs: &[(&'static str, &str)]) -> String {
    render(at(), 27117, level, Fields::new(message, pairs))
}

#[test]
fn login_attempt_and_close_have_pgbouncers_client_prefix() {
    // PgBouncer 1.18, live: `2026-11-27 20:32:51.618 UTC [27117] LOG C-0x557b056c16c0:
    // postgres/postgres@127.0.0.1:42738 login attempt: db=postgres user=postgres tls=no`
    assert_eq!(
        line(
            Level::INFO,
            "login attempt: ok",
            &[
                ("peer", "127.0.0.1:42738"),
                ("who", "postgres@postgres"),
                ("id", "26"),
                ("tls", "no")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1a: postgres/postgres@127.0.0.1:42738 \
         login attempt: db=postgres user=postgres tls=no\n"
    );
    assert_eq!(
        line(
            Level::INFO,
            "client closed",
            &[
                ("peer", "127.0.0.1:42738"),
                ("who", "me@corp@app"),
                ("id", "26"),
                ("reason", "client close request"),
                ("age", "3")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1a: app/me@corp@127.0.0.1:42738 \
         closing because: client close request (age=3s)\n"
    );
}

#[test]
fn a_server_login_has_pgbouncers_server_prefix() {
    // PgBouncer 1.18, live: `... LOG S-0x557b056c8da0: postgres/postgres@127.0.0.1:49001 new
    // connection to server (from 127.0.0.1:44910)`
    assert_eq!(
        line(
            Level::INFO,
            "new connection to server",
            &[
                ("pid", "27201"),
                ("db", "postgres"),
                ("user", "postgres"),
                ("addr", "127.0.0.1:49001"),
                ("local", "127.0.0.1:44910")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG S-0x6a41: postgres/postgres@127.0.0.1:49001 \
         new connection to server (from 127.0.0.1:44910)\n"
    );
    // `... LOG S-0x557b056c8da0: postgres/postgres@127.0.0.1:49001 closing because: server
    // idle timeout (age=6s)`
    assert_eq!(
        line(
            Level::INFO,
            "server closed",
            &[
                ("pid", "27201"),
                ("db", "postgres"),
                ("user", "postgres"),
                ("addr", "127.0.0.1:49001"),
                ("reason", "server idle timeout"),
                ("age", "6")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG S-0x6a41: postgres/postgres@127.0.0.1:49001 \
         closing because: server idle timeout (age=6s)\n"
    );
}

#[test]
fn server_closes_outside_the_janitor_have_pgbouncers_reasons() {
    // PgBouncer 1.18, live: `... LOG S-0x5634fb7380a0: app/bob@127.0.0.1:49010 closing
    // because: server conn crashed? (age=1s)` (its backend terminated under a query), and
    // `database removed` (KILL), `pause mode` (PAUSE), `database configuration changed`
    // (RECONNECT) for idle ones.
    for reason in [
        "server conn crashed?",
        "database removed",
        "pause mode",
        "database configuration changed",
        "unclean server",
    ] {
        assert_eq!(
            line(
                Level::INFO,
                "server closed",
                &[
                    ("pid", "27201"),
                    ("db", "app"),
                    ("user", "bob"),
                    ("addr", "127.0.0.1:49010"),
                    ("reason", reason),
                    ("age", "1")
                ]
            ),
            format!(
                "2026-11-27 20:32:51.618 UTC [27117] LOG S-0x6a41: app/bob@127.0.0.1:49010 \
                 closing because: {reason} (age=1s)\n"
            )
        );
    }
}

#[test]
fn stats_line_is_pgbouncers() {
    let pairs = [
        ("xacts_per_s", "47"),
        ("queries_per_s", "337"),
        ("in_bytes_per_s", "20436"),
        ("out_bytes_per_s", "13389"),
        ("xact_us", "4305"),
        ("query_us", "575"),
        ("wait_us", "1050"),
    ];
    assert_eq!(
        line(Level::INFO, "stats", &pairs),
        "2026-11-27 20:32:51.618 UTC [27117] LOG stats: 47 xacts/s, 337 queries/s, \
         in 20436 B/s, out 13389 B/s, xact 4305 us, query 575 us, wait 1050 us\n"
    );
}

#[test]
fn startup_signals_and_exit() {
    assert_eq!(
        line(
            Level::INFO,
            "listening",
            &[
                ("version", "pgporter 0.1.0"),
                ("addr", "127.0.0.1:6432"),
                ("http", "None")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG listening on 127.0.0.1:6432\n\
         2026-11-27 20:32:51.618 UTC [27117] LOG process up: pgporter 0.1.0\n"
    );
    assert!(line(
        Level::INFO,
        "listening",
        &[("addr", "[::1]:6432"), ("http", "Some(127.0.0.1:9127)")]
    )
    .ends_with("] LOG process up: pgporter http=127.0.0.1:9127\n"));
    assert!(
        line(Level::INFO, "signal received", &[("signal", "SIGHUP")])
            .ends_with("] LOG got SIGHUP, re-reading config\n")
    );
    assert!(
        line(Level::INFO, "signal received", &[("signal", "SIGINT")])
            .ends_with("] LOG got SIGINT, shutting down\n")
    );
    assert!(line(Level::INFO, "shutdown complete", &[])
        .ends_with("] LOG server connections dropped, exiting\n"));
}

#[test]
fn other_events_keep_their_message_and_fields() {
    assert_eq!(
        line(
            Level::WARN,
            "pooler error",
            &[
                ("peer", "127.0.0.1:1"),
                ("error", "no such database: x"),
                ("source", "None")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING pooler error: no such database: x \
         peer=127.0.0.1:1 source=None\n"
    );
    assert_eq!(
        line(
            Level::ERROR,
            "reload rejected; keeping the running configuration",
            &[("error", "a.ini:3: bad\nvalue \"x\"")]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] ERROR reload rejected; keeping the running \
         configuration error=\"a.ini:3: bad\\nvalue \\\"x\\\"\"\n"
    );
    // Client-caused errors are info in the text log, a WARNING pooler error in PgBouncer's.
    assert_eq!(
        line(
            Level::INFO,
            "client error",
            &[("peer", "127.0.0.1:1"), ("error", "no such database: x")]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING pooler error: no such database: x \
         peer=127.0.0.1:1\n"
    );
    // PgBouncer 1.18, live: `... [21463] FATAL unix socket is in use, cannot continue`
    assert_eq!(
        line(
            Level::ERROR,
            "cannot listen on 127.0.0.1:49001: Address already in use (os error 98)",
            &[("fatal", "true")]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] FATAL cannot listen on 127.0.0.1:49001: Address \
         already in use (os error 98)\n"
    );
    assert!(line(Level::DEBUG, "d", &[]).contains("] DEBUG d\n"));
    assert!(line(Level::TRACE, "t", &[]).contains("] NOISE t\n"));
}

#[test]
fn a_refused_login_has_its_connections_id() {
    // Given at accept: the failed login's line names the connection as its other lines do.
    assert_eq!(
        line(
            Level::WARN,
            "login failed",
            &[
                ("peer", "10.0.0.1:5000"),
                ("who", "bob@app"),
                ("user", "bob"),
                ("id", "27"),
                ("error", "password authentication failed for user \"bob\"")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x1b: app/bob@10.0.0.1:5000 login failed: \
         db=app user=bob error=\"password authentication failed for user \\\"bob\\\"\"\n"
    );
    // PgBouncer 1.18, live (auth_type = hba, a `reject` line): `... LOG C-0x5634fb730e80:
    // app/carol@127.0.0.1:56160 login attempt: db=app user=carol tls=no`, `... LOG
    // C-0x5634fb730e80: app/carol@127.0.0.1:56160 closing because: login rejected (age=0s)`,
    // `... WARNING C-0x5634fb730e80: app/carol@127.0.0.1:56160 pooler error: login rejected`.
    let who = [
        ("peer", "127.0.0.1:56160"),
        ("who", "carol@app"),
        ("db", "app"),
        ("id", "27"),
    ];
    let with = |more: &[(&'static str, &'static str)]| {
        let mut pairs = who.to_vec();
        pairs.extend_from_slice(more);
        pairs
    };
    assert_eq!(
        line(
            Level::INFO,
            "login attempt: refused",
            &with(&[("tls", "no")])
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1b: app/carol@127.0.0.1:56160 \
         login attempt: db=app user=carol tls=no\n"
    );
    assert_eq!(
        line(
            Level::INFO,
            "client closed",
            &with(&[("reason", "login rejected"), ("age", "0")])
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1b: app/carol@127.0.0.1:56160 \
         closing because: login rejected (age=0s)\n"
    );
    assert_eq!(
        line(
            Level::INFO,
            "client error",
            &with(&[("error", "login rejected")])
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x1b: app/carol@127.0.0.1:56160 \
         pooler error: login rejected\n"
    );
    // Before a startup packet names them: PgBouncer's placeholders, live: `... LOG
    // C-0x5634fb7310e0: (nodb)/(nouser)@127.0.0.1:33110 closing because: no more connections
    // allowed (max_client_conn) (age=0s)`, `... WARNING C-0x5634fb7310e0:
    // (nodb)/(nouser)@127.0.0.1:33110 pooler error: no more connections allowed
    // (max_client_conn)`.
    let nobody = [
        ("peer", "127.0.0.1:33110"),
        ("who", "(nouser)@(nodb)"),
        ("db", "(nodb)"),
        ("id", "28"),
    ];
    let reason = "no more connections allowed (max_client_conn)";
    let mut closed = nobody.to_vec();
    closed.extend([("reason", reason), ("age", "0")]);
    assert_eq!(
        line(Level::INFO, "client closed", &closed),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1c: (nodb)/(nouser)@127.0.0.1:33110 \
         closing because: no more connections allowed (max_client_conn) (age=0s)\n"
    );
    // No `source` field when the error has none (it was `source=None`, after PgBouncer's text).
    let mut error = nobody.to_vec();
    error.push(("error", reason));
    assert_eq!(
        line(Level::WARN, "pooler error", &error),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x1c: (nodb)/(nouser)@127.0.0.1:33110 \
         pooler error: no more connections allowed (max_client_conn)\n"
    );
}

#[test]
fn a_refused_login_naming_no_pool_is_nodb_with_pgbouncers_reason() {
    // PgBouncer 1.18, live (auth_type = scram-sha-256, user nobody unknown): `LOG
    // C-0x55f3062fcd80: (nodb)/nobody@127.0.0.1:34140 login attempt: db=app user=nobody
    // tls=no`, `LOG C-0x55f3062fcd80: (nodb)/nobody@127.0.0.1:34140 closing because: SASL
    // authentication failed (age=0s)`; for an unknown database `(nodb)/bob@...`.
    let nobody = [
        ("peer", "127.0.0.1:34140"),
        ("who", "nobody@app"),
        ("db", "app"),
        ("id", "29"),
        ("nodb", "true"),
    ];
    let mut attempt = nobody.to_vec();
    attempt.push(("tls", "no"));
    assert_eq!(
        line(Level::INFO, "login attempt: refused", &attempt),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1d: (nodb)/nobody@127.0.0.1:34140 \
         login attempt: db=app user=nobody tls=no\n"
    );
    // The message the client got (`error`) stays in the text and json lines only.
    let mut closed = nobody.to_vec();
    closed.extend([
        ("reason", "SASL authentication failed"),
        (
            "error",
            "password authentication failed for user \"nobody\"",
        ),
        ("age", "0"),
    ]);
    assert_eq!(
        line(Level::INFO, "client closed", &closed),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1d: (nodb)/nobody@127.0.0.1:34140 \
         closing because: SASL authentication failed (age=0s)\n"
    );
    let mut error = nobody.to_vec();
    error.push((
        "error",
        "password authentication failed for user \"nobody\"",
    ));
    assert_eq!(
        line(Level::INFO, "client error", &error),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x1d: (nodb)/nobody@127.0.0.1:34140 \
         pooler error: password authentication failed for user \"nobody\"\n"
    );
}

#[test]
fn a_server_login_that_failed_has_pgbouncers_close_line() {
    // PgBouncer 1.18, live: `LOG S-0x55f51ff39720: bad/bob@127.0.0.1:44001 closing because:
    // login failed (age=0s)`. The connection had no backend: its id is 0.
    assert_eq!(
        line(
            Level::INFO,
            "server closed",
            &[
                ("db", "bad"),
                ("user", "bob"),
                ("addr", "127.0.0.1:44001"),
                ("reason", "login failed"),
                ("error", "password authentication failed for user \"bob\""),
                ("age", "0"),
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG S-0x0: bad/bob@127.0.0.1:44001 \
         closing because: login failed (age=0s)\n"
    );
}

#[test]
fn names_holding_an_at_sign_split_as_pgbouncer_prints_them() {
    // PgBouncer 1.18, live (user a@b, database x@y): `... LOG C-0x55bc31222690:
    // x@y/a@b@127.0.0.1:41084 login attempt: db=x@y user=a@b tls=no`. `who` alone
    // (`a@b@x@y`) is ambiguous: the event's `db` (or `user`) field says where it splits.
    assert_eq!(
        line(
            Level::INFO,
            "login attempt: ok",
            &[
                ("peer", "127.0.0.1:41084"),
                ("who", "a@b@x@y"),
                ("db", "x@y"),
                ("id", "26"),
                ("tls", "no")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1a: x@y/a@b@127.0.0.1:41084 \
         login attempt: db=x@y user=a@b tls=no\n"
    );
    assert_eq!(
        line(
            Level::WARN,
            "login failed",
            &[
                ("peer", "127.0.0.1:41084"),
                ("who", "a@b@x@y"),
                ("user", "a@b"),
                ("id", "26"),
                ("error", "password authentication failed")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x1a: x@y/a@b@127.0.0.1:41084 \
         login failed: db=x@y user=a@b error=\"password authentication failed\"\n"
    );
}

#[test]
fn refusals_and_failed_server_logins_have_pgbouncers_words() {
    // PgBouncer 1.18, live (auth_type = scram-sha-256, a user not in the auth file, then a
    // wrong password): `LOG C-0x55f68df999d0: (nodb)/(nouser)@127.0.0.1:56004 no such user:
    // nobody`, `ERROR C-0x55f68df999d0: (nodb)/nobody@127.0.0.1:56004 password authentication
    // failed`, `WARNING C-0x55f68df999d0: (nodb)/nobody@127.0.0.1:56004 pooler error: SASL
    // authentication failed`.
    let peer = ("peer", "127.0.0.1:56004");
    assert_eq!(
        line(
            Level::INFO,
            "no such user",
            &[peer, ("id", "1"), ("user", "nobody")]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1: (nodb)/(nouser)@127.0.0.1:56004 \
         no such user: nobody\n"
    );
    let named = [peer, ("who", "nobody@app"), ("user", "nobody"), ("id", "1")];
    let failed = [
        &named[..],
        &[
            ("nodb", "true"),
            ("password", "true"),
            (
                "error",
                "password authentication failed for user \"nobody\"",
            ),
        ],
    ]
    .concat();
    assert_eq!(
        line(Level::WARN, "login failed", &failed),
        "2026-11-27 20:32:51.618 UTC [27117] ERROR C-0x1: (nodb)/nobody@127.0.0.1:56004 \
         password authentication failed\n"
    );
    let error = [
        &named[..],
        &[
            ("nodb", "true"),
            (
                "error",
                "password authentication failed for user \"nobody\"",
            ),
            ("reason", "SASL authentication failed"),
        ],
    ]
    .concat();
    assert_eq!(
        line(Level::INFO, "client error", &error),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x1: (nodb)/nobody@127.0.0.1:56004 \
         pooler error: SASL authentication failed\n"
    );
    // `WARNING C-0x55f68df99c30: (nodb)/(nouser)@127.0.0.1:56048 unsupported startup
    // parameter: options=-c work_mem=64kB`.
    assert_eq!(
        line(
            Level::WARN,
            "unsupported startup parameter",
            &[
                ("peer", "127.0.0.1:56048"),
                ("id", "2"),
                ("name", "options"),
                ("value", "-c work_mem=64kB")
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING C-0x2: (nodb)/(nouser)@127.0.0.1:56048 \
         unsupported startup parameter: options=-c work_mem=64kB\n"
    );
    // `WARNING server login failed: FATAL password authentication failed for user
    // "wrongsrv"`: no connection named.
    assert_eq!(
        line(
            Level::WARN,
            "server login failed",
            &[
                ("db", "app"),
                ("user", "wrongsrv"),
                ("addr", "127.0.0.1:10200"),
                ("severity", "FATAL"),
                (
                    "error",
                    "password authentication failed for user \"wrongsrv\""
                )
            ]
        ),
        "2026-11-27 20:32:51.618 UTC [27117] WARNING server login failed: FATAL password \
         authentication failed for user \"wrongsrv\"\n"
    );
}

#[test]
fn a_cancel_requests_lines_are_pgbouncers() {
    // PgBouncer 1.18, live (a query cancelled by psql): `LOG started sending cancel request`,
    // then `LOG C-0x5568afc95c20: app/(nouser)@127.0.0.1:48626 closing because: successfully
    // sent cancel request (age=0s)`; a key nobody has: `LOG C-0x5568afc959c0:
    // (nodb)/(nouser)@127.0.0.1:43710 closing because: failed cancel request (age=0s)`.
    assert_eq!(
        line(Level::INFO, "started sending cancel request", &[]),
        "2026-11-27 20:32:51.618 UTC [27117] LOG started sending cancel request\n"
    );
    let closed = |db: Option<&'static str>, reason: &'static str| {
        let mut pairs = vec![("peer", "127.0.0.1:48626")];
        pairs.extend(db.map(|db| ("db", db)));
        pairs.extend([("id", "30"), ("reason", reason), ("age", "0")]);
        line(Level::INFO, "client closed", &pairs)
    };
    assert_eq!(
        closed(Some("app"), "successfully sent cancel request"),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1e: app/(nouser)@127.0.0.1:48626 \
         closing because: successfully sent cancel request (age=0s)\n"
    );
    assert_eq!(
        closed(None, "failed cancel request"),
        "2026-11-27 20:32:51.618 UTC [27117] LOG C-0x1e: (nodb)/(nouser)@127.0.0.1:48626 \
         closing because: failed cancel request (age=0s)\n"
    );
}

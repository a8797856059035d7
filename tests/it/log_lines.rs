//! The client and server lines of `log_format = pgbouncer` on the real binary, for the events
//! PgBouncer 1.18 logs in its own words (captured live; see src/logformat/tests.rs): a client
//! gone without Terminate, refused logins, the errors sent to clients, server connections
//! closed outside the janitor.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::log_format::{object, split};
use crate::ops::eventually;
use crate::ops_binary::{free_port, KillOnDrop};
use crate::support::checks::backend_running_as;
use crate::support::cluster;
use crate::support::process::write_config;
use crate::support::raw::RawClient;

/// The real binary with log_format = pgbouncer and `rest`, logging to `p.log` in its dir.
pub(crate) struct Logged {
    _child: KillOnDrop,
    dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
}

impl Logged {
    /// A tokio-postgres client of `db` as `user` (password `pw`) through this pgporter.
    pub(crate) async fn client(&self, user: &str, db: &str) -> tokio_postgres::Client {
        let connstring = format!(
            "host=127.0.0.1 port={} user={user} password=pw dbname={db} sslmode=disable",
            self.addr.port()
        );
        let (client, conn) = tokio_postgres::connect(&connstring, tokio_postgres::NoTls)
            .await
            .expect("login");
        tokio::spawn(conn);
        client
    }

    /// Wait until the pool of `db` has a server connection `column` (SHOW POOLS' sv_idle,
    /// sv_active), asking the console as `user`.
    pub(crate) async fn a_connection(&self, user: &str, db: &str, column: &str) {
        let admin = self.client(user, "pgbouncer").await;
        eventually(&format!("a server connection {column}"), || async {
            admin
                .simple_query("show pools")
                .await
                .expect("show pools")
                .iter()
                .any(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        r.get("database") == Some(db) && r.get(column).is_some_and(|n| n != "0")
                    }
                    _ => false,
                })
        })
        .await;
    }

    pub(crate) async fn start(db: &str, user: &str, pg_port: u16, rest: &str) -> Logged {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        write_config(
            dir.path(),
            "p.ini",
            (db, user, pg_port),
            &format!(
                "listen_port = {port}\nunix_socket_dir =\nlogfile = p.log\n\
                 log_format = pgbouncer\nadmin_users = {user}\n{rest}"
            ),
        );
        let child = KillOnDrop(Some(
            Command::new(env!("CARGO_BIN_EXE_pgporter"))
                .arg(dir.path().join("p.ini"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn pgporter"),
        ));
        let logged = Logged {
            _child: child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        eventually("listening", || async {
            logged.log().contains("process up: ")
        })
        .await;
        logged
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("p.log")).unwrap_or_default()
    }

    /// The messages (after the level) of the lines at `level` of the client or server
    /// object (`C` or `S`) whose text starts with `text`, and those lines' ids.
    pub(crate) fn lines(&self, level: &str, kind: char, text: &str) -> Vec<(String, String)> {
        let log = self.log();
        log.lines()
            .filter_map(split)
            .filter(|(_, l, _)| *l == level)
            .filter_map(|(_, _, m)| {
                let (k, _, _, t) = object(m)?;
                let id = m.split_once(": ")?.0;
                (k == kind && t.starts_with(text)).then(|| (id.to_string(), m.to_string()))
            })
            .collect()
    }

    /// Wait until `n` lines at `level` of `kind` start with `text`; those lines.
    pub(crate) async fn await_lines(
        &self,
        n: usize,
        level: &str,
        kind: char,
        text: &str,
    ) -> Vec<(String, String)> {
        eventually(&format!("{n} {level} {kind}-lines `{text}`"), || async {
            self.lines(level, kind, text).len() >= n
        })
        .await;
        self.lines(level, kind, text)
    }
}

const TERMINATE: &[u8] = b"X\0\0\0\x04";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_without_terminate_is_an_unexpected_eof() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("ll", "lldb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "").await;
    // Idle (parked in the lobby, or not yet), then its socket closed.
    let idle = RawClient::login(porter.addr, &user, "pw", &db).await;
    drop(idle);
    // Closed in the middle of a query.
    let mut busy = RawClient::login(porter.addr, &user, "pw", &db).await;
    busy.query("select pg_sleep(30)").await;
    let su = cluster.superuser_client().await;
    let pid = backend_running_as(&su, &user, "pg_sleep(30)").await;
    drop(busy);
    // An admin console session too.
    let console = RawClient::login(porter.addr, &user, "pw", "pgbouncer").await;
    drop(console);
    let eofs = porter
        .await_lines(
            3,
            "LOG",
            'C',
            "closing because: client unexpected eof (age=",
        )
        .await;
    // Its backend sleeps on, as PostgreSQL has not noticed its client gone.
    su.execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    // A Terminate is a close request.
    let mut polite = RawClient::login(porter.addr, &user, "pw", &db).await;
    polite.send(TERMINATE).await;
    let requests = porter
        .await_lines(1, "LOG", 'C', "closing because: client close request (age=")
        .await;
    let log = porter.log();
    assert_eq!((eofs.len(), requests.len()), (3, 1), "{log}");
    let logins = porter.lines("LOG", 'C', "login attempt: ");
    let ids = |lines: &[(String, String)]| lines.iter().map(|l| l.0.clone()).collect::<Vec<_>>();
    let mut closed = ids(&eofs);
    closed.extend(ids(&requests));
    assert_eq!(ids(&logins), closed, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_have_pgbouncers_lines() {
    let cluster = cluster().await;
    let user = cluster.unique_name("ll");
    let db = cluster.unique_name("lldb");
    let rejected = cluster.unique_name("llrej");
    cluster.create_role(&user, "pw").await;
    cluster.create_database(&db, &user).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hba = dir.path().join("hba.conf");
    std::fs::write(
        &hba,
        format!(
            "host all {rejected} 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n"
        ),
    )
    .expect("hba");
    let porter = Logged::start(
        &db,
        &user,
        cluster.port(),
        &format!(
            "auth_type = hba\nauth_hba_file = {}\nmax_client_conn = 2\nauth_failure_delay = 0\n",
            hba.display()
        ),
    )
    .await;
    let connect = |user: &str, password: &str, db: &str| {
        let connstring = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable",
            porter.addr.port()
        );
        async move { tokio_postgres::connect(&connstring, tokio_postgres::NoTls).await }
    };
    assert!(
        connect(&user, "pw", "nosuchdb").await.is_err(),
        "no such database got in"
    );
    assert!(
        connect(&rejected, "pw", &db).await.is_err(),
        "hba reject got in"
    );
    // A user name that is not UTF-8: PgBouncer's unknown user (it takes any bytes).
    let mut bytes = RawClient::connect(porter.addr).await;
    bytes
        .send(&crate::support::raw::startup_packet(&[
            (b"user".as_slice(), b"ll\xe9".as_slice()),
            (b"database".as_slice(), db.as_bytes()),
        ]))
        .await;
    let _ = bytes.read_msg().await;
    // Gone in the middle of its login (the SCRAM exchange): a login attempt line only, as
    // PgBouncer 1.18 logs it (live).
    let mut gone = RawClient::connect(porter.addr).await;
    let quitter = cluster.unique_name("llquit");
    gone.send(&crate::support::raw::startup_packet(&[
        (b"user".as_slice(), quitter.as_bytes()),
        (b"database".as_slice(), db.as_bytes()),
    ]))
    .await;
    let _ = gone.read_msg().await;
    drop(gone);
    let quit = format!("login attempt: db={db} user={quitter} ");
    porter.await_lines(1, "LOG", 'C', &quit).await;
    let mut junk = RawClient::connect(porter.addr).await;
    junk.send(&[0, 0, 0, 8, 0, 0, 0x30, 0x39]).await;
    let _ = junk.read_msg().await;
    // The refused connections' tasks may not all have ended yet: logged in once there is room.
    let hold = || async {
        let deadline = tokio::time::Instant::now() + crate::support::HANG;
        loop {
            match connect(&user, "pw", &db).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    return client;
                }
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "no room: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let held = [hold().await, hold().await];
    assert!(
        connect(&user, "pw", &db).await.is_err(),
        "over max_client_conn got in"
    );
    drop(held);
    porter
        .await_lines(5, "WARNING", 'C', "pooler error: ")
        .await;
    let log = porter.log();
    // Each refused login's lines, by its id, in order: level, `db/user`, and the text after
    // the address.
    let of = |id: &str| -> Vec<(String, String, String)> {
        log.lines()
            .filter_map(split)
            .filter_map(|(_, level, m)| {
                let (_, d, u, text) = object(m)?;
                (m.split_once(": ")?.0 == id)
                    .then(|| (level.to_string(), format!("{d}/{u}"), text.to_string()))
            })
            .collect()
    };
    // The refused login whose pooler error (the message the client got) starts with `error`:
    // its lines name it as `who`, its closing line gives PgBouncer's `reason`, and it has a
    // login attempt line (first) if `attempt`. Its id.
    let refused = |error: &str, reason: &str, who: &str, attempt: bool| {
        let failed = porter.lines("WARNING", 'C', &format!("pooler error: {error}"));
        // The last (a login waiting for room may have been refused first).
        let Some((id, _)) = failed.last() else {
            panic!("no pooler error {error}: {log}");
        };
        assert_ne!(id, "C-0x0", "{log}");
        let lines = of(id);
        assert!(lines.iter().all(|(_, w, _)| w == who), "{error}: {log}");
        let at = |level: &str, text: &str| {
            lines
                .iter()
                .position(|(l, _, t)| l == level && t.starts_with(text))
        };
        let login = at("LOG", "login attempt: ");
        assert_eq!(login.is_some(), attempt, "{error}: {log}");
        assert!(
            login.unwrap_or(0) == 0,
            "{error}: the attempt comes first: {log}"
        );
        let closing = format!("closing because: {reason}");
        assert!(at("LOG", &closing).is_some(), "{error}: {log}");
        id.clone()
    };
    // A wrong password and an unknown user: log_lines_login.rs.
    refused(
        "no such database: nosuchdb",
        "no such database: nosuchdb",
        &format!("(nodb)/{user}"),
        true,
    );
    // The pooler error line has PgBouncer's words too (live: `pooler error: login rejected`).
    refused(
        "login rejected",
        "login rejected",
        &format!("{db}/{rejected}"),
        true,
    );
    refused(
        "role \"ll\\xe9\" does not exist",
        "role \"ll\\xe9\" does not exist",
        "(nodb)/ll\\xe9",
        true,
    );
    refused(
        "unsupported frontend protocol",
        "unsupported frontend protocol",
        "(nodb)/(nouser)",
        false,
    );
    // Refused before PgBouncer looks at its names (live), and logged by its own lines only.
    let over = "no more connections allowed (max_client_conn)";
    refused(over, over, "(nodb)/(nouser)", false);
    let over_lines = log.lines().filter(|l| l.contains(over)).count();
    let over_ids = porter
        .lines("WARNING", 'C', &format!("pooler error: {over}"))
        .len();
    assert_eq!(over_lines, 2 * over_ids, "{log}");
    let quit_id = porter.lines("LOG", 'C', &quit)[0].0.clone();
    assert_eq!(of(&quit_id).len(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_outside_the_janitor_have_pgbouncers_lines() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("ll", "lldb").await;
    let porter = Logged::start(&db, &user, cluster.port(), "").await;
    let su = cluster.superuser_client().await;
    let admin = porter.client(&user, "pgbouncer").await;
    let closes = |reason: &str| {
        porter
            .lines("LOG", 'S', &format!("closing because: {reason} (age="))
            .len()
    };
    // A connection back in the pool, idle (SHOW POOLS' sv_idle).
    let idle_one = || async {
        let client = porter.client(&user, &db).await;
        client.simple_query("select 1").await.expect("select 1");
        drop(client);
        porter.a_connection(&user, &db, "sv_idle").await;
    };
    // Its backend terminated under a query: PgBouncer's `server conn crashed?`.
    let mut busy = RawClient::login(porter.addr, &user, "pw", &db).await;
    busy.query("select pg_sleep(30)").await;
    let pid = backend_running_as(&su, &user, "pg_sleep(30)").await;
    su.execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    porter
        .await_lines(1, "LOG", 'S', "closing because: server conn crashed? (age=")
        .await;
    drop(busy);
    // Idle ones closed by RECONNECT, PAUSE and KILL, in PgBouncer 1.18's words.
    for (sql, reason, paused) in [
        (
            format!("reconnect {db}"),
            "database configuration changed",
            false,
        ),
        (format!("pause {db}"), "pause mode", true),
        (format!("kill {db}"), "database removed", true),
    ] {
        idle_one().await;
        let before = closes(reason);
        admin.simple_query(&sql).await.expect("admin command");
        if paused {
            let resume = format!("resume {db}");
            admin.simple_query(&resume).await.expect("resume");
        }
        eventually(reason, || async { closes(reason) > before }).await;
    }
    // Its client gone in the middle of a query, or ending its session (Terminate) there.
    for (sleep, ending, reason) in [
        ("31", None, "client disconnect while server was not ready"),
        ("32", Some(TERMINATE), "unclean server"),
    ] {
        let mut busy = RawClient::login(porter.addr, &user, "pw", &db).await;
        let sql = format!("select pg_sleep({sleep})");
        busy.query(&sql).await;
        let pid = backend_running_as(&su, &user, &sql).await;
        if let Some(bytes) = ending {
            busy.send(bytes).await;
        }
        drop(busy);
        let text = format!("closing because: {reason} (age=");
        porter.await_lines(1, "LOG", 'S', &text).await;
        // Its backend sleeps on, as PostgreSQL has not noticed its client gone.
        su.execute("select pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
    }
    // Its backend terminated while idle, found when a client takes it (or by the janitor, if
    // its tick comes first): `server conn crashed?` too, as PgBouncer 1.18 says (live).
    idle_one().await;
    let crashed = closes("server conn crashed?");
    let idle = "select pid from pg_stat_activity where usename = $1 and state = 'idle'";
    let pid: i32 = su.query_one(idle, &[&user]).await.expect("idle").get(0);
    su.execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    eventually("the idle backend gone", || async {
        let gone = "select 1 from pg_stat_activity where pid = $1";
        su.query(gone, &[&pid]).await.expect("backends").is_empty()
    })
    .await;
    let client = porter.client(&user, &db).await;
    client
        .simple_query("select 1")
        .await
        .expect("on a new connection");
    eventually("its close line", || async {
        closes("server conn crashed?") > crashed
    })
    .await;
    // query_timeout, set now: the sessions above were to outlast any limit.
    admin
        .simple_query("set query_timeout = 1")
        .await
        .expect("set query_timeout");
    let slow = porter.client(&user, &db).await;
    assert!(
        slow.simple_query("select pg_sleep(30)").await.is_err(),
        "query_timeout"
    );
    porter
        .await_lines(1, "LOG", 'S', "closing because: query timeout (age=")
        .await;
    // Each close names a connection the log saw open, with its database and user.
    let log = porter.log();
    let opened = porter.lines("LOG", 'S', "new connection to server");
    for (id, line) in porter.lines("LOG", 'S', "closing because: ") {
        assert!(
            opened.iter().any(|(o, _)| *o == id),
            "{line} never opened: {log}"
        );
        assert!(line.contains(&format!(": {db}/{user}@")), "{line}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_server_logins_have_pgbouncers_close_lines() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("ll", "lldb").await;
    // A database whose server refuses the login (a wrong password), and one where nothing
    // listens (a port taken and released: refused at once).
    let closed = free_port();
    let pg = cluster.port();
    let porter = Logged::start(
        &db,
        &user,
        pg,
        &format!(
            "[databases]\nllbadpw = host=127.0.0.1 port={pg} dbname={db} user={user} \
             password=nope\nllclosed = host=127.0.0.1 port={closed} dbname={db}\n"
        ),
    )
    .await;
    for (name, reason, port) in [
        ("llbadpw", "login failed", pg),
        ("llclosed", "connect failed", closed),
    ] {
        let connstring = format!(
            "host=127.0.0.1 port={} user={user} password=pw dbname={name} sslmode=disable \
             connect_timeout=20",
            porter.addr.port()
        );
        assert!(
            tokio_postgres::connect(&connstring, tokio_postgres::NoTls)
                .await
                .is_err(),
            "{name} got in"
        );
        // PgBouncer 1.18, live: `S-0x55f51ff39720: bad/bob@127.0.0.1:44001 closing because:
        // login failed (age=0s)`, `S-0x55e7adabde80: bad2/bob@127.0.0.1:44009 closing
        // because: connect failed (age=0s)`.
        let text = format!("closing because: {reason} (age=");
        let lines = porter.await_lines(1, "LOG", 'S', &text).await;
        let log = porter.log();
        let (id, line) = &lines[0];
        assert_eq!(id, "S-0x0", "{log}");
        assert!(
            line.starts_with(&format!("S-0x0: {name}/{user}@127.0.0.1:{port} {text}")),
            "{log}"
        );
    }
}

/// A server login that gets in after KILL of its database is closed with PgBouncer 1.18's
/// words for KILL's closes, `database removed` (checked live), not PAUSE's `pause mode`: the
/// gates tell the two pauses apart. The login is held by a stopped postmaster while a client
/// waits for it (its first server connection), KILL ends the client, and the postmaster goes
/// on. No other connection of the pool is there for KILL to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_getting_in_after_kill_is_closed_as_database_removed() {
    let pg: &'static crate::support::PgCluster =
        Box::leak(Box::new(crate::support::PgCluster::start_private().await));
    let user = pg.unique_name("ll");
    let db = pg.unique_name("lldb");
    pg.create_role(&user, "pw").await;
    pg.create_database(&db, &user).await;
    let porter = Logged::start(
        &db,
        &user,
        pg.port(),
        "server_connect_timeout = 60\nquery_wait_timeout = 60",
    )
    .await;
    let connstring = |db: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password=pw dbname={db} sslmode=disable",
            porter.addr.port()
        )
    };
    let (admin, conn) = tokio_postgres::connect(&connstring("pgbouncer"), tokio_postgres::NoTls)
        .await
        .expect("console");
    tokio::spawn(conn);
    let postmaster = pg.postmaster_pid();
    crate::faults_server::signal(postmaster, "-STOP");
    let stopped = crate::faults_server::Continue(postmaster);
    let client = {
        let connstring = connstring(&db);
        tokio::spawn(async move {
            tokio_postgres::connect(&connstring, tokio_postgres::NoTls)
                .await
                .map(drop)
        })
    };
    eventually("a server login under way", || async {
        let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
        pools
            .iter()
            .any(|p| p.get("database") == Some(db.as_str()) && p.get("sv_login") == Some("1"))
    })
    .await;
    admin
        .simple_query(&format!("KILL {db}"))
        .await
        .expect("KILL");
    let ended = tokio::time::timeout(crate::support::HANG, client)
        .await
        .expect("the killed client was not ended")
        .unwrap();
    assert!(ended.is_err(), "the client was served after KILL");
    drop(stopped);
    porter
        .await_lines(1, "LOG", 'S', "closing because: database removed (age=")
        .await;
    assert!(
        porter
            .lines("LOG", 'S', "closing because: pause mode")
            .is_empty(),
        "a close after KILL said pause mode"
    );
}

/// After a min_pool_size connection fails, the janitor leaves the pool unfilled for 15 s
/// (PgBouncer's default server_login_retry), as PgBouncer 1.18 paces its own (checked live: one
/// attempt on a dead port in 15 s). It tried again every second: each missing connection a
/// connect, a WARN and a close line a second, for as long as the server was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_connections_that_fail_are_retried_after_a_pause() {
    let dead_port = free_port();
    let porter = Logged::start(
        "gone",
        "fill",
        dead_port,
        "min_pool_size = 2\nidentity_tagging = 0\n",
    )
    .await;
    let connstring = format!(
        "host=127.0.0.1 port={} user=fill password=pw dbname=gone sslmode=disable",
        porter.addr.port()
    );
    // The login fails (nothing listens there), and leaves its pool for the janitor to fill.
    let login = tokio_postgres::connect(&connstring, tokio_postgres::NoTls);
    let refused = tokio::time::timeout(crate::support::HANG, login)
        .await
        .expect("login hung");
    assert!(refused.is_err(), "logged in to a dead port");
    let failed = || {
        (porter.log().lines())
            .filter(|l| l.contains("closing because: connect failed"))
            .count()
    };
    // The client's connect and the janitor's first two.
    eventually("the janitor's first try", || async { failed() >= 3 }).await;
    let seen = failed();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(failed(), seen, "tried again within 3 s:\n{}", porter.log());
}

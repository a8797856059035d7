//! `log_format = pgbouncer`: the health monitor's lines for its logins to a host, written on
//! a change only (PgBouncer has no monitor; its pools write `closing because: connect failed`
//! at each server_login_retry, live: one line every 15 s while a host is down).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::log_format::split;
use crate::log_lines::Logged;
use crate::ops::eventually;
use crate::support::cluster;

/// A host in front of PostgreSQL: while `up`, each connection is passed on; otherwise each
/// is closed at once (a login that fails) and the connections passed on are cut. `accepts`
/// counts the connections it got.
struct Flaky {
    port: u16,
    up: watch::Sender<bool>,
    accepts: Arc<AtomicUsize>,
}

impl Flaky {
    async fn start(pg: u16) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (up, state) = watch::channel(true);
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepts);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                if !*state.borrow() {
                    continue;
                }
                let mut state = state.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", pg)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Flaky { port, up, accepts }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Wait until `n` more connections came (the monitor's logins, health_check_period
    /// apart).
    async fn await_accepts(&self, n: usize) {
        let from = self.accepts.load(Ordering::SeqCst);
        eventually(&format!("{n} logins tried"), || async {
            self.accepts.load(Ordering::SeqCst) >= from + n
        })
        .await;
    }
}

/// The lines (level and message) whose message starts with `text`.
fn lines(log: &str, text: &str) -> Vec<String> {
    log.lines()
        .filter_map(split)
        .filter(|(_, _, m)| m.starts_with(text))
        .map(|(_, level, m)| format!("{level} {m}"))
        .collect()
}

/// A monitored host whose logins fail: one warning when they start failing, however many
/// checks fail after it, and one line when a login works again; a new failure is logged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_login_is_logged_once_per_change() {
    let cluster = cluster().await;
    let (user, db) = cluster.owner_and_db("lg", "lgdb").await;
    let host = Flaky::start(cluster.port()).await;
    let port = host.port;
    let porter = Logged::start(
        &db,
        &user,
        cluster.port(),
        &format!(
            "health_check_period = 0.2\nserver_connect_timeout = 2\n\
             [databases]\nlgmon = host=127.0.0.1 port={port} dbname={db} \
             target_session_attrs=read-write\n"
        ),
    )
    .await;
    // A client makes the pool, whose login the monitor uses.
    let client = porter.client(&user, "lgmon").await;
    client.simple_query("select 1").await.expect("select 1");
    drop(client);
    let changed = "backend host changed ";
    eventually("the host checked up", || async {
        lines(&porter.log(), changed)
            .iter()
            .any(|l| l.contains(" to=up/primary "))
    })
    .await;
    let failed = "health check login failed ";
    let again = "health check logs in again ";
    assert!(lines(&porter.log(), failed).is_empty(), "{}", porter.log());

    host.set(false);
    // Many checks fail (0.2 s apart): one line.
    host.await_accepts(10).await;
    let log = porter.log();
    let warned = lines(&log, failed);
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].starts_with(&format!(
            "WARNING health check login failed host=127.0.0.1:{port} reason=\"login failed\" error="
        )),
        "{log}"
    );

    host.set(true);
    eventually("a login works again", || async {
        !lines(&porter.log(), again).is_empty()
    })
    .await;
    let log = porter.log();
    assert_eq!(
        lines(&log, again),
        [format!(
            "LOG health check logs in again host=127.0.0.1:{port} was=\"login failed\""
        )],
        "{log}"
    );

    host.set(false);
    eventually("the next failure logged", || async {
        lines(&porter.log(), failed).len() == 2
    })
    .await;
    host.await_accepts(10).await;
    let log = porter.log();
    assert_eq!(lines(&log, failed).len(), 2, "{log}");
    assert_eq!(lines(&log, again).len(), 1, "{log}");
}

//! Giving a server connection back: reset it and return it to the pool, or close it.

use std::future::Future;

use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Duration};

use std::sync::Arc;

use super::Pool;
use crate::server::{ServerConn, ServerError};

impl Pool {
    /// Return `conn` after a client is done with it. `idle` says whether the client left it idle
    /// outside a transaction with nothing in flight; anything else is closed, as is a connection
    /// whose reset fails, errors or takes longer than `reset_timeout`. Unless the relay's count
    /// of answers was `exact`, the reset is followed by a marker query proving that no answer
    /// was still in flight (see [`reset_checked`]).
    pub fn release(
        &self,
        conn: ServerConn,
        idle: bool,
        exact: bool,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.release_with(conn, idle, exact, None)
    }

    /// [`Pool::release`], running `also` after the pool's reset query (a transaction-mode
    /// client leaving named prepared statements behind: `DEALLOCATE ALL`).
    ///
    /// This and [`Pool::discard`] are plain fns around an async block: its capture is its
    /// only copy of the connection (an async fn keeps two of each argument, and the release
    /// future sits in every session's request future, copied whole when that is boxed).
    #[allow(clippy::manual_async_fn)]
    pub fn release_with<'a>(
        &'a self,
        mut conn: ServerConn,
        idle: bool,
        exact: bool,
        also: Option<&'a str>,
    ) -> impl Future<Output = ()> + Send + 'a {
        async move {
            match self.reset(&mut conn, idle, exact, also).await {
                None => self.checkin(conn),
                Some(reason) => self.discard(conn, reason).await,
            }
        }
    }

    /// Reset `conn` for the next client (see [`Pool::release_with`]); why it must be closed
    /// instead, if it must (PgBouncer's words where it has them). Apart from `release_with`, so that its one `discard` is the only
    /// closing path: each `return self.discard(conn).await` had a slot of its own in the
    /// release future (3 KB, copied with every session's request future).
    async fn reset(
        &self,
        conn: &mut ServerConn,
        idle: bool,
        exact: bool,
        also: Option<&str>,
    ) -> Option<&'static str> {
        if !idle {
            // Left busy by its client, or marked by RECONNECT or a role change.
            return Some("unclean server");
        }
        if self.is_retired() {
            // A reload replaced the pool (PgBouncer 1.18's words for it, live).
            return Some("close_needed");
        }
        let settings = self.settings();
        if settings.lifetime == Some(Duration::ZERO) {
            return Some("server lifetime over");
        }
        let queries: Vec<&str> = [Some(&*settings.reset_query), also]
            .into_iter()
            .flatten()
            .filter(|q| !q.is_empty())
            .collect();
        if queries.is_empty() && exact {
            // Nothing to send (transaction mode without server_reset_query_always).
            return None;
        }
        // A drop of the pool's connections (RECONNECT, KILL, a reload) while the reset runs
        // stops it and closes the connection, as PgBouncer does; so does one that came before
        // it began. Listening before the look at the count, so none is missed.
        let cut = self.cut.notified();
        tokio::pin!(cut);
        cut.as_mut().enable();
        let _running = match self.reset_begins(conn) {
            Ok(running) => running,
            Err(reason) => return Some(reason),
        };
        let reset = tokio::select! {
            biased;
            () = &mut cut => return Some(self.cut_reason()),
            reset = timeout(settings.reset_timeout, reset_checked(conn, &queries, !exact)) => reset,
        };
        match reset {
            Ok(Ok(Reset::Clean)) => None,
            Ok(Ok(Reset::InTransaction(status))) => {
                tracing::warn!(pid = conn.pid(), status = %char::from(status), "reset left the server in a transaction; closing it");
                Some("server_reset_query left a transaction open")
            }
            Ok(Ok(Reset::Failed(e))) => {
                tracing::warn!(pid = conn.pid(), error = %e, "server_reset_query failed; closing the server connection");
                Some("server_reset_query failed")
            }
            Ok(Ok(Reset::Stale)) => {
                tracing::warn!(
                    pid = conn.pid(),
                    "answers to requests its client left in flight came before the reset's; closing the server connection"
                );
                Some("unclean server")
            }
            Ok(Err(e)) => {
                tracing::debug!(pid = conn.pid(), error = %e, "server connection failed during reset");
                Some("server conn crashed?")
            }
            Err(_) => {
                tracing::warn!(
                    pid = conn.pid(),
                    "server_reset_query timed out; closing the server connection"
                );
                Some("server_reset_query timed out")
            }
        }
    }

    /// Give back a connection nobody ran anything on (e.g. one made to learn the welcome
    /// parameters): straight to a waiter or the idle list, no reset; closed instead if a
    /// reload retired the pool or its database is paused (see [`Pool::held`]). Synchronous, so
    /// a login timeout cannot cut it short and leak the slot.
    pub fn return_unused(&self, conn: ServerConn) {
        self.checkin_unless(conn, |inner| self.unwanted(inner, None));
    }

    /// Give up a lent connection where it cannot be reset (no async context, e.g. a session
    /// dropped during login): free its slot now and close it in the background.
    pub fn abandon(&self, mut conn: ServerConn, reason: &str) {
        self.log_close(&conn, reason);
        let holder = conn.holder.take();
        self.forget(holder.as_deref());
        self.close_later(conn);
    }

    /// Close a connection that must not be reused for `reason` (its log_disconnections line
    /// says it), and free its slot.
    #[allow(clippy::manual_async_fn)]
    pub fn discard(
        &self,
        mut conn: ServerConn,
        reason: &'static str,
    ) -> impl Future<Output = ()> + Send + '_ {
        async move {
            self.log_close(&conn, reason);
            let holder = conn.holder.take();
            self.forget(holder.as_deref());
            goodbye(&mut conn).await;
        }
    }
}

/// A reset listed in `Inner::resets` while it runs (unlisted when dropped, however it ends).
struct Running<'p> {
    pool: &'p Pool,
    pid: i32,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        if let Some(i) = inner.resets.iter().position(|r| r.server.pid == self.pid) {
            inner.resets.swap_remove(i);
        }
    }
}

impl Pool {
    /// List the reset of `conn` (SHOW SERVERS `tested`), unless the pool's connections were
    /// dropped since it was lent (or the pool was retired): then why it is closed instead.
    fn reset_begins(&self, conn: &ServerConn) -> Result<Running<'_>, &'static str> {
        let server = super::snapshot::IdleServer::of(conn);
        let mut inner = self.lock();
        if self.is_retired() {
            return Err("close_needed");
        }
        if conn.lent_at != inner.cuts {
            return Err(inner.cut_reason);
        }
        let pid = server.pid;
        inner.resets.push(super::Resetting {
            lent_at: conn.lent_at,
            server,
        });
        Ok(Running { pool: self, pid })
    }

    /// Why a reset or check cut short closes its connection.
    pub(super) fn cut_reason(&self) -> &'static str {
        if self.is_retired() {
            "close_needed"
        } else {
            self.lock().cut_reason
        }
    }
}

impl Pool {
    /// The close of a server connection for `reason`: PgBouncer's `closing because` line with
    /// log_disconnections (formatted only if it is written), else a debug line.
    pub(super) fn log_close(&self, conn: &ServerConn, reason: &str) {
        let (pid, addr) = (conn.pid(), &conn.addr);
        if self.limits.config().settings.log_disconnections {
            let age = conn.created_at.elapsed().as_secs();
            let (db, user) = (&self.key.db, &self.key.user);
            tracing::info!(pid, db = %db, user = %user, addr = %addr, reason, age, "server closed");
        } else {
            tracing::debug!(pid, pool = ?self.key, reason, "closing server connection");
        }
    }
}

impl Pool {
    /// A server login given up by KILL of its database: PgBouncer 1.18's `closing because:
    /// database removed` line with log_disconnections (checked live, the login held by a
    /// stopped postmaster); with its backend's pid if PostgreSQL had sent it.
    pub(super) fn log_aborted_login(
        &self,
        login: &crate::server::Login,
        since: tokio::time::Instant,
    ) {
        let seen = login.seen();
        let (db, user) = (&self.key.db, &self.key.user);
        let age = since.elapsed().as_secs();
        match &seen.addr {
            Some(addr) if self.limits.config().settings.log_disconnections => {
                let (pid, reason) = (seen.pid, "database removed");
                tracing::info!(pid, db = %db, user = %user, addr = %addr, reason, age, "server closed");
            }
            _ => tracing::debug!(pool = ?self.key, "a server login was given up (KILL)"),
        }
    }

    /// A server connection that did not log in (to `addr`, dialled `since`, from `local`):
    /// PgBouncer 1.18's lines (live). A login the server refused was connected: its `new
    /// connection to server` line (log_connections), then the server's error on a `server
    /// login failed` warning; then, for any failure, its `closing because: connect failed` /
    /// `login failed` line (log_disconnections). It had no backend, so no pid: its id is
    /// `S-0x0`. The closing line of a refusal that is the login's outcome (`last`: its error
    /// goes to the client) is returned, owed, to go with the error (see [`OwedClose`]).
    pub(super) fn log_failed_login(
        &self,
        addr: &crate::server::ServerAddr,
        error: &ServerError,
        since: tokio::time::Instant,
        local: Option<std::net::SocketAddr>,
        last: bool,
    ) -> Option<OwedClose> {
        let settings = &self.limits.config().settings;
        if let ServerError::Rejected(fields) = error {
            let (db, user) = (&self.key.db, &self.key.user);
            if settings.log_connections {
                let local: &dyn std::fmt::Display = match &local {
                    Some(a) => a,
                    None => &"unix",
                };
                tracing::info!(db = %db, user = %user, addr = %addr, %local, "new connection to server");
            }
            let (severity, error) = (fields.severity(), fields.message());
            tracing::warn!(db = %db, user = %user, addr = %addr, severity, error, "server login failed");
        }
        if !settings.log_disconnections {
            return None;
        }
        let close = OwedClose {
            db: Arc::clone(&self.key.db),
            user: Arc::clone(&self.key.user),
            addr: addr.clone(),
            reason: error.close_reason(),
            error: error.to_string(),
            age: since.elapsed().as_secs(),
        };
        // Written now (dropped) unless the client is to get the server's refusal.
        (last && matches!(error, ServerError::Rejected(_))).then_some(close)
    }
}

/// The `closing because: login failed` line of a server login the server refused, owed until
/// the client that gets the refusal has written its lines: PgBouncer 1.18 writes it after the
/// client's closing and `pooler error` lines (live). It travels with the error
/// ([`crate::Error::ServerLogin`]) and is written when dropped: after the client's lines, or
/// at once wherever the error ends without a client (one whose wait ended, a min_pool_size
/// login), so it is never lost.
#[derive(Debug)]
pub struct OwedClose {
    db: Arc<str>,
    user: Arc<str>,
    addr: crate::server::ServerAddr,
    reason: &'static str,
    error: String,
    age: u64,
}

impl Drop for OwedClose {
    fn drop(&mut self) {
        let OwedClose {
            db,
            user,
            addr,
            reason,
            error,
            age,
        } = &*self;
        tracing::info!(db = %db, user = %user, addr = %addr, reason, error, age, "server closed");
    }
}

/// How a reset went.
#[derive(Debug)]
enum Reset {
    Clean,
    InTransaction(u8),
    Failed(crate::protocol::backend::ErrorFields),
    /// More answers came than the reset asked for: the client had left requests in flight
    /// (the relay's count of them can be fooled by a client; this cannot).
    Stale,
}

/// Run the reset `queries` (each its own Query: `DISCARD ALL` refuses to run in a
/// multi-statement one) followed, in the same write, by a query whose answer carries a random
/// marker, and read up to the marker's ReadyForQuery. Exactly one ReadyForQuery per query sent
/// must come: any other answer before the marker is a reply the client's requests still had
/// coming, which must not reach the next client.
async fn reset_checked(
    conn: &mut ServerConn,
    queries: &[&str],
    marked: bool,
) -> Result<Reset, ServerError> {
    if !marked {
        return plain_reset(conn, queries).await;
    }
    let marker = format!("pgporter reset {:016x}", rand::random::<u64>());
    let select = format!("SELECT '{marker}'");
    let queries: Vec<&str> = queries.iter().copied().chain([select.as_str()]).collect();
    crate::server::send_queries(conn, &queries).await?;
    let (mut first_error, mut answered) = (None, 0);
    loop {
        answered += 1;
        let mut marked = false;
        let (status, error) =
            crate::server::read_answer(conn, crate::protocol::MAX_CONTROL_MESSAGE, |row| {
                marked |= crate::protocol::backend::parse_data_row(row)
                    .and_then(|row| row.into_iter().next().flatten())
                    .is_some_and(|v| v == marker);
                Ok(())
            })
            .await?;
        first_error = first_error.or(error);
        if marked {
            // The marker ran last: its status is the connection's.
            return Ok(match first_error {
                _ if answered != queries.len() => Reset::Stale,
                Some(e) => Reset::Failed(e),
                None if status != b'I' => Reset::InTransaction(status),
                None => Reset::Clean,
            });
        }
        if answered >= queries.len() {
            return Ok(Reset::Stale);
        }
    }
}

/// The reset alone, when the count of answers is known to be exact.
async fn plain_reset(conn: &mut ServerConn, queries: &[&str]) -> Result<Reset, ServerError> {
    for query in queries {
        match crate::server::simple_query(conn, query).await? {
            crate::server::QueryOutcome::Done(b'I') => {}
            crate::server::QueryOutcome::Done(status) => return Ok(Reset::InTransaction(status)),
            crate::server::QueryOutcome::Failed(e) => return Ok(Reset::Failed(e)),
        }
    }
    Ok(Reset::Clean)
}

/// Say goodbye (Terminate) so PostgreSQL logs a clean disconnect; bounded, best effort.
pub(crate) async fn terminate(mut conn: ServerConn) {
    goodbye(&mut conn).await;
}

/// [`terminate`] on a connection the caller owns (its future holds no second copy of it).
async fn goodbye(conn: &mut ServerConn) {
    const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
    let _ = timeout(Duration::from_secs(1), async {
        conn.conn.io.write_all(&TERMINATE).await?;
        conn.conn.io.shutdown().await
    })
    .await;
}

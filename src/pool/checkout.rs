//! Getting a server connection: queue, let the dispatcher decide, wait (bounded by
//! query_wait_timeout, with the reserve pool opening after reserve_pool_timeout), connect.
//!
//! Cancel-safe: a checkout dropped while waiting or connecting gives back whatever it was
//! granted (guards below), so no slot or identity holding leaks.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::{sleep_until, Duration, Instant};

use super::deadline::Deadline;
use super::limits::Blocker;
use super::waiters::Identity;
use super::{Grant, Pool, PoolError, PoolSettings, Unwanted};
use crate::routing;
use crate::server::ServerConn;

impl Pool {
    /// Get a server connection for a client of `identity`: an idle one, a new one if the
    /// limits allow, or wait until `wait` passes (it may move: a reload) for one. An idle connection whose
    /// host went down or changed role (routing) is closed and another one taken.
    ///
    /// `tag`: the session tag the connection must carry (`crate::identity`; the extra params
    /// carry it to a new connection). An idle connection with that tag is preferred; else a
    /// new one in a free slot; else (pool full) a connection of another tag is closed and a
    /// tagged one connected in its slot.
    ///
    /// `wait` bounds the whole checkout, server_check_query on idle connections included: a
    /// host that vanished without closing its sockets leaves idle connections that each take
    /// server_reset_timeout to give up on, and a client tried them one after the other (75 s
    /// for five, under query_wait_timeout = 10).
    pub async fn checkout(
        self: &Arc<Self>,
        identity: &Identity,
        tag: Option<&Arc<str>>,
        extra_params: super::ConnectParams<'_>,
        wait: &Deadline,
    ) -> Result<ServerConn, PoolError> {
        loop {
            let settings = self.settings();
            let (conn, idle_for, waited) = self
                .checkout_one(identity, tag, extra_params, wait, &settings)
                .await?;
            // As PgBouncer reads server_check_query / _delay and server_reset_timeout when it
            // hands a server out: after a wait, the pool's settings again (a reload or admin
            // SET meanwhile updated them); a connection taken at once, under those just read
            // (no second read on the path every transaction takes in transaction mode).
            let settings = if waited { self.settings() } else { settings };
            match self.checked(conn, idle_for, &settings, wait.at()).await {
                Ok(conn) => return Ok(conn),
                Err((conn, reason)) => {
                    self.discard(conn, reason).await;
                    if wait.at().is_some_and(|d| Instant::now() >= d) {
                        return Err(PoolError::WaitTimeout(Blocker::ServerCheck));
                    }
                }
            }
        }
    }

    async fn checkout_one(
        self: &Arc<Self>,
        identity: &Identity,
        tag: Option<&Arc<str>>,
        extra_params: super::ConnectParams<'_>,
        wait: &Deadline,
        settings: &Arc<PoolSettings>,
    ) -> Result<(ServerConn, Option<Duration>, bool), PoolError> {
        if self.is_retired() {
            return Err(PoolError::Retired);
        }
        let since = Instant::now();
        let (seq, mut rx, blocker, close) = {
            let mut inner = self.lock();
            if let Some(conn) = self.take_now(&mut inner, settings, identity, tag) {
                drop(inner);
                let (conn, idle_for) = lent(conn, identity, since);
                return Ok((conn, idle_for, false));
            }
            let (seq, rx) = inner.waiters.push_tagged(identity.clone(), tag.cloned());
            let close = self.dispatch(&mut inner, settings);
            let blocker = inner
                .waiters
                .get(seq)
                .map(|_| self.blocker(&inner, settings, identity, false));
            (seq, rx, blocker, close)
        };
        self.settle(close);
        let (grant, waited) = match rx.try_recv() {
            Ok(grant) => (grant, false),
            Err(_) => {
                if let Some(b) = blocker {
                    self.limits.evict_for(&self.key, b);
                }
                let mut guard = WaitGuard {
                    pool: self,
                    identity,
                    seq,
                    rx: Some(rx),
                };
                (guard.wait(since, wait, settings).await?, true)
            }
        };
        match grant {
            Grant::Conn(conn) if conn.identity_tag.as_ref() == tag => {
                let (conn, idle_for) = lent(conn, identity, Instant::now());
                Ok((conn, idle_for, waited))
            }
            Grant::Conn(other) => {
                // Tagged for someone else: close it and connect in its slot.
                self.log_close(&other, "tagged for another identity");
                self.close_later(other);
                let conn = self
                    .connect_within(identity, tag, extra_params(), settings, wait)
                    .await?;
                Ok((conn, None, waited))
            }
            Grant::Permit => {
                let conn = self
                    .connect_within(identity, tag, extra_params(), settings, wait)
                    .await?;
                Ok((conn, None, waited))
            }
        }
    }

    /// Open a connection in the slot granted to `identity`, waiting for it until `wait`
    /// passes. As in PgBouncer, where the client stays in cl_waiting while a server logs in,
    /// the wait bounds the login too: a client whose wait runs out gets query_wait_timeout
    /// (it waited server_connect_timeout for a host that accepts but does not answer). The
    /// login is the pool's: it goes on, up to server_connect_timeout, when the client gives
    /// up or leaves, and a connection that gets in is checked in for the next client (see
    /// [`Pool::adopt`]). One that gets in after the pool's connections were dropped is closed:
    /// the waiting client gets one logged in afresh (RECONNECT), or, its database paused
    /// (PAUSE, KILL), waits for RESUME (`PoolError::Paused`).
    async fn connect_within(
        self: &Arc<Self>,
        identity: &Identity,
        tag: Option<&Arc<str>>,
        params: Vec<(String, String)>,
        settings: &Arc<PoolSettings>,
        wait: &Deadline,
    ) -> Result<ServerConn, PoolError> {
        if self.held() {
            // Granted a slot while its database is paused (queued before PAUSE or KILL, served
            // as a slot freed): as PgBouncer, which launches no server login for a paused
            // database, none is begun; the slot goes back and the client waits for RESUME.
            // A login begun would be closed when it got in, and free its slot for the next
            // queued client's login: one login per queued client, all closed.
            self.forget(Some(identity));
            return Err(PoolError::Paused);
        }
        let (tx, rx) = oneshot::channel();
        let (pool, holder) = (Arc::clone(self), identity.clone());
        let (tag, settings) = (tag.cloned(), Arc::clone(settings));
        // Spawned (a rare path): its future is large, and it must outlive the client's wait.
        // Tracked: a login that gets in during the shutdown is closed, not left to the exit.
        self.track(async move {
            let mut again = false;
            let made = loop {
                // A login redone after RECONNECT: not begun if the database was paused since
                // (PgBouncer launches none then); the slot goes back, the client waits for
                // RESUME.
                if again && pool.held() {
                    tracing::debug!(pool = ?pool.key, "the database was paused; its client waits for RESUME, no login is begun again");
                    pool.forget(Some(&holder));
                    break Err(PoolError::Paused);
                }
                again = true;
                let begun = pool.cuts();
                let made =
                    (pool.connect_for(Some(&holder), tag.as_ref(), &params, &settings)).await;
                let Ok(conn) = made else {
                    // Failed (server_connect_timeout ...) once the database was paused, which
                    // in PgBouncer closed it: the client waits for RESUME, not told of it.
                    if pool.held() && !tx.is_closed() {
                        tracing::debug!(pool = ?pool.key, "a server login failed while its database was paused; its client waits for RESUME");
                        break Err(PoolError::Paused);
                    }
                    break made.map(|conn| (conn, begun));
                };
                // A drop after this check is one after the client got the connection: a paused
                // database's client gives it back (closed: `return_unused`), and if the client
                // is gone, `adopt` asks again under the lock.
                let unwanted = {
                    let inner = pool.lock();
                    pool.unwanted(&inner, Some(begun))
                };
                match unwanted {
                    // The client is gone: `adopt` decides under the lock.
                    _ if tx.is_closed() => break Ok((conn, begun)),
                    None => break Ok((conn, begun)),
                    // The pool's connections were dropped (RECONNECT) during the login and
                    // the client still waits: it gets one logged in afresh, in the same slot.
                    Some(Unwanted::Dropped) => {
                        tracing::debug!(pid = conn.pid(), pool = ?pool.key, "closing a server login begun before its pool's connections were dropped; logging in again");
                        pool.log_close(&conn, "connect string changed");
                        pool.close_later(conn);
                    }
                    // As PgBouncer, which closes a paused database's logins, the client goes
                    // back to wait for RESUME (KILL pauses too: its client is being ended, and
                    // gets no fresh login); a replaced pool's client queues at the new pool.
                    // The slot is freed.
                    Some(why) => {
                        tracing::debug!(pid = conn.pid(), pool = ?pool.key, "closing a server login its client waits for: {}", why.why());
                        pool.abandon(conn, why.reason());
                        break Err(match why {
                            Unwanted::Retired => PoolError::Retired,
                            _ => PoolError::Paused,
                        });
                    }
                }
            };
            match tx.send(made) {
                Ok(()) => {}
                Err(Ok((conn, begun))) => pool.adopt(conn, begun),
                Err(Err(e)) => {
                    tracing::debug!(pool = ?pool.key, error = %e, "a server login its client gave up on ended unused");
                }
            }
        });
        let mut login = Connecting {
            pool: self,
            rx: Some(rx),
        };
        let Some(rx) = login.rx.as_mut() else {
            return Err(PoolError::WaitTimeout(Blocker::ServerLogin));
        };
        tokio::select! {
            biased;
            made = rx => {
                login.rx = None;
                // The task cannot end unsent but by a panic or the runtime shutting down.
                let made = made.unwrap_or(Err(PoolError::WaitTimeout(Blocker::ServerLogin)));
                made.map(|(mut conn, begun)| {
                    conn.lent_at = begun;
                    conn
                })
            }
            () = wait.passed() => Err(PoolError::WaitTimeout(Blocker::ServerLogin)),
        }
    }

    /// A connection opened for a client no longer waiting for it (or for min_pool_size), by
    /// a login begun at the pool's `begun` count of drops: for the next client, or closed if
    /// a reload retired the pool meanwhile (nothing would take it from a retired pool's idle
    /// list, nor close it, while a session keeps that pool alive), if the database is paused
    /// (PAUSE, KILL: PgBouncer keeps nothing idle then), or if KILL, RECONNECT or PAUSE
    /// dropped the pool's connections since the login began (it would be left idle as if
    /// opened after). Checked and checked in under one lock (see [`Pool::checkin_unless`]).
    pub(super) fn adopt(&self, conn: ServerConn, begun: u64) {
        let pid = conn.pid();
        if self.checkin_unless(conn, |inner| self.unwanted(inner, Some(begun))) {
            tracing::debug!(pid, pool = ?self.key, "a server login nobody waited for got in");
        }
    }

    /// Open a connection in a slot already counted (for `holder`, or for the idle list).
    pub(super) async fn connect_for(
        &self,
        holder: Option<&Identity>,
        tag: Option<&Arc<str>>,
        params: &[(String, String)],
        settings: &PoolSettings,
    ) -> Result<ServerConn, PoolError> {
        let login = Arc::new(crate::server::Login::default());
        self.lock().logins.push(Arc::clone(&login));
        let mut slot = SlotGuard {
            pool: self,
            holder,
            login,
            armed: true,
        };
        let since = Instant::now();
        let login = Arc::clone(&slot.login);
        let mut conn = tokio::select! {
            biased;
            // KILL of the database (`Pool::abort_logins`): as PgBouncer 1.18 closes its logins
            // at once then, the login is dropped where it stands, its socket with it, so that
            // PostgreSQL's backend (if one began) ends; the slot goes (`slot` is armed).
            () = login.aborted() => {
                self.log_aborted_login(&login, since);
                return Err(PoolError::Paused);
            }
            made = self.log_in(&login, params, settings, since) => made?,
        };
        slot.armed = false;
        self.log_opened(&conn);
        conn.holder = holder.cloned();
        conn.identity_tag = tag.cloned();
        let mut inner = self.lock();
        if inner.welcome.is_none() {
            inner.welcome = Some(std::sync::Arc::new(conn.reported.clone()));
        }
        // Before `slot` (declared earlier, dropped later) takes the lock to unlist the login.
        drop(inner);
        Ok(conn)
    }

    /// Connect, log in and run connect_query: the phases of [`Pool::connect_for`] that
    /// `login` (listed in SHOW SERVERS) follows.
    async fn log_in(
        &self,
        login: &crate::server::Login,
        params: &[(String, String)],
        settings: &PoolSettings,
        since: Instant,
    ) -> Result<ServerConn, PoolError> {
        let report = LoginReport {
            pool: self,
            login,
            since,
            owed: std::sync::Mutex::new(None),
        };
        let connected = routing::connect(
            &self.hosts,
            &self.effective_target(),
            params,
            settings.dial,
            Some(login),
            || self.limits.config().settings.routing.failover_wait_timeout,
            &report,
        )
        .await;
        let owed = report.owed.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut conn = match (connected, owed) {
            (Ok(conn), _) => conn,
            (Err(routing::RouteError::Server(e)), Some(owed)) => {
                return Err(PoolError::Refused(e, Box::new(owed)))
            }
            (Err(e), _) => return Err(e.into()),
        };
        login.logged_in(conn.pid());
        if let Some(sql) = &settings.connect_query {
            // Part of the login, as in PgBouncer: server_connect_timeout, counted from this
            // connection's connect, bounds it too (a connect_query waiting on a lock held the
            // login, its slot and its client for as long as the lock was held).
            let began = login.seen().began.unwrap_or(since);
            let left = settings.dial.timeout.saturating_sub(began.elapsed());
            let ran = tokio::time::timeout(left, crate::server::simple_query(&mut conn, sql));
            use crate::server::{QueryOutcome, ServerError};
            let refused = match ran.await {
                Ok(Ok(QueryOutcome::Done(b'I'))) => return Ok(conn),
                // 08006 with the query's message: a FATAL carrying the query's own SQLSTATE
                // (42704 for a SET of an unknown setting, say) would read as a refusal of the
                // client's own login.
                Ok(Ok(QueryOutcome::Failed(fields))) => ServerError::ConnectQueryFailed(fields),
                // One that opens a transaction ('begin') would hand every client a connection
                // already inside one, and the reset at release would fail on it.
                Ok(Ok(QueryOutcome::Done(_))) => ServerError::ConnectQueryInTransaction,
                // The connection broke mid-way (its backend ended): PgBouncer 1.18's line
                // (live): `closing because: server conn crashed?`, with the pid, as here.
                Ok(Err(e)) => {
                    self.log_close(&conn, "server conn crashed?");
                    return Err(PoolError::Connect(e));
                }
                Err(_) => {
                    // PgBouncer 1.18's line (live): `closing because: connect timeout`.
                    self.log_close(&conn, "connect timeout");
                    return Err(PoolError::Connect(ServerError::Timeout));
                }
            };
            // pgporter's choice. PgBouncer 1.18 (live) keeps a connection whose connect_query
            // failed (`ERROR S: error while executing exec_on_query: ERROR: division by zero`,
            // then the client served on it), and never finishes a login whose connect_query
            // left a transaction open (its client waited unanswered for over 10 minutes).
            tracing::warn!(db = %self.key.db, user = %self.key.user, error = %refused, "connect_query failed");
            self.log_close(&conn, refused.close_reason());
            self.close_later(conn);
            return Err(PoolError::Connect(refused));
        }
        Ok(conn)
    }

    /// Give up the pool's server logins under way (KILL of its database): each drops its
    /// socket at once (see [`Pool::connect_for`]).
    pub fn abort_logins(&self) {
        for login in &self.lock().logins {
            login.abort();
        }
    }

    /// The waiter `seq` has waited past reserve_pool_timeout: let it use the reserve pool.
    fn allow_reserve(&self, seq: u64, settings: &PoolSettings) {
        let close = {
            let mut inner = self.lock();
            match inner.waiters.get_mut(seq) {
                Some(w) => w.reserve = true,
                None => return,
            }
            self.dispatch(&mut inner, settings)
        };
        self.settle(close);
    }
}

impl Pool {
    /// PgBouncer logs each server login with log_connections.
    fn log_opened(&self, conn: &ServerConn) {
        if self.limits.config().settings.log_connections {
            let local = conn.conn.io.local_addr();
            // Formatted into the line, only if it is written.
            let local: &dyn std::fmt::Display = match &local {
                Some(a) => a,
                None => &"unix",
            };
            tracing::info!(pid = conn.pid(), db = %self.key.db, user = %self.key.user, addr = %conn.addr, %local, "new connection to server");
        }
    }
}

/// A login's attempts on the pool's hosts, told to the pool's log ([`routing::connect`]).
struct LoginReport<'a> {
    pool: &'a Pool,
    login: &'a crate::server::Login,
    since: Instant,
    /// The closing line of the refusal the login ends with, owed to its client's error.
    owed: std::sync::Mutex<Option<super::OwedClose>>,
}

impl routing::ConnectReport for LoginReport<'_> {
    fn dial_failed(
        &self,
        addr: &crate::server::ServerAddr,
        e: &crate::server::ServerError,
        last: bool,
    ) {
        let local = self.login.seen().local;
        if let Some(owed) = self.pool.log_failed_login(addr, e, self.since, local, last) {
            *self.owed.lock().unwrap_or_else(|p| p.into_inner()) = Some(owed);
        }
    }

    fn set_aside(&self, conn: ServerConn, reason: &'static str) {
        self.pool.log_opened(&conn);
        self.pool.log_close(&conn, reason);
        self.pool.close_later(conn);
    }
}

/// A queued checkout. Dropped early (client gone, shutdown), it leaves the queue and returns
/// a grant that raced in.
struct WaitGuard<'p> {
    pool: &'p Pool,
    identity: &'p Identity,
    seq: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl WaitGuard<'_> {
    async fn wait(
        &mut self,
        since: Instant,
        wait: &Deadline,
        settings: &PoolSettings,
    ) -> Result<Grant, PoolError> {
        let mut reserved = false;
        loop {
            // As PgBouncer's, which measures the waiting client against the current
            // reserve_pool_timeout, the timer follows a reload (or admin SET).
            let reloaded = self.pool.limits.reloaded();
            tokio::pin!(reloaded);
            reloaded.as_mut().enable();
            let reserve_at = if reserved {
                None
            } else {
                let lim = self.pool.limits.resolve(&self.pool.key, settings);
                lim.reserve_timeout
                    .filter(|_| lim.reserve_size > 0)
                    .and_then(|t| since.checked_add(t))
            };
            let Some(rx) = self.rx.as_mut() else {
                return Err(PoolError::WaitTimeout(Blocker::PoolSize));
            };
            tokio::select! {
                biased;
                received = rx => return self.received(received),
                // Before the reserve: at the same moment, the wait is over.
                () = wait.passed() => return self.timed_out(settings),
                () = sleep_until(reserve_at.unwrap_or(since)), if reserve_at.is_some() => {
                    reserved = true;
                    self.pool.allow_reserve(self.seq, settings);
                }
                () = &mut reloaded => {}
            }
        }
    }

    fn received(
        &mut self,
        received: Result<Grant, oneshot::error::RecvError>,
    ) -> Result<Grant, PoolError> {
        self.rx = None;
        // The sender goes away unsent when a reload retires the pool; otherwise the pool never
        // drops a queued waiter: treat it as a timeout rather than panic.
        received.map_err(|_| {
            if self.pool.is_retired() {
                PoolError::Retired
            } else {
                PoolError::WaitTimeout(Blocker::PoolSize)
            }
        })
    }

    fn timed_out(&mut self, settings: &PoolSettings) -> Result<Grant, PoolError> {
        let blocker = {
            let mut inner = self.pool.lock();
            match inner.waiters.remove(self.seq) {
                Some(w) => Some(
                    self.pool
                        .blocker(&inner, settings, self.identity, w.reserve),
                ),
                None => None,
            }
        };
        match blocker {
            Some(b) => {
                self.rx = None;
                Err(PoolError::WaitTimeout(b))
            }
            // Granted while the timer fired: the grant is in the channel already.
            None => match self.rx.as_mut().map(oneshot::Receiver::try_recv) {
                Some(Ok(grant)) => {
                    self.rx = None;
                    Ok(grant)
                }
                _ if self.pool.is_retired() => Err(PoolError::Retired),
                _ => Err(PoolError::WaitTimeout(Blocker::PoolSize)),
            },
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // Leave the queue first, so nothing more can be sent; then return what was.
        self.pool.lock().waiters.remove(self.seq);
        match rx.try_recv() {
            // Granted as the client left (KILL ended it, its wait ran out): unused, so closed
            // if its database is paused meanwhile, not kept idle (`Pool::return_unused`).
            Ok(Grant::Conn(mut conn)) => {
                conn.holder = Some(self.identity.clone());
                self.pool.return_unused(conn);
            }
            Ok(Grant::Permit) => self.pool.forget(Some(self.identity)),
            Err(_) => {}
        }
    }
}

/// A server login under way for a waiting client. Dropped before the client took the
/// connection (its wait ran out, it left), it leaves the login to finish on its own and hands
/// a connection that got in meanwhile to [`Pool::adopt`].
struct Connecting<'p> {
    pool: &'p Pool,
    /// The connection, and the pool's count of drops when its login began.
    rx: Option<oneshot::Receiver<Result<(ServerConn, u64), PoolError>>>,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        // Closed first: from now on the login task keeps what it makes.
        rx.close();
        if let Ok(Ok((conn, begun))) = rx.try_recv() {
            self.pool.adopt(conn, begun);
        }
    }
}

/// An idle connection lent to `identity` at `now`, with how long it was idle.
fn lent(mut conn: ServerConn, identity: &Identity, now: Instant) -> (ServerConn, Option<Duration>) {
    let idle_for = now.saturating_duration_since(conn.last_used);
    conn.last_used = now;
    conn.holder = Some(identity.clone());
    (conn, Some(idle_for))
}

/// A counted slot being connected, listed as a login (SHOW SERVERS) until dropped; dropped
/// armed (connect failed or was cancelled), it frees the slot too.
struct SlotGuard<'p> {
    pool: &'p Pool,
    holder: Option<&'p Identity>,
    login: Arc<crate::server::Login>,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        (self.pool.lock().logins).retain(|l| !Arc::ptr_eq(l, &self.login));
        if self.armed {
            self.pool.forget(self.holder.map(|h| &**h));
        }
    }
}

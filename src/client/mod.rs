//! One client session ("frontend"), read top to bottom:
//! handshake -> route -> authenticate -> welcome -> serve -> release.

mod acquire;
mod authenticate;
mod cancel;
mod handshake;
mod lines;
mod login;
mod not_utf8;
mod params;
mod park;
mod prepared;
mod relay;
mod renaming;
mod route;
mod serve;
mod set_up;
mod statements;
mod tap;
mod tracker;
mod watchdog;
mod xact;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::{timeout, timeout_at, Duration, Instant};

use crate::admin;
use crate::app::Shared;
use crate::config::Config;
use crate::error::Error;
use crate::net::Stream;
use crate::pool::{ClientLimit, ClientSlot};
use crate::protocol::{backend, FramedConn};
use crate::routing::Endpoint;
use crate::sessions::{NewSession, SessionGuard, SessionInfo};

pub use cancel::CancelRegistry;
pub use park::Parked;
pub use relay::TxTracker;
pub use route::pool_plan;

use authenticate::{after_login, authenticate_admin, login, login_context};
use handshake::{handshake, Hello};
use lines::{log_close, PeerText, Tag, TlsText};
use params::ClientParams;
use serve::{serve, Session, Who};

/// Where a client connected from.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    Unix,
}

impl Peer {
    pub fn port(&self) -> u16 {
        match self {
            Peer::Tcp(a) => a.port(),
            Peer::Unix => 0,
        }
    }

    /// The TCP port, or `listen_port` on the unix socket (whose file is named after it).
    pub fn port_or(&self, listen_port: u16) -> u16 {
        match self {
            Peer::Tcp(a) => a.port(),
            Peer::Unix => listen_port,
        }
    }

    /// The client's IP address (None for a unix socket).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Unix => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// What a connection turned out to be, once logged in.
enum Started {
    /// A CancelRequest (already handled), and what became of it.
    Cancel(cancel::Cancelled),
    Pool(Seat),
    Admin {
        role: admin::Role,
        guard: SessionGuard,
        /// Counted against the client caps while the console session lasts.
        slot: ClientSlot,
    },
}

/// A logged-in pool client: its session and its entries in the session and cancel-key
/// registries (removed when the seat is dropped). It may wait in the lobby between tasks.
#[derive(Debug)]
pub struct Seat {
    /// Boxed: the seat stays small in the task (or lobby slot) that holds it.
    session: Box<Session>,
    cancel: cancel::Registration,
    guard: SessionGuard,
}

/// Serve one client connection to its end. Every failure the client can be told about becomes
/// a FATAL ErrorResponse with its SQLSTATE. `over_max`: the connection came when
/// max_client_conn connections were already counted (only the admin console may log in).
pub fn run(
    stream: Stream,
    peer: Peer,
    endpoint: Endpoint,
    shared: crate::net::listener::ClientCount,
    over_max: bool,
) -> impl std::future::Future<Output = ()> + Send {
    // A plain fn around an async block: the block's captures are its only copies of the
    // arguments (an async fn keeps two of each), so every client's task stays smaller.
    let mut conn = FramedConn::new(stream);
    let mut peer = peer;
    async move {
        let config = shared.config.load();
        let peer_pid = conn.io.peer_pid().unwrap_or(0);
        let mut tag = Tag::new(
            shared.sessions.next_client_id(),
            peer_pid,
            shared.listen_port,
        );
        // Over max_client_conn, the PROXY header and the opening packets together get
        // OVER_MAX_HANDSHAKE: a trusted peer saying nothing is held no longer than another.
        let over_max = over_max.then(|| Instant::now() + OVER_MAX_HANDSHAKE);
        let login = timeout(
            Config::limit(config.settings.client_login_timeout),
            // Login is large and short-lived: boxed, so an idle session's task stays small.
            Box::pin(async {
                let proxied = proxied_peer(&mut conn, peer.clone(), &config);
                peer = match over_max {
                    Some(by) => match timeout_at(by, proxied).await {
                        Ok(proxied) => proxied?,
                        Err(_) => return Err(too_many_clients(&shared, &peer, "", "").await),
                    },
                    None => proxied.await?,
                };
                let tag = &mut tag;
                start(&mut conn, &peer, endpoint, over_max, tag, &shared, &config).await
            }),
        )
        .await;
        if let Ok(Err(Error::Proxy(e))) = &login {
            tracing::warn!(%peer, error = %e, "closing connection");
            return;
        }
        let login = login.unwrap_or(Err(Error::LoginTimeout));
        if let Err(e) = &login {
            tag.refused(&peer, e, &config, || conn.io.tls_info());
        }
        let result = match login {
            Err(e) => Err(e),
            // Handled; the TLS shutdown below still applies.
            Ok(Started::Cancel(done)) => {
                tag.cancel_closed(&peer, &done, &config);
                Ok(())
            }
            Ok(Started::Admin { role, guard, slot }) => {
                tag.named_as(&guard.info);
                // Boxed: rare and large, it would otherwise size every client's task.
                let served = Box::pin(admin::serve(&mut conn, role, &guard.info, &shared)).await;
                drop(slot);
                if config.settings.log_disconnections {
                    log_close(&peer, &guard.info, &served);
                }
                served
            }
            Ok(Started::Pool(seat)) => {
                tag.named_as(&seat.guard.info);
                // A client that stays quiet after its login waits in the lobby, taskless.
                if park::quiet(&conn, &seat.guard.info).await {
                    if let Some(tcp) = conn.io.take_tcp() {
                        return park::park(tcp, Parked::new(seat, shared));
                    }
                }
                serve_seat(&mut conn, seat, &peer, &shared, &config).await
            }
        };
        if let Err(e) = result {
            report(&mut conn, &peer, &tag, &e, &config).await;
        }
        // A TLS peer gets close_notify (libpq 17's encrypted cancel waits for it: without it
        // OpenSSL reports "unexpected eof"). Plain sockets just close (FIN): everything was
        // flushed, and a separate shutdown() costs a syscall and a loopback round of its own.
        if conn.io.is_tls() {
            let _ = timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::shutdown(&mut conn.io),
            )
            .await;
        }
    }
}

/// Serve a logged-in pool client to its end: in the task that logged it in, or in the one
/// that took it back from the lobby.
async fn serve_seat(
    conn: &mut FramedConn<Stream>,
    seat: Seat,
    peer: &Peer,
    shared: &Shared,
    config: &Config,
) -> Result<(), Error> {
    let Seat {
        session,
        cancel,
        guard,
    } = seat;
    let result = serve(conn, session, &guard.info, shared).await;
    drop(cancel);
    if config.settings.log_disconnections {
        log_close(peer, &guard.info, &result);
    }
    result
}

/// The real client address when a trusted proxy sent a PROXY header (TCP only).
async fn proxied_peer(
    conn: &mut FramedConn<Stream>,
    peer: Peer,
    config: &Config,
) -> Result<Peer, Error> {
    let Stream::Tcp(tcp) = &mut conn.io else {
        return Ok(peer);
    };
    let trusted = &config.settings.proxy_protocol_trusted;
    if trusted.is_empty() {
        // The protocol is off: no peek at every connection's first bytes. A header is then
        // what it looks like to PostgreSQL, an invalid startup packet (08P01).
        return Ok(peer);
    }
    match crate::net::proxy::accept(tcp, peer.ip(), trusted).await {
        Ok(Some(addr)) => Ok(Peer::Tcp(addr)),
        Ok(None) => Ok(peer),
        Err(e) => Err(Error::Proxy(e)),
    }
}

/// How long a connection that came over max_client_conn has for its opening packets (a
/// trusted proxy's PROXY header included).
const OVER_MAX_HANDSHAKE: Duration = Duration::from_secs(2);

/// Handshake, route and login. `over_max`: the connection came with max_client_conn reached
/// (only the console may log in), and its opening packets must have come by then.
async fn start(
    conn: &mut FramedConn<Stream>,
    peer: &Peer,
    endpoint: Endpoint,
    over_max: Option<Instant>,
    tag: &mut Tag,
    shared: &Shared,
    config: &Config,
) -> Result<Started, Error> {
    // The contexts of the moment: a reload that renews the certificate affects later clients.
    let tls = shared.tls.load_full();
    let client_tls = tls.client.as_deref();
    let hello = handshake(conn, client_tls);
    let hello = if let Some(by) = over_max {
        // Over max_client_conn only the console gets in: a connection gets no longer than
        // that to say what it is, so a flood over the cap holds little for long.
        match timeout_at(by, hello).await {
            Ok(hello) => hello?,
            Err(_) => return Err(too_many_clients(shared, peer, "", "").await),
        }
    } else {
        hello.await?
    };
    let mut startup = match hello {
        Hello::Cancel(key) => {
            return Ok(Started::Cancel(shared.cancels.cancel(key, config).await));
        }
        Hello::Startup(startup) => startup,
    };
    if client_tls.is_some_and(|t| t.mode.requires_tls()) && !conn.io.is_tls() && !conn.io.is_unix()
    {
        return Err(Error::SslRequired);
    }
    if let Err(e) = not_utf8::settle(&mut startup, config) {
        // A user or database name that is not UTF-8 is PgBouncer's unknown user or database
        // (it takes any bytes): its lines name the login, escaped. Other parameters are its
        // unsupported startup parameter, refused before it looks at the names.
        let or_user = |user: &str| match startup.get("database").filter(|d| !d.is_empty()) {
            Some(db) => db.to_string(),
            None => user.to_string(),
        };
        match &e {
            Error::UnknownRole(user) => tag.named(user, &or_user(user)),
            Error::UnknownDatabase(db) => tag.named(startup.get("user").unwrap_or_default(), db),
            _ => {}
        }
        return Err(e);
    }
    let user = startup.get("user").unwrap_or_default();
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    params::refuse_unsupported(&startup.params, config, admin::is_admin_database(database))?;
    let ctx = login_context(conn, client_tls, tag, shared, config);
    let started = async {
        if admin::is_admin_database(database) && !user.is_empty() {
            return start_admin(conn, peer, &startup, &ctx, shared, config).await;
        }
        if over_max.is_some() {
            return Err(too_many_clients(shared, peer, user, database).await);
        }
        if shared.lifecycle.draining() {
            return Err(Error::Draining);
        }
        let route = route::route(&startup, config, shared, endpoint)?;
        if shared.gates.is_disabled(&route.database) {
            return Err(Error::DatabaseDisabled(route.database));
        }
        let app = startup.get("application_name").unwrap_or_default();
        let login = login(conn, peer, &route, &ctx, app, shared, config).await;
        if let Err(e @ Error::AuthFailed { .. }) = &login {
            shared
                .audit
                .send(crate::audit::AuditEvent::AuthFailure {
                    user: route.client_user.clone(),
                    client_addr: crate::identity::addr_text(peer.ip()),
                    client_port: Some(peer.port()).filter(|p| *p != 0),
                    database: route.database.clone(),
                    reason: e.to_string(),
                })
                .await;
        }
        after_login(login, &route.client_user, shared, config).await?;
        // The names every part of the session keeps (limits, registry, audit, pool): one
        // allocation each, shared.
        let names = SessionNames::new(&route);
        // Counted against max_user_client_connections and max_db_client_connections after
        // authentication, so that clients without the password cannot use up a user's slots.
        let client_slot = match shared.pools.limits().admit_client(&names.user, &names.db) {
            Ok(slot) => slot,
            Err(limit) => {
                return Err(client_limit(shared, &names.user, &names.db, peer, limit).await)
            }
        };
        let session_who = who_is(
            &route,
            &names,
            &startup.params,
            peer,
            shared,
            config,
            conn.io.is_tls(),
        );
        let params = ClientParams::from_startup(
            &startup.params,
            config,
            peer,
            &route.client_user,
            !session_who.checked,
        )?;
        let guard = shared.sessions.register(
            NewSession {
                id: ctx.tag.id,
                user: Arc::clone(&names.user),
                database: Arc::clone(&names.db),
                pool_user: Arc::clone(&names.pool_user),
                ip: peer.ip(),
                // On the unix socket, the listen port (as PgBouncer shows it).
                port: peer.port_or(shared.listen_port),
                application_name: params::name_data(
                    startup.get("application_name").unwrap_or_default(),
                ),
                admin: false,
                tls: conn.io.tls_info(),
                endpoint: route.key.endpoint,
                local: conn.io.local_addr(),
                peer_pid: ctx.tag.peer_pid(),
            },
            &shared.shutdown,
        );
        if config.settings.log_connections {
            // Once registered: the line names the session by its id (SHOW CLIENTS ptr).
            let tls = TlsText(guard.info.tls.as_ref());
            let peer = PeerText::of(peer, &guard.info);
            let db = &*route.database;
            let who = format_args!("{}@{db}", route.client_user);
            tracing::info!(%peer, %who, db, id = guard.info.id, %tls, "login attempt: ok");
            ctx.tag.attempt_logged();
        }
        let registration = shared.cancels.register(&guard.info);
        let stats = shared.stats.pool(&route.key.db, &route.key.user);
        let mut session = Box::new(Session {
            pool: Arc::clone(route.pool()),
            client_slot,
            params,
            stats,
            read_only_hint: route.read_only_hint.map(Arc::from),
            who: session_who,
            txn: None,
        });
        welcome(conn, &mut session, registration.key, &guard.info, shared).await?;
        Ok(Started::Pool(Seat {
            session,
            cancel: registration,
            guard,
        }))
    }
    .await;
    match &started {
        // PgBouncer refuses a login over max_client_conn before it looks at its names (live:
        // `(nodb)/(nouser)`, no login attempt line).
        Err(Error::TooManyClients) | Ok(_) => {}
        // The names the refused login's lines give (allocated for those only).
        Err(_) => tag.named(user, database),
    }
    started
}

/// The admin console: `pgbouncer` over the unix socket from our own OS user gets in without a
/// password; others authenticate and must be in admin_users or stats_users.
async fn start_admin(
    conn: &mut FramedConn<Stream>,
    peer: &Peer,
    startup: &crate::protocol::startup::StartupParams,
    ctx: &login::LoginContext<'_>,
    shared: &Shared,
    config: &Config,
) -> Result<Started, Error> {
    let user = startup.get("user").unwrap_or_default();
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    let peer_ok =
        user == "pgbouncer" && shared.own_uid.is_some() && conn.io.peer_uid() == shared.own_uid;
    if !peer_ok {
        authenticate_admin(conn, peer, database, user, ctx, shared, config).await?;
    }
    let s = &config.settings;
    let role = if peer_ok || s.admin_users.iter().any(|u| u == user) {
        admin::Role::Admin
    } else if s.stats_users.iter().any(|u| u == user) {
        admin::Role::Stats
    } else {
        return Err(Error::AdminNotAllowed(user.to_string()));
    };
    let user: Arc<str> = Arc::from(user);
    let console: Arc<str> = Arc::from(crate::snapshot::CONSOLE_DB);
    let exempt = role == admin::Role::Admin;
    let slot = match shared.pools.limits().admit_console(&user, &console, exempt) {
        Ok(slot) => slot,
        Err(limit) => return Err(client_limit(shared, &user, &console, peer, limit).await),
    };
    let guard = shared.sessions.register(
        NewSession {
            id: ctx.tag.id,
            user: Arc::clone(&user),
            database: Arc::from(database),
            pool_user: user,
            ip: peer.ip(),
            // On the unix socket, the listen port (as PgBouncer shows it).
            port: peer.port_or(shared.listen_port),
            application_name: params::name_data(
                startup.get("application_name").unwrap_or_default(),
            ),
            admin: true,
            tls: conn.io.tls_info(),
            endpoint: crate::routing::Endpoint::ReadWrite,
            local: conn.io.local_addr(),
            peer_pid: ctx.tag.peer_pid(),
        },
        &shared.shutdown,
    );
    if s.log_connections {
        let (user, tls) = (&guard.info.user, TlsText(guard.info.tls.as_ref()));
        let peer = PeerText::of(peer, &guard.info);
        tracing::info!(%peer, %user, db = database, id = guard.info.id, %tls, role = ?role, "admin console login");
    }
    let key: (i32, i32) = (rand::random::<i32>() & i32::MAX, rand::random());
    admin::welcome(conn, key).await?;
    Ok(Started::Admin { role, guard, slot })
}

/// max_client_conn refused a connection (of `user` on `db`, when known): audited; the error
/// for the client, whose lines log it (its closing and pooler error lines, as PgBouncer's).
async fn too_many_clients(shared: &Shared, peer: &Peer, user: &str, db: &str) -> Error {
    shared
        .audit
        .send(crate::audit::AuditEvent::LimitRejection {
            user: Some(user.to_string()).filter(|u| !u.is_empty()),
            client_addr: crate::identity::addr_text(peer.ip()),
            database: Some(db.to_string()).filter(|d| !d.is_empty()),
            reason: "max_client_conn".into(),
        })
        .await;
    Error::TooManyClients
}

/// A client cap (`limit`) refused the login of `user` on `db`: logged, counted for the user,
/// audited; the error for the client.
async fn client_limit(
    shared: &Shared,
    user: &str,
    db: &str,
    peer: &Peer,
    limit: ClientLimit,
) -> Error {
    let n = shared.pools.limits().rejections.record(user, limit.name());
    tracing::warn!(%peer, user, db, limit = limit.name(), rejections = n, "client connections exceeded");
    let e = Error::ClientLimit(limit);
    shared
        .audit
        .send(crate::audit::AuditEvent::LimitRejection {
            user: Some(user.to_string()),
            client_addr: crate::identity::addr_text(peer.ip()),
            database: Some(db.to_string()),
            reason: e.to_string(),
        })
        .await;
    e
}

/// A session's user, database and backend names, shared by its parts.
struct SessionNames {
    user: Arc<str>,
    db: Arc<str>,
    pool_user: Arc<str>,
    backend_user: Arc<str>,
}

impl SessionNames {
    fn new(route: &route::Route<'_>) -> SessionNames {
        let pool = route.pool();
        let shared = |name: &str, same: &Arc<str>| {
            if name == &**same {
                Arc::clone(same)
            } else {
                Arc::from(name)
            }
        };
        SessionNames {
            user: shared(&route.client_user, &pool.key.user),
            db: shared(&route.database, &pool.key.db),
            pool_user: Arc::clone(&pool.key.user),
            backend_user: Arc::clone(&pool.backend_user),
        }
    }
}

/// The session's identity: audit info, and whether the spoof check applies (not to admin users).
fn who_is(
    route: &route::Route<'_>,
    names: &SessionNames,
    startup: &[(String, String)],
    peer: &Peer,
    shared: &Shared,
    config: &Config,
    tls: bool,
) -> Who {
    let admin = config.settings.admin_users.contains(&route.client_user);
    let pool = route.pool();
    // Only with an audit log: the registry entry serves everything else.
    let info = shared.audit.enabled().then(|| crate::audit::SessionInfo {
        session_id: shared
            .session_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        client_user: Arc::clone(&names.user),
        client_addr: crate::identity::addr_text(peer.ip()),
        client_port: Some(peer.port()).filter(|p| *p != 0),
        tls,
        database: Arc::clone(&names.db),
        backend_user: Arc::clone(&names.backend_user),
        backend_host: Arc::from(pool.target.addr.to_string()),
        application_name: startup
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
            .map(|(_, v)| v.clone()),
    });
    Who {
        info: info.map(Arc::new),
        checked: !admin,
        queue_noticed: Default::default(),
        audit: shared.audit.clone(),
    }
}

/// AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery. The parameters come from
/// the pool's first server connection; a pool without one makes it now and puts it back.
async fn welcome(
    conn: &mut FramedConn<Stream>,
    session: &mut Session,
    key: crate::protocol::startup::CancelKey,
    info: &SessionInfo,
    shared: &Shared,
) -> Result<(), Error> {
    let reported = match session.pool.welcome() {
        Some(reported) => reported,
        None => {
            let (server, pool) =
                acquire::acquire(session, info, shared, acquire::Wanted::Welcome).await?;
            session.pool = pool;
            // The pool keeps its first connection's values (set when it was made): every
            // client of the pool is welcomed, and later SET, to the same.
            let reported = session
                .pool
                .welcome()
                .unwrap_or_else(|| Arc::new(server.reported.clone()));
            // A logged-in client holds no server until its first request, as in PgBouncer's
            // session mode. Keeping this one would let a burst of idle clients on a cold pool
            // hold every server while the logins queued behind them time out. Synchronous, so
            // a login timeout cannot cut the hand-back short.
            session.pool.return_unused(server);
            info.set_idle();
            reported
        }
    };
    // Straight into the write buffer (which may already hold SASLFinal), sized once.
    let buf = &mut conn.wbuf;
    buf.reserve(512);
    backend::authentication(buf, backend::AUTH_OK, &[]);
    session
        .params
        .welcome(&reported, session.pool.app_default(), buf);
    backend::backend_key_data(buf, key.pid, key.secret);
    let notify = &shared.config.load().settings.login_notify_message;
    if !notify.is_empty() {
        backend::error_response(buf, backend::Severity::Notice, "00000", notify, None);
    }
    backend::ready_for_query(buf, b'I');
    conn.flush().await.map_err(Error::ClientProtocol)
}

/// Log an error and tell the client, if it is still there to hear it.
async fn report(
    conn: &mut FramedConn<Stream>,
    peer: &Peer,
    tag: &Tag,
    error: &Error,
    config: &Config,
) {
    tag.error(peer, error, config);
    if error.is_disconnect() {
        return;
    }
    if matches!(error, Error::ServerFatal) {
        // The server's FATAL was the client's last message, as on a direct connection.
        return;
    }
    let mut buf = BytesMut::new();
    error.encode(&mut buf);
    conn.queue(&buf);
    let _ = timeout(Duration::from_secs(1), conn.flush()).await;
}

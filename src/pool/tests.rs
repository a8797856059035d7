//! The pool driven directly, where an integration test cannot order the steps: a connection
//! coming back without a client while the pool's connections are dropped.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Duration, Instant};

use super::{Pool, PoolKey, Pools};
use crate::config::ConfigHandle;
use crate::server::ServerConn;

/// A pool of database `app` (its server never dialled), and the gates that pause it.
fn pool() -> (Arc<Pool>, Arc<crate::gates::Gates>) {
    pool_on(9)
}

/// A pool of database `app` whose server is 127.0.0.1:`port`.
fn pool_on(port: u16) -> (Arc<Pool>, Arc<crate::gates::Gates>) {
    pool_with(port, "")
}

/// [`pool_on`], with `settings` lines in [pgbouncer].
fn pool_with(port: u16, settings: &str) -> (Arc<Pool>, Arc<crate::gates::Gates>) {
    let text = format!(
        "[databases]\napp = host=127.0.0.1 port={port} dbname=app\n[pgbouncer]\n{settings}"
    );
    let text = text.as_str();
    let raw = crate::config::parse_ini(text, "test.ini").unwrap();
    let config = crate::config::from_raw(std::path::Path::new("test.ini"), raw).unwrap();
    let gates = Arc::new(crate::gates::Gates::default());
    let pools = Pools::new(Arc::new(ConfigHandle::new(config)), Arc::clone(&gates));
    let key = PoolKey {
        db: Arc::from("app"),
        user: Arc::from("u"),
        endpoint: crate::routing::Endpoint::ReadWrite,
    };
    let config = pools.limits().config();
    let (target, settings) = crate::client::pool_plan(&config, &key, None).unwrap();
    let pool = pools.get_or_create(&key, |limits| {
        Pool::new(key.clone(), target, settings, limits)
    });
    (pool, gates)
}

/// A connection in a slot the pool counts (as a login's), over a loopback socket whose other
/// end is returned (a real server's part is not needed: the pool never speaks on it here).
async fn counted_conn(pool: &Pool) -> (ServerConn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (theirs, _) = listener.accept().await.unwrap();
    {
        let mut inner = pool.lock();
        inner.total += 1;
        pool.limits.add_server(&pool.key);
    }
    let now = Instant::now();
    let conn = ServerConn {
        conn: crate::protocol::FramedConn::new(crate::net::Stream::Tcp(ours)),
        addr: crate::server::ServerAddr::new("127.0.0.1", 9),
        key: crate::protocol::startup::CancelKey { pid: 1, secret: 2 },
        params: Default::default(),
        spellings: Vec::new(),
        reported: Vec::new(),
        created_at: now,
        last_used: now,
        holder: None,
        lent_at: 0,
        tag: None,
        identity_tag: None,
        tls: None,
        local: None,
        set_for_client: Vec::new(),
        link: None,
        statements: Default::default(),
    };
    (conn, theirs)
}

/// A login nobody waits for gets in (adopt) while RECONNECT drops the pool's connections
/// (close_idle). The drop's count and the check-in are one step under the pool lock: the
/// connection is closed, not left idle as if opened after the drop. Adopt is held up where it
/// reads the pool's settings (before it takes the pool lock) while close_idle runs, which put
/// the check before the drop and the check-in after it when the count was read apart from
/// the check-in. The 0.3 s for the adopting thread to get there cannot make this test fail
/// wrongly; a slower thread only makes the old order pass.
// The settings lock is held across close_idle on purpose: adopt waits on it meanwhile.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_getting_in_as_the_pool_drops_its_connections_is_not_kept() {
    let (pool, _gates) = pool();
    let (conn, _theirs) = counted_conn(&pool).await;
    let begun = pool.cuts();
    let settings = pool.settings.lock().unwrap();
    let adopting = {
        let pool = Arc::clone(&pool);
        tokio::task::spawn_blocking(move || pool.adopt(conn, begun))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pool.close_idle("database configuration changed").await;
    drop(settings);
    adopting.await.unwrap();
    let counts = pool.counts();
    assert_eq!((counts.idle, counts.total), (0, 0), "{counts:?}");
    assert_eq!(pool.limits.server_counts("app", "u"), (0, 0));
}

/// A login nobody waits for that gets in while its database is paused is closed (PgBouncer
/// keeps nothing idle then); one that gets in unpaused, with no drop since it began, is kept.
#[tokio::test]
async fn a_login_getting_in_while_paused_is_not_kept() {
    let (pool, gates) = pool();
    let (conn, _theirs) = counted_conn(&pool).await;
    gates.update(|g| {
        g.paused.insert("app".into());
    });
    pool.adopt(conn, pool.cuts());
    let counts = pool.counts();
    assert_eq!((counts.idle, counts.total), (0, 0), "{counts:?}");
    gates.update(|g| {
        g.paused.remove("app");
    });
    let (conn, _theirs) = counted_conn(&pool).await;
    pool.adopt(conn, pool.cuts());
    let counts = pool.counts();
    assert_eq!((counts.idle, counts.total), (1, 1), "{counts:?}");
}

/// Accept a server login on `listener` and read its startup packet; the login is answered
/// (trust: AuthenticationOk, BackendKeyData, ReadyForQuery) by [`let_in`].
async fn login_under_way(listener: &TcpListener) -> TcpStream {
    let (mut socket, _) = listener.accept().await.unwrap();
    let len = socket.read_i32().await.unwrap();
    let mut rest = vec![0; usize::try_from(len - 4).unwrap()];
    socket.read_exact(&mut rest).await.unwrap();
    socket
}

async fn let_in(socket: &mut TcpStream) {
    let mut answer = Vec::new();
    answer.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    answer.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 8]);
    answer.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    socket.write_all(&answer).await.unwrap();
}

/// KILL (or PAUSE) comes while a new connection logs in for a client that still waits (a
/// client being killed has not ended yet): the login that gets in is closed, no fresh one is
/// begun (PgBouncer closes the login, and a killed or paused database's client gets none),
/// the slot is freed, and the client is told to wait for RESUME. The client's checkout is
/// simply kept waiting here, which a real killed client does only for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_getting_in_after_kill_is_neither_redone_nor_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (pool, gates) = pool_on(listener.local_addr().unwrap().port());
    let client = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            let identity: super::Identity = Arc::from("u");
            let wait = super::Deadline::new(Instant::now(), Some(Duration::from_secs(60)));
            pool.checkout(&identity, None, &Vec::new, &wait)
                .await
                .map(|conn| conn.pid())
        })
    };
    let mut login = login_under_way(&listener).await;
    // As KILL: the database paused, then the pool's connections dropped.
    gates.update(|g| {
        g.paused.insert("app".into());
    });
    pool.close_idle("database configuration changed").await;
    let_in(&mut login).await;
    let got = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("a fresh login was begun for the client")
        .unwrap();
    assert!(matches!(got, Err(super::PoolError::Paused)), "{got:?}");
    // Closed: the server side reads the Terminate, then EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), login.read_to_end(&mut rest))
        .await
        .expect("the login's connection stayed open")
        .unwrap();
    let counts = pool.counts();
    assert_eq!((counts.idle, counts.total), (0, 0), "{counts:?}");
}

/// A client granted a slot while its database is paused (one queued before PAUSE or KILL is
/// served so as a slot frees) begins no server login: PgBouncer launches none for a paused
/// database. The slot goes back and the client is told to wait for RESUME. A login begun got
/// in only to be closed, freeing the slot for the next queued client's login, and so on.
#[tokio::test]
async fn a_slot_granted_while_paused_begins_no_login() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (pool, gates) = pool_on(listener.local_addr().unwrap().port());
    gates.update(|g| {
        g.paused.insert("app".into());
    });
    let identity: super::Identity = Arc::from("u");
    let wait = super::Deadline::new(Instant::now(), Some(Duration::from_secs(60)));
    let checkout = pool.checkout(&identity, None, &Vec::new, &wait);
    let got = tokio::select! {
        got = checkout => got.map(|conn| conn.pid()),
        _ = listener.accept() => panic!("a server login was begun while the database was paused"),
    };
    assert!(matches!(got, Err(super::PoolError::Paused)), "{got:?}");
    assert_nothing_kept(&pool);
}

/// A connection granted to a queued client that leaves before it takes it (KILL ended it, its
/// wait ran out) goes back unused: closed while its database is paused, as the pool keeps
/// nothing idle then. It was checked in as after a transaction, and stayed idle while paused.
#[tokio::test]
async fn a_grant_left_behind_while_paused_is_not_kept_idle() {
    let (pool, gates) = pool_with(9, "default_pool_size = 1\n");
    // The pool's one slot is lent out: the next client queues.
    let (conn, _theirs) = counted_conn(&pool).await;
    let identity: super::Identity = Arc::from("u");
    let wait = super::Deadline::new(Instant::now(), Some(Duration::from_secs(60)));
    let mut queued = Box::pin(pool.checkout(&identity, None, &Vec::new, &wait));
    tokio::select! {
        biased;
        got = &mut queued => panic!("served with the pool full: {:?}", got.map(|c| c.pid())),
        () = std::future::ready(()) => {}
    }
    assert_eq!(pool.counts().waiting, 1);
    gates.update(|g| {
        g.paused.insert("app".into());
    });
    // The lent connection comes back and is granted to the queued client, which then leaves.
    pool.checkin(conn);
    assert_eq!(pool.counts().waiting, 0);
    drop(queued);
    assert_nothing_kept(&pool);
}

/// Idle connections past server_lifetime whose servers read nothing (their socket buffers
/// full, so each Terminate waits out its 1 s bound) are closed without holding up the
/// janitor's tick: the check returns at once, not after a second per connection, and the
/// slots are freed at once too.
#[tokio::test]
async fn expired_connections_of_slow_servers_do_not_hold_up_the_janitor() {
    const SLOW: u32 = 12;
    let (pool, _gates) = pool_with(9, "server_lifetime = 1\n");
    let mut peers = Vec::new();
    for _ in 0..SLOW {
        let (mut conn, theirs) = counted_conn(&pool).await;
        let crate::net::Stream::Tcp(ours) = &conn.conn.io else {
            unreachable!("counted_conn dials TCP")
        };
        // Fill the send buffer: the peer never reads, so the next write would wait.
        let chunk = vec![0_u8; 64 * 1024];
        while ours.try_write(&chunk).is_ok() {}
        let old = Instant::now().checked_sub(Duration::from_secs(10)).unwrap();
        conn.created_at = old;
        conn.lent_at = pool.cuts();
        pool.checkin(conn);
        peers.push(theirs);
    }
    assert_eq!(pool.counts().idle, SLOW);
    let before = Instant::now();
    pool.evict_expired();
    let took = before.elapsed();
    assert!(took < Duration::from_secs(10), "the check took {took:?}");
    let counts = pool.counts();
    assert_eq!((counts.idle, counts.total), (0, 0), "{counts:?}");
}

/// A tracing layer that runs `then` once, at the first event whose message starts `at`: a
/// place in the pool's code for a test to act at (this thread's events only).
struct ActAt<F> {
    at: &'static str,
    then: std::sync::Mutex<Option<F>>,
}

impl<S, F> tracing_subscriber::Layer<S> for ActAt<F>
where
    S: tracing::Subscriber,
    F: FnOnce() + Send + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.starts_with(self.at) {
            if let Some(then) = self.then.lock().unwrap().take() {
                then();
            }
        }
    }
}

/// RECONNECT comes while a client's login is under way, and PAUSE right after the login got
/// in and was found dropped: no login is begun again (PgBouncer launches none for a paused
/// database); the client is told to wait for RESUME. The retry began a login regardless,
/// closed only once it got in. PAUSE is made at the moment the dropped login is closed (the
/// pool's debug line), which no client could time.
#[tokio::test]
async fn a_login_redone_after_reconnect_is_not_begun_once_paused() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (pool, gates) = pool_on(listener.local_addr().unwrap().port());
    let pause = {
        let gates = Arc::clone(&gates);
        move || {
            gates.update(|g| {
                g.paused.insert("app".into());
            });
        }
    };
    let layer = ActAt {
        at: "closing a server login begun before its pool's connections were dropped",
        then: std::sync::Mutex::new(Some(pause)),
    };
    // This runtime has one thread: the login's task logs here too.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let client = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            let identity: super::Identity = Arc::from("u");
            let wait = super::Deadline::new(Instant::now(), Some(Duration::from_secs(60)));
            pool.checkout(&identity, None, &Vec::new, &wait)
                .await
                .map(|conn| conn.pid())
        })
    };
    let mut login = login_under_way(&listener).await;
    // As RECONNECT: the pool's connections dropped, the database not paused.
    pool.close_idle("database configuration changed").await;
    let_in(&mut login).await;
    let got = tokio::select! {
        got = client => got.unwrap(),
        _ = listener.accept() => panic!("a login was begun again while the database was paused"),
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("the client was not answered"),
    };
    assert!(matches!(got, Err(super::PoolError::Paused)), "{got:?}");
    assert_nothing_kept(&pool);
}

/// The pool of "app" for "u" keeps no connection: none idle, none counted, none held by "u",
/// none in the limits' server counts.
fn assert_nothing_kept(pool: &super::Pool) {
    let counts = pool.counts();
    assert_eq!((counts.idle, counts.total), (0, 0), "{counts:?}");
    assert_eq!(pool.held_by("u"), 0);
    assert_eq!(pool.limits.server_counts("app", "u"), (0, 0));
}

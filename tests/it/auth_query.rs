//! auth_user + auth_query: a user missing from auth_file is looked up in pg_shadow.

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::pg::{SUPERUSER, SUPERUSER_PASSWORD};
use crate::support::{db_error, fixture, Fixture, Spec, HANG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_missing_from_auth_file_is_looked_up() {
    let fx = Fixture::custom(|_| Spec {
        // Only the auth_user is listed.
        userlist: Some(fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)])),
        ..Spec::new(format!(
            "auth_user = {SUPERUSER}\nadmin_users = {SUPERUSER}\n"
        ))
    })
    .await;
    let client = fx.connect().await;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query as a user found by auth_query");
    assert_eq!(row.get::<_, String>(0), fx.user);
    // As PgBouncer, SHOW USERS and SHOW LISTS count the user auth_query found.
    let (admin, conn) = tokio_postgres::connect(
        &fx.porter
            .connstring(SUPERUSER, SUPERUSER_PASSWORD, "pgbouncer"),
        NoTls,
    )
    .await
    .expect("console");
    tokio::spawn(conn);
    let names = |msgs: Vec<tokio_postgres::SimpleQueryMessage>, column: usize| -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(format!(
                    "{}={}",
                    r.get(0).unwrap_or(""),
                    r.get(column).unwrap_or("")
                )),
                _ => None,
            })
            .collect()
    };
    let users = names(
        admin.simple_query("SHOW USERS").await.expect("SHOW USERS"),
        7,
    );
    assert!(users.contains(&format!("{}=1", fx.user)), "{users:?}");
    let lists = names(
        admin.simple_query("SHOW LISTS").await.expect("SHOW LISTS"),
        1,
    );
    // The auth_file's user, the one auth_query found, and the console's `pgbouncer`.
    assert!(lists.contains(&"users=3".to_string()), "{lists:?}");

    for (user, password) in [(fx.user.as_str(), "wrong"), ("no_such_role_here", "x")] {
        let err = tokio::time::timeout(
            HANG,
            tokio_postgres::connect(&fx.porter.connstring(user, password, &fx.db), NoTls),
        )
        .await
        .expect("hung")
        .err()
        .expect("login accepted");
        assert_eq!(
            db_error(&err).code(),
            &SqlState::INVALID_PASSWORD,
            "{user}: {err:?}"
        );
    }
}

/// A [databases] entry's own `auth_user` (no [pgbouncer] auth_user at all) finds the user, as
/// in PgBouncer; its `connect_query` runs once on every new server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_entry_auth_user_and_connect_query() {
    let cluster = crate::support::cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    cluster.create_role(&user, "pw-entry").await;
    cluster.create_database(&db, &user).await;
    let direct = cluster.local_client(&user, &db).await;
    direct
        .batch_execute("CREATE TABLE cq_log (pid int, who text); GRANT ALL ON cq_log TO PUBLIC")
        .await
        .expect("table");
    let entry = format!(
        "{db} = host=127.0.0.1 port={port} dbname={db} auth_user={SUPERUSER} \
         connect_query='INSERT INTO cq_log SELECT pg_backend_pid(), current_user'\n",
        port = cluster.port()
    );
    let ini =
        fixture::ini(&[], 2, "").replacen("[databases]\n", &format!("[databases]\n{entry}"), 1);
    let userlist = fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)]);
    let porter = crate::support::spawn_pgporter(&ini, &userlist).await;

    let client = crate::support::connect(&porter.connstring(&user, "pw-entry", &db)).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("query as a user found by the entry's auth_user")
        .get(0);
    let logged: Vec<(i32, String)> = direct
        .query("SELECT pid, who FROM cq_log ORDER BY who", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        logged.contains(&(pid, user.clone())),
        "the session's connection ran connect_query: {logged:?}"
    );
    assert_eq!(
        logged.iter().filter(|(_, who)| *who == user).count(),
        1,
        "once per connection: {logged:?}"
    );
    let err = tokio::time::timeout(
        HANG,
        tokio_postgres::connect(&porter.connstring(&user, "wrong", &db), NoTls),
    )
    .await
    .expect("hung")
    .err()
    .expect("wrong password accepted");
    assert_eq!(db_error(&err).code(), &SqlState::INVALID_PASSWORD);
}

/// auth_query runs where the entry's sessions go: over its host list, as routed, not always
/// on the first host. Here the first host listed is down (nothing listens there): the lookup
/// used to fail there, so nobody missing from auth_file could log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_follows_the_entrys_hosts_past_a_dead_first_one() {
    let cluster = crate::support::cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    cluster.create_role(&user, "pw-routed").await;
    cluster.create_database(&db, &user).await;
    // Bound and never listening, kept for the whole test: connections are refused, and no
    // other socket (a listener of another test's pgporter) can take the port meanwhile, as
    // one could after a probe released it.
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let entry = format!(
        "{db} = host=127.0.0.1,127.0.0.1 port={dead_port},{port} dbname={db} \
         auth_user={SUPERUSER}\n",
        port = cluster.port()
    );
    let ini = fixture::ini(
        &[],
        2,
        "health_check_period = 0.2\nserver_connect_timeout = 2",
    )
    .replacen("[databases]\n", &format!("[databases]\n{entry}"), 1);
    let userlist = fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)]);
    let porter = crate::support::spawn_pgporter(&ini, &userlist).await;
    let client = crate::support::connect(&porter.connstring(&user, "pw-routed", &db)).await;
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("a session of a user auth_query found")
        .get(0);
    assert_eq!(who, user);
    drop(dead);
}

/// A client whose login needs auth_query while its database is paused waits for RESUME, then
/// logs in, as through PgBouncer 1.18 (checked live: the login waits in `cl_waiting` of the
/// auth_user's pool, no server login is begun, and it is served once RESUME came). It was
/// refused (`08006 authentication lookup failed`): the lookup's server login was closed as it
/// got in, the database being paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_looked_up_while_paused_waits_for_resume() {
    let (fx, admin, mut login) = login_during_pause("").await;
    let gates = &fx.porter.shared().gates;
    until_waiting(&mut login, "the login never waited for RESUME", || async {
        gates.waiting() > 0
    })
    .await;
    admin
        .simple_query(&format!("RESUME {}", fx.db))
        .await
        .expect("RESUME");
    let (client, conn) = tokio::time::timeout(HANG, login)
        .await
        .expect("the login hung after RESUME")
        .unwrap()
        .expect("the login failed after RESUME");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query after RESUME");
    assert_eq!(row.get::<_, String>(0), fx.user);
}

/// A login whose auth_query lookup waits for RESUME is listed as PgBouncer 1.18 lists it
/// (checked live): SHOW CLIENTS `(nouser)`, waiting; SHOW POOLS cl_waiting of the auth_user's
/// pool. KILL of the database ends it at once, as it ends the database's other clients, a
/// client queued for a server connection there included, with the same FATAL: 57P01
/// `database removed` (PgBouncer 1.18 sends both `FATAL 08P01 database removed`, checked
/// live). It was ended only by client_login_timeout, and not listed; then, with `connection
/// terminated by the admin console`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waiting_for_resume_is_listed_and_killed() {
    let fx = auth_query_fixture("client_login_timeout = 120\n").await;
    // Logged in before PAUSE (in auth_file: no lookup, nothing cached for the login below).
    let queued =
        crate::support::connect(&fx.porter.connstring(SUPERUSER, SUPERUSER_PASSWORD, &fx.db)).await;
    let (admin, mut login) = pause_and_log_in(&fx).await;
    let listed = || async {
        let clients = crate::admin::rows(&admin, "SHOW CLIENTS").await;
        let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
        let listed = clients.iter().any(|c| {
            c.get("user") == Some("(nouser)")
                && c.get("database") == Some(fx.db.as_str())
                && c.get("state") == Some("waiting")
        });
        let counted = pools.iter().any(|p| {
            p.get("database") == Some(fx.db.as_str())
                && p.get("user") == Some(SUPERUSER)
                && p.get("cl_waiting") == Some("1")
        });
        listed && counted
    };
    let what = "the waiting login was never listed (SHOW CLIENTS (nouser), cl_waiting 1)";
    until_waiting(&mut login, what, listed).await;
    let query = tokio::spawn(async move { queued.simple_query("SELECT 1").await.map(drop) });
    let both = || async {
        let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
        pools
            .iter()
            .any(|p| p.get("database") == Some(fx.db.as_str()) && p.get("cl_waiting") == Some("2"))
    };
    until_waiting(
        &mut login,
        "the queued query never waited (cl_waiting 2)",
        both,
    )
    .await;
    admin
        .simple_query(&format!("KILL {}", fx.db))
        .await
        .expect("KILL");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), login)
        .await
        .expect("the waiting login was not ended by KILL within 10 s")
        .unwrap();
    let err = match ended {
        Ok(_) => panic!("the login was served after KILL"),
        Err(e) => e,
    };
    let killed = |e: &tokio_postgres::Error| {
        let e = db_error(e);
        (e.code().clone(), e.message().to_string())
    };
    let expected = (SqlState::ADMIN_SHUTDOWN, "database removed".to_string());
    assert_eq!(killed(&err), expected, "the login: {err}");
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), query)
        .await
        .expect("the queued query was not ended by KILL within 10 s")
        .unwrap()
        .expect_err("the queued query was served after KILL");
    assert_eq!(killed(&err), expected, "the queued query: {err}");
    let clients = crate::admin::rows(&admin, "SHOW CLIENTS").await;
    assert!(
        clients.iter().all(|c| c.get("user") != Some("(nouser)")),
        "the killed login is still listed"
    );
}

/// PAUSE of the auth_query database returns once its sessions gave their server connections
/// back; until then the pool's idle connections are still there. A login looked up meanwhile
/// waits for RESUME, as any checkout of a paused database does (PgBouncer queues it in
/// cl_waiting of the auth_user's pool, checked live): it took an idle connection of the
/// paused database and was served. The lookup runs on a database of its own (auth_dbname)
/// so that the client's database, not paused, would serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_takes_no_idle_connection_of_a_database_being_paused() {
    let cluster = crate::support::cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    cluster.create_role(&user, "pw-p").await;
    cluster.create_database(&db, &user).await;
    let port = cluster.port();
    let entries = format!(
        "{db} = host=127.0.0.1 port={port} dbname={db}\n\
         authdb = host=127.0.0.1 port={port} dbname={db}\n"
    );
    let ini = fixture::ini(
        &[],
        4,
        &format!(
            "auth_user = {SUPERUSER}\nauth_dbname = authdb\nadmin_users = {SUPERUSER}\n\
             auth_query_cache_ttl = 0\n"
        ),
    )
    .replacen("[databases]\n", &format!("[databases]\n{entries}"), 1);
    let userlist = fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)]);
    let porter = crate::support::spawn_pgporter(&ini, &userlist).await;
    // A session of the auth database holds a connection (session mode): PAUSE waits for it.
    let holder =
        crate::support::connect(&porter.connstring(SUPERUSER, SUPERUSER_PASSWORD, "authdb")).await;
    holder.simple_query("SELECT 1").await.expect("holder");
    // A lookup then leaves a second connection of the auth pool idle.
    let first = crate::support::connect(&porter.connstring(&user, "pw-p", &db)).await;
    first.simple_query("SELECT 1").await.expect("first");
    let admin =
        crate::support::connect(&porter.connstring(SUPERUSER, SUPERUSER_PASSWORD, "pgbouncer"))
            .await;
    let idle_in_auth_pool = || async {
        let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
        pools
            .iter()
            .find(|p| p.get("database") == Some("authdb") && p.get("user") == Some(SUPERUSER))
            .and_then(|p| p.get("sv_idle").map(str::to_string))
    };
    assert_eq!(idle_in_auth_pool().await.as_deref(), Some("1"));
    let pausing = {
        let (pauser, conn) = tokio_postgres::connect(
            &porter.connstring(SUPERUSER, SUPERUSER_PASSWORD, "pgbouncer"),
            NoTls,
        )
        .await
        .expect("console");
        tokio::spawn(conn);
        tokio::spawn(async move { pauser.simple_query("PAUSE authdb").await.map(drop) })
    };
    let started = tokio::time::Instant::now();
    while !porter.shared().gates.is_paused("authdb") {
        assert!(started.elapsed() < HANG, "PAUSE never began");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !pausing.is_finished(),
        "PAUSE returned with a session holding a connection"
    );
    let connstring = porter.connstring(&user, "pw-p", &db);
    let mut login = tokio::spawn(async move { tokio_postgres::connect(&connstring, NoTls).await });
    // Listed under the auth database, not the client's: PgBouncer's source puts the login in
    // the auth database's pool (auth_dbname came in 1.19: 1.18 could not be checked live).
    let listed = || async {
        let clients = crate::admin::rows(&admin, "SHOW CLIENTS").await;
        clients
            .iter()
            .any(|c| c.get("user") == Some("(nouser)") && c.get("database") == Some("authdb"))
    };
    until_waiting(&mut login, "the login never waited for RESUME", listed).await;
    drop(holder);
    tokio::time::timeout(HANG, pausing)
        .await
        .expect("PAUSE did not return once the session left")
        .unwrap()
        .expect("PAUSE");
    assert!(!login.is_finished(), "the login ended while paused");
    admin.simple_query("RESUME authdb").await.expect("RESUME");
    let (client, conn) = tokio::time::timeout(HANG, login)
        .await
        .expect("the login hung after RESUME")
        .unwrap()
        .expect("the login failed after RESUME");
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("after RESUME");
}

/// A login in a task: the client and its connection, or the error it ended with.
type Login = tokio::task::JoinHandle<
    Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        tokio_postgres::Error,
    >,
>;

/// The fixture with auth_query (`extra` added to its ini), its console, and a login begun
/// once its database is paused (its lookup meets the pause).
async fn login_during_pause(extra: &str) -> (Fixture, tokio_postgres::Client, Login) {
    let fx = auth_query_fixture(extra).await;
    let (admin, login) = pause_and_log_in(&fx).await;
    (fx, admin, login)
}

/// The fixture with auth_query, only its auth_user in auth_file (`extra` added to its ini).
async fn auth_query_fixture(extra: &str) -> Fixture {
    Fixture::custom(|_| Spec {
        userlist: Some(fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)])),
        ..Spec::new(format!(
            "auth_user = {SUPERUSER}\nadmin_users = {SUPERUSER}\n{extra}"
        ))
    })
    .await
}

/// PAUSE the fixture's database; then begin a login that needs auth_query.
async fn pause_and_log_in(fx: &Fixture) -> (tokio_postgres::Client, Login) {
    let admin = crate::support::connect(&fx.porter.connstring(
        SUPERUSER,
        SUPERUSER_PASSWORD,
        "pgbouncer",
    ))
    .await;
    admin
        .simple_query(&format!("PAUSE {}", fx.db))
        .await
        .expect("PAUSE");
    let connstring = fx.porter.connstring(&fx.user, &fx.password, &fx.db);
    let login = tokio::spawn(async move { tokio_postgres::connect(&connstring, NoTls).await });
    (admin, login)
}

/// Poll `waits` up to HANG (`what` names its failure) while `login` must not end: a login
/// waiting for RESUME.
async fn until_waiting<F: std::future::Future<Output = bool>>(
    login: &mut Login,
    what: &str,
    waits: impl Fn() -> F,
) {
    let started = tokio::time::Instant::now();
    while !waits().await {
        if login.is_finished() {
            let ended = login.await.expect("the login task").map(drop);
            panic!("the login ended while its database was paused: {ended:?}");
        }
        assert!(started.elapsed() < HANG, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A login whose auth_query lookup is cut short by client_login_timeout gives its connection
/// back (closed, as PgBouncer 1.18 closes it: `client disconnect while server was not ready`).
/// It was dropped with the login, its slot kept for good: with a pool of one, every later
/// lookup waited for a slot that never came, and no user missing from auth_file logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_cut_short_by_the_login_timeout_gives_its_connection_back() {
    // The lookup of one name takes 3 s; the others are answered at once.
    let query = "SELECT $1::text, (SELECT passwd FROM pg_shadow WHERE usename = $1::text) \
                 FROM pg_sleep(CASE WHEN $1::text = 'slow_lookup' THEN 3 ELSE 0 END)";
    let fx = Fixture::custom(|_| Spec {
        pool_size: 1,
        userlist: Some(fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD)])),
        ..Spec::new(format!(
            "auth_user = {SUPERUSER}\nadmin_users = {SUPERUSER}\nauth_query = {query}\n\
             client_login_timeout = 1\n"
        ))
    })
    .await;
    let slow = tokio::time::timeout(
        HANG,
        tokio_postgres::connect(&fx.porter.connstring("slow_lookup", "x", &fx.db), NoTls),
    )
    .await
    .expect("hung");
    assert!(slow.is_err(), "the slow lookup's login was let in");
    // The auth_user's pool lends nothing out (polled: the close follows the client's error).
    let admin = crate::support::connect(&fx.porter.connstring(
        SUPERUSER,
        SUPERUSER_PASSWORD,
        "pgbouncer",
    ))
    .await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let pools = crate::admin::rows(&admin, "SHOW POOLS").await;
        let lent = pools
            .iter()
            .filter(|p| p.get("database") == Some(fx.db.as_str()))
            .filter(|p| p.get("user") == Some(SUPERUSER))
            .map(|p| {
                ["sv_active", "sv_tested", "sv_login"]
                    .iter()
                    .map(|c| p.get(*c).unwrap_or("0").parse::<u32>().unwrap_or(0))
                    .sum::<u32>()
            })
            .sum::<u32>();
        if lent == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lookup's connection was never given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And a user found by auth_query logs in (through the pool of one).
    let client = fx.connect().await;
    client.simple_query("SELECT 1").await.expect("query");
}

/// A RELOAD that changes nothing keeps the auth_user's pool of a database entry that forces
/// another user (`user=`): its idle connection stays. The pool was taken for one the new
/// configuration no longer leads to (the entry's user is not the auth_user) and replaced at
/// every RELOAD, its connections closed (`database removed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_auth_pool_of_an_entry_forcing_a_user() {
    let cluster = crate::support::cluster().await;
    let owner = cluster.unique_name("u");
    let guest = cluster.unique_name("g");
    let db = cluster.unique_name("db");
    cluster.create_role(&owner, "pw-owner").await;
    cluster.create_role(&guest, "pw-guest").await;
    cluster.create_database(&db, &owner).await;
    let entry = format!(
        "{db} = host=127.0.0.1 port={port} dbname={db} user={owner} auth_user={SUPERUSER}\n",
        port = cluster.port()
    );
    let ini = fixture::ini(&[], 2, &format!("admin_users = {SUPERUSER}")).replacen(
        "[databases]\n",
        &format!("[databases]\n{entry}"),
        1,
    );
    let userlist = fixture::userlist(&[(SUPERUSER, SUPERUSER_PASSWORD), (&owner, "pw-owner")]);
    let porter = crate::support::spawn_pgporter(&ini, &userlist).await;
    // The guest is looked up through the auth_user's pool, and served as the entry's user.
    let client = crate::support::connect(&porter.connstring(&guest, "pw-guest", &db)).await;
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("a session of a user auth_query found")
        .get(0);
    assert_eq!(who, owner);
    let admin =
        crate::support::connect(&porter.connstring(SUPERUSER, SUPERUSER_PASSWORD, "pgbouncer"))
            .await;
    let lookups = |servers: Vec<tokio_postgres::SimpleQueryRow>| -> Vec<String> {
        servers
            .iter()
            .filter(|s| s.get("database") == Some(db.as_str()))
            .filter(|s| s.get("user") == Some(SUPERUSER))
            .map(|s| s.get("remote_pid").unwrap_or_default().to_string())
            .collect()
    };
    let before = lookups(crate::admin::rows(&admin, "SHOW SERVERS").await);
    assert_eq!(before.len(), 1, "the lookup's connection: {before:?}");
    admin.simple_query("RELOAD").await.expect("reload");
    let after = lookups(crate::admin::rows(&admin, "SHOW SERVERS").await);
    assert_eq!(
        after, before,
        "the auth_user's pool was replaced by a RELOAD"
    );
}

//! A seeded chaos round: in each case, well-behaved clients of a session-mode and a
//! transaction-mode pool (one pgporter, one PostgreSQL database behind both, pool size 2 each)
//! run queries, COPY, transactions across requests and (session mode) leave session state,
//! while other clients reset (RST) or half-close their connection at a random point (mid
//! startup, mid SCRAM, mid query, mid COPY, queued for a server, parked in the lobby, in a
//! transaction) and the console sends PAUSE/RESUME, KILL/RESUME, DISABLE/ENABLE, RECONNECT,
//! WAIT_CLOSE, RELOAD, KILL_CLIENT, `SET default_pool_size`, SUSPEND (refused) and SHOWs at
//! random moments ([`chaos_actors::plan`]). Some clients of both kinds come over TLS (and some
//! vanish mid handshake); load clients cancel queries at random moments, cancel one whose
//! backend was just terminated, and send their key again once their session ended
//! ([`super::chaos_cancel`]): no one else's query may be cancelled by it.
//!
//! Every client's every request is answered (ReadyForQuery, errors allowed) or its session
//! ends with an ErrorResponse carrying a SQLSTATE, within [`WAIT`]; a half-closed client is
//! let go within it; every console command is answered. Once the case is over and things
//! settled: no panic in pgporter's code, no client left, no waiter, every server connection
//! idle and within the pool size; PostgreSQL runs exactly the backends SHOW SERVERS lists
//! and SHOW POOLS counts for the user (nothing leaked, nothing lost), SHOW POOLS has
//! `cl_active` and `cl_waiting` at 0, and fresh clients holding every server connection of
//! each pool see no temp table, SET, LISTEN, lock, prepared statement or transaction of
//! another's. The run ends with a case in which pgporter is shut down under load
//! ([`shutdown_case`]).
//!
//! The people's round runs the same on a shared account: three people log in through
//! entries forcing one role, each capped at half a pool, their connections tagged with who
//! they are; after each case every person must still get a server connection.
//!
//! `PGPORTER_CHAOS_CASES` (default [`DEFAULT_CASES`]) and `PGPORTER_FUZZ_SEED` (the first
//! case's seed) replay a failure; `PGPORTER_FUZZ_SURVEY=1` reports failing cases and goes on;
//! `PGPORTER_CHAOS_CROWD=1` runs a crowded variant ([`crowd`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use tokio_postgres::SimpleQueryMessage;

use crate::support::checks::{session_state, CLEAN};
use crate::support::fixture::{userlist, PASSWORD};
use crate::support::{spawn_pgporter, Fixture};

use super::chaos_actors::{
    plan, run_admin, run_fault, run_load, LoadOutcome, Plan, Point, Step, Target,
};
use super::chaos_wire::WAIT;
use super::{panics, watch_panics, SEED_STEP};

/// Cases when `PGPORTER_CHAOS_CASES` is not set (about 1.5 s each on 2 shared cores).
const DEFAULT_CASES: u64 = 12;
const DEFAULT_SEED: u64 = 0xc4a0_5000_0001;
const POOL_SIZE: u32 = 2;

/// `PGPORTER_CHAOS_CROWD=1`: pool size 1 and 5 to 12 load clients (so most requests queue).
fn crowd() -> bool {
    std::env::var("PGPORTER_CHAOS_CROWD").is_ok()
}

fn pool_size() -> u32 {
    if crowd() {
        1
    } else {
        POOL_SIZE
    }
}

/// The cases' seeds, and one more for the shutdown case ([`shutdown_case`]); the people's
/// round ([`rig`]) runs half as many cases by default, from seeds of its own.
fn chaos_seeds(people: bool) -> Vec<u64> {
    let n = std::env::var("PGPORTER_CHAOS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if people {
            DEFAULT_CASES / 2
        } else {
            DEFAULT_CASES
        });
    let base = std::env::var("PGPORTER_FUZZ_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(if people {
            DEFAULT_SEED ^ 0x9e09_1e00
        } else {
            DEFAULT_SEED
        });
    (0..=n)
        .map(|i| base.wrapping_add(i.wrapping_mul(SEED_STEP)))
        .collect()
}

/// One role and database; two pgporter entries for it: `{db}` in session mode and
/// `{db}_tx` in transaction mode; the role is an admin; TLS for clients that ask.
/// The people of [`people_on_a_shared_account_under_chaos_leave_the_books_balanced`].
const PEOPLE: [&str; 3] = ["ann", "ben", "cat"];

/// `people`: the entries force the role's user, and [`PEOPLE`] log in through them (each
/// with the role's password), each allowed half of a pool (`max_user_pool_share`), their
/// server connections tagged with who they are (`identity_tagging`, the default).
async fn rig(certs: &crate::tls::Certs, people: bool) -> Fixture {
    let cluster = crate::support::cluster().await;
    let user = cluster.unique_name("u");
    let db = cluster.unique_name("db");
    cluster.create_role(&user, PASSWORD).await;
    cluster.create_database(&db, &user).await;
    let port = cluster.port();
    let shared = if people {
        format!(" user={user} password={PASSWORD} max_user_pool_share=50%")
    } else {
        String::new()
    };
    let ini = format!(
        "[databases]\n\
         {db} = host=127.0.0.1 port={port} dbname={db} pool_mode=session{shared}\n\
         {db}_tx = host=127.0.0.1 port={port} dbname={db} pool_mode=transaction{shared}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = 0\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = userlist.txt\n\
         default_pool_size = {}\n\
         query_wait_timeout = 25\n\
         admin_users = {user}\n\
         {}",
        pool_size(),
        certs.client_tls("allow")
    );
    let mut users = vec![(user.as_str(), PASSWORD)];
    if people {
        users.extend(PEOPLE.iter().map(|p| (*p, PASSWORD)));
    }
    let porter = spawn_pgporter(&ini, &userlist(&users)).await;
    let fx = Fixture {
        cluster,
        user,
        password: PASSWORD.to_string(),
        db,
        porter,
    };
    fx.direct()
        .await
        .batch_execute("create table chaos_t (a text)")
        .await
        .unwrap();
    fx
}

async fn admin(fx: &Fixture) -> tokio_postgres::Client {
    crate::support::connect(&fx.porter.connstring(&fx.user, &fx.password, "pgbouncer")).await
}

/// What the clients and the console met, over all cases: SQLSTATE -> count.
type Codes = BTreeMap<String, usize>;

/// Where the case's actors connect: `fx`'s pgporter, TLS clients trusting `certs`.
async fn target(fx: &Fixture, certs: &crate::tls::Certs, people: bool) -> Target {
    Target {
        addr: fx.porter.addr(),
        user: fx.user.clone(),
        password: fx.password.clone(),
        db: fx.db.clone(),
        ini: fx.porter.ini_path(),
        tls: Arc::new(crate::tls::tls_client_config(certs.pki.ca_file())),
        su: Arc::new(fx.superuser().await),
        draining: false,
        people: if people {
            PEOPLE.iter().map(|p| p.to_string()).collect()
        } else {
            Vec::new()
        },
    }
}

/// Run the case's actors together; Err for a broken invariant.
async fn run_case(fx: &Fixture, t: &Target, plan: &Plan, codes: &mut Codes) -> Result<(), String> {
    let pools = || {
        let waiting = fx.porter.pool_counts().iter().map(|(_, c)| c.waiting).sum();
        (waiting, fx.porter.shared().lobby.parked())
    };
    let listed = |port: u16| {
        let sessions = fx.porter.shared().sessions.all();
        sessions.iter().any(|s| s.port == port)
    };
    let (first, second) = (admin(fx).await, admin(fx).await);
    let loads = join_all(plan.load.iter().map(|p| run_load(t.clone(), p.clone())));
    let faults = join_all(
        plan.faults
            .iter()
            .map(|p| run_fault(t.clone(), p.clone(), pools, listed)),
    );
    let consoles = async {
        tokio::join!(
            run_admin(t.clone(), first, plan.admin[0].clone()),
            run_admin(t.clone(), second, plan.admin[1].clone())
        )
    };
    let all = async { tokio::join!(loads, faults, consoles) };
    let (loads, faults, consoles) = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .map_err(|_| "the case did not end within 120 s".to_string())?;
    tally(plan, loads, faults, codes)?;
    for out in [consoles.0?, consoles.1?] {
        for code in out.refused {
            *codes.entry(format!("console {code}")).or_default() += 1;
        }
    }
    Ok(())
}

type Outcomes<T> = Vec<Result<T, String>>;

/// Count what the load and faulty clients met; Err for the first broken invariant.
fn tally(
    plan: &Plan,
    loads: Outcomes<LoadOutcome>,
    faults: Outcomes<&'static str>,
    codes: &mut Codes,
) -> Result<(), String> {
    for p in &plan.load {
        let mut count = |what: &str| *codes.entry(what.to_string()).or_default() += 1;
        if p.tls {
            count("load client (TLS)");
        }
        if p.cancel_after_end {
            count("load client: cancel after its end");
        }
        for (_, step) in &p.steps {
            match step {
                Step::Cancel(..) => count("step: cancel"),
                Step::KillCancel(_) => count("step: backend terminated, then cancel"),
                _ => {}
            }
        }
    }
    for (i, out) in loads.into_iter().enumerate() {
        let out = out.map_err(|e| format!("load client {i}: {e}"))?;
        for code in out
            .errors
            .iter()
            .chain(out.refused.iter())
            .chain(out.ended.iter())
        {
            *codes.entry(code.clone()).or_default() += 1;
        }
        *codes.entry("answered".into()).or_default() += out.answered;
    }
    for (i, (out, p)) in faults.into_iter().zip(&plan.faults).enumerate() {
        let reached = out.map_err(|e| format!("faulty client {i}: {e}"))?;
        let how = if p.reset { "reset" } else { "half-close" };
        let point = match p.point {
            Point::Query(_) => "Query".to_string(),
            other => format!("{other:?}"),
        };
        let tls = if p.tls { " (TLS)" } else { "" };
        *codes
            .entry(format!("{point}{tls} {how}: {reached}"))
            .or_default() += 1;
    }
    Ok(())
}

/// Lift whatever the case left in force: the original ini reloaded (the SETs undone with
/// it), every pause lifted, every database enabled (errors ignored: most are "not paused").
async fn restore(fx: &Fixture, ini: &str) {
    std::fs::write(fx.porter.ini_path(), ini).unwrap();
    let console = admin(fx).await;
    let (s, t) = (fx.db.clone(), format!("{}_tx", fx.db));
    for sql in [
        "resume".to_string(),
        format!("resume {s}"),
        format!("resume {t}"),
        format!("enable {s}"),
        format!("enable {t}"),
        "reload".to_string(),
    ] {
        let _ = console.simple_query(&sql).await;
    }
}

/// Poll `check` (Ok(true) = settled) up to [`WAIT`].
async fn settled<F, Fut>(what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not settled within {WAIT:?}: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// No client, none parked, no waiter, every server connection idle and within the size.
async fn at_baseline(fx: &Fixture) -> Result<(), String> {
    let state = || {
        format!(
            "clients {}, parked {}, pools {:?}",
            fx.porter.clients(),
            fx.porter.shared().lobby.parked(),
            fx.porter.pool_counts()
        )
    };
    settled(&state(), || async {
        Ok(fx.porter.clients() == 0
            && fx.porter.shared().lobby.parked() == 0
            && fx
                .porter
                .pool_counts()
                .iter()
                .all(|(_, c)| c.waiting == 0 && c.idle == c.total && c.total <= pool_size()))
    })
    .await
    .map_err(|e| format!("{e} (now {})", state()))
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<&tokio_postgres::SimpleQueryRow> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// PostgreSQL's backends of `user` (pg_stat_activity).
async fn backends_of(su: &tokio_postgres::Client, user: &str) -> Result<i64, String> {
    let row = su
        .query_one(
            "select count(*) from pg_stat_activity where usename = $1",
            &[&user],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The books: PostgreSQL's backends for the user = pgporter's server connections, as its
/// pools count them and as SHOW SERVERS and SHOW POOLS list them; no client active or waiting.
async fn books_balance(fx: &Fixture) -> Result<(), String> {
    let su = fx.superuser().await;
    let pg = || backends_of(&su, &fx.user);
    let total = || -> i64 {
        fx.porter
            .pool_counts()
            .iter()
            .map(|(_, c)| i64::from(c.total))
            .sum()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (backends, ours) = (pg().await?, total());
        if backends == ours {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "PostgreSQL runs {backends} backends for the user, pgporter's pools count {ours}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let console = admin(fx).await;
    let servers = console.simple_query("show servers").await.unwrap();
    let listed = rows(&servers)
        .iter()
        .filter(|r| r.get("user") == Some(fx.user.as_str()))
        .count();
    let pools = console.simple_query("show pools").await.unwrap();
    let mut counted = 0;
    for r in rows(&pools) {
        if r.get("user") != Some(fx.user.as_str()) || r.get("database") == Some("pgbouncer") {
            continue;
        }
        let n = |k: &str| r.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        for k in ["cl_active", "cl_waiting", "sv_active"] {
            if n(k) != 0 {
                return Err(format!(
                    "SHOW POOLS {:?}: {k} = {}",
                    r.get("database"),
                    n(k)
                ));
            }
        }
        counted += n("sv_idle") + n("sv_used") + n("sv_tested") + n("sv_login");
    }
    let pg_now = pg().await?;
    if usize::try_from(pg_now).ok() != Some(listed) || counted != pg_now {
        return Err(format!(
            "PostgreSQL runs {pg_now} backends for the user; SHOW SERVERS lists {listed}, \
             SHOW POOLS counts {counted}"
        ));
    }
    Ok(())
}

/// Fresh clients holding every server connection of each pool see no one else's state. With
/// people (`t.people`), each holds its share (one connection), a different person each, and
/// then every person in turn gets one: a share the case left counted would hold them back.
async fn clean_servers(fx: &Fixture, t: &Target) -> Result<(), String> {
    for tx in [false, true] {
        let db = t.db(tx);
        let connstring = |i: u64| fx.porter.connstring(t.login_user(i), &fx.password, &db);
        let mut held = Vec::new();
        for i in 0..u64::from(pool_size()) {
            let c = crate::support::connect(&connstring(i)).await;
            // In transaction mode a transaction holds its server connection.
            c.simple_query("begin").await.map_err(pg_error)?;
            held.push(c);
        }
        for c in &held {
            let state = session_state(c).await;
            if state != CLEAN {
                return Err(format!("{db}: a dirty server connection: {state:?}"));
            }
        }
        for c in &held {
            c.simple_query("commit").await.map_err(pg_error)?;
        }
        drop(held);
        for i in 0..t.people.len() as u64 {
            let c = crate::support::connect(&connstring(i)).await;
            let got = c.simple_query("begin").await.map_err(|e| {
                format!(
                    "{db}: {} got no server connection: {}",
                    t.login_user(i),
                    pg_error(e)
                )
            })?;
            drop(got);
            c.simple_query("commit").await.map_err(pg_error)?;
        }
    }
    Ok(())
}

/// A client error with PostgreSQL's SQLSTATE and message, where there is one.
fn pg_error(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

async fn after_case(fx: &Fixture, t: &Target) -> Result<(), String> {
    let found = panics();
    if !found.is_empty() {
        return Err(format!("pgporter panicked: {found:?}"));
    }
    at_baseline(fx).await?;
    books_balance(fx).await?;
    at_baseline(fx).await?;
    clean_servers(fx, t).await?;
    at_baseline(fx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_and_admin_commands_under_load_leave_the_books_balanced() {
    chaos_round(false).await;
}

/// The same round on a shared account: the actors are three people logging in through
/// entries that force one role, each capped at half a pool, their server connections tagged
/// with who they are (so a checkout may close another person's idle connection and log in
/// anew). Fewer cases: the faults are the same, only the pool's bookkeeping differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_on_a_shared_account_under_chaos_leave_the_books_balanced() {
    chaos_round(true).await;
}

async fn chaos_round(people: bool) {
    watch_panics();
    let certs = crate::tls::Certs::new();
    let mut fx = rig(&certs, people).await;
    let t = target(&fx, &certs, people).await;
    let ini = std::fs::read_to_string(fx.porter.ini_path()).unwrap();
    let survey = std::env::var("PGPORTER_FUZZ_SURVEY").is_ok();
    let mut seeds = chaos_seeds(people);
    let test = if people {
        "people_on_a_shared_account_under_chaos_leave_the_books_balanced"
    } else {
        "client_faults_and_admin_commands_under_load_leave_the_books_balanced"
    };
    let last = seeds.pop().unwrap_or(DEFAULT_SEED);
    let started = tokio::time::Instant::now();
    let mut codes = Codes::new();
    let mut failed = 0;
    for &seed in &seeds {
        let plan = plan(&mut StdRng::seed_from_u64(seed), crowd());
        let result = match run_case(&fx, &t, &plan, &mut codes).await {
            Ok(()) => {
                restore(&fx, &ini).await;
                after_case(&fx, &t).await
            }
            Err(e) => {
                restore(&fx, &ini).await;
                Err(e)
            }
        };
        if let Err(e) = result {
            failed += 1;
            let replay = format!(
                "replay: PGPORTER_FUZZ_SEED={seed:#x} PGPORTER_CHAOS_CASES=1 cargo test \
                 --test it fuzz::chaos::{test}\n{plan:#?}"
            );
            assert!(survey, "chaos case failed: {e}\n{replay}");
            eprintln!("SURVEY chaos {e}\n{replay}");
            let _ = at_baseline(&fx).await;
        }
    }
    if let Err(e) = shutdown_case(&mut fx, &t, last, &mut codes).await {
        failed += 1;
        let replay = format!(
            "replay: PGPORTER_FUZZ_SEED={last:#x} PGPORTER_CHAOS_CASES=0 cargo test --test it \
             fuzz::chaos::{test}"
        );
        assert!(survey, "the shutdown case failed: {e}\n{replay}");
        eprintln!("SURVEY chaos shutdown {e}\n{replay}");
    }
    eprintln!(
        "chaos ({test}): {} cases and a shutdown from seed {:#x} in {:.1} s, {failed} failed; answers \
         and SQLSTATEs: {codes:?}",
        seeds.len(),
        seeds.first().copied().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

/// The run's last case ends with pgporter shut down under load at a random moment: SHUTDOWN
/// WAIT_FOR_CLIENTS on the console, or SIGTERM's drain. Every request is answered or its
/// session ends with a SQLSTATE (or the client finds pgporter no longer listening), pgporter
/// stops within [`WAIT`], and PostgreSQL is left with no backend of the user.
async fn shutdown_case(
    fx: &mut Fixture,
    t: &Target,
    seed: u64,
    codes: &mut Codes,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan = plan(&mut rng, crowd());
    // No waiting to be queued or parked: a session the shutdown ended is neither.
    plan.faults
        .retain(|f| !matches!(f.point, Point::Queued | Point::Parked));
    let (at, wait_for_clients) = (rng.gen_range(0..800), rng.gen::<bool>());
    let t = Target {
        draining: true,
        ..t.clone()
    };
    let porter = &fx.porter;
    let pools = || (porter.pool_counts().iter().map(|(_, c)| c.waiting).sum(), 0);
    let listed = |port: u16| {
        porter
            .shared()
            .sessions
            .all()
            .iter()
            .any(|s| s.port == port)
    };
    let console = admin(fx).await;
    let stop = async move {
        tokio::time::sleep(Duration::from_millis(at)).await;
        if !wait_for_clients {
            porter.control(pgporter::Control::Shutdown(pgporter::ShutdownMode::Drain));
            return Ok("SIGTERM".to_string());
        }
        // The console is a client too: it leaves once answered.
        match tokio::time::timeout(WAIT, console.simple_query("shutdown wait_for_clients")).await {
            Err(_) => Err(format!(
                "SHUTDOWN WAIT_FOR_CLIENTS not answered within {WAIT:?}"
            )),
            Ok(Ok(_)) => Ok("SHUTDOWN WAIT_FOR_CLIENTS answered".to_string()),
            Ok(Err(e)) => Ok(format!(
                "SHUTDOWN WAIT_FOR_CLIENTS: {:?}",
                e.as_db_error().map(|e| e.code().code().to_string())
            )),
        }
    };
    let loads = join_all(plan.load.iter().map(|p| run_load(t.clone(), p.clone())));
    let faults = join_all(
        plan.faults
            .iter()
            .map(|p| run_fault(t.clone(), p.clone(), pools, listed)),
    );
    let all = async { tokio::join!(loads, faults, stop) };
    let (loads, faults, how) = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .map_err(|_| "the shutdown case did not end within 120 s".to_string())?;
    *codes.entry(how?).or_default() += 1;
    tally(&plan, loads, faults, codes)?;
    fx.porter.wait_stopped(WAIT).await;
    let found = panics();
    if !found.is_empty() {
        return Err(format!("pgporter panicked: {found:?}"));
    }
    let su = fx.superuser().await;
    settled("no backend of the user left after the shutdown", || async {
        Ok(backends_of(&su, &fx.user).await? == 0)
    })
    .await
    .map_err(|e| format!("{e} (pools {:?})", fx.porter.pool_counts()))
}

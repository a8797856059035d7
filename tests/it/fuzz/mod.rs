//! A seeded end-to-end fuzz round: raw clients log in properly, leave session state behind,
//! then send a random mix of valid, wrong and broken messages (see [`gen`]). After each case:
//! pgporter answered or closed within a bound, nothing panicked, no server connection leaked
//! or stayed in a transaction, and the next client (on the same backend, pool_size = 1) sees
//! none of the fuzzed session's state (in session mode). The same bytes also go straight to
//! PostgreSQL, and pgporter's answers must be PostgreSQL's ([`wire::same_answers`]; in
//! statement mode pgporter may instead refuse a transaction block,
//! [`wire::statement_refusal`]). Clients reach pgporter over plain TCP, over TLS, or are
//! parked in the lobby before their garbage ([`gen::Transport`]).
//!
//! The panic hook is process-wide: a panic in pgporter's code (src/) raised by another test
//! running meanwhile would be reported here too (it is a bug all the same).
//!
//! `PGPORTER_FUZZ_CASES` (default [`DEFAULT_CASES`] per mode) and `PGPORTER_FUZZ_SEED` (the
//! first case's seed; case i uses seed + i * [`SEED_STEP`]) replay a failure: a failing case
//! prints its seed and its messages, and `PGPORTER_FUZZ_SEED=<seed> PGPORTER_FUZZ_CASES=1`
//! runs it alone. `PGPORTER_FUZZ_SURVEY=1` prints failing cases (and those that waited as
//! PostgreSQL does) and goes on, for a long exploratory run.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod admin;
mod chaos;
mod chaos_actors;
mod chaos_cancel;
mod chaos_wire;
mod gen;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::checks::{pool_at_baseline, session_state, CLEAN};
use crate::support::raw::RawClient;
use crate::support::{Fixture, Spec};

use gen::{Case, Ending, Transport};
use wire::{Outcome, Target};

/// Cases per pool mode when `PGPORTER_FUZZ_CASES` is not set.
const DEFAULT_CASES: u64 = 150;
const DEFAULT_SEED: u64 = 0x5eed_f022_0001;
const SEED_STEP: u64 = 0x9e37_79b9_7f4a_7c15;
/// How long pgporter may take to answer or close (a read that takes longer is a hang).
pub(super) const BOUND: Duration = Duration::from_secs(10);

/// State every session-mode case leaves on its server connection before the garbage.
const DIRTY: &str = "create temp table fuzz_tmp (a text); set statement_timeout = 4242; \
    set search_path = pg_temp, public; listen fuzz_chan; prepare fz as select 1; \
    select pg_advisory_lock(42); set application_name = 'fuzz'; \
    set porter.tag = 'fuzz'; begin; declare fzc cursor with hold for select 1; commit";

pub(super) fn seeds() -> Vec<u64> {
    let n = std::env::var("PGPORTER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let base = std::env::var("PGPORTER_FUZZ_SEED")
        .ok()
        .and_then(|v| {
            let v = v.trim_start_matches("0x");
            u64::from_str_radix(v, 16).ok()
        })
        .unwrap_or(DEFAULT_SEED);
    (0..n)
        .map(|i| base.wrapping_add(i.wrapping_mul(SEED_STEP)))
        .collect()
}

/// Panics raised in pgporter's own code (src/), wherever they ran: a session task's panic
/// only closes its client, so the hook is what sees it.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location() {
                if at.file().starts_with("src/") || at.file().contains("/src/") {
                    PANICS.lock().unwrap().push(format!("{info}"));
                }
            }
            previous(info);
        }));
    });
}

pub(super) fn panics() -> Vec<String> {
    PANICS.lock().unwrap().clone()
}

/// The fixture, with TLS for clients that ask (`client_tls_sslmode = allow`), and the
/// client TLS configuration trusting it.
async fn fixture(mode: &str, certs: &crate::tls::Certs) -> (Fixture, Arc<rustls::ClientConfig>) {
    let fx = Fixture::custom(|n| Spec {
        pool_size: 1,
        extra: format!(
            "pool_mode = {mode}\nadmin_users = {}\nquery_wait_timeout = 10\n{}",
            n.user,
            certs.client_tls("allow")
        ),
        userlist: None,
        files: Vec::new(),
    })
    .await;
    fx.direct()
        .await
        .batch_execute(
            "create table fuzz_t (a text); \
             create table fuzz_r as select 'r' || i as a from generate_series(1, 3) i",
        )
        .await
        .unwrap();
    let tls = Arc::new(crate::tls::tls_client_config(certs.pki.ca_file()));
    (fx, tls)
}

/// Backends of the fixture's user idle in a transaction, awaited to be none (a closed
/// connection's backend takes a moment to go).
async fn none_idle_in_transaction(fx: &Fixture) -> Result<(), String> {
    let su = fx.superuser().await;
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let n: i64 = su
            .query_one(
                "select count(*) from pg_stat_activity where usename = $1 \
                 and state like 'idle in transaction%'",
                &[&fx.user],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{n} backends stay idle in transaction"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The checks after a case: back to baseline, no transaction left, the next client served on
/// a clean connection. Returns whether the next client got the fuzzed session's backend.
async fn after_case(
    fx: &Fixture,
    session: bool,
    fuzzed_pid: Option<String>,
) -> Result<bool, String> {
    // A client parked in the lobby that is gone or was served left it.
    wire::parked(fx, 0).await?;
    pool_at_baseline(fx, 1).await;
    none_idle_in_transaction(fx).await?;
    let mut next = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    let (rows, status, error) = next.rows("select pg_backend_pid()").await;
    if status != b'I' || error.is_some() {
        return Err(format!(
            "the next client's first query: status {:?}, error {error:?}",
            char::from(status)
        ));
    }
    let same = fuzzed_pid.is_some() && rows.first() == fuzzed_pid.as_ref();
    if !session {
        // Transaction mode keeps session state on the connection (SQL PREPARE, SET, LISTEN)
        // by design: cleared for the next case, whose answers are compared with a fresh
        // PostgreSQL session's.
        let (_, status, error) = next.rows("discard all").await;
        if status != b'I' || error.is_some() {
            return Err(format!("discard all: {error:?}"));
        }
    }
    drop(next);
    if session {
        let client = fx.connect().await;
        let state = session_state(&client).await;
        if state != CLEAN {
            return Err(format!("dirty server connection handed out: {state:?}"));
        }
    }
    Ok(same)
}

/// What the case's ending requires of the outcome.
fn check_ending(case: &Case, out: &Outcome) -> Result<(), String> {
    match case.ending {
        Ending::Marker if !out.answered && !out.closed => {
            Err("neither answered the marker nor closed".into())
        }
        Ending::Dead | Ending::Terminated if out.answered || !out.closed => Err(format!(
            "a Terminate or a frame no server accepts did not end the session (answered {}, closed {})",
            out.answered, out.closed
        )),
        Ending::Unfinished | Ending::Left if !out.closed => Err("did not close after the client left".into()),
        Ending::Lone if out.answered || !out.closed => {
            Err("a lone unknown type byte did not end the session".into())
        }
        _ => Ok(()),
    }
}

async fn run_mode(mode: &str) {
    watch_panics();
    let certs = crate::tls::Certs::new();
    let (fx, tls) = fixture(mode, &certs).await;
    let session = mode == "session";
    let statement = mode == "statement";
    let seeds = seeds();
    let started = tokio::time::Instant::now();
    let (mut closed, mut answered, mut reused, mut waited) = (0, 0, 0, 0);
    let (mut refused, mut parked, mut tls_cases, mut lone) = (0, 0, 0, 0);
    for &seed in &seeds {
        let case = gen::case(seed, session);
        // A parked client sends nothing before its garbage, so leaves no state first.
        let dirty = session && case.transport != Transport::Parked;
        let porter = Target::porter(&fx, dirty, &tls);
        let result = async {
            let out = wire::run(&fx, &porter, &case).await?;
            if out.hung {
                // Allowed only where PostgreSQL waits too (a request it has not been sent
                // the end of).
                let pg = wire::run(&fx, &Target::direct(&fx, dirty), &case).await?;
                if std::env::var("PGPORTER_FUZZ_SURVEY").is_ok() {
                    eprintln!("WAITED {}", case.describe());
                }
                if !pg.hung {
                    return Err(format!(
                        "no answer and no close within 10 s, where PostgreSQL answered: \
                         {:?}\n pgporter's answers before: {:?}",
                        pg.answers, out.answers
                    ));
                }
            } else {
                check_ending(&case, &out)?;
            }
            if !matches!(case.ending, Ending::Left | Ending::Unfinished) {
                let direct = Target::direct(&fx, dirty);
                let pg = wire::run(&fx, &direct, &case).await?;
                let same = wire::same_answers(
                    &out,
                    &pg,
                    matches!(case.ending, Ending::Dead | Ending::Terminated),
                );
                match same {
                    Err(e) if statement => {
                        wire::statement_refusal(&out, &pg).map_err(|_| e)?;
                        refused += 1;
                    }
                    other => other?,
                }
            }
            let found = panics();
            if !found.is_empty() {
                return Err(format!("pgporter panicked: {found:?}"));
            }
            let same = after_case(&fx, session, out.pid.clone()).await?;
            Ok::<_, String>((out, same))
        }
        .await;
        match result {
            Ok((out, same)) => {
                parked += usize::from(case.transport == Transport::Parked);
                tls_cases += usize::from(case.transport == Transport::Tls);
                lone += usize::from(case.ending == Ending::Lone);
                closed += usize::from(out.closed);
                answered += usize::from(out.answered);
                reused += usize::from(same);
                waited += usize::from(out.hung);
            }
            Err(e) if std::env::var("PGPORTER_FUZZ_SURVEY").is_ok() => {
                eprintln!("SURVEY {mode} {e}\n{}", case.describe());
                pool_at_baseline(&fx, 1).await;
            }
            Err(e) => panic!(
                "fuzz case failed ({mode} mode): {e}\nreplay: PGPORTER_FUZZ_SEED={seed:#x} \
                 PGPORTER_FUZZ_CASES=1 cargo test --test it fuzz::\n{}",
                case.describe()
            ),
        }
    }
    eprintln!(
        "fuzz {mode}: {} cases from seed {:#x} in {:.1} s: {answered} answered the marker, \
         {closed} closed, {waited} waited for more as PostgreSQL does, {reused} left their \
         backend to the next client; {parked} parked first, {tls_cases} over TLS, {lone} a lone \
         type byte, {refused} transaction blocks refused (statement mode)",
        seeds.len(),
        seeds.first().copied().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_matches_postgresql_and_leaves_nothing_behind() {
    run_mode("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_matches_postgresql_or_refuses_transaction_blocks() {
    run_mode("statement").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_matches_postgresql_and_leaves_no_transaction_behind() {
    run_mode("transaction").await;
}

/// A case that found a race: PostgreSQL answered the whole batch, ended it with
/// `FATAL 08P01 terminating connection because protocol synchronization was lost` (a Query
/// during COPY FROM STDIN) and closed while the client was still sending. When pgporter's
/// next write to the closed server failed before it had read those answers, it ended the
/// session with its own `08006` at once and dropped them all (about one run in eight); a
/// direct client reads them all. Replayed many times (a race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_answers_before_its_close_reach_a_client_still_sending() {
    let certs = crate::tls::Certs::new();
    let (fx, tls) = fixture("transaction", &certs).await;
    let case = gen::case(0xdf7d_f54d_f625_55f9, false);
    let pg = wire::run(&fx, &Target::direct(&fx, false), &case)
        .await
        .unwrap();
    assert!(pg.closed && pg.answers.len() > 2, "{:?}", pg.answers);
    for attempt in 0..40 {
        let out = wire::run(&fx, &Target::porter(&fx, false, &tls), &case)
            .await
            .unwrap();
        if let Err(e) = wire::same_answers(&out, &pg, false) {
            panic!("attempt {attempt}: {e}");
        }
        pool_at_baseline(&fx, 1).await;
    }
}

//! Load and soak tool for pgporter (not a timed test). It starts a private PostgreSQL 15 and
//! the built pgporter binary, then runs three phases against it:
//!
//! 1. idle: N concurrent logged-in clients held open (10,000 in `full` mode);
//! 2. churn: M connect / SCRAM / query / Terminate cycles (100,000 in `full` mode);
//! 3. mixed: a soak of well-behaved and misbehaving clients while backends are terminated
//!    (every few seconds) and PostgreSQL is restarted (10 minutes in `full` mode).
//!
//! It reports failed sessions, pgporter's peak RSS, its file descriptors and PostgreSQL's
//! server connections before and after, and exits non-zero if anything is off.
//!
//!   cargo test --bench soak -- --mode short      # about a minute (scripts/test.sh runs it)
//!   scripts/soak.sh full                         # raises the fd limit, then --mode full
//!
//! Overrides: --idle N --cycles N --soak-secs N --workers N --pool N --restart-every SECS.
//! Without --mode (e.g. under `cargo test --all-targets`) it does nothing.

#![allow(clippy::unwrap_used)] // a load tool: a failed unwrap is a failed run

#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/it/support/certs.rs"]
mod certs;
mod client;
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/it/support/pg.rs"]
mod pg;
mod phases;
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/it/support/process.rs"]
mod process;
mod setup;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::{Duration, Instant};

use client::Creds;
use phases::{FaultClock, Tally};

#[derive(Debug, Clone)]
struct Opts {
    idle: usize,
    cycles: usize,
    soak: Duration,
    workers: usize,
    pool: u32,
    restart_every: Option<Duration>,
}

fn opts() -> Option<Opts> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut o = match get("--mode")?.as_str() {
        "short" => Opts {
            idle: 2_000,
            cycles: 4_000,
            soak: Duration::from_secs(25),
            workers: 30,
            pool: 20,
            restart_every: Some(Duration::from_secs(15)),
        },
        "full" => Opts {
            idle: 10_000,
            cycles: 100_000,
            soak: Duration::from_secs(600),
            workers: 60,
            pool: 40,
            restart_every: Some(Duration::from_secs(120)),
        },
        other => panic!("--mode short|full, not {other}"),
    };
    let num = |name: &str| get(name).map(|v| v.parse::<u64>().expect("a number"));
    if let Some(n) = num("--idle") {
        o.idle = usize::try_from(n).unwrap();
    }
    if let Some(n) = num("--cycles") {
        o.cycles = usize::try_from(n).unwrap();
    }
    if let Some(n) = num("--soak-secs") {
        o.soak = Duration::from_secs(n);
    }
    if let Some(n) = num("--workers") {
        o.workers = usize::try_from(n).unwrap();
    }
    if let Some(n) = num("--pool") {
        o.pool = u32::try_from(n).unwrap();
    }
    if let Some(n) = num("--restart-every") {
        o.restart_every = (n > 0).then(|| Duration::from_secs(n));
    }
    Some(o)
}

fn main() -> ExitCode {
    let Some(mut o) = opts() else {
        eprintln!("soak: not run (pass --mode short|full)");
        return ExitCode::SUCCESS;
    };
    let limit = setup::raise_fd_limit(o.idle * 2 + 2_000);
    if limit < o.idle + 1_000 {
        let fit = limit.saturating_sub(1_000);
        eprintln!(
            "soak: fd limit {limit}; holding {fit} idle clients instead of {}",
            o.idle
        );
        o.idle = fit;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(o))
}

async fn run(o: Opts) -> ExitCode {
    let started = Instant::now();
    let env = setup::Env::start(&o).await;
    let creds = Arc::new(Creds::new(
        env.porter.addr(),
        setup::USER,
        setup::PASSWORD,
        setup::DB,
    ));
    let fds_start = env.porter.fds();
    let rss_start = env.porter.status_kb("VmRSS");
    let mut report = vec![format!("options: {o:?}")];

    // 1. Idle clients.
    let tally = Tally::default();
    let t = Instant::now();
    let held = phases::idle(creds.clone(), o.idle, 200, &tally).await;
    let (rss_idle, fds_idle) = (env.porter.status_kb("VmRSS"), env.porter.fds());
    report.push(format!(
        "idle: {} clients held in {:.1?}; pgporter RSS {} kB, fds {}; {}",
        held.len(),
        t.elapsed(),
        rss_idle,
        fds_idle,
        tally.summary()
    ));
    drop(held);
    let mut failed = tally.failed.load(Ordering::Relaxed);
    let mut passed = tally.ok.load(Ordering::Relaxed);
    let mut errors = tally.first_errors.lock().unwrap().clone();

    // 2. Churn.
    let tally = Arc::new(Tally::default());
    let t = Instant::now();
    phases::churn(creds.clone(), o.cycles, 50, tally.clone()).await;
    let secs = t.elapsed().as_secs_f64();
    report.push(format!(
        "churn: {} cycles in {secs:.1} s ({:.0}/s); {}",
        o.cycles,
        o.cycles as f64 / secs,
        tally.summary()
    ));
    failed += tally.failed.load(Ordering::Relaxed);
    passed += tally.ok.load(Ordering::Relaxed);
    errors.extend(tally.first_errors.lock().unwrap().iter().cloned());

    // 3. Mixed soak with faults.
    let tally = Arc::new(Tally::default());
    let faults = Arc::new(FaultClock::new());
    let injector = tokio::spawn(setup::inject_faults(
        env.pg,
        o.soak,
        o.restart_every,
        faults.clone(),
    ));
    phases::mixed(creds.clone(), o.workers, o.soak, tally.clone(), faults).await;
    let injected = injector.await.expect("fault injector");
    report.push(format!(
        "mixed: {:?} with {injected}; {}",
        o.soak,
        tally.summary()
    ));
    failed += tally.failed.load(Ordering::Relaxed);
    failed += tally.isolation_violations.load(Ordering::Relaxed);
    passed += tally.ok.load(Ordering::Relaxed) + tally.misbehaved.load(Ordering::Relaxed);
    errors.extend(tally.first_errors.lock().unwrap().iter().cloned());

    // After: pgporter alive, its fds back to the start plus pooled server connections, and
    // PostgreSQL holding no more than the pool.
    let (fds_end, servers_end) = env.settle(fds_start, o.pool).await;
    let mut porter = env.porter;
    let alive = porter.alive();
    let peak = porter.status_kb("VmHWM");
    report.push(format!(
        "pgporter: alive {alive}; RSS {rss_start} kB at start, peak {peak} kB; fds {fds_start} at \
         start, {fds_end} at end; server connections {servers_end} at end (pool size {})",
        o.pool
    ));
    let leak =
        fds_end > fds_start + usize::try_from(o.pool).unwrap() || servers_end > i64::from(o.pool);
    for line in &report {
        println!("soak: {line}");
    }
    for e in &errors {
        println!("soak: first errors: {e}");
    }
    println!("soak: finished in {:.1?}", started.elapsed());
    if !alive || leak {
        failed += 1;
        println!("soak: FAILED: pgporter dead or leaking");
    }
    if failed > 0 {
        let path = std::env::temp_dir().join("pgporter-soak.log");
        let _ = std::fs::write(&path, porter.log());
        println!("soak: pgporter's log is in {}", path.display());
    }
    env.pg.stop_now().await;
    println!("soak: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

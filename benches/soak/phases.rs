//! The three load phases: many idle clients, connect/auth/query/disconnect churn, and a mixed
//! soak with client misbehaviour and server-side faults.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::time::{Duration, Instant};

use rand::Rng;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

use crate::client::{random_cancel, Conn, Creds, Failure};

/// Session outcomes of a phase.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ok: AtomicUsize,
    /// Failed although nothing justified it: the number that must be 0.
    pub(crate) failed: AtomicUsize,
    /// Failed because an injected server fault hit them (pg_terminate_backend, restart).
    pub(crate) hit_by_fault: AtomicUsize,
    /// Sessions that misbehaved on purpose (vanish, stall, garbage), all handled.
    pub(crate) misbehaved: AtomicUsize,
    /// A session saw another session's state: must be 0.
    pub(crate) isolation_violations: AtomicUsize,
    pub(crate) first_errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: &str, e: &Failure) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.first_errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(format!("{what}: {e}"));
        }
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "ok {} failed {} hit_by_fault {} misbehaved {} isolation_violations {}",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.hit_by_fault.load(Ordering::Relaxed),
            self.misbehaved.load(Ordering::Relaxed),
            self.isolation_violations.load(Ordering::Relaxed),
        )
    }
}

/// Open `n` sessions (at most `parallel` logging in at once) and keep them all open; then
/// check a sample still answers, and return them (the caller measures, then drops them).
pub(crate) async fn idle(creds: Arc<Creds>, n: usize, parallel: usize, tally: &Tally) -> Vec<Conn> {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (creds, gate) = (creds.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            Conn::login(&creds).await
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                conns.push(c);
            }
            Err(e) => tally.fail("idle login", &e),
        }
    }
    for c in conns.iter_mut().step_by(997) {
        if let Err(e) = c.query("select 1").await {
            tally.fail("idle sample query", &e);
        }
    }
    conns
}

/// `cycles` sessions of connect, SCRAM, one query, Terminate; `parallel` at a time.
pub(crate) async fn churn(creds: Arc<Creds>, cycles: usize, parallel: usize, tally: Arc<Tally>) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (creds, next, tally) = (creds.clone(), next.clone(), tally.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < cycles {
                    let session = async {
                        let mut c = Conn::login(&creds).await?;
                        c.query("select 1").await?;
                        c.close().await;
                        Ok::<_, Failure>(())
                    };
                    match session.await {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tally.fail("churn", &e);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

/// Milliseconds since `start` of the last injected server fault (0 = none yet).
#[derive(Debug)]
pub(crate) struct FaultClock {
    start: Instant,
    last_ms: AtomicU64,
}

impl FaultClock {
    pub(crate) fn new() -> Self {
        FaultClock {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    pub(crate) fn mark(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }
    /// A fault was injected within `window` before the session began, or since.
    fn recent(&self, since: Instant, window: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let began = since.duration_since(self.start).saturating_sub(window);
        last != 0 && Duration::from_millis(last) >= began
    }
}

/// One well-behaved session that also checks isolation; a failure is excused only when an
/// injected server fault was recent.
async fn normal(creds: &Creds, tally: &Tally, faults: &FaultClock, rng_seed: u64) {
    let began = Instant::now();
    let session = async {
        let mut c = Conn::login(creds).await?;
        let seen = c
            .value("select current_setting('porter.tag', true)")
            .await?;
        let xact = c
            .value("select pg_current_xact_id_if_assigned()::text")
            .await?;
        if seen.as_deref().is_some_and(|s| !s.is_empty()) || xact.is_some() {
            tally.isolation_violations.fetch_add(1, Ordering::Relaxed);
        }
        c.query(&format!("set porter.tag = 's{rng_seed}'")).await?;
        for _ in 0..(rng_seed % 4) {
            c.query("select count(*) from generate_series(1, 1000)")
                .await?;
        }
        if c.value("select current_setting('porter.tag')").await? != Some(format!("s{rng_seed}")) {
            tally.isolation_violations.fetch_add(1, Ordering::Relaxed);
        }
        if rng_seed % 3 == 0 {
            c.query("begin; create temp table t (x int)").await?;
        }
        c.close().await;
        Ok::<_, Failure>(())
    };
    match session.await {
        Ok(()) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) if faults.recent(began, Duration::from_secs(3)) => {
            tally.hit_by_fault.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tally.fail("mixed/normal", &e),
    }
}

/// One misbehaving session; pgporter must cope (the soak's final checks tell whether it did).
async fn misbehave(creds: &Creds, kind: u32) -> Result<(), Failure> {
    match kind {
        0 => {
            // Vanish mid-transaction.
            let mut c = Conn::login(creds).await?;
            c.query("begin; create temp table t (x int); insert into t values (1)")
                .await?;
        }
        1 => {
            // Vanish mid-large-result.
            let mut c = Conn::login(creds).await?;
            c.send_query("select repeat('x', 1000) from generate_series(1, 100000)")
                .await?;
            c.read_some(64 * 1024).await?;
        }
        2 => {
            // Half a startup packet, then vanish.
            let mut c = Conn::open(creds.addr).await?;
            c.send(&[0, 0, 0, 100, 0, 3, 0, 0, b'u']).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        3 => {
            // Garbage instead of a startup packet.
            let mut c = Conn::open(creds.addr).await?;
            let junk: Vec<u8> = (0..64).map(|_| rand::random()).collect();
            let _ = c.sock.write_all(&junk).await;
            let _ = c.read_some(1024).await;
        }
        _ => random_cancel(creds.addr).await?,
    }
    Ok(())
}

/// `workers` sessions at a time for `length`, mixing well-behaved and misbehaving clients.
pub(crate) async fn mixed(
    creds: Arc<Creds>,
    workers: usize,
    length: Duration,
    tally: Arc<Tally>,
    faults: Arc<FaultClock>,
) {
    let end = Instant::now() + length;
    let seq = Arc::new(AtomicU64::new(1));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (creds, tally, faults, seq) =
                (creds.clone(), tally.clone(), faults.clone(), seq.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let roll = rand::thread_rng().gen_range(0..100u32);
                    if roll < 70 {
                        normal(&creds, &tally, &faults, n).await;
                    } else {
                        let began = Instant::now();
                        match misbehave(&creds, roll % 5).await {
                            Ok(()) => tally.misbehaved.fetch_add(1, Ordering::Relaxed),
                            Err(_) if faults.recent(began, Duration::from_secs(3)) => {
                                tally.hit_by_fault.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                tally.fail("mixed/misbehave setup", &e);
                                0
                            }
                        };
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

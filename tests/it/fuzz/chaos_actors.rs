//! The chaos round's actors, each drawn from the case's seed: well-behaved load clients (in
//! the session-mode and the transaction-mode pool, over plain TCP or TLS, some cancelling
//! their queries), clients that reset or half-close their connection at a chosen point, and
//! the console client that sends admin commands meanwhile.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::Rng;
use tokio_postgres::SimpleQueryMessage;

use super::chaos_cancel::{cancel_step, misdirected};
use super::chaos_wire::{cancel, login, msg, Conn, LoginStop, Reply, WAIT};

/// How soon a client that vanished must be gone from pgporter's sessions.
const GONE: Duration = Duration::from_secs(10);

/// Where the actors connect, and who they are.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) addr: std::net::SocketAddr,
    pub(super) user: String,
    pub(super) password: String,
    /// The session-mode database; the transaction-mode one is `{db}_tx`.
    pub(super) db: String,
    pub(super) ini: std::path::PathBuf,
    /// TLS clients' configuration (trusting pgporter's certificate).
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// A superuser's connection to PostgreSQL (to terminate a backend).
    pub(super) su: Arc<tokio_postgres::Client>,
    /// pgporter is being shut down: a refused connect is an end, not a failure.
    pub(super) draining: bool,
    /// People logging in (password `password`) through entries forcing `user`: each actor
    /// is one of them. Empty: every actor logs in as `user`.
    pub(super) people: Vec<String>,
}

impl Target {
    pub(super) fn db(&self, tx: bool) -> String {
        if tx {
            format!("{}_tx", self.db)
        } else {
            self.db.clone()
        }
    }

    pub(super) fn tls(&self, tls: bool) -> Option<&Arc<rustls::ClientConfig>> {
        tls.then_some(&self.tls)
    }

    /// Who an actor starting at `start_ms` logs in as (one of `people`, drawn from its start
    /// so that the seeds' plans stay as they were).
    pub(super) fn login_user(&self, start_ms: u64) -> &str {
        let n = self.people.len() as u64;
        match self
            .people
            .get(usize::try_from(start_ms % n.max(1)).unwrap_or(0))
        {
            Some(person) => person,
            None => &self.user,
        }
    }
}

/// Session state a session-mode load client leaves behind (the next client of its server
/// connection must see none of it).
const DIRTY: &[&str] = &[
    "create temp table chaos_tmp (a int)",
    "set statement_timeout = 4242",
    "listen chaos_chan",
    "select pg_advisory_lock(pg_backend_pid())",
    "prepare chaos_p as select 1",
    "set application_name = 'chaos'",
];

#[derive(Debug, Clone)]
pub(super) enum Step {
    /// `select pg_sleep(ms / 1000), 'ok'`.
    Select(u32),
    /// One of [`DIRTY`] (session mode only).
    Dirty(usize),
    /// A transaction across steps: BEGIN and an INSERT here, COMMIT at the next Commit or
    /// at the end of the script.
    Begin,
    Commit,
    CopyIn,
    CopyOut,
    Extended,
    /// `select pg_sleep(ms / 1000)`, and a CancelRequest for it after `after` ms (before,
    /// during or after its end), passed on before the next step.
    Cancel(u32, u64),
    /// `pg_sleep(2)` marked with this tag; once PostgreSQL runs it, its backend is
    /// terminated and a CancelRequest for it sent at once.
    KillCancel(u32),
}

#[derive(Debug, Clone)]
pub(super) struct LoadPlan {
    pub(super) tx: bool,
    /// ms before the login (so logins meet PAUSE, KILL, DISABLE).
    pub(super) start_ms: u64,
    /// Logs in again (once) to run the rest of its steps when its session was ended.
    pub(super) again: bool,
    /// Before each step, ms of quiet (over 100 ms parks the client in the lobby).
    pub(super) steps: Vec<(u64, Step)>,
    /// Ends with a Terminate (else: just closes).
    pub(super) terminate: bool,
    pub(super) tls: bool,
    /// Sends a CancelRequest with its key once its session ended.
    pub(super) cancel_after_end: bool,
}

/// Where a faulty client vanishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Point {
    Login(LoginStop),
    /// A `pg_sleep` query sent, then `ms` of waiting.
    Query(u64),
    /// COPY FROM STDIN begun, some rows sent.
    Copy,
    /// A query sent while the pool is likely full (right after it, or once a client waits).
    Queued,
    /// Logged in, silent until parked in the lobby.
    Parked,
    /// BEGIN and an INSERT answered, then gone (holding the server in transaction mode).
    InTransaction,
}

#[derive(Debug, Clone)]
pub(super) struct FaultPlan {
    pub(super) tx: bool,
    pub(super) start_ms: u64,
    pub(super) point: Point,
    /// A reset (RST); else a half-close.
    pub(super) reset: bool,
    pub(super) tls: bool,
}

/// A console command and, for PAUSE, KILL and DISABLE, how long before it is lifted.
#[derive(Debug, Clone)]
pub(super) enum AdminAct {
    Pause(Option<bool>, u64),
    Kill(Option<bool>, u64),
    Disable(bool, u64),
    Reconnect(Option<bool>),
    WaitClose(Option<bool>),
    Reload,
    /// The database's entry in pgporter.ini changed (a `connect_query` added or taken out),
    /// then RELOAD: its pools are replaced, connections in use marked close_needed.
    EditReload(bool),
    KillClient,
    /// SET of a pool setting.
    Set(&'static str, u32),
    Show(&'static str),
    /// SUSPEND (refused: 0A000), then RESUME.
    Suspend,
}

#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) load: Vec<LoadPlan>,
    pub(super) faults: Vec<FaultPlan>,
    /// Two consoles, each with ms of quiet before each of its commands, sent meanwhile.
    pub(super) admin: [Vec<(u64, AdminAct)>; 2],
}

fn step(rng: &mut StdRng, tx: bool) -> Step {
    match rng.gen_range(0..13) {
        0..=2 => Step::Select(rng.gen_range(0..80)),
        3 | 4 if !tx => Step::Dirty(rng.gen_range(0..DIRTY.len())),
        3 => Step::Select(0),
        4 | 5 => Step::Begin,
        6 => Step::Commit,
        7 => Step::CopyIn,
        8 => Step::CopyOut,
        9 => Step::Extended,
        10 => Step::Cancel(rng.gen_range(0..300), rng.gen_range(0..350)),
        // Aimed at the query's end (the release of its server connection).
        11 => {
            let ms = rng.gen_range(0..300);
            Step::Cancel(ms, u64::from(ms) + rng.gen_range(0..=6))
        }
        _ => Step::KillCancel(rng.gen()),
    }
}

fn target(rng: &mut StdRng) -> Option<bool> {
    [None, Some(false), Some(true)]
        .choose(rng)
        .copied()
        .flatten()
}

fn admin_act(rng: &mut StdRng) -> AdminAct {
    let hold = rng.gen_range(0..600);
    match rng.gen_range(0..16) {
        0 | 1 => AdminAct::Pause(target(rng), hold),
        2 => AdminAct::Kill(target(rng), hold),
        3 => AdminAct::Disable(rng.gen(), hold),
        4 | 5 => AdminAct::Reconnect(target(rng)),
        6 => AdminAct::WaitClose(target(rng)),
        7 => AdminAct::Reload,
        8 => AdminAct::EditReload(rng.gen()),
        9 => AdminAct::KillClient,
        10 | 11 => AdminAct::Set("default_pool_size", rng.gen_range(1..=4)),
        12 => AdminAct::Set("max_db_connections", rng.gen_range(0..=3)),
        13 => AdminAct::Set("server_fast_close", rng.gen_range(0..=1)),
        14 => AdminAct::Suspend,
        _ => AdminAct::Show(["show pools", "show servers", "show clients"][rng.gen_range(0..3)]),
    }
}

/// A case's plan; `crowd`: more load clients (5 to 12, else 3 to 7).
pub(super) fn plan(rng: &mut StdRng, crowd: bool) -> Plan {
    let clients = if crowd { 5..=12 } else { 3..=7 };
    let load = (0..rng.gen_range(clients))
        .map(|_| {
            let tx = rng.gen();
            LoadPlan {
                tx,
                start_ms: rng.gen_range(0..600),
                again: rng.gen(),
                steps: (0..rng.gen_range(1..=6))
                    .map(|_| (rng.gen_range(0..180), step(rng, tx)))
                    .collect(),
                terminate: rng.gen(),
                tls: rng.gen_bool(0.3),
                cancel_after_end: rng.gen_bool(0.3),
            }
        })
        .collect();
    let points = [
        Point::Login(LoginStop::HalfStartup),
        Point::Login(LoginStop::ScramFirst),
        Point::Login(LoginStop::ScramFinal),
        Point::Query(0),
        Point::Copy,
        Point::Queued,
        Point::Parked,
        Point::InTransaction,
    ];
    let faults = (0..rng.gen_range(1..=5))
        .map(|_| {
            let tls = rng.gen_bool(0.3);
            let point = match *points.choose(rng).unwrap() {
                // TLS clients are never parked (they stay in their tasks).
                Point::Parked if tls => Point::Query(rng.gen_range(0..300)),
                Point::Query(_) => Point::Query(rng.gen_range(0..300)),
                // Half of the TLS logins stop mid handshake.
                Point::Login(_) if tls && rng.gen() => Point::Login(LoginStop::TlsHandshake),
                p => p,
            };
            FaultPlan {
                tx: rng.gen(),
                start_ms: rng.gen_range(0..400),
                point,
                reset: rng.gen(),
                tls,
            }
        })
        .collect();
    let (n, m) = (rng.gen_range(1..=4), rng.gen_range(0..=2));
    let first = (0..n)
        .map(|_| (rng.gen_range(0..400), admin_act(rng)))
        .collect();
    let second = (0..m)
        .map(|_| (rng.gen_range(0..400), admin_act(rng)))
        .collect();
    let admin = [first, second];
    Plan {
        load,
        faults,
        admin,
    }
}

/// What a load client saw: requests answered, the SQLSTATEs of its errors, how it ended.
#[derive(Debug, Default)]
pub(super) struct LoadOutcome {
    pub(super) answered: usize,
    pub(super) errors: Vec<String>,
    pub(super) refused: Option<String>,
    pub(super) ended: Option<String>,
}

/// One request of `step`; Ready or Ended.
async fn request(t: &Target, c: &mut Conn, step: &Step, in_tx: &mut bool) -> Result<Reply, String> {
    let sql = match step {
        Step::Select(ms) => format!("select pg_sleep({}), 'ok'", f64::from(*ms) / 1000.0),
        Step::Dirty(i) => DIRTY[*i].to_string(),
        Step::Begin if !*in_tx => {
            *in_tx = true;
            "begin; insert into chaos_t values ('in a transaction')".to_string()
        }
        Step::Begin => "insert into chaos_t values ('still')".to_string(),
        Step::Commit => {
            *in_tx = false;
            "commit".to_string()
        }
        Step::CopyOut => "copy (select generate_series(1, 200)) to stdout".to_string(),
        Step::CopyIn => {
            c.query("copy chaos_t from stdin").await;
            match c.until(b"G").await? {
                Reply::Stop => {
                    let mut rows = msg(b'd', b"copied 1\ncopied 2\n");
                    rows.extend_from_slice(&msg(b'c', &[]));
                    c.send(&rows).await;
                }
                // Refused (a failed transaction block, a wait that timed out) or ended.
                other => return Ok(other),
            }
            return c.until(&[]).await;
        }
        Step::Extended => {
            let mut m = msg(b'P', b"\0select 'ext'\0\0\0");
            m.extend_from_slice(&msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
            m.extend_from_slice(&msg(b'E', &[0, 0, 0, 0, 0]));
            m.extend_from_slice(&msg(b'S', &[]));
            c.send(&m).await;
            return c.until(&[]).await;
        }
        Step::Cancel(..) | Step::KillCancel(_) => return cancel_step(t, c, step).await,
    };
    c.query(&sql).await;
    c.until(&[]).await
}

pub(super) async fn run_load(t: Target, plan: LoadPlan) -> Result<LoadOutcome, String> {
    let mut out = LoadOutcome::default();
    tokio::time::sleep(Duration::from_millis(plan.start_ms)).await;
    let mut steps = plan.steps.clone();
    steps.push((0, Step::Commit));
    let mut steps = steps.into_iter();
    let mut logins = if plan.again { 2 } else { 1 };
    while logins > 0 {
        logins -= 1;
        let who = (
            t.login_user(plan.start_ms),
            t.password.as_str(),
            t.db(plan.tx),
        );
        let mut c = match login(
            t.addr,
            t.tls(plan.tls),
            (who.0, who.1, &who.2),
            LoginStop::Done,
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(code)) => {
                out.refused = Some(code);
                continue;
            }
            // Shut down: no longer listening.
            Err(e) if t.draining && e.starts_with("connect: ") => {
                out.refused = Some("not listening".into());
                break;
            }
            Err(e) => return Err(format!("login: {e}")),
        };
        if session(&t, &mut c, &mut steps, &mut out).await? && plan.terminate {
            c.send(&msg(b'X', &[])).await;
        }
        let (key, tls) = (c.key, c.tls.clone());
        drop(c);
        if let Some(key) = key.filter(|_| plan.cancel_after_end) {
            // The key of a session just ended: ignored (and it cancels no one else's query).
            match cancel(t.addr, tls.as_ref(), key).await {
                Err(e) if !t.draining => return Err(format!("after its end: {e}")),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Run `steps` on `c` until they are done (true) or the session was ended (false).
async fn session(
    t: &Target,
    c: &mut Conn,
    steps: &mut impl Iterator<Item = (u64, Step)>,
    out: &mut LoadOutcome,
) -> Result<bool, String> {
    let mut in_tx = false;
    // Requests left that a cancel of this client's own may still reach.
    let mut own_cancel = 0;
    for (quiet, step) in steps {
        tokio::time::sleep(Duration::from_millis(quiet)).await;
        if let Some(code) = c.ended_meanwhile().await? {
            out.ended = Some(code);
            return Ok(false);
        }
        if matches!(step, Step::Cancel(..) | Step::KillCancel(_)) {
            own_cancel = 2;
        }
        let reply = request(t, c, &step, &mut in_tx)
            .await
            .map_err(|e| format!("{step:?}: {e}"))?;
        own_cancel = misdirected(&step, &reply, own_cancel)?;
        match reply {
            Reply::Ready(errors) => {
                out.answered += 1;
                out.errors.extend(errors);
            }
            Reply::Ended(code) => {
                out.ended = Some(code);
                return Ok(false);
            }
            Reply::Stop => unreachable!("no stop asked"),
        }
    }
    Ok(true)
}

/// A faulty client: reaches its point, then resets or half-closes. Err only for a broken
/// invariant (a hang, a close without an ErrorResponse before the point).
pub(super) async fn run_fault(
    t: Target,
    plan: FaultPlan,
    pools: impl Fn() -> (u32, usize),
    listed: impl Fn(u16) -> bool,
) -> Result<&'static str, String> {
    tokio::time::sleep(Duration::from_millis(plan.start_ms)).await;
    let stop = match plan.point {
        Point::Login(stop) => stop,
        _ => LoginStop::Done,
    };
    let who = (
        t.login_user(plan.start_ms),
        t.password.as_str(),
        t.db(plan.tx),
    );
    let mut c = match login(t.addr, t.tls(plan.tls), (who.0, who.1, &who.2), stop).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => return Ok("refused at login"), // DISABLE: nothing to vanish from
        Err(e) if t.draining && e.starts_with("connect: ") => return Ok("not listening"),
        Err(e) => return Err(e),
    };
    let mut reached = "reached";
    match plan.point {
        Point::Login(_) => {}
        Point::Query(ms) => {
            c.query("select pg_sleep(0.5)").await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Point::Copy => {
            c.query("copy chaos_t from stdin").await;
            if let Reply::Stop = c.until(b"G").await? {
                c.send(&msg(b'd', b"half a copy\n")).await;
            }
        }
        Point::Queued => {
            c.query("select pg_sleep(0.05)").await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while pools().0 == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if pools().0 == 0 {
                reached = "queued: no waiter seen";
            }
        }
        Point::Parked => {
            let deadline = tokio::time::Instant::now() + WAIT;
            while pools().1 == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if pools().1 == 0 {
                reached = "parked: none seen";
            }
        }
        Point::InTransaction => {
            c.query("begin; insert into chaos_t values ('left')").await;
            c.until(&[]).await?;
        }
    }
    let port = c.port();
    let started = tokio::time::Instant::now();
    if plan.reset {
        c.reset();
    } else {
        c.half_close().await?;
    }
    // A logged-in client that vanished is let go at once (10 s on a loaded machine), not at
    // its query_wait_timeout (25 s) or later.
    if stop == LoginStop::Done {
        while listed(port) {
            if started.elapsed() > GONE {
                return Err(format!("still listed {GONE:?} after it vanished"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(reached)
}

/// Add `connect_query` to `db`'s entry in the ini, or take it out.
fn edit_entry(ini: &std::path::Path, db: &str) -> Result<(), String> {
    const ADDED: &str = " connect_query='select 1'";
    let text = std::fs::read_to_string(ini).map_err(|e| e.to_string())?;
    let edited: Vec<String> = text
        .lines()
        .map(|line| match line.strip_suffix(ADDED) {
            Some(rest) if line.starts_with(&format!("{db} = ")) => rest.to_string(),
            None if line.starts_with(&format!("{db} = ")) => format!("{line}{ADDED}"),
            _ => line.to_string(),
        })
        .collect();
    std::fs::write(ini, edited.join("\n") + "\n").map_err(|e| e.to_string())
}

/// What the console did: commands answered, and the SQLSTATEs of those refused.
#[derive(Debug, Default)]
pub(super) struct AdminOutcome {
    pub(super) answered: usize,
    pub(super) refused: Vec<String>,
}

async fn console(
    admin: &tokio_postgres::Client,
    sql: &str,
    out: &mut AdminOutcome,
) -> Result<Vec<SimpleQueryMessage>, String> {
    match tokio::time::timeout(WAIT, admin.simple_query(sql)).await {
        Err(_) => Err(format!("console: {sql} not answered within {WAIT:?}")),
        Ok(Ok(rows)) => {
            out.answered += 1;
            Ok(rows)
        }
        Ok(Err(e)) => match e.as_db_error() {
            Some(db) => {
                out.refused.push(db.code().code().to_string());
                Ok(Vec::new())
            }
            None => Err(format!("console: {sql}: {e}")),
        },
    }
}

pub(super) async fn run_admin(
    t: Target,
    admin: tokio_postgres::Client,
    acts: Vec<(u64, AdminAct)>,
) -> Result<AdminOutcome, String> {
    let mut out = AdminOutcome::default();
    let name = |tx: Option<bool>| tx.map(|tx| t.db(tx)).unwrap_or_default();
    for (quiet, act) in acts {
        tokio::time::sleep(Duration::from_millis(quiet)).await;
        let lift = match &act {
            AdminAct::Pause(db, hold) => {
                console(&admin, &format!("pause {}", name(*db)), &mut out).await?;
                Some((format!("resume {}", name(*db)), *hold))
            }
            AdminAct::Kill(db, hold) => {
                console(&admin, &format!("kill {}", name(*db)), &mut out).await?;
                Some((format!("resume {}", name(*db)), *hold))
            }
            AdminAct::Disable(tx, hold) => {
                console(&admin, &format!("disable {}", t.db(*tx)), &mut out).await?;
                Some((format!("enable {}", t.db(*tx)), *hold))
            }
            AdminAct::Reconnect(db) => {
                console(&admin, &format!("reconnect {}", name(*db)), &mut out).await?;
                None
            }
            AdminAct::WaitClose(db) => {
                console(&admin, &format!("wait_close {}", name(*db)), &mut out).await?;
                None
            }
            AdminAct::Reload => {
                console(&admin, "reload", &mut out).await?;
                None
            }
            AdminAct::Set(key, n) => {
                console(&admin, &format!("set {key} = {n}"), &mut out).await?;
                None
            }
            AdminAct::EditReload(tx) => {
                edit_entry(&t.ini, &t.db(*tx))?;
                console(&admin, "reload", &mut out).await?;
                None
            }
            AdminAct::Show(sql) => {
                console(&admin, sql, &mut out).await?;
                None
            }
            AdminAct::Suspend => {
                let before = out.refused.len();
                console(&admin, "suspend", &mut out).await?;
                if out.refused.get(before).map(String::as_str) != Some("0A000") {
                    return Err(format!(
                        "SUSPEND not refused with 0A000: {:?}",
                        &out.refused[before..]
                    ));
                }
                Some(("resume".to_string(), 0))
            }
            AdminAct::KillClient => {
                let rows = console(&admin, "show clients", &mut out).await?;
                let ids: Vec<String> = rows
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) if r.get("database") != Some("pgbouncer") => {
                            r.get("id").map(str::to_string)
                        }
                        _ => None,
                    })
                    .collect();
                if let Some(id) = ids.first() {
                    console(&admin, &format!("kill_client {id}"), &mut out).await?;
                }
                None
            }
        };
        if let Some((sql, hold)) = lift {
            tokio::time::sleep(Duration::from_millis(hold)).await;
            console(&admin, &sql, &mut out).await?;
        }
    }
    Ok(out)
}

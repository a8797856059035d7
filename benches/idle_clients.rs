//! Idle-client load for the W6 memory workload of `benches/compare.sh`: opens N logged-in
//! (SCRAM) connections with bounded parallelism, reports how many succeeded, then holds them
//! open without sending anything until SIGTERM/SIGINT (or `--hold` seconds). With `--query
//! SQL`, each runs that once after its login and then idles (transaction mode: idle between
//! transactions).
//!
//! ```text
//! cargo build --release --example idle_clients
//! PGPASSWORD=pw target/release/examples/idle_clients --host 127.0.0.1 --port 6432 \
//!     --user bench --db bench -n 10000 --concurrency 64 --ready-file /tmp/ready.json
//! ```
//! Progress goes to stderr; when every attempt has finished, one JSON line
//! (`{"ok":..,"failed":..,"connect_s":..,"errors":[..]}`) goes to stdout and, atomically, to
//! `--ready-file`. On stop, a second line reports how many held connections had died meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls};

#[derive(Debug)]
struct Args {
    host: String,
    port: u16,
    user: String,
    db: String,
    password: String,
    n: usize,
    concurrency: usize,
    ready_file: Option<String>,
    hold: Option<u64>,
    /// Run this once after the login (e.g. `select 1`), then stay idle: in transaction mode
    /// the client then idles between transactions instead of before its first.
    query: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 5432,
        user: "postgres".into(),
        db: "postgres".into(),
        password: std::env::var("PGPASSWORD").unwrap_or_default(),
        n: 100,
        concurrency: 64,
        ready_file: None,
        hold: None,
        query: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => a.port = u16::try_from(num(value()?)?).map_err(|e| e.to_string())?,
            "--user" => a.user = value()?,
            "--db" => a.db = value()?,
            "-n" => a.n = num(value()?)? as usize,
            "--concurrency" => a.concurrency = (num(value()?)? as usize).max(1),
            "--ready-file" => a.ready_file = Some(value()?),
            "--hold" => a.hold = Some(num(value()?)?),
            "--query" => a.query = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let loopback = a.host == "localhost"
        || a.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("only loopback hosts are allowed, got {}", a.host));
    }
    Ok(a)
}

/// Shared tallies of the connect phase and of connections lost while held.
#[derive(Debug, Default)]
struct Tally {
    done: AtomicUsize,
    lost: AtomicUsize,
}

async fn open_one(
    cfg: &tokio_postgres::Config,
    tally: &Arc<Tally>,
    query: Option<&str>,
) -> Result<Client, String> {
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| e.to_string())?;
    let tally = Arc::clone(tally);
    tokio::spawn(async move {
        // Resolves only when the connection ends; the Client is held (not dropped) until the
        // tally is read, so every end before then is a connection lost while idle.
        let _ = conn.await;
        tally.lost.fetch_add(1, Ordering::Relaxed);
    });
    if let Some(sql) = query {
        client.simple_query(sql).await.map_err(|e| e.to_string())?;
    }
    Ok(client)
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write_ready(path: &str, line: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("{line}\n"))?;
    std::fs::rename(tmp, path)
}

async fn run(args: Args) -> Result<(), String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&args.host)
        .port(args.port)
        .user(&args.user)
        .dbname(&args.db)
        .password(&args.password)
        .application_name("idle_clients")
        .connect_timeout(Duration::from_secs(60));
    let cfg = Arc::new(cfg);
    let query: Option<Arc<str>> = args.query.as_deref().map(Arc::from);
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(args.n);
    for _ in 0..args.n {
        let (cfg, tally, gate) = (Arc::clone(&cfg), Arc::clone(&tally), Arc::clone(&gate));
        let query = query.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let r = open_one(&cfg, &tally, query.as_deref()).await;
            let done = tally.done.fetch_add(1, Ordering::Relaxed) + 1;
            if done % 1000 == 0 {
                eprintln!("idle_clients: {done} attempts finished");
            }
            r
        }));
    }
    let mut clients = Vec::with_capacity(args.n);
    let mut errors: Vec<String> = Vec::new();
    let mut failed = 0usize;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(c) => clients.push(c),
            Err(e) => {
                failed += 1;
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    let errs: Vec<String> = errors.iter().map(|e| json_str(e)).collect();
    let line = format!(
        "{{\"ok\":{},\"failed\":{},\"connect_s\":{:.3},\"errors\":[{}]}}",
        clients.len(),
        failed,
        start.elapsed().as_secs_f64(),
        errs.join(",")
    );
    println!("{line}");
    if let Some(path) = &args.ready_file {
        write_ready(path, &line).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let hold = async {
        match args.hold {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = hold => {}
    }
    let lost = tally.lost.load(Ordering::Relaxed);
    println!("{{\"held\":{},\"lost_while_held\":{lost}}}", clients.len());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idle_clients: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idle_clients: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_clients: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

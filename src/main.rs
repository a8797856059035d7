//! `pgporter [-q] [-v] [--check] config.ini`: thin wrapper around the library.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use pgporter::logfile::LogFile;
use pgporter::{config, App};

/// Version line shared with the admin console's SHOW VERSION.
const VERSION: &str = concat!("pgporter ", env!("CARGO_PKG_VERSION"));

/// A PgBouncer-compatible PostgreSQL connection pooler.
#[derive(Debug, Parser)]
#[command(name = "pgporter", version = env!("CARGO_PKG_VERSION"), disable_version_flag = true)]
struct Cli {
    /// Log only warnings and errors.
    #[arg(short, long)]
    quiet: bool,
    /// More logging (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Run in the background (not supported: use a process supervisor).
    #[arg(short, long)]
    daemon: bool,
    /// Take over from a running process (PgBouncer's -R; not supported).
    #[arg(short = 'R', long)]
    reboot: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print the version and exit.
    #[arg(short = 'V', long)]
    version: bool,
    /// The pgbouncer.ini-style configuration file.
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    // A bad command line exits 64 (EX_USAGE), as a bad config does; clap's own code is 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.version {
        println!("{VERSION}");
        return ExitCode::SUCCESS;
    }
    let Some(path) = cli.config.as_deref() else {
        eprintln!("pgporter: a config file is required (see --help)");
        return ExitCode::from(64);
    };
    if cli.daemon || cli.reboot {
        eprintln!(
            "pgporter: -d/-R are not supported; run pgporter in the foreground under a supervisor"
        );
        return ExitCode::from(64);
    }
    let (config, log_file) = match config::load(path) {
        Ok(c) => {
            let logfile = c
                .settings
                .logfile
                .as_deref()
                .map(|f| config::resolve_relative(path, f));
            match init_tracing(&cli, &c.settings, logfile.as_deref()) {
                Ok(log) => (c, log),
                Err(e) => {
                    eprintln!("pgporter: cannot open logfile: {e}");
                    return ExitCode::from(64);
                }
            }
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("pgporter: {e}");
            }
            return ExitCode::from(64);
        }
    };
    if cli.check {
        for w in &config.warnings {
            eprintln!(
                "pgporter: warning: {}:{}: {}: {}",
                w.file, w.line, w.key, w.message
            );
        }
        println!("{}: configuration OK", path.display());
        return ExitCode::SUCCESS;
    }
    // Before any other thread exists: listenfd removes LISTEN_* from the environment.
    let manager = pgporter::systemd::ServiceManager::from_env();
    // One thread (the default up to 4 CPUs): tokio's single-threaded scheduler, which skips
    // the multi-threaded one's per-batch bookkeeping (callgrind: -12% user-space instructions
    // per transaction; README, "What the profiles show").
    let workers = config.settings.effective_worker_threads();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgporter: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pidfile = config
        .settings
        .pidfile
        .as_deref()
        .map(|f| config::resolve_relative(path, f));
    match runtime.block_on(run(config, manager, log_file, pidfile)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `fatal`: the process ends (PgBouncer's FATAL level in log_format = pgbouncer).
            tracing::error!(fatal = true, "{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: config::Config,
    manager: pgporter::systemd::ServiceManager,
    log_file: Option<Arc<LogFile>>,
    pidfile: Option<PathBuf>,
) -> Result<(), pgporter::Error> {
    if let Some(p) = &pidfile {
        refuse_live_pidfile(p)?;
    }
    let mut app = App::bind_under(config, manager).await?;
    if let Some(log) = log_file {
        app = app.with_log_file(log);
    }
    // The handlers are installed here, before the pidfile names us and READY=1 says we are up.
    tokio::spawn(pgporter::control::forward_signals(app.controller()));
    // Written once the listeners are bound (a failed start leaves none behind), removed on
    // every exit from here.
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))?;
    }
    tracing::info!(version = VERSION, addr = %app.local_addr(), http = ?app.http_addr(), "listening");
    let result = app.serve().await;
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// PgBouncer's check: a pidfile naming a live process means another instance runs.
fn refuse_live_pidfile(path: &std::path::Path) -> Result<(), pgporter::Error> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    let alive = pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists();
    if alive && u32::try_from(pid).ok() != Some(std::process::id()) {
        return Err(pgporter::Error::Config(format!(
            "pidfile {} exists (pid {pid}), another instance running?",
            path.display()
        )));
    }
    Ok(())
}

/// Logs go to stdout (12-factor / Kubernetes), as text, one JSON object per line, or
/// PgBouncer's lines.
/// Log to stdout, and also to `logfile` (appended) when set.
fn init_tracing(
    cli: &Cli,
    settings: &config::Settings,
    logfile: Option<&std::path::Path>,
) -> std::io::Result<Option<Arc<LogFile>>> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let format = settings.log_format;
    // The command line's -v count, else the config's `verbose` (PgBouncer's equivalent).
    let verbose = match cli.verbose {
        0 => u8::try_from(settings.verbose).unwrap_or(u8::MAX),
        n => n,
    };
    let level = match (cli.quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let log = logfile.map(LogFile::open).transpose()?.map(Arc::new);
    let writer = match &log {
        Some(file) => BoxMakeWriter::new(std::io::stdout.and(Arc::clone(file))),
        None => BoxMakeWriter::new(std::io::stdout),
    };
    let ansi = logfile.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
        config::LogFormat::Pgbouncer => builder
            .event_format(pgporter::logformat::PgBouncerFormat::default())
            .init(),
    }
    Ok(log)
}

//! `pgporter [-q] [-v] [--check] config.ini`: thin wrapper around the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
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
    let cli = Cli::parse();
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
    let config = match config::load(path) {
        Ok(c) => {
            init_tracing(&cli, c.settings.log_format);
            c
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.settings.effective_worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgporter: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> Result<(), pgporter::Error> {
    let pidfile = config.settings.pidfile.clone();
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))?;
    }
    let app = App::bind(config).await?;
    tracing::info!(version = VERSION, addr = %app.local_addr(), http = ?app.http_addr(), "listening");
    tokio::spawn(pgporter::control::forward_signals(app.controller()));
    let result = app.serve().await;
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Logs go to stdout (12-factor / Kubernetes), as text or one JSON object per line.
fn init_tracing(cli: &Cli, format: config::LogFormat) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

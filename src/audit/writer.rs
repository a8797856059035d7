//! The writer: one OS thread (file writes block) draining the queue into JSON lines, flushing
//! whenever the queue runs empty, reopening the file on request (log rotation).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::Command;

enum Sink {
    Stdout(io::Stdout),
    File { path: String, out: BufWriter<File> },
}

impl Sink {
    fn open(target: &str) -> io::Result<Sink> {
        if target == "stdout" || target == "-" {
            return Ok(Sink::Stdout(io::stdout()));
        }
        Ok(Sink::File {
            path: target.to_string(),
            out: BufWriter::new(open_append(target)?),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.lock().write_all(bytes),
            Sink::File { out, .. } => out.write_all(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.lock().flush(),
            Sink::File { out, .. } => out.flush(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.flush()?;
        if let Sink::File { path, out } = self {
            *out = BufWriter::new(open_append(path)?);
        }
        Ok(())
    }
}

fn open_append(path: &str) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Open `target` (a path or `stdout`) and start the writer thread.
pub(super) fn spawn(target: &str, queue: usize) -> io::Result<mpsc::Sender<Command>> {
    let mut sink = Sink::open(target)?;
    let (tx, mut rx) = mpsc::channel::<Command>(queue);
    std::thread::Builder::new()
        .name("pgporter-audit".into())
        .spawn(move || {
            let mut line = String::new();
            while let Some(cmd) = rx.blocking_recv() {
                handle(&mut sink, cmd, &mut line);
                while let Ok(cmd) = rx.try_recv() {
                    handle(&mut sink, cmd, &mut line);
                }
                if let Err(e) = sink.flush() {
                    tracing::error!(error = %e, "audit log: flush failed");
                }
            }
        })?;
    Ok(tx)
}

fn handle(sink: &mut Sink, cmd: Command, line: &mut String) {
    match cmd {
        Command::Write(super::AuditEvent::Barrier(done)) => {
            if let Err(e) = sink.flush() {
                tracing::error!(error = %e, "audit log: flush failed");
            }
            let _ = done.send(());
        }
        Command::Write(event) => {
            line.clear();
            if event.write_json(SystemTime::now(), line) {
                if let Err(e) = sink.write(line.as_bytes()) {
                    tracing::error!(error = %e, line = %line.trim_end(), "audit log: write failed; event follows in this log");
                }
            }
        }
        Command::Reopen => match sink.reopen() {
            Ok(()) => tracing::info!("audit log reopened"),
            Err(e) => {
                tracing::error!(error = %e, "audit log: reopen failed; still writing to the old file")
            }
        },
    }
}

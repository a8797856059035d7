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

    /// Open the file again (rotation). What the old file could not take (a full disk) goes to
    /// the new one: a reopen is how an operator recovers from that, so it must not depend on
    /// the old file accepting a flush.
    fn reopen(&mut self) -> io::Result<()> {
        let Sink::File { path, out } = self else {
            return self.flush();
        };
        let pending = match out.flush() {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, bytes = out.buffer().len(), "audit log: the old file took not all; moving the rest to the new one");
                out.buffer().to_vec()
            }
        };
        let mut fresh = BufWriter::new(open_append(path)?);
        fresh.write_all(&pending)?;
        // The old writer's buffer is in the new file now: drop it without writing it again.
        let (_old_file, _unwritten) = std::mem::replace(out, fresh).into_parts();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopen_moves_what_the_old_file_could_not_take() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        // The old file is a full disk: /dev/full refuses every write with ENOSPC.
        let full = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut out = BufWriter::new(full);
        out.write_all(b"{\"event\":\"one\"}\n").expect("buffered");
        let mut sink = Sink::File {
            path: path.display().to_string(),
            out,
        };
        assert!(sink.flush().is_err(), "the disk is full");
        sink.reopen().expect("reopened despite the full old file");
        sink.write(b"{\"event\":\"two\"}\n").expect("write");
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("new file");
        assert_eq!(text, "{\"event\":\"one\"}\n{\"event\":\"two\"}\n");
    }
}

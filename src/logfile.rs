//! The `logfile`: appended to next to stdout, and reopened by path on SIGHUP / RELOAD so that
//! logrotate's `postrotate kill -HUP` works as it does with PgBouncer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(append(path)?),
        })
    }

    /// Open the path again (a rotation renamed the old file); on failure keep writing to the
    /// file already open.
    pub fn reopen(&self) {
        match append(&self.path) {
            Ok(f) => *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot reopen logfile; still writing to the old one")
            }
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One event line in one write under one lock: lines never interleave.
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_follows_the_path_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let log = LogFile::open(&path).unwrap();
        (&log).write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("p.log.1")).unwrap();
        (&log).write_all(b"two\n").unwrap();
        log.reopen();
        (&log).write_all(b"three\n").unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("p.log.1"), "one\ntwo\n");
        assert_eq!(read("p.log"), "three\n");
    }
}

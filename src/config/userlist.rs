//! auth_file: PgBouncer's userlist.txt, `"user" "secret"` per line.
//!
//! Each non-blank line holds two double-quoted fields, user name and secret (a `"` inside a
//! field is written `""`); anything after the second field is ignored, as PgBouncer does. Lines
//! starting with `;` or `#` are comments. The secret is plaintext, `md5...` or
//! `SCRAM-SHA-256$...` (see [`Secret::parse`]). A repeated user name: the last line wins.
//! A line that cannot be read (not two quoted fields, a malformed secret) is left out with a
//! warning, and the rest of the file is used: PgBouncer logs "broken auth file" and keeps the
//! users read before that line, where pgporter refused the whole configuration. Messages name
//! the file, line and user, never the secret.

use std::collections::HashMap;

use super::ConfigWarning;
use crate::auth::Secret;

/// Parse userlist text into user -> secret; the SCRAM verifiers of plaintext passwords are
/// built with `scram_iterations` (a PBKDF2 per plaintext line). A user with an empty secret
/// (`"user" ""`, as PgBouncer accepts) has no password: it is left out of the map, so password
/// logins fail for it as for an unknown user (auth_query, if configured, is asked instead) and
/// trust / cert / peer logins work; `warnings` says so, and names each line left out.
pub fn parse_userlist(
    text: &str,
    file: &str,
    scram_iterations: u32,
    warnings: &mut Vec<ConfigWarning>,
) -> HashMap<String, Secret> {
    let mut users = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let mut error = |key: &str, message: String| {
            warnings.push(ConfigWarning {
                file: file.to_string(),
                line: i + 1,
                key: key.to_string(),
                message: format!("{message}; the line is left out"),
            })
        };
        let (user, secret) = match parse_line(line) {
            Ok(Some(pair)) => pair,
            Ok(None) => continue,
            Err(message) => {
                error("", message);
                continue;
            }
        };
        if secret.is_empty() {
            users.remove(&user);
            warnings.push(ConfigWarning {
                file: file.to_string(),
                line: i + 1,
                key: user,
                message: "empty password: password logins for this user will fail".into(),
            });
            continue;
        }
        match Secret::parse(&secret, scram_iterations) {
            Ok(parsed) => {
                users.insert(user, parsed);
            }
            Err(reason) => {
                // The reason comes from another module: drop it if it quotes the secret.
                let message = if !secret.is_empty() && reason.contains(secret.as_str()) {
                    "invalid secret".to_string()
                } else {
                    format!("invalid secret: {reason}")
                };
                // An earlier line's secret must not stay valid (a botched password change).
                users.remove(&user);
                error(&user, message);
            }
        }
    }
    users
}

/// One line: `Ok(None)` for blank lines and comments, else (user, secret).
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
        return Ok(None);
    }
    let (user, rest) = quoted_field(line).map_err(|m| format!("user name: {m}"))?;
    if user.is_empty() {
        return Err("empty user name".into());
    }
    let (secret, _ignored) = quoted_field(rest.trim_start()).map_err(|m| format!("secret: {m}"))?;
    Ok(Some((user, secret)))
}

/// A `"..."` field at the start of `s` (`""` is a literal quote) and the text after it.
fn quoted_field(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err("expected a double-quoted field (\"user\" \"secret\")".into());
    };
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
        } else if chars.next_if(|&(_, c)| c == '"').is_some() {
            out.push('"');
        } else {
            return Ok((out, body.get(i + 1..).unwrap_or("")));
        }
    }
    Err("missing closing double quote".into())
}

#[cfg(test)]
mod tests;

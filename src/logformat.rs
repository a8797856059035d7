//! `log_format = pgbouncer`: log lines in PgBouncer 1.18's shape, for the tools that parse
//! PgBouncer's log (pgbadger's `pgbouncer3` format, which it also detects in a log of ten lines
//! or more; CloudNativePG's instance manager, which splits stderr lines into timestamp, pid,
//! level and message; the Loki / fluent-bit regexes written for PgBouncer).
//!
//! A line is `2026-11-27 20:32:51.618 UTC [27117] LOG <message>`: UTC time with milliseconds,
//! the process id in brackets, PgBouncer's level names (`LOG` for info, `WARNING`, `ERROR`,
//! `FATAL` for the error the process ends on, `DEBUG`, `NOISE` for trace). The events PgBouncer
//! also logs are written in its words, with its `C-0x<id>: db/user@addr:port` client prefix
//! (the id is SHOW CLIENTS' `ptr`) and `S-0x<pid>` server prefix (SHOW SERVERS' `ptr`); every
//! other event is its message followed by its fields as `key=value`. Only the formatting
//! differs from `text`: the events and where they are emitted are the same, and so are the
//! levels but two (a client-caused error is PgBouncer's WARNING `pooler error`, the error the
//! process ends on its FATAL).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::utc::Utc;

/// The [`FormatEvent`] of `log_format = pgbouncer`.
#[derive(Debug, Clone, Copy)]
pub struct PgBouncerFormat {
    pid: u32,
}

impl Default for PgBouncerFormat {
    fn default() -> Self {
        PgBouncerFormat {
            pid: std::process::id(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for PgBouncerFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = render(
            SystemTime::now(),
            self.pid,
            *event.metadata().level(),
            fields,
        );
        writer.write_str(&line)
    }
}

/// An event's message and its other fields, in order, as text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Fields {
    /// Fields of a test event.
    pub fn new(message: &str, pairs: &[(&'static str, &str)]) -> Fields {
        Fields {
            message: message.to_string(),
            pairs: pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
        }
    }

    /// Remove the field `name` and return its value.
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| *k == name)?;
        Some(self.pairs.remove(i).1)
    }

    fn take_or(&mut self, name: &str, default: &str) -> String {
        self.take(name).unwrap_or_else(|| default.to_string())
    }

    /// The client's user and database: the `user` and `db` fields, or a `who` field
    /// (`user@db`) split by the one of them given (names may hold an `@`: `who` alone is
    /// ambiguous, and is then split at its last `@`).
    fn take_who(&mut self) -> (String, String) {
        let (user, db) = (self.take("user"), self.take("db"));
        let who = self.take("who").unwrap_or_default();
        let split = match (&user, &db) {
            (Some(u), None) => who
                .strip_prefix(u.as_str())
                .and_then(|rest| rest.strip_prefix('@'))
                .map(|db| (u.as_str(), db)),
            (None, Some(d)) => who
                .strip_suffix(d.as_str())
                .and_then(|rest| rest.strip_suffix('@'))
                .map(|user| (user, d.as_str())),
            _ => None,
        };
        let (who_user, who_db) = split.or_else(|| who.rsplit_once('@')).unwrap_or((&who, ""));
        // PgBouncer's placeholders for a name it does not know.
        let or = |v: Option<String>, from_who: &str, none: &str| match v {
            Some(v) => v,
            None if from_who.is_empty() => none.to_string(),
            None => from_who.to_string(),
        };
        let (who_user, who_db) = (who_user.to_string(), who_db.to_string());
        (or(user, &who_user, "(nouser)"), or(db, &who_db, "(nodb)"))
    }
}

impl Fields {
    /// The database a client line's prefix names: `db`, or PgBouncer's `(nodb)` for a refused
    /// login that named no pool (an unknown user or database; the `nodb` field).
    fn pool_db(&mut self, db: &str) -> String {
        match self.take("nodb").as_deref() {
            Some("true") => "(nodb)".to_string(),
            _ => db.to_string(),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs.push((field.name(), format!("{value:?}")));
        }
    }
}

impl Fields {
    /// PgBouncer's level for the event: its own where it differs from pgporter's text log.
    fn level_name(&self, level: Level) -> &'static str {
        let has = |k: &str, v: &str| self.pairs.iter().any(|(n, x)| *n == k && x == v);
        match self.message.as_str() {
            // PgBouncer logs every error it sends a client as a WARNING `pooler error`;
            // pgporter's text log has the client-caused ones at info.
            "client error" => "WARNING",
            // A failed password or SCRAM exchange: PgBouncer's ERROR line.
            "login failed" if has("password", "true") => "ERROR",
            _ => level_name(level),
        }
    }
}

/// PgBouncer's name for a level.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "LOG",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "NOISE",
    }
}

/// One event as its line(s), each ending in a newline.
pub fn render(at: SystemTime, pid: u32, level: Level, mut fields: Fields) -> String {
    // An error the process ends on is PgBouncer's FATAL.
    let fatal = fields.take("fatal").is_some_and(|v| v == "true");
    let t = Utc::from(at);
    let prefix = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC [{pid}] {} ",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millis,
        if fatal {
            "FATAL"
        } else {
            fields.level_name(level)
        }
    );
    let mut out = String::with_capacity(160);
    for body in bodies(&mut fields) {
        out.push_str(&prefix);
        push_one_line(&mut out, &body);
        out.push('\n');
    }
    out
}

/// The message(s) of an event: PgBouncer's wording for the events it logs too, else the
/// event's message; the fields a wording does not use follow as `key=value`.
fn bodies(f: &mut Fields) -> Vec<String> {
    let mut lines = match f.message.as_str() {
        // A refused login's line comes with its refusal (PgBouncer: when its startup packet
        // came), before its closing line.
        "login attempt: ok" | "login attempt: refused" | "admin console login" => {
            let id = client_id(f);
            let peer = f.take_or("peer", "unix");
            let (user, db) = f.take_who();
            let pool = f.pool_db(&db);
            let tls = f.take_or("tls", "no");
            vec![format!(
                "{id}: {pool}/{user}@{peer} login attempt: db={db} user={user} tls={tls}"
            )]
        }
        "client closed" => {
            let id = client_id(f);
            let peer = f.take_or("peer", "unix");
            let (user, db) = f.take_who();
            let pool = f.pool_db(&db);
            let reason = f.take_or("reason", "client close request");
            // The message the client got, where `reason` has PgBouncer's words instead: its
            // pooler error line says it.
            f.take("error");
            let age = f.take_or("age", "0");
            vec![format!(
                "{id}: {pool}/{user}@{peer} closing because: {reason} (age={age}s)"
            )]
        }
        "new connection to server" => {
            let id = server_id(f);
            let addr = f.take_or("addr", "");
            let (user, db) = f.take_who();
            let local = f.take_or("local", "unix");
            vec![format!(
                "{id}: {db}/{user}@{addr} new connection to server (from {local})"
            )]
        }
        "server closed" => {
            let id = server_id(f);
            let addr = f.take_or("addr", "");
            let (user, db) = f.take_who();
            let reason = f.take_or("reason", "");
            // A failed login's error (PgBouncer logs it on a line of its own).
            f.take("error");
            let age = f.take_or("age", "0");
            vec![format!(
                "{id}: {db}/{user}@{addr} closing because: {reason} (age={age}s)"
            )]
        }
        "login failed" => {
            let id = client_id(f);
            let peer = f.take_or("peer", "unix");
            let (user, db) = f.take_who();
            let pool = f.pool_db(&db);
            let error = f.take_or("error", "");
            if f.take("password").is_some_and(|v| v == "true") {
                vec![format!(
                    "{id}: {pool}/{user}@{peer} password authentication failed"
                )]
            } else {
                vec![format!(
                    "{id}: {pool}/{user}@{peer} login failed: db={db} user={user} error={}",
                    quoted(&error)
                )]
            }
        }
        // Refusals PgBouncer logs before it has looked up the login's pool.
        "no such user" => {
            let id = client_id(f);
            let peer = f.take_or("peer", "unix");
            let user = f.take_or("user", "");
            vec![format!("{id}: (nodb)/(nouser)@{peer} no such user: {user}")]
        }
        "unsupported startup parameter" => {
            let id = client_id(f);
            let peer = f.take_or("peer", "unix");
            let (name, value) = (f.take_or("name", ""), f.take_or("value", ""));
            vec![format!(
                "{id}: (nodb)/(nouser)@{peer} unsupported startup parameter: {name}={value}"
            )]
        }
        // The server's error on a login it refused; PgBouncer's line names no connection.
        "server login failed" => {
            let severity = f.take_or("severity", "");
            let error = f.take_or("error", "");
            for k in ["db", "user", "addr"] {
                f.take(k);
            }
            vec![format!("server login failed: {severity} {error}")]
        }
        "pooler error" | "client error" => {
            // PgBouncer's words where they differ from the message the client got.
            let error = match f.take("reason") {
                Some(reason) => {
                    f.take("error");
                    f.take("source");
                    reason
                }
                None => f.take_or("error", ""),
            };
            if f.pairs.iter().any(|(k, _)| *k == "id") {
                let id = client_id(f);
                let peer = f.take_or("peer", "unix");
                let (user, db) = f.take_who();
                let pool = f.pool_db(&db);
                vec![format!("{id}: {pool}/{user}@{peer} pooler error: {error}")]
            } else {
                vec![format!("pooler error: {error}")]
            }
        }
        "stats" => {
            let mut n = |k| f.take_or(k, "0");
            vec![format!(
                "stats: {} xacts/s, {} queries/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
                n("xacts_per_s"),
                n("queries_per_s"),
                n("in_bytes_per_s"),
                n("out_bytes_per_s"),
                n("xact_us"),
                n("query_us"),
                n("wait_us")
            )]
        }
        "listening" => {
            let addr = f.take_or("addr", "");
            let version = f.take_or("version", "pgporter");
            // `http = ?Option<SocketAddr>`: the metrics listener, if any.
            match f.take("http").as_deref() {
                Some(h) if h.starts_with("Some(") => {
                    let h = h.trim_start_matches("Some(").trim_end_matches(')');
                    f.pairs.push(("http", h.to_string()));
                }
                _ => {}
            }
            vec![
                format!("listening on {addr}"),
                format!("process up: {version}"),
            ]
        }
        "signal received" => {
            let signal = f.take_or("signal", "");
            let what = match signal.as_str() {
                "SIGHUP" => "re-reading config",
                "SIGINT" => "shutting down",
                "SIGTERM" => "shutting down (drain)",
                "SIGQUIT" => "fast exit",
                "SIGUSR1" => "pausing all activity",
                "SIGUSR2" => "continuing from PAUSE",
                _ => "",
            };
            vec![format!("got {signal}, {what}")]
        }
        "shutdown complete" => vec!["server connections dropped, exiting".to_string()],
        _ => vec![f.message.clone()],
    };
    // What the wording left out goes on the last line.
    if let Some(last) = lines.last_mut() {
        for (k, v) in &f.pairs {
            let _ = write!(last, " {k}={}", quoted(v));
        }
    }
    lines
}

/// `C-0x<id>`: the session's id as SHOW CLIENTS' `ptr` shows it (hex), given when the
/// connection came (a refused login has one too).
fn client_id(f: &mut Fields) -> String {
    let id = f
        .take("id")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    format!("C-0x{id:x}")
}

/// `S-0x<pid>`: the server connection's backend pid, as SHOW SERVERS' `ptr` shows it (hex).
fn server_id(f: &mut Fields) -> String {
    let pid = f
        .take("pid")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    format!("S-0x{pid:x}")
}

/// A field value as it is, or in double quotes (with `"` and `\` escaped) when it is empty
/// or holds a space, a quote or an `=`, so that `key=value` pairs split back apart.
fn quoted(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '"', '=', '\t']) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Append `text` with line breaks escaped: one event is one line (CloudNativePG's parser
/// would take a following line for another record, pgbadger would drop it).
fn push_one_line(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;

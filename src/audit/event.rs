//! Audit events and their JSON-lines form (hand-written: a dozen flat fields).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Who is in a session: shared by its session_start, statement and session_end events.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: u64,
    /// Names shared with the session registry and the pool (one allocation, not one per use).
    pub client_user: Arc<str>,
    /// Client IP (after PROXY protocol) or `local`.
    pub client_addr: String,
    pub client_port: Option<u16>,
    pub tls: bool,
    pub database: Arc<str>,
    pub backend_user: Arc<str>,
    /// The entry's first host (see [`AuditEvent::SessionStart`]).
    pub backend_host: Arc<str>,
    pub application_name: Option<String>,
}

/// How a statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Command tags (one per statement of a simple query) and the rows they report.
    Ok { tags: Vec<String>, rows: u64 },
    /// The SQLSTATE of the ErrorResponse (tags of statements that completed before it).
    Error { sqlstate: String, tags: Vec<String> },
    /// Not run: an earlier error in the same extended-protocol batch.
    Skipped,
    /// The session ended before the server answered.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct StatementEvent {
    pub session: Arc<SessionInfo>,
    pub backend_pid: i32,
    /// `simple` or `extended`.
    pub protocol: &'static str,
    /// Redacted, truncated SQL text.
    pub text: String,
    pub truncated: bool,
    pub outcome: Outcome,
    pub duration: Duration,
    /// The session's transaction it ran in (counted from 1; None: it did not run, as a
    /// statement refused by pgporter), and the last one if its statements reached into later
    /// ones (a simple Query with a COMMIT or ROLLBACK before its end).
    pub xact: Option<u64>,
    pub xact_last: Option<u64>,
    /// How its transaction ended, when the transaction was this statement alone and had
    /// ended when the event was written (an autocommitted statement): no transaction_end
    /// is written for it then.
    pub xact_end: Option<&'static str>,
}

/// A transaction with a logged statement ended.
#[derive(Debug, Clone)]
pub struct TransactionEnd {
    pub session: Arc<SessionInfo>,
    pub backend_pid: i32,
    pub xact: u64,
    /// `commit`, `rollback`, `prepared` or `unknown`.
    pub outcome: &'static str,
    /// ROLLBACK TO SAVEPOINT statements that ran in it.
    pub savepoint_rollbacks: u32,
}

#[derive(Debug, Clone)]
pub struct SessionEnd {
    pub session: Arc<SessionInfo>,
    pub backend_pid: Option<i32>,
    pub duration: Duration,
    pub statements: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub reason: String,
}

#[derive(Debug)]
pub enum AuditEvent {
    SessionStart {
        session: Arc<SessionInfo>,
        backend_pid: Option<i32>,
        /// The host the session's server connection went to (a routed or multi-host entry
        /// has several); None before it has one: the entry's first host is written.
        backend_host: Option<String>,
    },
    Statement(StatementEvent),
    TransactionEnd(TransactionEnd),
    SessionEnd(SessionEnd),
    AuthFailure {
        user: String,
        client_addr: String,
        client_port: Option<u16>,
        database: String,
        reason: String,
    },
    LimitRejection {
        user: Option<String>,
        client_addr: String,
        database: Option<String>,
        reason: String,
    },
    /// Not written: answered once everything queued before it is written ([`super::AuditHandle::flush`]).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

impl AuditEvent {
    /// One JSON object plus a newline, appended to `out`; false for a barrier.
    pub fn write_json(&self, at: SystemTime, out: &mut String) -> bool {
        let mut o = Obj::new(out);
        match self {
            AuditEvent::SessionStart {
                session,
                backend_pid,
                backend_host,
            } => {
                o.str("event", "session_start").str("time", &rfc3339(at));
                o.session(session);
                o.str(
                    "backend_host",
                    backend_host.as_deref().unwrap_or(&session.backend_host),
                );
                o.opt_num("backend_pid", *backend_pid);
                o.opt_str("application_name", session.application_name.as_deref());
            }
            AuditEvent::Statement(s) => {
                o.head("statement", at, &s.session);
                o.num("backend_pid", s.backend_pid);
                o.str("protocol", s.protocol).str("text", &s.text);
                o.bool("truncated", s.truncated);
                o.outcome(&s.outcome);
                o.num("duration_ms", s.duration.as_secs_f64() * 1000.0);
                o.opt_num("xact", s.xact);
                if let Some(last) = s.xact_last {
                    o.num("xact_last", last);
                }
                if let Some(end) = s.xact_end {
                    o.str("xact_end", end);
                }
            }
            AuditEvent::TransactionEnd(t) => {
                o.head("transaction_end", at, &t.session);
                o.num("backend_pid", t.backend_pid);
                o.num("xact", t.xact).str("outcome", t.outcome);
                o.num("savepoint_rollbacks", t.savepoint_rollbacks);
            }
            AuditEvent::SessionEnd(e) => {
                o.head("session_end", at, &e.session);
                o.opt_num("backend_pid", e.backend_pid);
                o.num("duration_ms", e.duration.as_secs_f64() * 1000.0);
                o.num("statements", e.statements);
                o.num("bytes_in", e.bytes_in).num("bytes_out", e.bytes_out);
                o.str("reason", &e.reason);
            }
            AuditEvent::AuthFailure {
                user,
                client_addr,
                client_port,
                database,
                reason,
            } => {
                o.str("event", "auth_failure").str("time", &rfc3339(at));
                o.str("client_user", user).str("client_addr", client_addr);
                o.opt_num("client_port", *client_port);
                o.str("database", database).str("reason", reason);
            }
            AuditEvent::LimitRejection {
                user,
                client_addr,
                database,
                reason,
            } => {
                o.str("event", "limit_rejection").str("time", &rfc3339(at));
                o.opt_str("client_user", user.as_deref());
                o.str("client_addr", client_addr);
                o.opt_str("database", database.as_deref())
                    .str("reason", reason);
            }
            AuditEvent::Barrier(_) => return false,
        }
        o.end();
        true
    }
}

/// A flat JSON object being written.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(':');
    }

    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        json_str(self.out, v);
        self
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.raw(k, "null"),
        }
    }

    fn num(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    fn opt_num(&mut self, k: &str, v: Option<impl std::fmt::Display>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => self.raw(k, "null"),
        }
    }

    fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.raw(k, if v { "true" } else { "false" })
    }

    fn raw(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        self.out.push_str(v);
        self
    }

    /// The fields that start a statement, transaction_end or session_end event: which
    /// session's.
    fn head(&mut self, event: &str, at: SystemTime, s: &SessionInfo) -> &mut Self {
        self.str("event", event).str("time", &rfc3339(at));
        self.num("session_id", s.session_id);
        self.str("client_user", &s.client_user);
        self.str("database", &s.database)
    }

    fn session(&mut self, s: &SessionInfo) -> &mut Self {
        self.num("session_id", s.session_id);
        self.str("client_user", &s.client_user);
        self.str("client_addr", &s.client_addr);
        self.opt_num("client_port", s.client_port);
        self.bool("tls", s.tls);
        self.str("database", &s.database);
        self.str("backend_user", &s.backend_user)
    }

    fn tags(&mut self, tags: &[String]) {
        self.key("tags");
        self.out.push('[');
        for (i, t) in tags.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            json_str(self.out, t);
        }
        self.out.push(']');
    }

    fn outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok { tags, rows } => {
                self.str("outcome", "ok");
                self.tags(tags);
                self.num("rows", rows);
            }
            Outcome::Error { sqlstate, tags } => {
                self.str("outcome", "error").str("sqlstate", sqlstate);
                self.tags(tags);
            }
            Outcome::Skipped => {
                self.str("outcome", "skipped");
            }
            Outcome::Unknown => {
                self.str("outcome", "unknown");
            }
        }
    }

    fn end(self) {
        self.out.push_str("}\n");
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-11-26T04:33:38.123Z`.
pub(super) fn rfc3339(t: SystemTime) -> String {
    let u = crate::utc::Utc::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn time_and_escaping() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_667_618_123);
        assert_eq!(rfc3339(t), "2026-11-26T04:33:38.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn auth_failure_line() {
        let e = AuditEvent::AuthFailure {
            user: "eve".into(),
            client_addr: "10.0.0.1".into(),
            client_port: Some(5000),
            database: "butler".into(),
            reason: "password authentication failed".into(),
        };
        let mut s = String::new();
        assert!(e.write_json(UNIX_EPOCH, &mut s));
        assert_eq!(
            s,
            "{\"event\":\"auth_failure\",\"time\":\"1970-01-01T00:00:00.000Z\",\"client_user\":\"eve\",\
             \"client_addr\":\"10.0.0.1\",\"client_port\":5000,\"database\":\"butler\",\
             \"reason\":\"password authentication failed\"}\n"
        );
    }
}

//! Statement auditing inside the relay: which SQL text each Query / Execute ran, and how it
//! ended (CommandComplete tag and rows, or the SQLSTATE), matched up in protocol order.
//!
//! Extended protocol: Parse records statement name -> text, Bind portal -> statement, and
//! Execute logs the prepared text. Responses come back in request order, so one FIFO of
//! in-flight requests (Query, Execute, Sync, FunctionCall) is enough to attribute them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use crate::audit::{self, AuditEvent, Outcome, SessionInfo, StatementEvent, TxHints};
use crate::config::AuditStatements;
use crate::protocol::{backend, frontend};

use super::xact::Xacts;

#[path = "statements_xact.rs"]
mod xact_events;

/// Statement text as logged: redacted, truncated, and whether it is logged at all.
#[derive(Debug, Clone)]
struct Text {
    sql: Arc<str>,
    truncated: bool,
    /// Logged on its own. (A savepoint statement that is not keeps its text: it is logged in
    /// a transaction with logged statements.)
    log: bool,
    /// Logged and may change data: its transaction's end is logged (read-only ones, logged
    /// with `audit_statements = all`, change nothing whichever way it ends).
    write: bool,
    /// Its transaction control, to read its ROLLBACK tags (see [`super::xact`]).
    tx: TxHints,
}

#[derive(Debug)]
enum InFlight {
    /// A simple Query (completed by ReadyForQuery) or Execute (by CommandComplete & co).
    Stmt {
        text: Option<Text>,
        extended: bool,
        started: Instant,
        tags: Vec<String>,
        rows: u64,
        error: Option<String>,
        /// The transactions it ran in: the first and the last (a simple Query's statements
        /// may end one and begin another).
        xact: Option<(u64, u64)>,
        /// COMMIT and ROLLBACK tags answered so far.
        ends: u32,
        /// Its number among the session's statements (see [`Xacts::answer`]).
        seq: u64,
    },
    Sync,
}

/// Named statements remembered per session (their texts are at most audit_max_statement_length
/// each): beyond this a statement's text is not kept and its executions are logged as unknown.
const MAX_PREPARED: usize = 1000;

/// The texts of a session's named statements, by name (kept across a transaction-mode
/// session's transactions, see [`StatementAudit::resume`]).
#[derive(Debug, Default)]
pub(super) struct Named(HashMap<Vec<u8>, Text>);

#[derive(Debug)]
pub(super) struct StatementAudit {
    mode: AuditStatements,
    max_len: usize,
    session: Arc<SessionInfo>,
    pid: i32,
    prepared: Named,
    portals: HashMap<Vec<u8>, Text>,
    inflight: VecDeque<InFlight>,
    /// Events ready for the writer.
    pub events: VecDeque<AuditEvent>,
    /// Savepoint statements of the open transaction (not logged on their own) held until it
    /// has a logged statement (then written before it), or dropped at its end.
    deferred: Vec<(u64, AuditEvent)>,
    /// The text of statements not logged (no allocation per statement).
    empty: Arc<str>,
    /// Query and Execute messages the client sent.
    pub count: u64,
    /// DataRows answering the Execute in progress (a suspended portal's rows: its
    /// PortalSuspended carries no count).
    data_rows: u64,
    /// The session's transactions, and which of them ended.
    xacts: Xacts,
    /// An Execute answered with its Sync next, in a transaction it began, and when its
    /// answer came: its event waits for the Sync's ReadyForQuery to carry how that ended.
    held: Option<(InFlight, Instant)>,
}

impl StatementAudit {
    pub(super) fn new(
        mode: AuditStatements,
        max_len: usize,
        session: Arc<SessionInfo>,
        pid: i32,
    ) -> Self {
        StatementAudit {
            mode,
            max_len,
            session,
            pid,
            prepared: Named::default(),
            portals: HashMap::new(),
            inflight: VecDeque::new(),
            events: VecDeque::new(),
            deferred: Vec::new(),
            empty: Arc::from(""),
            count: 0,
            data_rows: 0,
            xacts: Xacts::default(),
            held: None,
        }
    }

    fn text(&self, sql: &[u8], more: bool) -> Text {
        let write = self.mode != AuditStatements::None && (more || !audit::is_read_only(sql));
        let log = match self.mode {
            AuditStatements::None => false,
            AuditStatements::All => true,
            AuditStatements::Write => write,
        };
        let tx = if more {
            TxHints::UNCERTAIN
        } else {
            audit::tx_hints(sql)
        };
        if !log && !tx.savepoints {
            return Text {
                sql: Arc::clone(&self.empty),
                truncated: false,
                log,
                write,
                tx,
            };
        }
        // Savepoint control not logged on its own is kept for a transaction that turns out to
        // have logged statements (see `emit`).
        Text {
            tx,
            log,
            write,
            ..self.logged(sql, more)
        }
    }

    /// `sql` as logged: truncated and redacted.
    fn logged(&self, sql: &[u8], more: bool) -> Text {
        let cut = sql.len().min(self.max_len);
        let shown = String::from_utf8_lossy(sql.get(..cut).unwrap_or_default());
        Text {
            sql: Arc::from(audit::redact(&shown).as_ref()),
            truncated: more || cut < sql.len(),
            log: true,
            write: true,
            tx: TxHints::default(),
        }
    }

    /// A client message that will be forwarded. `body` may be a prefix (`partial`) of a
    /// body too large to wait for.
    pub(super) fn on_client(&mut self, tag: u8, body: &[u8], partial: bool) {
        match tag {
            frontend::QUERY => {
                let text = self.text(cstr(body), partial);
                self.count += 1;
                self.push_stmt(Some(text), false);
            }
            frontend::PARSE => {
                let (name, rest) = split_cstr(body);
                let text = self.text(cstr(rest), partial);
                match self.prepared.0.get(name) {
                    // A named statement defined again: PostgreSQL refuses that (42P05) while
                    // the first one exists, and takes it once the first failed or was dropped
                    // (DEALLOCATE, DISCARD). Which one will run is not known here: an
                    // execution is logged as a write if either is one, with both texts.
                    Some(old) if !name.is_empty() && old.sql != text.sql => {
                        let merged = self.merged(&text, old);
                        self.prepared.0.insert(name.to_vec(), merged);
                    }
                    Some(_) => {
                        self.prepared.0.insert(name.to_vec(), text);
                    }
                    None if name.is_empty() || self.prepared.0.len() < MAX_PREPARED => {
                        self.prepared.0.insert(name.to_vec(), text);
                    }
                    None => {}
                }
            }
            frontend::BIND => {
                let (portal, rest) = split_cstr(body);
                let (stmt, _) = split_cstr(rest);
                let text = match self.prepared.0.get(stmt) {
                    Some(t) => t.clone(),
                    None => self.unknown("prepared statement", stmt),
                };
                self.portals.insert(portal.to_vec(), text);
            }
            frontend::EXECUTE => {
                let (portal, _) = split_cstr(body);
                let text = match self.portals.get(portal) {
                    Some(t) => t.clone(),
                    None => self.unknown("portal", portal),
                };
                self.count += 1;
                self.push_stmt(Some(text), true);
            }
            frontend::CLOSE => {
                if let Some((&kind, rest)) = body.split_first() {
                    let (name, _) = split_cstr(rest);
                    match kind {
                        b'S' => self.prepared.0.remove(name),
                        _ => self.portals.remove(name),
                    };
                }
            }
            frontend::SYNC => self.inflight.push_back(InFlight::Sync),
            frontend::FUNCTION_CALL => {
                // Any function may write: logged in `write` mode too.
                let oid = body
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(0, u32::from_be_bytes);
                let text = self.described(format!("<function call, oid {oid}>"));
                self.count += 1;
                self.push_stmt(Some(text), false);
            }
            _ => {}
        }
    }

    /// A message refused for naming the identity settings (42501): logged at once, in every
    /// mode but `none` (a tampering attempt is exactly what the log is for).
    pub(super) fn refused(&mut self, tag: u8, body: &[u8]) {
        if self.mode == AuditStatements::None {
            return;
        }
        let (sql, extended) = match tag {
            frontend::QUERY => (cstr(body), false),
            frontend::PARSE => (cstr(split_cstr(body).1), true),
            frontend::BIND => (&b"<bind parameters naming an identity setting>"[..], true),
            _ => (&b"<function call naming an identity setting>"[..], false),
        };
        let text = self.logged(sql, false);
        self.count += 1;
        let outcome = Outcome::Error {
            sqlstate: crate::error::Error::IdentitySpoof.sqlstate().to_string(),
            tags: Vec::new(),
        };
        // Not sent to the server: it ran in no transaction.
        self.push_event(&text, extended, outcome, std::time::Duration::ZERO, None);
    }

    fn push_event(
        &mut self,
        text: &Text,
        extended: bool,
        outcome: Outcome,
        duration: std::time::Duration,
        xact: Option<(u64, u64)>,
    ) {
        let event = self.event(text, extended, outcome, duration, xact);
        self.events.push_back(event);
    }

    fn event(
        &self,
        text: &Text,
        extended: bool,
        outcome: Outcome,
        duration: std::time::Duration,
        xact: Option<(u64, u64)>,
    ) -> AuditEvent {
        AuditEvent::Statement(StatementEvent {
            xact_end: None,
            xact: xact.map(|x| x.0),
            xact_last: xact.filter(|x| x.1 != x.0).map(|x| x.1),
            session: Arc::clone(&self.session),
            backend_pid: self.pid,
            protocol: if extended { "extended" } else { "simple" },
            text: text.sql.to_string(),
            truncated: text.truncated,
            outcome,
            duration,
        })
    }

    /// The text of a statement name defined twice: the new definition, and the earlier one
    /// in case PostgreSQL kept it; bounded (a name defined again and again does not grow it).
    fn merged(&self, new: &Text, old: &Text) -> Text {
        let log = new.log || old.log;
        let limit = self.max_len.saturating_mul(2).max(64);
        let shown = |t: &Text| {
            if t.sql.is_empty() {
                "(a statement not logged on its own)".to_string()
            } else {
                t.sql.to_string()
            }
        };
        let mut sql = format!(
            "{} /* or, if PostgreSQL kept the earlier definition: {} */",
            shown(new),
            shown(old)
        );
        let truncated = new.truncated || old.truncated || sql.len() > limit;
        if sql.len() > limit {
            let mut cut = limit;
            while !sql.is_char_boundary(cut) {
                cut -= 1;
            }
            sql.truncate(cut);
        }
        Text {
            sql: if log {
                Arc::from(sql)
            } else {
                Arc::clone(&self.empty)
            },
            truncated,
            log,
            write: new.write || old.write,
            // Which definition runs is not known.
            tx: if new.tx == old.tx {
                new.tx
            } else {
                TxHints::UNCERTAIN
            },
        }
    }

    /// A statement pgporter has no text for (prepared with SQL PREPARE, kept beyond
    /// [`MAX_PREPARED`], or closed by the client when the server skipped the Close): logged
    /// by name, in `write` mode too (it may write).
    fn unknown(&self, what: &str, name: &[u8]) -> Text {
        self.described(format!(
            "<unknown {what} \"{}\">",
            String::from_utf8_lossy(name)
        ))
    }

    /// A description in place of SQL text, logged unless statements are not audited.
    fn described(&self, sql: String) -> Text {
        Text {
            sql: Arc::from(sql),
            truncated: false,
            log: self.mode != AuditStatements::None,
            write: self.mode != AuditStatements::None,
            tx: TxHints::default(),
        }
    }

    fn push_stmt(&mut self, text: Option<Text>, extended: bool) {
        self.inflight.push_back(InFlight::Stmt {
            text,
            extended,
            started: Instant::now(),
            tags: Vec::new(),
            rows: 0,
            error: None,
            xact: None,
            ends: 0,
            seq: self.count,
        });
    }

    /// A server message (bodies of CommandComplete and ErrorResponse are wanted).
    pub(super) fn on_server(&mut self, tag: u8, body: Option<&[u8]>) {
        match tag {
            backend::COMMAND_COMPLETE => {
                let extended = self.front_is_extended();
                let tag_text = cstr(body.unwrap_or_default());
                self.answered();
                self.xact_tag(tag_text);
                if let Some(InFlight::Stmt {
                    tags,
                    rows,
                    text: Some(text),
                    ..
                }) = self.front_stmt()
                {
                    if text.log || text.tx.savepoints {
                        let tag_text = String::from_utf8_lossy(tag_text).into_owned();
                        *rows += rows_of(&tag_text);
                        tags.push(tag_text);
                    }
                }
                if extended {
                    self.finish_front();
                }
            }
            backend::DATA_ROW if self.front_is_extended() => self.data_rows += 1,
            EMPTY_QUERY | PORTAL_SUSPENDED if self.front_is_extended() => {
                self.answered();
                let data_rows = self.data_rows;
                if tag == PORTAL_SUSPENDED {
                    if let Some(InFlight::Stmt { tags, rows, .. }) = self.front_stmt() {
                        tags.push("(portal suspended)".into());
                        *rows += data_rows;
                    }
                }
                self.finish_front();
            }
            backend::ERROR_RESPONSE => {
                let code = body
                    .and_then(backend::ErrorFields::parse)
                    .map_or_else(|| "XX000".to_string(), |f| f.code().to_string());
                let extended = self.front_is_extended();
                self.answered();
                self.xacts.error();
                if let Some(InFlight::Stmt { error, .. }) = self.front_stmt() {
                    error.get_or_insert(code);
                }
                if extended {
                    self.finish_front();
                    // Executes up to the Sync are skipped by the server.
                    for item in self.inflight.iter_mut() {
                        match item {
                            InFlight::Sync => break,
                            InFlight::Stmt { error, .. } => {
                                error.get_or_insert_with(|| SKIPPED.into());
                            }
                        }
                    }
                }
            }
            backend::READY_FOR_QUERY => {
                let status = body.and_then(<[u8]>::first).copied().unwrap_or(b'E');
                // Portals end with their transaction: idle, none is left (the map stays small
                // however many named portals a session binds).
                if status == b'I' {
                    self.portals.clear();
                }
                // What completes at this ReadyForQuery: a simple Query, or the Execute held
                // for its Sync; written after the model has seen the status, to carry how its
                // transaction ended if it was the whole transaction.
                let mut last = self.held.take();
                while let Some(mut item) = self.inflight.pop_front() {
                    self.place(&mut item);
                    match item {
                        InFlight::Sync => break,
                        stmt @ InFlight::Stmt {
                            extended: false, ..
                        } => {
                            last = Some((stmt, Instant::now()));
                            break;
                        }
                        stmt => self.emit(stmt, Instant::now()),
                    }
                }
                self.xacts.ready(status);
                if let Some((stmt, done)) = last {
                    self.emit(stmt, done);
                }
                if self.xacts.open().is_none() {
                    self.deferred.clear();
                }
            }
            _ => {}
        }
        self.write_ended();
    }

    /// The server ignores `n` Syncs sent after the statement that started a COPY IN.
    pub(super) fn drop_ignored_syncs(&mut self, mut n: u32) {
        let mut i = 1;
        while n > 0 && i < self.inflight.len() {
            if matches!(self.inflight.get(i), Some(InFlight::Sync)) {
                self.inflight.remove(i);
                n -= 1;
            } else {
                i += 1;
            }
        }
    }

    fn front_stmt(&mut self) -> Option<&mut InFlight> {
        self.inflight
            .front_mut()
            .filter(|i| matches!(i, InFlight::Stmt { .. }))
    }

    fn front_is_extended(&self) -> bool {
        matches!(
            self.inflight.front(),
            Some(InFlight::Stmt { extended: true, .. })
        )
    }

    fn finish_front(&mut self) {
        self.data_rows = 0;
        if let Some(stmt) = self.inflight.pop_front() {
            if self.waits_for_sync(&stmt) {
                self.held = Some((stmt, Instant::now()));
            } else {
                self.emit(stmt, Instant::now());
            }
        }
    }

    /// A transaction-mode session's next transaction: the statements it prepared in earlier
    /// ones (named statements outlive transactions; a Bind of one names it only), and the
    /// number of transactions it had.
    pub(super) fn resume(&mut self, prepared: Named, xacts: u64) {
        self.prepared = prepared;
        self.xacts = Xacts::resume(xacts);
    }

    /// Transactions the session had so far (carried to its next server connection).
    pub(super) fn xacts_counted(&self) -> u64 {
        self.xacts.count()
    }

    /// The named statements' texts, for the session's next transaction.
    pub(super) fn take_prepared(&mut self) -> Named {
        std::mem::take(&mut self.prepared)
    }

    /// The session ended: whatever is still in flight has an unknown outcome, and so has an
    /// open transaction whose end may have been in flight; one with nothing in flight is rolled
    /// back (its server connection is closed).
    pub(super) fn abandon(&mut self) {
        let in_flight = !self.inflight.is_empty();
        if let Some((stmt, done)) = self.held.take() {
            self.emit(stmt, done);
        }
        while let Some(item) = self.inflight.pop_front() {
            if let InFlight::Stmt {
                text,
                extended,
                started,
                xact,
                seq,
                ..
            } = item
            {
                let (write, tx) = text
                    .as_ref()
                    .map_or((false, TxHints::default()), |t| (t.write, t.tx));
                let xact = xact.or_else(|| {
                    let n = self.xacts.answer(write, &tx, Some(seq));
                    Some((n, n))
                });
                let stmt = InFlight::Stmt {
                    text,
                    extended,
                    started,
                    tags: Vec::new(),
                    rows: 0,
                    error: Some(UNKNOWN.into()),
                    xact,
                    ends: 0,
                    seq,
                };
                self.emit(stmt, Instant::now());
            }
        }
        self.xacts.abandon(in_flight);
        self.deferred.clear();
        self.write_ended();
    }

    /// Queue the event of a statement answered at `done`.
    fn emit(&mut self, item: InFlight, done: Instant) {
        let InFlight::Stmt {
            text: Some(text),
            extended,
            started,
            tags,
            rows,
            error,
            xact,
            seq,
            ..
        } = item
        else {
            return;
        };
        if !text.log && !text.tx.savepoints {
            return;
        }
        let outcome = match error.as_deref() {
            None => Outcome::Ok { tags, rows },
            Some(SKIPPED) => Outcome::Skipped,
            Some(UNKNOWN) => Outcome::Unknown,
            Some(code) => Outcome::Error {
                sqlstate: code.to_string(),
                tags,
            },
        };
        let mut event = self.event(&text, extended, outcome, done - started, xact);
        let first = xact.map(|x| x.0);
        if text.log {
            // The whole transaction: its event says how it ended, no transaction_end follows.
            if let (AuditEvent::Statement(e), Some((n, last))) = (&mut event, xact) {
                if n == last {
                    e.xact_end = self.xacts.take_own(n, seq).map(|o| o.as_str());
                }
            }
            // The savepoints of its transaction held so far go first.
            for (n, held) in std::mem::take(&mut self.deferred) {
                if Some(n) == first {
                    self.events.push_back(held);
                }
            }
            self.events.push_back(event);
        } else if first.is_some_and(|n| self.xacts.logged_in(n)) {
            self.events.push_back(event);
        } else if let Some(n) = first.filter(|&n| Some(n) == self.xacts.open()) {
            if self.deferred.len() < MAX_DEFERRED {
                self.deferred.push((n, event));
            }
        }
    }
}

/// Savepoint statements held per transaction before its first logged statement; beyond
/// these they are not logged.
const MAX_DEFERRED: usize = 100;

const EMPTY_QUERY: u8 = b'I';
const PORTAL_SUSPENDED: u8 = b's';
const SKIPPED: &str = "skipped";
const UNKNOWN: &str = "unknown";

/// Rows reported by a CommandComplete tag (`INSERT 0 5`, `UPDATE 3`, `COPY 7`, `SELECT 2`).
fn rows_of(tag: &str) -> u64 {
    let mut words = tag.split(' ');
    let counted = matches!(
        words.next(),
        Some("INSERT" | "UPDATE" | "DELETE" | "SELECT" | "COPY" | "MERGE" | "FETCH" | "MOVE")
    );
    if !counted {
        return 0;
    }
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The bytes before the first NUL (all of them if none: a truncated prefix).
fn cstr(b: &[u8]) -> &[u8] {
    split_cstr(b).0
}

fn split_cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(n) => (
            b.get(..n).unwrap_or_default(),
            b.get(n + 1..).unwrap_or_default(),
        ),
        None => (b, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts() {
        assert_eq!(rows_of("INSERT 0 5"), 5);
        assert_eq!(rows_of("UPDATE 3"), 3);
        assert_eq!(rows_of("COPY 7"), 7);
        assert_eq!(rows_of("CREATE TABLE"), 0);
    }
}

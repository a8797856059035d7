//! What the relay looks at in passing: transaction state (ReadyForQuery), the spoof check on
//! Query/Parse text, and statement auditing. Two [`Visit`] views of one [`RelayState`], one per
//! direction.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::audit::AuditSender;
use crate::identity::{GucNames, GucStream};
use crate::protocol::scan::{front_len, replace_front, Flow, Rewrite, Visit};
use crate::protocol::{backend, frontend};

use super::prepared::Prepared;
use super::relay::TxTracker;
use super::renaming::{Answer, Renaming, Rewritten};
use super::statements::StatementAudit;

/// A refused message held at the front of the client's buffer until the server has answered
/// everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    Query,
    Parse,
}

/// A wanted body too large to wait for, seen in chunks.
#[derive(Debug)]
struct Streamed {
    tag: u8,
    matcher: GucStream,
    prefix: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct RelayState {
    pub tracker: TxTracker,
    /// The identity GUC names to refuse (empty: no check, e.g. admin users).
    names: GucNames,
    pub audit: Option<StatementAudit>,
    /// Where statement events go (None when the audit log is off).
    pub sender: Option<AuditSender>,
    pub held: Option<Held>,
    /// An identity GUC was named where the message could not be held back whole.
    pub spoofed: bool,
    /// The client sent a message of a type not valid after login, or a simple Query under
    /// disable_pqexec (not forwarded; see [`super::serve::refusal`]).
    pub unexpected: Option<u8>,
    /// disable_pqexec: a simple Query ends the session.
    pub no_simple_query: bool,
    streamed: Option<Streamed>,
    prefix_cap: usize,
    /// Read-only sessions: the HINT added to PostgreSQL's 25006 errors.
    read_only_hint: Option<Arc<str>>,
    /// The 25006 error at the front of the server buffer already carries the hint.
    hint_added: bool,
    /// The last `in_hot_standby` ParameterStatus (PostgreSQL 14+ reports a promotion on live
    /// connections): Some(true) = standby.
    pub hot_standby: Option<bool>,
    /// ParameterStatus values the server reported during the relay (the client's own SETs), to
    /// keep the server connection's record of its parameters true.
    pub param_changes: Vec<(String, String)>,
    /// Answers of pgporter's own queries sent ahead of the client's first request (a SET of
    /// application_name), to be dropped: how many ReadyForQuery are still to come.
    pub ahead: u32,
    /// The message at the front of the server buffer is one of those, to drop.
    dropping: bool,
    /// query_timeout / idle_transaction_timeout / transaction_timeout, when set.
    pub watchdog: Option<super::watchdog::Watchdog>,
    /// The server sent a FATAL (it closes next): the client has its reason already.
    pub server_fatal: bool,
    /// The relay ended with a client message partly forwarded (see `relay`).
    pub cut_short: bool,
    /// Transaction mode: the client's named prepared statements (the relay ends at a
    /// transaction's end when none is open). None in session mode (unless the session began
    /// in transaction mode).
    pub prepared: Option<Prepared>,
    /// Transaction mode with max_prepared_statements: the client's statements renamed to
    /// shared ones (instead of `prepared`). Also in session mode for a session that began in
    /// transaction mode (a reload changed the pool's mode).
    pub renaming: Option<Renaming>,
    /// The pool gives the connection back at each transaction's end.
    pub transaction_mode: bool,
    /// Statement mode: a transaction left open after a request ends the session.
    pub statement_mode: bool,
    /// Statement mode and a ReadyForQuery `T` or `E` arrived (held, unforwarded).
    pub long_transaction: bool,
    /// The answer count was lost with a renamed statement's answer queued: the session ends
    /// (see [`Renaming::unsure`]).
    pub renaming_lost: bool,
    /// A session not renaming on a connection holding shared statements (it began before
    /// max_prepared_statements was turned on): its DISCARD ALL / DEALLOCATE ALL drops them.
    pub watch_drops: bool,
    pub dropped_all: bool,
}

impl RelayState {
    pub(super) fn new(
        tracker: TxTracker,
        names: GucNames,
        audit: Option<StatementAudit>,
        sender: Option<AuditSender>,
        prefix_cap: usize,
    ) -> Self {
        RelayState {
            tracker,
            names,
            audit,
            sender,
            held: None,
            spoofed: false,
            unexpected: None,
            no_simple_query: false,
            streamed: None,
            prefix_cap,
            read_only_hint: None,
            hint_added: false,
            hot_standby: None,
            param_changes: Vec::new(),
            ahead: 0,
            dropping: false,
            watchdog: None,
            server_fatal: false,
            cut_short: false,
            prepared: None,
            renaming: None,
            transaction_mode: false,
            statement_mode: false,
            long_transaction: false,
            renaming_lost: false,
            watch_drops: false,
            dropped_all: false,
        }
    }

    /// On a read-only session, PostgreSQL's 25006 errors get `hint`.
    pub(super) fn with_read_only_hint(mut self, hint: Option<Arc<str>>) -> Self {
        self.read_only_hint = hint;
        self
    }

    pub(super) fn front(&mut self) -> Front<'_> {
        Front(self)
    }

    pub(super) fn back(&mut self) -> Back<'_> {
        Back(self)
    }

    fn refuse(&mut self, tag: u8) -> Flow {
        // Refusing in place needs the server at a clean boundary with a known count of answers
        // due (the refusal waits for them).
        if self.tracker.mid_batch() || self.tracker.lost() {
            self.spoofed = true;
        } else {
            // A Query or FunctionCall is answered on its own (ReadyForQuery); a Parse or a
            // Bind starts a batch that runs to the next Sync.
            self.held = Some(match tag {
                frontend::QUERY | frontend::FUNCTION_CALL => Held::Query,
                _ => Held::Parse,
            });
        }
        Flow::StopBefore
    }
}

/// Client -> server.
#[derive(Debug)]
pub(super) struct Front<'a>(&'a mut RelayState);

impl Visit for Front<'_> {
    fn want_body(&self, tag: u8) -> bool {
        let st = &*self.0;
        let renaming = st.renaming.as_ref();
        match tag {
            frontend::PARSE => {
                !st.names.is_empty()
                    || st.audit.is_some()
                    || st.prepared.is_some()
                    || renaming.is_some()
            }
            frontend::BIND => !st.names.is_empty() || st.audit.is_some() || renaming.is_some(),
            frontend::QUERY | frontend::FUNCTION_CALL => !st.names.is_empty() || st.audit.is_some(),
            frontend::CLOSE => st.audit.is_some() || st.prepared.is_some() || renaming.is_some(),
            frontend::DESCRIBE => renaming.is_some(),
            frontend::EXECUTE => st.audit.is_some(),
            // Empty when well-formed; one with a body opens a batch (see below).
            frontend::FLUSH => true,
            _ => false,
        }
    }

    fn header(&mut self, tag: u8, body: Option<&[u8]>) -> Flow {
        if !super::serve::may_send(tag, self.0.no_simple_query) {
            // Not passed on: the session ends (PostgreSQL would end it, and pgporter would
            // have handed on a connection about to close).
            self.0.unexpected = Some(tag);
            return Flow::StopBefore;
        }
        if let Some(r) = &mut self.0.renaming {
            if r.take_passing() {
                // What a rewrite put in place of a message already looked at.
                return self.0.tracker.on_client(tag);
            }
        }
        let wanted = self.want_body(tag);
        let st = &mut *self.0;
        // Statement text, and the values that can carry a GUC name into set_config() and
        // current_setting() without naming it in the text: Bind parameters, FunctionCall
        // arguments.
        let text_msg = matches!(
            tag,
            frontend::QUERY | frontend::PARSE | frontend::BIND | frontend::FUNCTION_CALL
        );
        match body {
            Some(b) => {
                let named = match tag {
                    // Values are data: checked whole (a malformed body, refused by the
                    // server anyway, falls back to the text check).
                    frontend::BIND | frontend::FUNCTION_CALL if !st.names.is_empty() => {
                        frontend::any_value(tag, b, |v| st.names.in_value(v))
                            .unwrap_or_else(|| st.names.mentioned(b))
                    }
                    _ => text_msg && st.names.mentioned(b),
                };
                if named {
                    if let Some(a) = &mut st.audit {
                        a.refused(tag, b);
                    }
                    return st.refuse(tag);
                }
                if let Some(a) = &mut st.audit {
                    a.on_client(tag, b, false);
                }
            }
            None if wanted => {
                st.streamed = Some(Streamed {
                    tag,
                    matcher: st.names.stream(),
                    prefix: Vec::new(),
                });
            }
            None => {
                let counted = tag != frontend::SYNC || st.tracker.sync_counts();
                if let (Some(a), true) = (&mut st.audit, counted) {
                    a.on_client(tag, &[], false);
                }
            }
        }
        let syncs = st.tracker.syncs_sent();
        if let Some(p) = &mut st.prepared {
            p.on_client(tag, body, syncs);
        }
        if let Some(r) = &mut st.renaming {
            let failed_block = st.tracker.status() == b'E';
            let held = r.on_client(tag, body, syncs, failed_block);
            if r.unsure() {
                st.renaming_lost = true;
                return Flow::StopBefore;
            }
            if held {
                // Replaced by `rewrite`; the tracker sees the replacement.
                return Flow::StopBefore;
            }
        }
        if tag == frontend::FLUSH && body != Some(&[]) {
            return st.tracker.on_flush_with_body();
        }
        st.tracker.on_client(tag)
    }

    fn rewrite(&mut self, buf: &mut BytesMut) -> Rewrite {
        if self.0.renaming_lost || self.0.long_transaction {
            return Rewrite::Stop;
        }
        match &mut self.0.renaming {
            Some(r) => match r.rewrite(buf) {
                Rewritten::Done => Rewrite::Done,
                Rewritten::NeedMore => Rewrite::NeedMore,
                Rewritten::Stop => Rewrite::Stop,
            },
            None => Rewrite::Stop,
        }
    }

    fn chunk(&mut self, bytes: &[u8], last: bool) -> Flow {
        let st = &mut *self.0;
        let Some(s) = &mut st.streamed else {
            return Flow::Continue;
        };
        if let (frontend::PARSE, Some(p)) = (s.tag, &mut st.prepared) {
            p.on_chunk(bytes, last);
        }
        if let (frontend::PARSE, Some(r)) = (s.tag, &mut st.renaming) {
            r.on_chunk(bytes, last);
        }
        if matches!(
            s.tag,
            frontend::QUERY | frontend::PARSE | frontend::BIND | frontend::FUNCTION_CALL
        ) && st.names.feed(&mut s.matcher, bytes)
        {
            st.spoofed = true;
            return Flow::StopBefore;
        }
        if st.audit.is_some() {
            let room = st.prefix_cap.saturating_sub(s.prefix.len());
            s.prefix
                .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        }
        if last {
            if let (Some(s), Some(a)) = (st.streamed.take(), &mut st.audit) {
                a.on_client(s.tag, &s.prefix, true);
            }
        }
        Flow::Continue
    }
}

/// Server -> client.
#[derive(Debug)]
pub(super) struct Back<'a>(&'a mut RelayState);

impl Visit for Back<'_> {
    fn want_body(&self, tag: u8) -> bool {
        // ParameterStatus is rare and small: read it for in_hot_standby and the parameter
        // record.
        // ErrorResponse: rare, read for its severity (a FATAL is the session's end).
        tag == backend::READY_FOR_QUERY
            || self.0.ahead > 0
            || tag == backend::PARAMETER_STATUS
            || tag == backend::ERROR_RESPONSE
            || ((self.0.audit.is_some()
                || self.0.prepared.is_some()
                || self.0.renaming.is_some()
                || self.0.watch_drops)
                && tag == backend::COMMAND_COMPLETE)
    }

    /// A response reaches the client only once the statement events it completes are queued
    /// for the writer: Pending while the queue is full (backpressure).
    fn before_forward(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let st = &mut *self.0;
        let (Some(sender), Some(stmts)) = (st.sender.as_mut(), st.audit.as_mut()) else {
            return Poll::Ready(());
        };
        while !stmts.events.is_empty() {
            std::task::ready!(sender.poll_ready(cx));
            if let Some(ev) = stmts.events.pop_front() {
                sender.send_reserved(ev);
            }
        }
        Poll::Ready(())
    }

    fn ends_answer(&self, tag: u8) -> bool {
        tag == backend::READY_FOR_QUERY
    }

    fn header(&mut self, tag: u8, body: Option<&[u8]>) -> Flow {
        let st = &mut *self.0;
        // A ParameterStatus inside the answer to pgporter's own query is the session's news
        // (a configuration reload applied at that command): recorded and passed on below.
        if st.ahead > 0 && tag != backend::PARAMETER_STATUS {
            // An answer to pgporter's own query: dropped by `rewrite`, unseen by the tracker.
            if tag == backend::READY_FOR_QUERY {
                st.ahead -= 1;
            } else if tag == backend::ERROR_RESPONSE {
                let error = body.and_then(backend::ErrorFields::parse);
                tracing::warn!(error = ?error, "a SET sent ahead of the client's request failed");
            }
            st.dropping = true;
            return Flow::StopBefore;
        }
        if st.ahead > 0
            && tag == backend::PARAMETER_STATUS
            && body.is_some_and(|b| b.starts_with(b"application_name\0"))
        {
            // The echo of pgporter's own SET of application_name: the client was welcomed
            // with that value already.
            st.dropping = true;
            return Flow::StopBefore;
        }
        if tag == backend::READY_FOR_QUERY
            && st.statement_mode
            && body.and_then(<[u8]>::first) != Some(&b'I')
        {
            // A transaction block in statement mode: the session ends instead, and the
            // answers read with this ReadyForQuery (BEGIN's) are not passed on (PgBouncer);
            // whole answers to earlier requests read with it are. The audit log has them
            // all the same: the statements ran, and their transaction is rolled back (the
            // server connection is closed).
            st.long_transaction = true;
            if let Some(a) = &mut st.audit {
                a.on_server(tag, body);
            }
            return Flow::Abandon;
        }
        if let (Some(r), backend::PARSE_COMPLETE | backend::CLOSE_COMPLETE) =
            (&mut st.renaming, tag)
        {
            match r.on_complete() {
                Answer::Pass => {}
                Answer::Drop => {
                    // The answer to pgporter's own Parse or Close: dropped by `rewrite`.
                    st.dropping = true;
                    return Flow::StopBefore;
                }
                Answer::ToParseComplete => return Flow::StopBefore,
            }
        }
        if tag == backend::PARAMETER_STATUS {
            if let Some(value) = body.and_then(|b| b.strip_prefix(b"in_hot_standby\0")) {
                st.hot_standby = Some(value.starts_with(b"on"));
            }
            if let Some((name, value)) = body.and_then(backend::parse_parameter_status) {
                // The last value per name (a session may SET the same one many times).
                match st.param_changes.iter_mut().find(|(k, _)| *k == name) {
                    Some(slot) => slot.1 = value,
                    None => st.param_changes.push((name, value)),
                }
            }
        }
        if tag == backend::ERROR_RESPONSE && body.is_some_and(backend::is_fatal) {
            st.server_fatal = true;
        }
        if tag == backend::ERROR_RESPONSE
            && st.read_only_hint.is_some()
            && body.and_then(backend::error_code) == Some(READ_ONLY_SQL_TRANSACTION)
        {
            if !st.hint_added {
                // Held back, to be re-encoded with the hint by `rewrite`.
                return Flow::StopBefore;
            }
            st.hint_added = false;
        }
        let ignored = self.0.tracker.on_server(tag, body.unwrap_or_default());
        let readies = self.0.tracker.readies();
        if let Some(p) = &mut self.0.prepared {
            p.on_server(tag, body, readies);
        }
        if let Some(r) = &mut self.0.renaming {
            r.on_server(tag, body, readies);
            if self.0.tracker.lost() {
                r.lose();
                if r.unsure() {
                    self.0.renaming_lost = true;
                    return Flow::StopBefore;
                }
            }
        } else if tag == backend::COMMAND_COMPLETE
            && self.0.watch_drops
            && body.is_some_and(crate::server::statements::drops_all)
        {
            self.0.dropped_all = true;
        }
        if let Some(a) = &mut self.0.audit {
            a.drop_ignored_syncs(ignored);
            a.on_server(tag, body);
        }
        Flow::Continue
    }

    /// Drop an answer to pgporter's own query, Parse or Close, make a CloseComplete the
    /// ParseComplete the client is due (see `super::renaming`), or replace the held 25006
    /// ErrorResponse at the front of `buf` with one carrying the hint.
    fn rewrite(&mut self, buf: &mut BytesMut) -> Rewrite {
        if self.0.renaming_lost || self.0.long_transaction {
            return Rewrite::Stop;
        }
        let done = |ok: bool| if ok { Rewrite::Done } else { Rewrite::Stop };
        if std::mem::take(&mut self.0.dropping) {
            return done(drop_front(buf).is_some());
        }
        if let Some(r) = &mut self.0.renaming {
            if r.convert(buf) {
                return Rewrite::Done;
            }
        }
        let Some(hint) = self.0.read_only_hint.as_deref() else {
            return Rewrite::Stop;
        };
        let rewritten = add_hint(buf, hint).is_some();
        self.0.hint_added = rewritten;
        done(rewritten)
    }
}

const READ_ONLY_SQL_TRANSACTION: &[u8] = b"25006";

/// Remove the whole message at the front of `buf`.
fn drop_front(buf: &mut BytesMut) -> Option<()> {
    let total = front_len(buf)?;
    if buf.len() < total {
        return None;
    }
    let _ = buf.split_to(total);
    Some(())
}

/// Replace the whole ErrorResponse at the front of `buf` with one carrying `hint`; returns
/// its new length.
fn add_hint(buf: &mut BytesMut, hint: &str) -> Option<usize> {
    let total = front_len(buf)?;
    let new = backend::error_with_hint(buf.get(5..total)?, hint)?;
    replace_front(buf, total, &new);
    Some(new.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentitySettings;

    fn state() -> RelayState {
        RelayState::new(
            TxTracker::default(),
            GucNames::new(&IdentitySettings::default()),
            None,
            None,
            0,
        )
    }

    #[test]
    fn spoof_at_a_clean_boundary_is_held() {
        let mut st = state();
        let flow = st
            .front()
            .header(frontend::QUERY, Some(b"set pgporter.client_user = 'x'\0"));
        assert_eq!(flow, Flow::StopBefore);
        assert_eq!(st.held, Some(Held::Query));
        assert!(!st.spoofed);
        let mut st = state();
        let flow = st.front().header(
            frontend::PARSE,
            Some(b"\0select current_setting('pgporter.client_addr')\0\0\0"),
        );
        assert_eq!(flow, Flow::StopBefore);
        assert_eq!(st.held, Some(Held::Parse));
    }

    #[test]
    fn spoof_mid_batch_or_streamed_is_fatal() {
        let mut st = state();
        assert_eq!(st.front().header(frontend::BIND, None), Flow::Continue);
        let flow = st.front().header(
            frontend::PARSE,
            Some(b"\0set pgporter.client_user to 'x'\0\0\0"),
        );
        assert_eq!(flow, Flow::StopBefore);
        assert!(st.spoofed && st.held.is_none());

        let mut st = state();
        assert_eq!(st.front().header(frontend::QUERY, None), Flow::Continue);
        assert_eq!(
            st.front().chunk(b"select 1; set pgporter.cli", false),
            Flow::Continue
        );
        assert_eq!(
            st.front().chunk(b"ent_user = 'x'\0", true),
            Flow::StopBefore
        );
        assert!(st.spoofed);
    }

    #[test]
    fn admins_and_innocent_text_pass() {
        let mut st = RelayState::new(TxTracker::default(), GucNames::default(), None, None, 0);
        let flow = st
            .front()
            .header(frontend::QUERY, Some(b"show pgporter.client_user\0"));
        assert_eq!(flow, Flow::Continue);
        let mut st = state();
        let flow = st
            .front()
            .header(frontend::QUERY, Some(b"select client_user from t\0"));
        assert_eq!(flow, Flow::Continue);
        assert!(
            st.front().want_body(frontend::BIND),
            "Bind parameter values are checked for the names"
        );
        let mut st = RelayState::new(TxTracker::default(), GucNames::default(), None, None, 0);
        assert!(
            !st.front().want_body(frontend::BIND),
            "no check, no audit: Bind bodies not needed"
        );
    }
}

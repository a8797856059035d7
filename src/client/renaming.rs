//! Transaction mode with max_prepared_statements > 0: a client's named prepared statements are
//! renamed to pgporter's shared ones ([`crate::server::statements`]), so that a client with
//! statements open still gives its server connection back at each transaction's end, and
//! finds its statements on whichever connection it gets next.
//!
//! On the way to the server:
//! - a Parse of a name is sent under pgporter's name for its text; where the connection has
//!   that statement already, it goes as a Close of a name nothing has, whose CloseComplete
//!   comes back to the client as the ParseComplete (the server keeps the answers in order);
//! - a Bind or Describe of a name is renamed; where the connection lacks the statement, a
//!   Parse of it goes first and its ParseComplete is dropped;
//! - a Close of a name forgets the client's name and goes as a Close of a name nothing has:
//!   the statement stays on the connection for other clients;
//! - before a statement is added to a connection holding max_prepared_statements, the least
//!   recently used one is closed there (its CloseComplete dropped).
//!
//! Names the client did not Parse (SQL-level PREPARE) and the unnamed statement pass as they
//! are. Every Parse and Close sent is answered, in order, by ParseComplete / CloseComplete, or
//! skipped by the server after an error up to the next Sync: what to do with each answer is
//! queued per Sync batch, and what a skipped one did is undone when its batch ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::protocol::backend::{message as put_message, put_cstr};
use crate::protocol::scan::{front_len, replace_front};
use crate::protocol::{backend, frontend};
use crate::server::statements::{drops_all, id_of, Registry, ServerStatements, Stmt};

use super::prepared::{cstr, only_cstr, Named, StreamedName};

/// A statement name no connection ever has (pgporter's start at 1): a Close of it is
/// answered with CloseComplete and does nothing.
const NOTHING: &[u8] = b"pgporter_0";

/// How much of a Bind too large to hold is read looking for its statement name.
const BIND_HEAD_LIMIT: usize = 4096;

/// What a transaction-mode client keeps between its transactions.
#[derive(Debug)]
pub(super) struct ClientStatements {
    names: HashMap<Box<[u8]>, Arc<Stmt>>,
    /// Statements a server connection keeps (max_prepared_statements when the session began).
    keep: usize,
    /// A named Parse went to the server under the client's own name (too large to read
    /// whole, or sent once the answer count was lost): the client keeps that connection from
    /// then on, and leaves with DEALLOCATE ALL.
    pinned: bool,
}

impl ClientStatements {
    pub(super) fn new(keep: u32) -> Self {
        ClientStatements {
            names: HashMap::new(),
            keep: usize::try_from(keep).unwrap_or(usize::MAX).max(1),
            pinned: false,
        }
    }

    /// The client keeps its server connection (a statement under its own name is there).
    pub(super) fn pinned(&self) -> bool {
        self.pinned
    }

    /// Statements the client has open under names pgporter follows (SHOW CLIENTS).
    pub(super) fn len(&self) -> u32 {
        u32::try_from(self.names.len()).unwrap_or(u32::MAX)
    }
}

/// What to do with the ParseComplete / CloseComplete answering a message, and what to undo
/// if the server skips the message.
#[derive(Debug)]
enum Pending {
    /// Pass it on.
    Pass,
    /// The client's Parse, sent renamed: undone, the client's name and the connection's
    /// statement are forgotten.
    Parsed(Box<[u8]>, Arc<Stmt>),
    /// The client's Parse of a statement the connection had: sent as a Close of nothing,
    /// whose CloseComplete becomes the ParseComplete (`true`), or, inside a failed
    /// transaction block, as a Parse of it that PostgreSQL refuses with 25P02 as it would
    /// the client's (`false`); undone, the client's name is forgotten.
    Reused(Box<[u8]>, Arc<Stmt>, bool),
    /// The client's Close of its name (sent as a Close of nothing): undone, the name is back.
    Closed(Box<[u8]>, Arc<Stmt>),
    /// pgporter's Parse ahead of a Bind / Describe: dropped; undone, the connection lacks it.
    Injected(Arc<Stmt>),
    /// pgporter's Close of a least recently used statement: dropped; undone, it is still there.
    Evicted(Arc<Stmt>),
    /// The client's Parse of a name it has open, sent as a Parse of that statement with the
    /// client's text: PostgreSQL refuses it (42P05), unless the statement is not there after
    /// all (its Parse was skipped, a DISCARD ALL dropped it): then the server makes it, with
    /// the client's text, the statement this names (None: the statement's own). Passed on;
    /// nothing to undo.
    Again(Box<[u8]>, Arc<Stmt>, Option<Arc<Stmt>>),
    /// pgporter's Close of a statement the server holds with another statement's text (see
    /// [`ServerStatements::foreign`]): dropped; undone, it is still there.
    Unforeign(Arc<Stmt>),
    /// pgporter's Close of a statement a DISCARD ALL / DEALLOCATE ALL ahead of it dropped
    /// already: dropped; nothing to undo.
    Gone,
}

/// What the relay does with a ParseComplete / CloseComplete (see [`Renaming::on_complete`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Pass,
    Drop,
    /// Make it a ParseComplete (the rewrite comes next, then the message passes).
    ToParseComplete,
}

/// The client message at the front of its buffer, to be replaced (see [`Renaming::rewrite`]).
#[derive(Debug)]
enum Replace {
    /// By these whole messages (this many).
    Whole(BytesMut, u32),
    /// A Bind too large to hold: its statement name is read from the buffer.
    BindHead,
}

/// What [`Renaming::rewrite`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rewritten {
    Done,
    /// More of the message is needed in the buffer first.
    NeedMore,
    /// Nothing to replace: the message was held for another reason.
    Stop,
}

/// One relay's renaming: the client's names and the connection's statements, moved in for it.
#[derive(Debug)]
pub(super) struct Renaming {
    pub client: ClientStatements,
    pub server: ServerStatements,
    registry: Arc<Registry>,
    /// Answers due to Parse and Close messages sent, in order, each with its batch (the sync
    /// points sent before it: it is answered, or skipped, before the ReadyForQuery after).
    pending: VecDeque<(u64, Pending)>,
    /// The batch of the message being looked at.
    batch: u64,
    /// The tracker lost the count of answers due: see [`Renaming::lose`].
    lost: bool,
    /// Lost, and an answer had to be dropped or changed: see [`Renaming::unsure`].
    doomed: bool,
    replace: Option<Replace>,
    /// Messages of the last replacement the scanner is still to pass unvisited.
    passing: u32,
    /// The server's answer at the front of its buffer is to become a ParseComplete.
    converting: bool,
    /// The ParseComplete just made passes without taking a queue entry.
    converted: bool,
    /// A Parse body too large to read whole: its name.
    streamed: StreamedName,
}

impl Renaming {
    pub(super) fn new(
        client: ClientStatements,
        server: ServerStatements,
        registry: Arc<Registry>,
    ) -> Self {
        Renaming {
            client,
            server,
            registry,
            pending: VecDeque::new(),
            batch: 0,
            lost: false,
            doomed: false,
            replace: None,
            passing: 0,
            converting: false,
            converted: false,
            streamed: StreamedName::default(),
        }
    }

    /// The tracker lost the count of answers due (a client pipelining simple queries behind
    /// an unsynced batch that failed, a failed COPY with Syncs inside it): from then on,
    /// which queued answer a ParseComplete / CloseComplete is, or which were skipped, is not
    /// known. Answers are then only passed on: a new named Parse goes under the client's own
    /// name (keeping the client on this connection), a Close forgets the name for good, and
    /// a Bind of a statement the connection lacks ends the session (see
    /// [`Renaming::unsure`]), as does an answer queued to be dropped or changed.
    pub(super) fn lose(&mut self) {
        self.lost = true;
        for (_, p) in &mut self.pending {
            match p {
                Pending::Injected(_)
                | Pending::Evicted(_)
                | Pending::Gone
                | Pending::Unforeign(_)
                | Pending::Reused(.., true) => {
                    self.doomed = true;
                }
                // Passed on; undoing it later would be guesswork: what is recorded stays.
                _ => *p = Pending::Pass,
            }
        }
    }

    /// Lost, and an answer had to be dropped or changed: the session must end rather than
    /// hand the client an answer meant for another message.
    pub(super) fn unsure(&self) -> bool {
        self.doomed
    }

    /// Whether the client may give its connection back at a transaction's end.
    pub(super) fn releasable(&self) -> bool {
        !self.client.pinned
    }

    /// A message the last replacement produced, seen by the scanner: it passes as it is.
    pub(super) fn take_passing(&mut self) -> bool {
        let passing = self.passing > 0;
        self.passing = self.passing.saturating_sub(1);
        passing
    }

    /// A client message on its way (`body` None: streamed, too large to hold), with the sync
    /// points sent before it ([`super::tracker::TxTracker::syncs_sent`]) and whether the
    /// last ReadyForQuery said the transaction block failed. True: hold it,
    /// [`Renaming::rewrite`] replaces it.
    pub(super) fn on_client(
        &mut self,
        tag: u8,
        body: Option<&[u8]>,
        syncs: u64,
        failed_block: bool,
    ) -> bool {
        self.batch = syncs;
        let replacement = match (tag, body) {
            (frontend::PARSE, Some(body)) => self.parse(body, failed_block),
            (frontend::PARSE, None) => {
                self.streamed.start();
                self.pending.push_back((self.batch, Pending::Pass));
                None
            }
            (frontend::BIND, Some(body)) => self.bind(body),
            (frontend::BIND, None) => {
                self.replace = Some(Replace::BindHead);
                return true;
            }
            (frontend::DESCRIBE, Some([b'S', rest @ ..])) => self.describe(rest),
            (frontend::CLOSE, Some(body)) => self.close(body),
            (frontend::CLOSE, None) => {
                self.pending.push_back((self.batch, Pending::Pass));
                None
            }
            _ => None,
        };
        match replacement {
            Some((buf, count)) => {
                self.replace = Some(Replace::Whole(buf, count));
                true
            }
            None => false,
        }
    }

    /// The next piece of a streamed Parse body.
    pub(super) fn on_chunk(&mut self, bytes: &[u8], last: bool) {
        match self.streamed.feed(bytes, last) {
            Some(Named::Name(name)) if name.is_empty() => {}
            // Sent under the client's own name (or none the server takes): it stays with
            // this connection.
            Some(_) => self.client.pinned = true,
            None => {}
        }
    }

    fn parse(&mut self, body: &[u8], failed_block: bool) -> Option<(BytesMut, u32)> {
        let name = cstr(body).filter(|n| !n.is_empty());
        let Some(name) = name else {
            // The unnamed statement, or a malformed body the server refuses.
            self.pending.push_back((self.batch, Pending::Pass));
            return None;
        };
        if self.lost {
            // Under its own name from now on (a mapping left by a Parse the server may have
            // skipped would name a statement the connection lacks).
            self.client.names.remove(name);
            self.client.pinned = true;
            self.pending.push_back((self.batch, Pending::Pass));
            return None;
        }
        let tail = body.get(name.len() + 1..).unwrap_or_default();
        let mut out = BytesMut::new();
        let mut count = self.close_stale(&mut out);
        if let Some(existing) = self.client.names.get(name).cloned() {
            // PostgreSQL refuses a second Parse of a name (42P05): the server says so about
            // pgporter's name for it.
            count += self.ensure(&existing, &mut out);
            put_parse(&mut out, &existing.name, tail);
            let text = (*existing.tail != *tail).then(|| self.registry.intern(tail));
            self.pending
                .push_back((self.batch, Pending::Again(name.into(), existing, text)));
            return Some((out, count + 1));
        }
        let stmt = self.registry.intern(tail);
        self.client.names.insert(name.into(), Arc::clone(&stmt));
        let reused = |convert| Pending::Reused(name.into(), Arc::clone(&stmt), convert);
        if self.server.touch(&stmt) {
            if failed_block {
                // A Close would pass where PostgreSQL refuses the client's Parse (25P02).
                put_parse(&mut out, &stmt.name, tail);
                self.pending.push_back((self.batch, reused(false)));
            } else {
                put_close(&mut out, NOTHING);
                self.pending.push_back((self.batch, reused(true)));
            }
        } else {
            count += self.make_room(&mut out);
            put_parse(&mut out, &stmt.name, tail);
            self.server.insert(Arc::clone(&stmt));
            self.pending
                .push_back((self.batch, Pending::Parsed(name.into(), stmt)));
        }
        Some((out, count + 1))
    }

    /// After a "cached plan must not change result type": Closes of every statement the
    /// connection has (see [`ServerStatements::stale`]); how many.
    fn close_stale(&mut self, out: &mut BytesMut) -> u32 {
        if !std::mem::take(&mut self.server.stale) {
            return 0;
        }
        let mut count = 0;
        while let Some(old) = self.server.evict_over(0) {
            put_close(out, &old.name);
            self.pending.push_back((self.batch, Pending::Evicted(old)));
            count += 1;
        }
        count
    }

    fn bind(&mut self, body: &[u8]) -> Option<(BytesMut, u32)> {
        let portal = cstr(body)?;
        let rest = body.get(portal.len() + 1..)?;
        let name = cstr(rest)?;
        let values = rest.get(name.len() + 1..).unwrap_or_default();
        let mut out = BytesMut::new();
        let (stmt, count) = self.target(name, &mut out)?;
        put_message(&mut out, frontend::BIND, |b| {
            put_cstr(b, portal);
            put_cstr(b, stmt.as_ref().map_or(NOTHING, |s| &s.name));
            b.put_slice(values);
        });
        Some((out, count + 1))
    }

    fn describe(&mut self, rest: &[u8]) -> Option<(BytesMut, u32)> {
        let mut out = BytesMut::new();
        // Bytes after the name: passed on as they are, for the server's 08P01.
        let (stmt, count) = self.target(only_cstr(rest)?, &mut out)?;
        put_message(&mut out, frontend::DESCRIBE, |b| {
            b.put_u8(b'S');
            put_cstr(b, stmt.as_ref().map_or(NOTHING, |s| &s.name));
        });
        Some((out, count + 1))
    }

    /// The statement a Bind or Describe of `name` is to use, with the messages putting it on
    /// the connection first (how many); None when the name passes as it is. A name of
    /// pgporter's the client did not prepare (read from pg_prepared_statements: another
    /// client's statement) is answered as PostgreSQL answers an unknown name: `Some((None,
    /// 0))`, sent as [`NOTHING`].
    fn target(&mut self, name: &[u8], out: &mut BytesMut) -> Option<(Option<Arc<Stmt>>, u32)> {
        match self.client.names.get(name).cloned() {
            Some(stmt) => {
                let count = self.ensure(&stmt, out);
                Some((Some(stmt), count))
            }
            None if is_ours(name) => Some((None, 0)),
            None => None,
        }
    }

    fn close(&mut self, body: &[u8]) -> Option<(BytesMut, u32)> {
        let name = match body {
            // Bytes after the name: passed on as they are, for the server's 08P01.
            [b'S', rest @ ..] => only_cstr(rest),
            _ => None,
        };
        let mapped = name.and_then(|n| self.client.names.remove_entry(n));
        let Some((name, stmt)) = mapped else {
            self.pending.push_back((self.batch, Pending::Pass));
            if name.is_some_and(is_ours) {
                // Another client's statement: closed for nobody (as an unknown name is).
                let mut out = BytesMut::new();
                put_close(&mut out, NOTHING);
                return Some((out, 1));
            }
            return None;
        };
        let mut out = BytesMut::new();
        put_close(&mut out, NOTHING);
        let closed = match self.lost {
            true => Pending::Pass,
            false => Pending::Closed(name, stmt),
        };
        self.pending.push_back((self.batch, closed));
        Some((out, 1))
    }

    /// Messages putting `stmt` on the connection if it lacks it; returns how many.
    fn ensure(&mut self, stmt: &Arc<Stmt>, out: &mut BytesMut) -> u32 {
        if self.server.touch(stmt) {
            return 0;
        }
        self.doomed |= self.lost;
        let count = self.make_room(out);
        put_parse(out, &stmt.name, &stmt.tail);
        self.server.insert(Arc::clone(stmt));
        self.pending
            .push_back((self.batch, Pending::Injected(Arc::clone(stmt))));
        count + 1
    }

    /// Closes of the least recently used statements, leaving room for one more; how many.
    fn make_room(&mut self, out: &mut BytesMut) -> u32 {
        let mut count = 0;
        // Before any statement is parsed here (one of these, maybe): the names holding
        // another statement's text are closed.
        for stmt in std::mem::take(&mut self.server.foreign) {
            put_close(out, &stmt.name);
            self.pending
                .push_back((self.batch, Pending::Unforeign(stmt)));
            count += 1;
        }
        while let Some(old) = self.server.evict_over(self.client.keep - 1) {
            put_close(out, &old.name);
            self.pending.push_back((self.batch, Pending::Evicted(old)));
            count += 1;
        }
        count
    }

    /// Replace the held message at the front of `buf` (see [`Renaming::on_client`]); Stop
    /// when the message was held for another reason (a Terminate, a refused statement).
    pub(super) fn rewrite(&mut self, buf: &mut BytesMut) -> Rewritten {
        let (new, count, old_len) = match self.replace.take() {
            Some(Replace::Whole(new, count)) => (new, count, front_len(buf).unwrap_or(0)),
            Some(Replace::BindHead) => match self.bind_head(buf) {
                Some(done) => done,
                None => {
                    self.replace = Some(Replace::BindHead);
                    return Rewritten::NeedMore;
                }
            },
            None => return Rewritten::Stop,
        };
        if !new.is_empty() {
            replace_front(buf, old_len, &new);
        }
        // The replacement's messages, or the held message itself when nothing changed.
        self.passing = count.max(1);
        Rewritten::Done
    }

    /// The start of a streamed Bind, renamed: (new start, messages in it, length of the old
    /// start it replaces); None while its names are not all in `buf`.
    fn bind_head(&mut self, buf: &[u8]) -> Option<(BytesMut, u32, usize)> {
        let len = front_len(buf).and_then(|l| l.checked_sub(1))?;
        let body = buf.get(5..)?;
        let names = body.get(..body.len().min(BIND_HEAD_LIMIT))?;
        let Some((portal, name)) = cstr(names).and_then(|portal| {
            let name = cstr(names.get(portal.len() + 1..)?)?;
            Some((portal, name))
        }) else {
            if names.len() >= BIND_HEAD_LIMIT {
                // Not names pgporter can read: the server judges it as it is.
                return Some((BytesMut::new(), 0, 0));
            }
            return None;
        };
        let mut out = BytesMut::new();
        let Some((stmt, count)) = self.target(name, &mut out) else {
            return Some((BytesMut::new(), 0, 0));
        };
        let new_name = stmt.as_ref().map_or(NOTHING, |s| &s.name);
        let old_head = 5 + portal.len() + 1 + name.len() + 1;
        let new_len = len - name.len() + new_name.len();
        out.put_u8(frontend::BIND);
        out.put_u32(u32::try_from(new_len).ok()?);
        put_cstr(&mut out, portal);
        put_cstr(&mut out, new_name);
        Some((out, count + 1, old_head))
    }

    /// A ParseComplete or CloseComplete from the server.
    pub(super) fn on_complete(&mut self) -> Answer {
        if std::mem::take(&mut self.converted) {
            return Answer::Pass;
        }
        match self.pending.pop_front().map(|(_, p)| p) {
            Some(
                Pending::Injected(_) | Pending::Evicted(_) | Pending::Gone | Pending::Unforeign(_),
            ) => Answer::Drop,
            Some(Pending::Again(name, stmt, text)) => {
                // Taken: the statement was not there; the server made it with the client's
                // text, under its name.
                match text {
                    None => self.server.insert(Arc::clone(&stmt)),
                    Some(_) => {
                        self.server.remove(&stmt);
                        self.server.foreign.push(Arc::clone(&stmt));
                    }
                }
                self.client.names.insert(name, text.unwrap_or(stmt));
                Answer::Pass
            }
            Some(Pending::Reused(.., true)) => {
                self.converting = true;
                Answer::ToParseComplete
            }
            _ => Answer::Pass,
        }
    }

    /// Turn the CloseComplete at the front of `buf` into a ParseComplete, if one is due.
    pub(super) fn convert(&mut self, buf: &mut BytesMut) -> bool {
        if !std::mem::take(&mut self.converting) {
            return false;
        }
        match buf.first_mut() {
            Some(tag) => *tag = backend::PARSE_COMPLETE,
            None => return false,
        }
        self.converted = true;
        true
    }

    /// Another server message the client will see; `readies`: the ReadyForQuery messages
    /// received so far, this one included ([`super::tracker::TxTracker::readies`]).
    pub(super) fn on_server(&mut self, tag: u8, body: Option<&[u8]>, readies: u64) {
        match tag {
            backend::READY_FOR_QUERY => {
                let over = self
                    .pending
                    .iter()
                    .take_while(|(batch, _)| *batch < readies)
                    .count();
                // Undone last first: a Close then a Parse of the same name, both skipped,
                // leave the name as it was before them.
                let skipped: Vec<_> = self.pending.drain(..over).collect();
                for (_, p) in skipped.into_iter().rev() {
                    self.undo(p);
                }
            }
            backend::COMMAND_COMPLETE if body.is_some_and(drops_all) => self.dropped_all(),
            backend::ERROR_RESPONSE if body.is_some_and(plan_changed) => self.server.stale = true,
            backend::ERROR_RESPONSE => {
                // 26000 about one of pgporter's statements: something dropped it behind
                // pgporter's back (a client's SQL DEALLOCATE): parsed again when next used.
                if let Some(id) = body.and_then(missing_statement) {
                    self.server.remove_id(id);
                }
            }
            _ => {}
        }
    }

    /// DISCARD ALL / DEALLOCATE ALL: every statement of the session is gone, the client's
    /// included, except those the messages sent behind it make: the Parses and Closes still
    /// to be answered came after it (the server answers in order), and were sent as if it had
    /// not run. What they do is done again on the emptied records.
    fn dropped_all(&mut self) {
        self.server.clear();
        self.client.names.clear();
        let (client, server) = (&mut self.client.names, &mut self.server);
        for (_, p) in &mut self.pending {
            match p {
                Pending::Pass | Pending::Gone | Pending::Unforeign(_) => {}
                Pending::Parsed(name, stmt) => {
                    client.insert(name.clone(), Arc::clone(stmt));
                    server.insert(Arc::clone(stmt));
                }
                // The connection lacks it now: a Bind parses it first.
                Pending::Reused(name, stmt, true) => {
                    client.insert(name.clone(), Arc::clone(stmt));
                }
                // A Parse of the statement: it makes it, unless a message before it did.
                Pending::Reused(name, stmt, false) => {
                    if !server.has(stmt) {
                        client.insert(name.clone(), Arc::clone(stmt));
                        server.insert(Arc::clone(stmt));
                        *p = Pending::Parsed(name.clone(), Arc::clone(stmt));
                    }
                }
                // Its answer says what it did (see `on_complete`).
                Pending::Again(..) => {}
                Pending::Closed(name, _) => {
                    client.remove(name);
                }
                Pending::Injected(stmt) => server.insert(Arc::clone(stmt)),
                Pending::Evicted(stmt) => {
                    if server.has(stmt) {
                        server.remove(stmt);
                    } else {
                        *p = Pending::Gone;
                    }
                }
            }
        }
    }

    /// The server skipped a message (an error came first in its batch).
    fn undo(&mut self, skipped: Pending) {
        let forget = |names: &mut HashMap<Box<[u8]>, Arc<Stmt>>, name: &[u8], stmt: &Arc<Stmt>| {
            if names.get(name).is_some_and(|s| Arc::ptr_eq(s, stmt)) {
                names.remove(name);
            }
        };
        match skipped {
            Pending::Pass | Pending::Again(..) | Pending::Gone => {}
            Pending::Parsed(name, stmt) => {
                forget(&mut self.client.names, &name, &stmt);
                self.server.remove(&stmt);
            }
            Pending::Reused(name, stmt, _) => forget(&mut self.client.names, &name, &stmt),
            Pending::Closed(name, stmt) => {
                self.client.names.entry(name).or_insert(stmt);
            }
            Pending::Injected(stmt) => self.server.remove(&stmt),
            Pending::Evicted(stmt) => self.server.insert(stmt),
            Pending::Unforeign(stmt) => self.server.foreign.push(stmt),
        }
    }
}

/// Whether `name` has the form of pgporter's statement names.
fn is_ours(name: &[u8]) -> bool {
    id_of(name).is_some()
}

/// The id in a 26000 ErrorResponse `prepared statement "pgporter_<id>" does not exist`.
fn missing_statement(body: &[u8]) -> Option<u64> {
    let error = backend::ErrorFields::parse(body).filter(|e| e.code() == "26000")?;
    let quoted = error.message().split('"').nth(1)?;
    id_of(quoted.as_bytes())
}

/// Whether an ErrorResponse is PostgreSQL's "cached plan must not change result type".
fn plan_changed(body: &[u8]) -> bool {
    backend::ErrorFields::parse(body).is_some_and(|e| {
        e.code() == "0A000" && e.message() == "cached plan must not change result type"
    })
}

fn put_parse(out: &mut BytesMut, name: &[u8], tail: &[u8]) {
    put_message(out, frontend::PARSE, |b| {
        put_cstr(b, name);
        b.put_slice(tail);
    });
}

fn put_close(out: &mut BytesMut, name: &[u8]) {
    put_message(out, frontend::CLOSE, |b| {
        b.put_u8(b'S');
        put_cstr(b, name);
    });
}

#[cfg(test)]
mod tests;

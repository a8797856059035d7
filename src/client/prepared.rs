//! Transaction mode: the named prepared statements a client has open. A prepared statement
//! lives on the server connection that parsed it, so while a client has one open it keeps
//! that connection between transactions (where PgBouncer, without max_prepared_statements,
//! hands the connection on and the client's next Bind fails). The unnamed statement is not
//! tracked: drivers use it within one Sync, and PgBouncer does not keep it either.
//!
//! A name counts as open from its Parse until the server confirms its Close (CloseComplete):
//! after an error the server skips the rest of the batch, a Close included, and the statement
//! stays. A failed Parse is counted too: keeping the connection is the safe mistake.
//!
//! DISCARD ALL and DEALLOCATE ALL (their CommandComplete) drop every name parsed in an
//! earlier batch (answered before them); a Parse in their own batch may have come before or
//! after them, and stays counted.

use std::collections::{HashMap, VecDeque};

use crate::protocol::{backend, frontend};
use crate::server::statements::drops_all;

/// How much of a streamed Parse body is kept looking for the end of its name.
const NAME_LIMIT: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Each open name, with the number of its latest Parse (see `sent`) and its batch (the
    /// sync points sent before it).
    names: HashMap<Box<[u8]>, (u64, u64)>,
    /// Parse and Close messages sent so far: a Close ends a name only if no Parse of it was
    /// sent after it (a Close and a Parse of one name pipelined: the name is open again).
    sent: u64,
    /// A name could not be read (a malformed Parse), in this batch: the client keeps its
    /// server connection until a DISCARD ALL / DEALLOCATE ALL of a later batch.
    unknown: Option<u64>,
    /// The batch of the latest client message (the sync points sent before it).
    batch: u64,
    /// Closes sent and not yet answered, in order: the number of sync points sent before
    /// each (its batch ends at the next ReadyForQuery), and the statement's name with the
    /// Close's number (None: a portal's Close, answered all the same).
    closing: VecDeque<(u64, Option<Closing>)>,
    /// A Parse body too large to be read whole, until its name ends.
    head: StreamedName,
}

/// A statement's name being closed, and the Close's number.
type Closing = (Box<[u8]>, u64);

impl Prepared {
    /// Whether the client's connection may go back to the pool (at a transaction's end).
    pub(super) fn none_open(&self) -> bool {
        self.names.is_empty() && self.unknown.is_none()
    }

    /// Statements open (SHOW CLIENTS).
    pub(super) fn len(&self) -> u32 {
        u32::try_from(self.names.len()).unwrap_or(u32::MAX)
    }

    /// A client message on its way to the server: `body` whole, or None for one streamed
    /// past (too large to read whole; its bytes go to [`Prepared::on_chunk`]). `syncs`: the
    /// sync points sent before it ([`super::tracker::TxTracker::syncs_sent`]).
    pub(super) fn on_client(&mut self, tag: u8, body: Option<&[u8]>, syncs: u64) {
        self.batch = syncs;
        match (tag, body) {
            (frontend::PARSE, Some(body)) => match cstr(body) {
                Some(name) => self.open(name),
                None => self.unknown = Some(syncs),
            },
            (frontend::PARSE, None) => self.head.start(),
            (frontend::CLOSE, Some([kind, rest @ ..])) => {
                self.sent += 1;
                let name = (*kind == b'S').then(|| (cstr(rest).unwrap_or(rest).into(), self.sent));
                self.closing.push_back((syncs, name));
            }
            _ => {}
        }
    }

    /// The next piece of a streamed Parse body (see [`Prepared::on_client`]).
    pub(super) fn on_chunk(&mut self, bytes: &[u8], last: bool) {
        match self.head.feed(bytes, last) {
            Some(Named::Name(name)) => self.open(&name),
            Some(Named::Unreadable) => self.unknown = Some(self.batch),
            None => {}
        }
    }

    /// A server message the client will see (`body`: a CommandComplete's, when read);
    /// `readies`: the ReadyForQuery messages received so far, this one included
    /// ([`super::tracker::TxTracker::readies`]).
    pub(super) fn on_server(&mut self, tag: u8, body: Option<&[u8]>, readies: u64) {
        match tag {
            backend::COMMAND_COMPLETE if body.is_some_and(drops_all) => {
                // It runs in batch number `readies`: the batches before it are answered.
                self.names.retain(|_, &mut (_, batch)| batch >= readies);
                self.unknown = self.unknown.filter(|&batch| batch >= readies);
            }
            backend::CLOSE_COMPLETE => {
                if let Some((_, Some((name, close)))) = self.closing.pop_front() {
                    if self
                        .names
                        .get(&name)
                        .is_some_and(|&(parse, _)| parse < close)
                    {
                        self.names.remove(&name);
                    }
                }
            }
            backend::READY_FOR_QUERY => {
                // A Close of a batch now over that got no CloseComplete was skipped (an
                // error came first): its statement stays open.
                self.closing.retain(|(batch, _)| *batch >= readies);
            }
            _ => {}
        }
    }

    fn open(&mut self, name: &[u8]) {
        self.sent += 1;
        if !name.is_empty() {
            self.names.insert(name.into(), (self.sent, self.batch));
        }
    }
}

/// The name at the front of a message body seen in pieces.
#[derive(Debug, Default)]
pub(super) struct StreamedName(Option<Vec<u8>>);

/// What [`StreamedName::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Named {
    Name(Vec<u8>),
    /// No NUL in the body's first [`NAME_LIMIT`] bytes.
    Unreadable,
}

impl StreamedName {
    /// A body starts: its name is looked for in the pieces fed next.
    pub(super) fn start(&mut self) {
        self.0 = Some(Vec::new());
    }

    /// The next piece of the body (`last`: its final one); Some once the name is known or
    /// cannot be, then nothing more until the next [`StreamedName::start`].
    pub(super) fn feed(&mut self, bytes: &[u8], last: bool) -> Option<Named> {
        let head = self.0.as_mut()?;
        match bytes.iter().position(|&b| b == 0) {
            Some(end) => {
                head.extend_from_slice(&bytes[..end]);
                let name = std::mem::take(head);
                self.0 = None;
                Some(Named::Name(name))
            }
            None if last || head.len() + bytes.len() > NAME_LIMIT => {
                self.0 = None;
                Some(Named::Unreadable)
            }
            None => {
                head.extend_from_slice(bytes);
                None
            }
        }
    }
}

/// The NUL-terminated string at the front of `bytes`.
pub(super) fn cstr(bytes: &[u8]) -> Option<&[u8]> {
    bytes.iter().position(|&b| b == 0).map(|end| &bytes[..end])
}

/// `bytes` when they are one NUL-terminated string and nothing more (the name ending a
/// Describe or Close: PostgreSQL refuses bytes after it with 08P01 before acting on it).
pub(super) fn only_cstr(bytes: &[u8]) -> Option<&[u8]> {
    cstr(bytes).filter(|s| s.len() + 1 == bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tracker::TxTracker;

    const PARSE_S1: &[u8] = b"s1\0select 1\0\0\0";

    /// A Prepared fed the way the relay feeds it, with the tracker's counts.
    #[derive(Default)]
    struct Fed {
        p: Prepared,
        t: TxTracker,
    }

    impl Fed {
        fn on_client(&mut self, tag: u8, body: Option<&[u8]>) {
            self.p.on_client(tag, body, self.t.syncs_sent());
            self.t.on_client(tag);
        }
        fn on_server(&mut self, tag: u8) {
            self.t.on_server(tag, b"I");
            self.p.on_server(tag, None, self.t.readies());
        }
        fn completed(&mut self, command_tag: &[u8]) {
            self.t.on_server(backend::COMMAND_COMPLETE, command_tag);
            let readies = self.t.readies();
            self.p
                .on_server(backend::COMMAND_COMPLETE, Some(command_tag), readies);
        }
        fn none_open(&self) -> bool {
            self.p.none_open()
        }
    }

    fn closed(p: &mut Fed, name: &[u8]) {
        let mut body = vec![b'S'];
        body.extend_from_slice(name);
        body.push(0);
        p.on_client(frontend::CLOSE, Some(&body));
    }

    #[test]
    fn named_statements_are_open_until_their_close_is_confirmed() {
        let mut p = Fed::default();
        p.on_client(frontend::PARSE, Some(b"\0select 1\0\0\0"));
        assert!(p.none_open(), "the unnamed statement is not tracked");
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        p.on_client(frontend::PARSE, Some(b"s2\0select 2\0\0\0"));
        p.on_client(frontend::CLOSE, Some(b"Pportal\0"));
        closed(&mut p, b"s1");
        closed(&mut p, b"s2");
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::CLOSE_COMPLETE); // the portal's
        p.on_server(backend::CLOSE_COMPLETE); // s1's
        assert!(!p.none_open(), "s2's Close is not answered yet");
        p.on_server(backend::CLOSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(p.none_open());
    }

    #[test]
    fn a_close_skipped_after_an_error_leaves_the_statement_open() {
        let mut p = Fed::default();
        // Parse, Bind, Execute (fails), Close, Sync; then, pipelined, Close + Sync again.
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        closed(&mut p, b"s1");
        p.on_client(frontend::SYNC, None);
        closed(&mut p, b"s1");
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::ERROR_RESPONSE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(!p.none_open(), "the first Close was skipped");
        p.on_server(backend::CLOSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(p.none_open(), "the second one closed it");
    }

    #[test]
    fn a_parse_sent_behind_a_close_of_its_name_keeps_it_open() {
        let mut p = Fed::default();
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        closed(&mut p, b"s1");
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::PARSE_COMPLETE);
        p.on_server(backend::CLOSE_COMPLETE);
        p.on_server(backend::PARSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(!p.none_open(), "parsed again after its Close");
        closed(&mut p, b"s1");
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::CLOSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(p.none_open());
    }

    #[test]
    fn a_streamed_parse_is_named_from_its_first_bytes() {
        let mut p = Fed::default();
        p.on_client(frontend::PARSE, None);
        p.p.on_chunk(b"", false);
        p.p.on_chunk(b"\0select 1 where 1 in (0, 1", false);
        p.p.on_chunk(b", 2)\0\0\0", true);
        assert!(p.none_open(), "a large unnamed statement is not tracked");
        p.on_client(frontend::PARSE, None);
        p.p.on_chunk(b"bi", false);
        p.p.on_chunk(b"g\0select 1 where", false);
        p.p.on_chunk(b" true\0\0\0", true);
        assert_eq!(p.p.names.keys().next().map(|n| &n[..]), Some(&b"big"[..]));
        // No NUL in the first NAME_LIMIT bytes: not a name pgporter can follow.
        let mut q = Fed::default();
        q.on_client(frontend::PARSE, None);
        q.p.on_chunk(&[b'x'; NAME_LIMIT + 1], false);
        assert!(!q.none_open());
    }

    #[test]
    fn a_malformed_parse_keeps_the_connection() {
        let mut p = Fed::default();
        p.on_client(frontend::PARSE, Some(b"no nul"));
        assert!(!p.none_open());
    }

    #[test]
    fn syncs_the_server_ignores_do_not_delay_a_close() {
        // Parse, Bind, Execute (a COPY), Sync | CopyInResponse (the Sync ignored) | Sync
        // (in copy-in mode, ignored), CopyDone, Close, Sync.
        let mut p = Fed::default();
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        p.on_client(frontend::BIND, None);
        p.on_client(frontend::EXECUTE, None);
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::COPY_IN_RESPONSE);
        p.on_client(frontend::SYNC, None);
        p.on_client(frontend::COPY_DONE, None);
        closed(&mut p, b"s1");
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::COMMAND_COMPLETE);
        p.on_server(backend::CLOSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(p.none_open());
    }

    #[test]
    fn discard_all_drops_the_names_of_earlier_batches() {
        let mut p = Fed::default();
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        p.on_client(frontend::PARSE, Some(b"bad"));
        p.on_client(frontend::SYNC, None);
        p.on_client(frontend::QUERY, None);
        p.on_server(backend::PARSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(!p.none_open());
        p.completed(b"DISCARD ALL\0");
        p.on_server(backend::READY_FOR_QUERY);
        assert!(p.none_open(), "DISCARD ALL dropped them");
        // A Parse in the batch of a DEALLOCATE ALL may come after it: it stays.
        p.on_client(frontend::PARSE, Some(b"\0deallocate all\0\0\0"));
        p.on_client(frontend::PARSE, Some(PARSE_S1));
        p.on_client(frontend::SYNC, None);
        p.on_server(backend::PARSE_COMPLETE);
        p.completed(b"DEALLOCATE ALL\0");
        p.on_server(backend::PARSE_COMPLETE);
        p.on_server(backend::READY_FOR_QUERY);
        assert!(!p.none_open());
        p.on_client(frontend::QUERY, None);
        p.completed(b"DEALLOCATE\0");
        p.on_server(backend::READY_FOR_QUERY);
        assert!(
            !p.none_open(),
            "DEALLOCATE of one name: which one is not known"
        );
        p.on_client(frontend::QUERY, None);
        p.completed(b"DEALLOCATE ALL\0");
        assert!(p.none_open());
    }
}

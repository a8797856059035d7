//! Transaction bookkeeping across both directions of the relay: is the server connection
//! reusable, and is everything the client sent answered?

use crate::protocol::scan::Flow;
use crate::protocol::{backend, frontend};
use crate::stats::Meter;

/// Counts Sync points (Query, Sync, FunctionCall) against ReadyForQuery, and follows COPY IN:
/// PostgreSQL ignores Sync (and Flush) messages that arrive during copy-in mode, so a Sync the
/// client pipelined behind the Execute / Query that started a COPY FROM STDIN (tokio-postgres
/// does) is never answered and must not be waited for.
///
/// The count is a model of the server, kept from both directions. Where the model cannot know
/// what the server did (a copy that failed while the client had sent Syncs inside it), or sees
/// an answer it did not expect, it says so ([`TxTracker::lost`]): such a connection is never
/// reused, and nothing waits on its count.
#[derive(Debug, Clone)]
pub struct TxTracker {
    /// Sync points sent and not yet answered by ReadyForQuery.
    outstanding: u32,
    /// Extended-protocol messages sent since the last Sync (or simple Query).
    unsynced: bool,
    /// Queries / FunctionCalls sent behind extended-protocol messages without a Sync between
    /// (asyncpg's Parse, Describe, Flush, then a simple Query), not yet all answered. The
    /// server runs them and is then idle, unless an extended message before them failed:
    /// then it skips them up to the next Sync, which this side cannot tell from an error of
    /// their own.
    behind_batch: u32,
    /// An extended message failed with nothing else due: the server skips what follows, a
    /// Query or FunctionCall included (unanswered), up to the next Sync.
    skipping: bool,
    /// Status byte of the last ReadyForQuery ('I', 'T' or 'E').
    status: u8,
    /// Syncs sent since the last Query / Execute, before any CopyDone / CopyFail: the ones
    /// the server ignores if that statement turns out to start a COPY IN.
    syncs_since_start: u32,
    /// Counting `syncs_since_start` (stops at CopyDone / CopyFail).
    counting: bool,
    /// The client is in copy-in mode (CopyInResponse seen, CopyDone / CopyFail not yet sent):
    /// its Syncs are not counted.
    copy_in: bool,
    /// The server is in copy-in mode as far as its own messages say (CopyInResponse seen, not
    /// yet followed by CommandComplete, ErrorResponse or ReadyForQuery).
    server_copy: bool,
    /// Syncs sent in copy-in mode (not counted) since the last CopyInResponse.
    uncounted: u32,
    /// CopyDone / CopyFail messages sent before the CopyInResponse they end arrived.
    early_ends: u32,
    /// The server failed a copy the client had not ended: its CopyDone / CopyFail is dropped.
    stray_end: bool,
    /// A Query / Execute was sent after an early copy end: `syncs_since_start` no longer
    /// counts the Syncs of the copy's own statement.
    started_after_end: bool,
    /// The model no longer knows how many answers are due.
    lost: bool,
    /// The client sent something since the last ReadyForQuery (what the watchdog goes by once
    /// the count is lost).
    asked: bool,
    /// A request started on an idle server since [`TxTracker::take_started`] last looked.
    started: bool,
    /// A COPY IN ran: the count leaned on guesses about which Syncs the server ignored.
    copied: bool,
    /// Sync points counted so far (less those the server turned out to ignore), and
    /// ReadyForQuery messages received: the n-th ReadyForQuery answers the n-th sync point.
    syncs: u64,
    readies: u64,
    /// Where query/transaction counts and times go (None: not counted).
    meter: Option<Meter>,
}

impl Default for TxTracker {
    fn default() -> Self {
        TxTracker {
            outstanding: 0,
            unsynced: false,
            behind_batch: 0,
            skipping: false,
            status: b'I',
            syncs_since_start: 0,
            counting: false,
            copy_in: false,
            server_copy: false,
            uncounted: 0,
            early_ends: 0,
            stray_end: false,
            started_after_end: false,
            lost: false,
            asked: false,
            started: false,
            copied: false,
            syncs: 0,
            readies: 0,
            meter: None,
        }
    }
}

impl TxTracker {
    /// A tracker that also counts queries, transactions and bytes into `meter`.
    pub fn metered(meter: Meter) -> Self {
        TxTracker {
            meter: Some(meter),
            ..TxTracker::default()
        }
    }

    /// A sync point goes out: the clock starts if the server was idle (one clock read per
    /// request burst, not per message).
    fn request_started(&mut self) {
        if self.outstanding == 0 {
            self.started = true;
            if let Some(m) = &mut self.meter {
                m.request_started();
            }
        }
    }

    /// An extended-protocol message goes out: on an idle server it opens a transaction (an
    /// implicit one lasts until the Sync, however long the client takes to send it).
    fn batch_started(&mut self) {
        if !self.unsynced && self.outstanding == 0 {
            if let Some(m) = &mut self.meter {
                m.xact_started();
            }
        }
    }

    /// Count relayed bytes (received from the client, sent to it).
    pub(super) fn bytes(&mut self, received: u64, sent: u64) {
        if let Some(m) = &self.meter {
            m.pool.bytes(received, sent);
        }
    }

    /// Will the server answer a Sync sent now? (Not in copy-in mode.)
    pub(super) fn sync_counts(&self) -> bool {
        !self.copy_in
    }

    pub(super) fn on_client(&mut self, tag: u8) -> Flow {
        // A Flush asks for nothing that ReadyForQuery would answer.
        if tag != frontend::TERMINATE && tag != frontend::FLUSH {
            self.asked = true;
        }
        match tag {
            frontend::TERMINATE => return Flow::StopBefore,
            // Skipped by the server: no answer comes.
            frontend::QUERY | frontend::FUNCTION_CALL if self.skipping => {}
            frontend::QUERY | frontend::FUNCTION_CALL => {
                self.request_started();
                self.outstanding += 1;
                self.syncs += 1;
                if self.unsynced {
                    // It ends the batch: answered, it leaves the server idle (no Sync due).
                    self.unsynced = false;
                    self.behind_batch += 1;
                }
                self.start();
            }
            frontend::SYNC => {
                self.unsynced = false;
                self.skipping = false;
                if self.sync_counts() {
                    self.request_started();
                    self.outstanding += 1;
                    self.syncs += 1;
                    if self.counting {
                        self.syncs_since_start += 1;
                    }
                } else {
                    self.uncounted += 1;
                }
            }
            frontend::EXECUTE => {
                self.batch_started();
                self.unsynced = true;
                self.start();
            }
            frontend::PARSE | frontend::BIND | frontend::DESCRIBE | frontend::CLOSE => {
                self.batch_started();
                self.unsynced = true;
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                if self.copy_in {
                    self.copy_in = false;
                } else if self.stray_end {
                    self.stray_end = false;
                } else {
                    self.early_ends += 1;
                }
                self.counting = false;
            }
            _ => {}
        }
        Flow::Continue
    }

    /// A Flush with a body: PostgreSQL refuses it (08P01 invalid message format) and, as
    /// after any failed extended-protocol message, skips to the next Sync: a batch is open.
    pub(super) fn on_flush_with_body(&mut self) -> Flow {
        self.asked = true;
        self.batch_started();
        self.unsynced = true;
        Flow::Continue
    }

    fn start(&mut self) {
        self.syncs_since_start = 0;
        self.counting = true;
        self.started_after_end |= self.early_ends > 0;
    }

    /// A server message; returns how many already-sent Syncs the server will ignore
    /// (non-zero only at a CopyInResponse).
    pub(super) fn on_server(&mut self, tag: u8, body: &[u8]) -> u32 {
        match tag {
            backend::READY_FOR_QUERY => {
                self.server_copy = false;
                self.asked = false;
                self.readies += 1;
                match self.outstanding.checked_sub(1) {
                    Some(n) => self.outstanding = n,
                    None => self.lose("ReadyForQuery answering nothing sent"),
                }
                if self.outstanding == 0 {
                    // Everything sent is answered: no CopyInResponse can claim an earlier end.
                    self.early_ends = 0;
                    self.started_after_end = false;
                    self.behind_batch = 0;
                }
                self.status = body.first().copied().unwrap_or(b'E');
                let (idle, more) = (self.status == b'I', self.outstanding > 0);
                if let Some(m) = &mut self.meter {
                    m.ready_for_query(idle, more);
                }
                0
            }
            backend::COPY_IN_RESPONSE => {
                if self.early_ends > 0 && self.started_after_end {
                    // The client ended this copy and sent more statements before it heard
                    // that it started: which of its Syncs the server ignores is not known here.
                    self.lose("a copy ended early with statements pipelined behind it");
                }
                let ignored = self.syncs_since_start;
                self.outstanding = self.outstanding.saturating_sub(ignored);
                self.syncs = self.syncs.saturating_sub(ignored.into());
                // An extended-protocol COPY whose Sync the server ignores: once it completes,
                // the server still waits for a Sync to end the implicit transaction.
                self.unsynced |= ignored > 0;
                self.syncs_since_start = 0;
                self.server_copy = true;
                self.copied = true;
                self.uncounted = 0;
                if self.early_ends > 0 {
                    // The client ended this copy before it heard that it started.
                    self.early_ends -= 1;
                } else {
                    self.copy_in = true;
                }
                ignored
            }
            backend::COMMAND_COMPLETE => {
                self.server_copy = false;
                0
            }
            backend::ERROR_RESPONSE if self.server_copy => {
                // The copy failed and the server left copy-in mode, at a point in the client's
                // stream this side cannot see: a Sync sent inside the copy may or may not be
                // answered.
                self.server_copy = false;
                if self.uncounted > 0 {
                    self.lose("a copy failed with Syncs sent inside it");
                }
                self.stray_end = self.copy_in;
                self.copy_in = false;
                // A copy an unsynced Execute started: the server now skips to the next Sync,
                // the Queries sent behind the batch included (sent already: which of them is
                // not known here; sent later: not answered).
                if self.behind_batch > 0 {
                    self.lose("a copy failed with simple queries pipelined behind its batch");
                }
                self.skipping = self.unsynced && self.outstanding == 0;
                0
            }
            backend::ERROR_RESPONSE if self.behind_batch > 0 => {
                // A failed extended message makes the server skip the Queries behind it (to the
                // next Sync); an error of theirs does not: which one this is is not known.
                self.lose("an error with simple queries pipelined behind an unsynced batch");
                0
            }
            backend::ERROR_RESPONSE => {
                // Nothing else due: this answers an extended message sent since the last Sync.
                self.skipping = self.unsynced && self.outstanding == 0;
                0
            }
            _ => 0,
        }
    }

    fn lose(&mut self, why: &'static str) {
        if !self.lost {
            tracing::debug!(
                why,
                "lost count of the server's answers; its connection will be closed"
            );
        }
        self.lost = true;
    }

    /// True when the server is idle outside a transaction with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.answered() && !self.unsynced && self.status == b'I' && !self.lost
    }

    /// Extended-protocol messages were sent since the last Sync.
    pub fn mid_batch(&self) -> bool {
        self.unsynced
    }

    /// The count of answers due cannot be trusted (see the type's doc).
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The count is exact: one ReadyForQuery per Query, FunctionCall and Sync, which holds
    /// unless a COPY IN ran (where the server ignores Syncs and the count rests on which ones)
    /// or the count was lost.
    pub fn exact(&self) -> bool {
        !self.lost && !self.copied
    }

    /// Nothing sent is still unanswered. A COPY IN in progress is not: its statement's answer
    /// is still to come, though the Sync the client sent behind it (which the server
    /// ignores) is no longer counted.
    pub(super) fn answered(&self) -> bool {
        self.outstanding == 0 && !self.copy_in && !self.server_copy
    }

    /// Whether a request started on an idle server since the last call (SHOW CLIENTS'
    /// request_time follows it).
    pub(super) fn take_started(&mut self) -> bool {
        std::mem::take(&mut self.started)
    }

    /// Nothing sent since the last ReadyForQuery: the server sits where that left it. (With
    /// requests pipelined it may still be busy; once the count is lost this is the best
    /// guess, and it errs towards not ending a session.)
    pub(super) fn quiet(&self) -> bool {
        !self.asked
    }

    /// When the request in progress started (None: nothing in progress or not metered).
    pub(super) fn busy_since(&self) -> Option<tokio::time::Instant> {
        self.meter.as_ref().and_then(|m| m.busy_since())
    }

    /// When the transaction in progress began (None: none, or not metered).
    pub(super) fn xact_since(&self) -> Option<tokio::time::Instant> {
        self.meter.as_ref().and_then(|m| m.xact_since())
    }

    /// Sync points sent that the server answers (Query, FunctionCall, Sync): a message sent
    /// now is answered before ReadyForQuery number `syncs_sent() + 1`.
    pub(super) fn syncs_sent(&self) -> u64 {
        self.syncs
    }

    /// ReadyForQuery messages received.
    pub(super) fn readies(&self) -> u64 {
        self.readies
    }

    /// The last ReadyForQuery status byte.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The transaction status after pgporter itself made the server answer (see
    /// [`super::relay`]'s refusal inside a transaction).
    pub(super) fn set_status(&mut self, status: u8) {
        self.status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends(t: &mut TxTracker, tags: &[u8]) {
        for &tag in tags {
            t.on_client(tag);
        }
    }

    #[test]
    fn a_simple_query_behind_an_unsynced_batch_ends_it() {
        // asyncpg's prepare: Parse, Describe, Flush (no Sync); later a simple Query.
        let mut t = TxTracker::default();
        sends(
            &mut t,
            &[frontend::PARSE, frontend::DESCRIBE, frontend::FLUSH],
        );
        assert!(t.mid_batch() && !t.is_idle());
        t.on_client(frontend::QUERY);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle(), "idle after the Query's answer");
        // With an error pipelined in front: the Query may have been skipped.
        sends(
            &mut t,
            &[
                frontend::PARSE,
                frontend::BIND,
                frontend::EXECUTE,
                frontend::QUERY,
                frontend::SYNC,
            ],
        );
        t.on_server(backend::ERROR_RESPONSE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.lost() && !t.is_idle());
    }

    #[test]
    fn queries_the_server_skips_after_a_failed_batch_are_not_awaited() {
        // Parse fails, seen through a Flush; a Query sent then is skipped, the Sync answered.
        let mut t = TxTracker::default();
        sends(&mut t, &[frontend::PARSE, frontend::FLUSH]);
        t.on_server(backend::ERROR_RESPONSE, &[]);
        sends(
            &mut t,
            &[frontend::QUERY, frontend::FUNCTION_CALL, frontend::SYNC],
        );
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle() && t.exact());
        // After the Sync, Queries are answered again.
        t.on_client(frontend::QUERY);
        assert!(!t.answered());
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
        // An error of a Query pipelined in front of a batch is not the batch's.
        sends(&mut t, &[frontend::QUERY, frontend::PARSE, frontend::FLUSH]);
        t.on_server(backend::ERROR_RESPONSE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        t.on_client(frontend::QUERY);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.answered() && !t.lost());
    }

    #[test]
    fn queries_after_a_failed_extended_copy_are_not_awaited() {
        // Parse, Bind, Execute of a COPY ... FROM STDIN, Flush; the copy fails; a Query sent
        // before the Sync is skipped by the server.
        let mut t = TxTracker::default();
        let copy = [
            frontend::PARSE,
            frontend::BIND,
            frontend::EXECUTE,
            frontend::FLUSH,
        ];
        sends(&mut t, &copy);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        sends(&mut t, &[frontend::COPY_DATA, frontend::COPY_FAIL]);
        t.on_server(backend::ERROR_RESPONSE, &[]);
        sends(&mut t, &[frontend::QUERY, frontend::SYNC]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.answered() && !t.lost());
        // The Query sent before the error came: its fate is not known.
        sends(&mut t, &copy);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        sends(
            &mut t,
            &[frontend::COPY_FAIL, frontend::QUERY, frontend::SYNC],
        );
        t.on_server(backend::ERROR_RESPONSE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.lost() && t.quiet());
    }

    #[test]
    fn a_lone_flush_starts_no_batch() {
        let mut t = TxTracker::default();
        sends(&mut t, &[frontend::QUERY, frontend::FLUSH]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
    }

    #[test]
    fn sync_pipelined_behind_copy_in_is_not_awaited() {
        // tokio-postgres copy_in: Bind, Execute, Sync | CopyInResponse | CopyData, CopyDone, Sync.
        let mut t = TxTracker::default();
        sends(&mut t, &[frontend::BIND, frontend::EXECUTE, frontend::SYNC]);
        assert_eq!(t.on_server(backend::COPY_IN_RESPONSE, &[]), 1);
        // The Sync is not awaited, but the copy is: the server is not idle (transaction mode
        // released it here, and the client's rows went to the next connection).
        assert!(!t.answered() && !t.is_idle());
        t.on_client(frontend::COPY_DATA);
        t.on_client(frontend::COPY_DONE);
        assert!(
            !t.is_idle(),
            "CopyDone sent, its CommandComplete not yet come"
        );
        t.on_server(backend::COMMAND_COMPLETE, b"COPY 1\0");
        assert!(
            !t.is_idle(),
            "the copy is done, the Sync that ends it not yet sent"
        );
        t.on_client(frontend::SYNC);
        assert!(!t.answered());
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
    }

    #[test]
    fn failed_copy_keeps_its_syncs() {
        let mut t = TxTracker::default();
        sends(&mut t, &[frontend::BIND, frontend::EXECUTE, frontend::SYNC]);
        // Execute failed: no CopyInResponse; the client gives up with CopyFail + Sync.
        t.on_server(backend::READY_FOR_QUERY, b"I");
        t.on_client(frontend::COPY_FAIL);
        t.on_client(frontend::SYNC);
        assert!(!t.answered());
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
    }

    #[test]
    fn simple_copy_and_syncs_inside_copy_mode() {
        let mut t = TxTracker::default();
        t.on_client(frontend::QUERY);
        assert_eq!(t.on_server(backend::COPY_IN_RESPONSE, &[]), 0);
        t.on_client(frontend::SYNC); // ignored by the server in copy-in mode
        t.on_client(frontend::COPY_DONE);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
    }

    #[test]
    fn a_failed_copy_the_client_never_ended_does_not_swallow_later_syncs() {
        // The server rejects a row and leaves copy mode; the client never sends CopyDone and
        // pipelines two extended queries, then leaves before their answers.
        let mut t = TxTracker::default();
        t.on_client(frontend::QUERY);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        t.on_client(frontend::COPY_DATA);
        t.on_server(backend::ERROR_RESPONSE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
        sends(
            &mut t,
            &[
                frontend::PARSE,
                frontend::BIND,
                frontend::EXECUTE,
                frontend::SYNC,
            ],
        );
        assert!(!t.is_idle() && !t.answered());
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
        // Its late CopyDone is dropped by the server and ends nothing.
        t.on_client(frontend::COPY_DONE);
        t.on_client(frontend::QUERY);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        assert!(!t.sync_counts(), "the next copy is a copy");
    }

    #[test]
    fn syncs_inside_a_copy_that_then_fails_lose_the_count() {
        let mut t = TxTracker::default();
        sends(&mut t, &[frontend::BIND, frontend::EXECUTE, frontend::SYNC]);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        sends(
            &mut t,
            &[
                frontend::COPY_DATA,
                frontend::SYNC,
                frontend::COPY_DONE,
                frontend::SYNC,
            ],
        );
        // Did the server read that inner Sync before or after it failed? Unknowable.
        t.on_server(backend::ERROR_RESPONSE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.lost() && !t.is_idle());
    }

    #[test]
    fn two_copies_in_one_query() {
        let mut t = TxTracker::default();
        t.on_client(frontend::QUERY);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        t.on_client(frontend::COPY_DONE);
        t.on_server(backend::COMMAND_COMPLETE, &[]);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        t.on_client(frontend::SYNC); // ignored by the server in copy-in mode
        t.on_client(frontend::COPY_DONE);
        t.on_server(backend::COMMAND_COMPLETE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.answered() && t.is_idle());
    }

    #[test]
    fn an_answer_to_nothing_loses_the_count() {
        let mut t = TxTracker::default();
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.lost() && !t.is_idle());
    }

    #[test]
    fn statements_pipelined_behind_an_early_ended_copy_lose_the_count() {
        // Query(COPY) CopyData CopyDone Parse Bind Execute Sync, all before CopyInResponse.
        let mut t = TxTracker::default();
        t.on_client(frontend::QUERY);
        sends(&mut t, &[frontend::COPY_DATA, frontend::COPY_DONE]);
        sends(
            &mut t,
            &[
                frontend::PARSE,
                frontend::BIND,
                frontend::EXECUTE,
                frontend::SYNC,
            ],
        );
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        assert!(t.lost() && !t.is_idle());
    }

    #[test]
    fn an_early_ended_copy_alone_keeps_the_count() {
        let mut t = TxTracker::default();
        t.on_client(frontend::QUERY);
        sends(&mut t, &[frontend::COPY_DATA, frontend::COPY_DONE]);
        t.on_server(backend::COPY_IN_RESPONSE, &[]);
        t.on_server(backend::COMMAND_COMPLETE, &[]);
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(!t.lost() && t.is_idle());
    }
}

//! Transaction bookkeeping across both directions of the relay: is the server connection
//! reusable, and is everything the client sent answered?

use crate::protocol::scan::Flow;
use crate::protocol::{backend, frontend};
use crate::stats::Meter;

/// Counts Sync points (Query, Sync, FunctionCall) against ReadyForQuery, and follows COPY IN:
/// PostgreSQL ignores Sync (and Flush) messages that arrive during copy-in mode, so a Sync the
/// client pipelined behind the Execute / Query that started a COPY FROM STDIN (tokio-postgres
/// does) is never answered and must not be waited for.
#[derive(Debug, Clone)]
pub struct TxTracker {
    /// Sync points sent and not yet answered by ReadyForQuery.
    outstanding: u32,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    /// Status byte of the last ReadyForQuery ('I', 'T' or 'E').
    status: u8,
    /// Syncs sent since the last Query / Execute, before any CopyDone / CopyFail: the ones
    /// the server ignores if that statement turns out to start a COPY IN.
    syncs_since_start: u32,
    /// Counting `syncs_since_start` (stops at CopyDone / CopyFail).
    counting: bool,
    /// The server is in copy-in mode (CopyInResponse seen, CopyDone / CopyFail not yet sent).
    copy_in: bool,
    /// Where query/transaction counts and times go (None: not counted).
    meter: Option<Meter>,
}

impl Default for TxTracker {
    fn default() -> Self {
        TxTracker {
            outstanding: 0,
            unsynced: false,
            status: b'I',
            syncs_since_start: 0,
            counting: false,
            copy_in: false,
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
            if let Some(m) = &mut self.meter {
                m.request_started();
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
        match tag {
            frontend::TERMINATE => return Flow::StopBefore,
            frontend::QUERY | frontend::FUNCTION_CALL => {
                self.request_started();
                self.outstanding += 1;
                self.start();
            }
            frontend::SYNC => {
                self.unsynced = false;
                if self.sync_counts() {
                    self.request_started();
                    self.outstanding += 1;
                    if self.counting {
                        self.syncs_since_start += 1;
                    }
                }
            }
            frontend::EXECUTE => {
                self.unsynced = true;
                self.start();
            }
            frontend::PARSE
            | frontend::BIND
            | frontend::DESCRIBE
            | frontend::CLOSE
            | frontend::FLUSH => self.unsynced = true,
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                self.copy_in = false;
                self.counting = false;
            }
            _ => {}
        }
        Flow::Continue
    }

    fn start(&mut self) {
        self.syncs_since_start = 0;
        self.counting = true;
    }

    /// A server message; returns how many already-sent Syncs the server will ignore
    /// (non-zero only at a CopyInResponse).
    pub(super) fn on_server(&mut self, tag: u8, body: &[u8]) -> u32 {
        match tag {
            backend::READY_FOR_QUERY => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.status = body.first().copied().unwrap_or(b'E');
                let (idle, more) = (self.status == b'I', self.outstanding > 0);
                if let Some(m) = &mut self.meter {
                    m.ready_for_query(idle, more);
                }
                0
            }
            backend::COPY_IN_RESPONSE => {
                let ignored = self.syncs_since_start;
                self.outstanding = self.outstanding.saturating_sub(ignored);
                self.syncs_since_start = 0;
                // Still counting means the client has not ended the copy yet.
                self.copy_in = self.counting;
                ignored
            }
            _ => 0,
        }
    }

    /// True when the server is idle outside a transaction with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.outstanding == 0 && !self.unsynced && self.status == b'I'
    }

    /// Extended-protocol messages were sent since the last Sync.
    pub fn mid_batch(&self) -> bool {
        self.unsynced
    }

    /// Nothing sent is still unanswered.
    pub(super) fn answered(&self) -> bool {
        self.outstanding == 0
    }

    /// The last ReadyForQuery status byte.
    pub fn status(&self) -> u8 {
        self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_pipelined_behind_copy_in_is_not_awaited() {
        // tokio-postgres copy_in: Bind, Execute, Sync | CopyInResponse | CopyData, CopyDone, Sync.
        let mut t = TxTracker::default();
        for tag in [frontend::BIND, frontend::EXECUTE, frontend::SYNC] {
            t.on_client(tag);
        }
        assert_eq!(t.on_server(backend::COPY_IN_RESPONSE, &[]), 1);
        for tag in [frontend::COPY_DATA, frontend::COPY_DONE, frontend::SYNC] {
            t.on_client(tag);
        }
        assert!(!t.answered());
        t.on_server(backend::READY_FOR_QUERY, b"I");
        assert!(t.is_idle());
    }

    #[test]
    fn failed_copy_keeps_its_syncs() {
        let mut t = TxTracker::default();
        for tag in [frontend::BIND, frontend::EXECUTE, frontend::SYNC] {
            t.on_client(tag);
        }
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
}

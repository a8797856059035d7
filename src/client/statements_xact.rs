//! The audit's side of the transaction model (`xact.rs`): which transaction each
//! statement ran in, and the `transaction_end` events, queued after the statement events of
//! the transactions they end (or the end carried by the event of a statement that was its
//! transaction alone).

use std::sync::Arc;

use super::{InFlight, StatementAudit, SKIPPED};
use crate::audit::{AuditEvent, TransactionEnd, TxHints};

impl StatementAudit {
    /// An answer to the statement at the front (or to a message pgporter does not follow, such
    /// as a failed Parse): the transaction it ran in.
    pub(super) fn answered(&mut self) {
        let Self {
            inflight, xacts, ..
        } = self;
        match inflight.front_mut() {
            Some(InFlight::Stmt {
                text, xact, seq, ..
            }) => {
                let (write, tx) = text
                    .as_ref()
                    .map_or((false, TxHints::default()), |t| (t.write, t.tx));
                let n = xacts.answer(write, &tx, Some(*seq));
                *xact = Some(xact.map_or((n, n), |(first, _)| (first, n)));
            }
            _ => {
                xacts.answer(false, &TxHints::default(), None);
            }
        }
    }

    /// A CommandComplete tag, for the transaction model.
    pub(super) fn xact_tag(&mut self, tag: &[u8]) {
        let Self {
            inflight, xacts, ..
        } = self;
        match inflight.front_mut() {
            Some(InFlight::Stmt { text, ends, .. }) => {
                let tx = text.as_ref().map_or_else(TxHints::default, |t| t.tx);
                xacts.tag(tag, &tx, *ends);
                if tag == b"COMMIT" || tag == b"ROLLBACK" {
                    *ends += 1;
                }
            }
            _ => xacts.tag(tag, &TxHints::default(), 0),
        }
    }

    /// A statement completed by ReadyForQuery without an answer of its own: a simple Query or
    /// FunctionCall ran in a transaction all the same; an Execute skipped after an error
    /// belongs to the failed one (it changed nothing).
    pub(super) fn place(&mut self, item: &mut InFlight) {
        if let InFlight::Stmt {
            xact: xact @ None,
            extended,
            error,
            text,
            seq,
            ..
        } = item
        {
            let (write, tx) = text
                .as_ref()
                .map_or((false, TxHints::default()), |t| (t.write, t.tx));
            let ran = !*extended && error.as_deref() != Some(SKIPPED);
            if ran || self.xacts.open().is_some() {
                let n = self.xacts.answer(write, &tx, Some(*seq));
                *xact = Some((n, n));
            }
        }
    }

    /// An answered Execute that began the open transaction (nothing else ran in it), with
    /// the Sync that ends an implicit one already sent: how it ends is one answer away, and
    /// its event waits for it (see `finish_front`).
    pub(super) fn waits_for_sync(&self, stmt: &InFlight) -> bool {
        let InFlight::Stmt {
            text: Some(text),
            xact: Some((first, last)),
            seq,
            ..
        } = stmt
        else {
            return false;
        };
        text.log
            && first == last
            && self.xacts.open() == Some(*first)
            && self.xacts.only() == Some(*seq)
            && matches!(self.inflight.front(), Some(InFlight::Sync))
    }

    /// Queue a transaction_end for each logged transaction that ended, after the statement
    /// events in it (a simple Query's event is queued at its ReadyForQuery).
    pub(super) fn write_ended(&mut self) {
        if !self.xacts.has_ended()
            || matches!(
                self.inflight.front(),
                Some(InFlight::Stmt {
                    extended: false,
                    xact: Some(_),
                    ..
                })
            )
        {
            return;
        }
        let Self {
            xacts,
            events,
            session,
            pid,
            ..
        } = self;
        for e in xacts.take_ended() {
            events.push_back(AuditEvent::TransactionEnd(TransactionEnd {
                session: Arc::clone(session),
                backend_pid: *pid,
                xact: e.xact,
                outcome: e.outcome.as_str(),
                savepoint_rollbacks: e.savepoint_rollbacks,
            }));
        }
    }
}

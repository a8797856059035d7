//! Which transaction each audited statement ran in, and how that transaction ended: the
//! audit log's answer to "did this change stick?".
//!
//! A model of the server's transactions, kept in the order the server answers, from what the
//! relay reads anyway: command tags, ErrorResponse, ReadyForQuery's status byte (and, to read
//! an ambiguous `ROLLBACK` tag, what [`crate::audit::tx_hints`] found in the statement's text).
//! Transactions are numbered per session, every one counted (logged or not); one
//! `transaction_end` is written for each that had a logged statement that may write, unless
//! that statement was the whole transaction: its event then says how it ended (`xact_end`).

use crate::audit::TxHints;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum XactEnd {
    Commit,
    Rollback,
    /// PREPARE TRANSACTION: neither yet (COMMIT PREPARED or ROLLBACK PREPARED decides, maybe
    /// in another session; that statement is logged on its own).
    Prepared,
    /// Not known: the session ended with its end in flight, a ROLLBACK tag pgporter could not
    /// place, or a procedure that may have committed inside rolled back.
    Unknown,
}

impl XactEnd {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            XactEnd::Commit => "commit",
            XactEnd::Rollback => "rollback",
            XactEnd::Prepared => "prepared",
            XactEnd::Unknown => "unknown",
        }
    }
}

/// A transaction that ended, to be written (it had a logged statement that may write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ended {
    pub(super) xact: u64,
    pub(super) outcome: XactEnd,
    /// ROLLBACK TO SAVEPOINT statements that ran in it: with `commit`, the statements
    /// between a SAVEPOINT and its rollback did not stick.
    pub(super) savepoint_rollbacks: u32,
    /// The statement (a Query, Execute or FunctionCall, by number) that every answer in it
    /// came from, if only one did: its event can carry the end (see [`Xacts::take_own`]).
    pub(super) only: Option<u64>,
}

/// The session's transactions as far as the server's answers tell.
#[derive(Debug, Default)]
pub(super) struct Xacts {
    /// The open transaction's number, or the last one's.
    n: u64,
    open: bool,
    /// The open transaction has a logged statement that may write.
    logged: bool,
    /// An error aborted it (an implicit transaction rolls back; a block's COMMIT will say
    /// ROLLBACK).
    failed: bool,
    /// A ROLLBACK tag could not be placed: its outcome is not known.
    unsure: bool,
    /// A CALL ran in it (a procedure may have committed inside).
    called: bool,
    savepoint_rollbacks: u32,
    /// The statement all its answers so far came from, if one did.
    only: Option<u64>,
    /// Ended transactions not yet written.
    ended: Vec<Ended>,
}

impl Xacts {
    /// A session's model that already counted `n` transactions (transaction mode: the
    /// session's earlier server connections).
    pub(super) fn resume(n: u64) -> Xacts {
        Xacts {
            n,
            ..Xacts::default()
        }
    }

    /// Transactions counted so far.
    pub(super) fn count(&self) -> u64 {
        self.n
    }

    /// Whether transaction `n` (the open one, or the last) has a logged statement that may
    /// write.
    pub(super) fn logged_in(&self, n: u64) -> bool {
        n == self.n && self.logged
    }

    /// The statement every answer of the open (or last) transaction came from, if one did.
    pub(super) fn only(&self) -> Option<u64> {
        self.only
    }

    /// The open transaction, if one is open.
    pub(super) fn open(&self) -> Option<u64> {
        self.open.then_some(self.n)
    }

    /// A statement's answer (a command tag, an error): it ran in the open transaction, or in
    /// one it began; `logged`: it is logged and may write; `stmt`: which statement it answers
    /// (None: a message not followed, or not known). Returns that transaction's number.
    pub(super) fn answer(&mut self, logged: bool, hints: &TxHints, stmt: Option<u64>) -> u64 {
        if !self.open {
            self.only = stmt;
            self.n += 1;
            self.open = true;
            self.logged = false;
            self.failed = false;
            self.unsure = false;
            self.called = false;
            self.savepoint_rollbacks = 0;
        } else if self.only != stmt {
            self.only = None;
        }
        self.logged |= logged;
        self.called |= hints.call;
        self.n
    }

    /// A CommandComplete tag, after [`Xacts::answer`]; `ends` counts the COMMIT and ROLLBACK
    /// tags of the same statement text before this one.
    pub(super) fn tag(&mut self, tag: &[u8], hints: &TxHints, ends: u32) {
        match tag {
            b"COMMIT" => self.end(XactEnd::Commit),
            b"PREPARE TRANSACTION" => self.end(XactEnd::Prepared),
            b"ROLLBACK" => match hints.rollback_to(ends) {
                Some(false) => self.end(XactEnd::Rollback),
                Some(true) => {
                    self.savepoint_rollbacks += 1;
                    self.failed = false;
                }
                // Counted as a savepoint's (the transaction goes on): the status at the
                // next ReadyForQuery ends it if it was not.
                None => {
                    self.unsure = true;
                    self.savepoint_rollbacks += 1;
                    self.failed = false;
                }
            },
            _ => {}
        }
    }

    /// An ErrorResponse, after [`Xacts::answer`].
    pub(super) fn error(&mut self) {
        self.failed = true;
    }

    /// ReadyForQuery with `status`.
    pub(super) fn ready(&mut self, status: u8) {
        match status {
            b'I' if self.open => {
                let outcome = if self.unsure || (self.called && self.failed) {
                    XactEnd::Unknown
                } else if self.failed {
                    XactEnd::Rollback
                } else {
                    XactEnd::Commit
                };
                self.end(outcome);
            }
            b'I' => {}
            // A block the model did not see begin (COMMIT AND CHAIN, ROLLBACK AND CHAIN).
            _ => {
                self.answer(false, &TxHints::default(), None);
                self.failed |= status == b'E';
            }
        }
    }

    /// The session ended (its server connection is closed, which rolls back an open
    /// transaction); `in_flight`: requests were still unanswered, one may have ended it.
    pub(super) fn abandon(&mut self, in_flight: bool) {
        if self.open {
            self.end(if in_flight {
                XactEnd::Unknown
            } else {
                XactEnd::Rollback
            });
        }
    }

    fn end(&mut self, outcome: XactEnd) {
        if self.open && self.logged {
            let outcome = match outcome {
                XactEnd::Rollback if self.called => XactEnd::Unknown,
                o => o,
            };
            self.ended.push(Ended {
                xact: self.n,
                outcome,
                savepoint_rollbacks: self.savepoint_rollbacks,
                only: self.only,
            });
        }
        self.open = false;
    }

    /// Transactions that ended since the last call, oldest first.
    pub(super) fn take_ended(&mut self) -> impl Iterator<Item = Ended> + '_ {
        self.ended.drain(..)
    }

    /// The end of transaction `n` if it ended, is not yet taken, had answers from statement
    /// `stmt` only and no ROLLBACK TO SAVEPOINT: that statement's event says how it ended, in
    /// place of a transaction_end (one line for an autocommitted statement).
    pub(super) fn take_own(&mut self, n: u64, stmt: u64) -> Option<XactEnd> {
        let i = self
            .ended
            .iter()
            .position(|e| e.xact == n && e.only == Some(stmt) && e.savepoint_rollbacks == 0)?;
        Some(self.ended.remove(i).outcome)
    }

    /// Transactions that ended and are not yet taken.
    pub(super) fn has_ended(&self) -> bool {
        !self.ended.is_empty()
    }
}

#[cfg(test)]
#[path = "xact_tests.rs"]
mod tests;

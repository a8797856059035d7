use super::*;
use crate::audit::tx_hints;
use proptest::prelude::*;

fn plain() -> TxHints {
    TxHints::default()
}

fn ended(x: &mut Xacts) -> Vec<(u64, XactEnd, u32)> {
    x.take_ended()
        .map(|e| (e.xact, e.outcome, e.savepoint_rollbacks))
        .collect()
}

#[test]
fn an_implicit_transaction_commits_unless_an_error_ends_it() {
    let mut x = Xacts::default();
    // insert into t ...  (autocommit)
    assert_eq!(x.answer(true, &plain(), None), 1);
    x.tag(b"INSERT 0 1", &plain(), 0);
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(1, XactEnd::Commit, 0)]);
    // insert ...; select 1/0  (one Query: one implicit transaction)
    assert_eq!(x.answer(true, &plain(), None), 2);
    x.tag(b"INSERT 0 1", &plain(), 0);
    x.answer(true, &plain(), None);
    x.error();
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(2, XactEnd::Rollback, 0)]);
    // A read-only transaction writes nothing (but is counted).
    x.answer(false, &plain(), None);
    x.ready(b'I');
    assert!(ended(&mut x).is_empty());
    assert_eq!(x.count(), 3);
}

#[test]
fn a_transaction_of_one_statement_is_its_statements_own() {
    let mut x = Xacts::default();
    // Statement 7 autocommitted: its event carries the end.
    x.answer(true, &plain(), Some(7));
    x.tag(b"INSERT 0 1", &plain(), 0);
    x.ready(b'I');
    assert_eq!(x.take_own(1, 6), None, "another statement's");
    assert_eq!(x.take_own(1, 7), Some(XactEnd::Commit));
    assert!(ended(&mut x).is_empty(), "taken once");
    // Statements 8 and 9 in one block: neither owns it.
    x.answer(false, &plain(), Some(8));
    x.answer(true, &plain(), Some(9));
    x.tag(b"COMMIT", &plain(), 0);
    x.ready(b'I');
    assert_eq!(x.take_own(2, 9), None);
    assert_eq!(ended(&mut x), [(2, XactEnd::Commit, 0)]);
    // A ROLLBACK TO in it: the transaction_end says how many.
    let to = tx_hints(b"begin; insert into t values (1); rollback to a; commit");
    x.answer(true, &to, Some(10));
    x.tag(b"ROLLBACK", &to, 0);
    x.tag(b"COMMIT", &to, 1);
    x.ready(b'I');
    assert_eq!(x.take_own(3, 10), None);
    assert_eq!(ended(&mut x), [(3, XactEnd::Commit, 1)]);
}

#[test]
fn a_block_ends_with_its_commit_or_rollback_tag() {
    let mut x = Xacts::default();
    for (last, outcome) in [
        (&b"COMMIT"[..], XactEnd::Commit),
        (b"ROLLBACK", XactEnd::Rollback),
    ] {
        x.answer(false, &plain(), None);
        x.tag(b"BEGIN", &plain(), 0);
        x.ready(b'T');
        x.answer(true, &plain(), None);
        x.tag(b"INSERT 0 1", &plain(), 0);
        x.ready(b'T');
        x.answer(false, &plain(), None);
        x.tag(last, &plain(), 0);
        assert!(
            x.has_ended(),
            "written at the tag, before its ReadyForQuery"
        );
        x.ready(b'I');
        assert_eq!(ended(&mut x), [(x.count(), outcome, 0)]);
    }
    // A failed block's COMMIT answers ROLLBACK.
    x.answer(false, &plain(), None);
    x.answer(true, &plain(), None);
    x.error();
    x.ready(b'E');
    x.answer(false, &tx_hints(b"commit"), None);
    x.tag(b"ROLLBACK", &tx_hints(b"commit"), 0);
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(3, XactEnd::Rollback, 0)]);
}

#[test]
fn savepoint_rollbacks_are_counted_and_a_chain_starts_a_new_transaction() {
    let mut x = Xacts::default();
    let to = tx_hints(b"rollback to savepoint a");
    x.answer(true, &plain(), None);
    x.ready(b'T');
    x.answer(false, &to, None);
    x.tag(b"ROLLBACK", &to, 0);
    x.ready(b'T');
    x.answer(false, &plain(), None);
    x.tag(b"COMMIT", &plain(), 0);
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(1, XactEnd::Commit, 1)]);
    // COMMIT AND CHAIN: the chained transaction is the next one.
    x.answer(true, &plain(), None);
    x.tag(b"COMMIT", &plain(), 0);
    x.ready(b'T');
    x.answer(true, &plain(), None);
    x.ready(b'T');
    assert_eq!(ended(&mut x), [(2, XactEnd::Commit, 0)]);
    assert_eq!(x.open(), Some(3));
    // The client leaves inside it, nothing in flight: the closed connection rolls it back.
    x.abandon(false);
    assert_eq!(ended(&mut x), [(3, XactEnd::Rollback, 0)]);
}

#[test]
fn what_cannot_be_known_is_unknown() {
    let mut x = Xacts::default();
    // A COMMIT in flight when the session ended.
    x.answer(true, &plain(), None);
    x.ready(b'T');
    x.abandon(true);
    assert_eq!(ended(&mut x), [(1, XactEnd::Unknown, 0)]);
    // A ROLLBACK tag of a text that could not be read.
    x.answer(true, &plain(), None);
    x.tag(b"ROLLBACK", &TxHints::UNCERTAIN, 0);
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(2, XactEnd::Unknown, 1)]);
    // A procedure that may have committed inside, then an error.
    let call = tx_hints(b"call p()");
    x.answer(true, &call, None);
    x.error();
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(3, XactEnd::Unknown, 0)]);
    // PREPARE TRANSACTION.
    x.answer(true, &plain(), None);
    x.tag(b"PREPARE TRANSACTION", &plain(), 0);
    x.ready(b'I');
    assert_eq!(ended(&mut x), [(4, XactEnd::Prepared, 0)]);
}

/// A statement of the simulated sessions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Write,
    Read,
    Fail,
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackTo,
    Release,
}

fn st() -> impl Strategy<Value = St> {
    prop_oneof![
        3 => Just(St::Write),
        1 => Just(St::Read),
        1 => Just(St::Fail),
        2 => Just(St::Begin),
        1 => Just(St::Commit),
        1 => Just(St::Rollback),
        1 => Just(St::Savepoint),
        1 => Just(St::RollbackTo),
        1 => Just(St::Release),
    ]
}

fn text(sts: &[St]) -> String {
    let words: Vec<&str> = sts
        .iter()
        .map(|s| match s {
            St::Write => "insert into t values (1)",
            St::Read => "select 1",
            St::Fail => "select 1/0",
            St::Begin => "begin",
            St::Commit => "commit",
            St::Rollback => "rollback",
            St::Savepoint => "savepoint a",
            St::RollbackTo => "rollback to savepoint a",
            St::Release => "release a",
        })
        .collect();
    words.join("; ")
}

/// A failed block / open block / savepoints (as indexes into the pending writes).
#[derive(Debug, Default)]
struct Pg {
    block: Option<(bool, Vec<usize>)>,
    pending: Vec<usize>,
    stuck: Vec<bool>,
}

impl Pg {
    /// Run one simple Query of `sts` as PostgreSQL does, telling the model its answers.
    /// `q`: the Query's number; `xact_of` gets each write's transaction and Query.
    fn query(&mut self, q: u64, sts: &[St], x: &mut Xacts, xact_of: &mut Vec<(u64, u64)>) {
        let hints = tx_hints(text(sts).as_bytes());
        let mut ends = 0;
        let mut implicit = false;
        for &s in sts {
            let failed = matches!(self.block, Some((true, _)));
            let n = x.answer(s == St::Write, &hints, Some(q));
            let tag: Result<&[u8], ()> = match s {
                _ if failed && !matches!(s, St::Commit | St::Rollback | St::RollbackTo) => Err(()),
                St::Write => {
                    implicit |= self.block.is_none();
                    self.pending.push(self.stuck.len());
                    self.stuck.push(false);
                    xact_of.push((n, q));
                    Ok(b"INSERT 0 1")
                }
                St::Read => {
                    implicit |= self.block.is_none();
                    Ok(b"SELECT 1")
                }
                St::Fail => Err(()),
                St::Begin => {
                    self.block.get_or_insert((false, Vec::new()));
                    Ok(b"BEGIN")
                }
                St::Commit => {
                    let ok = !failed;
                    self.finish(ok);
                    implicit = false;
                    Ok(if ok { b"COMMIT" } else { b"ROLLBACK" })
                }
                St::Rollback => {
                    self.finish(false);
                    implicit = false;
                    Ok(b"ROLLBACK")
                }
                St::Savepoint => match &mut self.block {
                    Some((_, sp)) => {
                        sp.push(self.pending.len());
                        Ok(b"SAVEPOINT")
                    }
                    None => Err(()),
                },
                St::RollbackTo => match &mut self.block {
                    Some((f, sp)) if !sp.is_empty() => {
                        let mark = sp.last().copied().unwrap_or(0);
                        self.pending.truncate(mark);
                        *f = false;
                        Ok(b"ROLLBACK")
                    }
                    _ => Err(()),
                },
                St::Release => match &mut self.block {
                    Some((_, sp)) if !sp.is_empty() => {
                        sp.pop();
                        Ok(b"RELEASE")
                    }
                    _ => Err(()),
                },
            };
            match tag {
                Ok(tag) => {
                    x.tag(tag, &hints, ends);
                    if tag == b"COMMIT" || tag == b"ROLLBACK" {
                        ends += 1;
                    }
                }
                Err(()) => {
                    x.error();
                    match &mut self.block {
                        Some((f, _)) => *f = true,
                        None => self.finish(false),
                    }
                    implicit = false;
                    break;
                }
            }
        }
        if implicit && self.block.is_none() {
            self.finish(true);
        }
        x.ready(match &self.block {
            None => b'I',
            Some((true, _)) => b'E',
            Some((false, _)) => b'T',
        });
    }

    fn finish(&mut self, commit: bool) {
        for w in self.pending.drain(..) {
            if let Some(s) = self.stuck.get_mut(w) {
                *s = commit;
            }
        }
        self.block = None;
    }
}

proptest! {
    // Pure and fast: enough cases to meet savepoints inside blocks inside failed ones.
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whatever the session does, a write logged in a transaction reported `commit` (without
    /// savepoint rollbacks) stuck, and one reported `rollback` did not; a transaction said to
    /// be one statement's alone had no write from another.
    #[test]
    fn the_reported_outcome_is_what_postgresql_did(
        queries in proptest::collection::vec(proptest::collection::vec(st(), 1..5), 1..12),
        leave_in_flight in any::<bool>(),
    ) {
        let (mut pg, mut x, mut xact_of) = (Pg::default(), Xacts::default(), Vec::new());
        for (i, q) in (0u64..).zip(&queries) {
            pg.query(i, q, &mut x, &mut xact_of);
        }
        let open_before = x.open();
        x.abandon(leave_in_flight);
        pg.finish(false);
        let ends: Vec<Ended> = x.take_ended().collect();
        for (w, &(n, q)) in xact_of.iter().enumerate() {
            let mine: Vec<&Ended> = ends.iter().filter(|e| e.xact == n).collect();
            prop_assert_eq!(mine.len(), 1, "write {} in xact {}: {:?}", w, n, ends);
            let e = mine[0];
            // An end its statement's event may carry: that statement was the whole transaction.
            if let Some(only) = e.only {
                prop_assert_eq!(only, q, "{:?}", queries);
            }
            let stuck = pg.stuck[w];
            match e.outcome {
                XactEnd::Commit if e.savepoint_rollbacks == 0 => prop_assert!(stuck, "{:?}", queries),
                XactEnd::Commit => {}
                XactEnd::Rollback => prop_assert!(!stuck, "{:?}", queries),
                XactEnd::Unknown => prop_assert!(leave_in_flight && open_before == Some(n)),
                XactEnd::Prepared => prop_assert!(false),
            }
        }
    }
}

//! What a statement text tells about the transaction control it holds, for the words the
//! server's command tags leave ambiguous: a `ROLLBACK` tag answers `ROLLBACK`, `ABORT`, a
//! `COMMIT` of a failed transaction and `ROLLBACK TO SAVEPOINT` alike, and a `CALL`ed
//! procedure or a `DO` block may commit inside without any tag saying so.

/// Transaction control in one Query or Parse text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxHints {
    /// Bit `i`: the `i`-th COMMIT / END / ROLLBACK / ABORT statement of the text is a
    /// `ROLLBACK TO SAVEPOINT` (the `i`-th COMMIT or ROLLBACK tag answers it).
    to_savepoint: u64,
    /// The text could not be read with certainty: a literal whose end depends on
    /// `standard_conforming_strings` (a backslash), one that does not end, a text cut short,
    /// or more than 64 such statements.
    pub uncertain: bool,
    /// The text has a CALL or DO statement: a procedure or a DO block may commit part of its
    /// work inside.
    pub call: bool,
    /// The text has a SAVEPOINT, RELEASE [SAVEPOINT] or ROLLBACK TO [SAVEPOINT] statement.
    pub savepoints: bool,
}

impl TxHints {
    /// A text not read whole (streamed, or cut to the logged length).
    pub const UNCERTAIN: TxHints = TxHints {
        to_savepoint: 0,
        uncertain: true,
        call: true,
        savepoints: false,
    };

    /// For the `i`-th COMMIT or ROLLBACK tag answering the text: whether its statement was a
    /// `ROLLBACK TO SAVEPOINT` (None: not known).
    pub fn rollback_to(&self, i: u32) -> Option<bool> {
        if self.uncertain || i >= 64 {
            return None;
        }
        Some(self.to_savepoint & (1 << i) != 0)
    }
}

/// The hints for `sql`. Texts without the letters of ROLLBACK, ABORT, CALL, DO, SAVEPOINT or
/// RELEASE are not read further: their ROLLBACK tags can only be rollbacks of the transaction.
pub fn tx_hints(sql: &[u8]) -> TxHints {
    let words: [&[u8]; 6] = [
        b"rollback",
        b"abort",
        b"call",
        b"do",
        b"savepoint",
        b"release",
    ];
    let mentioned = sql.iter().enumerate().any(|(i, &c)| {
        matches!(c | 0x20, b'r' | b'a' | b'c' | b'd' | b's')
            && words.iter().any(|w| {
                sql.get(i..i + w.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(w))
            })
    });
    if !mentioned {
        return TxHints::default();
    }
    read(sql)
}

/// The first three words of each statement of `sql`, outside literals, quoted names and
/// comments.
fn read(sql: &[u8]) -> TxHints {
    let mut hints = TxHints::default();
    let mut ends = 0u32;
    let mut piece: [&[u8]; 3] = [b""; 3];
    let mut n = 0usize;
    let mut i = 0usize;
    let mut finish = |piece: &[&[u8]; 3], hints: &mut TxHints| {
        let first = piece[0];
        let is = |w: &[u8], s: &str| w.eq_ignore_ascii_case(s.as_bytes());
        if is(first, "call") || is(first, "do") {
            hints.call = true;
        }
        if is(first, "savepoint") || is(first, "release") {
            hints.savepoints = true;
        }
        // COMMIT PREPARED and ROLLBACK PREPARED have tags of their own.
        if ["commit", "end", "rollback", "abort"]
            .iter()
            .any(|s| is(first, s))
            && !is(piece[1], "prepared")
        {
            let to = is(first, "rollback")
                && (is(piece[1], "to")
                    || ((is(piece[1], "work") || is(piece[1], "transaction"))
                        && is(piece[2], "to")));
            hints.savepoints |= to;
            if ends >= 64 {
                hints.uncertain = true;
            } else if to {
                hints.to_savepoint |= 1 << ends;
            }
            ends += 1;
        }
    };
    while let Some(&c) = sql.get(i) {
        match (c, sql.get(i + 1)) {
            (b';', _) => {
                finish(&piece, &mut hints);
                piece = [b""; 3];
                n = 0;
                i += 1;
            }
            (b'-', Some(b'-')) => i = super::lex::line_comment_end(sql, i),
            (b'/', Some(b'*')) => i = super::lex::block_comment_end(sql, i),
            (b'\'' | b'"', _) => {
                match super::lex::quoted_len(sql.get(i + 1..).unwrap_or_default(), c) {
                    Some(len) => i += len + 2,
                    None => {
                        hints.uncertain = true;
                        return hints;
                    }
                }
            }
            (b'$', Some(&d)) if d == b'$' || d == b'_' || d.is_ascii_alphabetic() || d >= 0x80 => {
                match super::lex::dollar_quoted_len(sql.get(i..).unwrap_or_default()) {
                    Some(len) => i += len,
                    None => {
                        hints.uncertain = true;
                        return hints;
                    }
                }
            }
            (c, _) if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let len = sql
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b"_$".contains(&b) || b >= 0x80))
                    .unwrap_or(sql.len() - i);
                if let Some(slot) = piece.get_mut(n) {
                    *slot = sql.get(i..i + len).unwrap_or_default();
                }
                n += 1;
                i += len;
            }
            _ => i += 1,
        }
    }
    finish(&piece, &mut hints);
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(sql: &str) -> Vec<Option<bool>> {
        let h = tx_hints(sql.as_bytes());
        (0..3).map(|i| h.rollback_to(i)).collect()
    }

    #[test]
    fn savepoint_rollbacks_are_told_from_transaction_rollbacks() {
        assert_eq!(to("ROLLBACK"), [Some(false); 3]);
        assert_eq!(
            to("rollback to savepoint a"),
            [Some(true), Some(false), Some(false)]
        );
        assert_eq!(
            to("Rollback Work To a; commit; ROLLBACK TRANSACTION TO SAVEPOINT b"),
            [Some(true), Some(false), Some(true)]
        );
        assert_eq!(
            to("begin; insert into t values (1); rollback"),
            [Some(false); 3]
        );
        assert_eq!(
            to("rollback /* to */ and chain; rollback -- to\n to a"),
            [Some(false), Some(true), Some(false)]
        );
        // Inside literals, quoted names and dollar quotes: not statements.
        assert_eq!(
            to("select 'x; rollback to a', \"; rollback to b\", $$; rollback to c$$; rollback"),
            [Some(false); 3]
        );
        assert_eq!(to("abort"), [Some(false); 3]);
    }

    #[test]
    fn calls_and_uncertain_texts() {
        assert!(tx_hints(b"CALL p()").call);
        assert!(tx_hints(b"do $$begin commit; end$$").call);
        assert!(!tx_hints(b"select done from t").call);
        assert!(tx_hints(b"SAVEPOINT a").savepoints);
        assert!(tx_hints(b"release savepoint a").savepoints);
        assert!(tx_hints(b"rollback to a").savepoints);
        assert!(!tx_hints(b"rollback").savepoints);
        assert!(!tx_hints(b"select 'savepoint a'").savepoints);
        assert_eq!(
            tx_hints(b"commit prepared 'x'; rollback to a").rollback_to(0),
            Some(true)
        );
        assert!(tx_hints(b"select 1; call p()").call);
        assert!(!tx_hints(b"select recall from t").call);
        assert!(!tx_hints(b"select 'call p()'").call);
        let h = tx_hints(b"insert into t values ('a\\'; rollback to x'); rollback");
        assert!(h.uncertain && h.rollback_to(0).is_none());
        assert!(tx_hints(b"rollback to 'unterminated").uncertain);
        assert_eq!(tx_hints(b"select 1"), TxHints::default());
        assert!(TxHints::UNCERTAIN.rollback_to(0).is_none());
    }
}

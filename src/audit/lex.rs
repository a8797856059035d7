//! SQL comments and quoted texts, for the classifier, the transaction hints and the
//! redaction: where one that starts at a position ends.

/// Past a `-- ...` comment starting at `i`: the index of its newline (or the end). A `\r`
/// ends it too, as in PostgreSQL's lexer (`newline [\n\r]`).
pub(super) fn line_comment_end(b: &[u8], i: usize) -> usize {
    b.get(i..)
        .and_then(|r| r.iter().position(|&c| c == b'\n' || c == b'\r'))
        .map_or(b.len(), |p| i + p)
}

/// Past a `/* ... */` comment starting at `i`, nested ones included (as PostgreSQL reads them);
/// the end of `b` if it does not close.
pub(super) fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        match (b.get(i), b.get(i + 1)) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// The length of a `$tag$` opener at the start of `s` (tag bytes: letters, digits, `_` and
/// any non-ASCII byte, as in PostgreSQL's identifiers), if it is one.
pub(super) fn dollar_tag_len(s: &[u8]) -> Option<usize> {
    let close = s
        .get(1..)?
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))?
        + 1;
    (s.get(close) == Some(&b'$')).then_some(close + 1)
}

/// The whole length of a `$tag$...$tag$` literal at the start of `s`, if it is one and ends.
pub(super) fn dollar_quoted_len(s: &[u8]) -> Option<usize> {
    let open = dollar_tag_len(s)?;
    let tag = s.get(..open)?;
    let end = s.get(open..)?.windows(open).position(|w| w == tag)?;
    Some(open + end + open)
}

/// The length of a `'...'` or `"..."` body (doubled quotes inside) up to its closing quote;
/// None when it does not end or holds a backslash (in `'...'`: its end is then uncertain).
pub(super) fn quoted_len(body: &[u8], quote: u8) -> Option<usize> {
    let mut i = 0;
    loop {
        match body.get(i)? {
            b'\\' if quote == b'\'' => return None,
            &c if c == quote => {
                if body.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_ends() {
        let sql = b"a /* x /* y */ z */ b -- c\nd";
        assert_eq!(block_comment_end(sql, 2), 19);
        assert_eq!(line_comment_end(sql, 22), 26);
        assert_eq!(line_comment_end(b"a -- b\rc\nd", 2), 6);
        assert_eq!(block_comment_end(b"/* open", 0), 7);
        assert_eq!(dollar_quoted_len(b"$x$ -- $x$, f()"), Some(10));
        assert_eq!(dollar_quoted_len(b"$$a$$"), Some(5));
        assert_eq!(dollar_quoted_len(b"$1"), None);
        assert_eq!(dollar_tag_len(b"$x$ open"), Some(3));
    }
}

//! SQL comments, for the classifier and the redaction: where one that starts at a position ends.

/// Past a `-- ...` comment starting at `i`: the index of its newline (or the end).
pub(super) fn line_comment_end(b: &[u8], i: usize) -> usize {
    b.get(i..)
        .and_then(|r| r.iter().position(|&c| c == b'\n'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_ends() {
        let sql = b"a /* x /* y */ z */ b -- c\nd";
        assert_eq!(block_comment_end(sql, 2), 19);
        assert_eq!(line_comment_end(sql, 22), 26);
        assert_eq!(block_comment_end(b"/* open", 0), 7);
    }
}

//! Password redaction: the string literal after a `PASSWORD` keyword (CREATE/ALTER ROLE/USER
//! ... PASSWORD '...', user mappings' `password '...'`) becomes `'***'`, wherever it appears.

use std::borrow::Cow;

/// `text` with every literal following `password` replaced by `'***'`. A literal cut short
/// (truncated text) is redacted to the end.
pub fn redact(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("password") {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut search = 0;
    while let Some(found) = lower.get(search..).and_then(|s| s.find("password")) {
        let kw_end = search + found + "password".len();
        search = kw_end;
        let mut i = kw_end;
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        let Some(end) = literal_end(bytes, i) else {
            continue;
        };
        out.push_str(text.get(pos..i).unwrap_or_default());
        out.push_str("'***'");
        pos = end;
        search = end;
    }
    out.push_str(text.get(pos..).unwrap_or_default());
    Cow::Owned(out)
}

/// If a string literal ('..', E'..', $tag$..$tag$) starts at `i`, where it ends (exclusive).
fn literal_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'\'' => Some(quoted_end(b, i + 1, false)),
        b'e' | b'E' if b.get(i + 1) == Some(&b'\'') => Some(quoted_end(b, i + 2, true)),
        b'$' => {
            let close = b.get(i + 1..)?.iter().position(|&c| c == b'$')? + i + 1;
            let tag = b.get(i..=close)?;
            let body = close + 1;
            let rest = b.get(body..)?;
            Some(
                rest.windows(tag.len())
                    .position(|w| w == tag)
                    .map_or(b.len(), |p| body + p + tag.len()),
            )
        }
        _ => None,
    }
}

fn quoted_end(b: &[u8], mut i: usize, backslash: bool) -> usize {
    while let Some(&c) = b.get(i) {
        if backslash && c == b'\\' {
            i += 2;
            continue;
        }
        if c == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_literals() {
        assert_eq!(
            redact("ALTER ROLE bob PASSWORD 'it''s secret' VALID UNTIL 'x'"),
            "ALTER ROLE bob PASSWORD '***' VALID UNTIL 'x'"
        );
        assert_eq!(
            redact("create user x with password E'a\\'b' login"),
            "create user x with password '***' login"
        );
        assert_eq!(
            redact("alter user x password $p$s3cr3t$p$"),
            "alter user x password '***'"
        );
        assert_eq!(
            redact("alter role x password 'cut sh"),
            "alter role x password '***'"
        );
        assert_eq!(redact("select 1"), "select 1");
        assert_eq!(
            redact("alter role x password null"),
            "alter role x password null"
        );
    }
}

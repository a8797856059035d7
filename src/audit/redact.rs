//! Password redaction: the string literal after a `PASSWORD` keyword (CREATE/ALTER ROLE/USER
//! ... PASSWORD '...', user mappings' `password '...'`) becomes `'***'`, wherever it appears,
//! comments between them included; in connection strings (`CREATE SUBSCRIPTION ... CONNECTION
//! '... password=...'`, `dblink_connect`) the value after `password=` becomes `***`.
//! Redacting too much is harmless: literals are taken to end as late as any reading allows.

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
        let i = skip_space_and_comments(bytes, kw_end);
        if bytes.get(i) == Some(&b'=') {
            // A connection string's `password=value`.
            let start = skip_space_and_comments(bytes, i + 1);
            let end = bytes
                .get(start..)
                .and_then(|r| {
                    r.iter()
                        .position(|&c| c.is_ascii_whitespace() || c == b'\'')
                })
                .map_or(bytes.len(), |p| start + p);
            if end > start {
                out.push_str(text.get(pos..start).unwrap_or_default());
                out.push_str("***");
                pos = end;
                search = end;
            }
            continue;
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

/// Past whitespace, `-- ...` and (nested) `/* ... */` comments from `i`.
fn skip_space_and_comments(b: &[u8], mut i: usize) -> usize {
    loop {
        match (b.get(i), b.get(i + 1)) {
            (Some(c), _) if c.is_ascii_whitespace() => i += 1,
            (Some(b'-'), Some(b'-')) => {
                i = b
                    .get(i..)
                    .and_then(|r| r.iter().position(|&c| c == b'\n'))
                    .map_or(b.len(), |p| i + p);
            }
            (Some(b'/'), Some(b'*')) => {
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
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
            }
            _ => return i,
        }
    }
}

/// If a string literal ('..', E'..', U&'..', $tag$..$tag$) starts at `i`, where it ends
/// (exclusive). A backslash escapes the next byte in every form but `$$`: with
/// standard_conforming_strings off it does in '..' too, and taking it so only ever makes the
/// redacted span longer.
fn literal_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'\'' => Some(quoted_end(b, i + 1, true)),
        b'e' | b'E' if b.get(i + 1) == Some(&b'\'') => Some(quoted_end(b, i + 2, true)),
        b'u' | b'U' if b.get(i + 1) == Some(&b'&') && b.get(i + 2) == Some(&b'\'') => {
            Some(quoted_end(b, i + 3, true))
        }
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
        assert_eq!(
            redact("ALTER ROLE r PASSWORD /* new */ 'c1' LOGIN"),
            "ALTER ROLE r PASSWORD /* new */ '***' LOGIN"
        );
        assert_eq!(
            redact("CREATE ROLE x PASSWORD--c\n'c2'"),
            "CREATE ROLE x PASSWORD--c\n'***'"
        );
        assert_eq!(
            redact(r"ALTER ROLE r PASSWORD U&'c\0033'"),
            "ALTER ROLE r PASSWORD '***'"
        );
        assert_eq!(
            redact("ALTER ROLE r PASSWORD 'abc\\'leak7'"),
            "ALTER ROLE r PASSWORD '***'"
        );
        assert_eq!(
            redact("CREATE SUBSCRIPTION s CONNECTION 'host=h password=c5 dbname=d' PUBLICATION p"),
            "CREATE SUBSCRIPTION s CONNECTION 'host=h password=*** dbname=d' PUBLICATION p"
        );
        assert_eq!(
            redact("select dblink_connect('password = c6')"),
            "select dblink_connect('password = ***')"
        );
    }
}

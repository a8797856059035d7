//! Password redaction: the string literal after a `PASSWORD` keyword (CREATE/ALTER ROLE/USER
//! ... PASSWORD '...', user mappings' `password '...'`) becomes `'***'`, wherever it appears,
//! comments between them included; in connection strings (`CREATE SUBSCRIPTION ... CONNECTION
//! '... password=...'`, `dblink_connect`) the value after `password=` becomes `***`.
//! Redacting too much is harmless: literals are taken to end as late as any reading allows.

use std::borrow::Cow;

/// `text` with every literal following `password` replaced by `'***'`. A literal cut short
/// (truncated text) is redacted to the end.
pub fn redact(text: &str) -> Cow<'_, str> {
    match redact_uris(text) {
        Cow::Borrowed(_) => redact_keywords(text),
        Cow::Owned(t) => Cow::Owned(redact_keywords(&t).into_owned()),
    }
}

/// The password in URIs: `scheme://user:PASSWORD@host` becomes `scheme://user:***@host`.
fn redact_uris(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut pos, mut search) = (0, 0);
    while let Some(found) = text.get(search..).and_then(|s| s.find("://")) {
        let start = search + found + 3;
        let end = b
            .get(start..)
            .and_then(|r| {
                r.iter().position(|&c| {
                    c.is_ascii_whitespace() || matches!(c, b'/' | b'?' | b'\'' | b'"' | b')')
                })
            })
            .map_or(b.len(), |p| start + p);
        search = end.max(start);
        let authority = b.get(start..end).unwrap_or_default();
        let Some(at) = authority.iter().rposition(|&c| c == b'@') else {
            continue;
        };
        let Some(colon) = authority
            .get(..at)
            .and_then(|u| u.iter().position(|&c| c == b':'))
        else {
            continue;
        };
        out.push_str(text.get(pos..start + colon + 1).unwrap_or_default());
        out.push_str("***");
        pos = start + at;
    }
    if pos == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(text.get(pos..).unwrap_or_default());
    Cow::Owned(out)
}

fn redact_keywords(text: &str) -> Cow<'_, str> {
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
        // `"password" 'x'` (an option name quoted, as in user mappings' OPTIONS).
        let after_name = if bytes.get(kw_end) == Some(&b'"') {
            kw_end + 1
        } else {
            kw_end
        };
        let i = skip_space_and_comments(bytes, after_name);
        if bytes.get(i) == Some(&b'=') {
            // A connection string's `password=value`; the value may be quoted, with its
            // quotes doubled inside an SQL literal (`password=''a b''`).
            let start = skip_space_and_comments(bytes, i + 1);
            let rest = bytes.get(start..).unwrap_or_default();
            let end = if rest.starts_with(b"''") {
                find(rest, b"''", 2).map(|p| start + p + 2)
            } else if rest.starts_with(b"'") {
                find(rest, b"'", 1).map(|p| start + p + 1)
            } else {
                rest.iter()
                    .position(|&c| c.is_ascii_whitespace() || c == b'\'')
                    .map(|p| start + p)
            }
            .unwrap_or(bytes.len());
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
            (Some(b'-'), Some(b'-')) => i = super::lex::line_comment_end(b, i),
            (Some(b'/'), Some(b'*')) => i = super::lex::block_comment_end(b, i),
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
        // A literal inside a literal (`EXECUTE 'ALTER ROLE r PASSWORD ''pw'''`): to the next
        // doubled quote.
        b'\'' if b.get(i + 1) == Some(&b'\'') => {
            Some(find(b.get(i..)?, b"''", 2).map_or(b.len(), |p| i + p + 2))
        }
        b'\'' => Some(quoted_end(b, i + 1, true)),
        b'e' | b'E' if b.get(i + 1) == Some(&b'\'') => Some(quoted_end(b, i + 2, true)),
        b'u' | b'U' if b.get(i + 1) == Some(&b'&') && b.get(i + 2) == Some(&b'\'') => {
            Some(quoted_end(b, i + 3, true))
        }
        b'$' => {
            // A `$tag$` literal, to its end (or to the text's end if it has none).
            let rest = b.get(i..)?;
            super::lex::dollar_tag_len(rest)?;
            Some(super::lex::dollar_quoted_len(rest).map_or(b.len(), |len| i + len))
        }
        _ => None,
    }
}

/// Where `needle` occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
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
        // A carriage return ends a `--` comment too (PostgreSQL 15 reads the literal).
        assert_eq!(
            redact("CREATE ROLE x PASSWORD--c\r'c2' LOGIN"),
            "CREATE ROLE x PASSWORD--c\r'***' LOGIN"
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
        assert_eq!(
            redact("CREATE SUBSCRIPTION s CONNECTION 'host=h password=''Leak1 pw'' dbname=d'"),
            "CREATE SUBSCRIPTION s CONNECTION 'host=h password=*** dbname=d'"
        );
        assert_eq!(
            redact("DO $$ BEGIN EXECUTE 'ALTER ROLE r PASSWORD ''pw7'''; END $$"),
            "DO $$ BEGIN EXECUTE 'ALTER ROLE r PASSWORD '***''; END $$"
        );
        assert_eq!(
            redact("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', \"password\" 'pw8')"),
            "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', \"password\" '***')"
        );
        assert_eq!(
            redact("select dblink_connect('postgresql://u:pw9@h:5432/d')"),
            "select dblink_connect('postgresql://u:***@h:5432/d')"
        );
        assert_eq!(
            redact("see https://example.org/x"),
            "see https://example.org/x"
        );
    }
}

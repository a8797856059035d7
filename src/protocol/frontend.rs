//! Tags of messages a client (frontend) sends.

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const EXECUTE: u8 = b'E';
pub const DESCRIBE: u8 = b'D';
pub const CLOSE: u8 = b'C';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const FUNCTION_CALL: u8 = b'F';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const TERMINATE: u8 = b'X';
/// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
pub const PASSWORD: u8 = b'p';

/// Whether a logged-in client may send a message of this type (protocol 3.0). PostgreSQL
/// ends the session at any other (08P01 invalid frontend message type), and so does
/// PgBouncer, without passing it on.
pub fn after_login(tag: u8) -> bool {
    matches!(
        tag,
        QUERY
            | PARSE
            | BIND
            | EXECUTE
            | DESCRIBE
            | CLOSE
            | SYNC
            | FLUSH
            | FUNCTION_CALL
            | COPY_DATA
            | COPY_DONE
            | COPY_FAIL
            | TERMINATE
    )
}

/// A SASLInitialResponse body: mechanism name and the initial client response.
#[derive(Debug)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> SaslInitialResponse<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Self> {
        let nul = body.iter().position(|&b| b == 0)?;
        let (mechanism, rest) = body.split_at(nul);
        let rest = rest.get(1..)?;
        let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
        let len = i32::from_be_bytes(len_bytes);
        let data = rest.get(4..)?;
        if len == -1 {
            return Some(SaslInitialResponse {
                mechanism,
                data: &[],
            });
        }
        if usize::try_from(len).ok()? != data.len() {
            return None;
        }
        Some(SaslInitialResponse { mechanism, data })
    }
}

/// The password of a PasswordMessage, without its terminating NUL.
pub fn password_body(body: &[u8]) -> Option<&[u8]> {
    match body.split_last() {
        Some((0, rest)) if !rest.contains(&0) => Some(rest),
        _ => None,
    }
}

/// Whether `f` holds for any value a Bind (its parameters) or a FunctionCall (its arguments)
/// carries, NULLs left out; None for another message or a malformed body (the server
/// refuses it).
pub fn any_value(tag: u8, body: &[u8], mut f: impl FnMut(&[u8]) -> bool) -> Option<bool> {
    let mut cur = Cursor(body);
    match tag {
        BIND => {
            cur.cstr()?; // portal
            cur.cstr()?; // statement
        }
        FUNCTION_CALL => {
            cur.take(4)?; // function oid
        }
        _ => return None,
    }
    let formats = cur.u16()?;
    cur.take(usize::from(formats) * 2)?;
    let mut found = false;
    for _ in 0..cur.u16()? {
        let len = i32::from_be_bytes(cur.take(4)?.try_into().ok()?);
        if len >= 0 {
            found |= f(cur.take(usize::try_from(len).ok()?)?);
        }
    }
    Some(found)
}

/// Reads a message body front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn cstr(&mut self) -> Option<&'a [u8]> {
        let nul = memchr::memchr(0, self.0)?;
        let s = self.take(nul)?;
        self.take(1)?;
        Some(s)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod values_tests {
    use super::*;

    #[test]
    fn bind_and_function_call_values() {
        let all = |tag, body: &[u8]| {
            let mut seen = Vec::new();
            any_value(tag, body, |v| {
                seen.push(v.to_vec());
                false
            })
            .map(|_| seen)
        };
        let mut bind = b"p\0s\0\0\x01\0\0\0\x03".to_vec();
        bind.extend_from_slice(&[0, 0, 0, 2]);
        bind.extend_from_slice(b"ab");
        bind.extend_from_slice(&(-1i32).to_be_bytes());
        bind.extend_from_slice(&[0, 0, 0, 0]);
        bind.extend_from_slice(&[0, 0]);
        assert_eq!(
            all(BIND, &bind),
            Some(vec![b"ab".to_vec(), Vec::new()]),
            "a NULL is left out"
        );
        assert_eq!(any_value(BIND, &bind, |v| v == b"ab"), Some(true));
        let mut call = 1234u32.to_be_bytes().to_vec();
        call.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0]);
        assert_eq!(all(FUNCTION_CALL, &call), Some(vec![b"x".to_vec()]));
        assert_eq!(all(BIND, &bind[..bind.len() - 9]), None, "cut short");
        assert_eq!(all(QUERY, b"select 1\0"), None);
    }
}

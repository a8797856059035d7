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

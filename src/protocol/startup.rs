//! The first packet of a connection: SSLRequest, GSSENCRequest, CancelRequest or StartupMessage.

use super::ProtocolError;

pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// Longest cancel key accepted (protocol 3.2 allows up to 256 bytes).
pub const MAX_CANCEL_KEY: usize = 256;

/// A client's cancel key: the BackendKeyData pid and secret it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupParams),
}

/// StartupMessage contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupParams {
    /// Requested protocol minor version (major is always 3).
    pub minor: u16,
    /// All parameters in order, including `user` and `database`.
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decode a first packet body (after the length word).
pub fn decode(body: &[u8]) -> Result<FirstPacket, ProtocolError> {
    let (code, rest) = split_i32(body).ok_or(ProtocolError::BadStartup("too short"))?;
    match code {
        SSL_REQUEST_CODE if rest.is_empty() => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST_CODE if rest.is_empty() => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let (pid, key) = split_i32(rest).ok_or(ProtocolError::BadStartup("cancel request"))?;
            if key.len() > MAX_CANCEL_KEY {
                return Err(ProtocolError::BadStartup("cancel key too long"));
            }
            // Protocol 3.0 keys are 4 bytes; we only ever hand out 4-byte keys.
            let (secret, tail) = split_i32(key).ok_or(ProtocolError::BadStartup("cancel key"))?;
            if !tail.is_empty() {
                return Err(ProtocolError::BadStartup("cancel key length"));
            }
            Ok(FirstPacket::Cancel(CancelKey { pid, secret }))
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(ProtocolError::BadStartup("request length")),
        version if version >> 16 == 3 => {
            let minor = u16::try_from(version & 0xffff).unwrap_or(u16::MAX);
            Ok(FirstPacket::Startup(StartupParams {
                minor,
                params: decode_params(rest)?,
            }))
        }
        version => Err(ProtocolError::UnsupportedVersion(version as u32)),
    }
}

fn split_i32(b: &[u8]) -> Option<(i32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*head), rest))
}

/// `name\0value\0 ... \0`; names must be unique and non-empty.
fn decode_params(mut b: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        match b {
            [0] => return Ok(params),
            [] => return Err(ProtocolError::BadStartup("missing terminator")),
            _ => {}
        }
        let (name, rest) = cstr(b)?;
        let (value, rest) = cstr(rest)?;
        if name.is_empty() {
            return Err(ProtocolError::BadStartup("empty parameter name"));
        }
        if params.iter().any(|(k, _)| *k == name) {
            return Err(ProtocolError::BadStartup("duplicate parameter"));
        }
        params.push((name, value));
        b = rest;
    }
}

fn cstr(b: &[u8]) -> Result<(String, &[u8]), ProtocolError> {
    let nul = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ProtocolError::BadStartup("unterminated string"))?;
    let (s, rest) = b.split_at(nul);
    let s =
        std::str::from_utf8(s).map_err(|_| ProtocolError::BadStartup("parameter is not UTF-8"))?;
    Ok((s.to_owned(), rest.get(1..).unwrap_or_default()))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn decodes_startup() {
        let p = decode(&startup(&[("user", "alice"), ("database", "butler")])).unwrap();
        let FirstPacket::Startup(s) = p else { panic!() };
        assert_eq!(s.minor, 0);
        assert_eq!(s.get("user"), Some("alice"));
        assert_eq!(s.get("database"), Some("butler"));
    }

    #[test]
    fn decodes_requests() {
        assert_eq!(
            decode(&SSL_REQUEST_CODE.to_be_bytes()).unwrap(),
            FirstPacket::SslRequest
        );
        assert_eq!(
            decode(&GSSENC_REQUEST_CODE.to_be_bytes()).unwrap(),
            FirstPacket::GssEncRequest
        );
        let mut c = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&7i32.to_be_bytes());
        c.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            decode(&c).unwrap(),
            FirstPacket::Cancel(CancelKey { pid: 7, secret: 9 })
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(b"").is_err());
        assert!(decode(b"GET / HTTP/1.1").is_err());
        assert!(decode(&PROTOCOL_3_0.to_be_bytes()).is_err());
        let mut dup = startup(&[("user", "a"), ("user", "b")]);
        assert!(decode(&dup).is_err());
        dup.pop();
        assert!(decode(&dup).is_err());
        let mut c = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&[0; 300]);
        assert!(decode(&c).is_err());
    }
}

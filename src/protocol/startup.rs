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
    /// The parameters in order, including `user` and `database`, whose name and value are
    /// UTF-8.
    pub params: Vec<(String, String)>,
    /// The others (PostgreSQL takes any bytes): the name (invalid bytes as U+FFFD) and the
    /// value's bytes, for the session to accept, clean or refuse before it reads `params`.
    pub not_utf8: Vec<(String, Vec<u8>)>,
}

impl StartupParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter name, UTF-8 or not.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        (self.params.iter().map(|(k, _)| k.as_str()))
            .chain(self.not_utf8.iter().map(|(k, _)| k.as_str()))
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
            let (params, not_utf8) = decode_params(rest)?;
            Ok(FirstPacket::Startup(StartupParams {
                minor,
                params,
                not_utf8,
            }))
        }
        version => Err(ProtocolError::UnsupportedVersion(version as u32)),
    }
}

fn split_i32(b: &[u8]) -> Option<(i32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*head), rest))
}

/// Decoded parameters: those in UTF-8, and the others (see [`StartupParams`]).
type Decoded = (Vec<(String, String)>, Vec<(String, Vec<u8>)>);

/// `name\0value\0 ... \0`; names must be non-empty. A name given again replaces the earlier
/// value, as PostgreSQL (and PgBouncer) take the last one.
fn decode_params(mut b: &[u8]) -> Result<Decoded, ProtocolError> {
    let (mut params, mut not_utf8): Decoded = (Vec::new(), Vec::new());
    loop {
        match b {
            [0] => return Ok((params, not_utf8)),
            [] => return Err(ProtocolError::BadStartup("missing terminator")),
            _ => {}
        }
        let (name, rest) = cstr(b)?;
        let (value, rest) = cstr(rest)?;
        if name.is_empty() {
            return Err(ProtocolError::BadStartup("empty parameter name"));
        }
        let name_text = String::from_utf8_lossy(name);
        params.retain(|(k, _)| *k != name_text);
        not_utf8.retain(|(k, _)| *k != name_text);
        match (std::str::from_utf8(name), std::str::from_utf8(value)) {
            (Ok(name), Ok(value)) => params.push((name.to_owned(), value.to_owned())),
            _ => not_utf8.push((name_text.into_owned(), value.to_vec())),
        }
        b = rest;
    }
}

/// The bytes up to the next NUL, and what follows it.
fn cstr(b: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let nul = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ProtocolError::BadStartup("unterminated string"))?;
    let (s, rest) = b.split_at(nul);
    Ok((s, rest.get(1..).unwrap_or_default()))
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

    /// Bytes that are not UTF-8 (PostgreSQL takes them) are kept apart, not refused; a name
    /// given twice is still refused, whatever its bytes.
    #[test]
    fn keeps_values_that_are_not_utf8_apart() {
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0alice\0application_name\0caf\xe9\0x\xff\0v\0\0");
        let FirstPacket::Startup(s) = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(s.params, [("user".to_string(), "alice".to_string())]);
        assert_eq!(
            s.not_utf8,
            [
                ("application_name".to_string(), b"caf\xe9".to_vec()),
                ("x\u{fffd}".to_string(), b"v".to_vec()),
            ]
        );
        assert_eq!(s.get("application_name"), None);
        assert_eq!(
            s.names().collect::<Vec<_>>(),
            ["user", "application_name", "x\u{fffd}"]
        );
        // Given again, the last value counts, whichever of them is UTF-8.
        let mut dup = PROTOCOL_3_0.to_be_bytes().to_vec();
        dup.extend_from_slice(b"a\0\xe9\0a\0b\0c\0d\0c\0\xe9\0\0");
        let Ok(FirstPacket::Startup(s)) = decode(&dup) else {
            panic!("a repeated name is not an error")
        };
        assert_eq!(s.params, [("a".to_string(), "b".to_string())]);
        assert_eq!(s.not_utf8, [("c".to_string(), b"\xe9".to_vec())]);
    }

    /// PostgreSQL takes the last of a repeated startup parameter (PgBouncer too): a client
    /// that sends `user` twice logs in as the second.
    #[test]
    fn a_repeated_parameter_takes_the_last_value() {
        let p = decode(&startup(&[("user", "a"), ("database", "d"), ("user", "b")])).unwrap();
        let FirstPacket::Startup(s) = p else { panic!() };
        assert_eq!(s.get("user"), Some("b"));
        assert_eq!(s.names().collect::<Vec<_>>(), ["database", "user"]);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(b"").is_err());
        assert!(decode(b"GET / HTTP/1.1").is_err());
        assert!(decode(&PROTOCOL_3_0.to_be_bytes()).is_err());
        let mut unterminated = startup(&[("user", "a"), ("user", "b")]);
        unterminated.pop();
        assert!(decode(&unterminated).is_err());
        let mut c = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        c.extend_from_slice(&[0; 300]);
        assert!(decode(&c).is_err());
    }
}

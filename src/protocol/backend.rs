//! Messages a server (backend) sends: encoders for what pgporter originates toward clients,
//! and small decoders for what pgporter reads from PostgreSQL.

use bytes::{BufMut, BytesMut};

pub const AUTHENTICATION: u8 = b'R';
pub const PARAMETER_STATUS: u8 = b'S';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const DATA_ROW: u8 = b'D';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const PARSE_COMPLETE: u8 = b'1';
pub const CLOSE_COMPLETE: u8 = b'3';

/// Authentication request codes (the first int32 of an 'R' message).
pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT: i32 = 3;
pub const AUTH_MD5: i32 = 5;
pub const AUTH_SASL: i32 = 10;
pub const AUTH_SASL_CONTINUE: i32 = 11;
pub const AUTH_SASL_FINAL: i32 = 12;

/// Write a message: tag, length word, then what `body` puts.
pub(crate) fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = i32::try_from(buf.len() - start).unwrap_or(i32::MAX);
    if let Some(slot) = buf.get_mut(start..start + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Write `s` and its terminating NUL.
pub(crate) fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

pub fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    message(buf, AUTHENTICATION, |b| {
        b.put_i32(code);
        b.put_slice(data);
    });
}

/// AuthenticationSASL listing `mechanisms`.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, READY_FOR_QUERY, |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor we support and the options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, version: i32, unrecognized: &[&str]) {
    message(buf, NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(version);
        b.put_i32(i32::try_from(unrecognized.len()).unwrap_or(0));
        for o in unrecognized {
            put_cstr(b, o.as_bytes());
        }
    });
}

/// Severity of an ErrorResponse / NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// An ErrorResponse (or NoticeResponse) pgporter originates.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    text: &str,
    hint: Option<&str>,
) {
    report(buf, severity, code, text, None, hint);
}

/// A NoticeResponse (SQLSTATE 00000) with a DETAIL, as PgBouncer's SHOW HELP.
pub fn notice_with_detail(buf: &mut BytesMut, text: &str, detail: &str) {
    report(buf, Severity::Notice, "00000", text, Some(detail), None);
}

fn report(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let tag = match severity {
        Severity::Error | Severity::Fatal => ERROR_RESPONSE,
        Severity::Notice | Severity::Warning => NOTICE_RESPONSE,
    };
    message(buf, tag, |b| {
        for field in [b'S', b'V'] {
            b.put_u8(field);
            put_cstr(b, severity.as_str().as_bytes());
        }
        b.put_u8(b'C');
        put_cstr(b, code.as_bytes());
        b.put_u8(b'M');
        put_cstr(b, text.as_bytes());
        for (field, value) in [(b'D', detail), (b'H', hint)] {
            if let Some(value) = value {
                b.put_u8(field);
                put_cstr(b, value.as_bytes());
            }
        }
        b.put_u8(0);
    });
}

/// Fields of an ErrorResponse/NoticeResponse read from a server, raw bytes kept for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    pub fn parse(body: &[u8]) -> Option<ErrorFields> {
        let mut fields = Vec::new();
        let mut rest = body;
        loop {
            let (&code, tail) = rest.split_first()?;
            if code == 0 {
                return Some(ErrorFields { fields });
            }
            let nul = tail.iter().position(|&c| c == 0)?;
            let (value, tail) = tail.split_at(nul);
            fields.push((code, String::from_utf8_lossy(value).into_owned()));
            rest = tail.get(1..)?;
        }
    }

    fn field(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> &str {
        self.field(b'C').unwrap_or("XX000")
    }
    pub fn message(&self) -> &str {
        self.field(b'M').unwrap_or("")
    }
    pub fn severity(&self) -> &str {
        self.field(b'V').or(self.field(b'S')).unwrap_or("ERROR")
    }

    /// Re-encode (e.g. to pass a server's login error on to a client).
    pub fn encode(&self, buf: &mut BytesMut) {
        message(buf, ERROR_RESPONSE, |b| {
            for (code, value) in &self.fields {
                b.put_u8(*code);
                put_cstr(b, value.as_bytes());
            }
            b.put_u8(0);
        });
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.severity(),
            self.message(),
            self.code()
        )
    }
}

/// ParameterStatus body -> (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.split(|&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let value = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    Some((name, value))
}

/// BackendKeyData body -> (pid, secret). Longer (protocol 3.2) keys are rejected.
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    let (pid, rest) = body.split_first_chunk::<4>()?;
    let secret: [u8; 4] = rest.try_into().ok()?;
    Some((i32::from_be_bytes(*pid), i32::from_be_bytes(secret)))
}

/// DataRow body -> column values (text format, lossy UTF-8; NULL as None).
pub fn parse_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = u16::from_be_bytes(*count);
    let mut values = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        match usize::try_from(len) {
            Err(_) => {
                values.push(None);
                rest = tail;
            }
            Ok(len) => {
                let value = tail.get(..len)?;
                values.push(Some(String::from_utf8_lossy(value).into_owned()));
                rest = tail.get(len..)?;
            }
        }
    }
    Some(values)
}

/// An ErrorResponse body with a HINT field set to `hint` (replacing one the server sent),
/// encoded as a whole message. None if `body` is not a well-formed ErrorResponse.
pub fn error_with_hint(body: &[u8], hint: &str) -> Option<BytesMut> {
    let mut fields = ErrorFields::parse(body)?;
    fields.fields.retain(|(code, _)| *code != b'H');
    fields.fields.push((b'H', hint.to_string()));
    let mut buf = BytesMut::new();
    fields.encode(&mut buf);
    Some(buf)
}

/// The SQLSTATE (`C` field) of an ErrorResponse body, without decoding the other fields.
pub fn error_code(body: &[u8]) -> Option<&[u8]> {
    error_field(body, b'C')
}

/// Field `wanted` of an ErrorResponse / NoticeResponse body, without copying.
fn error_field(body: &[u8], wanted: u8) -> Option<&[u8]> {
    let mut rest = body;
    loop {
        let (&code, tail) = rest.split_first()?;
        if code == 0 {
            return None;
        }
        let nul = tail.iter().position(|&c| c == 0)?;
        if code == wanted {
            return tail.get(..nul);
        }
        rest = tail.get(nul + 1..)?;
    }
}

/// Whether an ErrorResponse body ends the session (severity FATAL or PANIC; the
/// non-localized `V` field, else `S`).
pub fn is_fatal(body: &[u8]) -> bool {
    let severity = error_field(body, b'V').or_else(|| error_field(body, b'S'));
    matches!(severity, Some(b"FATAL" | b"PANIC"))
}

/// Authentication request body -> (code, data).
pub fn parse_authentication(body: &[u8]) -> Option<(i32, &[u8])> {
    let (code, rest) = body.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*code), rest))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::protocol::codec::parse_message;

    #[test]
    fn fatal_severity() {
        assert!(is_fatal(b"SFATAL\0VFATAL\0C57P01\0Mbye\0\0"));
        assert!(is_fatal(b"SPANIC\0C XX000\0\0"));
        // `V` (not localized) wins over a translated `S`.
        assert!(is_fatal(b"SFATAL-ish\0VFATAL\0\0"));
        assert!(!is_fatal(b"SERROR\0VERROR\0C22012\0\0"));
        assert!(!is_fatal(b"garbage"));
    }

    #[test]
    fn error_roundtrip() {
        let mut buf = BytesMut::new();
        error_response(
            &mut buf,
            Severity::Fatal,
            "28P01",
            "password authentication failed",
            None,
        );
        let msg = parse_message(&mut buf, 1000).unwrap().unwrap();
        assert_eq!(msg.tag, ERROR_RESPONSE);
        let f = ErrorFields::parse(&msg.body).unwrap();
        assert_eq!(f.code(), "28P01");
        assert_eq!(f.severity(), "FATAL");
        assert_eq!(f.message(), "password authentication failed");
    }

    #[test]
    fn hint_rewrite_and_code() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, Severity::Error, "25006", "read-only", Some("old"));
        let msg = parse_message(&mut buf, 1000).unwrap().unwrap();
        assert_eq!(error_code(&msg.body), Some(&b"25006"[..]));
        let mut out = error_with_hint(&msg.body, "use the rw port").unwrap();
        let msg = parse_message(&mut out, 1000).unwrap().unwrap();
        let f = ErrorFields::parse(&msg.body).unwrap();
        assert_eq!(f.code(), "25006");
        assert_eq!(f.message(), "read-only");
        let hints: Vec<_> = f.fields.iter().filter(|(c, _)| *c == b'H').collect();
        assert_eq!(hints, vec![&(b'H', "use the rw port".to_string())]);
        assert!(error_with_hint(b"Sx", "h").is_none());
        assert_eq!(error_code(b"Sx\0\0"), None);
    }

    #[test]
    fn data_rows() {
        let body = [0, 2, 0, 0, 0, 1, b't', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            parse_data_row(&body),
            Some(vec![Some("t".to_string()), None])
        );
        assert_eq!(parse_data_row(&[0, 1, 0, 0, 0, 5, b'x']), None);
    }

    #[test]
    fn garbage_error_fields() {
        assert!(ErrorFields::parse(b"Sfoo").is_none());
        assert!(ErrorFields::parse(b"").is_none());
    }
}

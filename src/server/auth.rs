//! Answering PostgreSQL's authentication request: cleartext, md5 (from a password or a stored
//! hash), SCRAM-SHA-256(-PLUS) from a password or from passthrough keys.

use bytes::BytesMut;
use md5::{Digest, Md5};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

use super::{BackendPassword, ServerError, ServerTarget};
use crate::auth::passthrough::{parse_server_first, KeyScramClient};
use crate::auth::scram::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use crate::net::Stream;
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::{FramedConn, ProtocolError, MAX_CONTROL_MESSAGE};

pub(super) async fn read_auth(
    conn: &mut FramedConn<Stream>,
) -> Result<(i32, bytes::Bytes), ServerError> {
    let msg = conn.read_message(MAX_CONTROL_MESSAGE).await?;
    match msg.tag {
        backend::AUTHENTICATION => {
            let (code, _) = backend::parse_authentication(&msg.body)
                .ok_or(ProtocolError::Malformed("authentication request"))?;
            Ok((code, msg.body.slice(4..)))
        }
        backend::ERROR_RESPONSE => Err(rejected(&msg.body)),
        other => Err(ProtocolError::Unexpected(other).into()),
    }
}

pub(super) fn rejected(body: &[u8]) -> ServerError {
    match ErrorFields::parse(body) {
        Some(fields) => ServerError::Rejected(fields),
        None => ProtocolError::Malformed("ErrorResponse").into(),
    }
}

async fn send_password(conn: &mut FramedConn<Stream>, password: &[u8]) -> Result<(), ServerError> {
    let mut buf = BytesMut::new();
    frontend::password_message(password, &mut buf).map_err(ProtocolError::Io)?;
    conn.queue(&buf);
    conn.flush().await?;
    Ok(())
}

pub(super) async fn authenticate(
    conn: &mut FramedConn<Stream>,
    target: &ServerTarget,
) -> Result<(), ServerError> {
    let (code, data) = read_auth(conn).await?;
    match code {
        backend::AUTH_OK => return Ok(()),
        backend::AUTH_CLEARTEXT => match &target.password {
            BackendPassword::Plain(p) => send_password(conn, p.as_bytes()).await?,
            _ => return Err(ServerError::NoPassword("cleartext")),
        },
        backend::AUTH_MD5 => {
            let salt: [u8; 4] = data
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProtocolError::Malformed("md5 salt"))?;
            let response = md5_response(&target.password, &target.user, salt)?;
            send_password(conn, response.as_bytes()).await?;
        }
        backend::AUTH_SASL => scram(conn, target, &data).await?,
        other => return Err(ServerError::UnsupportedAuth(other)),
    }
    match read_auth(conn).await? {
        (backend::AUTH_OK, _) => Ok(()),
        (other, _) => Err(ServerError::UnsupportedAuth(other)),
    }
}

/// `md5` + hex(md5(hex(md5(password || user)) || salt)); a stored md5 hash is the inner part.
fn md5_response(
    password: &BackendPassword,
    user: &str,
    salt: [u8; 4],
) -> Result<String, ServerError> {
    let inner = match password {
        BackendPassword::Plain(p) => {
            let mut h = Md5::new();
            h.update(p.as_bytes());
            h.update(user.as_bytes());
            hex(&h.finalize())
        }
        BackendPassword::Md5(stored) => stored.trim_start_matches("md5").to_string(),
        BackendPassword::None | BackendPassword::ScramKeys(_) => {
            return Err(ServerError::NoPassword("md5"))
        }
    };
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    Ok(format!("md5{}", hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn scram(
    conn: &mut FramedConn<Stream>,
    target: &ServerTarget,
    mechanisms: &[u8],
) -> Result<(), ServerError> {
    let offered = |name: &str| mechanisms.split(|&b| b == 0).any(|m| m == name.as_bytes());
    if !offered(SCRAM_SHA_256) {
        return Err(ServerError::Scram(
            "server does not offer SCRAM-SHA-256".into(),
        ));
    }
    // Bind to the TLS channel when the server offers it and its certificate allows it.
    let end_point = conn
        .io
        .peer_certificate()
        .and_then(crate::tls::end_point_data)
        .filter(|_| offered(SCRAM_SHA_256_PLUS));
    let mut client = match &target.password {
        BackendPassword::Plain(password) => {
            let plus = end_point.is_some();
            let cb = match end_point {
                Some(data) => ChannelBinding::tls_server_end_point(data),
                None => ChannelBinding::unsupported(),
            };
            ScramClient::Password {
                inner: Box::new(ScramSha256::new(password.as_bytes(), cb)),
                plus,
            }
        }
        BackendPassword::ScramKeys(keys) => {
            ScramClient::Keys(KeyScramClient::new(keys.clone(), end_point))
        }
        BackendPassword::Md5(_) | BackendPassword::None => {
            return Err(ServerError::NoPassword("SCRAM-SHA-256"))
        }
    };
    let mut buf = BytesMut::new();
    let first = client.first();
    frontend::sasl_initial_response(client.mechanism(), &first, &mut buf)
        .map_err(ProtocolError::Io)?;
    conn.queue(&buf);
    conn.flush().await?;

    let (code, data) = read_auth(conn).await?;
    if code != backend::AUTH_SASL_CONTINUE {
        return Err(ServerError::UnsupportedAuth(code));
    }
    // Strict checks before any PBKDF2 runs: attribute order, nonce, bounded iterations.
    let client_nonce = nonce_of(&first)?;
    parse_server_first(&data, &client_nonce).map_err(scram_error)?;
    let fin = client.update(&data)?;
    buf.clear();
    frontend::sasl_response(&fin, &mut buf).map_err(ProtocolError::Io)?;
    conn.queue(&buf);
    conn.flush().await?;

    let (code, data) = read_auth(conn).await?;
    if code != backend::AUTH_SASL_FINAL {
        return Err(ServerError::UnsupportedAuth(code));
    }
    client.finish(&data)
}

/// The two ways pgporter answers a SCRAM challenge.
enum ScramClient {
    Password { inner: Box<ScramSha256>, plus: bool },
    Keys(KeyScramClient),
}

impl ScramClient {
    fn mechanism(&self) -> &'static str {
        match self {
            ScramClient::Password { plus: true, .. } => SCRAM_SHA_256_PLUS,
            ScramClient::Password { plus: false, .. } => SCRAM_SHA_256,
            ScramClient::Keys(k) => k.mechanism(),
        }
    }

    fn first(&mut self) -> Vec<u8> {
        match self {
            ScramClient::Password { inner, .. } => inner.message().to_vec(),
            ScramClient::Keys(k) => k.client_first(),
        }
    }

    fn update(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ServerError> {
        match self {
            ScramClient::Password { inner, .. } => {
                inner
                    .update(server_first)
                    .map_err(|e| ServerError::Scram(e.to_string()))?;
                Ok(inner.message().to_vec())
            }
            ScramClient::Keys(k) => k.server_first(server_first).map_err(scram_error),
        }
    }

    fn finish(&mut self, server_final: &[u8]) -> Result<(), ServerError> {
        match self {
            ScramClient::Password { inner, .. } => inner
                .finish(server_final)
                .map_err(|e| ServerError::Scram(e.to_string())),
            ScramClient::Keys(k) => k.server_final(server_final).map_err(scram_error),
        }
    }
}

fn scram_error(e: crate::auth::AuthError) -> ServerError {
    ServerError::Scram(e.to_string())
}

/// The `r=` value of our client-first-message.
fn nonce_of(client_first: &[u8]) -> Result<String, ServerError> {
    let text = String::from_utf8_lossy(client_first);
    text.split(',')
        .find_map(|f| f.strip_prefix("r="))
        .map(str::to_owned)
        .ok_or_else(|| ServerError::Scram("no nonce in client-first-message".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_response_matches_postgres_protocol() {
        let salt = [1, 2, 3, 4];
        let ours = md5_response(&BackendPassword::Plain("pw".into()), "bob", salt).unwrap();
        let theirs = postgres_protocol::authentication::md5_hash(b"bob", b"pw", salt);
        assert_eq!(ours, theirs);
        let stored = postgres_protocol::password::md5(b"pw", "bob");
        assert_eq!(
            md5_response(&BackendPassword::Md5(stored), "bob", salt).unwrap(),
            theirs
        );
    }
}

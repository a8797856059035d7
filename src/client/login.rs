//! Drive the client's authentication exchange over the connection (the pure state machines are
//! in `auth`).

use bytes::BytesMut;
use subtle::ConstantTimeEq;

use crate::auth::scram::{ScramServer, SCRAM_SHA_256};
use crate::auth::{md5, AuthError, Secret};
use crate::config::AuthType;
use crate::error::Error;
use crate::net::Stream;
use crate::protocol::backend::{
    self, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL,
};
use crate::protocol::frontend::{self, SaslInitialResponse};
use crate::protocol::{FramedConn, ProtocolError, MAX_CONTROL_MESSAGE};

/// Authenticate `user` (AuthenticationOk is not sent here). Unknown users fail exactly like
/// wrong passwords.
pub(super) async fn authenticate(
    conn: &mut FramedConn<Stream>,
    method: AuthType,
    user: &str,
    secret: Option<&Secret>,
    mock_key: &[u8],
) -> Result<(), Error> {
    let outcome = match method {
        AuthType::Trust => Ok(()),
        AuthType::Plain => plain(conn, user, secret).await?,
        AuthType::Md5 => md5_exchange(conn, user, secret).await?,
        AuthType::ScramSha256 => {
            let server = match secret.and_then(Secret::scram) {
                Some(s) => ScramServer::new(s.clone()),
                None => ScramServer::mock(user, mock_key),
            };
            scram_exchange(conn, server).await?
        }
    };
    outcome.map_err(|e| match e {
        AuthError::Malformed(what) => Error::ClientProtocol(ProtocolError::Malformed(what)),
        AuthError::Failed | AuthError::Unsupported(_) => Error::AuthFailed {
            user: user.to_string(),
        },
    })
}

async fn send_auth(conn: &mut FramedConn<Stream>, code: i32, data: &[u8]) -> Result<(), Error> {
    let mut buf = BytesMut::new();
    backend::authentication(&mut buf, code, data);
    conn.queue(&buf);
    conn.flush().await.map_err(Error::ClientProtocol)
}

/// The body of the client's next PasswordMessage / SASL message.
async fn read_password_message(conn: &mut FramedConn<Stream>) -> Result<bytes::Bytes, Error> {
    let msg = conn
        .read_message(MAX_CONTROL_MESSAGE)
        .await
        .map_err(Error::ClientProtocol)?;
    if msg.tag != frontend::PASSWORD {
        return Err(Error::ClientProtocol(ProtocolError::Unexpected(msg.tag)));
    }
    Ok(msg.body)
}

type Outcome = Result<(), AuthError>;

async fn plain(
    conn: &mut FramedConn<Stream>,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Outcome, Error> {
    send_auth(conn, AUTH_CLEARTEXT, &[]).await?;
    let body = read_password_message(conn).await?;
    let given = frontend::password_body(&body).ok_or(Error::ClientProtocol(
        ProtocolError::Malformed("password message"),
    ))?;
    Ok(match secret {
        Some(Secret::Plain { password, .. }) => ct_result(given, password.as_bytes()),
        Some(Secret::Md5(stored)) => ct_result(md5_of(given, user).as_bytes(), stored.as_bytes()),
        Some(Secret::Scram(_)) => Err(AuthError::Unsupported("plain")),
        None => Err(AuthError::Failed),
    })
}

async fn md5_exchange(
    conn: &mut FramedConn<Stream>,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Outcome, Error> {
    let salt: [u8; 4] = rand::random();
    send_auth(conn, AUTH_MD5, &salt).await?;
    let body = read_password_message(conn).await?;
    Ok(match secret {
        Some(secret) => md5::verify(secret, user, salt, &body),
        None => Err(AuthError::Failed),
    })
}

async fn scram_exchange(
    conn: &mut FramedConn<Stream>,
    mut server: ScramServer,
) -> Result<Outcome, Error> {
    let mut buf = BytesMut::new();
    backend::authentication_sasl(&mut buf, &[SCRAM_SHA_256]);
    conn.queue(&buf);
    conn.flush().await.map_err(Error::ClientProtocol)?;

    let body = read_password_message(conn).await?;
    let initial = SaslInitialResponse::parse(&body).ok_or(Error::ClientProtocol(
        ProtocolError::Malformed("SASLInitialResponse"),
    ))?;
    if initial.mechanism != SCRAM_SHA_256.as_bytes() {
        return Err(Error::ClientProtocol(ProtocolError::Malformed(
            "unsupported SASL mechanism",
        )));
    }
    let server_first = match server.client_first(initial.data) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    send_auth(conn, AUTH_SASL_CONTINUE, &server_first).await?;

    let body = read_password_message(conn).await?;
    let server_final = match server.client_final(&body) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    send_auth(conn, AUTH_SASL_FINAL, &server_final).await?;
    Ok(Ok(()))
}

fn ct_result(a: &[u8], b: &[u8]) -> Outcome {
    if bool::from(a.ct_eq(b)) {
        Ok(())
    } else {
        Err(AuthError::Failed)
    }
}

/// `md5` + hex(md5(password || user)), PostgreSQL's stored md5 form.
fn md5_of(password: &[u8], user: &str) -> String {
    postgres_protocol::password::md5(password, user)
}

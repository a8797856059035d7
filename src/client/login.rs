//! Drive the client's authentication exchange over the connection (the pure state machines are
//! in `auth`).

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::auth::scram::ScramServer;
use crate::auth::{cert_name_allowed, md5, AuthError, Method, Secret};
use crate::error::Error;
use crate::net::Stream;
use crate::protocol::backend::{
    self, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL,
};
use crate::protocol::frontend::{self, SaslInitialResponse};
use crate::protocol::{FramedConn, ProtocolError, MAX_CONTROL_MESSAGE};

/// What a login exchange needs besides the user and secret.
#[derive(Debug)]
pub(super) struct LoginContext<'a> {
    /// Per-process key for mock SCRAM salts of unknown users.
    pub mock_key: &'a [u8],
    /// The iteration count mock SCRAM exchanges announce (`scram_iterations`).
    pub mock_iterations: u32,
    /// tls-server-end-point data when the client is on TLS (offers SCRAM-SHA-256-PLUS).
    pub end_point: Option<Arc<[u8]>>,
    /// auth_ident_file entries for cert authentication.
    pub ident: &'a [crate::config::hba::IdentEntry],
    /// The connection as its log lines name it (its failed login's line too).
    pub tag: &'a super::lines::Tag,
}

/// Authenticate `user` (AuthenticationOk is not sent here). Unknown users fail exactly like
/// wrong passwords. A SCRAM login returns the ClientKey recovered from the client's proof.
pub(super) async fn authenticate(
    conn: &mut FramedConn<Stream>,
    method: &Method,
    user: &str,
    secret: Option<&Secret>,
    ctx: &LoginContext<'_>,
) -> Result<Option<[u8; 32]>, Error> {
    // As PostgreSQL: an md5 method with only a SCRAM secret stored uses SCRAM.
    let scram_only = matches!(secret, Some(Secret::Scram(_)));
    let outcome = match method {
        Method::Trust => Ok(None),
        Method::Cert { map } => return cert(conn, map.as_deref(), user, ctx.ident),
        Method::Peer { map } => return peer(conn, map.as_deref(), user, ctx.ident),
        Method::Plain => plain(conn, user, secret).await?,
        Method::Md5 if !scram_only => md5_exchange(conn, user, secret).await?.map(|()| None),
        Method::Md5 | Method::ScramSha256 => {
            let server = match secret.and_then(Secret::scram) {
                Some(s) => ScramServer::new(s.clone()),
                None => ScramServer::mock(user, ctx.mock_key, ctx.mock_iterations),
            };
            let server = server.with_channel_binding(ctx.end_point.clone());
            scram_exchange(conn, server).await?.map(Some)
        }
    };
    // Which exchange ran (PgBouncer's log names a SCRAM failure apart).
    let sasl =
        matches!(method, Method::ScramSha256) || (matches!(method, Method::Md5) && scram_only);
    outcome.map_err(|e| match e {
        AuthError::Malformed(what) => Error::ClientProtocol(ProtocolError::Malformed(what)),
        AuthError::Failed | AuthError::Unsupported(_) => Error::AuthFailed {
            user: user.to_string(),
            unknown: secret.is_none(),
            sasl,
        },
    })
}

/// The client's TLS certificate (already verified against client_tls_ca_file by rustls) must
/// name the user, directly or through the ident map.
fn cert(
    conn: &FramedConn<Stream>,
    map: Option<&str>,
    user: &str,
    ident: &[crate::config::hba::IdentEntry],
) -> Result<Option<[u8; 32]>, Error> {
    let cert = conn
        .io
        .peer_certificate()
        .ok_or(Error::NoClientCertificate)?;
    let failed = || Error::CertAuthFailed {
        user: user.to_string(),
    };
    let cn = crate::tls::common_name(cert).ok_or_else(failed)?;
    if cert_name_allowed(ident, map, &cn, user) {
        Ok(None)
    } else {
        tracing::info!(user, certificate_cn = %cn, "certificate name does not match the user");
        Err(failed())
    }
}

/// The unix-socket client's OS user (SO_PEERCRED, its name from /etc/passwd) must be the
/// user, directly or through the ident map.
fn peer(
    conn: &FramedConn<Stream>,
    map: Option<&str>,
    user: &str,
    ident: &[crate::config::hba::IdentEntry],
) -> Result<Option<[u8; 32]>, Error> {
    let failed = || Error::PeerAuthFailed {
        user: user.to_string(),
    };
    let uid = conn.io.peer_uid().ok_or_else(failed)?;
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| os_user_name(&passwd, uid))
        .ok_or_else(|| {
            tracing::info!(user, uid, "peer authentication: no user name for the uid");
            failed()
        })?;
    if cert_name_allowed(ident, map, &name, user) {
        Ok(None)
    } else {
        tracing::info!(user, os_user = %name, "peer authentication: OS user does not match");
        Err(failed())
    }
}

/// The name of `uid` in passwd(5) text.
fn os_user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

async fn send_auth(conn: &mut FramedConn<Stream>, code: i32, data: &[u8]) -> Result<(), Error> {
    backend::authentication(&mut conn.wbuf, code, data);
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

/// Write-buffer room reserved for a SCRAM login and its welcome.
const LOGIN_WRITE_BUFFER: usize = 1024;

/// A cleartext password, checked against whatever secret is stored; against a SCRAM verifier
/// this also yields the ClientKey (passthrough), as a SCRAM login would.
async fn plain(
    conn: &mut FramedConn<Stream>,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Result<Option<[u8; 32]>, AuthError>, Error> {
    send_auth(conn, AUTH_CLEARTEXT, &[]).await?;
    let body = read_password_message(conn).await?;
    let given = frontend::password_body(&body).ok_or(Error::ClientProtocol(
        ProtocolError::Malformed("password message"),
    ))?;
    Ok(match secret {
        Some(Secret::Plain { password, .. }) => {
            ct_result(given, password.as_bytes()).map(|()| None)
        }
        Some(Secret::Md5(stored)) => {
            ct_result(md5_of(given, user).as_bytes(), stored.as_bytes()).map(|()| None)
        }
        Some(Secret::Scram(verifier)) => {
            let (verifier, given) = (verifier.clone(), given.to_vec());
            let key = tokio::task::spawn_blocking(move || {
                crate::auth::scram::verify_plain(&verifier, &given)
            })
            .await
            .ok()
            .flatten();
            key.map(Some).ok_or(AuthError::Failed)
        }
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
) -> Result<Result<[u8; 32], AuthError>, Error> {
    // Room for the exchange's messages and the welcome after it (AuthenticationOk, a dozen
    // ParameterStatus, BackendKeyData, ReadyForQuery: ~600 bytes) at once, instead of the
    // empty buffer growing message by message. The session's first request drops it.
    conn.wbuf.reserve(LOGIN_WRITE_BUFFER);
    backend::authentication_sasl(&mut conn.wbuf, server.mechanisms());
    conn.flush().await.map_err(Error::ClientProtocol)?;

    let body = read_password_message(conn).await?;
    let initial = SaslInitialResponse::parse(&body).ok_or(Error::ClientProtocol(
        ProtocolError::Malformed("SASLInitialResponse"),
    ))?;
    if let Err(e) = server.select_mechanism(initial.mechanism) {
        return Ok(Err(e));
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
    // Queued, not flushed: it leaves with AuthenticationOk and the welcome in one write.
    backend::authentication(&mut conn.wbuf, AUTH_SASL_FINAL, &server_final);
    Ok(server.client_key().ok_or(AuthError::Failed))
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

#[cfg(test)]
mod tests {
    #[test]
    fn os_user_names_from_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:104:110::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            super::os_user_name(passwd, 104).as_deref(),
            Some("postgres")
        );
        assert_eq!(super::os_user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(super::os_user_name(passwd, 7), None);
    }
}

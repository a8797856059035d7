//! connect -> startup -> authenticate -> read_info, the tokio-postgres `connect_raw` shape.

use std::collections::BTreeMap;

use bytes::BytesMut;
use md5::{Digest, Md5};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout, Duration, Instant};

use super::{BackendPassword, ServerAddr, ServerConn, ServerError, ServerTarget};
use crate::net::Stream;
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::startup::CancelKey;
use crate::protocol::{FramedConn, ProtocolError, MAX_CONTROL_MESSAGE};

/// Open and log in a server connection, all within `limit`.
pub async fn connect(
    target: &ServerTarget,
    extra_params: &[(String, String)],
    limit: Duration,
) -> Result<ServerConn, ServerError> {
    timeout(limit, connect_inner(target, extra_params))
        .await
        .map_err(|_| ServerError::Timeout)?
}

async fn connect_inner(
    target: &ServerTarget,
    extra_params: &[(String, String)],
) -> Result<ServerConn, ServerError> {
    let stream = open(&target.addr).await?;
    let mut conn = FramedConn::new(stream);
    let params = startup_params(target, extra_params);
    startup(&mut conn, &params).await?;
    authenticate(&mut conn, target).await?;
    let (key, reported) = read_info(&mut conn).await?;
    let mut values: BTreeMap<String, String> = params.into_iter().collect();
    values.extend(reported.iter().cloned());
    values.remove("user");
    values.remove("database");
    let now = Instant::now();
    Ok(ServerConn {
        conn,
        addr: target.addr.clone(),
        key,
        params: values,
        reported,
        created_at: now,
        last_used: now,
        holder: None,
    })
}

/// A plain socket to `addr` (TCP_NODELAY on).
pub(crate) async fn open(addr: &ServerAddr) -> Result<Stream, ServerError> {
    let connect_err = |source| ServerError::Connect {
        addr: addr.to_string(),
        source,
    };
    match addr {
        ServerAddr::Tcp { host, port } => {
            let tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_err)?;
            tcp.set_nodelay(true).map_err(connect_err)?;
            Ok(Stream::Tcp(tcp))
        }
        ServerAddr::Unix { dir, port } => {
            let path = format!("{dir}/.s.PGSQL.{port}");
            Ok(Stream::Unix(
                UnixStream::connect(path).await.map_err(connect_err)?,
            ))
        }
    }
}

fn startup_params(target: &ServerTarget, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut params = vec![
        ("user".to_string(), target.user.clone()),
        ("database".to_string(), target.dbname.clone()),
    ];
    for (k, v) in target.params.iter().chain(extra) {
        if !params.iter().any(|(have, _)| have == k) {
            params.push((k.clone(), v.clone()));
        }
    }
    params
}

async fn startup(
    conn: &mut FramedConn<Stream>,
    params: &[(String, String)],
) -> Result<(), ServerError> {
    let mut buf = BytesMut::new();
    frontend::startup_message(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut buf,
    )
    .map_err(ProtocolError::Io)?;
    conn.queue(&buf);
    conn.flush().await?;
    Ok(())
}

async fn read_auth(conn: &mut FramedConn<Stream>) -> Result<(i32, bytes::Bytes), ServerError> {
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

fn rejected(body: &[u8]) -> ServerError {
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

async fn authenticate(
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
        BackendPassword::None => return Err(ServerError::NoPassword("md5")),
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
    let offered = mechanisms.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
    if !offered {
        return Err(ServerError::Scram(
            "server does not offer SCRAM-SHA-256".into(),
        ));
    }
    let BackendPassword::Plain(password) = &target.password else {
        return Err(ServerError::NoPassword("SCRAM-SHA-256"));
    };
    let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", client.message(), &mut buf)
        .map_err(ProtocolError::Io)?;
    conn.queue(&buf);
    conn.flush().await?;

    let (code, data) = read_auth(conn).await?;
    if code != backend::AUTH_SASL_CONTINUE {
        return Err(ServerError::UnsupportedAuth(code));
    }
    client
        .update(&data)
        .map_err(|e| ServerError::Scram(e.to_string()))?;
    buf.clear();
    frontend::sasl_response(client.message(), &mut buf).map_err(ProtocolError::Io)?;
    conn.queue(&buf);
    conn.flush().await?;

    let (code, data) = read_auth(conn).await?;
    if code != backend::AUTH_SASL_FINAL {
        return Err(ServerError::UnsupportedAuth(code));
    }
    client
        .finish(&data)
        .map_err(|e| ServerError::Scram(e.to_string()))
}

/// ParameterStatus*, BackendKeyData, then ReadyForQuery.
async fn read_info(
    conn: &mut FramedConn<Stream>,
) -> Result<(CancelKey, Vec<(String, String)>), ServerError> {
    let mut params = Vec::new();
    let mut key = None;
    loop {
        let msg = conn.read_message(MAX_CONTROL_MESSAGE).await?;
        match msg.tag {
            backend::PARAMETER_STATUS => {
                params.extend(backend::parse_parameter_status(&msg.body));
            }
            backend::BACKEND_KEY_DATA => {
                let (pid, secret) = backend::parse_backend_key_data(&msg.body)
                    .ok_or(ProtocolError::Malformed("BackendKeyData"))?;
                key = Some(CancelKey { pid, secret });
            }
            backend::READY_FOR_QUERY => {
                let key = key.ok_or(ProtocolError::Malformed("no BackendKeyData"))?;
                return Ok((key, params));
            }
            backend::ERROR_RESPONSE => return Err(rejected(&msg.body)),
            backend::NOTICE_RESPONSE | backend::NEGOTIATE_PROTOCOL_VERSION => {}
            other => return Err(ProtocolError::Unexpected(other).into()),
        }
    }
}

/// Send a CancelRequest for `key` to the server at `addr`.
pub(crate) async fn send_cancel(addr: &ServerAddr, key: CancelKey) -> Result<(), ServerError> {
    use tokio::io::AsyncWriteExt;
    let mut stream = open(addr).await?;
    let mut buf = BytesMut::new();
    frontend::cancel_request(key.pid, key.secret, &mut buf);
    stream.write_all(&buf).await.map_err(ProtocolError::Io)?;
    // PostgreSQL closes the socket when done; wait briefly so the request is not cut short.
    let mut byte = [0u8; 1];
    let _ = timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut byte),
    )
    .await;
    Ok(())
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

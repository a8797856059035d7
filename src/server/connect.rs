//! connect -> startup -> authenticate -> read_info, the tokio-postgres `connect_raw` shape.

use std::collections::BTreeMap;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout, Duration, Instant};

use super::auth::{authenticate, rejected};
use super::{Login, ServerAddr, ServerConn, ServerError, ServerTarget};
use crate::net::Stream;
use crate::protocol::backend;
use crate::protocol::startup::{CancelKey, SSL_REQUEST_CODE};
use crate::protocol::{FramedConn, ProtocolError, MAX_CONTROL_MESSAGE};
use crate::tls::ServerTls;

/// Open and log in a server connection, all within `limit`; `login`, if given, follows the
/// phases (SHOW SERVERS).
pub async fn connect(
    target: &ServerTarget,
    extra_params: &[(String, String)],
    dial: crate::net::Dial,
    login: Option<&Login>,
) -> Result<ServerConn, ServerError> {
    timeout(
        dial.timeout,
        connect_inner(target, extra_params, dial.socket, login),
    )
    .await
    .map_err(|_| ServerError::Timeout)?
}

async fn connect_inner(
    target: &ServerTarget,
    extra_params: &[(String, String)],
    socket: crate::net::SocketOptions,
    login: Option<&Login>,
) -> Result<ServerConn, ServerError> {
    if let Some(login) = login {
        login.trying(&target.addr);
    }
    let mut stream = open(&target.addr).await?;
    if let Some(login) = login {
        login.opened(stream.local_addr());
    }
    if let Stream::Tcp(tcp) = &stream {
        socket.apply(tcp).map_err(|source| ServerError::Connect {
            addr: target.addr.to_string(),
            source,
        })?;
    }
    if let Some(tls) = &target.tls {
        stream = negotiate_tls(stream, &target.addr, tls).await?;
    }
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
    let tls = conn.io.tls_info();
    let local = conn.io.local_addr();
    Ok(ServerConn {
        conn,
        addr: target.addr.clone(),
        key,
        params: values,
        spellings: Vec::new(),
        reported,
        created_at: now,
        last_used: now,
        holder: None,
        lent_at: 0,
        tag: None,
        identity_tag: None,
        tls,
        local,
        set_for_client: Vec::new(),
        link: None,
        statements: Default::default(),
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

/// SSLRequest; on 'S' the TLS handshake, on 'N' plaintext unless the mode requires TLS.
/// (`allow` behaves like `prefer`, as in PgBouncer; unix sockets stay plaintext.)
async fn negotiate_tls(
    stream: Stream,
    addr: &ServerAddr,
    tls: &ServerTls,
) -> Result<Stream, ServerError> {
    let (mut tcp, host) = match (stream, addr) {
        (Stream::Tcp(tcp), ServerAddr::Tcp { host, .. }) => (tcp, host),
        (other, _) => return Ok(other),
    };
    let mut request = BytesMut::new();
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    tcp.write_all(&request).await.map_err(ProtocolError::Io)?;
    // Exactly one byte: anything read beyond it would be unencrypted injected data.
    let answer = tcp.read_u8().await.map_err(ProtocolError::Io)?;
    match answer {
        b'S' => {
            let stream = tls.connect(tcp, host).await.map_err(ServerError::Tls)?;
            Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(
                stream,
            ))))
        }
        b'N' if !tls.mode.requires_tls() => Ok(Stream::Tcp(tcp)),
        b'N' => Err(ServerError::TlsRefused),
        _ => Err(ProtocolError::Malformed("unexpected answer to SSLRequest").into()),
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

/// Send a CancelRequest for `key` to the server (or peer) at `addr`, connecting within
/// `connect_timeout` (server_connect_timeout: a host that drops SYNs would otherwise hold the
/// request for the kernel's two minutes of retries). `sent` is called once the request is
/// written, with the connection's local address (none on a unix socket), for its log lines.
pub(crate) async fn send_cancel(
    addr: &ServerAddr,
    key: CancelKey,
    connect_timeout: Duration,
    sent: impl FnOnce(Option<std::net::SocketAddr>),
) -> Result<(), ServerError> {
    let mut stream = timeout(connect_timeout, open(addr))
        .await
        .map_err(|_| ServerError::Timeout)??;
    let mut buf = BytesMut::new();
    frontend::cancel_request(key.pid, key.secret, &mut buf);
    stream.write_all(&buf).await.map_err(ProtocolError::Io)?;
    sent(stream.local_addr());
    // PostgreSQL closes the socket when done; wait briefly so the request is not cut short.
    let mut byte = [0u8; 1];
    let _ = timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    Ok(())
}

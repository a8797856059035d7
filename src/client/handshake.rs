//! The first packets: TLS negotiation (SSLRequest, or direct TLS with ALPN "postgresql"),
//! GSSENCRequest refused with 'N', CancelRequest diverted, and the StartupMessage decoded.

use bytes::BytesMut;

use crate::error::Error;
use crate::net::Stream;
use crate::protocol::backend;
use crate::protocol::startup::{self, CancelKey, FirstPacket, StartupParams, PROTOCOL_3_0};
use crate::protocol::{FramedConn, ProtocolError, MAX_STARTUP_PACKET};
use crate::tls::{ClientTls, ALPN_POSTGRESQL};

/// First byte of a TLS handshake record: a client doing direct TLS (PostgreSQL 17
/// `sslnegotiation=direct`) starts with it instead of a length word.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a new connection wants.
#[derive(Debug)]
pub(super) enum Hello {
    Startup(StartupParams),
    Cancel(CancelKey),
}

pub(super) async fn handshake(
    conn: &mut FramedConn<Stream>,
    tls: Option<&ClientTls>,
) -> Result<Hello, Error> {
    if let (Some(tls), Stream::Tcp(tcp)) = (tls, &conn.io) {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await.map_err(Error::Io)?;
        if n == 1 && first[0] == TLS_HANDSHAKE_RECORD {
            upgrade(conn, tls).await?;
            if conn.io.alpn_protocol() != Some(ALPN_POSTGRESQL) {
                return Err(Error::ClientProtocol(ProtocolError::Malformed(
                    "direct TLS connection without ALPN \"postgresql\"",
                )));
            }
        }
    }
    // libpq may ask for GSS encryption, then TLS, then start up. A client that asks again
    // after an `N` gets `N` again, as many times as it asks, as from PgBouncer 1.18 (checked
    // live: 200 SSLRequests, each answered `N`); client_login_timeout bounds the handshake.
    // (PostgreSQL 15 ends a second SSLRequest with FATAL 0A000.)
    loop {
        let body = conn
            .read_startup(MAX_STARTUP_PACKET)
            .await
            .map_err(Error::ClientProtocol)?;
        let decoded = startup::decode(&body).map_err(|e| match e {
            ProtocolError::UnsupportedVersion(v) => Error::UnsupportedProtocol {
                major: (v >> 16) as u16,
                minor: (v & 0xffff) as u16,
            },
            e => Error::ClientProtocol(e),
        });
        match decoded? {
            FirstPacket::SslRequest | FirstPacket::GssEncRequest if conn.io.is_tls() => {
                return Err(Error::ClientProtocol(ProtocolError::Malformed(
                    "encryption request on an encrypted connection",
                )));
            }
            request @ (FirstPacket::SslRequest | FirstPacket::GssEncRequest) => {
                // Bytes sent before our answer would be buffered-data injection (CVE-2021-23214).
                if !conn.rbuf.is_empty() {
                    return Err(Error::ClientProtocol(ProtocolError::Malformed(
                        "data after encryption request",
                    )));
                }
                let accept = match (&request, tls) {
                    (FirstPacket::SslRequest, Some(tls)) if !conn.io.is_unix() => Some(tls),
                    _ => None,
                };
                conn.queue(if accept.is_some() { b"S" } else { b"N" });
                conn.flush().await.map_err(Error::ClientProtocol)?;
                if let Some(tls) = accept {
                    upgrade(conn, tls).await?;
                }
            }
            FirstPacket::Cancel(key) => return Ok(Hello::Cancel(key)),
            FirstPacket::Startup(params) => {
                let options = params.names().any(|k| k.starts_with("_pq_."));
                if params.minor > 0 || options {
                    negotiate_minor(conn, &params).await?;
                }
                return Ok(Hello::Startup(params));
            }
        }
    }
}

/// Run the TLS handshake on the connection's TCP socket and put the TLS stream in its place.
async fn upgrade(conn: &mut FramedConn<Stream>, tls: &ClientTls) -> Result<(), Error> {
    let tcp = conn
        .io
        .take_tcp()
        .ok_or(Error::ClientProtocol(ProtocolError::Malformed(
            "TLS requested on a non-TCP connection",
        )))?;
    let stream = tls.acceptor.accept(tcp).await.map_err(Error::ClientTls)?;
    conn.io = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(stream)));
    Ok(())
}

/// A client asking for 3.x (x > 0), or naming `_pq_.` protocol options, is told we speak 3.0
/// and which options we ignore. The version field carries the whole version number, as
/// PostgreSQL sends it (libpq 18 reads anything below 3.0 as a refused downgrade).
async fn negotiate_minor(
    conn: &mut FramedConn<Stream>,
    params: &StartupParams,
) -> Result<(), Error> {
    let unrecognized: Vec<&str> = params.names().filter(|k| k.starts_with("_pq_.")).collect();
    let mut buf = BytesMut::new();
    backend::negotiate_protocol_version(&mut buf, PROTOCOL_3_0, &unrecognized);
    conn.queue(&buf);
    conn.flush().await.map_err(Error::ClientProtocol)
}

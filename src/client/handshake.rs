//! The first packets: answer SSLRequest/GSSENCRequest with 'N' (TLS is not offered yet),
//! divert CancelRequest, and decode the StartupMessage.

use bytes::BytesMut;

use crate::error::Error;
use crate::net::Stream;
use crate::protocol::backend;
use crate::protocol::startup::{self, CancelKey, FirstPacket, StartupParams, PROTOCOL_3_0};
use crate::protocol::{FramedConn, ProtocolError, MAX_STARTUP_PACKET};

/// What a new connection wants.
#[derive(Debug)]
pub(super) enum Hello {
    Startup(StartupParams),
    Cancel(CancelKey),
}

pub(super) async fn handshake(conn: &mut FramedConn<Stream>) -> Result<Hello, Error> {
    // libpq may ask for GSS encryption, then TLS, then start up in the clear.
    for _ in 0..3 {
        let body = conn
            .read_startup(MAX_STARTUP_PACKET)
            .await
            .map_err(Error::ClientProtocol)?;
        match startup::decode(&body).map_err(Error::ClientProtocol)? {
            FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                // Bytes sent before our answer would be buffered-data injection (CVE-2021-23214).
                if !conn.rbuf.is_empty() {
                    return Err(Error::ClientProtocol(ProtocolError::Malformed(
                        "data after encryption request",
                    )));
                }
                conn.queue(b"N");
                conn.flush().await.map_err(Error::ClientProtocol)?;
            }
            FirstPacket::Cancel(key) => return Ok(Hello::Cancel(key)),
            FirstPacket::Startup(params) => {
                if params.minor > 0 {
                    negotiate_minor(conn, &params).await?;
                }
                return Ok(Hello::Startup(params));
            }
        }
    }
    Err(Error::ClientProtocol(ProtocolError::Malformed(
        "too many encryption requests",
    )))
}

/// A client asking for 3.x (x > 0) is told we speak 3.0, listing `_pq_.` options we ignore.
async fn negotiate_minor(
    conn: &mut FramedConn<Stream>,
    params: &StartupParams,
) -> Result<(), Error> {
    let unrecognized: Vec<&str> = params
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    let mut buf = BytesMut::new();
    backend::negotiate_protocol_version(&mut buf, PROTOCOL_3_0 & 0xffff, &unrecognized);
    conn.queue(&buf);
    conn.flush().await.map_err(Error::ClientProtocol)
}

//! PROXY protocol v1 (text) and v2 (binary), as HAProxy defines them, read before the startup
//! packet from trusted proxies only (`proxy_protocol_trusted`). Bounded and strict: a
//! malformed header, or any header from an untrusted address, closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::Cidr;

/// v2 signature.
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (HAProxy: 107).
const V1_MAX: usize = 107;
/// Largest v2 header accepted (16-byte prefix + addresses + TLVs).
const V2_MAX: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("PROXY header from an untrusted address")]
    Untrusted,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("connection closed before the PROXY header was complete")]
    Eof,
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The real client.
    Proxied(SocketAddr),
    /// LOCAL / UNKNOWN: a connection by the proxy itself; keep the socket's peer.
    Local,
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A PROXY header starts here.
    Header,
    /// Not a PROXY header (an ordinary first packet).
    Other,
    /// Too few bytes to tell.
    Unsure,
}

/// Classify the first bytes of a connection. No valid PostgreSQL first packet starts like
/// either signature (as a length word they are far above the 10,000-byte startup limit).
pub fn classify(buf: &[u8]) -> Start {
    for sig in [&b"PROXY"[..], &V2_SIG[..]] {
        let n = buf.len().min(sig.len());
        if buf.get(..n) == sig.get(..n) {
            return if n == sig.len() {
                Start::Header
            } else {
                Start::Unsure
            };
        }
    }
    Start::Other
}

/// Parse a header at the start of `buf`: `Ok(None)` = need more bytes, else the header and
/// its length.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    if buf.starts_with(b"PROXY") {
        parse_v1(buf)
    } else if buf.len() < V2_SIG.len() {
        Ok(None)
    } else if buf.starts_with(&V2_SIG) {
        parse_v2(buf)
    } else {
        Err(ProxyError::Malformed("bad signature"))
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    let total = end + 2;
    if total > V1_MAX {
        return Err(ProxyError::Malformed("v1 line too long"));
    }
    let line = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source"))?;
            let dst: IpAddr = dst
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 destination"))?;
            let v4 = *proto == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Err(ProxyError::Malformed("v1 address family"));
            }
            let sport = port(sport)?;
            port(dport)?;
            Header::Proxied(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyError::Malformed("v1 fields")),
    };
    Ok(Some((header, total)))
}

fn port(s: &str) -> Result<u16, ProxyError> {
    // Decimal without sign or leading zeros, as the spec requires.
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ProxyError::Malformed("v1 port"));
    }
    s.parse().map_err(|_| ProxyError::Malformed("v1 port"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(&[ver_cmd, fam, hi, lo]) = buf.get(12..16) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    let Some(body) = buf.get(16..total) else {
        return Ok(None);
    };
    let header = match ver_cmd & 0x0f {
        0 => Header::Local,
        1 => match fam {
            0x11 => {
                let a = body
                    .get(..12)
                    .ok_or(ProxyError::Malformed("v2 IPv4 addresses"))?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Header::Proxied(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
            }
            0x21 => {
                let a = body
                    .get(..36)
                    .ok_or(ProxyError::Malformed("v2 IPv6 addresses"))?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[..16]);
                let ip = Ipv6Addr::from(octets);
                Header::Proxied(SocketAddr::new(
                    ip.into(),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            // UNSPEC, UDP, unix: not a TCP client address.
            _ => Header::Local,
        },
        _ => return Err(ProxyError::Malformed("v2 command")),
    };
    Ok(Some((header, total)))
}

/// At a new TCP connection from `peer`: consume a PROXY header if one is there and `peer` is
/// trusted, and return the real client address (`None`: keep `peer`). Looks with `peek`, and
/// reads exactly the header's bytes, so what follows (SSLRequest, direct TLS, startup) is
/// left on the socket for the handshake.
pub async fn accept(
    tcp: &mut TcpStream,
    peer: Option<IpAddr>,
    trusted: &[Cidr],
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; 16];
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(0) | Err(_) => return Ok(None), // the handshake reports EOF / errors
            Ok(n) => n,
        };
        match classify(buf.get(..n).unwrap_or_default()) {
            Start::Other => return Ok(None),
            Start::Header => break,
            // Readiness stays set while bytes wait unread: poll gently for the rest.
            Start::Unsure => tokio::time::sleep(PEEK_RETRY).await,
        }
    }
    if !peer.is_some_and(|ip| trusted.iter().any(|c| c.contains(ip))) {
        return Err(ProxyError::Untrusted);
    }
    buf.resize(V2_MAX, 0);
    loop {
        let n = tcp.peek(&mut buf).await.map_err(|_| ProxyError::Eof)?;
        if n == 0 {
            return Err(ProxyError::Eof);
        }
        if let Some((header, len)) = parse(buf.get(..n).unwrap_or_default())? {
            let mut header_bytes = vec![0u8; len];
            tcp.read_exact(&mut header_bytes)
                .await
                .map_err(|_| ProxyError::Eof)?;
            return Ok(match header {
                Header::Proxied(addr) => Some(addr),
                Header::Local => None,
            });
        }
        tokio::time::sleep(PEEK_RETRY).await;
    }
}

/// Pause between peeks at an incomplete header (bounded overall by client_login_timeout).
const PEEK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

#[cfg(test)]
mod proptests;
#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests;

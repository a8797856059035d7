//! The chaos round's wire client: a raw connection (plain TCP or TLS) whose every read is
//! bounded and whose every way of ending is reported (an answer, an ErrorResponse then a
//! close, a bare close, a hang), and the two ways a client can vanish on purpose: a reset
//! (SO_LINGER 0, then close: an RST, under TLS in the middle of the stream) and a
//! half-close (shutdown of the write side; under TLS a close_notify first).

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt as _;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::raw::{startup_packet, Msg};

/// How long a read may wait: longer than `query_wait_timeout` (25 s), so only a real hang
/// reaches it.
pub(super) const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A client's connection, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) struct Conn {
    sock: Box<dyn Io>,
    /// A second handle on the TCP socket (under TLS too): its port, and the reset.
    tcp: std::net::TcpStream,
    buf: BytesMut,
    /// The BackendKeyData of the login (pid, secret).
    pub(super) key: Option<(i32, i32)>,
    /// Over TLS: its configuration (for the client's cancels).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

/// How a request ended.
#[derive(Debug)]
pub(super) enum Reply {
    /// ReadyForQuery came; the SQLSTATEs of the errors before it.
    Ready(Vec<String>),
    /// The stop message the caller waited for (CopyInResponse) came.
    Stop,
    /// The connection ended after an ErrorResponse (its SQLSTATE).
    Ended(String),
}

/// The SQLSTATE of an ErrorResponse, checked to be one (five digits or capitals).
fn sqlstate(m: &Msg) -> Result<String, String> {
    let code = m
        .sqlstate()
        .ok_or_else(|| format!("an ErrorResponse without a SQLSTATE: {m:?}"))?;
    let ok = code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if ok {
        Ok(code)
    } else {
        Err(format!("an ErrorResponse with SQLSTATE {code:?}"))
    }
}

impl Conn {
    /// Connect over plain TCP, or with `tls` over TLS (SSLRequest, then the handshake);
    /// `cut`: the handshake stops after half a ClientHello (the client is left mid
    /// handshake, on the plain socket).
    pub(super) async fn connect(
        addr: std::net::SocketAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
        cut: bool,
    ) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let std = tcp.into_std().map_err(|e| format!("into_std: {e}"))?;
        let second = std.try_clone().map_err(|e| format!("try_clone: {e}"))?;
        let mut tcp = TcpStream::from_std(std).map_err(|e| format!("from_std: {e}"))?;
        let conn = |sock: Box<dyn Io>| Conn {
            sock,
            tcp: second,
            buf: BytesMut::new(),
            key: None,
            tls: tls.cloned(),
        };
        let Some(config) = tls else {
            return Ok(conn(Box::new(tcp)));
        };
        let said = async {
            tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
            tcp.read_u8().await
        };
        match tokio::time::timeout(WAIT, said).await {
            Err(_) => return Err("SSLRequest not answered".into()),
            Ok(Err(e)) => return Err(format!("SSLRequest: {e}")),
            Ok(Ok(b'S')) => {}
            Ok(Ok(other)) => return Err(format!("SSLRequest answered {:?}", char::from(other))),
        }
        if cut {
            // A handshake record header announcing 200 bytes, and 3 of them.
            let _ = tcp
                .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00])
                .await;
            return Ok(conn(Box::new(tcp)));
        }
        let name =
            rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .map_err(|_| "the TLS handshake hung".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(conn(Box::new(tls)))
    }

    /// The client's own port (how SHOW CLIENTS and the session registry know it).
    pub(super) fn port(&self) -> u16 {
        self.tcp.local_addr().map_or(0, |a| a.port())
    }

    /// Write `bytes`; false if the connection is gone (what it said before is still read).
    pub(super) async fn send(&mut self, bytes: &[u8]) -> bool {
        self.sock.write_all(bytes).await.is_ok()
    }

    pub(super) async fn query(&mut self, sql: &str) -> bool {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await
    }

    /// The next whole message, None at EOF or reset, Err after [`WAIT`].
    pub(super) async fn read_msg(&mut self) -> Result<Option<Msg>, String> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 1 + usize::try_from(len).map_err(|_| "a negative length")?;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(total - 5).to_vec();
                    return Ok(Some(Msg { tag, body }));
                }
            }
            match tokio::time::timeout(WAIT, self.sock.read_buf(&mut self.buf)).await {
                Err(_) => return Err(format!("no answer and no close within {WAIT:?}")),
                Ok(Ok(0) | Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Read up to ReadyForQuery, or to a message in `stop`; a close must follow an
    /// ErrorResponse with a SQLSTATE.
    pub(super) async fn until(&mut self, stop: &[u8]) -> Result<Reply, String> {
        let mut errors = Vec::new();
        loop {
            let Some(m) = self.read_msg().await? else {
                return match errors.pop() {
                    Some(code) => Ok(Reply::Ended(code)),
                    None => Err("closed without an ErrorResponse".into()),
                };
            };
            match m.tag {
                b'E' => errors.push(sqlstate(&m)?),
                b'Z' => return Ok(Reply::Ready(errors)),
                t if stop.contains(&t) => return Ok(Reply::Stop),
                _ => {}
            }
        }
    }

    /// Whether pgporter ended the session while the client was quiet (a KILL, a
    /// server_fast_close): Some(its SQLSTATE) if an ErrorResponse is waiting unread.
    pub(super) async fn ended_meanwhile(&mut self) -> Result<Option<String>, String> {
        while let Some(Ok(1..)) = self.sock.read_buf(&mut self.buf).now_or_never() {}
        if self.buf.first() == Some(&b'E') {
            return match self.until(&[]).await? {
                Reply::Ended(code) => Ok(Some(code)),
                other => Err(format!("an unprompted ErrorResponse, then {other:?}")),
            };
        }
        Ok(None)
    }

    /// Reset the connection: SO_LINGER 0, then close (an RST, not a FIN; under TLS with
    /// no close_notify).
    pub(super) fn reset(self) {
        let _ = socket2::SockRef::from(&self.tcp).set_linger(Some(std::time::Duration::ZERO));
        drop(self);
    }

    /// Half-close (shutdown of the write side), then read to the close, which must come
    /// within [`WAIT`] (whatever came before it).
    pub(super) async fn half_close(mut self) -> Result<(), String> {
        let _ = self.sock.shutdown().await;
        loop {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(WAIT, self.sock.read(&mut chunk)).await {
                Err(_) => return Err("a half-closed client was not let go".into()),
                Ok(Ok(0) | Err(_)) => return Ok(()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Where a login stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginStop {
    /// SSLRequest answered, half a ClientHello sent (TLS clients only).
    TlsHandshake,
    /// Half of the startup packet sent.
    HalfStartup,
    /// SASLInitialResponse sent, before the server-first message is read.
    ScramFirst,
    /// Server-first message read, the client-final not sent.
    ScramFinal,
    /// Logged in.
    Done,
}

/// Log in as `user` on `db` with SCRAM (over TLS with `tls`), stopping at `stop`.
/// Ok(Err(sqlstate)) when refused.
pub(super) async fn login(
    addr: std::net::SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    (user, password, db): (&str, &str, &str),
    stop: LoginStop,
) -> Result<Result<Conn, String>, String> {
    let mut c = Conn::connect(addr, tls, stop == LoginStop::TlsHandshake).await?;
    if stop == LoginStop::TlsHandshake {
        return Ok(Ok(c));
    }
    let packet = startup_packet(&[(b"user", user.as_bytes()), (b"database", db.as_bytes())]);
    if stop == LoginStop::HalfStartup {
        c.send(&packet[..packet.len() / 2]).await;
        return Ok(Ok(c));
    }
    c.send(&packet).await;
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    loop {
        let Some(m) = c.read_msg().await? else {
            return Err("closed during the login without an ErrorResponse".into());
        };
        let code = m
            .body
            .get(..4)
            .map(|b| i32::from_be_bytes(b.try_into().unwrap()));
        match (m.tag, code) {
            (b'R', Some(10)) => {
                let mut out = BytesMut::new();
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)
                    .unwrap();
                c.send(&out).await;
                if stop == LoginStop::ScramFirst {
                    return Ok(Ok(c));
                }
            }
            (b'R', Some(11)) => {
                if stop == LoginStop::ScramFinal {
                    return Ok(Ok(c));
                }
                scram
                    .update(&m.body[4..])
                    .map_err(|e| format!("server-first: {e}"))?;
                let mut out = BytesMut::new();
                frontend::sasl_response(scram.message(), &mut out).unwrap();
                c.send(&out).await;
            }
            (b'R', Some(12)) => scram
                .finish(&m.body[4..])
                .map_err(|e| format!("server-final: {e}"))?,
            (b'K', _) if m.body.len() >= 8 => {
                let int = |i: usize| {
                    i32::from_be_bytes([m.body[i], m.body[i + 1], m.body[i + 2], m.body[i + 3]])
                };
                c.key = Some((int(0), int(4)));
            }
            (b'Z', _) => return Ok(Ok(c)),
            (b'E', _) => {
                let code = sqlstate(&m)?;
                // The close must follow.
                return match c.read_msg().await? {
                    None => Ok(Err(code)),
                    Some(after) => Err(format!("{after:?} after the login's error {code}")),
                };
            }
            _ => {}
        }
    }
}

/// A frontend message: `tag`, length, `body`.
pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Send a CancelRequest for `key` on a connection of its own (over TLS with `tls`, as libpq
/// 17's cancel API does) and read to its close, which pgporter makes once the cancel is
/// passed on (or ignored): within [`WAIT`], nothing written back.
pub(super) async fn cancel(
    addr: std::net::SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    key: (i32, i32),
) -> Result<(), String> {
    let mut c = Conn::connect(addr, tls, false)
        .await
        .map_err(|e| format!("cancel: {e}"))?;
    let mut out = BytesMut::new();
    frontend::cancel_request(key.0, key.1, &mut out);
    c.send(&out).await;
    let mut chunk = [0u8; 64];
    match tokio::time::timeout(WAIT, c.sock.read(&mut chunk)).await {
        Err(_) => Err(format!(
            "a CancelRequest's connection not closed within {WAIT:?}"
        )),
        Ok(Ok(0) | Err(_)) => Ok(()),
        Ok(Ok(n)) => Err(format!("a CancelRequest answered {:?}", &chunk[..n])),
    }
}

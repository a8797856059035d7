//! The chaos round's wire client: a raw connection whose every read is bounded and whose
//! every way of ending is reported (an answer, an ErrorResponse then a close, a bare close,
//! a hang), and the two ways a client can vanish on purpose: a reset (SO_LINGER 0, then
//! close: an RST) and a half-close (shutdown of the write side).

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::raw::{startup_packet, Msg};

/// How long a read may wait: longer than `query_wait_timeout` (25 s), so only a real hang
/// reaches it.
pub(super) const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) struct Conn {
    pub(super) sock: TcpStream,
    buf: BytesMut,
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
    pub(super) async fn connect(addr: std::net::SocketAddr) -> Result<Conn, String> {
        let sock = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        Ok(Conn {
            sock,
            buf: BytesMut::new(),
        })
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
        loop {
            match self.sock.try_read_buf(&mut self.buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        if self.buf.first() == Some(&b'E') {
            return match self.until(&[]).await? {
                Reply::Ended(code) => Ok(Some(code)),
                other => Err(format!("an unprompted ErrorResponse, then {other:?}")),
            };
        }
        Ok(None)
    }

    /// Reset the connection: SO_LINGER 0, then close (an RST, not a FIN).
    pub(super) fn reset(self) {
        let _ = self.sock.set_zero_linger();
        drop(self.sock);
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
    /// Half of the startup packet sent.
    HalfStartup,
    /// SASLInitialResponse sent, before the server-first message is read.
    ScramFirst,
    /// Server-first message read, the client-final not sent.
    ScramFinal,
    /// Logged in.
    Done,
}

/// Log in as `user` on `db` with SCRAM, stopping at `stop`. Ok(Err(sqlstate)) when refused.
pub(super) async fn login(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
    db: &str,
    stop: LoginStop,
) -> Result<Result<Conn, String>, String> {
    let mut c = Conn::connect(addr).await?;
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

//! `FramedConn`: one connection plus its read and write buffers.
//!
//! Reads are cancel-safe: partial bytes stay in `rbuf` (mini-redis `Connection`). Whole messages
//! are read only during authentication and setup ([`FramedConn::read_message`]); the relay
//! (`client::relay`) streams straight out of `rbuf` without waiting for whole messages.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ProtocolError;

/// Read-buffer size for one read call; buffers start empty and grow only while data flows.
pub(crate) const READ_CHUNK: usize = 8 * 1024;
/// The first read of a fresh buffer.
const FIRST_READ: usize = 1024;

/// One whole message: its type byte and body (without the length word).
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

#[derive(Debug)]
pub struct FramedConn<S> {
    pub io: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedConn<S> {
    pub fn new(io: S) -> Self {
        FramedConn {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        }
    }

    /// Ready when the peer has closed, broken the connection or sent Terminate; meanwhile what
    /// it sends is kept in `rbuf` (up to `keep` bytes, then no more is read). For a client
    /// waiting on something else (a server connection, a console command).
    pub async fn left(&mut self, keep: usize) {
        self.watch(keep, true).await;
    }

    /// As [`Self::left`], but only a closed or broken connection counts: a Terminate behind
    /// other messages waits its turn (a console client's pipelined commands all run).
    pub async fn closed(&mut self, keep: usize) {
        self.watch(keep, false).await;
    }

    async fn watch(&mut self, keep: usize, terminate_counts: bool) {
        loop {
            if terminate_counts && self.terminated() {
                return;
            }
            if self.rbuf.len() >= keep {
                return std::future::pending().await;
            }
            if self.fill().await.is_err() {
                return;
            }
        }
    }

    /// Does `rbuf` hold a Terminate at a message boundary?
    pub fn terminated(&self) -> bool {
        terminated(&self.rbuf)
    }

    /// Read more bytes into `rbuf`; `Eof` when the peer closed. Cancel-safe.
    pub async fn fill(&mut self) -> Result<(), ProtocolError> {
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            // A fresh buffer starts at 1 KB (a login's messages are small, and its buffers
            // are what a burst of logins leaves as heap holes); then READ_CHUNK at a time.
            let more = match self.rbuf.capacity() {
                0 => FIRST_READ,
                _ => READ_CHUNK,
            };
            self.rbuf.reserve(more);
        }
        let n = self.io.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ProtocolError::Eof);
        }
        Ok(())
    }

    /// Read one whole typed message of at most `max` body bytes. Cancel-safe.
    pub async fn read_message(&mut self, max: usize) -> Result<Message, ProtocolError> {
        loop {
            if let Some(msg) = parse_message(&mut self.rbuf, max)? {
                return Ok(msg);
            }
            self.fill().await?;
        }
    }

    /// Read the untyped startup packet (length word first), at most `max` bytes in all.
    /// Returns the body after the length word. Cancel-safe.
    pub async fn read_startup(&mut self, max: usize) -> Result<Bytes, ProtocolError> {
        loop {
            if let Some(&[a, b, c, d]) = self.rbuf.get(..4) {
                let len = i32::from_be_bytes([a, b, c, d]);
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l >= 8)
                    .ok_or(ProtocolError::BadLength(len.into()))?;
                if len > max {
                    return Err(ProtocolError::TooLong { len, max });
                }
                if self.rbuf.len() >= len {
                    let mut packet = self.rbuf.split_to(len);
                    packet.advance(4);
                    return Ok(packet.freeze());
                }
            }
            self.fill().await?;
        }
    }

    /// Queue bytes for the next [`flush`](Self::flush).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Drop buffer capacity kept from earlier traffic, so an idle connection costs little.
    pub fn shrink(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
    }
}

/// Split one whole message off the front of `buf`, if it is all there.
pub fn parse_message(buf: &mut BytesMut, max: usize) -> Result<Option<Message>, ProtocolError> {
    let Some(&[tag, a, b, c, d]) = buf.get(..5) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    let body_len = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_sub(4))
        .ok_or(ProtocolError::BadLength(len.into()))?;
    if body_len > max {
        return Err(ProtocolError::TooLong { len: body_len, max });
    }
    if buf.len() < 5 + body_len {
        buf.reserve(5 + body_len - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    let body = buf.split_to(body_len).freeze();
    Ok(Some(Message { tag, body }))
}

fn terminated(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let Some(&[tag, a, b, c, d]) = rest.get(..5) {
        if tag == super::frontend::TERMINATE {
            return true;
        }
        let Ok(len) = usize::try_from(i32::from_be_bytes([a, b, c, d])) else {
            return false;
        };
        match rest.get(1 + len..) {
            Some(next) if len >= 4 => rest = next,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn terminate_is_found_only_at_a_message_boundary() {
        let query = b"Q\0\0\0\x0bselect\0";
        assert!(!terminated(query));
        assert!(terminated(&[&query[..], b"X\0\0\0\x04"].concat()));
        // An 'X' inside a body, a partial message, a bad length: no.
        assert!(!terminated(b"Q\0\0\0\x06X\0"));
        assert!(!terminated(b"Q\0\0\0\x40select"));
        assert!(!terminated(b"Q\0\0\0\x02X\0\0\0\x04"));
    }

    #[test]
    fn parses_whole_messages_only() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05I"[..]);
        let msg = parse_message(&mut buf, 100).unwrap().unwrap();
        assert_eq!(msg.tag, b'Z');
        assert_eq!(&msg.body[..], b"I");
        assert!(buf.is_empty());

        let mut partial = BytesMut::from(&b"Z\0\0\0\x05"[..]);
        assert!(parse_message(&mut partial, 100).unwrap().is_none());
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut short = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(matches!(
            parse_message(&mut short, 100),
            Err(ProtocolError::BadLength(3))
        ));
        let mut long = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            parse_message(&mut long, 100),
            Err(ProtocolError::TooLong { .. })
        ));
        let mut negative = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(parse_message(&mut negative, 100).is_err());
    }
}

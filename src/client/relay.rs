//! The relay: bytes flow both ways between a client and its server connection in one task,
//! straight out of each side's read buffer, one write per read. Only message headers are
//! inspected, plus ReadyForQuery's status byte, so that on the way out we know whether the server
//! connection is idle and clean. On read-only sessions, ErrorResponse bodies are inspected
//! too, so that PostgreSQL's read-only error (25006) gets pgporter's HINT.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::protocol::scan::{Flow, Scanner};
use crate::protocol::{backend, frontend, FramedConn, ProtocolError};
use crate::stats::Meter;

const READ_ONLY_SQL_TRANSACTION: &[u8] = b"25006";

/// Why relaying ended.
#[derive(Debug)]
pub(super) enum RelayEnd {
    /// The client sent Terminate (not forwarded).
    Terminate,
    /// The client closed its socket.
    ClientGone,
    /// The server closed its socket.
    ServerGone,
    /// The client broke the protocol (bad length, oversized message) or its socket failed.
    ClientError(ProtocolError),
    /// The server connection failed.
    ServerError(ProtocolError),
}

/// Transaction bookkeeping across both directions: is the server connection reusable?
#[derive(Debug, Clone)]
pub struct TxTracker {
    /// Sync points (Query, Sync, FunctionCall) sent and not yet answered by ReadyForQuery.
    outstanding: u32,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    /// Status byte of the last ReadyForQuery ('I', 'T' or 'E').
    status: u8,
    /// Where query/transaction counts and times go (None: not counted).
    meter: Option<Meter>,
    /// The last `in_hot_standby` ParameterStatus (PostgreSQL 14+ reports a promotion on live
    /// connections): Some(true) = standby.
    hot_standby: Option<bool>,
}

impl Default for TxTracker {
    fn default() -> Self {
        TxTracker {
            outstanding: 0,
            unsynced: false,
            status: b'I',
            meter: None,
            hot_standby: None,
        }
    }
}

impl TxTracker {
    /// A tracker that also counts queries, transactions and bytes into `meter`.
    pub fn metered(meter: Meter) -> Self {
        TxTracker {
            meter: Some(meter),
            ..TxTracker::default()
        }
    }

    fn on_client(&mut self, tag: u8) -> Flow {
        match tag {
            frontend::TERMINATE => return Flow::StopBefore,
            frontend::QUERY | frontend::FUNCTION_CALL => {
                self.request_started();
                self.outstanding += 1;
            }
            frontend::SYNC => {
                self.request_started();
                self.outstanding += 1;
                self.unsynced = false;
            }
            frontend::PARSE
            | frontend::BIND
            | frontend::EXECUTE
            | frontend::DESCRIBE
            | frontend::CLOSE
            | frontend::FLUSH => self.unsynced = true,
            _ => {}
        }
        Flow::Continue
    }

    fn on_server(&mut self, tag: u8, body: &[u8]) -> Flow {
        if tag == backend::READY_FOR_QUERY {
            self.outstanding = self.outstanding.saturating_sub(1);
            self.status = body.first().copied().unwrap_or(b'E');
            let (idle, more) = (self.status == b'I', self.outstanding > 0);
            if let Some(m) = &mut self.meter {
                m.ready_for_query(idle, more);
            }
        } else if tag == backend::PARAMETER_STATUS {
            if let Some(value) = body.strip_prefix(b"in_hot_standby\0") {
                self.hot_standby = Some(value.starts_with(b"on"));
            }
        }
        Flow::Continue
    }

    /// What the server last reported as `in_hot_standby` during this relay, if anything.
    pub fn reported_hot_standby(&self) -> Option<bool> {
        self.hot_standby
    }

    /// A sync point goes out: the clock starts if the server was idle (one clock read per
    /// request burst, not per message).
    fn request_started(&mut self) {
        if self.outstanding == 0 {
            if let Some(m) = &mut self.meter {
                m.request_started();
            }
        }
    }

    /// Count relayed bytes (received from the client, sent to it).
    fn bytes(&mut self, received: u64, sent: u64) {
        if let Some(m) = &self.meter {
            m.pool.bytes(received, sent);
        }
    }

    /// True when the server is idle outside a transaction with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.outstanding == 0 && !self.unsynced && self.status == b'I'
    }

    /// The last ReadyForQuery status byte.
    pub fn status(&self) -> u8 {
        self.status
    }
}

/// One direction of the relay.
#[derive(Debug)]
struct Pump {
    scanner: Scanner,
    /// Bytes at the front of the source's read buffer cleared for forwarding.
    ready: usize,
    need_flush: bool,
    stopped: bool,
    /// Bytes cleared for forwarding since the last [`Pump::take_counted`].
    counted: u64,
}

impl Pump {
    fn new(max_body: usize) -> Self {
        Pump {
            scanner: Scanner::new(max_body),
            ready: 0,
            need_flush: false,
            stopped: false,
            counted: 0,
        }
    }

    fn take_counted(&mut self) -> u64 {
        std::mem::take(&mut self.counted)
    }
}

enum PumpEnd {
    Stopped,
    Eof,
    ReadError(ProtocolError),
    WriteError(io::Error),
}

/// Relay until one side ends. Both connections keep their buffers: unforwarded bytes stay put.
/// `read_only_hint`: set on read-only sessions, added to the server's 25006 errors.
pub(super) async fn relay<C, S>(
    client: &mut FramedConn<C>,
    server: &mut FramedConn<S>,
    tracker: &mut TxTracker,
    max_client_message: usize,
    read_only_hint: Option<&str>,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Pump::new(max_client_message);
    let mut down = Pump::new(usize::MAX);
    poll_fn(|cx| {
        let c2s = poll_pump(
            cx,
            &mut up,
            &mut client.io,
            &mut client.rbuf,
            &mut server.io,
            |_| false,
            |tag, _| tracker.on_client(tag),
            |_| None,
        );
        if let Poll::Ready(end) = c2s {
            tracker.bytes(up.take_counted(), down.take_counted());
            return Poll::Ready(match end {
                PumpEnd::Stopped => RelayEnd::Terminate,
                PumpEnd::Eof => RelayEnd::ClientGone,
                PumpEnd::ReadError(e) => RelayEnd::ClientError(e),
                PumpEnd::WriteError(e) => RelayEnd::ServerError(e.into()),
            });
        }
        let s2c = poll_pump(
            cx,
            &mut down,
            &mut server.io,
            &mut server.rbuf,
            &mut client.io,
            |tag| {
                // ParameterStatus is rare and small: read it for in_hot_standby.
                tag == backend::READY_FOR_QUERY
                    || tag == backend::PARAMETER_STATUS
                    || (read_only_hint.is_some() && tag == backend::ERROR_RESPONSE)
            },
            |tag, body| {
                // Held back (stop) to be re-encoded with the hint by `rewrite` below.
                if read_only_hint.is_some()
                    && tag == backend::ERROR_RESPONSE
                    && backend::error_code(body) == Some(READ_ONLY_SQL_TRANSACTION)
                {
                    return Flow::StopBefore;
                }
                tracker.on_server(tag, body)
            },
            |buf| read_only_hint.and_then(|hint| add_hint(buf, hint)),
        );
        tracker.bytes(up.take_counted(), down.take_counted());
        match s2c {
            Poll::Ready(PumpEnd::Stopped | PumpEnd::Eof) => Poll::Ready(RelayEnd::ServerGone),
            Poll::Ready(PumpEnd::ReadError(e)) => Poll::Ready(RelayEnd::ServerError(e)),
            Poll::Ready(PumpEnd::WriteError(e)) => Poll::Ready(RelayEnd::ClientError(e.into())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Replace the whole ErrorResponse at the front of `buf` with one carrying `hint`; returns
/// its new length.
fn add_hint(buf: &mut BytesMut, hint: &str) -> Option<usize> {
    let &[_, a, b, c, d] = buf.get(..5)? else {
        return None;
    };
    let total = 1 + usize::try_from(i32::from_be_bytes([a, b, c, d])).ok()?;
    let new = backend::error_with_hint(buf.get(5..total)?, hint)?;
    let tail = buf.split_off(total);
    let len = new.len();
    *buf = new;
    buf.extend_from_slice(&tail);
    Some(len)
}

/// Move bytes from `src` to `dst` until something blocks (Pending) or the direction ends.
/// A message `visit` stops at is offered to `rewrite` (once it is at the front of `buf`): if
/// that replaces it, relaying goes on with the new message; otherwise the direction stops.
#[allow(clippy::too_many_arguments)]
fn poll_pump<R, W>(
    cx: &mut Context<'_>,
    pump: &mut Pump,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    want_body: impl Fn(u8) -> bool + Copy,
    mut visit: impl FnMut(u8, &[u8]) -> Flow,
    mut rewrite: impl FnMut(&mut BytesMut) -> Option<usize>,
) -> Poll<PumpEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        while pump.ready > 0 {
            let chunk = buf.get(..pump.ready).unwrap_or_default();
            match ready!(Pin::new(&mut *dst).poll_write(cx, chunk)) {
                Ok(0) => return Poll::Ready(PumpEnd::WriteError(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    buf.advance(n);
                    pump.ready -= n;
                    pump.need_flush = true;
                }
                Err(e) => return Poll::Ready(PumpEnd::WriteError(e)),
            }
        }
        if pump.need_flush {
            if let Err(e) = ready!(Pin::new(&mut *dst).poll_flush(cx)) {
                return Poll::Ready(PumpEnd::WriteError(e));
            }
            pump.need_flush = false;
        }
        if pump.stopped {
            match rewrite(buf) {
                Some(len) => {
                    pump.stopped = false;
                    pump.ready = len;
                    pump.counted += len as u64;
                    continue;
                }
                None => return Poll::Ready(PumpEnd::Stopped),
            }
        }
        // Scan what the buffer holds beyond the cleared part (left from setup, or just read).
        let unscanned = buf.get(pump.ready..).unwrap_or_default();
        if !unscanned.is_empty() {
            match pump.scanner.scan(unscanned, want_body, &mut visit) {
                Ok(s) => {
                    pump.ready += s.forward;
                    pump.counted += s.forward as u64;
                    pump.stopped = s.stopped;
                }
                Err(e) => return Poll::Ready(PumpEnd::ReadError(e)),
            }
            if pump.ready > 0 || pump.stopped {
                continue;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(crate::protocol::READ_CHUNK);
        }
        match ready!(poll_read_buf(Pin::new(&mut *src), cx, buf)) {
            Ok(0) => return Poll::Ready(PumpEnd::Eof),
            Ok(_) => {}
            Err(e) => return Poll::Ready(PumpEnd::ReadError(e.into())),
        }
    }
}

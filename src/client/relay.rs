//! The relay: bytes flow both ways between a client and its server connection in one task,
//! straight out of each side's read buffer, one write per read. Message headers are inspected,
//! plus ReadyForQuery's status byte (so that on the way out we know whether the server
//! connection is idle and clean) and, through [`super::tap`], the bodies the spoof check and
//! the audit log need.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::protocol::scan::{Rewrite, Scanner, Visit};
use crate::protocol::{backend, frontend, FramedConn, ProtocolError};

use super::tap::{Held, RelayState};
pub use super::tracker::TxTracker;
use super::watchdog::{ServerState, Timeout};

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
    /// The client named an identity GUC where the message could not be held back whole
    /// (mid-batch, or a body too large to wait for): the session ends (FATAL 42501) and the
    /// server connection, holding at most an incomplete message, is closed.
    Spoofed,
    /// The client sent a message of this type, invalid after login (not forwarded): the
    /// session ends with FATAL 08P01, as in PgBouncer.
    Unexpected(u8),
    /// query_timeout, idle_transaction_timeout or transaction_timeout ran out.
    Timeout(Timeout),
    /// server_fast_close: the server connection must be closed, and it is idle.
    FastClose,
    /// Transaction mode: a transaction ended, everything is answered and passed on, the
    /// client has sent nothing more and has no named prepared statement open.
    TransactionEnd,
    /// Renamed prepared statements, and which of the server's answers are still due is no
    /// longer known (see `super::renaming::Renaming::unsure`).
    RenamingLost,
    /// Statement mode: a request left a transaction open (its ReadyForQuery is held).
    LongTransaction,
}

/// One direction of the relay.
#[derive(Debug)]
struct Pump {
    scanner: Scanner,
    /// Bytes at the front of the source's read buffer cleared for forwarding.
    ready: usize,
    need_flush: bool,
    stopped: bool,
    /// Bytes forwarded.
    bytes: u64,
    /// Bytes cleared for forwarding since the last [`Pump::take_counted`] (stats).
    counted: u64,
}

impl Pump {
    fn new(max_body: usize) -> Self {
        Pump {
            scanner: Scanner::new(max_body),
            ready: 0,
            need_flush: false,
            stopped: false,
            bytes: 0,
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

/// Byte counts of one relay (client -> server, server -> client).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Traffic {
    pub up: u64,
    pub down: u64,
}

/// Relay until one side ends. Both connections keep their buffers: unforwarded bytes stay put.
pub(super) async fn relay<C, S>(
    client: &mut FramedConn<C>,
    server: &mut FramedConn<S>,
    state: &mut RelayState,
    max_client_message: usize,
    traffic: &mut Traffic,
    session: &crate::sessions::SessionInfo,
    live: &crate::config::ConfigHandle,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Pump::new(max_client_message);
    let mut down = Pump::new(usize::MAX);
    let end = loop {
        let end = poll_fn(|cx| {
            let end = poll_both(cx, client, server, state, &mut up, &mut down);
            let (sent, received) = (up.take_counted(), down.take_counted());
            state.tracker.bytes(sent, received);
            if state.tracker.take_started() {
                session.requested();
            }
            if end.is_pending() {
                // server_fast_close (asked only with it on), or in transaction mode: end once
                // the server is idle, with everything answered and passed on and nothing of
                // the client's waiting.
                let release = state.transaction_mode
                    && (state.prepared.as_ref().is_some_and(|p| p.none_open())
                        || state.renaming.as_ref().is_some_and(|r| r.releasable()));
                if (release || session.close_asked())
                    && state.tracker.is_idle()
                    && state.ahead == 0
                    && state.held.is_none()
                    && client.rbuf.is_empty()
                    && up.scanner.at_boundary()
                    && down.ready == 0
                    && !down.need_flush
                    && server.rbuf.is_empty()
                {
                    return Poll::Ready(if session.close_asked() {
                        RelayEnd::FastClose
                    } else {
                        RelayEnd::TransactionEnd
                    });
                }
                if session.take_retime() {
                    state.watchdog = super::watchdog::Watchdog::retimed(
                        state.watchdog.take(),
                        state.tracker.busy_since(),
                        live.load().session_timeouts(&session.pool_user),
                    );
                }
                if let Some(w) = &mut state.watchdog {
                    let t = &state.tracker;
                    // Part of a client message arrived and the rest is awaited: a request in
                    // progress (a client stalling mid-message holds the server).
                    let partial = !client.rbuf.is_empty() || !up.scanner.at_boundary();
                    let server = if partial {
                        ServerState::Busy
                    } else if t.is_idle() {
                        ServerState::Ready
                    } else if t.answered() && !t.mid_batch() && !t.lost() {
                        ServerState::IdleInTransaction
                    } else if t.lost() && t.quiet() {
                        // The count of answers due is not known: go by the last
                        // ReadyForQuery when nothing was asked since, as PgBouncer does.
                        match t.status() {
                            b'I' => ServerState::Ready,
                            _ => ServerState::IdleInTransaction,
                        }
                    } else {
                        ServerState::Busy
                    };
                    let xact_since = t.xact_since();
                    if let Poll::Ready(limit) =
                        w.poll(cx, sent > 0, received > 0, server, xact_since)
                    {
                        return Poll::Ready(RelayEnd::Timeout(limit));
                    }
                }
            }
            end
        })
        .await;
        match end {
            _ if state.renaming_lost => break RelayEnd::RenamingLost,
            _ if state.long_transaction => break RelayEnd::LongTransaction,
            RelayEnd::Terminate if state.spoofed => break RelayEnd::Spoofed,
            RelayEnd::Terminate if state.unexpected.is_some() => {
                break RelayEnd::Unexpected(state.unexpected.unwrap_or_default())
            }
            RelayEnd::Terminate if state.held.is_some() => {
                if let Err(end) = refuse_held(client, server, state, &mut down).await {
                    break end;
                }
                up.stopped = false;
            }
            end => break end,
        }
    };
    traffic.up += up.bytes;
    traffic.down += down.bytes;
    // Part of a client message went to the server: it waits for the rest, so whatever is
    // sent next (a reset) would be read as that message's body.
    state.cut_short = !up.scanner.at_boundary();
    end
}

fn poll_both<C, S>(
    cx: &mut Context<'_>,
    client: &mut FramedConn<C>,
    server: &mut FramedConn<S>,
    state: &mut RelayState,
    up: &mut Pump,
    down: &mut Pump,
) -> Poll<RelayEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let c2s = poll_pump(
        cx,
        up,
        &mut client.io,
        &mut client.rbuf,
        &mut server.io,
        &mut state.front(),
    );
    if let Poll::Ready(end) = c2s {
        return match end {
            PumpEnd::Stopped => Poll::Ready(RelayEnd::Terminate),
            PumpEnd::Eof => Poll::Ready(RelayEnd::ClientGone),
            PumpEnd::ReadError(e) => Poll::Ready(RelayEnd::ClientError(e)),
            // The server stopped taking bytes (it closed, after its FATAL, while the client
            // still sent): what it sent before goes to the client first, as on a direct
            // connection, and the relay ends where that stream ends.
            PumpEnd::WriteError(_) => poll_down(cx, server, &mut client.io, state, down),
        };
    }
    poll_down(cx, server, &mut client.io, state, down)
}

fn poll_down<C, S>(
    cx: &mut Context<'_>,
    server: &mut FramedConn<S>,
    client_io: &mut C,
    state: &mut RelayState,
    down: &mut Pump,
) -> Poll<RelayEnd>
where
    C: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match poll_pump(
        cx,
        down,
        &mut server.io,
        &mut server.rbuf,
        client_io,
        &mut state.back(),
    ) {
        Poll::Ready(PumpEnd::Stopped | PumpEnd::Eof) => Poll::Ready(RelayEnd::ServerGone),
        Poll::Ready(PumpEnd::ReadError(e)) => Poll::Ready(RelayEnd::ServerError(e)),
        Poll::Ready(PumpEnd::WriteError(e)) => Poll::Ready(RelayEnd::ClientError(e.into())),
        Poll::Pending => Poll::Pending,
    }
}

/// The client named an identity GUC in a Query or Parse (held, unforwarded, at the front of
/// its buffer): let the server finish answering what came before, then refuse it as
/// PostgreSQL would refuse a statement (ERROR 42501; for Parse, skip to the next Sync; inside
/// a transaction block the transaction is aborted, on the server too).
async fn refuse_held<C, S>(
    client: &mut FramedConn<C>,
    server: &mut FramedConn<S>,
    state: &mut RelayState,
    down: &mut Pump,
) -> Result<(), RelayEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        if let Poll::Ready(end) = poll_down(cx, server, &mut client.io, state, down) {
            return Poll::Ready(Err(end));
        }
        let drained = down.ready == 0 && !down.need_flush && down.scanner.at_boundary();
        if state.tracker.answered() && state.ahead == 0 && drained && server.rbuf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // A wait for the server as any other: query_timeout and transaction_timeout run (the
        // relay's kill and host-down branches enclose this one).
        if let Some(w) = &mut state.watchdog {
            let since = state.tracker.xact_since();
            if let Poll::Ready(limit) = w.poll(cx, false, false, ServerState::Busy, since) {
                return Poll::Ready(Err(RelayEnd::Timeout(limit)));
            }
        }
        // The client may leave meanwhile: what it sends is kept (behind the held message),
        // its EOF ends the session.
        while client.rbuf.len() < HELD_READ_LIMIT {
            if client.rbuf.capacity() - client.rbuf.len() < 1024 {
                client.rbuf.reserve(crate::protocol::READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut client.io), cx, &mut client.rbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(RelayEnd::ClientGone)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(RelayEnd::ClientError(e.into()))),
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await?;
    let held = state.held.take();
    // Waits for the client from here on hold the server connection in the middle of the
    // client's request (for Parse, a batch the server has not seen the Sync of): the limits
    // run as for any request in progress.
    let since = state.tracker.xact_since();
    let mut watch = Watch::new(state.watchdog.as_mut(), since);
    skip_message(client, &mut watch).await?;
    let mut buf = bytes::BytesMut::new();
    crate::error::Error::IdentitySpoof.encode_error(&mut buf);
    client.queue(&buf);
    if held == Some(Held::Parse) {
        client.flush().await.map_err(RelayEnd::ClientError)?;
        skip_through_sync(client, &mut watch).await?;
    }
    if state.tracker.status() == b'T' {
        let status = abort_transaction(server, client)
            .await
            .map_err(RelayEnd::ServerError)?;
        state.tracker.set_status(status);
    }
    buf.clear();
    backend::ready_for_query(&mut buf, state.tracker.status());
    client.queue(&buf);
    client.flush().await.map_err(RelayEnd::ClientError)
}

/// How much a client may send behind a held message before pgporter stops reading it.
const HELD_READ_LIMIT: usize = 64 * 1024;

/// A statement that fails with 42501, for the server's log to say why.
const ABORT_SQL: &str = "DO $pgporter$BEGIN RAISE EXCEPTION 'pgporter refused a statement naming \
    the identity settings' USING ERRCODE = '42501'; END$pgporter$";

/// Make the server's transaction block fail as the refused statement would have (a COMMIT then
/// rolls back): run a statement that errors; its ErrorResponse and ReadyForQuery are pgporter's
/// own, anything else the server says meanwhile (notices, notifications) goes to the client.
/// Returns the new transaction status.
async fn abort_transaction<C, S>(
    server: &mut FramedConn<S>,
    client: &mut FramedConn<C>,
) -> Result<u8, ProtocolError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut query = BytesMut::new();
    postgres_protocol::message::frontend::query(ABORT_SQL, &mut query)?;
    server.queue(&query);
    server.flush().await?;
    loop {
        let msg = server
            .read_message(crate::protocol::MAX_CONTROL_MESSAGE)
            .await?;
        match msg.tag {
            backend::READY_FOR_QUERY => return Ok(msg.body.first().copied().unwrap_or(b'E')),
            backend::ERROR_RESPONSE | backend::COMMAND_COMPLETE => {}
            tag => backend::message(&mut client.wbuf, tag, |b| b.extend_from_slice(&msg.body)),
        }
    }
}

/// Why skipping the client's messages stopped short.
#[derive(Debug)]
pub(super) enum SkipEnd {
    /// The client left, or broke the protocol.
    Client(ProtocolError),
    /// A session limit ran out while the client was awaited (see [`Watch`]).
    Timeout(Timeout),
}

impl From<ProtocolError> for SkipEnd {
    fn from(e: ProtocolError) -> Self {
        SkipEnd::Client(e)
    }
}

impl SkipEnd {
    /// What ends the session (the relay's timeouts end it with these too).
    pub(super) fn into_error(self) -> crate::error::Error {
        match self {
            SkipEnd::Client(e) => crate::error::Error::ClientProtocol(e),
            SkipEnd::Timeout(limit) => limit.error(),
        }
    }
}

impl From<SkipEnd> for RelayEnd {
    fn from(end: SkipEnd) -> Self {
        match end {
            SkipEnd::Client(e) => RelayEnd::ClientError(e),
            SkipEnd::Timeout(limit) => RelayEnd::Timeout(limit),
        }
    }
}

/// What bounds a wait for the client's bytes while a refused or cancelled request is
/// skipped: with a server connection held, the session's watchdog, as for a request in
/// progress (query_timeout from the client's last bytes, transaction_timeout); without
/// one, nothing here (the session is idle, where client_idle_timeout reaches it).
pub(super) struct Watch<'a> {
    dog: Option<&'a mut super::watchdog::Watchdog>,
    xact_since: Option<tokio::time::Instant>,
}

impl<'a> Watch<'a> {
    pub(super) fn new(
        dog: Option<&'a mut super::watchdog::Watchdog>,
        xact_since: Option<tokio::time::Instant>,
    ) -> Self {
        Watch { dog, xact_since }
    }

    /// No limit runs (no server connection is held).
    pub(super) fn none() -> Self {
        Watch::new(None, None)
    }

    /// Read more of the client's bytes, unless a limit runs out first.
    async fn fill<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut FramedConn<C>,
    ) -> Result<(), SkipEnd> {
        let Some(dog) = self.dog.as_deref_mut() else {
            return Ok(client.fill().await?);
        };
        let since = self.xact_since;
        let mut fill = std::pin::pin!(client.fill());
        poll_fn(|cx| {
            if let Poll::Ready(read) = std::future::Future::poll(fill.as_mut(), cx) {
                return Poll::Ready(read.map_err(SkipEnd::Client));
            }
            dog.poll(cx, false, false, ServerState::Busy, since)
                .map(|limit| Err(SkipEnd::Timeout(limit)))
        })
        .await?;
        // A request's bytes: query_timeout counts from here, as in the relay.
        dog.requested();
        Ok(())
    }
}

/// Drop the message at the front of the client's buffer, reading more of it if needed.
async fn skip_message<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<C>,
    watch: &mut Watch<'_>,
) -> Result<u8, SkipEnd> {
    while client.rbuf.len() < 5 {
        watch.fill(client).await?;
    }
    let (tag, len) = match client.rbuf.get(..5) {
        Some(&[tag, a, b, c, d]) => (tag, i32::from_be_bytes([a, b, c, d])),
        _ => return Err(ProtocolError::Malformed("message header").into()),
    };
    let mut left = usize::try_from(len)
        .ok()
        .filter(|l| *l >= 4)
        .ok_or(ProtocolError::BadLength(len.into()))?
        + 1;
    loop {
        let take = left.min(client.rbuf.len());
        client.rbuf.advance(take);
        left -= take;
        if left == 0 {
            return Ok(tag);
        }
        watch.fill(client).await?;
    }
}

/// The client's first request, cancelled (CancelRequest) while it waited for a server
/// connection: answered as PostgreSQL answers a request cancelled before it ran. A Query or
/// FunctionCall gets ERROR 57014 and ReadyForQuery; an extended-protocol batch gets the error
/// at once and, once the client's Sync came (everything up to it discarded, as PostgreSQL
/// discards after an error), ReadyForQuery. The session holds no server: outside any
/// transaction.
pub(super) async fn answer_cancelled<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<C>,
    watch: &mut Watch<'_>,
) -> Result<(), SkipEnd> {
    let mut buf = BytesMut::new();
    crate::error::Error::Canceled.encode_error(&mut buf);
    match skip_message(client, watch).await? {
        frontend::QUERY | frontend::FUNCTION_CALL => {}
        frontend::TERMINATE => return Err(ProtocolError::Eof.into()),
        frontend::SYNC => buf.clear(),
        _ => {
            client.queue(&buf);
            client.flush().await?;
            buf.clear();
            skip_through_sync(client, watch).await?;
        }
    }
    backend::ready_for_query(&mut buf, b'I');
    client.queue(&buf);
    Ok(client.flush().await?)
}

/// After a refused Parse: discard what the client sent up to and including its Sync.
async fn skip_through_sync<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<C>,
    watch: &mut Watch<'_>,
) -> Result<(), SkipEnd> {
    loop {
        match skip_message(client, watch).await? {
            frontend::SYNC => return Ok(()),
            frontend::TERMINATE => return Err(ProtocolError::Eof.into()),
            _ => {}
        }
    }
}

/// Move bytes from `src` to `dst` until something blocks (Pending) or the direction ends.
fn poll_pump<R, W>(
    cx: &mut Context<'_>,
    pump: &mut Pump,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    visit: &mut impl Visit,
) -> Poll<PumpEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if pump.ready > 0 {
            // E.g. audit events for what is about to be forwarded go to the writer first.
            ready!(visit.before_forward(cx));
        }
        while pump.ready > 0 {
            let chunk = buf.get(..pump.ready).unwrap_or_default();
            match ready!(Pin::new(&mut *dst).poll_write(cx, chunk)) {
                Ok(0) => return Poll::Ready(PumpEnd::WriteError(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    buf.advance(n);
                    pump.ready -= n;
                    pump.need_flush = true;
                    pump.bytes += n as u64;
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
            match visit.rewrite(buf) {
                Rewrite::Done => {
                    pump.stopped = false;
                    continue;
                }
                Rewrite::Stop => return Poll::Ready(PumpEnd::Stopped),
                // Read on, and ask again.
                Rewrite::NeedMore => {}
            }
        } else if let Some(unscanned) = buf.get(pump.ready..).filter(|u| !u.is_empty()) {
            // Scan what the buffer holds beyond the cleared part (left from setup, or just
            // read).
            match pump.scanner.scan(unscanned, visit) {
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

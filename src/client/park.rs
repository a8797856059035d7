//! A logged-in client that says nothing waits in the lobby ([`crate::net::lobby`]) instead of
//! in a task of its own, and gets a fresh task when it speaks, closes or must end.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use tokio::time::Duration;

use crate::net::listener::ClientCount;
use crate::net::lobby::Guest;
use crate::net::Stream;
use crate::protocol::FramedConn;
use crate::sessions::SessionInfo;

use super::{report, serve_seat, Peer, Seat};

/// How long a logged-in client may stay quiet before it is parked. Clients that query right
/// after their login (most do) never see the lobby and pay nothing for it.
const GRACE: Duration = Duration::from_millis(100);

/// A parked client: what its task held, without the task (its address is in the session's
/// registry entry).
#[derive(Debug)]
pub struct Parked {
    seat: Seat,
    shared: ClientCount,
}

impl Parked {
    pub(super) fn new(seat: Seat, shared: ClientCount) -> Parked {
        Parked { seat, shared }
    }

    fn peer(&self) -> Peer {
        let info = &self.seat.guard.info;
        match info.ip {
            Some(ip) => Peer::Tcp(std::net::SocketAddr::new(ip, info.port)),
            None => Peer::Unix,
        }
    }
}

impl Guest for Parked {
    fn ended(&self) -> bool {
        self.seat.guard.info.is_killed()
    }

    fn leave(self, socket: std::net::TcpStream) {
        let tracker = self.shared.tracker.clone();
        tracker.spawn(resume(socket, self));
    }
}

/// Wait up to [`GRACE`] for the client's first request. True when it stayed quiet and can be
/// parked (plain TCP, nothing buffered either way); false when it spoke, closed or was killed
/// (the caller serves it), or cannot be parked.
pub(super) async fn quiet(conn: &FramedConn<Stream>, info: &SessionInfo) -> bool {
    if !matches!(conn.io, Stream::Tcp(_)) || !conn.rbuf.is_empty() || !conn.wbuf.is_empty() {
        return false;
    }
    let mut kill = pin!(info.killed());
    let mut grace = pin!(tokio::time::sleep(GRACE));
    std::future::poll_fn(|cx| {
        if kill.as_mut().poll(cx).is_ready() || conn.io.poll_read_ready(cx).is_ready() {
            return Poll::Ready(false);
        }
        grace.as_mut().poll(cx).map(|()| true)
    })
    .await
}

/// Hand the client's socket to the lobby; its task ends.
pub(super) fn park(tcp: tokio::net::TcpStream, parked: Parked) {
    match tcp.into_std() {
        Ok(socket) => {
            let shared = std::sync::Arc::clone(&parked.shared);
            shared.lobby.park(socket, parked);
        }
        Err(e) => {
            tracing::warn!(peer = %parked.peer(), error = %e, "cannot park a quiet client; closing it")
        }
    }
}

/// The client is back from the lobby: serve it in a task of its own.
async fn resume(socket: std::net::TcpStream, parked: Parked) {
    let peer = parked.peer();
    let tag = super::lines::Tag::of(&parked.seat.guard.info);
    let Parked { seat, shared } = parked;
    let tcp = match tokio::net::TcpStream::from_std(socket) {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot take a client back from the lobby; closing it");
            return;
        }
    };
    let mut conn = FramedConn::new(Stream::Tcp(tcp));
    let config = shared.config.load();
    if let Err(e) = serve_seat(&mut conn, seat, &peer, &shared, &config).await {
        report(&mut conn, &peer, &tag, &e, &config).await;
    }
}

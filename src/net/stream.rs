//! `Stream`: TCP, unix socket or TLS over TCP, one type for both directions.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsStream;

#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over TCP, accepted from a client or connected to a server.
    Tls(Box<TlsStream<TcpStream>>),
    /// The socket was handed to a TLS handshake that has not given it back (it failed):
    /// reads see EOF, writes fail.
    Detached,
}

impl Stream {
    pub fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }

    /// Ready once the socket has data (or EOF), without a read buffer meanwhile, so an idle
    /// client costs no buffer memory; a poll function rather than a future, so the idle task
    /// stores nothing for it either. TLS is ready at once: rustls may already hold decrypted
    /// bytes that the socket no longer shows, so the caller's read does the waiting.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(_) | Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    /// This end's TCP address (None for a unix socket): SHOW CLIENTS / SERVERS local_addr.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
            Stream::Unix(_) | Stream::Detached => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Take the TCP socket out for a TLS handshake, leaving `Detached`; `None` (and `self`
    /// unchanged) for anything but plain TCP.
    pub fn take_tcp(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Tcp(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The peer's end-entity certificate on a TLS connection (the client's certificate on an
    /// accepted connection, the server's on one we opened).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        let Stream::Tls(tls) = self else { return None };
        let certs = match tls.as_ref() {
            TlsStream::Server(s) => s.get_ref().1.peer_certificates(),
            TlsStream::Client(c) => c.get_ref().1.peer_certificates(),
        };
        certs.and_then(|c| c.first()).map(|c| c.as_ref())
    }

    /// What a TLS connection agreed on (None: not TLS).
    pub fn tls_info(&self) -> Option<crate::tls::TlsInfo> {
        let Stream::Tls(tls) = self else { return None };
        match tls.as_ref() {
            TlsStream::Server(s) => crate::tls::TlsInfo::of(s.get_ref().1),
            TlsStream::Client(c) => crate::tls::TlsInfo::of(c.get_ref().1),
        }
    }

    /// The ALPN protocol agreed on a TLS connection.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        let Stream::Tls(tls) = self else { return None };
        match tls.as_ref() {
            TlsStream::Server(s) => s.get_ref().1.alpn_protocol(),
            TlsStream::Client(c) => c.get_ref().1.alpn_protocol(),
        }
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket detached for TLS")
}

impl Stream {
    /// The peer's process id on a unix socket (SO_PEERCRED), None otherwise.
    pub fn peer_pid(&self) -> Option<i32> {
        if let Stream::Unix(s) = self {
            return s.peer_cred().ok().and_then(|c| c.pid());
        }
        None
    }

    /// The peer's uid on a unix socket (SO_PEERCRED), None otherwise.
    pub fn peer_uid(&self) -> Option<u32> {
        if let Stream::Unix(s) = self {
            return s.peer_cred().ok().map(|c| c.uid());
        }
        None
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Detached => false,
        }
    }
}

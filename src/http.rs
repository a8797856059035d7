//! The HTTP listener (metrics_listen_addr): GET /metrics, /healthz, /readyz. A deliberately
//! tiny HTTP/1.x server: one request per connection, bounded request head, bounded time.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Duration};

use crate::app::Shared;
use crate::error::Error;
use crate::snapshot::{readiness, Snapshot};

const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind `host:port`. `*:port` is every address, IPv4 and IPv6: one dual-stack socket on `::`
/// (IPv4 clients arrive mapped), or `0.0.0.0` alone on a host without IPv6. It was `0.0.0.0`
/// alone, so on an IPv6 (or IPv6-first dual-stack) Kubernetes cluster, where the kubelet
/// probes and Prometheus scrapes the pod's IPv6 address, nothing answered.
pub async fn bind(addr: &str) -> Result<TcpListener, Error> {
    let refused = |addr: &str, e: std::io::Error| {
        Error::Config(format!(
            "cannot listen on {addr} (metrics_listen_addr): {e}"
        ))
    };
    let Some(port) = addr.strip_prefix("*:") else {
        return TcpListener::bind(addr).await.map_err(|e| refused(addr, e));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| Error::Config(format!("metrics_listen_addr: bad port in {addr}")))?;
    match dual_stack(port) {
        Ok(listener) => Ok(listener),
        Err(e) => {
            tracing::warn!(error = %e, "metrics_listen_addr: cannot listen on [::]:{port} (no IPv6?); listening on IPv4 only");
            let v4 = format!("0.0.0.0:{port}");
            TcpListener::bind(&v4).await.map_err(|e| refused(&v4, e))
        }
    }
}

/// A listener on `[::]:port` taking IPv4 connections too (IPV6_V6ONLY off, whatever the
/// host's `net.ipv6.bindv6only`).
fn dual_stack(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// Serve until shutdown (the listener stays up during the drain, so /readyz can say 503).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = timeout(IO_TIMEOUT, handle(stream, &shared)).await {
                        tracing::debug!(error = %e, "http request timed out");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, shared: &Shared) {
    let Some((head_only, path)) = read_request_path(&mut stream).await else {
        let _ = respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
        return;
    };
    let (status, ctype, body) = route(&path, shared);
    let _ = respond(&mut stream, status, ctype, &body, head_only).await;
}

/// (status, content type, body) for a GET of `path`.
fn route(path: &str, shared: &Shared) -> (u16, &'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/healthz" | "/livez" => (200, "text/plain", "ok\n".into()),
        "/readyz" => match readiness(shared, &shared.config.load()) {
            Ok(()) => (200, "text/plain", "ready\n".into()),
            Err(why) => (503, "text/plain", format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let snapshot = Snapshot::take(shared);
            (
                200,
                "text/plain; version=0.0.4",
                shared.metrics.render(&snapshot),
            )
        }
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// The path of a `GET path HTTP/1.x` request (true first: a HEAD request, answered without
/// the body), after reading its whole head.
async fn read_request_path(stream: &mut TcpStream) -> Option<(bool, String)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    // The head ends at an empty line. Lines may end in a bare LF (`printf 'GET / HTTP/1.0\n\n'
    // | nc`), which HTTP/1.1 allows a server to accept (RFC 9112 2.2) and most servers do;
    // `\n\r\n` covers CRLF ends (and a CRLF blank line after LF ones).
    while !(buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")) {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    }
    let head = std::str::from_utf8(&buf).ok()?;
    let mut parts = head.lines().next()?.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method @ ("GET" | "HEAD")), Some(path), Some(v)) if v.starts_with("HTTP/1.") => {
            Some((method == "HEAD", path.to_string()))
        }
        _ => None,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

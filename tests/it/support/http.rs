//! A minimal HTTP GET for the metrics/probe endpoints.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path`; returns (status, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

/// `method path`: (status, body).
pub(crate) async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    raw(addr, &req).await
}

/// Send `req` as it is (the whole request head); (status, body).
pub(crate) async fn raw(addr: SocketAddr, req: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect http");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(super::HANG, fut)
        .await
        .expect("http request hung")
}

/// The value of the sample `name{labels}` in a Prometheus text page.
pub(crate) fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

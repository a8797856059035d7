//! A raw wire-protocol client for fault tests: it logs in (SCRAM, via postgres-protocol's
//! client state machine) and then lets the test send partial messages, read slowly, or vanish.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::HANG;

/// One whole backend message.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) tag: u8,
    pub(crate) body: Vec<u8>,
}

impl Msg {
    /// The SQLSTATE of an ErrorResponse ('C' field), if this is one.
    pub(crate) fn sqlstate(&self) -> Option<String> {
        self.error_field(b'C')
    }

    /// A field of an ErrorResponse (`b'M'`: the message), if this is one and has it.
    pub(crate) fn error_field(&self, field: u8) -> Option<String> {
        if self.tag != b'E' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            let nul = tail.iter().position(|&b| b == 0)?;
            if code == field {
                return Some(String::from_utf8_lossy(&tail[..nul]).into_owned());
            }
            rest = &tail[nul + 1..];
        }
        None
    }
}

/// Over plain TCP unless a test gives it another stream (a TLS one: [`RawClient::login_on`]).
#[derive(Debug)]
pub(crate) struct RawClient<S = TcpStream> {
    pub(crate) sock: S,
    buf: BytesMut,
    /// The BackendKeyData of the login (pid, secret).
    pub(crate) key: Option<(i32, i32)>,
}

impl RawClient {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let sock = TcpStream::connect(addr).await.expect("tcp connect");
        RawClient {
            sock,
            buf: BytesMut::new(),
            key: None,
        }
    }

    /// Connect and log in as `user` on `db`; returns after the first ReadyForQuery.
    pub(crate) async fn login(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        db: &str,
    ) -> RawClient {
        RawClient::login_with(addr, user, password, db, &[]).await.0
    }

    /// As [`RawClient::login`], with more startup parameters; also returns the welcome's
    /// ParameterStatus values.
    pub(crate) async fn login_with(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        db: &str,
        params: &[(&str, &str)],
    ) -> (RawClient, Vec<(String, String)>) {
        let mut startup: Vec<(&[u8], &[u8])> = vec![
            (b"user".as_slice(), user.as_bytes()),
            (b"database".as_slice(), db.as_bytes()),
        ];
        startup.extend(params.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        RawClient::login_bytes(addr, &startup, password).await
    }

    /// As [`RawClient::login_with`], with the startup parameters given as bytes (any bytes,
    /// UTF-8 or not), `user` and `database` among them.
    pub(crate) async fn login_bytes(
        addr: std::net::SocketAddr,
        startup: &[(&[u8], &[u8])],
        password: &str,
    ) -> (RawClient, Vec<(String, String)>) {
        let sock = TcpStream::connect(addr).await.expect("tcp connect");
        RawClient::login_on(sock, startup, password).await
    }

    /// Start a SCRAM-SHA-256 login as `user` on `db` and return the server-first-message
    /// (`r=<nonce>,s=<salt>,i=<iterations>`): the salt and iteration count of the verifier
    /// pgporter checks this user against. The login goes no further.
    pub(crate) async fn scram_server_first(
        addr: std::net::SocketAddr,
        user: &str,
        db: &str,
    ) -> String {
        let mut c = RawClient::connect(addr).await;
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user), ("database", db)], &mut out).unwrap();
        c.send(&out).await;
        let m = c.read_msg().await.expect("login: connection closed");
        assert_eq!(
            (m.tag, auth_code(&m)),
            (b'R', Some(10)),
            "not a SASL request"
        );
        let scram = ScramSha256::new(b"unused", ChannelBinding::unsupported());
        let mut out = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
        c.send(&out).await;
        let m = c.read_msg().await.expect("login: connection closed");
        assert_eq!((m.tag, auth_code(&m)), (b'R', Some(11)), "not SASLContinue");
        String::from_utf8(m.body[4..].to_vec()).expect("server-first is UTF-8")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Log in on `sock` (already connected, TLS already negotiated if any) with these
    /// startup parameters; returns after the first ReadyForQuery, with the welcome's
    /// ParameterStatus values.
    pub(crate) async fn login_on(
        sock: S,
        startup: &[(&[u8], &[u8])],
        password: &str,
    ) -> (RawClient<S>, Vec<(String, String)>) {
        let mut c = RawClient {
            sock,
            buf: BytesMut::new(),
            key: None,
        };
        c.send(&startup_packet(startup)).await;
        let mut welcome = Vec::new();
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        loop {
            let m = c.read_msg().await.expect("login: connection closed");
            match (m.tag, auth_code(&m)) {
                (b'R', Some(10)) => {
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)
                        .unwrap();
                    c.send(&out).await;
                }
                (b'R', Some(11)) => {
                    scram.update(&m.body[4..]).expect("server-first");
                    let mut out = BytesMut::new();
                    frontend::sasl_response(scram.message(), &mut out).unwrap();
                    c.send(&out).await;
                }
                (b'R', Some(12)) => scram.finish(&m.body[4..]).expect("server-final"),
                (b'S', _) => {
                    let mut parts = m.body.split(|&b| b == 0).map(String::from_utf8_lossy);
                    if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                        welcome.push((k.into_owned(), v.into_owned()));
                    }
                }
                (b'K', _) if m.body.len() == 8 => {
                    let word = |i: usize| i32::from_be_bytes(m.body[i..i + 4].try_into().unwrap());
                    c.key = Some((word(0), word(4)));
                }
                (b'Z', _) => return (c, welcome),
                (b'E', _) => panic!("login refused: {:?}", m.sqlstate()),
                _ => {}
            }
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.expect("write");
    }

    /// Send a simple Query (without waiting for anything).
    pub(crate) async fn query(&mut self, sql: &str) {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await;
    }

    /// Send `msgs` in one write (what a pipelining client does).
    pub(crate) async fn send_all(&mut self, msgs: &[(u8, &[u8])]) {
        let mut out = Vec::new();
        for (tag, body) in msgs {
            out.push(*tag);
            out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
            out.extend_from_slice(body);
        }
        self.send(&out).await;
    }

    /// Send one message: `tag`, length, `body`.
    pub(crate) async fn send_msg(&mut self, tag: u8, body: &[u8]) {
        let mut out = vec![tag];
        out.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        self.send(&out).await;
    }

    /// Parse (unnamed, no parameter types), Bind (unnamed, no parameters, text results),
    /// Execute (all rows) of `sql`, then Sync, without waiting for anything.
    pub(crate) async fn extended(&mut self, sql: &str) {
        let mut parse = vec![0u8];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        self.send_msg(b'P', &parse).await;
        self.send_msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]).await;
        self.send_msg(b'E', &[0, 0, 0, 0, 0]).await;
        self.send_msg(b'S', &[]).await;
    }

    /// The first column of the DataRows and the ReadyForQuery status of a simple query.
    pub(crate) async fn rows(&mut self, sql: &str) -> (Vec<String>, u8, Option<String>) {
        self.query(sql).await;
        let msgs = self.until_ready().await.expect("connection ended");
        let mut rows = Vec::new();
        let mut error = None;
        for m in &msgs {
            match m.tag {
                b'D' => {
                    let len = i32::from_be_bytes(m.body[2..6].try_into().unwrap());
                    let len = usize::try_from(len).unwrap_or(0);
                    rows.push(String::from_utf8_lossy(&m.body[6..6 + len]).into_owned());
                }
                b'E' => error = m.sqlstate(),
                _ => {}
            }
        }
        let status = msgs.last().map_or(b'?', |z| z.body[0]);
        (rows, status, error)
    }

    /// The next whole message, or None at EOF / reset. Bounded by [`HANG`].
    pub(crate) async fn read_msg(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 1 + usize::try_from(len).expect("negative length");
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(total - 5).to_vec();
                    return Some(Msg { tag, body });
                }
            }
            let n = tokio::time::timeout(HANG, self.sock.read_buf(&mut self.buf))
                .await
                .expect("read_msg hung");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Messages up to and including ReadyForQuery (None if the connection ended first).
    pub(crate) async fn until_ready(&mut self) -> Option<Vec<Msg>> {
        let mut msgs = Vec::new();
        loop {
            let m = self.read_msg().await?;
            let done = m.tag == b'Z';
            msgs.push(m);
            if done {
                return Some(msgs);
            }
        }
    }

    /// Read at most `n` raw bytes (for slow-reader tests); 0 at EOF.
    pub(crate) async fn read_some(&mut self, n: usize) -> usize {
        let mut chunk = vec![0u8; n];
        match tokio::time::timeout(HANG, self.sock.read(&mut chunk)).await {
            Ok(Ok(k)) => k,
            Ok(Err(_)) => 0,
            Err(_) => panic!("read_some hung"),
        }
    }
}

/// A StartupMessage (protocol 3.0) of `params`, whatever their bytes.
pub(crate) fn startup_packet(params: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k);
        body.push(0);
        body.extend_from_slice(v);
        body.push(0);
    }
    body.push(0);
    let mut packet = i32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    packet.extend_from_slice(&body);
    packet
}

fn auth_code(m: &Msg) -> Option<i32> {
    let b: [u8; 4] = m.body.get(..4)?.try_into().ok()?;
    Some(i32::from_be_bytes(b))
}

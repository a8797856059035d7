//! A lean wire-protocol client for load: SCRAM-SHA-256 login with the salted password cached
//! per (salt, iterations), so 100,000 logins cost one PBKDF2; simple queries; and the ways a
//! client can misbehave (vanish, stall half-way, send garbage).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Any client-visible failure: I/O, timeout, or an ErrorResponse with its SQLSTATE.
#[derive(Debug)]
pub(crate) enum Failure {
    Io(String),
    Timeout,
    Server(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "I/O: {e}"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Server(code) => write!(f, "ErrorResponse {code}"),
        }
    }
}

/// (salt, iterations).
type SaltKey = (Vec<u8>, u32);

/// Login credentials plus the salted-password cache shared by every client.
#[derive(Debug)]
pub(crate) struct Creds {
    pub(crate) addr: SocketAddr,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) db: String,
    salted: Mutex<HashMap<SaltKey, [u8; 32]>>,
}

impl Creds {
    pub(crate) fn new(addr: SocketAddr, user: &str, password: &str, db: &str) -> Creds {
        Creds {
            addr,
            user: user.into(),
            password: password.into(),
            db: db.into(),
            salted: Mutex::new(HashMap::new()),
        }
    }

    fn salted(&self, salt: &[u8], iterations: u32) -> [u8; 32] {
        let key = (salt.to_vec(), iterations);
        if let Some(s) = self.salted.lock().unwrap().get(&key) {
            return *s;
        }
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = hmac(self.password.as_bytes(), &block);
        let mut out = u;
        for _ in 1..iterations {
            u = hmac(self.password.as_bytes(), &u);
            out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
        }
        self.salted.lock().unwrap().insert(key, out);
        out
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

pub(crate) struct Conn {
    pub(crate) sock: TcpStream,
    buf: BytesMut,
}

/// Every wait is bounded: a hang is a failure, not a stuck soak.
const LIMIT: Duration = Duration::from_secs(60);

fn io(e: std::io::Error) -> Failure {
    Failure::Io(e.kind().to_string())
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn sqlstate(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        let Some(nul) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        if code == b'C' {
            return String::from_utf8_lossy(&tail[..nul]).into_owned();
        }
        rest = &tail[nul + 1..];
    }
    "?????".into()
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Conn, Failure> {
        let sock = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(io)?;
        Ok(Conn {
            sock,
            buf: BytesMut::new(),
        })
    }

    /// Connect, authenticate with SCRAM, and wait for the first ReadyForQuery.
    pub(crate) async fn login(creds: &Creds) -> Result<Conn, Failure> {
        let mut c = Conn::open(creds.addr).await?;
        let mut startup = BytesMut::new();
        startup.put_i32(0);
        startup.put_i32(196_608);
        for (k, v) in [
            ("user", creds.user.as_str()),
            ("database", creds.db.as_str()),
        ] {
            startup.put_slice(k.as_bytes());
            startup.put_u8(0);
            startup.put_slice(v.as_bytes());
            startup.put_u8(0);
        }
        startup.put_u8(0);
        let len = i32::try_from(startup.len()).unwrap();
        startup[..4].copy_from_slice(&len.to_be_bytes());
        c.send(&startup).await?;
        c.expect_auth(10).await?;
        let nonce = STANDARD.encode(rand::random::<[u8; 18]>());
        let first_bare = format!("n=,r={nonce}");
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        let first = format!("n,,{first_bare}");
        body.extend_from_slice(&i32::try_from(first.len()).unwrap().to_be_bytes());
        body.extend_from_slice(first.as_bytes());
        c.send(&msg(b'p', &body)).await?;
        let server_first = String::from_utf8_lossy(&c.expect_auth(11).await?).into_owned();
        let attr = |name: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name))
                .map(str::to_string)
                .ok_or(Failure::Io(format!("bad server-first {server_first}")))
        };
        let (r, s, i) = (attr("r=")?, attr("s=")?, attr("i=")?);
        let salt = STANDARD.decode(s).map_err(|_| Failure::Io("salt".into()))?;
        let iterations: u32 = i.parse().map_err(|_| Failure::Io("iterations".into()))?;
        let salted = creds.salted(&salt, iterations);
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let fin = format!("{without_proof},p={}", STANDARD.encode(proof));
        c.send(&msg(b'p', fin.as_bytes())).await?;
        let server_final = c.expect_auth(12).await?;
        let expected = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        if server_final != format!("v={}", STANDARD.encode(expected)).as_bytes() {
            return Err(Failure::Io("server signature mismatch".into()));
        }
        c.until_ready().await?;
        Ok(c)
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        tokio::time::timeout(LIMIT, self.sock.write_all(bytes))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(io)
    }

    /// The next whole message (tag, body).
    pub(crate) async fn read_msg(&mut self) -> Result<(u8, Vec<u8>), Failure> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 1 + usize::try_from(len).map_err(|_| Failure::Io("length".into()))?;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    return Ok((tag, self.buf.split_to(total - 5).to_vec()));
                }
            }
            let n = tokio::time::timeout(LIMIT, self.sock.read_buf(&mut self.buf))
                .await
                .map_err(|_| Failure::Timeout)?
                .map_err(io)?;
            if n == 0 {
                return Err(Failure::Io("closed".into()));
            }
        }
    }

    async fn expect_auth(&mut self, code: i32) -> Result<Vec<u8>, Failure> {
        let (tag, body) = self.read_msg().await?;
        match tag {
            b'R' if body.get(..4) == Some(&code.to_be_bytes()[..]) => Ok(body[4..].to_vec()),
            b'E' => Err(Failure::Server(sqlstate(&body))),
            _ => Err(Failure::Io(format!(
                "unexpected '{}' during login",
                char::from(tag)
            ))),
        }
    }

    /// Read to ReadyForQuery; an ErrorResponse on the way is the result (after the RFQ).
    async fn until_ready(&mut self) -> Result<Vec<Vec<u8>>, Failure> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            // A FATAL is followed by EOF, not ReadyForQuery: report the server's error.
            let (tag, body) = match self.read_msg().await {
                Ok(m) => m,
                Err(e) => return Err(error.unwrap_or(e)),
            };
            match tag {
                b'Z' => return error.map_or(Ok(rows), Err),
                b'E' => error = Some(Failure::Server(sqlstate(&body))),
                b'D' => rows.push(body),
                _ => {}
            }
        }
    }

    /// Send a simple Query without reading the answer.
    pub(crate) async fn send_query(&mut self, sql: &str) -> Result<(), Failure> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(&msg(b'Q', &body)).await
    }

    /// Run a simple query; returns its DataRow bodies.
    pub(crate) async fn query(&mut self, sql: &str) -> Result<Vec<Vec<u8>>, Failure> {
        self.send_query(sql).await?;
        self.until_ready().await
    }

    /// The first column of the first row, as text (NULL = None).
    pub(crate) async fn value(&mut self, sql: &str) -> Result<Option<String>, Failure> {
        let rows = self.query(sql).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([row[2], row[3], row[4], row[5]]);
        Ok(usize::try_from(len)
            .ok()
            .map(|l| String::from_utf8_lossy(&row[6..6 + l]).into_owned()))
    }

    /// Terminate politely.
    pub(crate) async fn close(mut self) {
        let _ = self.send(&msg(b'X', &[])).await;
    }

    /// Read at most `n` raw bytes; 0 at EOF.
    pub(crate) async fn read_some(&mut self, n: usize) -> Result<usize, Failure> {
        let mut chunk = vec![0u8; n];
        tokio::time::timeout(LIMIT, self.sock.read(&mut chunk))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(io)
    }
}

/// A CancelRequest with a random key: pgporter must ignore it and close.
pub(crate) async fn random_cancel(addr: SocketAddr) -> Result<(), Failure> {
    let mut c = Conn::open(addr).await?;
    let mut b = BytesMut::new();
    b.put_i32(16);
    b.put_i32(80_877_102);
    b.put_i32(rand::random());
    b.put_i32(rand::random());
    c.send(&b).await?;
    match c.read_some(64).await? {
        0 => Ok(()),
        _ => Err(Failure::Io("a random cancel key got an answer".into())),
    }
}

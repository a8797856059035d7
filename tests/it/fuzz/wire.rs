//! Running a case on one connection (through pgporter, or straight to PostgreSQL) and
//! comparing what came back.

use std::net::SocketAddr;

use std::sync::Arc;

use tokio::io::{
    AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;

use crate::support::checks::backend_running;
use crate::support::raw::RawClient;
use crate::support::Fixture;

use super::gen::{frame, Case, Ending, Step, Transport};
use super::{BOUND, DIRTY};

/// A client's connection, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

/// Where a case runs.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) addr: SocketAddr,
    /// Leave session state behind first (session mode).
    pub(super) dirty: bool,
    /// Through pgporter: its TLS clients' trust roots (a TLS case connects with them).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    pub(super) fn porter(fx: &Fixture, dirty: bool, tls: &Arc<rustls::ClientConfig>) -> Target {
        Target {
            name: "pgporter",
            addr: fx.porter.addr(),
            dirty,
            tls: Some(Arc::clone(tls)),
        }
    }

    pub(super) fn direct(fx: &Fixture, dirty: bool) -> Target {
        Target {
            name: "postgresql",
            addr: SocketAddr::from(([127, 0, 0, 1], fx.cluster.port())),
            dirty,
            tls: None,
        }
    }
}

/// Connect and log in as the fixture's user, over TLS when the case says so and the target
/// is pgporter. Also returns a second handle on the TCP socket of a TLS connection (for an
/// abrupt close in the middle of a record).
async fn login(
    fx: &Fixture,
    target: &Target,
    case: &Case,
) -> Result<(RawClient<Conn>, Option<std::net::TcpStream>), String> {
    let startup: [(&[u8], &[u8]); 2] = [
        (b"user", fx.user.as_bytes()),
        (b"database", fx.db.as_bytes()),
    ];
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sock, raw): (Conn, _) = match (&target.tls, case.transport) {
        (Some(config), Transport::Tls) => {
            let std = tcp.into_std().map_err(|e| format!("into_std: {e}"))?;
            let raw = std.try_clone().map_err(|e| format!("try_clone: {e}"))?;
            let mut tcp = TcpStream::from_std(std).map_err(|e| format!("from_std: {e}"))?;
            tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                .await
                .map_err(|e| format!("SSLRequest: {e}"))?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer)
                .await
                .map_err(|e| format!("SSLRequest answer: {e}"))?;
            if answer[0] != b'S' {
                return Err(format!("SSLRequest answered {:?}", char::from(answer[0])));
            }
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio::time::timeout(
                BOUND,
                tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp),
            )
            .await
            .map_err(|_| "TLS handshake hung".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
            (Box::new(tls), Some(raw))
        }
        _ => (Box::new(tcp), None),
    };
    Ok((
        RawClient::login_on(sock, &startup, &fx.password).await.0,
        raw,
    ))
}

/// Wait (bounded) until exactly `n` clients are in pgporter's lobby.
pub(super) async fn parked(fx: &Fixture, n: usize) -> Result<(), String> {
    let lobby = &fx.porter.shared().lobby;
    let deadline = tokio::time::Instant::now() + BOUND;
    while lobby.parked() != n {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} clients parked, not {n}", lobby.parked()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(())
}

/// What a case got back after its garbage.
#[derive(Debug)]
pub(super) struct Outcome {
    /// The marker query's answer came (its row, or in a failed transaction block 25P02).
    pub(super) answered: bool,
    /// The connection ended (EOF or reset).
    pub(super) closed: bool,
    /// Neither, within [`BOUND`] of the last message.
    pub(super) hung: bool,
    /// The backend pid the session had before the garbage.
    pub(super) pid: Option<String>,
    /// The message of the last ErrorResponse.
    pub(super) last_error: Option<String>,
    /// The messages that came, as (tag, detail), without notices, ParameterStatus and
    /// notifications.
    pub(super) answers: Vec<(char, String)>,
}

/// Run `case` on `target`; Err for a broken invariant (a hang, a refused setup step).
pub(super) async fn run(fx: &Fixture, target: &Target, case: &Case) -> Result<Outcome, String> {
    let (mut c, raw) = login(fx, target, case).await?;
    let quiet = case.transport == Transport::Parked;
    let pid = if quiet {
        if target.name == "pgporter" {
            parked(fx, 1).await?;
        }
        None
    } else {
        let (rows, _, _) = c.rows("select pg_backend_pid()").await;
        rows.first().cloned()
    };
    if target.dirty && !quiet {
        let (_, status, error) = c.rows(DIRTY).await;
        if error.is_some() || status != b'I' {
            return Err(format!("{}: leaving state failed: {error:?}", target.name));
        }
        c.send_all(&[(b'P', b"fzp\0select 1\0\0\0"), (b'S', b"")])
            .await;
        c.until_ready()
            .await
            .ok_or("the named Parse ended the session")?;
    }
    if case.cancel_own && quiet {
        // Nothing runs: PostgreSQL ignores it, and pgporter must leave the client parked.
        let (pid, secret) = c.key.ok_or("no BackendKeyData")?;
        cancel(target.addr, pid, secret).await?;
        if target.name == "pgporter" {
            parked(fx, 1).await?;
        }
    } else if case.cancel_own {
        let needle = format!("fuzzcancel{:x}{}", case.seed, target.name);
        c.query(&format!("select pg_sleep(20) /* {needle} */"))
            .await;
        backend_running(fx, &needle).await;
        let (pid, secret) = c.key.ok_or("no BackendKeyData")?;
        cancel(target.addr, pid, secret).await?;
        let msgs = c
            .until_ready()
            .await
            .ok_or("the cancel ended the session")?;
        if !msgs
            .iter()
            .any(|m| m.sqlstate().as_deref() == Some("57014"))
        {
            return Err(format!(
                "{}: the own-key cancel did not cancel",
                target.name
            ));
        }
    }
    let (rd, wr) = tokio::io::split(c.sock);
    let marker = format!("fuzz-end-{:x}", case.seed);
    let writer = tokio::spawn(write_steps(
        target.addr,
        case.clone(),
        marker.clone(),
        wr,
        raw,
    ));
    let mut outcome = read_answers(rd, &marker).await;
    outcome.pid = pid;
    let wr = writer.await.map_err(|e| format!("writer: {e}"))??;
    if let Some(mut wr) = wr {
        if outcome.answered && case.terminate {
            let _ = wr.write_all(&frame(b'X', &[])).await;
        }
    }
    Ok(outcome)
}

/// A CancelRequest on a connection of its own; the server must close it within [`BOUND`].
async fn cancel(addr: SocketAddr, pid: i32, secret: i32) -> Result<(), String> {
    let mut sock = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cancel connect: {e}"))?;
    let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    sock.write_all(&packet)
        .await
        .map_err(|e| format!("cancel write: {e}"))?;
    let mut rest = Vec::new();
    match tokio::time::timeout(BOUND, sock.read_to_end(&mut rest)).await {
        Err(_) => Err("a CancelRequest's connection was not closed within 10 s".into()),
        Ok(_) if !rest.is_empty() => Err(format!("a CancelRequest was answered: {rest:?}")),
        Ok(_) => Ok(()),
    }
}

/// Write the case's steps, then (unless it disconnected) Sync and the marker query, twice: a
/// COPY IN takes the first Query for its error and an extended one waits for the next Sync.
/// Returns the write half, unless the case disconnected. `raw` is the TCP socket under a TLS
/// connection.
async fn write_steps(
    addr: SocketAddr,
    case: Case,
    marker: String,
    mut wr: WriteHalf<Conn>,
    raw: Option<std::net::TcpStream>,
) -> Result<Option<WriteHalf<Conn>>, String> {
    let mut split = case.split_first;
    for step in &case.steps {
        match step {
            Step::Bytes { bytes, .. } => {
                if let Some(at) = split.take().filter(|&at| at < bytes.len()) {
                    // Half a message, then (a moment later) the rest.
                    if wr.write_all(&bytes[..at]).await.is_err() || wr.flush().await.is_err() {
                        return Ok(Some(wr));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    if wr.write_all(&bytes[at..]).await.is_err() {
                        return Ok(Some(wr));
                    }
                } else if wr.write_all(bytes).await.is_err() {
                    return Ok(Some(wr));
                }
                let _ = wr.flush().await;
            }
            Step::CancelRandom { pid, secret } => cancel(addr, *pid, *secret).await?,
            Step::Disconnect => {
                match raw.filter(|_| case.tls_abrupt) {
                    Some(mut raw) => {
                        // The header of an application-data record promising 64 bytes, 5
                        // of them, and the TCP connection closed under the TLS session.
                        use std::io::Write as _;
                        let _ = wr.flush().await;
                        let _ = raw.write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3, 4, 5]);
                        let _ = raw.shutdown(std::net::Shutdown::Both);
                    }
                    None => {
                        let _ = wr.shutdown().await;
                    }
                }
                return Ok(None);
            }
        }
    }
    if !matches!(case.ending, Ending::Unfinished | Ending::Lone) {
        let mut q = format!("select '{marker}'").into_bytes();
        q.push(0);
        let mut tail = frame(b'S', &[]);
        tail.extend_from_slice(&frame(b'Q', &q));
        let again = tail.clone();
        tail.extend_from_slice(&again);
        let _ = wr.write_all(&tail).await;
    }
    Ok(Some(wr))
}

/// Read until the marker's ReadyForQuery, EOF, or [`BOUND`] without a message.
async fn read_answers(mut rd: ReadHalf<Conn>, marker: &str) -> Outcome {
    let mut out = Outcome {
        answered: false,
        closed: false,
        hung: false,
        pid: None,
        last_error: None,
        answers: Vec::new(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut saw_marker = false;
    loop {
        while buf.len() >= 5 {
            let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let Some(total) = usize::try_from(len).ok().filter(|&l| l >= 4).map(|l| l + 1) else {
                out.answers
                    .push(('!', format!("bad length {len} from the server")));
                out.closed = true;
                return out;
            };
            if buf.len() < total {
                break;
            }
            let tag = buf[0];
            let body: Vec<u8> = buf.drain(..total).skip(5).collect();
            if tag == b'E' {
                out.last_error = Some(field(&body, b'M'));
            }
            let detail = match tag {
                b'E' => field(&body, b'C'),
                b'Z' | b'C' | b'D' | b'T' | b'd' => String::from_utf8_lossy(&body).into_owned(),
                _ => String::new(),
            };
            if tag == b'D' && detail.contains(marker) {
                saw_marker = true;
            }
            // The marker inside a failed transaction block gets 25P02 instead of its row.
            let refused_in_failed_block = tag == b'Z'
                && body.first() == Some(&b'E')
                && out
                    .answers
                    .last()
                    .is_some_and(|(t, d)| *t == 'E' && d == "25P02");
            if !matches!(tag, b'N' | b'S' | b'A' | b'K') {
                out.answers.push((char::from(tag), detail));
            }
            if tag == b'Z' && (saw_marker || refused_in_failed_block) {
                out.answered = true;
                return out;
            }
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(BOUND, rd.read(&mut chunk)).await {
            Err(_) => {
                out.hung = true;
                return out;
            }
            Ok(Ok(0) | Err(_)) => {
                out.closed = true;
                return out;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn field(body: &[u8], code: u8) -> String {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        let Some(nul) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        if c == code {
            return String::from_utf8_lossy(&tail[..nul]).into_owned();
        }
        rest = &tail[nul + 1..];
    }
    String::new()
}

/// pgporter's answers are PostgreSQL's: the same messages in the same order, and the session
/// ends where PostgreSQL's does. Where both closed, a last connection-class error (08xxx)
/// that one of them sent and the other did not is allowed (PostgreSQL closes without a word
/// on an invalid length, pgporter says why).
///
/// With `cut_short` (the case sent a frame no server accepts), pgporter's answers need only
/// be the start of PostgreSQL's: it ends the session at the bad frame, as PgBouncer does,
/// without waiting for the answers to what the client sent before it.
///
/// In statement mode, pgporter may instead end the session where PostgreSQL's next
/// ReadyForQuery is in a transaction block (`T` or `E`): its answers up to there are the start
/// of PostgreSQL's and its last is `FATAL 08P01 transaction blocks not allowed in statement
/// pooling mode` ([`statement_refusal`]).
pub(super) fn same_answers(porter: &Outcome, pg: &Outcome, cut_short: bool) -> Result<(), String> {
    // Both with and without a last connection-class error (08xxx) before a close.
    let forms = |o: &Outcome| {
        let mut all = vec![o.answers.clone()];
        let last_08 = o
            .answers
            .last()
            .is_some_and(|(t, d)| *t == 'E' && d.starts_with("08"));
        if o.closed && last_08 {
            all.push(o.answers[..o.answers.len() - 1].to_vec());
        }
        all
    };
    let matches = |mine: &Vec<(char, String)>, theirs: &Vec<(char, String)>| {
        if cut_short {
            theirs.starts_with(mine)
        } else {
            mine == theirs
        }
    };
    // Cut short, pgporter's close is checked by the case's ending; PostgreSQL may have read
    // on past where pgporter stopped.
    let same = (cut_short
        || (porter.answered == pg.answered
            && porter.closed == pg.closed
            && porter.hung == pg.hung))
        && forms(porter)
            .iter()
            .any(|mine| forms(pg).iter().any(|theirs| matches(mine, theirs)));
    if same {
        Ok(())
    } else {
        Err(differ(porter, pg))
    }
}

/// Whether pgporter's answers are statement mode's refusal of a transaction block where
/// PostgreSQL's show one (see [`same_answers`]).
pub(super) fn statement_refusal(porter: &Outcome, pg: &Outcome) -> Result<(), String> {
    let refused = porter.closed
        && porter
            .answers
            .last()
            .is_some_and(|(t, d)| *t == 'E' && d == "08P01")
        && porter.last_error.as_deref()
            == Some("transaction blocks not allowed in statement pooling mode");
    let before = &porter.answers[..porter.answers.len().saturating_sub(1)];
    // The next ReadyForQuery PostgreSQL sent is the one pgporter refused.
    let in_block = pg.answers.starts_with(before)
        && pg.answers[before.len()..]
            .iter()
            .find(|(t, _)| *t == 'Z')
            .is_some_and(|(_, d)| d == "T" || d == "E");
    if refused && in_block {
        Ok(())
    } else {
        Err(differ(porter, pg))
    }
}

fn differ(porter: &Outcome, pg: &Outcome) -> String {
    {
        format!(
            "pgporter's answers differ from PostgreSQL's\n pgporter   (answered {}, closed {}, \
             hung {}): {:?}\n postgresql (answered {}, closed {}, hung {}): {:?}",
            porter.answered,
            porter.closed,
            porter.hung,
            porter.answers,
            pg.answered,
            pg.closed,
            pg.hung,
            pg.answers
        )
    }
}

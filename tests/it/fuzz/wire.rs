//! Running a case on one connection (through pgporter, or straight to PostgreSQL) and
//! comparing what came back.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::support::checks::backend_running;
use crate::support::raw::RawClient;
use crate::support::Fixture;

use super::gen::{frame, Case, Ending, Step};
use super::{BOUND, DIRTY};

/// Where a case runs.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) addr: SocketAddr,
    /// Leave session state behind first (session mode).
    pub(super) dirty: bool,
}

impl Target {
    pub(super) fn porter(fx: &Fixture, dirty: bool) -> Target {
        Target {
            name: "pgporter",
            addr: fx.porter.addr(),
            dirty,
        }
    }

    pub(super) fn direct(fx: &Fixture, dirty: bool) -> Target {
        Target {
            name: "postgresql",
            addr: SocketAddr::from(([127, 0, 0, 1], fx.cluster.port())),
            dirty,
        }
    }
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
    /// The messages that came, as (tag, detail), without notices, ParameterStatus and
    /// notifications.
    pub(super) answers: Vec<(char, String)>,
}

/// Run `case` on `target`; Err for a broken invariant (a hang, a refused setup step).
pub(super) async fn run(fx: &Fixture, target: &Target, case: &Case) -> Result<Outcome, String> {
    let mut c = RawClient::login(target.addr, &fx.user, &fx.password, &fx.db).await;
    let (rows, _, _) = c.rows("select pg_backend_pid()").await;
    let pid = rows.first().cloned();
    if target.dirty {
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
    if case.cancel_own {
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
    let (rd, wr) = c.sock.into_split();
    let marker = format!("fuzz-end-{:x}", case.seed);
    let writer = tokio::spawn(write_steps(target.addr, case.clone(), marker.clone(), wr));
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
/// Returns the write half, unless the case disconnected.
async fn write_steps(
    addr: SocketAddr,
    case: Case,
    marker: String,
    mut wr: OwnedWriteHalf,
) -> Result<Option<OwnedWriteHalf>, String> {
    for step in &case.steps {
        match step {
            Step::Bytes { bytes, .. } => {
                if wr.write_all(bytes).await.is_err() {
                    return Ok(Some(wr));
                }
            }
            Step::CancelRandom { pid, secret } => cancel(addr, *pid, *secret).await?,
            Step::Disconnect => {
                let _ = wr.shutdown().await;
                return Ok(None);
            }
        }
    }
    if case.ending != Ending::Unfinished {
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
async fn read_answers(mut rd: OwnedReadHalf, marker: &str) -> Outcome {
    let mut out = Outcome {
        answered: false,
        closed: false,
        hung: false,
        pid: None,
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
        Err(format!(
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
        ))
    }
}

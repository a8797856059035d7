//! The chaos round's cancels: a load client's query cancelled at a random moment (before it
//! runs, while it runs, racing its end, or after it), or its backend terminated once running
//! and a cancel sent right after; and the check that no one else's query is cancelled by
//! it (a 57014 a client did not ask for).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::chaos_actors::{Step, Target};
use super::chaos_wire::{cancel, Conn, Reply, WAIT};

/// Run a [`Step::Cancel`] or [`Step::KillCancel`]: its query, and the CancelRequest for it,
/// which is passed on (its connection closed by pgporter) before the step ends.
/// A TLS client sends it over TLS too.
pub(super) async fn cancel_step(t: &Target, c: &mut Conn, step: &Step) -> Result<Reply, String> {
    let key = c.key.ok_or("no BackendKeyData at login")?;
    let tls = c.tls.clone();
    let tls = tls.as_ref();
    let (reply, sent) = match *step {
        Step::Cancel(ms, after) => {
            c.query(&format!(
                "select pg_sleep({}), 'ok'",
                f64::from(ms) / 1000.0
            ))
            .await;
            let send = async {
                tokio::time::sleep(Duration::from_millis(after)).await;
                cancel(t.addr, tls, key).await
            };
            tokio::join!(c.until(&[]), send)
        }
        Step::KillCancel(tag) => {
            let needle = format!("chaos_kc_{tag:08x}");
            c.query(&format!("select pg_sleep(2), 'ok' /* {needle} */"))
                .await;
            let answered = AtomicBool::new(false);
            let reply = async {
                let reply = c.until(&[]).await;
                answered.store(true, Ordering::Relaxed);
                reply
            };
            let kill = async {
                terminate_when_running(t, &needle, &answered).await?;
                cancel(t.addr, tls, key).await
            };
            tokio::join!(reply, kill)
        }
        _ => return Err(format!("{step:?} is not a cancel step")),
    };
    match sent {
        // Shut down meanwhile: no longer listening.
        Err(e) if t.draining && e.contains("connect: ") => {}
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    reply
}

/// Once PostgreSQL runs the query marked `needle`, terminate its backend; gives up when the
/// query was answered first (the session ended, the wait cancelled) or after [`WAIT`].
async fn terminate_when_running(
    t: &Target,
    needle: &str,
    answered: &AtomicBool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !answered.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        let rows =
            t.su.query(
                "select pid from pg_stat_activity where usename = $1 and state = 'active' \
                 and query like '%' || $2 || '%'",
                &[&t.user, &needle],
            )
            .await
            .map_err(|e| format!("pg_stat_activity: {e}"))?;
        if let Some(row) = rows.first() {
            let pid: i32 = row.get(0);
            t.su.execute("select pg_terminate_backend($1)", &[&pid])
                .await
                .map_err(|e| format!("pg_terminate_backend: {e}"))?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Err if `reply` was cancelled (57014) while no cancel of the client's own could reach it
/// (`own`: requests left that one may still reach); returns `own` for the next request.
pub(super) fn misdirected(step: &Step, reply: &Reply, own: u8) -> Result<u8, String> {
    let cancelled = match reply {
        Reply::Ready(errors) => errors.iter().any(|e| e == "57014"),
        Reply::Ended(code) => code == "57014",
        Reply::Stop => false,
    };
    if cancelled && own == 0 {
        return Err(format!(
            "{step:?} was cancelled (57014) though its client sent no cancel: another's \
             cancel reached it"
        ));
    }
    Ok(own.saturating_sub(1))
}

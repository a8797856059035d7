//! The admin console: the virtual database `pgbouncer` (alias `pgporter`) on the same codec.
//! Each Query -> [`command::parse`] -> a SHOW ([`show::build`] -> [`resultset::encode`]) or a
//! [`Control`] request carried out by [`control::apply`] -> CommandComplete, ReadyForQuery.
//! admin_users may run everything; stats_users only SHOW.

mod command;
mod config_rows;
mod resultset;
mod show;
mod show_stats;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Duration;

use crate::app::Shared;
use crate::control::{self, Control, ControlError};
use crate::error::{admin_sqlstate, Error};
use crate::net::Stream;
use crate::protocol::backend::{self, Severity};
use crate::protocol::{frontend, FramedConn, ProtocolError, MAX_CONTROL_MESSAGE};
use crate::sessions::SessionInfo;
use crate::snapshot::Snapshot;

#[cfg(test)]
mod proptests;

pub use command::{parse, AdminCommand, ParseError, Show};
pub use resultset::{ResultSet, Value};

/// Names of the console's virtual database (SHOW DATABASES lists it as `pgbouncer`).
pub const ADMIN_DATABASES: [&str; 2] = [crate::snapshot::CONSOLE_DB, "pgporter"];

/// The version string of SHOW VERSION (and pgbouncer_version_info). It starts as PgBouncer's
/// does, with the PgBouncer release whose console and metrics pgporter's follow: tools that pick their queries by
/// the version they read there (Datadog's check, pg_exporter) took pgporter's own 0.1.0 for a
/// PgBouncer older than 1.8.
pub const VERSION: &str = concat!(
    "PgBouncer 1.24.1 (pgporter ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

pub fn is_admin_database(db: &str) -> bool {
    ADMIN_DATABASES.contains(&db)
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Stats,
}

/// A console command that failed (an ERROR, the session goes on).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("admin access needed")]
    NotAllowed,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the admin console supports only the simple query protocol")]
    ExtendedProtocol,
    #[error("SUSPEND is not supported: pgporter has no online restart (-R)")]
    NoOnlineRestart,
}

impl AdminError {
    /// What to do instead, when there is a better way.
    fn hint(&self) -> Option<&'static str> {
        match self {
            AdminError::NoOnlineRestart => Some(
                "Restart with so_reuseport: start the new pgporter on the same port, \
                 then drain the old one (SIGTERM, or SHUTDOWN WAIT_FOR_CLIENTS).",
            ),
            _ => None,
        }
    }
}

/// ParameterStatus values the console reports (psql and drivers look for these).
const PARAMS: &[(&str, &str)] = &[
    // PgBouncer's form, which tools recognise the console by.
    ("server_version", "1.24.1/bouncer"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("is_superuser", "on"),
    ("default_transaction_isolation", "read committed"),
    ("application_name", ""),
];

/// AuthenticationOk .. ReadyForQuery for a console session.
pub async fn welcome(conn: &mut FramedConn<Stream>, key: (i32, i32)) -> Result<(), Error> {
    let mut buf = BytesMut::new();
    backend::authentication(&mut buf, backend::AUTH_OK, &[]);
    for (k, v) in PARAMS {
        backend::parameter_status(&mut buf, k, v);
    }
    backend::backend_key_data(&mut buf, key.0, key.1);
    backend::ready_for_query(&mut buf, b'I');
    conn.queue(&buf);
    conn.flush().await.map_err(Error::ClientProtocol)
}

/// Serve console commands until the client leaves or the session is killed.
pub async fn serve(
    conn: &mut FramedConn<Stream>,
    role: Role,
    session: &SessionInfo,
    shared: &Arc<Shared>,
) -> Result<(), Error> {
    // After an extended-protocol message: skip until Sync, then ReadyForQuery.
    let mut skipping = false;
    // SHOW STATS' `pgbouncer` row: each command is a query and a transaction (statement
    // mode); no bytes or time are counted, as no server is involved (as in PgBouncer).
    let counters = shared
        .stats
        .pool(crate::snapshot::CONSOLE_DB, crate::snapshot::CONSOLE_DB);
    loop {
        let msg = tokio::select! {
            biased;
            () = session.killed() => return Err(Error::Shutdown),
            m = conn.read_message(MAX_CONTROL_MESSAGE) => match m {
                Ok(m) => m,
                // EOF included: the close line tells it from a Terminate.
                Err(e) => return Err(Error::ClientProtocol(e)),
            },
        };
        let mut buf = BytesMut::new();
        match msg.tag {
            frontend::TERMINATE => return Ok(()),
            frontend::QUERY => {
                let sql = cstr(&msg.body)?;
                // A command that waits (PAUSE, WAIT_CLOSE) is given up if its client leaves;
                // what it did (a pause) stays, as in PgBouncer.
                let done = tokio::select! {
                    biased;
                    () = session.killed() => return Err(Error::Shutdown),
                    r = execute(&sql, role, shared, &mut buf) => r,
                    () = conn.closed(MAX_CONTROL_MESSAGE) => {
                        tracing::info!(user = %session.user, command = %sql.trim(), "admin client left before its command finished");
                        return Err(Error::ClientProtocol(crate::protocol::ProtocolError::Eof));
                    }
                };
                if let Err(e) = done {
                    tracing::info!(user = %session.user, command = %sql.trim(), error = %e, "admin command failed");
                    error(&mut buf, &e);
                }
                counters.query_done(Duration::ZERO, Some(Duration::ZERO));
                backend::ready_for_query(&mut buf, b'I');
            }
            frontend::SYNC => {
                skipping = false;
                backend::ready_for_query(&mut buf, b'I');
            }
            frontend::PARSE
            | frontend::BIND
            | frontend::EXECUTE
            | frontend::DESCRIBE
            | frontend::CLOSE
            | frontend::FLUSH => {
                if !skipping {
                    error(&mut buf, &AdminError::ExtendedProtocol);
                    skipping = true;
                }
            }
            other => return Err(Error::ClientProtocol(ProtocolError::Unexpected(other))),
        }
        conn.queue(&buf);
        conn.flush().await.map_err(Error::ClientProtocol)?;
    }
}

fn cstr(body: &[u8]) -> Result<String, Error> {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    Ok(String::from_utf8_lossy(text).into_owned())
}

fn error(buf: &mut BytesMut, e: &AdminError) {
    backend::error_response(
        buf,
        Severity::Error,
        admin_sqlstate(e),
        &e.to_string(),
        e.hint(),
    );
}

/// Run one command, appending its result (rows + CommandComplete) to `buf`.
async fn execute(
    sql: &str,
    role: Role,
    shared: &Arc<Shared>,
    buf: &mut BytesMut,
) -> Result<(), AdminError> {
    let cmd = parse(sql)?;
    if cmd.needs_admin() && role != Role::Admin {
        return Err(AdminError::NotAllowed);
    }
    let (control, tag) = match cmd {
        AdminCommand::Show(Show::Help) => {
            help(buf);
            return Ok(());
        }
        AdminCommand::Show(what) => {
            let snapshot = Snapshot::take(shared);
            resultset::encode(&show::build(what, &snapshot, VERSION), "SHOW", buf);
            return Ok(());
        }
        AdminCommand::ShowParam(name) => {
            let Some((_, value)) = PARAMS.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name))
            else {
                return Err(ParseError::Invalid(sql.trim().to_string()).into());
            };
            let mut rs = ResultSet::new(&[(leak_free_name(&name), resultset::Type::Text)]);
            rs.push(vec![(*value).into()]);
            resultset::encode(&rs, "SHOW", buf);
            return Ok(());
        }
        AdminCommand::Set(text) => {
            let (key, value) =
                command::set_parts(&text).ok_or_else(|| ParseError::Invalid(text.clone()))?;
            // A driver's own session settings (application_name, DateStyle ...) are not ours:
            // accepted and ignored, as they are harmless here.
            if !crate::config::Config::is_setting(&key) {
                let note = format!("SET {key} ignored: not a pgporter setting");
                backend::error_response(buf, Severity::Notice, "00000", &note, None);
                resultset::command_complete(buf, "SET");
                return Ok(());
            }
            if role != Role::Admin {
                return Err(AdminError::NotAllowed);
            }
            (Control::Set { key, value }, "SET")
        }
        AdminCommand::Pause(db) => (Control::Pause(db), "PAUSE"),
        AdminCommand::Resume(db) => (Control::Resume(db), "RESUME"),
        AdminCommand::Disable(db) => (Control::Disable(db), "DISABLE"),
        AdminCommand::Enable(db) => (Control::Enable(db), "ENABLE"),
        AdminCommand::Reconnect(db) => (Control::Reconnect(db), "RECONNECT"),
        AdminCommand::WaitClose(db) => (Control::WaitClose(db), "WAIT_CLOSE"),
        AdminCommand::Kill(db) => (Control::Kill(db), "KILL"),
        AdminCommand::KillClient(id) => (Control::KillClient(id), "KILL_CLIENT"),
        AdminCommand::Reload => (Control::Reload, "RELOAD"),
        AdminCommand::Shutdown(mode) => (Control::Shutdown(mode), "SHUTDOWN"),
        AdminCommand::Suspend => return Err(AdminError::NoOnlineRestart),
    };
    control::apply(shared, control).await?;
    resultset::command_complete(buf, tag);
    Ok(())
}

/// Column names are `&'static str`; the few fake parameters are known in advance.
fn leak_free_name(name: &str) -> &'static str {
    PARAMS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("value", |(k, _)| k)
}

/// As PgBouncer 1.18: a NOTICE "Console usage" whose DETAIL lists the commands, in its
/// order and form, with pgporter's own (SHOW HOSTS ...) and PgBouncer 1.24's additions.
fn help(buf: &mut BytesMut) {
    let detail = "\n\
        \tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
        \tSHOW PEERS|PEER_POOLS\n\
        \tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\
        \tSHOW DNS_HOSTS|DNS_ZONES\n\
        \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
        \tSHOW HOSTS|IDENTITIES (pgporter)\n\
        \tSET key = arg\n\
        \tRELOAD\n\
        \tPAUSE [<db>]\n\
        \tRESUME [<db>]\n\
        \tDISABLE <db>\n\
        \tENABLE <db>\n\
        \tRECONNECT [<db>]\n\
        \tKILL [<db>]\n\
        \tKILL_CLIENT <client_id>\n\
        \tSUSPEND (refused: no online restart, see so_reuseport)\n\
        \tSHUTDOWN\n\
        \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
        \tWAIT_CLOSE [<db>]";
    backend::notice_with_detail(buf, "Console usage", detail);
    resultset::command_complete(buf, "SHOW");
}

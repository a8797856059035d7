//! Admin console SQL text -> [`AdminCommand`]. PgBouncer's grammar: `WORD [WORD] [;]`, case
//! insensitive, a word may be double-quoted (`""` inside is a quote); plus `SET key = value`.

use crate::shutdown::ShutdownMode;

/// What SHOW can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Help,
    Version,
    Config,
    Databases,
    Pools,
    Clients,
    Servers,
    Sockets,
    ActiveSockets,
    Peers,
    PeerPools,
    Users,
    Stats,
    StatsTotals,
    StatsAverages,
    Totals,
    Lists,
    DnsHosts,
    DnsZones,
    State,
    Mem,
    /// PgBouncer's file descriptors for an online restart: its columns, no rows (pgporter
    /// hands no sockets over).
    Fds,
    /// pgporter: backend hosts, role, health, lag.
    Hosts,
    /// pgporter: per client identity.
    Identities,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Show(Show),
    /// SHOW of a parameter a driver asks about (client_encoding ...): a fake value.
    ShowParam(String),
    /// SET: accepted and ignored (as PgBouncer does for client parameters).
    Set(String),
    Pause(Option<String>),
    Resume(Option<String>),
    Disable(String),
    Enable(String),
    Reconnect(Option<String>),
    WaitClose(Option<String>),
    Kill(Option<String>),
    KillClient(u64),
    Reload,
    Shutdown(ShutdownMode),
    /// PgBouncer's first step of an online restart (`-R`); refused: pgporter has none.
    Suspend,
}

impl AdminCommand {
    /// True for commands that change state (admin_users only; stats_users may only SHOW),
    /// and for SHOW FDS (PgBouncer's shows cancel keys and passwords: admin_users only).
    pub fn needs_admin(&self) -> bool {
        !matches!(
            self,
            AdminCommand::Show(_) | AdminCommand::ShowParam(_) | AdminCommand::Set(_)
        ) || *self == AdminCommand::Show(Show::Fds)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid command '{0}', use SHOW HELP;")]
    Invalid(String),
    #[error("a database is required")]
    DatabaseRequired,
    #[error("invalid client id '{0}'")]
    BadClientId(String),
}

/// Parse one console command.
pub fn parse(sql: &str) -> Result<AdminCommand, ParseError> {
    let invalid = || ParseError::Invalid(sql.trim().to_string());
    let text = sql.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    if starts_with_word(text, "set") {
        return Ok(AdminCommand::Set(text.to_string()));
    }
    let words = words(text).ok_or_else(invalid)?;
    let (cmd, arg) = match words.as_slice() {
        [cmd] => (cmd.to_ascii_lowercase(), None),
        [cmd, arg] => (cmd.to_ascii_lowercase(), Some(arg.clone())),
        _ => return Err(invalid()),
    };
    let required = |arg: Option<String>| arg.ok_or(ParseError::DatabaseRequired);
    Ok(match cmd.as_str() {
        "show" | "select" => show(arg.as_deref().ok_or_else(invalid)?),
        "pause" => AdminCommand::Pause(arg),
        "resume" => AdminCommand::Resume(arg),
        "disable" => AdminCommand::Disable(required(arg)?),
        "enable" => AdminCommand::Enable(required(arg)?),
        "reconnect" => AdminCommand::Reconnect(arg),
        "wait_close" => AdminCommand::WaitClose(arg),
        "kill" => AdminCommand::Kill(arg),
        "kill_client" => {
            let arg = arg.ok_or_else(|| ParseError::BadClientId(String::new()))?;
            let id = arg.parse().map_err(|_| ParseError::BadClientId(arg))?;
            AdminCommand::KillClient(id)
        }
        "reload" if arg.is_none() => AdminCommand::Reload,
        "suspend" if arg.is_none() => AdminCommand::Suspend,
        "shutdown" => AdminCommand::Shutdown(match arg.map(|a| a.to_ascii_lowercase()) {
            None => ShutdownMode::Immediate,
            Some(a) if a == "wait_for_clients" => ShutdownMode::WaitForClients,
            Some(a) if a == "wait_for_servers" => ShutdownMode::WaitForServers,
            Some(_) => return Err(invalid()),
        }),
        _ => return Err(invalid()),
    })
}

fn show(what: &str) -> AdminCommand {
    let s = match what.to_ascii_lowercase().as_str() {
        "help" => Show::Help,
        "version" => Show::Version,
        "config" => Show::Config,
        "databases" => Show::Databases,
        "pools" => Show::Pools,
        "clients" => Show::Clients,
        "servers" => Show::Servers,
        "sockets" => Show::Sockets,
        "active_sockets" => Show::ActiveSockets,
        "peers" => Show::Peers,
        "peer_pools" => Show::PeerPools,
        "users" => Show::Users,
        "stats" => Show::Stats,
        "stats_totals" => Show::StatsTotals,
        "stats_averages" => Show::StatsAverages,
        "totals" => Show::Totals,
        "lists" => Show::Lists,
        "dns_hosts" => Show::DnsHosts,
        "dns_zones" => Show::DnsZones,
        "state" => Show::State,
        "mem" => Show::Mem,
        "fds" => Show::Fds,
        "hosts" => Show::Hosts,
        "identities" => Show::Identities,
        other => return AdminCommand::ShowParam(other.to_string()),
    };
    AdminCommand::Show(s)
}

/// `SET key = value` / `SET key TO value` (the whole command text): the key, lower-cased,
/// and the value without its quotes ('' inside single quotes is a quote).
pub(super) fn set_parts(text: &str) -> Option<(String, String)> {
    let rest = text.get(3..)?.trim_start();
    let key_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    let (key, rest) = rest.split_at(key_len);
    let rest = rest.trim_start();
    let value = if let Some(v) = rest.strip_prefix('=') {
        v
    } else if starts_with_word(rest, "to") {
        &rest[2..]
    } else {
        return None;
    };
    let value = value.trim();
    let value = match value.strip_prefix('\'') {
        // One quoted literal, '' inside for a quote: `'a' 'b'` or an unterminated one is not.
        Some(rest) => {
            let body = rest.strip_suffix('\'')?;
            if body.replace("''", "").contains('\'') {
                return None;
            }
            body.replace("''", "'")
        }
        None if value.contains('\'') || value.is_empty() => return None,
        None => value.to_string(),
    };
    (!key.is_empty()).then(|| (key.to_ascii_lowercase(), value))
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
        && text[word.len()..].starts_with(char::is_whitespace)
}

/// Split into words: `[0-9A-Za-z_]+` or `"..."` (with `""` escapes); None on anything else.
fn words(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else {
            return Some(out);
        };
        let mut w = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.next_if_eq(&'"').is_some() => w.push('"'),
                    '"' => break,
                    c => w.push(c),
                }
            }
            if w.is_empty() {
                return None;
            }
        } else {
            while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                w.push(c);
            }
            if w.is_empty() {
                return None;
            }
        }
        out.push(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_commands() {
        assert_eq!(parse("SHOW POOLS"), Ok(AdminCommand::Show(Show::Pools)));
        assert_eq!(
            parse(" show stats_totals ; "),
            Ok(AdminCommand::Show(Show::StatsTotals))
        );
        assert_eq!(parse("pause"), Ok(AdminCommand::Pause(None)));
        assert_eq!(
            parse("PAUSE mydb;"),
            Ok(AdminCommand::Pause(Some("mydb".into())))
        );
        assert_eq!(
            parse("kill \"My\"\"Db\""),
            Ok(AdminCommand::Kill(Some("My\"Db".into())))
        );
        assert_eq!(parse("KILL_CLIENT 42"), Ok(AdminCommand::KillClient(42)));
        assert_eq!(parse("reload"), Ok(AdminCommand::Reload));
        assert_eq!(parse("suspend;"), Ok(AdminCommand::Suspend));
        assert_eq!(parse("SHOW FDS"), Ok(AdminCommand::Show(Show::Fds)));
        assert_eq!(parse("wait_close"), Ok(AdminCommand::WaitClose(None)));
        assert_eq!(
            parse("WAIT_CLOSE db1"),
            Ok(AdminCommand::WaitClose(Some("db1".into())))
        );
        assert_eq!(
            parse("SHUTDOWN WAIT_FOR_CLIENTS"),
            Ok(AdminCommand::Shutdown(ShutdownMode::WaitForClients))
        );
        assert_eq!(
            parse("shutdown"),
            Ok(AdminCommand::Shutdown(ShutdownMode::Immediate))
        );
        assert_eq!(
            parse("show client_encoding"),
            Ok(AdminCommand::ShowParam("client_encoding".into()))
        );
        assert!(matches!(parse("SET x = 1"), Ok(AdminCommand::Set(_))));
        let parts = set_parts;
        assert_eq!(
            parts("SET default_pool_size = 7"),
            Some(("default_pool_size".into(), "7".into()))
        );
        assert_eq!(
            parts("set Application_Name TO 'it''s'"),
            Some(("application_name".into(), "it's".into()))
        );
        assert_eq!(parts("SET x"), None);
        assert_eq!(parts("SET x = 'unterminated"), None);
        assert_eq!(parts("SET x = 'a' 'b'"), None);
        assert_eq!(parts("SET x = ''"), Some(("x".into(), String::new())));
        assert_eq!(parts("SET x = it's"), None);
        assert_eq!(parts("SET = 1"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse("DROP TABLE x"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse("show"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse(""), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse("show pools extra"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(parse("select 1+1"), Err(ParseError::Invalid(_))));
        assert_eq!(parse("disable"), Err(ParseError::DatabaseRequired));
        assert!(matches!(
            parse("kill_client abc"),
            Err(ParseError::BadClientId(_))
        ));
        assert!(matches!(
            parse("shutdown later"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(parse("reload now"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse("suspend db"), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn rights() {
        assert!(!parse("show pools").unwrap().needs_admin());
        assert!(parse("pause").unwrap().needs_admin());
        assert!(parse("reload").unwrap().needs_admin());
        assert!(parse("suspend").unwrap().needs_admin());
        assert!(parse("show fds").unwrap().needs_admin());
    }
}

//! Client startup parameters: which are accepted, what the client is welcomed with, and the SETs
//! that make a reused server connection match the client.

use bytes::BytesMut;

use crate::config::Config;
use crate::error::Error;
use crate::protocol::backend;
use crate::server::{query_row, queue_queries, ServerConn, ServerError};

/// Reported parameters a session must not inherit from the server connection's previous
/// client (PgBouncer's tracked parameters, and IntervalStyle): a client that does not ask for
/// one gets the value the connection logged in with, even when no reset query ran.
const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
];

/// The tracked parameters: [`TRACKED`], and the configuration's `track_extra_parameters`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tracked<'a>(pub &'a [String]);

impl<'a> Tracked<'a> {
    fn names(self) -> impl Iterator<Item = &'a str> {
        TRACKED.into_iter().chain(self.0.iter().map(String::as_str))
    }

    fn contains(self, name: &str) -> bool {
        self.names().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Startup parameters that are not GUCs or that pgporter consumes itself.
const CONSUMED: &[&str] = &["user", "database"];

/// What becomes of a startup parameter (`lower`: its name in lower case).
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// Refused: `unsupported startup parameter`.
    Refused,
    /// Consumed, ignored or meaningless here.
    Skipped,
    /// SET on the server connection.
    Set,
}

fn taken(name: &str, lower: &str, value: &str, ignored: &[String]) -> Taken {
    if lower == "replication" {
        return match wants_replication(value) {
            true => Taken::Refused,
            false => Taken::Skipped,
        };
    }
    // `_pq_.` protocol options were declined in NegotiateProtocolVersion.
    // PostgreSQL sets session_authorization to the login user whatever the packet says.
    if lower == "session_authorization"
        || CONSUMED.contains(&lower)
        || ignored.iter().any(|i| i == lower)
        || lower.starts_with("_pq_.")
    {
        return Taken::Skipped;
    }
    if lower == "options" || !is_guc_name(name) {
        return Taken::Refused;
    }
    Taken::Set
}

/// The error of a startup parameter pgporter does not take.
pub(super) fn unsupported(name: &str, value: &str) -> Error {
    Error::UnsupportedStartupParameter {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// Refuse a startup packet with a parameter pgporter does not take, before authentication
/// and before its user and database are looked at, as PgBouncer 1.18 does (its log lines
/// name nobody: `(nodb)/(nouser)`, and there is no login attempt line). A login to the admin
/// `console` takes only the parameters a session of pgporter's follows itself (the tracked
/// ones): there is no server to SET any other on, and PgBouncer refuses those everywhere.
pub(super) fn refuse_unsupported(
    params: &[(String, String)],
    config: &Config,
    console: bool,
) -> Result<(), Error> {
    let ignored = &config.settings.ignore_startup_parameters;
    let tracked = Tracked(&config.settings.track_extra_parameters);
    for (name, value) in params {
        let lower = name.to_ascii_lowercase();
        match taken(name, &lower, value, ignored) {
            Taken::Refused => return Err(unsupported(name, value)),
            Taken::Set if console && !tracked.contains(name) => {
                return Err(unsupported(name, value))
            }
            Taken::Set | Taken::Skipped => {}
        }
    }
    Ok(())
}

/// `replication` asking for a replication connection (walsender), which a pooler cannot serve
/// (PgBouncer 1.18 refuses it too); `false` / `off` / `no` / `0` ask for an ordinary session.
fn wants_replication(value: &str) -> bool {
    !["false", "off", "no", "0"]
        .iter()
        .any(|f| value.trim().eq_ignore_ascii_case(f))
}

/// The parameters a client asked for, to be applied to any server connection it gets. Kept
/// for the whole session, so packed into one allocation: `name\0value\0` per parameter
/// (startup packet strings cannot hold a NUL).
#[derive(Debug, Clone, Default)]
pub(super) struct ClientParams {
    packed: Box<str>,
}

impl ClientParams {
    /// Validate the startup parameters. Unknown-to-PostgreSQL names are caught by the server
    /// (the SET fails); names that are not plain identifiers, and `options`, are refused here
    /// unless listed in ignore_startup_parameters.
    ///
    /// A client may not set the identity GUCs itself (42501) unless `may_set_identity`
    /// (admin users); `application_name` gets the configured host / user suffixes.
    pub(super) fn from_startup(
        params: &[(String, String)],
        config: &Config,
        peer: &super::Peer,
        user: &str,
        may_set_identity: bool,
    ) -> Result<ClientParams, Error> {
        let ignored = &config.settings.ignore_startup_parameters;
        let identity = &config.settings.identity;
        let mut wanted = Vec::new();
        let mut app_name_seen = false;
        for (name, value) in params {
            let lower = name.to_ascii_lowercase();
            if identity.identity_tagging
                && !may_set_identity
                && (lower == identity.identity_guc || lower == identity.identity_addr_guc)
            {
                return Err(Error::IdentitySpoof);
            }
            match taken(name, &lower, value, ignored) {
                Taken::Refused => return Err(unsupported(name, value)),
                Taken::Skipped => continue,
                Taken::Set => {}
            }
            let mut value = value.clone();
            if lower == "application_name" {
                app_name_seen = true;
                value = app_name(value, config, peer, user);
                value.truncate(name_data(&value).len());
            }
            // A name given twice: PostgreSQL applies the last.
            wanted.retain(|(k, _): &(String, String)| !k.eq_ignore_ascii_case(name));
            wanted.push((name.clone(), value));
        }
        let decorated = (identity.identity_tagging && identity.application_name_add_user)
            || config.settings.application_name_add_host;
        if !app_name_seen && decorated {
            let mut value = app_name(String::new(), config, peer, user);
            value.truncate(name_data(&value).len());
            wanted.push(("application_name".into(), value));
        }
        Ok(ClientParams {
            packed: pack(&wanted),
        })
    }

    /// Transaction mode: a [`TRACKED`] parameter the client changed itself (its SET, seen as
    /// the server's ParameterStatus) becomes its wish, SET on its next server connection, as
    /// PgBouncer does; the connection it leaves goes back to what the next client asks for.
    pub(super) fn follow(&mut self, changes: &[(String, String)], tracked: Tracked<'_>) {
        let tracked = |name: &str| tracked.contains(name);
        if !changes.iter().any(|(name, _)| tracked(name)) {
            return;
        }
        let mut wanted: Vec<(String, String)> = self
            .wanted()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (name, value) in changes.iter().filter(|(name, _)| tracked(name)) {
            match wanted
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
            {
                Some(slot) => slot.1.clone_from(value),
                None => wanted.push((name.clone(), value.clone())),
            }
        }
        self.packed = pack(&wanted);
    }

    /// The parameters, in the client's order.
    pub(super) fn wanted(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.packed.split_terminator('\0');
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// ParameterStatus messages for the client: the server's reported values, with the
    /// client's own values where it set a reported parameter.
    /// (application_name, when the client names none, is `app_default`: the reported value
    /// may be another client's, the one the connection was opened for.)
    pub(super) fn welcome(
        &self,
        reported: &[(String, String)],
        app_default: &str,
        buf: &mut BytesMut,
    ) {
        // Unpacked once, not once per reported parameter.
        let wanted: Vec<(&str, &str)> = self.wanted().collect();
        for (name, value) in reported {
            let fallback = if name.eq_ignore_ascii_case("application_name") {
                app_default
            } else {
                value.as_str()
            };
            let value = (wanted.iter())
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or(fallback, |(_, v)| v);
            backend::parameter_status(buf, name, value);
        }
    }

    /// SET what differs between the client's wishes and the server connection's state (for a
    /// parameter the server does not report, what it was last SET to is not known: always),
    /// and put the [`TRACKED`] parameters the client did not ask for to the values the client
    /// was welcomed with (`greeted`: a connection opened after `ALTER ROLE ... SET
    /// client_encoding` logs in with another value than the pool's first one, and a driver
    /// that believes UTF8 on a LATIN1 session stores garbage). A value the server refuses
    /// becomes the client's error.
    ///
    /// Values go through `set_config`, which parses them as a startup packet's are (`SET
    /// search_path = 'a,b'` would name one schema `a,b`).
    ///
    /// Returns true when the SETs were sent without waiting for their answer: when only
    /// `application_name` differs (the usual case on a reused connection: the reset cleared
    /// it), a SET that cannot fail, which then travels ahead of the client's first request
    /// and whose answer the relay drops (as PgBouncer does), saving a round trip.
    ///
    /// `app_default` is the application_name a connection has before any client's (the
    /// database entry's, else empty): what a client that names none gets.
    ///
    /// A reported parameter the client set in its own spelling (`iso`) and the server reports
    /// normalized (`ISO, MDY`) gets a ParameterStatus in `to_client`, as the client would
    /// have had at login from PostgreSQL.
    pub(super) async fn apply(
        &self,
        server: &mut ServerConn,
        app_default: &str,
        greeted: &[(String, String)],
        tracked: Tracked<'_>,
        to_client: &mut BytesMut,
    ) -> Result<bool, Error> {
        let sets = self.differences(server, app_default, greeted, tracked);
        // The parameters besides the tracked ones (which `differences` puts back itself) that
        // this client asks for, and those an earlier client had SET and this one does not ask
        // for: back to the connection's default (set_config with NULL is RESET).
        // (A track_extra_parameters name this server does not report is not tracked: it is
        // SET and reset as any other, or it would reach the next client.)
        let mine: Vec<String> = (self.wanted())
            .filter(|(name, _)| !(tracked.contains(name) && server.reported(name).is_some()))
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect();
        let resets: Vec<String> = (server.set_for_client.iter())
            .filter(|name| !mine.contains(name))
            .cloned()
            .collect();
        server.set_for_client = mine;
        if sets.is_empty() && resets.is_empty() {
            return Ok(false);
        }
        let ahead = resets.is_empty()
            && sets
                .iter()
                .all(|(name, _)| name.eq_ignore_ascii_case("application_name"));
        if ahead {
            let mut sql = String::with_capacity(32 + sets[0].1.len());
            sql.push_str("SET application_name = ");
            push_literal(&mut sql, &sets[0].1);
            queue_queries(&mut server.conn.wbuf, &[&sql])
                .map_err(|e| Error::ServerLogin(ServerError::from(e), None))?;
            server
                .conn
                .flush()
                .await
                .map_err(|e| Error::ServerLogin(ServerError::from(e), None))?;
            record(server, &sets);
            return Ok(true);
        }
        let calls: Vec<String> = (sets.iter())
            .map(|(name, value)| {
                let (name, value) = (quote_literal(name), quote_literal(value));
                format!("pg_catalog.set_config({name}, {value}, false)")
            })
            .chain(resets.iter().map(|name| {
                let name = quote_literal(name);
                format!("pg_catalog.set_config({name}, NULL, false)")
            }))
            .collect();
        let sql = format!("SELECT {}", calls.join(", "));
        // set_config returns each value as now in effect, in the server's spelling
        // (`'utf-8'` -> `UTF8`): that is what the connection is recorded with. The asked
        // spelling would go stale (no ParameterStatus comes when the value in effect did not
        // change) and be reported to a later client.
        let values = query_row(server, &sql)
            .await
            .map_err(|e| Error::ServerLogin(e, None))?
            .unwrap_or_default();
        for ((name, asked), now) in sets.iter().zip(values) {
            if server.reported(name).is_some() {
                let now = now.as_deref().unwrap_or(asked);
                server.set_param(name, now);
                server.remember_spelling(name, asked, now);
            }
        }
        self.report_differences(server, app_default, greeted, to_client);
        Ok(false)
    }

    /// ParameterStatus for every reported parameter whose value in effect now differs from
    /// what the client was told: a value PostgreSQL normalized (`iso` -> `ISO, MDY`), or one a
    /// configuration reload changed on this connection (applied at its next command, so
    /// reported in the answer to pgporter's own query).
    fn report_differences(
        &self,
        server: &ServerConn,
        app_default: &str,
        greeted: &[(String, String)],
        to_client: &mut BytesMut,
    ) {
        for (name, _) in &server.reported {
            let told = self
                .wanted()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or_else(
                    || told_unasked(name, app_default, greeted),
                    |(_, v)| Some(v),
                );
            if let (Some(told), Some(now)) = (told, server.param(name)) {
                if now != told {
                    backend::parameter_status(to_client, name, now);
                }
            }
        }
    }

    /// The SETs that make `server` match this client.
    fn differences(
        &self,
        server: &ServerConn,
        app_default: &str,
        greeted: &[(String, String)],
        tracked: Tracked<'_>,
    ) -> Vec<(String, String)> {
        let mut sets: Vec<(String, String)> = Vec::new();
        // Unpacked once: this runs at every checkout (every transaction in transaction mode).
        let wanted: Vec<(&str, &str)> = self.wanted().collect();
        for &(name, value) in &wanted {
            if !server.param_is(name, value) {
                sets.push((name.to_string(), value.to_string()));
            }
        }
        for name in tracked.names() {
            if wanted.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                continue;
            }
            // A connection opened for a client starts with that client's application_name
            // (see `application_name`), not with the default.
            let start = told_unasked(name, app_default, greeted).or_else(|| server.reported(name));
            match start {
                Some(start) if server.param(name) != Some(start) => {
                    sets.push((name.to_string(), start.to_string()));
                }
                _ => {}
            }
        }
        sets
    }
}

/// `name\0value\0` per parameter.
fn pack(params: &[(String, String)]) -> Box<str> {
    let mut packed = String::new();
    for (name, value) in params {
        packed.extend([name.as_str(), "\0", value.as_str(), "\0"]);
    }
    packed.into_boxed_str()
}

/// What a client that did not name parameter `name` was welcomed with: the pool's value
/// (`greeted`), or for application_name the connection's default (`app_default`).
fn told_unasked<'a>(
    name: &str,
    app_default: &'a str,
    greeted: &'a [(String, String)],
) -> Option<&'a str> {
    if name.eq_ignore_ascii_case("application_name") {
        return Some(app_default);
    }
    greeted
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Record what was SET: the next client asking the same needs no SET. Only for parameters
/// the server reports: a reset (DISCARD ALL) changes the others without saying so, so their
/// record would go stale; they are SET for every client that asks.
fn record(server: &mut ServerConn, sets: &[(String, String)]) {
    for (name, value) in sets {
        if server.reported(name).is_some() {
            server.set_param(name, value);
        }
    }
}

/// `name - host:port` (application_name_add_host) `- user@addr` (application_name_add_user).
fn app_name(mut value: String, config: &Config, peer: &super::Peer, user: &str) -> String {
    let sep = |v: &str| if v.is_empty() { "" } else { " - " };
    if config.settings.application_name_add_host {
        value = format!("{value}{}{peer}", sep(&value));
    }
    let identity = &config.settings.identity;
    if identity.identity_tagging && identity.application_name_add_user {
        let addr = crate::identity::addr_text(peer.ip());
        value = format!("{value}{}{user}@{addr}", sep(&value));
    }
    value
}

/// What PostgreSQL keeps of an application_name (a name): at most NAMEDATALEN - 1 = 63 bytes,
/// cut at a character boundary, as its truncate_identifier does at login and at SET (with a
/// NOTICE). The welcome, SHOW CLIENTS and SHOW SERVERS show what the server holds.
pub(super) fn name_data(value: &str) -> &str {
    const MAX: usize = 63;
    let mut end = value.len().min(MAX);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default()
}

/// A parameter name safe to put in a SET unquoted: letters, digits, `_`, `.` (custom GUCs).
pub(super) fn is_guc_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// `'...'` with quotes doubled (standard_conforming_strings is on in every supported server,
/// and an E'' form is used when a backslash appears).
fn quote_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 3);
    push_literal(&mut quoted, value);
    quoted
}

/// Append [`quote_literal`]'s form of `value` to `out`.
fn push_literal(out: &mut String, value: &str) {
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_literal(r"it's a\'b"), r"E'it''s a\\''b'");
        assert_eq!(quote_literal("pgbench"), "'pgbench'");
        assert_eq!(quote_literal(""), "''");
    }

    fn config(settings: &str) -> Config {
        let raw =
            crate::config::parse_ini(&format!("[pgbouncer]\n{settings}\n"), "t.ini").expect("ini");
        crate::config::from_raw(std::path::Path::new("t.ini"), raw).expect("config")
    }

    #[test]
    fn application_names_are_cut_to_63_bytes_on_a_character_boundary() {
        assert_eq!(name_data("pgbench"), "pgbench");
        let long = "a".repeat(80);
        assert_eq!(name_data(&long), &long[..63]);
        // A two-byte character across byte 63 is left out whole.
        let straddling = format!("{}é", "a".repeat(62));
        assert_eq!(name_data(&straddling), "a".repeat(62));
        let peer = super::super::Peer::Tcp("10.1.2.3:5000".parse().unwrap());
        let cfg = config("application_name_add_host = 1");
        let asked = vec![("application_name".to_string(), long.clone())];
        let p = ClientParams::from_startup(&asked, &cfg, &peer, "alice", true).unwrap();
        let wanted: Vec<(&str, &str)> = p.wanted().collect();
        assert_eq!(wanted, [("application_name", &long[..63])]);
    }

    #[test]
    fn identity_gucs_in_the_startup_packet_are_refused() {
        let peer = super::super::Peer::Tcp("10.1.2.3:5000".parse().unwrap());
        let cfg = config("application_name_add_user = 1");
        let spoof = vec![("PGPORTER.client_user".to_string(), "bob".to_string())];
        assert!(matches!(
            ClientParams::from_startup(&spoof, &cfg, &peer, "alice", false),
            Err(Error::IdentitySpoof)
        ));
        // Admins may; with tagging off the names are ordinary.
        assert!(ClientParams::from_startup(&spoof, &cfg, &peer, "alice", true).is_ok());
        let off = config("identity_tagging = 0");
        assert!(ClientParams::from_startup(&spoof, &off, &peer, "alice", false).is_ok());
        let app = vec![("application_name".to_string(), "psql".to_string())];
        let p = ClientParams::from_startup(&app, &cfg, &peer, "alice", false).unwrap();
        assert_eq!(
            p.wanted().collect::<Vec<_>>(),
            [("application_name", "psql - alice@10.1.2.3")]
        );
        let p = ClientParams::from_startup(&[], &cfg, &peer, "alice", false).unwrap();
        assert_eq!(
            p.wanted().collect::<Vec<_>>(),
            [("application_name", "alice@10.1.2.3")]
        );
        let host = config("identity_tagging = 0\napplication_name_add_host = 1");
        let p = ClientParams::from_startup(&[], &host, &peer, "alice", false).unwrap();
        assert_eq!(
            p.wanted().collect::<Vec<_>>(),
            [("application_name", "10.1.2.3:5000")],
            "a client naming no application gets its address too"
        );
        let two = vec![
            ("client_encoding".to_string(), "UTF8".to_string()),
            ("search_path".to_string(), String::new()),
        ];
        let p = ClientParams::from_startup(&two, &off, &peer, "alice", false).unwrap();
        assert_eq!(
            p.wanted().collect::<Vec<_>>(),
            [("client_encoding", "UTF8"), ("search_path", "")]
        );
    }

    #[test]
    fn a_tracked_parameter_the_client_set_follows_it() {
        let peer = super::super::Peer::Tcp("10.1.2.3:5000".parse().unwrap());
        let off = config("identity_tagging = 0");
        let startup = vec![("TimeZone".to_string(), "UTC".to_string())];
        let mut p = ClientParams::from_startup(&startup, &off, &peer, "alice", false).unwrap();
        let changes = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        p.follow(
            &changes(&[
                ("timezone", "Asia/Tokyo"),
                ("DateStyle", "German, DMY"),
                ("is_superuser", "on"),
                ("session_authorization", "postgres"),
                ("search_path", "x"),
            ]),
            Tracked(&[]),
        );
        assert_eq!(
            p.wanted().collect::<Vec<_>>(),
            [("TimeZone", "Asia/Tokyo"), ("DateStyle", "German, DMY")],
            "only the tracked parameters, matched case-insensitively"
        );
        // track_extra_parameters adds to them (a server reporting search_path: Citus).
        p.follow(
            &changes(&[("search_path", "x"), ("is_superuser", "on")]),
            Tracked(&["Search_Path".to_string()]),
        );
        assert_eq!(
            p.wanted().collect::<Vec<_>>(),
            [
                ("TimeZone", "Asia/Tokyo"),
                ("DateStyle", "German, DMY"),
                ("search_path", "x")
            ]
        );
    }

    #[test]
    fn the_last_of_a_repeated_name_wins_and_session_authorization_is_ignored() {
        let peer = super::super::Peer::Tcp("10.1.2.3:5000".parse().unwrap());
        let cfg = config("identity_tagging = 0");
        let params = vec![
            ("DateStyle".to_string(), "ISO".to_string()),
            (
                "session_authorization".to_string(),
                "someone_else".to_string(),
            ),
            ("datestyle".to_string(), "German".to_string()),
        ];
        let p = ClientParams::from_startup(&params, &cfg, &peer, "alice", false).unwrap();
        assert_eq!(p.wanted().collect::<Vec<_>>(), [("datestyle", "German")]);
    }

    #[test]
    fn guc_names() {
        assert!(is_guc_name("application_name"));
        assert!(is_guc_name("pgporter.client_user"));
        assert!(!is_guc_name("a; drop table x"));
        assert!(!is_guc_name(""));
    }
}

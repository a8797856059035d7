//! The one error type at session boundaries, and the one place SQLSTATEs are chosen.

use bytes::BytesMut;

use crate::pool::{Blocker, ClientLimit};
use crate::protocol::backend::{self, ErrorFields, Severity};
use crate::protocol::{sqlstate, ProtocolError};
use crate::routing::NoHost;
use crate::server::ServerError;

/// Who caused a failure (for logging levels and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Server,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("client protocol error")]
    ClientProtocol(#[source] ProtocolError),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("no user name in startup packet")]
    NoUser,
    /// A startup parameter pgporter does not take (`value`, for PgBouncer's log line that
    /// shows it; the client is told the name only).
    #[error("unsupported startup parameter: {name}")]
    UnsupportedStartupParameter { name: String, value: String },
    /// A startup parameter's value is not UTF-8 where pgporter passes it on in SQL, which the
    /// server would refuse (PostgreSQL's text; `bytes`: the first invalid sequence, `0xe9`).
    #[error("invalid byte sequence for encoding \"UTF8\": {bytes} (startup parameter \"{name}\")")]
    NotUtf8 { name: String, bytes: String },
    /// A startup parameter's value that cannot be valid (PostgreSQL's text).
    #[error("invalid value for parameter \"{name}\": \"{value}\"")]
    InvalidParameterValue { name: String, value: String },
    /// A login user that cannot exist (its name is not UTF-8); PostgreSQL's text.
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
    /// A wrong password, or a user with no secret (`unknown`: the exchange was a mock one, so
    /// that the client cannot tell); `sasl`: the exchange was SCRAM's.
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed {
        user: String,
        unknown: bool,
        sasl: bool,
    },
    #[error("SSL required")]
    SslRequired,
    #[error("TLS handshake with the client failed")]
    ClientTls(#[source] std::io::Error),
    #[error("no pg_hba.conf entry for host \"{host}\", user \"{user}\", database \"{database}\", {}", encryption(*.tls))]
    HbaNoEntry {
        host: String,
        user: String,
        database: String,
        tls: bool,
    },
    #[error("pg_hba.conf rejects connection for host \"{host}\", user \"{user}\", database \"{database}\", {}", encryption(*.tls))]
    HbaReject {
        host: String,
        user: String,
        database: String,
        tls: bool,
    },
    #[error("connection requires a valid client certificate")]
    NoClientCertificate,
    #[error("peer authentication failed for user \"{user}\"")]
    PeerAuthFailed { user: String },
    #[error("certificate authentication failed for user \"{user}\"")]
    CertAuthFailed { user: String },
    #[error("authentication lookup failed (auth_query)")]
    AuthQuery,
    #[error("no such database: {0}")]
    UnknownDatabase(String),
    #[error("no more connections allowed (max_client_conn)")]
    TooManyClients,
    /// Waited query_wait_timeout for a server connection; names the limit that held it back.
    #[error("query_wait_timeout (held back by {0})")]
    QueryWaitTimeout(Blocker),
    /// A client-connection cap refused the login (PgBouncer's text).
    #[error("client connections exceeded ({})", .0.name())]
    ClientLimit(ClientLimit),
    #[error("client_login_timeout")]
    LoginTimeout,
    /// query_timeout: the server was busy or in a transaction that long since the client's
    /// last request (PgBouncer's text).
    #[error("query timeout")]
    QueryTimeout,
    /// idle_transaction_timeout: idle inside a transaction that long.
    #[error("idle transaction timeout")]
    IdleTransactionTimeout,
    /// transaction_timeout: a transaction (from the request that took the server out of idle)
    /// ran that long.
    #[error("transaction timeout")]
    TransactionTimeout,
    /// Transaction mode with max_prepared_statements: the client pipelined so that which of
    /// the server's answers were still due could not be told (an error with simple queries
    /// behind an unsynced batch, a failed COPY with Syncs inside it).
    #[error("pgporter lost track of the server's answers to this client's renamed prepared statements (max_prepared_statements = 0 avoids renaming)")]
    RenamingLost,
    /// disable_pqexec: the client sent a simple Query (PgBouncer's text).
    #[error("PQexec disallowed")]
    PqexecDisallowed,
    /// Statement mode: a request left a transaction open (PgBouncer's text).
    #[error("transaction blocks not allowed in statement pooling mode")]
    LongTransaction,
    /// The session's database changed under it: server_fast_close closed its server
    /// connection at an idle point after RECONNECT or a reload, or a reload changed the
    /// database's forced user (PgBouncer's reason text).
    #[error("database configuration changed")]
    DatabaseChanged,
    /// client_idle_timeout: logged in and silent that long without a server connection.
    #[error("client_idle_timeout")]
    ClientIdleTimeout,
    /// A server login failed; a refusal carries its server's closing line, written when the
    /// error is dropped, after the client's lines (see [`crate::pool::OwedClose`]).
    #[error("server login failed: {0}")]
    ServerLogin(#[source] ServerError, Option<Box<crate::pool::OwedClose>>),
    #[error("server connection failed")]
    ServerLost(#[source] ProtocolError),
    #[error("server closed the connection unexpectedly")]
    ServerClosed,
    /// The server sent a FATAL and closed: the client got that FATAL, so nothing more is
    /// said to it (PostgreSQL's own error is the session's last message, as on a direct
    /// connection).
    #[error("the server ended the session (its FATAL was passed on)")]
    ServerFatal,
    #[error("server host went down")]
    ServerDown,
    #[error(transparent)]
    NoServer(NoHost),
    /// A statement (or startup parameter) naming an identity GUC: an ERROR that the session
    /// survives, or the session's FATAL where the message cannot be held back whole.
    #[error("pgporter: the client identity settings cannot be read or changed by clients")]
    IdentitySpoof,
    /// A request cancelled while it waited for a server connection, answered as PostgreSQL
    /// answers a cancelled statement (an ERROR; the session goes on).
    #[error("canceling statement due to user request")]
    Canceled,
    #[error("PROXY protocol")]
    Proxy(#[source] crate::net::proxy::ProxyError),
    #[error("pooler is shutting down")]
    Shutdown,
    #[error("pooler is shutting down; not accepting new connections")]
    Draining,
    /// KILL of the session's database: PgBouncer's text (it sends 08P01).
    #[error("database removed")]
    DatabaseKilled,
    /// KILL_CLIENT: PgBouncer's text (it sends 08P01).
    #[error("admin forced disconnect")]
    ClientKilled,
    #[error("query_wait_timeout (database paused)")]
    PausedWaitTimeout,
    #[error("database \"{0}\" is not currently accepting connections")]
    DatabaseDisabled(String),
    #[error("user \"{0}\" is not allowed on the admin console")]
    AdminNotAllowed(String),
    #[error("{0}")]
    Config(String),
    #[error("I/O error")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The SQLSTATE sent to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::ClientProtocol(_)
            | Error::Proxy(_)
            | Error::NoUser
            | Error::UnsupportedStartupParameter { .. }
            | Error::QueryWaitTimeout(_)
            | Error::PausedWaitTimeout
            | Error::LoginTimeout
            | Error::QueryTimeout
            | Error::IdleTransactionTimeout
            | Error::TransactionTimeout
            | Error::ClientIdleTimeout
            | Error::RenamingLost
            | Error::LongTransaction
            | Error::PqexecDisallowed
            | Error::DatabaseChanged => sqlstate::PROTOCOL_VIOLATION,
            Error::UnsupportedProtocol { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            Error::AuthFailed { .. } => sqlstate::INVALID_PASSWORD,
            Error::SslRequired
            | Error::HbaNoEntry { .. }
            | Error::HbaReject { .. }
            | Error::NoClientCertificate
            | Error::CertAuthFailed { .. }
            | Error::PeerAuthFailed { .. } => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            Error::ClientTls(_) => sqlstate::PROTOCOL_VIOLATION,
            Error::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            Error::TooManyClients | Error::ClientLimit(_) => sqlstate::TOO_MANY_CONNECTIONS,
            Error::Shutdown | Error::DatabaseKilled | Error::ClientKilled => {
                sqlstate::ADMIN_SHUTDOWN
            }
            Error::Draining => sqlstate::CANNOT_CONNECT_NOW,
            Error::DatabaseDisabled(_) => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            Error::AdminNotAllowed(_) | Error::UnknownRole(_) => {
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION
            }
            Error::NotUtf8 { .. } => sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            Error::InvalidParameterValue { .. } => sqlstate::INVALID_PARAMETER_VALUE,
            Error::ServerLogin(..)
            | Error::ServerLost(_)
            | Error::ServerClosed
            | Error::ServerFatal
            | Error::ServerDown
            | Error::NoServer(_)
            | Error::AuthQuery => sqlstate::CONNECTION_FAILURE,
            Error::IdentitySpoof => sqlstate::INSUFFICIENT_PRIVILEGE,
            Error::Canceled => sqlstate::QUERY_CANCELED,
            Error::Config(_) | Error::Io(_) => sqlstate::INTERNAL_ERROR,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            Error::ClientProtocol(_)
            | Error::UnsupportedProtocol { .. }
            | Error::NoUser
            | Error::UnsupportedStartupParameter { .. }
            | Error::NotUtf8 { .. }
            | Error::InvalidParameterValue { .. }
            | Error::UnknownRole(_)
            | Error::AuthFailed { .. }
            | Error::SslRequired
            | Error::ClientTls(_)
            | Error::HbaNoEntry { .. }
            | Error::HbaReject { .. }
            | Error::NoClientCertificate
            | Error::CertAuthFailed { .. }
            | Error::PeerAuthFailed { .. }
            | Error::UnknownDatabase(_)
            | Error::TooManyClients
            | Error::ClientLimit(_)
            | Error::LoginTimeout
            | Error::QueryTimeout
            | Error::IdleTransactionTimeout
            | Error::TransactionTimeout
            | Error::ClientIdleTimeout
            | Error::RenamingLost
            | Error::LongTransaction
            | Error::PqexecDisallowed
            | Error::IdentitySpoof
            | Error::Canceled
            | Error::Proxy(_)
            | Error::DatabaseDisabled(_)
            | Error::AdminNotAllowed(_) => Fault::Client,
            Error::QueryWaitTimeout(_)
            | Error::PausedWaitTimeout
            | Error::AuthQuery
            | Error::ServerLogin(..)
            | Error::ServerLost(_)
            | Error::ServerClosed
            | Error::ServerFatal
            | Error::ServerDown
            | Error::NoServer(_) => Fault::Server,
            Error::Shutdown
            | Error::Draining
            | Error::DatabaseKilled
            | Error::ClientKilled
            | Error::DatabaseChanged
            | Error::Config(_)
            | Error::Io(_) => Fault::Internal,
        }
    }

    /// True when the client is gone or never spoke the protocol: nothing to tell it.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Error::ClientProtocol(e) => e.is_disconnect(),
            Error::Io(_) => true,
            _ => false,
        }
    }

    /// PgBouncer 1.18's words for a refused login in its `closing because:` line, where they
    /// differ from the message the client is sent (checked live): the client still gets the
    /// message (PostgreSQL's text), the log line says what PgBouncer's says.
    /// A server login the server refused is its message alone (PgBouncer passes the server's
    /// error on as its own).
    pub fn close_reason(&self) -> Option<&str> {
        match self {
            Error::AuthFailed { sasl: true, .. } => Some("SASL authentication failed"),
            Error::AuthFailed { sasl: false, .. } => Some("password authentication failed"),
            // PgBouncer rejects a login no hba line matches as one a `reject` line matches.
            Error::HbaReject { .. } | Error::HbaNoEntry { .. } => Some("login rejected"),
            Error::PeerAuthFailed { .. } => Some("unix socket login rejected"),
            Error::CertAuthFailed { .. } | Error::NoClientCertificate => {
                Some("certificate authentication failed")
            }
            Error::ServerLogin(ServerError::Rejected(fields), _) => Some(fields.message()),
            _ => None,
        }
    }

    /// A refused login that names no pool, which PgBouncer's lines show as `(nodb)`: its
    /// database is unknown, or its user (no secret, a mock exchange; or a name that cannot
    /// be one).
    pub fn names_no_pool(&self) -> bool {
        matches!(
            self,
            Error::UnknownDatabase(_)
                | Error::UnknownRole(_)
                | Error::AuthFailed { unknown: true, .. }
        )
    }

    /// A failed login attempt that costs the client `auth_failure_delay` and is counted.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Error::AuthFailed { .. }
                | Error::CertAuthFailed { .. }
                | Error::NoClientCertificate
                | Error::HbaReject { .. }
                | Error::HbaNoEntry { .. }
        )
    }

    /// Encode the FATAL ErrorResponse the client gets for this error.
    pub fn encode(&self, buf: &mut BytesMut) {
        // A server's own login error (bad database, role missing ...) goes to the client as is.
        if let Error::ServerLogin(ServerError::Rejected(fields), _) = self {
            return fatal_copy(fields, buf);
        }
        let text = match self {
            Error::ServerLogin(e, _) => format!("server login failed: {e}"),
            Error::ClientProtocol(e) => format!("protocol error: {e}"),
            other => other.to_string(),
        };
        backend::error_response(buf, Severity::Fatal, self.sqlstate(), &text, self.hint());
    }

    /// As an ERROR the session goes on after (a refused or cancelled statement).
    pub fn encode_error(&self, buf: &mut BytesMut) {
        let text = self.to_string();
        backend::error_response(buf, Severity::Error, self.sqlstate(), &text, self.hint());
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            Error::IdentitySpoof => {
                Some("The identity GUCs are set by the pooler; statements naming them are refused.")
            }
            _ => None,
        }
    }
}

fn encryption(tls: bool) -> &'static str {
    if tls {
        "SSL encryption"
    } else {
        "no encryption"
    }
}

/// The server's error, as FATAL: the session ends with it (an ERROR from a SET of the client's
/// startup parameters on a reused connection is, to the client, its login failing).
fn fatal_copy(fields: &ErrorFields, buf: &mut BytesMut) {
    let mut fatal = fields.clone();
    for (code, value) in &mut fatal.fields {
        if matches!(*code, b'S' | b'V') && value == "ERROR" {
            *value = "FATAL".to_string();
        }
    }
    fatal.encode(buf);
}

/// The SQLSTATE of an admin console command error (an ERROR; the console session goes on).
pub fn admin_sqlstate(e: &crate::admin::AdminError) -> &'static str {
    use crate::admin::{AdminError, ParseError};
    use crate::control::ControlError;
    match e {
        AdminError::Parse(ParseError::Invalid(_) | ParseError::BadClientId(_))
        | AdminError::Parse(ParseError::DatabaseRequired) => sqlstate::SYNTAX_ERROR,
        AdminError::NotAllowed => sqlstate::INSUFFICIENT_PRIVILEGE,
        AdminError::ExtendedProtocol | AdminError::NoOnlineRestart => {
            sqlstate::FEATURE_NOT_SUPPORTED
        }
        AdminError::Control(c) => match c {
            ControlError::NoSuchDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            // The console's own database cannot be paused, disabled, killed ...: PgBouncer's
            // words, but not its blanket 08P01 (a connection-class code some drivers and pools
            // take for a broken connection), as for every console error.
            ControlError::AdminDatabase { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            ControlError::NoSuchClient => sqlstate::UNDEFINED_OBJECT,
            ControlError::NotPaused(_)
            | ControlError::PoolerNotPaused
            | ControlError::AlreadyPaused => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ControlError::ShuttingDown => sqlstate::ADMIN_SHUTDOWN,
            ControlError::Reload(_) => sqlstate::CONFIG_FILE_ERROR,
            ControlError::Set(_) => sqlstate::INVALID_PARAMETER_VALUE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_logins_close_with_pgbouncers_words() {
        // PgBouncer 1.18, live: `closing because: SASL authentication failed` (a wrong
        // password or an unknown user under SCRAM), `login rejected` (hba).
        let failed = |unknown, sasl| Error::AuthFailed {
            user: "bob".into(),
            unknown,
            sasl,
        };
        let rejected = Error::HbaReject {
            host: "127.0.0.1".into(),
            user: "bob".into(),
            database: "app".into(),
            tls: false,
        };
        fn reason(e: &Error) -> Option<&str> {
            e.close_reason()
        }
        assert_eq!(
            reason(&failed(false, true)),
            Some("SASL authentication failed")
        );
        assert_eq!(
            reason(&failed(true, false)),
            Some("password authentication failed")
        );
        assert_eq!(reason(&rejected), Some("login rejected"));
        assert_eq!(reason(&Error::UnknownDatabase("x".into())), None);
        // A server login refused: the server's message alone.
        let fields = crate::protocol::backend::ErrorFields::parse(
            b"SFATAL\0C28P01\0Mpassword authentication failed for user \"bob\"\0\0",
        )
        .expect("fields");
        assert_eq!(
            reason(&Error::ServerLogin(ServerError::Rejected(fields), None)),
            Some("password authentication failed for user \"bob\"")
        );
        assert!(failed(true, true).names_no_pool());
        assert!(!failed(false, true).names_no_pool());
        assert!(Error::UnknownDatabase("x".into()).names_no_pool());
        assert!(!rejected.names_no_pool());
        let refused = ServerError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.close_reason(), "connect failed");
        assert_eq!(
            ServerError::NoPassword("md5").close_reason(),
            "login failed"
        );
    }

    #[test]
    fn sqlstates() {
        let failed = Error::AuthFailed {
            user: "a".into(),
            unknown: false,
            sasl: true,
        };
        assert_eq!(failed.sqlstate(), "28P01");
        assert_eq!(Error::UnknownDatabase("x".into()).sqlstate(), "3D000");
        assert_eq!(Error::TooManyClients.sqlstate(), "53300");
        assert_eq!(
            Error::QueryWaitTimeout(Blocker::PoolSize).sqlstate(),
            "08P01"
        );
        assert_eq!(
            Error::QueryWaitTimeout(Blocker::MaxDbConnections).to_string(),
            "query_wait_timeout (held back by max_db_connections)"
        );
        let capped = Error::ClientLimit(ClientLimit::MaxUserClientConnections);
        assert_eq!(capped.sqlstate(), "53300");
        assert_eq!(
            capped.to_string(),
            "client connections exceeded (max_user_client_connections)"
        );
        assert_eq!(Error::Shutdown.sqlstate(), "57P01");
        assert_eq!(Error::Draining.sqlstate(), "57P03");
        assert_eq!(Error::DatabaseKilled.sqlstate(), "57P01");
        assert_eq!(Error::ClientKilled.sqlstate(), "57P01");
        assert_eq!(Error::AdminNotAllowed("x".into()).sqlstate(), "28000");
        assert_eq!(Error::SslRequired.sqlstate(), "28000");
        let e = Error::HbaNoEntry {
            host: "127.0.0.1".into(),
            user: "u".into(),
            database: "d".into(),
            tls: false,
        };
        assert_eq!(e.sqlstate(), "28000");
        assert_eq!(
            e.to_string(),
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no encryption"
        );
        assert_eq!(Error::ServerDown.sqlstate(), "08006");
        let none = Error::NoServer(NoHost {
            attrs: "read-write",
            last: None,
        });
        assert_eq!(none.sqlstate(), "08006");
        assert_eq!(
            none.to_string(),
            "no read-write server available within failover_wait_timeout"
        );
        assert_eq!(Error::IdentitySpoof.sqlstate(), "42501");
        assert_eq!(Error::Canceled.sqlstate(), "57014");
        assert_eq!(Error::UnknownRole("x".into()).sqlstate(), "28000");
        let value = Error::InvalidParameterValue {
            name: "TimeZone".into(),
            value: "x".into(),
        };
        assert_eq!(value.sqlstate(), "22023");
        assert_eq!(
            value.to_string(),
            "invalid value for parameter \"TimeZone\": \"x\""
        );
        let bytes = Error::NotUtf8 {
            name: "search_path".into(),
            bytes: "0xe9".into(),
        };
        assert_eq!(bytes.sqlstate(), "22021");
        assert_eq!(
            bytes.to_string(),
            "invalid byte sequence for encoding \"UTF8\": 0xe9 (startup parameter \"search_path\")"
        );
        assert_eq!(
            Error::AuthFailed {
                user: "alice".into(),
                unknown: true,
                sasl: false,
            }
            .to_string(),
            "password authentication failed for user \"alice\""
        );
    }
}

//! One PostgreSQL connection ("backend"): connect, authenticate, run setup and reset queries.

mod auth;
mod connect;
mod login;
mod query;
pub mod statements;

use std::collections::BTreeMap;

use std::sync::Arc;

use tokio::time::Instant;

use crate::auth::passthrough::ScramKeys;
use crate::net::Stream;
use crate::protocol::backend::ErrorFields;
use crate::protocol::startup::CancelKey;
use crate::protocol::{FramedConn, ProtocolError};
use crate::tls::ServerTls;

pub use connect::connect;
pub(crate) use connect::send_cancel;
pub use login::{Login, LoginSeen};
pub use query::{query_row, simple_query, QueryOutcome};
pub(crate) use query::{queue_queries, read_answer, send_queries};

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    pub addr: ServerAddr,
    pub dbname: String,
    pub user: String,
    pub password: BackendPassword,
    /// Startup parameters from the database entry (application_name, client_encoding ...).
    pub params: Vec<(String, String)>,
    /// TLS toward the server (`None`: server_tls_sslmode = disable).
    pub tls: Option<Arc<ServerTls>>,
}

/// A TCP host:port, or a unix socket directory and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    Tcp { host: String, port: u16 },
    Unix { dir: String, port: u16 },
}

impl ServerAddr {
    pub fn new(host: &str, port: u16) -> Self {
        if host.starts_with('/') {
            ServerAddr::Unix {
                dir: host.to_string(),
                port,
            }
        } else {
            ServerAddr::Tcp {
                host: host.to_string(),
                port,
            }
        }
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            ServerAddr::Unix { dir, port } => write!(f, "{dir}/.s.PGSQL.{port}"),
        }
    }
}

/// The credential pgporter logs in to PostgreSQL with.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendPassword {
    None,
    Plain(String),
    /// A stored `md5...` hash: enough to answer an md5 challenge.
    Md5(String),
    /// SCRAM passthrough: the ClientKey recovered from the user's login and the verifier's
    /// ServerKey answer a SCRAM challenge without the password.
    ScramKeys(ScramKeys),
}

impl std::fmt::Debug for BackendPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendPassword::None => "None",
            BackendPassword::Plain(_) => "Plain(..)",
            BackendPassword::Md5(_) => "Md5(..)",
            BackendPassword::ScramKeys(_) => "ScramKeys(..)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out (server_connect_timeout)")]
    Timeout,
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Rejected(ErrorFields),
    #[error("server requested {0} authentication, but no usable password is configured")]
    NoPassword(&'static str),
    #[error("unsupported authentication request {0}")]
    UnsupportedAuth(i32),
    #[error("SCRAM exchange with the server failed: {0}")]
    Scram(String),
    #[error("server does not support TLS (server_tls_sslmode requires it)")]
    TlsRefused,
    #[error("TLS handshake with the server failed")]
    Tls(#[source] std::io::Error),
    /// connect_query failed: the server's error.
    #[error("connect_query failed: {0}")]
    ConnectQueryFailed(ErrorFields),
    /// connect_query ended inside a transaction block (ReadyForQuery status `T` or `E`).
    #[error("connect_query left the server connection inside a transaction block")]
    ConnectQueryInTransaction,
}

impl ServerError {
    /// PgBouncer 1.18's reason for a server connection that did not log in, as its `closing
    /// because:` line gives it (live: `connect failed` for a refused TCP connect, `login
    /// failed` for a login the server refused; its server_connect_timeout's `connect
    /// timeout`).
    pub fn close_reason(&self) -> &'static str {
        match self {
            ServerError::Connect { .. } => "connect failed",
            ServerError::Timeout => "connect timeout",
            ServerError::Protocol(_)
            | ServerError::Rejected(_)
            | ServerError::NoPassword(_)
            | ServerError::UnsupportedAuth(_)
            | ServerError::Scram(_)
            | ServerError::TlsRefused
            | ServerError::Tls(_) => "login failed",
            ServerError::ConnectQueryFailed(_) | ServerError::ConnectQueryInTransaction => {
                "connect_query failed"
            }
        }
    }
}

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    pub conn: FramedConn<Stream>,
    pub addr: ServerAddr,
    /// The server's own cancel key (BackendKeyData).
    pub key: CancelKey,
    /// Parameter values in effect: startup values plus every ParameterStatus seen.
    pub params: BTreeMap<String, String>,
    /// The ParameterStatus values the server sent at login (a client welcome is built from them).
    pub reported: Vec<(String, String)>,
    /// Clients' spellings of values set on this connection (`'utf-8'`, which set
    /// client_encoding to `UTF8`): (name, as asked, value it gave). A client asking the same
    /// needs no SET while the value is still the one it gave.
    pub spellings: Vec<(String, String, String)>,
    pub created_at: Instant,
    pub last_used: Instant,
    /// Pool bookkeeping: the client identity this connection is lent to, if any.
    pub holder: Option<std::sync::Arc<str>>,
    /// Pool bookkeeping: the pool's count of drops (KILL, RECONNECT, PAUSE) when the
    /// connection was lent, or when its login began. Given back after another drop, it is
    /// closed rather than kept idle.
    pub lent_at: u64,
    /// The backend host and role this connection was made for (routing); None until tagged.
    pub tag: Option<crate::routing::HostTag>,
    /// The client identity this connection is tagged with (startup GUCs), if any.
    pub identity_tag: Option<std::sync::Arc<str>>,
    /// TLS toward the server, if any.
    pub tls: Option<crate::tls::TlsInfo>,
    /// pgporter's end of the socket (SHOW SERVERS / CLIENTS), read once: a checkout in
    /// transaction mode needs it for every transaction.
    pub local: Option<std::net::SocketAddr>,
    /// Parameters other than the tracked ones that pgporter SET for the connection's current
    /// or last client (lowercase): a later client that does not ask for them gets them reset
    /// (transaction mode runs no reset query between clients).
    pub set_for_client: Vec<String>,
    /// What SHOW CLIENTS / SERVERS and cancel forwarding know of this connection, made at
    /// its first checkout and shared by every session it serves.
    pub link: Option<std::sync::Arc<crate::sessions::ServerLink>>,
    /// Transaction mode with max_prepared_statements: the statements pgporter prepared here.
    pub statements: statements::ServerStatements,
}

impl ServerConn {
    /// The server process id (BackendKeyData pid).
    pub fn pid(&self) -> i32 {
        self.key.pid
    }

    /// The value in effect for parameter `name` (ASCII case-insensitive, as PostgreSQL).
    pub fn param(&self, name: &str) -> Option<&str> {
        (self.params.get(name))
            .or_else(|| {
                self.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .map(String::as_str)
    }

    /// Record `name = value` as in effect, under the name's existing spelling if it has one.
    pub fn set_param(&mut self, name: &str, value: &str) {
        // Updated in place: no new key, and the value's allocation reused.
        let existing = (self.params.iter_mut()).find(|(k, _)| k.eq_ignore_ascii_case(name));
        match existing {
            Some((_, now)) => {
                if now != value {
                    now.clear();
                    now.push_str(value);
                }
            }
            None => {
                self.params.insert(name.to_string(), value.to_string());
            }
        }
    }

    /// Whether `name` is in effect as `asked` would set it: the same value, or a spelling of
    /// the value in effect (see `spellings`).
    pub fn param_is(&self, name: &str, asked: &str) -> bool {
        let now = self.param(name);
        now == Some(asked)
            || self.spellings.iter().any(|(n, a, gave)| {
                n.eq_ignore_ascii_case(name) && a == asked && now == Some(gave.as_str())
            })
    }

    /// Record `asked` as a spelling of `gave` for parameter `name`.
    pub fn remember_spelling(&mut self, name: &str, asked: &str, gave: &str) {
        self.spellings
            .retain(|(n, _, _)| !n.eq_ignore_ascii_case(name));
        if asked != gave {
            self.spellings
                .push((name.to_string(), asked.to_string(), gave.to_string()));
        }
    }

    /// The value parameter `name` had when the connection logged in, if the server reported it.
    pub fn reported(&self, name: &str) -> Option<&str> {
        (self.reported.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// An idle connection must be silent: bytes or EOF arriving while it sat in the pool (a
    /// FATAL from a shutting-down server, a role change, a NOTIFY to a LISTEN its last client
    /// left behind) mean it must not be handed out. What broke the silence, if anything.
    /// Does not wait.
    pub fn spoke_while_idle(&mut self) -> Option<Spoke> {
        use std::future::Future;
        use std::sync::Arc;
        use std::task::{Context, Wake, Waker};
        struct Noop;
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        if self.conn.rbuf.is_empty() {
            let waker = Waker::from(Arc::new(Noop));
            let mut cx = Context::from_waker(&waker);
            let fill = std::pin::pin!(self.conn.fill());
            if fill.poll(&mut cx).is_pending() {
                return None;
            }
        }
        // Bytes, or none: EOF or a failed read.
        Some(
            self.conn
                .rbuf
                .first()
                .map_or(Spoke::Gone, |&tag| Spoke::Message(tag)),
        )
    }
}

/// What an idle connection sent (see [`ServerConn::spoke_while_idle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoke {
    /// A message, by its type byte (the first one unread).
    Message(u8),
    /// EOF, or the socket failed.
    Gone,
}

/// Can a socket to `addr` be opened? (health checks; the socket is closed at once)
pub async fn probe(addr: &ServerAddr) -> Result<(), ServerError> {
    connect::open(addr).await.map(drop)
}

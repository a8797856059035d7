//! pgporter: a PgBouncer-compatible PostgreSQL connection pooler.
//!
//! One client session reads top to bottom in [`client`]: handshake, route, authenticate,
//! welcome, serve (relay to a pooled server connection), release. Operations: the admin
//! console ([`admin`]), [`control`] requests (signals, console), [`metrics`] and probes
//! ([`http`]).

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod gates;
pub mod health;
pub mod http;
pub mod identity;
pub mod logfile;
pub mod logformat;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod snapshot;
pub mod stats;
pub mod systemd;
pub mod tls;
pub mod utc;

/// The hasher of internal maps on the login and checkout paths: foldhash, randomly seeded per
/// process (std's SipHash costs ~4x as much per short key; these keys are names of
/// authenticated users and databases, or keys pgporter made).
pub(crate) type FastHash = foldhash::fast::RandomState;

pub use app::App;
pub use config::Config;
pub use control::Control;
pub use error::Error;
pub use shutdown::ShutdownMode;

//! pgporter: a PgBouncer-compatible PostgreSQL connection pooler.
//!
//! One client session reads top to bottom in [`client`]: handshake, route, authenticate,
//! welcome, serve (relay to a pooled server connection), release.

pub mod app;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod tls;

pub use app::App;
pub use config::Config;
pub use error::Error;

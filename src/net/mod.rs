//! Sockets: the client/server byte stream type and the listeners.

pub mod listener;
pub mod lobby;
pub mod proxy;
mod sockopt;
mod stream;

pub use sockopt::{Dial, Keepalive, SocketOptions};
pub use stream::Stream;

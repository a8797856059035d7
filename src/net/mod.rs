//! Sockets: the client/server byte stream type and the listeners.

pub mod listener;
pub mod lobby;
pub mod proxy;
mod stream;

pub use stream::Stream;

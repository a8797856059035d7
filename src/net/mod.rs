//! Sockets: the client/server byte stream type and the listeners.

pub mod listener;
mod stream;

pub use stream::Stream;

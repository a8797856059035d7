//! Sockets: the client/server byte stream type and the listeners.

mod keepalive;
pub mod listener;
pub mod lobby;
pub mod proxy;
mod stream;

pub use keepalive::{Dial, Keepalive};
pub use stream::Stream;

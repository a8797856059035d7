//! PostgreSQL v3 wire protocol, the parts pgporter needs. Pure: bytes in, values out.
//!
//! `frontend` names what a client sends, `backend` what a server sends; the same letter means
//! different things by direction ('D' Describe / DataRow, 'S' Sync / ParameterStatus ...).

#![deny(clippy::indexing_slicing)]

pub mod backend;
mod codec;
pub mod frontend;
pub mod scan;
pub mod sqlstate;
pub mod startup;

#[cfg(test)]
mod proptests;

pub(crate) use codec::READ_CHUNK;
pub use codec::{parse_message, FramedConn, Message};

/// Largest startup packet accepted (PostgreSQL's MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// Largest message pgporter buffers whole during authentication and setup.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// Protocol violations and I/O failures on one connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("invalid startup packet: {0}")]
    BadStartup(&'static str),
    /// A startup packet asking for a protocol major version other than 3 (the whole version
    /// word).
    #[error("unsupported frontend protocol {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedVersion(u32),
    #[error("unexpected message type '{}'", char::from(*.0))]
    Unexpected(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("connection closed")]
    Eof,
    #[error("I/O error")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// True when the peer simply went away (EOF, reset): a `debug!`, not an `error!`.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtocolError::Eof => true,
            ProtocolError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

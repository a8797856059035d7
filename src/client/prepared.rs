//! Transaction mode: the named prepared statements a client has open. A prepared statement
//! lives on the server connection that parsed it, so while a client has one open it keeps
//! that connection between transactions (where PgBouncer, without max_prepared_statements,
//! hands the connection on and the client's next Bind fails). The unnamed statement is not
//! tracked: drivers use it within one Sync, and PgBouncer does not keep it either.

use std::collections::HashSet;

use crate::protocol::frontend;

#[derive(Debug, Default)]
pub(super) struct Prepared {
    names: HashSet<Box<[u8]>>,
    /// A Parse too large to read whole went by: its name was not seen, so the client keeps
    /// its server connection for the rest of the session.
    unknown: bool,
}

impl Prepared {
    /// Whether the client's connection may go back to the pool (at a transaction's end).
    pub(super) fn none_open(&self) -> bool {
        self.names.is_empty() && !self.unknown
    }

    /// A client message on its way to the server: `body` whole, or None for one streamed
    /// past (too large to read whole).
    pub(super) fn on_client(&mut self, tag: u8, body: Option<&[u8]>) {
        match (tag, body) {
            (frontend::PARSE, Some(body)) => {
                // A Parse that fails (a name in use, bad SQL) creates nothing, but it is
                // counted until the client closes it: keeping the connection is the safe
                // mistake.
                if let Some(name) = cstr(body).filter(|n| !n.is_empty()) {
                    self.names.insert(name.into());
                }
            }
            (frontend::PARSE, None) => self.unknown = true,
            (frontend::CLOSE, Some([b'S', rest @ ..])) => {
                if let Some(name) = cstr(rest) {
                    self.names.remove(name);
                }
            }
            _ => {}
        }
    }
}

/// The NUL-terminated string at the front of `bytes`.
fn cstr(bytes: &[u8]) -> Option<&[u8]> {
    bytes.iter().position(|&b| b == 0).map(|end| &bytes[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_statements_are_open_until_closed() {
        let mut p = Prepared::default();
        p.on_client(frontend::PARSE, Some(b"\0select 1\0\0\0"));
        assert!(p.none_open(), "the unnamed statement is not tracked");
        p.on_client(frontend::PARSE, Some(b"s1\0select 1\0\0\0"));
        p.on_client(frontend::PARSE, Some(b"s2\0select 2\0\0\0"));
        p.on_client(frontend::CLOSE, Some(b"Ps1\0"));
        p.on_client(frontend::CLOSE, Some(b"Ss1\0"));
        assert!(!p.none_open(), "s2 is still open");
        p.on_client(frontend::CLOSE, Some(b"Ss2\0"));
        assert!(p.none_open());
        p.on_client(frontend::CLOSE, Some(b"Sneverparsed\0"));
        assert!(p.none_open());
    }

    #[test]
    fn an_unseen_name_keeps_the_connection() {
        let mut p = Prepared::default();
        p.on_client(frontend::PARSE, None);
        assert!(!p.none_open());
        p.on_client(frontend::PARSE, Some(b"bad body without a nul"));
        p.on_client(frontend::CLOSE, Some(b"S"));
        assert!(!p.none_open());
    }
}

//! Named prepared statements pgporter keeps on server connections for transaction-mode
//! clients (max_prepared_statements > 0). A client's statement is parsed on a server
//! connection under pgporter's name for it (`pgporter_<n>`: one per distinct statement text
//! and parameter types), so that clients sharing the connection never see each
//! other's names and the same statement is parsed once per connection however many clients
//! prepare it. Each connection keeps at most max_prepared_statements of them, dropping the
//! least recently used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// How pgporter's statement names start (`pgporter_<id>`; ids start at 1).
const PREFIX: &str = "pgporter_";

/// The id in one of pgporter's statement names.
pub fn id_of(name: &[u8]) -> Option<u64> {
    let id = name.strip_prefix(PREFIX.as_bytes())?;
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(id).ok()?.parse().ok()
}

/// One statement as the server sees it.
#[derive(Debug)]
pub struct Stmt {
    pub id: u64,
    /// The server-side name (no NUL).
    pub name: Box<[u8]>,
    /// The Parse body after the name: the query text, its NUL and the parameter types.
    pub tail: Box<[u8]>,
}

/// The statements clients prepared, by text and parameter types (one registry per process:
/// a name is never reused for another text). Entries are weak: a statement no client and no
/// connection holds any more is forgotten.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    by_tail: HashMap<Box<[u8]>, Weak<Stmt>>,
    next: u64,
    /// Size at which the dead entries are swept next.
    sweep_at: usize,
}

impl Registry {
    /// The statement for a Parse body's `tail`, made if new.
    pub fn intern(&self, tail: &[u8]) -> Arc<Stmt> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stmt) = inner.by_tail.get(tail).and_then(Weak::upgrade) {
            return stmt;
        }
        if inner.by_tail.len() >= inner.sweep_at {
            inner.by_tail.retain(|_, w| w.strong_count() > 0);
            inner.sweep_at = (inner.by_tail.len() * 2).max(1024);
        }
        inner.next += 1;
        let id = inner.next;
        let stmt = Arc::new(Stmt {
            id,
            name: format!("{PREFIX}{id}").into_bytes().into(),
            tail: tail.into(),
        });
        inner.by_tail.insert(tail.into(), Arc::downgrade(&stmt));
        stmt
    }

    /// Statements known (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.by_tail.len()).unwrap_or(0)
    }
}

/// The statements a server connection has prepared, with when each was last used.
#[derive(Debug, Default)]
pub struct ServerStatements {
    held: HashMap<u64, (Arc<Stmt>, u64)>,
    clock: u64,
    /// A Bind failed with "cached plan must not change result type" (a table changed under
    /// a statement): the statements are closed before the next one is parsed here, so that
    /// a client preparing afresh gets a fresh plan.
    pub stale: bool,
    /// Statements whose names the server holds with another text (a client's second Parse
    /// of a name, sent as a Parse of its statement, which the server took because an error
    /// or a DISCARD ALL had left the statement unmade): not held, and closed before anything
    /// is parsed here.
    pub foreign: Vec<Arc<Stmt>>,
}

impl ServerStatements {
    /// Whether the connection has `stmt`; counts as a use.
    pub fn touch(&mut self, stmt: &Stmt) -> bool {
        self.clock += 1;
        match self.held.get_mut(&stmt.id) {
            Some((_, used)) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Whether the connection has `stmt` (not counted as a use).
    pub fn has(&self, stmt: &Stmt) -> bool {
        self.held.contains_key(&stmt.id)
    }

    pub fn insert(&mut self, stmt: Arc<Stmt>) {
        self.clock += 1;
        self.held.insert(stmt.id, (stmt, self.clock));
    }

    pub fn remove(&mut self, stmt: &Stmt) {
        self.remove_id(stmt.id);
    }

    pub fn remove_id(&mut self, id: u64) {
        self.held.remove(&id);
    }

    /// The least recently used statement, taken out, while more than `keep` are held.
    pub fn evict_over(&mut self, keep: usize) -> Option<Arc<Stmt>> {
        if self.held.len() <= keep {
            return None;
        }
        let id = self.held.iter().min_by_key(|(_, (_, used))| *used)?.0;
        let id = *id;
        self.held.remove(&id).map(|(stmt, _)| stmt)
    }

    /// The server dropped them all (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.held.clear();
        self.foreign.clear();
        self.stale = false;
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Whether a CommandComplete tag says the session's prepared statements are gone.
pub fn drops_all(command_tag: &[u8]) -> bool {
    let tag = command_tag.strip_suffix(b"\0").unwrap_or(command_tag);
    tag == b"DISCARD ALL" || tag == b"DEALLOCATE ALL"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_statement_and_dead_ones_swept() {
        let reg = Registry::default();
        let a = reg.intern(b"select 1\0\0\0");
        let b = reg.intern(b"select 1\0\0\0");
        let c = reg.intern(b"select 2\0\0\0");
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert_eq!(&*a.name, format!("pgporter_{}", a.id).as_bytes());
        drop((a, b, c));
        let again = reg.intern(b"select 1\0\0\0");
        assert_eq!(again.tail.as_ref(), b"select 1\0\0\0");
        for i in 0..2000 {
            drop(reg.intern(format!("select {i}\0\0\0").as_bytes()));
        }
        assert!(
            reg.len() <= 1024 + 1,
            "dead entries are swept: {}",
            reg.len()
        );
    }

    #[test]
    fn least_recently_used_goes_first() {
        let reg = Registry::default();
        let (a, b, c) = (reg.intern(b"a\0"), reg.intern(b"b\0"), reg.intern(b"c\0"));
        let mut held = ServerStatements::default();
        held.insert(Arc::clone(&a));
        held.insert(Arc::clone(&b));
        held.insert(Arc::clone(&c));
        assert!(held.touch(&a));
        assert_eq!(held.evict_over(3).map(|s| s.id), None);
        assert_eq!(held.evict_over(2).map(|s| s.id), Some(b.id));
        assert_eq!(held.evict_over(1).map(|s| s.id), Some(c.id));
        assert!(held.touch(&a) && !held.touch(&b));
        held.clear();
        assert!(held.is_empty());
        assert!(drops_all(b"DISCARD ALL\0") && drops_all(b"DEALLOCATE ALL"));
        assert!(!drops_all(b"DEALLOCATE\0"));
    }
}

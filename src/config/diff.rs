//! What a reload changes: `ConfigDiff::between(old, new)` (pure). The reload itself
//! (`control::reload`) builds the whole new snapshot first, so an invalid file never gets here.

use super::Config;

/// Differences between two snapshots that a reload acts on or reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// [databases] entries only in the new config.
    pub added: Vec<String>,
    /// [databases] entries only in the old config.
    pub removed: Vec<String>,
    /// Entries present in both whose connection string changed.
    pub changed: Vec<String>,
    /// Settings that need a restart and were changed: kept at their old values.
    pub refused: Vec<&'static str>,
}

impl ConfigDiff {
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let mut d = ConfigDiff::default();
        for (name, entry) in &new.databases {
            match old.databases.get(name) {
                None => d.added.push(name.clone()),
                Some(o) if o != entry => d.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        for name in old.databases.keys() {
            if !new.databases.contains_key(name) {
                d.removed.push(name.clone());
            }
        }
        if old.fallback_database != new.fallback_database {
            d.changed.push("*".into());
        }
        d.added.sort();
        d.removed.sort();
        d.changed.sort();
        let (o, n) = (&old.settings, &new.settings);
        let checks: [(&'static str, bool); 17] = [
            ("listen_addr", o.listen_addr != n.listen_addr),
            ("listen_port", o.listen_port != n.listen_port),
            (
                "readonly_listen_port",
                o.routing.readonly_listen_port != n.routing.readonly_listen_port,
            ),
            ("audit_log", o.audit.audit_log != n.audit.audit_log),
            (
                "audit_queue_size",
                o.audit.audit_queue_size != n.audit.audit_queue_size,
            ),
            ("listen_backlog", o.listen_backlog != n.listen_backlog),
            ("so_reuseport", o.so_reuseport != n.so_reuseport),
            ("peer_id", o.peer_id != n.peer_id),
            ("unix_socket_dir", o.unix_socket_dir != n.unix_socket_dir),
            ("unix_socket_mode", o.unix_socket_mode != n.unix_socket_mode),
            (
                "unix_socket_group",
                o.unix_socket_group != n.unix_socket_group,
            ),
            ("pidfile", o.pidfile != n.pidfile),
            (
                "metrics_listen_addr",
                o.metrics_listen_addr != n.metrics_listen_addr,
            ),
            ("log_format", o.log_format != n.log_format),
            ("verbose", o.verbose != n.verbose),
            ("worker_threads", o.worker_threads != n.worker_threads),
            ("logfile", o.logfile != n.logfile),
        ];
        d.refused = checks.iter().filter(|c| c.1).map(|c| c.0).collect();
        d
    }

    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// Put back the values of settings a reload cannot change, so the live snapshot describes
/// what is really in effect.
pub fn keep_unreloadable(old: &Config, new: &mut Config) {
    let (o, n) = (&old.settings, &mut new.settings);
    n.listen_addr = o.listen_addr.clone();
    n.listen_port = o.listen_port;
    n.routing.readonly_listen_port = o.routing.readonly_listen_port;
    n.audit.audit_log = o.audit.audit_log.clone();
    n.audit.audit_queue_size = o.audit.audit_queue_size;
    n.unix_socket_dir = o.unix_socket_dir.clone();
    n.unix_socket_mode = o.unix_socket_mode;
    n.unix_socket_group = o.unix_socket_group.clone();
    n.listen_backlog = o.listen_backlog;
    n.so_reuseport = o.so_reuseport;
    n.peer_id = o.peer_id;
    n.pidfile = o.pidfile.clone();
    n.metrics_listen_addr = o.metrics_listen_addr.clone();
    n.log_format = o.log_format;
    n.verbose = o.verbose;
    n.worker_threads = o.worker_threads;
    n.logfile = o.logfile.clone();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_raw, parse_ini};
    use std::path::Path;

    fn config(text: &str) -> Config {
        let raw = parse_ini(text, "t.ini").expect("ini");
        from_raw(Path::new("/nonexistent/t.ini"), raw).expect("config")
    }

    #[test]
    fn databases_and_refused_keys() {
        let old = config(
            "[databases]\na = host=h1 pool_size=2\nb = host=h2\n[pgbouncer]\nlisten_port = 1\n",
        );
        let mut new = config(
            "[databases]\na = host=h1 pool_size=5\nc = host=h3\n[pgbouncer]\nlisten_port = 2\n\
             readonly_listen_port = 7\n",
        );
        let d = ConfigDiff::between(&old, &new);
        assert_eq!(d.added, vec!["c"]);
        assert_eq!(d.removed, vec!["b"]);
        assert_eq!(d.changed, vec!["a"]);
        assert_eq!(d.refused, vec!["listen_port", "readonly_listen_port"]);
        keep_unreloadable(&old, &mut new);
        assert_eq!(new.settings.listen_port, 1);
        assert_eq!(new.settings.routing.readonly_listen_port, None);
        assert!(ConfigDiff::between(&old, &old).is_empty());
    }
}

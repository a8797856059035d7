//! The per-database histograms (client wait, query duration), kept here rather than in the
//! exporter's recorder, which keeps every series it ever registered: a database that is gone
//! (removed by a reload, or a `*` database freed) has its series dropped with [`Family::forget`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;

/// Upper bounds (seconds) of the buckets: 100 µs .. 60 s, then +Inf.
const BUCKETS: [f64; 16] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One database's histogram: a count per bucket (not cumulative; the last is +Inf) and the
/// sum in nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn record(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_ns
            .fetch_add((seconds.max(0.0) * 1e9) as u64, Relaxed);
    }
}

/// A histogram metric with one series per database.
#[derive(Debug)]
pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    by_database: DashMap<Box<str>, Arc<Histogram>>,
}

impl Family {
    pub(super) fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            by_database: DashMap::new(),
        }
    }

    /// `database`'s histogram, created on first use.
    pub(super) fn get(&self, database: &str) -> Arc<Histogram> {
        if let Some(h) = self.by_database.get(database) {
            return Arc::clone(&h);
        }
        Arc::clone(&self.by_database.entry(database.into()).or_default())
    }

    /// The databases that have a series.
    pub(super) fn databases(&self) -> Vec<Box<str>> {
        self.by_database.iter().map(|e| e.key().clone()).collect()
    }

    /// Drop `database`'s series (a session still holding its histogram records into nothing).
    pub(super) fn forget(&self, database: &str) {
        self.by_database.remove(database);
    }

    /// Prometheus text: HELP, TYPE, then per database (sorted) the cumulative buckets, the
    /// sum and the count. Nothing when no database has a series.
    pub(super) fn render(&self, out: &mut String) {
        let mut all: Vec<(Box<str>, Arc<Histogram>)> = (self.by_database.iter())
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        if all.is_empty() {
            return;
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (db, h) in all {
            let db = escape(&db);
            let mut total = 0u64;
            for (i, c) in h.counts.iter().enumerate() {
                total += c.load(Relaxed);
                match BUCKETS.get(i) {
                    Some(le) => {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{database=\"{db}\",le=\"{le}\"}} {total}"
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{database=\"{db}\",le=\"+Inf\"}} {total}"
                        );
                    }
                }
            }
            let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{database=\"{db}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{database=\"{db}\"}} {total}");
        }
        out.push('\n');
    }
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_a_forgotten_database_is_not_rendered() {
        let f = Family::new("x_seconds", "help");
        f.get("a").record(0.0);
        f.get("a").record(0.003);
        f.get("a").record(100.0);
        f.get("b\"q").record(0.2);
        let mut page = String::new();
        f.render(&mut page);
        assert!(page.contains("x_seconds_bucket{database=\"a\",le=\"0.0001\"} 1\n"));
        assert!(page.contains("x_seconds_bucket{database=\"a\",le=\"0.005\"} 2\n"));
        assert!(page.contains("x_seconds_bucket{database=\"a\",le=\"60\"} 2\n"));
        assert!(page.contains("x_seconds_bucket{database=\"a\",le=\"+Inf\"} 3\n"));
        assert!(page.contains("x_seconds_sum{database=\"a\"} 100.003\n"));
        assert!(page.contains("x_seconds_count{database=\"a\"} 3\n"));
        assert!(page.contains("x_seconds_count{database=\"b\\\"q\"} 1\n"));
        assert_eq!(page.matches("# TYPE x_seconds histogram").count(), 1);
        f.forget("a");
        let mut page = String::new();
        f.render(&mut page);
        assert!(!page.contains("database=\"a\""), "{page}");
        f.forget("b\"q");
        let mut page = String::new();
        f.render(&mut page);
        assert_eq!(page, "");
    }
}

//! SHOW STATS / STATS_TOTALS / STATS_AVERAGES / TOTALS: the per-database counters of
//! [`crate::stats`] under PgBouncer's column names (1.24) and types (numeric).

use super::resultset::{ResultSet, Type, Type::*, Value};
use crate::snapshot::Snapshot;
use crate::stats::{Averages, Totals};

const STAT_NAMES: [&str; 11] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
];

fn total_values(t: &Totals) -> [u64; 11] {
    [
        t.server_assignment_count,
        t.xact_count,
        t.query_count,
        t.received,
        t.sent,
        t.xact_time_us,
        t.query_time_us,
        t.wait_time_us,
        0,
        0,
        0,
    ]
}

fn average_values(a: &Averages) -> [u64; 11] {
    [
        a.server_assignment_count,
        a.xact_count,
        a.query_count,
        a.recv,
        a.sent,
        a.xact_time,
        a.query_time,
        a.wait_time,
        0,
        0,
        0,
    ]
}

pub(super) fn stats(s: &Snapshot) -> ResultSet {
    let mut cols: Vec<(&'static str, Type)> = vec![("database", Text)];
    for n in STAT_NAMES {
        cols.push((
            match n {
                "received" => "total_received",
                "sent" => "total_sent",
                other => total_name(other),
            },
            Numeric,
        ));
    }
    for n in STAT_NAMES {
        cols.push((
            match n {
                "received" => "avg_recv",
                "sent" => "avg_sent",
                other => avg_name(other),
            },
            Numeric,
        ));
    }
    let mut rs = ResultSet::new(&cols);
    for (db, t, a) in &s.stats {
        let mut row: Vec<Value> = vec![db.as_str().into()];
        row.extend(total_values(t).into_iter().map(Value::from));
        row.extend(average_values(a).into_iter().map(Value::from));
        rs.push(row);
    }
    rs
}

fn total_name(n: &str) -> &'static str {
    match n {
        "server_assignment_count" => "total_server_assignment_count",
        "xact_count" => "total_xact_count",
        "query_count" => "total_query_count",
        "xact_time" => "total_xact_time",
        "query_time" => "total_query_time",
        "wait_time" => "total_wait_time",
        "client_parse_count" => "total_client_parse_count",
        "server_parse_count" => "total_server_parse_count",
        _ => "total_bind_count",
    }
}

fn avg_name(n: &str) -> &'static str {
    match n {
        "server_assignment_count" => "avg_server_assignment_count",
        "xact_count" => "avg_xact_count",
        "query_count" => "avg_query_count",
        "xact_time" => "avg_xact_time",
        "query_time" => "avg_query_time",
        "wait_time" => "avg_wait_time",
        "client_parse_count" => "avg_client_parse_count",
        "server_parse_count" => "avg_server_parse_count",
        _ => "avg_bind_count",
    }
}

/// STATS_TOTALS / STATS_AVERAGES column names (bytes_received / bytes_sent as in PgBouncer).
fn short_columns() -> Vec<(&'static str, Type)> {
    let mut cols = vec![("database", Text)];
    for n in STAT_NAMES {
        cols.push((
            match n {
                "received" => "bytes_received",
                "sent" => "bytes_sent",
                other => other,
            },
            Numeric,
        ));
    }
    cols
}

pub(super) fn stats_totals(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&short_columns());
    for (db, t, _) in &s.stats {
        let mut row: Vec<Value> = vec![db.as_str().into()];
        row.extend(total_values(t).into_iter().map(Value::from));
        rs.push(row);
    }
    rs
}

pub(super) fn stats_averages(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&short_columns());
    for (db, _, a) in &s.stats {
        let mut row: Vec<Value> = vec![db.as_str().into()];
        row.extend(average_values(a).into_iter().map(Value::from));
        rs.push(row);
    }
    rs
}

pub(super) fn totals(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[("name", Text), ("value", Numeric)]);
    let sum = s
        .stats
        .iter()
        .fold(Totals::default(), |acc, (_, t, _)| acc + *t);
    // PgBouncer's names here: bytes are total_client_bytes / total_server_bytes, and the
    // averages (over all databases) follow the totals.
    for (n, v) in STAT_NAMES.iter().zip(total_values(&sum)) {
        let name = match *n {
            "received" => "total_client_bytes",
            "sent" => "total_server_bytes",
            other => total_name(other),
        };
        rs.push(vec![name.into(), v.into()]);
    }
    let mut avg = [0u64; 11];
    for (_, _, a) in &s.stats {
        for (sum, v) in avg.iter_mut().zip(average_values(a)) {
            *sum = sum.saturating_add(v);
        }
    }
    for (n, v) in STAT_NAMES.iter().zip(avg) {
        let name = match *n {
            "received" => "avg_client_bytes",
            "sent" => "avg_server_bytes",
            other => avg_name(other),
        };
        rs.push(vec![name.into(), v.into()]);
    }
    rs
}

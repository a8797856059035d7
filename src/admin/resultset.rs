//! `ResultSet` -> RowDescription + DataRow* + CommandComplete (text format, PgBouncer's types).

use bytes::{BufMut, BytesMut};
use std::time::SystemTime;

/// Column types as PgBouncer declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int4,
    Int8,
    Numeric,
    Bytea,
    /// A point in time, sent as text `YYYY-MM-DD HH:MM:SS UTC` (PgBouncer's type and form).
    Timestamp,
}

impl Type {
    fn oid(self) -> i32 {
        match self {
            Type::Text | Type::Timestamp => 25,
            Type::Int4 => 23,
            Type::Int8 => 20,
            Type::Numeric => 1700,
            Type::Bytea => 17,
        }
    }
    fn size(self) -> i16 {
        match self {
            Type::Int4 => 4,
            Type::Int8 => 8,
            Type::Text | Type::Numeric | Type::Bytea | Type::Timestamp => -1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
    Time(SystemTime),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Int(n.into())
    }
}
impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Int(n.into())
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(n.into())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// The rows of one SHOW command.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<(&'static str, Type)>,
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    pub fn new(columns: &[(&'static str, Type)]) -> ResultSet {
        ResultSet {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }
    /// Add `row` before the first row whose first column (text) sorts after its own: rows
    /// listed by name keep their order.
    pub fn insert_sorted(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        let key = |r: &[Value]| match r.first() {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let at = (self.rows.iter())
            .position(|r| key(r) > key(&row))
            .unwrap_or(self.rows.len());
        self.rows.insert(at, row);
    }
    /// Index of a column by name (tests).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.0 == name)
    }
}

fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = i32::try_from(buf.len() - start).unwrap_or(i32::MAX);
    if let Some(slot) = buf.get_mut(start..start + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Encode `rs` followed by CommandComplete `tag`.
pub(super) fn encode(rs: &ResultSet, tag: &str, buf: &mut BytesMut) {
    message(buf, b'T', |b| {
        b.put_i16(i16::try_from(rs.columns.len()).unwrap_or(i16::MAX));
        for (name, ty) in &rs.columns {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(ty.oid());
            b.put_i16(ty.size());
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
    for row in &rs.rows {
        message(buf, b'D', |b| {
            b.put_i16(i16::try_from(row.len()).unwrap_or(i16::MAX));
            for v in row {
                let text = match v {
                    Value::Null => {
                        b.put_i32(-1);
                        continue;
                    }
                    Value::Text(s) => s.clone(),
                    Value::Int(n) => n.to_string(),
                    Value::Time(t) => format_time(*t),
                };
                b.put_i32(i32::try_from(text.len()).unwrap_or(i32::MAX));
                b.put_slice(text.as_bytes());
            }
        });
    }
    command_complete(buf, tag);
}

pub(super) fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| {
        b.put_slice(tag.as_bytes());
        b.put_u8(0);
    });
}

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints times (pgporter always in UTC).
pub(super) fn format_time(t: SystemTime) -> String {
    let u = crate::utc::Utc::from(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_time(t), "2023-11-14 22:13:20 UTC");
        assert_eq!(
            format_time(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
    }

    #[test]
    fn inserts_by_name() {
        let mut rs = ResultSet::new(&[("name", Type::Text)]);
        for n in ["app", "zoo"] {
            rs.push(vec![n.into()]);
        }
        rs.insert_sorted(vec!["pgbouncer".into()]);
        rs.insert_sorted(vec!["zzz".into()]);
        let names: Vec<_> = rs.rows.iter().map(|r| r[0].clone()).collect();
        let want: Vec<Value> = ["app", "pgbouncer", "zoo", "zzz"].map(Value::from).to_vec();
        assert_eq!(names, want);
    }

    #[test]
    fn encodes_rows_and_nulls() {
        let mut rs = ResultSet::new(&[("a", Type::Text), ("b", Type::Int4)]);
        rs.push(vec!["x".into(), Value::Null]);
        let mut buf = BytesMut::new();
        encode(&rs, "SHOW", &mut buf);
        assert_eq!(buf[0], b'T');
        let d = buf.iter().position(|&c| c == b'D').expect("DataRow");
        assert!(buf[d..].windows(4).any(|w| w == [0xff, 0xff, 0xff, 0xff]));
        assert!(buf.ends_with(b"SHOW\0"));
    }
}

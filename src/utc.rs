//! Wall-clock time broken into UTC calendar fields, for the text forms the audit log (RFC 3339)
//! and the admin console (timestamptz output) print. No time-zone database needed: always UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// One instant as UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    pub millis: u32,
}

impl Utc {
    /// `t` in UTC; times before 1970 count as the epoch.
    pub fn from(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis: d.subsec_millis(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_instants() {
        let at = |s| Utc::from(UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(
            at(0),
            Utc {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                millis: 0
            }
        );
        // 2000-02-29 (leap day) 12:34:56.789
        assert_eq!(
            at(951_827_696_789),
            Utc {
                year: 2000,
                month: 2,
                day: 29,
                hour: 12,
                minute: 34,
                second: 56,
                millis: 789
            }
        );
        // 2026-11-26 04:33:38
        assert_eq!(
            at(1_795_667_618_000),
            Utc {
                year: 2026,
                month: 11,
                day: 26,
                hour: 4,
                minute: 33,
                second: 38,
                millis: 0
            }
        );
    }
}

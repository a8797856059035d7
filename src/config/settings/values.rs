//! Value syntax of [pgbouncer] keys: integers, booleans, durations, lists, enums.

use std::time::Duration;

use super::{AuthType, LogFormat, PoolMode, MAX_PACKET_SIZE_LIMIT};

pub(in crate::config) fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// Comma-separated, items trimmed, empty items dropped.
pub(in crate::config) fn parse_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A non-negative decimal integer no larger than `max`: the syntax of [databases] and [users]
/// values, which PgBouncer reads with `atoi` (decimal only). [pgbouncer] keys use
/// [`parse_strtol`].
pub(in crate::config) fn parse_uint(v: &str, max: u64) -> Result<u64, String> {
    let t = v.trim();
    if t.starts_with('-') {
        return Err(format!("{v:?} must not be negative"));
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not an integer"));
    }
    match t.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{v:?} is out of range (0..={max})")),
    }
}

/// A non-negative [pgbouncer] integer no larger than `max`, read the way PgBouncer reads its
/// integer keys (libusual's `cf_set_int`/`cf_set_uint`: C `strtol` with base 0, the whole
/// value must be consumed): an optional `+`/`-`, then `0x`/`0X` and hex digits, or `0` and
/// octal digits, or decimal digits. So `0x10` is 16 and `010` is 8: surprising to a reader
/// used to decimal, but a config file must mean the same to pgporter as to PgBouncer. No
/// [pgbouncer] integer is signed here, so a negative value is an error (`-0` is 0).
pub(in crate::config) fn parse_strtol(v: &str, max: u64) -> Result<u64, String> {
    let t = v.trim();
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (radix, digits) = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => (16, hex),
        None if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        None => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        if radix == 8 && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{v:?} is not an integer: a leading 0 means octal (digits 0-7), as in PgBouncer"
            ));
        }
        return Err(format!(
            "{v:?} is not an integer (decimal, 0x hexadecimal or 0-prefixed octal)"
        ));
    }
    // Every digit is valid for the radix, so the only possible error is overflow.
    match u64::from_str_radix(digits, radix) {
        Ok(0) => Ok(0),
        _ if negative => Err(format!("{v:?} must not be negative")),
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{v:?} is out of range (0..={max})")),
    }
}

/// [`parse_strtol`] into a `u32` ([pgbouncer] keys).
pub(in crate::config) fn parse_strtol_u32(v: &str) -> Result<u32, String> {
    parse_strtol(v, u32::MAX.into()).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// [`parse_strtol`] into a `u16` ([pgbouncer] ports).
pub(in crate::config) fn parse_strtol_u16(v: &str) -> Result<u16, String> {
    parse_strtol(v, u16::MAX.into()).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

/// `scram_iterations`: 1 to 2147483647, PostgreSQL's range for its own `scram_iterations` (and
/// the largest count libpq reads). PgBouncer takes any `int`, and with a count below 1 every
/// SCRAM login to it fails (clients refuse `i=0`): refused here when the file is read.
pub(in crate::config) fn parse_iterations(v: &str) -> Result<u32, String> {
    const MAX: u64 = i32::MAX.unsigned_abs() as u64;
    match parse_strtol(v, u64::MAX)? {
        n @ 1..=MAX => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        _ => Err(format!(
            "{v:?} is out of range: an iteration count is 1 to {MAX} (the default is 4096)"
        )),
    }
}

pub(in crate::config) fn parse_u32(v: &str) -> Result<u32, String> {
    parse_uint(v, u32::MAX.into()).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub(in crate::config) fn parse_u16(v: &str) -> Result<u16, String> {
    parse_uint(v, u16::MAX.into()).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

/// Booleans: yes/no, on/off, true/false (any case), or an integer as PgBouncer reads its
/// booleans (an integer key, so `0x0` and `-0` are false and any other integer, `2` or `-1`,
/// is true).
pub(in crate::config) fn parse_bool(v: &str) -> Result<bool, String> {
    let t = v.trim();
    match t.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" => return Ok(true),
        "no" | "off" | "false" => return Ok(false),
        _ => {}
    }
    let unsigned = t
        .strip_prefix('-')
        .filter(|m| !m.starts_with('+'))
        .unwrap_or(t);
    match parse_strtol(unsigned, u64::MAX) {
        Ok(n) => Ok(n != 0),
        Err(_) => Err(format!(
            "{v:?} is not a boolean (use 0/1, yes/no, on/off or true/false)"
        )),
    }
}

/// Seconds as in PgBouncer (`15`, `0.5`), or a number with a unit: `ms`, `s`, `min`, `h`.
pub(in crate::config) fn parse_duration(v: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(v)?;
    seconds(v, n, if unit.is_empty() { "s" } else { unit })
}

/// A duration whose bare number means milliseconds (PgBouncer's `tcp_user_timeout`); a
/// unit may be given as for [`parse_duration`].
pub(in crate::config) fn parse_millis(v: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(v)?;
    seconds(v, n, if unit.is_empty() { "ms" } else { unit })
}

/// A duration's number and its unit (empty when none was given). A bare number is read as
/// PgBouncer reads its time values, with C `strtod`: an optional `+`, then decimal with an
/// optional exponent (`1e3`, `2.5E1`) or `0x` hexadecimal (`0x10` = 16); PgBouncer 1.18
/// loads all of these (checked live), and pgporter refused the whole file.
fn number_and_unit(v: &str) -> Result<(f64, &str), String> {
    let t = v.trim();
    if t.starts_with('-') {
        return Err(format!("duration {v:?} must not be negative"));
    }
    if let Some(n) = c_number(t) {
        return Ok((n, ""));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| not_a_duration(v))?;
    Ok((n, unit.trim()))
}

/// The whole of `t` as C `strtod` reads a non-negative finite number, if it is one.
fn c_number(t: &str) -> Option<f64> {
    let body = t.strip_prefix('+').unwrap_or(t);
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        // An integer too large for u64 is far past any limit anyway: left to the error path.
        return u64::from_str_radix(hex, 16).ok().map(|n| n as f64);
    }
    // Not `inf` or `nan`, which Rust's parser (like strtod) would take.
    if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    body.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn not_a_duration(v: &str) -> String {
    format!("{v:?} is not a duration (seconds, or a number with ms, s, min or h)")
}

/// `n` of `unit` as a duration.
fn seconds(v: &str, n: f64, unit: &str) -> Result<Duration, String> {
    let secs = match unit {
        "s" => n,
        "ms" => n / 1000.0,
        "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(not_a_duration(v)),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {v:?} is out of range"))
}

/// `host:port` (empty = off); the port is required, the host may be `*` (all addresses).
pub(in crate::config) fn parse_listen_addr(v: &str) -> Result<Option<String>, String> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let Some((host, port)) = t.rsplit_once(':') else {
        return Err(format!("{v:?} is not host:port"));
    };
    if host.is_empty() {
        return Err(format!("{v:?} has no host (use *:port for all addresses)"));
    }
    parse_u16(port).map_err(|m| format!("port: {m}"))?;
    Ok(Some(t.to_string()))
}

pub(in crate::config) fn parse_log_format(v: &str) -> Result<LogFormat, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        "pgbouncer" => Ok(LogFormat::Pgbouncer),
        _ => Err(format!(
            "unknown log_format {v:?} (use text, json or pgbouncer)"
        )),
    }
}

pub(in crate::config) fn parse_nonzero_duration(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err(format!("{v:?} must be greater than zero")),
        d => Ok(d),
    }
}

/// An octal file mode such as `0777`.
pub(in crate::config) fn parse_mode(v: &str) -> Result<u32, String> {
    let t = v.trim();
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 && !t.starts_with('+') => Ok(m),
        _ => Err(format!("{v:?} is not an octal file mode (e.g. 0777)")),
    }
}

pub(in crate::config) fn parse_packet_size(v: &str) -> Result<u32, String> {
    let n = parse_strtol_u32(v)?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    // PgBouncer's default is 2147483647; PostgreSQL itself never sends or accepts more than
    // 1 GiB - 1, so larger values mean "no limit beyond PostgreSQL's".
    Ok(n.min(MAX_PACKET_SIZE_LIMIT))
}

pub(in crate::config) fn parse_auth_type(v: &str) -> Result<AuthType, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "scram-sha-256" => Ok(AuthType::ScramSha256),
        "md5" => Ok(AuthType::Md5),
        "plain" => Ok(AuthType::Plain),
        "trust" => Ok(AuthType::Trust),
        "hba" => Ok(AuthType::Hba),
        "cert" => Ok(AuthType::Cert),
        other @ ("pam" | "any" | "ldap") => Err(format!(
            "auth_type={other} is not supported yet (use scram-sha-256, md5, plain, trust, hba or cert)"
        )),
        _ => Err(format!(
            "unknown auth_type {v:?} (use scram-sha-256, md5, plain, trust, hba or cert)"
        )),
    }
}

/// Shared with [databases]/[users] entries.
pub(in crate::config) fn parse_pool_mode(v: &str) -> Result<PoolMode, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "session" => Ok(PoolMode::Session),
        "transaction" => Ok(PoolMode::Transaction),
        "statement" => Ok(PoolMode::Statement),
        _ => Err(format!(
            "unknown pool_mode {v:?} (session, transaction or statement)"
        )),
    }
}

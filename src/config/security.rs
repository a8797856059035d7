//! Value types and parsers for the TLS and authentication keys (`client_tls_*`, `server_tls_*`,
//! `auth_*`). Pure: certificate files are read by `tls`, not here.

/// PgBouncer's `client_tls_sslmode` / `server_tls_sslmode` values, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// True for `require`, `verify-ca` and `verify-full`: plaintext is refused.
    pub fn requires_tls(self) -> bool {
        self >= SslMode::Require
    }

    /// True for `verify-ca` and `verify-full`: the peer certificate must chain to the CA.
    pub fn verifies(self) -> bool {
        self >= SslMode::VerifyCa
    }
}

pub(super) fn parse_sslmode(v: &str) -> Result<SslMode, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "disable" => Ok(SslMode::Disable),
        "allow" => Ok(SslMode::Allow),
        "prefer" => Ok(SslMode::Prefer),
        "require" => Ok(SslMode::Require),
        "verify-ca" => Ok(SslMode::VerifyCa),
        "verify-full" => Ok(SslMode::VerifyFull),
        _ => Err(format!(
            "unknown sslmode {v:?} (use disable, allow, prefer, require, verify-ca or verify-full)"
        )),
    }
}

/// TLS versions allowed. rustls implements only TLS 1.2 and 1.3, so PgBouncer's `tlsv1.0`,
/// `tlsv1.1` and `legacy` contribute nothing; a list that leaves no version is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsProtocols {
    pub tls12: bool,
    pub tls13: bool,
}

impl Default for TlsProtocols {
    /// PgBouncer's `secure`: TLS 1.2 and 1.3.
    fn default() -> Self {
        TlsProtocols {
            tls12: true,
            tls13: true,
        }
    }
}

pub(super) fn parse_protocols(v: &str) -> Result<TlsProtocols, String> {
    let mut p = TlsProtocols {
        tls12: false,
        tls13: false,
    };
    for word in v.split([',', ':', ' ']).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "all" | "secure" | "legacy" | "normal" => {
                p.tls12 = true;
                p.tls13 = true;
            }
            "tlsv1.2" => p.tls12 = true,
            "tlsv1.3" => p.tls13 = true,
            "tlsv1.0" | "tlsv1.1" => {}
            _ => {
                return Err(format!(
                    "unknown TLS protocol {word:?} (use all, secure, legacy, tlsv1.2 or tlsv1.3)"
                ))
            }
        }
    }
    if !p.tls12 && !p.tls13 {
        return Err(format!(
            "{v:?} leaves no TLS version pgporter supports (TLS 1.2 and 1.3 only)"
        ));
    }
    Ok(p)
}

/// Cipher suites: every suite rustls has, or those named (rustls's names), read from PgBouncer's
/// keywords or an OpenSSL cipher string (see `ciphers`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsCiphers {
    #[default]
    Default,
    Named(Vec<String>),
}

/// PgBouncer's default `auth_query`.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_order() {
        assert_eq!(parse_sslmode("VERIFY-FULL"), Ok(SslMode::VerifyFull));
        assert!(parse_sslmode("require").unwrap().requires_tls());
        assert!(!parse_sslmode("prefer").unwrap().requires_tls());
        assert!(!SslMode::Require.verifies());
        assert!(SslMode::VerifyCa.verifies());
        assert!(parse_sslmode("on").is_err());
    }

    #[test]
    fn protocols_and_ciphers() {
        assert_eq!(parse_protocols("secure"), Ok(TlsProtocols::default()));
        assert_eq!(
            parse_protocols("tlsv1.3"),
            Ok(TlsProtocols {
                tls12: false,
                tls13: true
            })
        );
        assert!(parse_protocols("tlsv1.0,tlsv1.1").is_err());
        assert!(parse_protocols("sslv3").is_err());
    }
}

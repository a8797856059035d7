//! TLS with rustls (ring provider): the acceptor for clients (`client_tls_*`), the connector for
//! PostgreSQL (`server_tls_*`), and tls-server-end-point channel-binding data for SCRAM-PLUS.
//! Built once from the config at startup; certificate problems are reported then.

mod acceptor;
mod connector;
pub(crate) mod der;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::SupportedProtocolVersion;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::config::{Config, SslMode, TlsCiphers, TlsProtocols};

pub use acceptor::ClientTls;
pub use connector::ServerTls;

/// What a TLS connection agreed on, for SHOW CLIENTS / SHOW SERVERS `tls` (PgBouncer's
/// `TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519` form, with rustls's suite names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    // The wire codes (6 bytes: every session keeps one).
    version: u16,
    suite: u16,
    /// 0: none reported.
    group: u16,
}

impl TlsInfo {
    /// From a connection whose handshake is done.
    pub fn of<D>(conn: &rustls::ConnectionCommon<D>) -> Option<TlsInfo> {
        Some(TlsInfo {
            version: conn.protocol_version()?.into(),
            suite: conn.negotiated_cipher_suite()?.suite().into(),
            group: conn
                .negotiated_key_exchange_group()
                .map_or(0, |g| g.name().into()),
        })
    }
}

impl std::fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = rustls::ProtocolVersion::from(self.version);
        match version.as_str() {
            Some(v) => write!(f, "{}", v.replace('_', "."))?,
            None => write!(f, "{version:?}")?,
        }
        let suite = rustls::CipherSuite::from(self.suite);
        match suite.as_str() {
            Some(s) => write!(f, "/{}", s.replacen("TLS13_", "TLS_", 1))?,
            None => write!(f, "/{suite:?}")?,
        }
        if self.group != 0 {
            let group = rustls::NamedGroup::from(self.group);
            match group.as_str() {
                Some(name) => write!(f, "/ECDH={name}")?,
                None => write!(f, "/ECDH={group:?}")?,
            }
        }
        Ok(())
    }
}

/// ALPN protocol name PostgreSQL 17 uses (required for direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The TLS contexts of one configuration.
#[derive(Debug, Default)]
pub struct TlsState {
    /// `None` when client_tls_sslmode = disable.
    pub client: Option<ClientTls>,
    /// `None` when server_tls_sslmode = disable.
    pub server: Option<Arc<ServerTls>>,
}

impl TlsState {
    /// Load certificates and keys named by the config and build both contexts.
    pub fn build(config: &Config) -> Result<TlsState, String> {
        let s = &config.settings;
        let client = match s.client_tls_sslmode {
            SslMode::Disable => None,
            mode => Some(ClientTls::build(config, mode)?),
        };
        let server = match s.server_tls_sslmode {
            SslMode::Disable => None,
            mode => Some(Arc::new(ServerTls::build(config, mode)?)),
        };
        Ok(TlsState { client, server })
    }
}

pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

pub(crate) fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("invalid CA certificate in {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The ring provider restricted to the configured cipher suites.
pub(crate) fn provider(ciphers: &TlsCiphers) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let TlsCiphers::Named(names) = ciphers {
        provider.cipher_suites = rustls::crypto::ring::ALL_CIPHER_SUITES
            .iter()
            .filter(|s| {
                s.suite()
                    .as_str()
                    .is_some_and(|n| names.iter().any(|w| w == n))
            })
            .copied()
            .collect();
    }
    Arc::new(provider)
}

pub(crate) fn versions(p: TlsProtocols) -> Vec<&'static SupportedProtocolVersion> {
    let mut v = Vec::new();
    if p.tls13 {
        v.push(&rustls::version::TLS13);
    }
    if p.tls12 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// tls-server-end-point channel-binding data (RFC 5929): the hash of the server certificate.
/// `None` when the certificate's algorithm leaves the hash undefined.
pub fn end_point_data(cert: &[u8]) -> Option<Vec<u8>> {
    Some(match der::end_point_hash(cert)? {
        der::EndPointHash::Sha256 => Sha256::digest(cert).to_vec(),
        der::EndPointHash::Sha384 => Sha384::digest(cert).to_vec(),
        der::EndPointHash::Sha512 => Sha512::digest(cert).to_vec(),
    })
}

/// The certificate's subject commonName.
pub fn common_name(cert: &[u8]) -> Option<String> {
    der::subject_common_name(cert)
}

#[cfg(test)]
mod tls_info_tests {
    use super::TlsInfo;

    #[test]
    fn shown_as_pgbouncer_does() {
        let tls13 = TlsInfo {
            version: 0x0304,
            suite: 0x1302,
            group: 0x001d,
        };
        assert_eq!(
            tls13.to_string(),
            "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519"
        );
        let no_group = TlsInfo {
            version: 0x0303,
            suite: 0xc030,
            group: 0,
        };
        assert_eq!(
            no_group.to_string(),
            "TLSv1.2/TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        );
    }
}

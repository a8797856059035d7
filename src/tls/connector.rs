//! rustls ClientConfig for connections to PostgreSQL (server_tls_*).
//!
//! verify-full checks the chain and the host name; verify-ca only the chain; allow, prefer and
//! require encrypt without checking the certificate (as libpq does for those modes), while the
//! handshake signature is still verified.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{provider, versions, SideFiles, ALPN_POSTGRESQL};
use crate::config::{Config, SslMode};

/// What server connections need for TLS.
pub struct ServerTls {
    pub mode: SslMode,
    connector: TlsConnector,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for ServerTls {}

impl ServerTls {
    /// From the server_tls_* settings of `config` and the files [`SideFiles::read`] read.
    pub(super) fn build(
        config: &Config,
        mode: SslMode,
        files: &SideFiles,
    ) -> Result<ServerTls, String> {
        let s = &config.settings;
        let provider = provider(
            &(s.server_tls_ciphers).with_tls13(s.server_tls13_ciphers.as_deref()),
            None,
        );
        let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies() {
            let ca = files
                .ca
                .as_ref()
                .ok_or("verify-ca and verify-full need server_tls_ca_file")?;
            let roots = Arc::new(ca.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("server_tls_ca_file: {e}"))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        } else {
            Arc::new(AnyCertificate(Arc::clone(&provider)))
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions(s.server_tls_protocols))
            .map_err(|e| format!("server_tls_protocols / server_tls_ciphers: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client_config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(cert.certs()?, key.key()?)
                .map_err(|e| format!("server_tls_cert_file / server_tls_key_file: {e}"))?,
            _ => builder.with_no_client_auth(),
        };
        client_config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ServerTls {
            mode,
            connector: TlsConnector::from(Arc::new(client_config)),
        })
    }

    /// TLS handshake over `tcp` (after PostgreSQL answered 'S'); `host` is checked against the
    /// certificate under verify-full.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid server name {host:?} for TLS"),
            )
        })?;
        self.connector.connect(name, tcp).await
    }
}

/// verify-ca: the chain must verify; the name need not match.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// allow / prefer / require: encryption without certificate checks (libpq's behaviour).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

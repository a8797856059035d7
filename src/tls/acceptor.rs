//! rustls ServerConfig for client connections (client_tls_*).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use super::{end_point_data, provider, versions, SideFiles, ALPN_POSTGRESQL};
use crate::config::{Config, SslMode};

/// What the client listener needs for TLS.
#[derive(Clone)]
pub struct ClientTls {
    pub mode: SslMode,
    pub acceptor: TlsAcceptor,
    /// tls-server-end-point data of our certificate; `None` disables SCRAM-SHA-256-PLUS.
    pub end_point: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("mode", &self.mode)
            .field("channel_binding", &self.end_point.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From the client_tls_* settings of `config` and the files [`SideFiles::read`] read.
    pub(super) fn build(
        config: &Config,
        mode: SslMode,
        files: &SideFiles,
    ) -> Result<ClientTls, String> {
        let s = &config.settings;
        let (Some(cert_file), Some(key_file)) = (&files.cert, &files.key) else {
            return Err("client TLS needs client_tls_cert_file and client_tls_key_file".into());
        };
        let certs = cert_file.certs()?;
        let key = key_file.key()?;
        let end_point = certs.first().and_then(|c| end_point_data(c)).map(Arc::from);
        let provider = provider(
            &(s.client_tls_ciphers).with_tls13(s.client_tls13_ciphers.as_deref()),
            s.client_tls_ecdhcurve.as_deref(),
        );
        let verifier = match &files.ca {
            Some(ca) => {
                let roots = Arc::new(ca.roots()?);
                let builder =
                    WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
                // Below verify-ca a certificate is optional, but checked when given (cert auth).
                let builder = if mode.verifies() {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                builder
                    .build()
                    .map_err(|e| format!("client_tls_ca_file: {e}"))?
            }
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions(s.client_tls_protocols))
            .map_err(|e| format!("client_tls_protocols / client_tls_ciphers: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| format!("client_tls_cert_file / client_tls_key_file: {e}"))?;
        server_config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(ClientTls {
            mode,
            acceptor: TlsAcceptor::from(Arc::new(server_config)),
            end_point,
        })
    }
}

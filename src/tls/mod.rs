//! TLS with rustls (ring provider): the acceptor for clients (`client_tls_*`), the connector for
//! PostgreSQL (`server_tls_*`), and tls-server-end-point channel-binding data for SCRAM-PLUS.
//! Built from the config at startup and again at every reload (RELOAD, SIGHUP, admin SET): a
//! side whose settings or files changed (a certificate renewed in place) is rebuilt, the other
//! kept, so unchanged server TLS leaves the pools alone. A file that fails to load refuses the
//! reload and keeps the running contexts.

mod acceptor;
mod connector;
pub(crate) mod der;
mod files;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::config::{Config, SslMode, TlsCiphers, TlsProtocols};

pub use acceptor::ClientTls;
pub use connector::ServerTls;
use files::SideFiles;

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
    pub client: Option<Arc<ClientTls>>,
    /// `None` when server_tls_sslmode = disable.
    pub server: Option<Arc<ServerTls>>,
    /// Digests of what each side was built from (settings and file contents).
    client_from: [u8; 32],
    server_from: [u8; 32],
}

impl TlsState {
    /// Load certificates and keys named by the config and build both contexts.
    pub fn build(config: &Config) -> Result<TlsState, String> {
        TlsState::default().rebuild(config).map(|(state, _)| state)
    }

    /// The contexts for `config`: a side whose settings and files are what it was built from
    /// is kept (the same `Arc`), the other built anew. Also says which sides were rebuilt.
    pub fn rebuild(&self, config: &Config) -> Result<(TlsState, Rebuilt), String> {
        let s = &config.settings;
        // Each file is read once here; the digest and the build below share the bytes.
        let client_files = SideFiles::read(
            config,
            [
                &s.client_tls_cert_file,
                &s.client_tls_key_file,
                &s.client_tls_ca_file,
            ],
        );
        let server_files = SideFiles::read(
            config,
            [
                &s.server_tls_cert_file,
                &s.server_tls_key_file,
                &s.server_tls_ca_file,
            ],
        );
        let client_from = digest(
            &(
                s.client_tls_sslmode,
                s.client_tls_protocols,
                &s.client_tls_ciphers,
            ),
            &client_files,
        );
        let server_from = digest(
            &(
                s.server_tls_sslmode,
                s.server_tls_protocols,
                &s.server_tls_ciphers,
            ),
            &server_files,
        );
        let rebuilt = Rebuilt {
            client: client_from != self.client_from,
            server: server_from != self.server_from,
        };
        let client = match s.client_tls_sslmode {
            _ if !rebuilt.client => self.client.clone(),
            SslMode::Disable => None,
            mode => Some(Arc::new(ClientTls::build(config, mode, &client_files)?)),
        };
        let server = match s.server_tls_sslmode {
            _ if !rebuilt.server => self.server.clone(),
            SslMode::Disable => None,
            mode => Some(Arc::new(ServerTls::build(config, mode, &server_files)?)),
        };
        let state = TlsState {
            client,
            server,
            client_from,
            server_from,
        };
        Ok((state, rebuilt))
    }
}

/// Which sides [`TlsState::rebuild`] built anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub client: bool,
    pub server: bool,
}

/// A digest of one side's settings and files.
fn digest(settings: &impl std::fmt::Debug, files: &SideFiles) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{settings:?}"));
    files.digest_into(&mut h);
    h.finalize().into()
}

/// The ring provider restricted to the configured cipher suites and (None: all) key exchange
/// groups.
pub(crate) fn provider(ciphers: &TlsCiphers, groups: Option<&[String]>) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(groups) = groups {
        provider.kx_groups.retain(|g| {
            g.name()
                .as_str()
                .is_some_and(|n| groups.iter().any(|w| w == n))
        });
    }
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

#[cfg(test)]
mod rebuild_tests {
    use std::sync::Arc;

    use super::TlsState;

    fn ca_pem(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    /// A config in `dir` verifying servers against `dir/ca.pem` (loaded without reading it).
    fn verify_ca_config(dir: &std::path::Path) -> crate::config::Config {
        let ini = dir.join("pgporter.ini");
        std::fs::write(
            &ini,
            "[databases]\n[pgbouncer]\nserver_tls_sslmode = verify-ca\nserver_tls_ca_file = ca.pem\n",
        )
        .unwrap();
        crate::config::load(&ini).unwrap()
    }

    /// A reload that changes nothing keeps the contexts (so the pools stay); a file renewed in
    /// place or a changed setting rebuilds that side only.
    #[test]
    fn only_what_changed_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem("one")).unwrap();
        let config = verify_ca_config(dir.path());
        let first = TlsState::build(&config).unwrap();
        assert!(first.client.is_none());
        let server = |s: &TlsState| Arc::clone(s.server.as_ref().unwrap());

        let (same, rebuilt) = first.rebuild(&config).unwrap();
        assert!(!rebuilt.client && !rebuilt.server);
        assert!(Arc::ptr_eq(&server(&first), &server(&same)));

        std::fs::write(dir.path().join("ca.pem"), ca_pem("two")).unwrap();
        let (renewed, rebuilt) = same.rebuild(&config).unwrap();
        assert!(rebuilt.server && !rebuilt.client);
        assert!(!Arc::ptr_eq(&server(&same), &server(&renewed)));

        let tls12 = config
            .with_setting("server_tls_protocols", "tlsv1.2")
            .unwrap()
            .unwrap();
        let (changed, rebuilt) = renewed.rebuild(&tls12).unwrap();
        assert!(rebuilt.server);
        assert!(!Arc::ptr_eq(&server(&renewed), &server(&changed)));

        std::fs::write(dir.path().join("ca.pem"), "garbage").unwrap();
        assert!(changed.rebuild(&tls12).is_err());
    }

    /// A reload reads each TLS file once: the digest that decides what to rebuild and the
    /// build share the bytes. The CA file here is a FIFO with one writer, so it can be read
    /// once; a second open would wait for a writer forever.
    #[test]
    fn each_file_is_read_once() {
        use std::io::Write as _;

        let dir = tempfile::tempdir().unwrap();
        let config = verify_ca_config(dir.path());
        let fifo = dir.path().join("ca.pem");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let pem = ca_pem("fifo");
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            // Opening blocks until the reader opens; closing gives the reader its EOF.
            move || {
                let mut f = std::fs::OpenOptions::new().write(true).open(fifo);
                f.as_mut().unwrap().write_all(pem.as_bytes()).unwrap();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(TlsState::build(&config).map(|s| s.server.is_some()));
        });
        let built = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the CA file was opened again after it had been read");
        assert_eq!(built, Ok(true));
        writer.join().unwrap();
    }
}

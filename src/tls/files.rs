//! The certificate, key and CA files of one TLS side, read once per build or reload.
//!
//! The digest that decides whether a side is rebuilt and the build itself use the same bytes.
//! Reading the files again for the build read every changed file twice per reload, and a file
//! renewed between the two reads left the digest describing other bytes than the running
//! context was built from.

use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// One configured file: where it is (for messages) and what reading it gave.
#[derive(Debug)]
pub(crate) struct PemFile {
    path: PathBuf,
    bytes: std::io::Result<Vec<u8>>,
}

/// A side's `*_tls_cert_file`, `*_tls_key_file` and `*_tls_ca_file` (each if set).
#[derive(Debug)]
pub(crate) struct SideFiles {
    pub(crate) cert: Option<PemFile>,
    pub(crate) key: Option<PemFile>,
    pub(crate) ca: Option<PemFile>,
}

impl SideFiles {
    /// Read the files named (relative to the config file); a read error is kept for the
    /// build to report, so a side that does not need the file is not refused for it.
    pub(crate) fn read(config: &Config, [cert, key, ca]: [&Option<String>; 3]) -> SideFiles {
        let read = |name: &Option<String>| {
            name.as_deref().map(|name| {
                let path = config.resolve(name);
                let bytes = std::fs::read(&path);
                PemFile { path, bytes }
            })
        };
        SideFiles {
            cert: read(cert),
            key: read(key),
            ca: read(ca),
        }
    }

    /// Into `h`: each file's path and contents (unreadable: empty, and the build reports it).
    pub(crate) fn digest_into(&self, h: &mut Sha256) {
        for file in [&self.cert, &self.key, &self.ca] {
            h.update([0]);
            if let Some(f) = file {
                h.update(f.path.as_os_str().as_encoded_bytes());
                h.update([0]);
                h.update(f.bytes.as_deref().unwrap_or_default());
            }
        }
    }
}

impl PemFile {
    fn bytes(&self, what: &str) -> Result<&[u8], String> {
        self.bytes
            .as_deref()
            .map_err(|e| format!("cannot read {what} from {}: {e}", self.path.display()))
    }

    pub(crate) fn certs(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(self.bytes("certificates")?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid certificate in {}: {e}", self.path.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate found in {}", self.path.display()));
        }
        Ok(certs)
    }

    pub(crate) fn key(&self) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_slice(self.bytes("a private key")?).map_err(|e| {
            format!(
                "cannot read a private key from {}: {e}",
                self.path.display()
            )
        })
    }

    pub(crate) fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in self.certs()? {
            roots
                .add(cert)
                .map_err(|e| format!("invalid CA certificate in {}: {e}", self.path.display()))?;
        }
        Ok(roots)
    }
}

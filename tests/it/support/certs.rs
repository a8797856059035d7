//! Test PKI made at test time with rcgen: a CA, server certificates (DNS `localhost` and IP
//! `127.0.0.1`), and client certificates whose CN is a user name.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA that signs leaf certificates into PEM files under `dir`.
pub(crate) struct Pki {
    dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    ca_file: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

/// PEM files of one leaf certificate.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pgporter tests");
    dn.push(DnType::CommonName, cn);
    dn
}

impl Pki {
    /// A fresh CA named `label`, writing files into `dir` (which must exist).
    pub(crate) fn new(dir: &Path, label: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        // A unique subject per CA: OpenSSL looks issuers up by name.
        let unique: u64 = rand::random();
        params.distinguished_name = name(&format!("pgporter test CA {label} {unique:016x}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = params.self_signed(&ca_key).expect("self-signing the CA");
        let ca_file = dir.join(format!("{label}-ca.pem"));
        std::fs::write(&ca_file, ca_cert.pem()).expect("writing the CA");
        Pki {
            dir: dir.to_path_buf(),
            ca_cert,
            ca_key,
            ca_file,
        }
    }

    pub(crate) fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub(crate) fn server(&self, file_stem: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params.distinguished_name = name("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, file_stem)
    }

    /// A client certificate with CN = `cn`.
    pub(crate) fn client(&self, cn: &str, file_stem: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name = name(cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, file_stem)
    }

    fn sign(&self, params: CertificateParams, file_stem: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("signing a leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("writing a key");
        // libpq refuses a key readable by others.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&leaf.key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        leaf
    }
}

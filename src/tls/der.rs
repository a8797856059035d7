//! Just enough DER to read two things from an X.509 certificate: the signature algorithm (for
//! tls-server-end-point) and the subject's commonName (for cert authentication). Pure and
//! bounded: every length is checked against the input before it is used.

/// One TLV: tag byte and contents.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const CONTEXT_0: u8 = 0xa0;

/// Split the first TLV off `input`.
fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((Tlv { tag, body }, rest))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (tlv, rest) = next(input)?;
    (tlv.tag == tag).then_some((tlv.body, rest))
}

/// tbsCertificate contents and the signatureAlgorithm OID bytes.
fn split_certificate(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, rest) = expect(cert, SEQUENCE)?;
    let (alg, _) = expect(rest, SEQUENCE)?;
    let (oid, _) = expect(alg, OID)?;
    Some((tbs, oid))
}

/// The hash tls-server-end-point uses for a certificate (RFC 5929 §4.1): the signature's hash,
/// with MD5 and SHA-1 upgraded to SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

const RSA_PKCS1: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const ECDSA_SHA2: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
const ECDSA_SHA1: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];

/// `None` for algorithms whose hash RFC 5929 leaves undefined (Ed25519, RSA-PSS): no
/// channel binding is offered with such a certificate, as in PostgreSQL.
pub(crate) fn end_point_hash(der: &[u8]) -> Option<EndPointHash> {
    let (_, oid) = split_certificate(der)?;
    if let Some(rest) = oid.strip_prefix(&RSA_PKCS1[..]) {
        return match rest {
            [4 | 5 | 11 | 14] => Some(EndPointHash::Sha256),
            [12] => Some(EndPointHash::Sha384),
            [13] => Some(EndPointHash::Sha512),
            _ => None,
        };
    }
    if oid == ECDSA_SHA1 {
        return Some(EndPointHash::Sha256);
    }
    match oid.strip_prefix(&ECDSA_SHA2[..])? {
        [1 | 2] => Some(EndPointHash::Sha256),
        [3] => Some(EndPointHash::Sha384),
        [4] => Some(EndPointHash::Sha512),
        _ => None,
    }
}

/// The subject's (last) commonName, if it is a valid UTF-8 / printable string.
pub(crate) fn subject_common_name(der: &[u8]) -> Option<String> {
    let (tbs, _) = split_certificate(der)?;
    let mut rest = tbs;
    // [0] version is optional.
    if let Some((tlv, after)) = next(rest) {
        if tlv.tag == CONTEXT_0 {
            rest = after;
        }
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = next(rest)?.1;
    }
    let (mut subject, _) = expect(rest, SEQUENCE)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (mut set, after) = expect(subject, SET)?;
        subject = after;
        while !set.is_empty() {
            let (attr, after) = expect(set, SEQUENCE)?;
            set = after;
            let (oid, value) = expect(attr, OID)?;
            if oid == [0x55, 0x04, 0x03] {
                let (value, _) = next(value)?;
                // UTF8String, PrintableString, IA5String, T61String (treated as Latin-1-free ASCII).
                if matches!(value.tag, 0x0c | 0x13 | 0x16 | 0x14) {
                    cn = std::str::from_utf8(value.body).ok().map(str::to_owned);
                }
            }
        }
    }
    cn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm, cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "pgporter tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_algorithm_and_common_name() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256, "alice");
        assert_eq!(end_point_hash(&p256), Some(EndPointHash::Sha256));
        assert_eq!(subject_common_name(&p256).as_deref(), Some("alice"));
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384, "bob");
        assert_eq!(end_point_hash(&p384), Some(EndPointHash::Sha384));
        assert_eq!(subject_common_name(&p384).as_deref(), Some("bob"));
        let ed = cert(&rcgen::PKCS_ED25519, "carol");
        assert_eq!(end_point_hash(&ed), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(end_point_hash(b""), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256, "alice");
        for cut in [1, 10, p256.len() / 2, p256.len() - 1] {
            let _ = subject_common_name(&p256[..cut]);
            let _ = end_point_hash(&p256[..cut]);
        }
    }
}

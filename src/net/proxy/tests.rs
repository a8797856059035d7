use super::*;

/// A v2 PROXY header for `src` -> `dst` (TCP), with `tlv` appended.
pub(crate) fn v2(src: SocketAddr, dst: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut v = V2_SIG.to_vec();
    v.push(0x21);
    let mut addrs = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v.push(0x11);
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v.push(0x21);
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    addrs.extend_from_slice(tlv);
    v.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    v.extend_from_slice(&addrs);
    v
}

#[test]
fn v1_headers() {
    let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 6432\r\nrest";
    assert_eq!(
        parse(h).unwrap(),
        Some((
            Header::Proxied("192.0.2.7:51000".parse().unwrap()),
            h.len() - 4
        ))
    );
    let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 6432\r\n";
    assert_eq!(
        parse(h6).unwrap().unwrap().0,
        Header::Proxied("[2001:db8::1]:4000".parse().unwrap())
    );
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0,
        Header::Local
    );
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"[..],
        b"PROXY TCP4 ::1 5.6.7.8 1 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 1\r\n",
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 1\r\n",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    assert!(parse(&b"PROXY x".repeat(20)).is_err());
}

#[test]
fn v2_headers() {
    let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let dst: SocketAddr = "10.0.0.1:6432".parse().unwrap();
    let h = v2(src, dst, &[0x04, 0, 1, 0xaa]);
    assert_eq!(parse(&h).unwrap(), Some((Header::Proxied(src), h.len())));
    for cut in 0..h.len() {
        assert_eq!(parse(&h[..cut]).unwrap(), None, "cut at {cut}");
    }
    let src6: SocketAddr = "[2001:db8::7]:1234".parse().unwrap();
    let dst6: SocketAddr = "[2001:db8::1]:6432".parse().unwrap();
    assert_eq!(
        parse(&v2(src6, dst6, &[])).unwrap().unwrap().0,
        Header::Proxied(src6)
    );
    let mut local = v2(src, dst, &[]);
    local[12] = 0x20;
    assert_eq!(parse(&local).unwrap().unwrap().0, Header::Local);
    let mut bad = v2(src, dst, &[]);
    bad[12] = 0x31;
    assert!(parse(&bad).is_err());
    let mut short = v2(src, dst, &[]);
    short[14..16].copy_from_slice(&4u16.to_be_bytes());
    assert!(parse(&short).is_err());
    let mut huge = V2_SIG.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert!(parse(&huge).is_err());
    assert_eq!(classify(&h), Start::Header);
    assert_eq!(classify(b"PROXY TCP4"), Start::Header);
    assert_eq!(classify(b"PRO"), Start::Unsure);
    assert_eq!(classify(b""), Start::Unsure);
    assert_eq!(classify(&h[..7]), Start::Unsure);
    assert_eq!(classify(&[0, 0, 0, 8, 4, 210, 22, 47]), Start::Other);
    assert_eq!(classify(&[0, 0, 0, 2]), Start::Other);
}

use super::*;

fn parse(text: &str) -> Result<Vec<HbaRule>, Vec<(usize, String)>> {
    parse_hba(text, &|_| Err("no includes here".into()))
}

#[test]
fn parses_fields() {
    let r = parse(
        "host  \"my db\",b  all  192.168.0.0/16  scram-sha-256 # trailing\n\
                   hostssl all all ::/0 cert map=certs\n\
                   local all \\\n  all trust\n",
    )
    .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[0].databases,
        vec![
            NamePattern::Name("my db".into()),
            NamePattern::Name("b".into())
        ]
    );
    assert_eq!(r[0].users, vec![NamePattern::All]);
    assert_eq!(
        r[0].address,
        Some(HbaAddress::Cidr {
            net: "192.168.0.0".parse().unwrap(),
            prefix: 16
        })
    );
    assert_eq!(r[1].map.as_deref(), Some("certs"));
    assert_eq!((r[2].line, r[2].method), (3, HbaMethod::Trust));
}

#[test]
fn rejects_what_is_not_supported() {
    for (text, needle) in [
        ("host all +admins 0.0.0.0/0 md5", "group membership"),
        ("host all all example.com md5", "host names"),
        ("host all all 10.0.0.0/33 md5", "CIDR"),
        ("host all all 10.0.0.0 255.0.255.0 md5", "contiguous"),
        ("host all all 0.0.0.0/0 ldap", "unsupported authentication"),
        ("host all all 0.0.0.0/0 cert", "hostssl"),
        ("host all all 0.0.0.0/0 peer", "only supported on local"),
        ("hostx all all 0.0.0.0/0 md5", "connection type"),
        ("host all all 0.0.0.0/0", "method"),
        ("host \"all all 0.0.0.0/0 md5", "unterminated"),
        ("host all all 0.0.0.0/0 md5 clientcert=1", "option"),
        ("host all @missing 0.0.0.0/0 md5", "no includes"),
    ] {
        let errors = parse(text).expect_err(text);
        assert!(errors[0].1.contains(needle), "{text}: {errors:?}");
    }
}

#[test]
fn ident_map() {
    let m = parse_ident("# map\ncerts alice-laptop alice\n\ncerts bob bob\n").unwrap();
    assert_eq!(
        m[0],
        IdentEntry {
            map: "certs".into(),
            cert_name: "alice-laptop".into(),
            user: "alice".into()
        }
    );
    assert!(parse_ident("certs /^(.*)$ \\1").is_err());
    assert!(parse_ident("certs only-two").is_err());
}

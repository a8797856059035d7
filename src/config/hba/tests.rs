use super::*;

fn parse(text: &str) -> Result<Vec<HbaRule>, Vec<(usize, String)>> {
    parse_hba(text, &|_| Err("no includes here".into())).map(|(rules, _)| rules)
}

/// The rules and the warnings.
fn cautious(text: &str) -> (Vec<HbaRule>, Vec<(usize, String)>) {
    parse_hba(text, &|_| Err("no includes here".into())).expect(text)
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
fn refuses_what_is_not_valid_pg_hba() {
    for (text, needle) in [
        ("host all all 10.0.0.0/33 md5", "CIDR"),
        ("host all all 10.0.0.0 255.0.255.0 md5", "contiguous"),
        ("host all all 0.0.0.0/0 cert", "hostssl"),
        ("host all all 0.0.0.0/0 peer", "only supported on local"),
        ("hostx all all 0.0.0.0/0 md5", "connection type"),
        // Keywords are case-sensitive, as in PostgreSQL (pgporter took these for host/trust).
        ("HOST all all 0.0.0.0/0 md5", "connection type"),
        ("host all all 0.0.0.0/0 Trust", "authentication method"),
        ("host all all 0.0.0.0/0 kerberos", "authentication method"),
        ("host all all 0.0.0.0/0", "method"),
        ("host \"all all 0.0.0.0/0 md5", "unterminated"),
        ("host all all 0.0.0.0/0 md5 clientcert", "option"),
        ("host all @missing 0.0.0.0/0 md5", "no includes"),
    ] {
        let errors = parse(text).expect_err(text);
        assert!(errors[0].1.contains(needle), "{text}: {errors:?}");
    }
    // `ALL` is a database named ALL, not the keyword.
    let r = parse("host ALL all 0.0.0.0/0 trust").unwrap();
    assert_eq!(r[0].databases, vec![NamePattern::Name("ALL".into())]);
}

/// Valid lines pgporter cannot apply as written load, read the cautious way, with a warning:
/// never letting in a connection PostgreSQL would refuse (PgBouncer skips them; pgporter
/// refused to start on Debian's stock pg_hba.conf, which has `replication` lines).
#[test]
fn reads_what_it_cannot_apply_the_cautious_way() {
    // Debian's stock file: the replication lines match no pgporter connection.
    let (r, w) = cautious(
        "local all postgres peer\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n\
         local replication all peer\nhost replication all 127.0.0.1/32 scram-sha-256\n",
    );
    assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(w.iter().map(|w| w.0).collect::<Vec<_>>(), [4, 5]);
    // `replication` among other names: only the others count.
    let (r, w) = cautious("host replication,app all 0.0.0.0/0 md5");
    assert_eq!(r[0].databases, vec![NamePattern::Name("app".into())]);
    assert!(w.is_empty());
    // A condition it cannot evaluate is taken as true and the line refuses: taken as false,
    // `+admins scram-sha-256` above `all trust` let admins in without a password.
    let (r, w) = cautious("host all +admins,alice 0.0.0.0/0 reject\nhost all +ops 0.0.0.0/0 trust");
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].users,
        vec![NamePattern::Name("alice".into()), NamePattern::All]
    );
    assert_eq!(
        (r[1].method, r[1].users.clone()),
        (HbaMethod::Reject, vec![NamePattern::All])
    );
    assert!(w[0].1.contains("taken as true"), "{w:?}");
    assert!(w[1].1.contains("refuses every connection"), "{w:?}");
    // Only the field with the unknown condition widens.
    let (r, _) = cautious("host app +admins 10.0.0.0/8 reject");
    assert_eq!(
        (r[0].databases.clone(), r[0].users.clone()),
        (
            vec![NamePattern::Name("app".into())],
            vec![NamePattern::All]
        )
    );
    assert_eq!(
        r[0].address,
        Some(HbaAddress::Cidr {
            net: "10.0.0.0".parse().unwrap(),
            prefix: 8
        })
    );
    let (r, _) = cautious("host all all samenet reject\nhost all all db.example.com trust");
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|r| r.address == Some(HbaAddress::All) && r.method == HbaMethod::Reject));
    // Names in an @file keep their meaning, as in PostgreSQL: `+admins` there was taken for a
    // user named "+admins" and the reject line matched no one.
    let included = |name: &str| match name {
        "blocked.txt" => Ok("+admins\n".to_string()),
        "nested.txt" => Ok("carol @blocked.txt all\n".to_string()),
        _ => Err(format!("no {name}")),
    };
    let (r, w) = parse_hba("host all @blocked.txt 127.0.0.1/32 reject", &included).unwrap();
    assert_eq!((r[0].users.clone(), w.len()), (vec![NamePattern::All], 1));
    let (r, _) = parse_hba("host all @nested.txt 127.0.0.1/32 md5", &included).unwrap();
    assert_eq!(
        (r[0].method, r[0].users.clone()),
        (
            HbaMethod::Reject,
            vec![
                NamePattern::Name("carol".into()),
                NamePattern::All,
                NamePattern::All
            ]
        )
    );
    // Methods and options it cannot carry out refuse what the line matches.
    for text in [
        "host all all 10.0.0.0/8 ident",
        "host all all 10.0.0.0/8 ldap ldapserver=x",
        "hostssl all all 10.0.0.0/8 scram-sha-256 clientcert=verify-full",
    ] {
        let (r, w) = cautious(text);
        assert_eq!(r[0].method, HbaMethod::Reject, "{text}");
        assert!(w[0].1.contains("refused"), "{text}: {w:?}");
    }
    // ... and an unknown condition on such a line holds.
    let (r, _) = cautious("host all +ops 10.0.0.0/8 ldap");
    assert_eq!(
        (r[0].method, r[0].users.clone()),
        (HbaMethod::Reject, vec![NamePattern::All])
    );
    // GSSAPI-encrypted connections never come here; hostnogssenc is host.
    let (r, w) = cautious("hostgssenc all all 0.0.0.0/0 trust\nhostnogssenc all all 0.0.0.0/0 md5");
    assert_eq!((r.len(), r[0].conn, w.len()), (1, ConnType::Host, 1));
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

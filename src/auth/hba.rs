//! Match a connection against auth_hba_file rules: the first matching line wins.

use std::net::IpAddr;

use crate::config::hba::{ConnType, HbaAddress, HbaRule, NamePattern};

/// How a client reached pgporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp { addr: IpAddr, tls: bool },
}

/// The first rule that applies to (`transport`, `database`, `user`), if any.
pub fn find<'r>(
    rules: &'r [HbaRule],
    transport: Transport,
    database: &str,
    user: &str,
) -> Option<&'r HbaRule> {
    rules.iter().find(|rule| {
        conn_matches(rule, transport)
            && rule
                .databases
                .iter()
                .any(|p| name_matches(p, database, user))
            && rule.users.iter().any(|p| name_matches(p, user, user))
    })
}

fn conn_matches(rule: &HbaRule, transport: Transport) -> bool {
    match (rule.conn, transport) {
        (ConnType::Local, Transport::Unix) => true,
        (ConnType::Local, _) | (_, Transport::Unix) => false,
        (conn, Transport::Tcp { addr, tls }) => {
            let ssl_ok = match conn {
                ConnType::HostSsl => tls,
                ConnType::HostNoSsl => !tls,
                _ => true,
            };
            ssl_ok && rule.address.is_some_and(|a| address_matches(a, addr))
        }
    }
}

fn name_matches(pattern: &NamePattern, name: &str, user: &str) -> bool {
    match pattern {
        NamePattern::All => true,
        NamePattern::SameUser => name == user,
        NamePattern::Name(n) => n == name,
    }
}

fn address_matches(rule: HbaAddress, addr: IpAddr) -> bool {
    let HbaAddress::Cidr { net, prefix } = rule else {
        return true;
    };
    let addr = canonical(addr);
    match (net, addr) {
        (IpAddr::V4(net), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(net) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `::ffff:a.b.c.d` (a v4 client on a dual-stack socket) is matched as `a.b.c.d`.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hba::{parse_hba, HbaMethod};

    fn rules(text: &str) -> Vec<HbaRule> {
        parse_hba(text, &|name| match name {
            "admins.txt" => Ok("root, alice\n# comment\nbob\n".into()),
            _ => Err(format!("no file {name}")),
        })
        .unwrap()
        .0
    }

    fn tcp(addr: &str, tls: bool) -> Transport {
        Transport::Tcp {
            addr: addr.parse().unwrap(),
            tls,
        }
    }

    fn method(r: &[HbaRule], t: Transport, db: &str, user: &str) -> Option<HbaMethod> {
        find(r, t, db, user).map(|r| r.method)
    }

    #[test]
    fn first_match_wins() {
        let r = rules(
            "# comment\n\
             local all all trust\n\
             hostssl app @admins.txt 10.0.0.0/8 cert\n\
             hostnossl all mallory 0.0.0.0/0 reject\n\
             host sameuser all 127.0.0.1 255.255.255.255 trust\n\
             host app,\"all\" all ::1/128 md5\n\
             host all all 127.0.0.0/8 scram-sha-256\n",
        );
        assert_eq!(
            method(&r, Transport::Unix, "x", "y"),
            Some(HbaMethod::Trust)
        );
        assert_eq!(
            method(&r, tcp("10.1.2.3", true), "app", "bob"),
            Some(HbaMethod::Cert)
        );
        assert_eq!(method(&r, tcp("10.1.2.3", false), "app", "bob"), None);
        assert_eq!(method(&r, tcp("10.1.2.3", true), "app", "eve"), None);
        assert_eq!(
            method(&r, tcp("127.0.0.1", false), "x", "mallory"),
            Some(HbaMethod::Reject)
        );
        assert_eq!(
            method(&r, tcp("127.0.0.1", true), "mallory", "mallory"),
            Some(HbaMethod::Trust)
        );
        assert_eq!(
            method(&r, tcp("127.0.0.2", false), "x", "y"),
            Some(HbaMethod::ScramSha256)
        );
        assert_eq!(
            method(&r, tcp("::ffff:127.0.0.2", false), "x", "y"),
            Some(HbaMethod::ScramSha256)
        );
        assert_eq!(
            method(&r, tcp("::1", false), "app", "y"),
            Some(HbaMethod::Md5)
        );
        // "all" quoted is a database called all.
        assert_eq!(
            method(&r, tcp("::1", false), "all", "y"),
            Some(HbaMethod::Md5)
        );
        assert_eq!(method(&r, tcp("::1", false), "other", "y"), None);
        assert_eq!(method(&r, tcp("192.168.0.1", false), "x", "y"), None);
    }
}

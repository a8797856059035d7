//! `[peers]` (PgBouncer 1.19+): the other pgporter processes behind the same address (replicas
//! behind one Kubernetes Service, or processes sharing a port with `so_reuseport`), each by
//! its `peer_id`. A CancelRequest travels on a connection of its own, which the load balancer
//! may hand to any of them; a process that gets one for another peer's client forwards it
//! there. Lines are `<peer_id> = host=<address or socket directory> [port=<port>]
//! [pool_size=<n>]`.

use std::collections::HashMap;

use super::databases::split_pairs;
use super::settings::parse_u16;
use super::{ConfigError, HostPort, RawIni};

/// The largest `peer_id`, as PgBouncer's.
const MAX_PEER_ID: u16 = 16383;

/// A peer's listener when `port=` is not given (PgBouncer's default port).
const DEFAULT_PEER_PORT: u16 = 6432;

/// One `[peers]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its listener (a host, or a unix socket directory).
    pub addr: HostPort,
    /// `pool_size=` as given (shown by SHOW PEERS; each forwarded cancel is a connection of
    /// its own here).
    pub pool_size: Option<u16>,
}

/// All `[peers]` entries by peer id.
pub(super) fn from_ini(raw: &RawIni, errors: &mut Vec<ConfigError>) -> HashMap<u16, Peer> {
    let mut peers = HashMap::new();
    for entry in raw.section("peers") {
        match parse_peer(&entry.key, &entry.value) {
            Ok((id, addr)) => {
                peers.insert(id, addr);
            }
            Err(message) => errors.push(ConfigError {
                file: entry.file.clone(),
                line: entry.line,
                key: entry.key.clone(),
                message,
            }),
        }
    }
    peers
}

/// A peer id: 1 ..= [`MAX_PEER_ID`] (0 means "no peering" in `peer_id`).
pub(super) fn parse_peer_id(v: &str) -> Result<u16, String> {
    match parse_u16(v) {
        Ok(id) if id <= MAX_PEER_ID => Ok(id),
        _ => Err(format!("peer id {v:?} is not 0..{MAX_PEER_ID}")),
    }
}

fn parse_peer(key: &str, value: &str) -> Result<(u16, Peer), String> {
    let id = parse_peer_id(key)?;
    if id == 0 {
        return Err("peer id 0 is not allowed".into());
    }
    let (mut host, mut port, mut pool_size) = (None, DEFAULT_PEER_PORT, None);
    for (k, v) in split_pairs(value)? {
        match k.to_ascii_lowercase().as_str() {
            "host" => host = Some(v),
            "port" => port = parse_u16(&v).map_err(|m| format!("port: {m}"))?,
            // PgBouncer's cap on cancels in flight to the peer: each forwarded cancel is a
            // connection of its own here.
            "pool_size" => pool_size = Some(parse_u16(&v).map_err(|m| format!("pool_size: {m}"))?),
            _ => return Err(format!("unknown parameter {k:?}")),
        }
    }
    let host = host.filter(|h| !h.is_empty()).ok_or("host= is required")?;
    let addr = HostPort { host, port };
    Ok((id, Peer { addr, pool_size }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawIni {
        super::super::ini::parse_ini_with(text, "p.ini", &mut |_: &std::path::Path| {
            Err("no includes".into())
        })
        .unwrap()
    }

    #[test]
    fn peers_section() {
        let mut errors = Vec::new();
        let peers = from_ini(
            &raw(
                "[peers]\n1 = host=pgp-0.pgp port=6432\n2 = host=/tmp/p2 pool_size=8\n\
                  0 = host=x\nx = host=y\n3 = port=1\n4 = host=a colour=red\n",
            ),
            &mut errors,
        );
        assert_eq!(peers.len(), 2);
        let addr = |id: u16| (peers[&id].addr.host.as_str(), peers[&id].addr.port);
        assert_eq!(addr(1), ("pgp-0.pgp", 6432));
        assert_eq!(addr(2), ("/tmp/p2", 6432));
        assert_eq!((peers[&1].pool_size, peers[&2].pool_size), (None, Some(8)));
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, vec![(4, "0"), (5, "x"), (6, "3"), (7, "4")]);
        assert_eq!(parse_peer_id("16383"), Ok(16383));
        assert!(parse_peer_id("16384").is_err());
    }
}

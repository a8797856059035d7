//! SHOW builders: pure functions of a [`Snapshot`] -> [`ResultSet`]. Column names, order and
//! types are PgBouncer's (1.24), so scripts and pgbouncer_exporter read them unchanged;
//! pgporter's own views are separate commands (SHOW HOSTS, SHOW IDENTITIES).

use std::collections::BTreeMap;

use super::command::Show;
use super::resultset::{ResultSet, Type, Type::*, Value};
use super::show_stats;
use crate::config::PoolMode;
use crate::sessions::ClientState;
use crate::snapshot::{PoolRow, Snapshot};

pub(super) fn build(what: Show, s: &Snapshot, version: &str) -> ResultSet {
    match what {
        Show::Help => ResultSet::new(&[]),
        Show::Version => {
            let mut rs = ResultSet::new(&[("version", Text)]);
            rs.push(vec![version.into()]);
            rs
        }
        Show::Config => super::config_rows::config(&s.config.settings),
        Show::Databases => databases(s),
        Show::Pools => pools(s),
        Show::Clients => clients(s),
        Show::Servers => servers(s),
        Show::Sockets => sockets(s, false),
        Show::ActiveSockets => sockets(s, true),
        Show::Peers => peers(s),
        Show::PeerPools => ResultSet::new(&[
            ("peer_id", Int4),
            ("cl_active_cancel_req", Int4),
            ("cl_waiting_cancel_req", Int4),
            ("sv_active_cancel", Int4),
            ("sv_login", Int4),
        ]),
        Show::Users => users(s),
        Show::Stats => show_stats::stats(s),
        Show::StatsTotals => show_stats::stats_totals(s),
        Show::StatsAverages => show_stats::stats_averages(s),
        Show::Totals => show_stats::totals(s),
        Show::Lists => lists(s),
        Show::DnsHosts => ResultSet::new(&[("hostname", Text), ("ttl", Int8), ("addrs", Text)]),
        Show::DnsZones => ResultSet::new(&[("zonename", Text), ("serial", Int8), ("count", Int4)]),
        Show::Mem => ResultSet::new(&[
            ("name", Text),
            ("size", Int4),
            ("used", Int4),
            ("free", Int4),
            ("memtotal", Int4),
        ]),
        Show::State => state(s),
        // PgBouncer's online restart takes these over (`-R`); pgporter hands none over.
        Show::Fds => ResultSet::new(&[
            ("fd", Int4),
            ("task", Text),
            ("user", Text),
            ("database", Text),
            ("addr", Text),
            ("port", Int4),
            ("cancel", Int8),
            ("link", Int4),
            ("client_encoding", Text),
            ("std_strings", Text),
            ("datestyle", Text),
            ("timezone", Text),
            ("password", Text),
            ("scram_client_key", Bytea),
            ("scram_server_key", Bytea),
        ]),
        Show::Hosts => hosts(s),
        Show::Identities => identities(s),
    }
}

fn flag(b: bool) -> Value {
    Value::Int(i64::from(b))
}

fn databases(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
    ]);
    let set = &s.config.settings;
    for (name, db) in s.databases() {
        let servers = s.servers.iter().filter(|v| &v.database == name).count() as u64;
        let clients = s
            .clients
            .iter()
            .filter(|c| !c.admin && *c.database == **name)
            .count() as u64;
        rs.push(vec![
            name.as_str().into(),
            db.host_names().into(),
            db.first_host().port.into(),
            db.dbname.clone().unwrap_or_else(|| name.clone()).into(),
            db.user.clone().into(),
            db.pool_size.unwrap_or(set.default_pool_size).into(),
            db.min_pool_size.unwrap_or(set.min_pool_size).into(),
            s.config.reserve_pool_size(name).into(),
            u64::from(u32::try_from(set.server_lifetime.as_secs()).unwrap_or(u32::MAX)).into(),
            db.pool_mode.map(crate::config::PoolMode::as_str).into(),
            // As PgBouncer: only for an entry with more than one host.
            (db.hosts.len() > 1)
                .then(|| db.load_balance_hosts.as_str())
                .into(),
            db.max_db_connections
                .unwrap_or(set.max_db_connections)
                .into(),
            servers.into(),
            s.config.max_db_client_connections(name).into(),
            clients.into(),
            flag(s.gates.paused_alone(name)),
            flag(s.gates.is_disabled(name)),
        ]);
    }
    rs.insert_sorted(console_database(s));
    rs
}

/// The console's row: as PgBouncer shows it (no host, the listen port, forced user
/// `pgbouncer`, pool_size 2, statement mode), with the server_lifetime setting as it shows
/// for any database, and true counts: no server connections, its clients. Its client cap is
/// the [pgbouncer] max_db_client_connections, which console clients count against (users
/// of admin_users are never refused by it).
fn console_database(s: &Snapshot) -> Vec<Value> {
    use crate::snapshot::{CONSOLE_DB, CONSOLE_POOL_SIZE};
    let set = &s.config.settings;
    vec![
        CONSOLE_DB.into(),
        Value::Null,
        s.listen_port.into(),
        CONSOLE_DB.into(),
        CONSOLE_DB.into(),
        CONSOLE_POOL_SIZE.into(),
        0u32.into(),
        0u32.into(),
        u64::from(u32::try_from(set.server_lifetime.as_secs()).unwrap_or(u32::MAX)).into(),
        PoolMode::Statement.as_str().into(),
        Value::Null,
        set.max_db_connections.into(),
        0u32.into(),
        set.max_db_client_connections.into(),
        s.console_pool().cl_active.into(),
        0u32.into(),
        0u32.into(),
    ]
}

fn pools(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
    ]);
    for p in &s.pools {
        rs.push(pool_row(p, s.config.pool_mode(&p.database, &p.user)));
    }
    rs.insert_sorted(pool_row(&s.console_pool(), PoolMode::Statement));
    rs
}

fn pool_row(p: &PoolRow, mode: PoolMode) -> Vec<Value> {
    vec![
        p.label().as_ref().into(),
        p.user.as_str().into(),
        p.cl_active.into(),
        p.cl_waiting.into(),
        0u32.into(),
        0u32.into(),
        p.sv_active.into(),
        0u32.into(),
        0u32.into(),
        p.sv_idle.into(),
        0u32.into(),
        p.sv_tested.into(),
        p.sv_login.into(),
        p.maxwait.as_secs().into(),
        p.maxwait.subsec_micros().into(),
        mode.as_str().into(),
        Value::Null,
    ]
}

const SOCKET_COLUMNS: &[(&str, Type)] = &[
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int4),
    ("local_addr", Text),
    ("local_port", Int4),
    ("connect_time", Timestamp),
    ("request_time", Timestamp),
    ("wait", Int4),
    ("wait_us", Int4),
    ("close_needed", Int4),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int4),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int4),
    ("id", Int8),
];

fn clients(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(SOCKET_COLUMNS);
    client_rows(s, false).for_each(|row| rs.push(row));
    rs
}

/// SHOW CLIENTS rows (only active and waiting clients if `active_only`).
fn client_rows(s: &Snapshot, active_only: bool) -> impl Iterator<Item = Vec<Value>> + '_ {
    s.clients.iter().filter_map(move |c| {
        // A console client never waits for a server: PgBouncer 1.18 lists every one as
        // `active` (checked live), the one running the SHOW and the idle ones alike.
        let state = if c.admin {
            ClientState::Active
        } else {
            c.state()
        };
        if active_only && state == ClientState::Idle {
            return None;
        }
        let wait_us = c.waited_us(s.now_us);
        let request = c.request_time();
        let link = c.server().map(|l| format!("{:x}", l.pid));
        Some(vec![
            "C".into(),
            (&*c.user).into(),
            (&*c.database).into(),
            "none".into(),
            state.as_str().into(),
            c.addr().into(),
            c.port.into(),
            // The unix socket: `unix` and the listen port at both ends, as PgBouncer shows.
            match (c.ip, c.local) {
                (None, _) => Some("unix".to_string()),
                (_, local) => local.map(|a| a.ip().to_string()),
            }
            .into(),
            match (c.ip, c.local) {
                (None, _) => Some(c.port),
                (_, local) => local.map(|a| a.port()),
            }
            .into(),
            Value::Time(c.connect_time),
            Value::Time(request),
            (wait_us / 1_000_000).into(),
            (wait_us % 1_000_000).into(),
            0u32.into(),
            format!("{:x}", c.id).into(),
            link.into(),
            c.peer_pid.into(),
            c.tls.map(|t| t.to_string()).unwrap_or_default().into(),
            (&*c.application_name).into(),
            c.prepared.load(std::sync::atomic::Ordering::Relaxed).into(),
            c.id.into(),
        ])
    })
}

fn servers(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(SOCKET_COLUMNS);
    server_rows(s, false).for_each(|row| rs.push(row));
    rs
}

/// SHOW SERVERS rows (only those in use if `active_only`).
fn server_rows(s: &Snapshot, active_only: bool) -> impl Iterator<Item = Vec<Value>> + '_ {
    s.servers.iter().filter_map(move |v| {
        if active_only && v.state != "active" {
            return None;
        }
        let (addr, port) = match &v.addr {
            crate::server::ServerAddr::Tcp { host, port } => (host.clone(), *port),
            crate::server::ServerAddr::Unix { dir, port } => (dir.clone(), *port),
        };
        Some(vec![
            "S".into(),
            v.user.as_str().into(),
            v.database.as_str().into(),
            "none".into(),
            v.state.into(),
            addr.into(),
            port.into(),
            v.local.map(|a| a.ip().to_string()).into(),
            v.local.map(|a| a.port()).into(),
            Value::Time(v.connect_time),
            Value::Time(v.request_time),
            0u32.into(),
            0u32.into(),
            u32::from(v.close_needed).into(),
            // None yet for a connection logging in (no backend pid).
            (v.pid != 0).then(|| format!("{:x}", v.pid)).into(),
            v.link.map(|l| format!("{l:x}")).into(),
            v.pid.into(),
            v.tls.map(|t| t.to_string()).unwrap_or_default().into(),
            v.application_name.as_str().into(),
            u32::try_from(v.prepared).unwrap_or(u32::MAX).into(),
            u64::try_from(v.pid).unwrap_or(0).into(),
        ])
    })
}

/// SHOW SOCKETS / ACTIVE_SOCKETS: the client and server rows with PgBouncer's buffer
/// columns (pgporter's buffers are not PgBouncer's: always 0), and its states there: the
/// names of its internal lists (`cl_active` for every logged-in client not waiting,
/// `sv_login` for `new`).
fn sockets(s: &Snapshot, active_only: bool) -> ResultSet {
    let columns: Vec<(&str, Type)> = SOCKET_COLUMNS
        .iter()
        .copied()
        .chain(
            [
                "recv_pos",
                "pkt_pos",
                "pkt_remain",
                "send_pos",
                "send_remain",
                "pkt_avail",
                "send_avail",
            ]
            .map(|name| (name, Int4)),
        )
        .collect();
    let mut rs = ResultSet::new(&columns);
    for mut row in client_rows(s, active_only).chain(server_rows(s, active_only)) {
        let list = match (&row[0], &row[4]) {
            (Value::Text(t), Value::Text(state)) => socket_list(t, state),
            _ => None,
        };
        if let Some(list) = list {
            row[4] = list.into();
        }
        row.extend((0..7).map(|_| Value::from(0u32)));
        rs.push(row);
    }
    rs
}

/// PgBouncer's list name for a SHOW CLIENTS / SERVERS `type` and `state`.
fn socket_list(kind: &str, state: &str) -> Option<&'static str> {
    Some(match (kind, state) {
        ("C", "active" | "idle") => "cl_active",
        ("C", "waiting") => "cl_waiting",
        ("S", "active") => "sv_active",
        ("S", "idle") => "sv_idle",
        ("S", "used") => "sv_used",
        ("S", "tested") => "sv_tested",
        ("S", crate::snapshot::SERVER_LOGIN) => "sv_login",
        _ => return None,
    })
}

/// The `[peers]` entries, by peer id; pool_size as PgBouncer shows it (default_pool_size when
/// not given).
fn peers(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("peer_id", Int4),
        ("host", Text),
        ("port", Int4),
        ("pool_size", Int4),
    ]);
    let mut peers: Vec<_> = s.config.peers.iter().collect();
    peers.sort_by_key(|(id, _)| **id);
    for (id, peer) in peers {
        let size = peer
            .pool_size
            .map_or(s.config.settings.default_pool_size, u32::from);
        rs.push(vec![
            (*id).into(),
            peer.addr.host.as_str().into(),
            peer.addr.port.into(),
            size.into(),
        ]);
    }
    rs
}

fn users(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("name", Text),
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int4),
        ("current_connections", Int4),
        ("max_user_client_connections", Int4),
        ("current_client_connections", Int4),
    ]);
    let set = &s.config.settings;
    for name in s.users() {
        let entry = s.config.users.get(name);
        let servers = s.servers.iter().filter(|v| v.user == name).count() as u64;
        // Console clients too (as PgBouncer counts them).
        let clients = s.clients.iter().filter(|c| *c.user == *name).count() as u64;
        rs.push(vec![
            name.into(),
            // As PgBouncer: the user's own value, empty when it has none.
            optional(entry.and_then(|e| e.pool_size)),
            optional(entry.and_then(|e| e.reserve_pool_size)),
            entry
                .and_then(|e| e.pool_mode)
                .map(crate::config::PoolMode::as_str)
                .into(),
            entry
                .and_then(|e| e.max_user_connections)
                .unwrap_or(set.max_user_connections)
                .into(),
            servers.into(),
            s.config.max_user_client_connections(name).into(),
            clients.into(),
        ]);
    }
    rs
}

/// A [users] number as SHOW USERS prints it: empty when unset.
fn optional(n: Option<u32>) -> Value {
    n.map(|n| n.to_string()).unwrap_or_default().into()
}

fn lists(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[("list", Text), ("items", Int4)]);
    for (k, v) in s.lists() {
        rs.push(vec![k.into(), v.into()]);
    }
    rs
}

fn state(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[("key", Text), ("value", Text)]);
    let yes = |b: bool| if b { "yes" } else { "no" };
    // A shutdown (SIGINT, SIGTERM, SHUTDOWN WAIT_FOR_*) stops handing out servers, as PAUSE.
    let paused = s.gates.all_paused || s.shutdown.is_some();
    rs.push(vec!["active".into(), yes(!paused).into()]);
    rs.push(vec!["paused".into(), yes(paused).into()]);
    rs.push(vec!["suspended".into(), "no".into()]);
    rs
}

fn hosts(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("host", Text),
        ("port", Int4),
        ("role", Text),
        ("state", Text),
        ("lag_ms", Int8),
        ("last_check", Timestamp),
        ("error", Text),
    ]);
    for (addr, h) in &s.hosts {
        let (host, port) = match addr {
            crate::server::ServerAddr::Tcp { host, port } => (host.clone(), *port),
            crate::server::ServerAddr::Unix { dir, port } => (dir.clone(), *port),
        };
        rs.push(vec![
            host.into(),
            port.into(),
            h.role.into(),
            if h.up { "up" } else { "down" }.into(),
            h.lag
                .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX))
                .into(),
            Value::Time(h.last_check),
            h.error.clone().into(),
        ]);
    }
    rs
}

/// Per client identity: the login user (as fair sharing and identity tagging count it).
fn identities(s: &Snapshot) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("identity", Text),
        ("clients", Int4),
        ("servers", Int4),
        ("waiting", Int4),
        ("rejections", Int8),
        ("auth_failures", Int8),
    ]);
    let mut rows: BTreeMap<String, [u64; 5]> = BTreeMap::new();
    for c in s.clients.iter().filter(|c| !c.admin) {
        let r = rows.entry(c.user.to_string()).or_default();
        r[0] += 1;
        match c.state() {
            ClientState::Active => r[1] += 1,
            ClientState::Waiting => r[2] += 1,
            ClientState::Idle => {}
        }
    }
    for (u, n) in &s.rejections {
        rows.entry(u.clone()).or_default()[3] = *n;
    }
    for (u, n) in &s.auth_failures {
        rows.entry(u.clone()).or_default()[4] = *n;
    }
    for (id, r) in rows {
        let mut row: Vec<Value> = vec![id.into()];
        row.extend(r.into_iter().map(Value::from));
        rs.push(row);
    }
    rs
}

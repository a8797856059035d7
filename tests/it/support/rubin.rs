//! `Rubin`: the deployment pgporter is built for, in one fixture. The butler's registry on a
//! replicated PostgreSQL (a primary and two streaming standbys, as CloudNativePG runs it), and
//! a pgporter in front of it with
//! - `butler` (every host, target_session_attrs=read-write), `butler_ro` (standby), and the
//!   read-only listener;
//! - `butler_shared`, forcing the shared account `rubin` (password in the entry), with the
//!   identity trigger installed and the audit log on;
//! - auth_type scram-sha-256 with a userlist of the SCRAM verifiers copied from pg_authid and
//!   nothing else: every person's server logins are SCRAM passthrough.

use tokio_postgres::Client;

use super::pg::{ident, literal, quote};
use super::porter::{spawn_pgporter, Porter};
use super::replica::ReplCluster;

/// The people (pgporter users and PostgreSQL roles of their own) and their passwords.
pub(crate) const PEOPLE: [(&str, &str); 4] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
    ("dave", "dave-pw"),
];
/// The shared backend account and its password (given in `butler_shared` only).
pub(crate) const RUBIN: (&str, &str) = ("rubin", "rubin-backend-pw");
pub(crate) const DB: &str = "butler";

#[derive(Debug)]
pub(crate) struct Rubin {
    // Fields drop in order: pgporter first, then the cluster.
    pub(crate) porter: Porter,
    pub(crate) cluster: ReplCluster,
}

/// Where a session goes in: the endpoint and database entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `butler` on listen_port.
    ReadWrite,
    /// `butler` on readonly_listen_port.
    ReadOnlyListener,
    /// `butler_ro` on listen_port.
    ReadOnlyEntry,
    /// `butler_shared` on listen_port (backend user rubin).
    Shared,
}

impl Rubin {
    /// The cluster, roles, database and trigger; pgporter with `extra` `[pgbouncer]` lines.
    pub(crate) async fn new(extra: &str) -> Rubin {
        let cluster = ReplCluster::start(2).await;
        let su = cluster.superuser(0).await;
        for (role, pw) in PEOPLE.iter().chain([&RUBIN]) {
            su.batch_execute(&format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                ident(role),
                literal(pw)
            ))
            .await
            .expect("create role");
        }
        su.batch_execute(&format!("CREATE DATABASE {DB} OWNER {}", RUBIN.0))
            .await
            .expect("create database");
        let people: Vec<&str> = PEOPLE.iter().map(|(p, _)| *p).collect();
        let owner = cluster.client(0, RUBIN.0, DB).await;
        owner
            .batch_execute(super::shared_account::TRIGGER_SQL)
            .await
            .expect("installing the identity trigger");
        owner
            .batch_execute(&format!(
                "GRANT CREATE ON SCHEMA public TO {0}; GRANT SELECT ON datasets, change_log TO {0}",
                people.join(", ")
            ))
            .await
            .expect("grants");
        let secrets = su
            .query(
                "SELECT rolname::text, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL \
                 AND rolname <> 'postgres' ORDER BY 1",
                &[],
            )
            .await
            .expect("the verifiers");
        let userlist: String = secrets
            .iter()
            .map(|r| {
                format!(
                    "\"{}\" \"{}\"\n",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1)
                )
            })
            .collect();
        assert!(userlist.contains("SCRAM-SHA-256$") && !userlist.contains("-pw"));
        for i in 1..cluster.nodes.len() {
            cluster.wait_replayed(i).await;
        }
        let porter = spawn_pgporter(&ini(&cluster, extra), &userlist).await;
        Rubin { porter, cluster }
    }

    /// A libpq-style connection string for `person` through `via`.
    pub(crate) fn connstring(&self, person: &str, via: Via) -> String {
        let (port, db) = match via {
            Via::ReadWrite => (self.porter.port(), DB.to_string()),
            Via::ReadOnlyListener => (self.porter.readonly_port(), DB.to_string()),
            Via::ReadOnlyEntry => (self.porter.port(), format!("{DB}_ro")),
            Via::Shared => (self.porter.port(), format!("{DB}_shared")),
        };
        format!(
            "host=127.0.0.1 port={port} user={person} password={} dbname={db} sslmode=disable \
             connect_timeout=20",
            quote(password(person))
        )
    }

    /// A session of `person` through `via`.
    pub(crate) async fn connect(&self, person: &str, via: Via) -> Client {
        super::clients::connect(&self.connstring(person, via)).await
    }

    /// The admin console (as rubin, an admin user), rows of `cmd` as (column, value) maps.
    pub(crate) async fn admin(&self, cmd: &str) -> Vec<Vec<(String, Option<String>)>> {
        let cs = format!(
            "host=127.0.0.1 port={} user={} password={} dbname=pgbouncer sslmode=disable",
            self.porter.port(),
            RUBIN.0,
            RUBIN.1
        );
        let admin = super::clients::connect(&cs).await;
        let msgs = admin.simple_query(cmd).await.expect(cmd);
        msgs.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    r.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.name().to_string(), r.get(i).map(str::to_string)))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The audit log so far (flushed first).
    pub(crate) async fn audit(&self) -> String {
        self.porter.shared().audit.flush().await;
        std::fs::read_to_string(self.porter.dir().join("audit.log")).unwrap_or_default()
    }

    /// `(client_user, db_user, operation, name)` of change_log on node `i`, in order.
    pub(crate) async fn change_log(
        &self,
        i: usize,
    ) -> Vec<(Option<String>, String, String, String)> {
        self.cluster
            .client(i, RUBIN.0, DB)
            .await
            .query(
                "select client_user, db_user, operation, row_data->>'name' from change_log \
                 order by id",
                &[],
            )
            .await
            .expect("reading change_log")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }
}

pub(crate) fn password(person: &str) -> &'static str {
    PEOPLE
        .iter()
        .chain([&RUBIN])
        .find(|(p, _)| *p == person)
        .map(|(_, pw)| *pw)
        .unwrap_or_else(|| panic!("no such person {person}"))
}

fn ini(cluster: &ReplCluster, extra: &str) -> String {
    let hosts = vec!["127.0.0.1"; cluster.nodes.len()].join(",");
    let ports: Vec<String> = cluster.nodes.iter().map(|n| n.port.to_string()).collect();
    let at = format!("host={hosts} port={} dbname={DB}", ports.join(","));
    format!(
        "[databases]\n\
         {DB} = {at} target_session_attrs=read-write\n\
         {DB}_ro = {at} target_session_attrs=standby\n\
         {DB}_shared = {at} user={} password={} target_session_attrs=read-write\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = 0\n\
         readonly_listen_port = 0\n\
         unix_socket_dir =\n\
         metrics_listen_addr = 127.0.0.1:0\n\
         auth_type = scram-sha-256\n\
         auth_file = userlist.txt\n\
         admin_users = {}\n\
         pool_mode = session\n\
         default_pool_size = 6\n\
         query_wait_timeout = 30\n\
         health_check_period = 0.2\n\
         failover_wait_timeout = 20\n\
         server_connect_timeout = 3\n\
         audit_log = audit.log\n\
         audit_statements = write\n\
         {extra}\n",
        RUBIN.0, RUBIN.1, RUBIN.0
    )
}

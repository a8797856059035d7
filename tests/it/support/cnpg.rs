//! CloudNativePG's Pooler, reproduced on a private PostgreSQL 15: the cluster side as the
//! operator sets it up for a Pooler (TLS with a client CA, pg_hba.conf with `hostssl ... cert`
//! for `cnpg_pooler_pgbouncer` and SCRAM for people, the role and the SECURITY DEFINER
//! `public.user_search` behind `auth_query`), and pgporter started with the pgbouncer.ini,
//! pg_hba.conf and certificate files the Pooler's instance manager generates
//! (pkg/management/pgbouncer/config in cloudnative-pg) for a Pooler whose auth_user logs in
//! with a TLS certificate. Only what a test machine needs is adapted: the `/controller/...`
//! paths become a temp dir, `listen_addr = *` / `listen_port = 5432` become loopback and a
//! free port, and the `[databases]` host (the cluster's `-rw` Service on 5432) becomes
//! 127.0.0.1 and the private cluster's port.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::certs::Pki;
use super::pg::{literal, PgCluster};
use super::porter::{spawn_pgporter_with_files, Porter};
use super::HANG;

/// The role CloudNativePG creates for the Pooler's auth_query.
pub(crate) const AUTH_USER: &str = "cnpg_pooler_pgbouncer";
/// An application role, in no file: found through auth_query.
pub(crate) const APP: (&str, &str) = ("app", "app-secret");

/// What the operator's instance manager runs in the `postgres` database when a Pooler exists
/// (reconcilePgbouncerAuthUser): the role, its CONNECT, and the lookup function that only it
/// may execute.
const INSTALL: &str = "\
CREATE ROLE cnpg_pooler_pgbouncer WITH LOGIN;
GRANT CONNECT ON DATABASE postgres TO cnpg_pooler_pgbouncer;
CREATE OR REPLACE FUNCTION public.user_search(uname TEXT) \
RETURNS TABLE (usename name, passwd text) \
as 'SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename=$1;' \
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION public.user_search(text) FROM public;
GRANT EXECUTE ON FUNCTION public.user_search(text) TO cnpg_pooler_pgbouncer;
";

/// The cluster's pg_hba.conf as CloudNativePG writes it (its `local ... peer map=local` line is
/// `trust` here: the harness itself logs in over the socket).
const CLUSTER_HBA: &str = "\
local all all trust
hostssl postgres streaming_replica all cert
hostssl replication streaming_replica all cert
hostssl all cnpg_pooler_pgbouncer all cert
host all all all scram-sha-256
";

/// The Pooler's pg_hba.conf (auth_hba_file), as generated with no user rules.
const POOLER_HBA: &str = "
local pgbouncer pgbouncer peer


host all all 0.0.0.0/0 md5
host all all ::/0 md5
";

/// One Pooler instance in front of its own cluster.
pub(crate) struct Pooler {
    pub(crate) pg: &'static PgCluster,
    pub(crate) porter: Porter,
    /// The instance manager's `/controller/configs`.
    configs: tempfile::TempDir,
    /// The cluster's client CA (it signs `cnpg_pooler_pgbouncer`'s certificate).
    client_ca: Pki,
}

impl std::fmt::Debug for Pooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooler")
            .field("configs", &self.configs.path())
            .finish()
    }
}

/// The pgbouncer.ini the instance manager generates (parameters sorted by name, as it writes
/// them), for a cluster on `pg_port` and files under `configs`; `{dir}` is pgporter's temp dir
/// (the unix socket's directory, `/controller/run`).
pub(crate) fn pgbouncer_ini(configs: &Path, pg_port: u16, pool_mode: &str) -> String {
    let c = configs.display();
    format!(
        "
[databases]
* = host=127.0.0.1 port={pg_port}

[pgbouncer]
pool_mode = {pool_mode}
auth_user = cnpg_pooler_pgbouncer
auth_query = SELECT usename, passwd FROM public.user_search($1)
auth_dbname = postgres

admin_users = pgbouncer
auth_hba_file = {c}/pg_hba.conf
auth_type = hba
client_tls_ca_file = {c}/client-ca/ca.crt
client_tls_cert_file = {c}/client-tls/tls.crt
client_tls_key_file = {c}/client-tls/tls.key
client_tls_sslmode = prefer
ignore_startup_parameters = extra_float_digits,options
listen_addr = 127.0.0.1
listen_port = 0
log_stats = 0
server_tls_ca_file = {c}/server-tls/ca.crt
server_tls_cert_file = {c}/authUser/tls.crt
server_tls_key_file = {c}/authUser/tls.key
server_tls_sslmode = verify-ca
unix_socket_dir = {{dir}}
"
    )
}

impl Pooler {
    /// A private cluster set up as the operator sets it up, and pgporter on the generated files.
    pub(crate) async fn deploy() -> Pooler {
        let pg: &'static PgCluster = Box::leak(Box::new(PgCluster::start_private().await));
        let configs = tempfile::Builder::new()
            .prefix("pgporter-cnpg-")
            .tempdir()
            .expect("configs dir");
        let c = configs.path();
        for sub in ["server-tls", "client-tls", "client-ca", "authUser"] {
            std::fs::create_dir(c.join(sub)).expect("configs subdir");
        }
        // The cluster's client CA, and the certificate it issues for the auth_user.
        let client_ca = Pki::new(c, "cnpg-client");
        let auth_user = client_ca.client(AUTH_USER, "auth-user");
        // The cluster's server certificate and CA (the harness's): the Pooler serves clients
        // with it and checks PostgreSQL's against that CA (verify-ca).
        let pg_dir = pg.socket_dir();
        for (from, to) in [
            (pg.ca_file(), "server-tls/ca.crt"),
            (pg_dir.join("pg-server.crt"), "client-tls/tls.crt"),
            (pg_dir.join("pg-server.key"), "client-tls/tls.key"),
            (client_ca.ca_file().to_path_buf(), "client-ca/ca.crt"),
            (auth_user.cert.clone(), "authUser/tls.crt"),
            (auth_user.key.clone(), "authUser/tls.key"),
        ] {
            std::fs::copy(&from, c.join(to))
                .unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        }
        std::fs::write(c.join("pg_hba.conf"), POOLER_HBA).expect("pooler pg_hba.conf");
        configure_cluster(pg, client_ca.ca_file()).await;

        pg.superuser_client()
            .await
            .batch_execute(INSTALL)
            .await
            .expect("installing the Pooler's role and user_search");
        pg.create_role(APP.0, APP.1).await;
        pg.create_database(APP.0, APP.0).await;

        let ini = pgbouncer_ini(c, pg.port(), "session");
        let porter = spawn_pgporter_with_files(&ini, "", &[]).await;
        Pooler {
            pg,
            porter,
            configs,
            client_ca,
        }
    }

    pub(crate) fn configs(&self) -> &Path {
        self.configs.path()
    }

    /// A new certificate for the auth_user from the cluster's client CA (a renewal), as
    /// files to write over `authUser/`.
    pub(crate) fn renewed_auth_user_cert(&self) -> (PathBuf, PathBuf) {
        let leaf = self.client_ca.client(AUTH_USER, "auth-user-renewed");
        (leaf.cert, leaf.key)
    }

    /// libpq connection string through the Pooler's TCP listener.
    pub(crate) fn connstring(&self, user: &str, password: &str, db: &str, ssl: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} {ssl}",
            self.porter.port()
        )
    }

    /// `psql -XAt -c sql` with `env` set; its output whatever the outcome.
    pub(crate) async fn psql(&self, connstring: &str, sql: &str, env: &[(&str, &str)]) -> Output {
        super::psql::psql_with(&self.pg.bin("psql"), connstring, sql, env).await
    }

    /// The admin console as the instance manager reaches it: the unix socket, user
    /// `pgbouncer`, no password (same OS user), no TLS.
    pub(crate) async fn console(&self) -> Client {
        super::connect(&format!(
            "host={} port={} user=pgbouncer dbname=pgbouncer sslmode=disable",
            self.porter.dir().display(),
            self.porter.port()
        ))
        .await
    }
}

/// Column names and the rows of a console command.
pub(crate) async fn show(console: &Client, cmd: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let msgs = tokio::time::timeout(HANG, console.simple_query(cmd))
        .await
        .unwrap_or_else(|_| panic!("{cmd} hung"))
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                columns = d.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            _ => {}
        }
    }
    (columns, rows)
}

/// ssl on with the cluster's client CA (client certificates are verified), CloudNativePG's
/// pg_hba.conf, and a reload that has taken (a new session sees the CA).
async fn configure_cluster(pg: &PgCluster, client_ca: &Path) {
    let dir = pg.socket_dir();
    let ca = dir.join("cnpg-client-ca.pem");
    std::fs::copy(client_ca, &ca).expect("copying the client CA");
    let auto = dir.join("data/postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
    conf.push_str(&format!(
        "ssl_ca_file = {}\n",
        literal(&ca.display().to_string())
    ));
    std::fs::write(&auto, conf).expect("postgresql.auto.conf");
    std::fs::write(dir.join("data/pg_hba.conf"), CLUSTER_HBA).expect("pg_hba.conf");
    pg.pg_ctl(&["reload"]).await;
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let client = pg.superuser_client().await;
        let now = super::simple_value(&client, "SHOW ssl_ca_file").await;
        if now.as_deref() == Some(&*ca.display().to_string()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster never took ssl_ca_file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

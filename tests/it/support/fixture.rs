//! `Fixture`: one role (SCRAM password in PostgreSQL, plaintext in the userlist), one database
//! owned by it, and a pgporter in front of it.

use tokio_postgres::Client;

use super::pg::{cluster, PgCluster};
use super::porter::{spawn_pgporter, spawn_pgporter_with_files, Porter};

pub(crate) const PASSWORD: &str = "s3cret-pw";

#[derive(Debug)]
pub(crate) struct Fixture {
    pub(crate) cluster: &'static PgCluster,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) db: String,
    pub(crate) porter: Porter,
}

impl Fixture {
    /// A fresh role + database behind a pgporter with `default_pool_size = pool_size`.
    pub(crate) async fn new(pool_size: u32) -> Fixture {
        Fixture::with_settings(pool_size, "").await
    }

    /// As [`Fixture::new`], with extra `[pgbouncer]` lines appended (keys not set by [`ini`]).
    pub(crate) async fn with_settings(pool_size: u32, extra: &str) -> Fixture {
        Fixture::on_cluster(cluster().await, pool_size, extra).await
    }

    /// As [`Fixture::with_settings`], on a given cluster (e.g. a private one).
    pub(crate) async fn on_cluster(
        cluster: &'static PgCluster,
        pool_size: u32,
        extra: &str,
    ) -> Fixture {
        let user = cluster.unique_name("u");
        let db = cluster.unique_name("db");
        cluster.create_role(&user, PASSWORD).await;
        cluster.create_database(&db, &user).await;
        let ini = ini(&[(&db, cluster.port())], pool_size, extra);
        let porter = spawn_pgporter(&ini, &userlist(&[(&user, PASSWORD)])).await;
        Fixture {
            cluster,
            user,
            password: PASSWORD.to_string(),
            db,
            porter,
        }
    }

    /// A fresh role + database; `spec` sees their names (and the role's SCRAM verifier as
    /// PostgreSQL stored it) and says how pgporter is configured.
    pub(crate) async fn custom(spec: impl FnOnce(&Names) -> Spec) -> Fixture {
        let cluster = cluster().await;
        let user = cluster.unique_name("u");
        let db = cluster.unique_name("db");
        cluster.create_role(&user, PASSWORD).await;
        cluster.create_database(&db, &user).await;
        let row = cluster
            .superuser_client()
            .await
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&user],
            )
            .await
            .expect("reading the role's verifier");
        let names = Names {
            pg_ca: cluster.ca_file(),
            user: user.clone(),
            db: db.clone(),
            scram_secret: row.get(0),
        };
        let spec = spec(&names);
        let ini = ini(&[(&db, cluster.port())], spec.pool_size, &spec.extra);
        let userlist = spec
            .userlist
            .unwrap_or_else(|| userlist(&[(&user, PASSWORD)]));
        let porter = spawn_pgporter_with_files(&ini, &userlist, &spec.files).await;
        Fixture {
            cluster,
            user,
            password: PASSWORD.to_string(),
            db,
            porter,
        }
    }

    /// Through pgporter as the fixture's user.
    /// The `pool_mode` SHOW POOLS gives this fixture's pool (the fixture's user must be an
    /// admin).
    pub(crate) async fn shown_pool_mode(&self) -> Option<String> {
        let admin = self
            .porter
            .connstring(&self.user, &self.password, "pgbouncer");
        let admin = super::clients::connect(&admin).await;
        let rows = admin.simple_query("show pools").await.expect("show pools");
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r)
                if r.get("database") == Some(self.db.as_str()) =>
            {
                r.get("pool_mode").map(str::to_string)
            }
            _ => None,
        })
    }

    pub(crate) fn connstring(&self) -> String {
        self.porter.connstring(&self.user, &self.password, &self.db)
    }

    /// A client through pgporter, its connection driven by a spawned task.
    pub(crate) async fn connect(&self) -> Client {
        super::clients::connect(&self.connstring()).await
    }

    /// Straight to PostgreSQL as the fixture's user (unix socket, trust): for setup and
    /// for looking behind pgporter's back.
    pub(crate) async fn direct(&self) -> Client {
        self.cluster.local_client(&self.user, &self.db).await
    }

    /// Straight to PostgreSQL as the superuser.
    pub(crate) async fn superuser(&self) -> Client {
        self.cluster.superuser_client().await
    }
}

/// The names [`Fixture::custom`] made.
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) user: String,
    pub(crate) db: String,
    /// `SCRAM-SHA-256$...` as in pg_authid.
    pub(crate) scram_secret: String,
    /// The CA of PostgreSQL's server certificate.
    pub(crate) pg_ca: std::path::PathBuf,
}

/// How [`Fixture::custom`] configures pgporter.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) pool_size: u32,
    /// Extra `[pgbouncer]` lines.
    pub(crate) extra: String,
    /// userlist.txt text; `None` = the user with its plaintext password.
    pub(crate) userlist: Option<String>,
    /// Files written next to pgporter.ini.
    pub(crate) files: Vec<(String, String)>,
}

impl Spec {
    pub(crate) fn new(extra: impl Into<String>) -> Spec {
        Spec {
            pool_size: 2,
            extra: extra.into(),
            userlist: None,
            files: Vec::new(),
        }
    }
}

/// A test ini: databases as `(name, pg port)`, pointing at `dbname=name` on 127.0.0.1.
pub(crate) fn ini(databases: &[(&str, u16)], pool_size: u32, extra: &str) -> String {
    let mut s = String::from("[databases]\n");
    for (name, port) in databases {
        s.push_str(&format!(
            "{name} = host=127.0.0.1 port={port} dbname={name}\n"
        ));
    }
    s.push_str(&format!(
        "[pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = 0\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = userlist.txt\n\
         pool_mode = session\n\
         default_pool_size = {pool_size}\n\
         query_wait_timeout = 2\n\
         {extra}\n"
    ));
    s
}

/// userlist.txt text with plaintext secrets.
pub(crate) fn userlist(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(u, p)| {
            format!(
                "\"{}\" \"{}\"\n",
                u.replace('"', "\"\""),
                p.replace('"', "\"\"")
            )
        })
        .collect()
}

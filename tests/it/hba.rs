//! auth_type = hba: first matching line wins; no match and `reject` get PostgreSQL's wording.

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::psql::{psql_err, psql_ok};
use crate::support::{db_error, fixture, Fixture, Spec, HANG};
use crate::tls::{conn, Certs};

async fn refused(connstring: &str) -> tokio_postgres::Error {
    tokio::time::timeout(HANG, tokio_postgres::connect(connstring, NoTls))
        .await
        .expect("login hung")
        .err()
        .unwrap_or_else(|| panic!("login unexpectedly succeeded: {connstring}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_allows_and_rejects_by_ssl_user_database_and_address() {
    let certs = Certs::new();
    let fx = Fixture::custom(|n| Spec {
        userlist: Some(fixture::userlist(&[
            (&n.user, fixture::PASSWORD),
            ("other", "pw"),
            ("mallory", "pw"),
        ])),
        files: vec![(
            "hba.conf".into(),
            format!(
                "# pgporter test rules\n\
                 hostssl {db} all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl {db} {user} 127.0.0.1 255.255.255.255 md5\n\
                 host all mallory 127.0.0.0/8 reject\n\
                 host netdb all 10.0.0.0/8 trust\n\
                 host all all ::1/128 trust\n",
                db = n.db,
                user = n.user
            ),
        )],
        ..Spec::new(format!(
            "auth_type = hba\nauth_hba_file = hba.conf\n{}\
             [databases]\n\
             netdb = host=127.0.0.1 port=1 dbname=netdb\n\
             otherdb = host=127.0.0.1 port=1 dbname=otherdb\n",
            certs.client_tls("prefer")
        ))
    })
    .await;
    // Plain client, its own user: the hostnossl md5 line.
    fx.connect().await;
    // TLS client: the hostssl line (psql prefers TLS).
    assert_eq!(
        psql_ok(&conn(&fx, "sslmode=require"), "SELECT 1").await,
        "1"
    );

    // Another user in the clear matches no line (the hostnossl line names one user).
    let port = fx.porter.port();
    let err = refused(&fx.porter.connstring("other", "pw", &fx.db)).await;
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert_eq!(
        db.message(),
        format!(
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"other\", database \"{}\", no encryption",
            fx.db
        )
    );
    // ... but over TLS it reaches the hostssl line and fails on the password instead.
    let err = psql_err(
        &format!(
            "host=127.0.0.1 port={port} user=other password=pw dbname={} sslmode=require",
            fx.db
        ),
        "SELECT 1",
    )
    .await;
    assert!(
        err.contains("password authentication failed for user \"other\""),
        "{err}"
    );

    let err = refused(&fx.porter.connstring("mallory", "pw", &fx.db)).await;
    assert_eq!(
        db_error(&err).message(),
        format!(
            "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"mallory\", database \"{}\", no encryption",
            fx.db
        )
    );
    let err = psql_err(
        &format!(
            "host=127.0.0.1 port={port} user=mallory password=pw dbname=otherdb sslmode=require"
        ),
        "SELECT 1",
    )
    .await;
    assert!(
        err.contains("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"mallory\", database \"otherdb\", SSL encryption"),
        "{err}"
    );

    // The address does not match 10.0.0.0/8.
    let err = refused(&fx.porter.connstring(&fx.user, fixture::PASSWORD, "netdb")).await;
    assert!(
        db_error(&err)
            .message()
            .starts_with("no pg_hba.conf entry for host \"127.0.0.1\""),
        "{err:?}"
    );
    assert!(fx.porter.shared().stats.auth_failures_of("mallory") >= 2);
}

/// `local all all peer` (PostgreSQL's own default line): a unix-socket client is the OS user
/// it runs as (SO_PEERCRED), directly or through an auth_ident_file map; TCP clients need
/// another line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_on_the_unix_socket() {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let Some(me) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
    }) else {
        crate::support::skip::skip("hba::peer", "the test's uid has no /etc/passwd entry");
        return;
    };
    let cluster = crate::support::cluster().await;
    let (user, db) = cluster.owner_and_db("u", "db").await;
    let ini = format!(
        "[databases]\n{db} = host=127.0.0.1 port={port} dbname={db} user={user} password=pw\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir = {{dir}}\n\
         auth_type = hba\nauth_hba_file = hba.conf\nauth_ident_file = ident.conf\n\
         auth_file = userlist.txt\n",
        port = cluster.port()
    );
    let porter = crate::support::porter::spawn_pgporter_with_files(
        &ini,
        "",
        &[
            (
                "hba.conf".into(),
                "local all mapped peer map=people\nlocal all all peer\n".into(),
            ),
            ("ident.conf".into(), format!("people {me} mapped\n")),
        ],
    )
    .await;
    let sock = porter.dir().display().to_string();
    let unix = |u: &str| format!("host={sock} port={} user={u} dbname={db}", porter.port());
    // Our own OS user name, and the name the map gives it.
    for u in [me.as_str(), "mapped"] {
        let (c, conn) = tokio::time::timeout(HANG, tokio_postgres::connect(&unix(u), NoTls))
            .await
            .expect("login hung")
            .unwrap_or_else(|e| panic!("peer login as {u}: {e:?}"));
        tokio::spawn(conn);
        c.simple_query("SELECT 1").await.expect("query");
    }
    let err = refused(&unix("somebody_else")).await;
    assert_eq!(
        db_error(&err).code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    assert!(
        db_error(&err)
            .message()
            .contains("peer authentication failed"),
        "{err:?}"
    );
    // TCP: no line matches.
    let tcp = format!(
        "host=127.0.0.1 port={} user={me} password=x dbname={db}",
        porter.port()
    );
    assert_eq!(
        db_error(&refused(&tcp).await).code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
}

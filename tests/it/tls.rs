//! TLS toward clients (psql/libpq: sslmode, channel_binding, client certificates, direct TLS)
//! and toward PostgreSQL (which the harness runs with ssl = on).

use std::sync::Arc;

use bytes::BytesMut;
use pgporter::net::Stream;
use pgporter::protocol::FramedConn;
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use crate::support::certs::{Leaf, Pki};
use crate::support::psql::{psql_err, psql_ok};
use crate::support::{Fixture, Spec, HANG};

/// A CA and a pgporter server certificate in a temp dir that lives as long as this value.
pub(crate) struct Certs {
    _dir: tempfile::TempDir,
    pub(crate) pki: Pki,
    pub(crate) server: Leaf,
}

impl Certs {
    pub(crate) fn new() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("pgporter-pki-")
            .tempdir()
            .expect("pki dir");
        let pki = Pki::new(dir.path(), "porter");
        let server = pki.server("porter-server");
        Certs {
            _dir: dir,
            pki,
            server,
        }
    }

    /// `client_tls_*` lines for `mode`.
    pub(crate) fn client_tls(&self, mode: &str) -> String {
        format!(
            "client_tls_sslmode = {mode}\n\
             client_tls_cert_file = {}\n\
             client_tls_key_file = {}\n\
             client_tls_ca_file = {}\n",
            self.server.cert.display(),
            self.server.key.display(),
            self.pki.ca_file().display()
        )
    }
}

/// `server_tls_*` lines verifying PostgreSQL fully against its CA.
pub(crate) fn server_verify_full(pg_ca: &std::path::Path) -> String {
    format!(
        "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n",
        pg_ca.display()
    )
}

/// libpq connstring through pgporter with extra options.
pub(crate) fn conn(fx: &Fixture, options: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} {options}",
        fx.porter.port(),
        fx.user,
        fx.password,
        fx.db
    )
}

const SERVER_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_require_verify_full_and_channel_binding() {
    let certs = Certs::new();
    let fx = Fixture::custom(|names| {
        Spec::new(format!(
            "{}{}",
            certs.client_tls("require"),
            server_verify_full(&names.pg_ca)
        ))
    })
    .await;
    // pgporter reaches PostgreSQL over TLS, verified against the harness CA.
    assert_eq!(
        psql_ok(&conn(&fx, "sslmode=require"), SERVER_SSL).await,
        "t"
    );
    let ca = certs.pki.ca_file().display().to_string();
    assert_eq!(
        psql_ok(
            &conn(&fx, &format!("sslmode=verify-full sslrootcert={ca}")),
            "SELECT 1"
        )
        .await,
        "1"
    );
    assert_eq!(
        psql_ok(
            &conn(
                &fx,
                &format!("sslmode=verify-full sslrootcert={ca} channel_binding=require")
            ),
            "SELECT current_user"
        )
        .await,
        fx.user
    );
    // libpq itself refuses channel binding without TLS.
    let err = psql_err(
        &conn(&fx, "sslmode=disable channel_binding=require"),
        "SELECT 1",
    )
    .await;
    assert!(
        err.contains("SSL required") || err.contains("channel binding"),
        "{err}"
    );
}

/// SHOW CLIENTS and SHOW SERVERS name the TLS in use (`tls` column, PgBouncer's
/// `version/cipher/ECDH=group` form) and leave it empty for plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_name_the_tls_in_use() {
    let certs = Certs::new();
    let fx = Fixture::custom(|names| {
        Spec::new(format!(
            "{}{}admin_users = {}\n",
            certs.client_tls("prefer"),
            server_verify_full(&names.pg_ca),
            names.user
        ))
    })
    .await;
    // A server connection over TLS, idle in the pool afterwards.
    assert_eq!(
        psql_ok(&conn(&fx, "sslmode=require"), "SELECT 1").await,
        "1"
    );
    let admin = |ssl: &str| {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname=pgbouncer sslmode={ssl}",
            fx.porter.port(),
            fx.user,
            fx.password
        )
    };
    const TLS_COLUMN: usize = 17;
    let column = |out: &str, kind: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with(kind))
            .map(|l| l.split('|').nth(TLS_COLUMN).unwrap_or_default().to_string())
            .collect()
    };
    let servers = psql_ok(&admin("require"), "SHOW SERVERS").await;
    let tls = column(&servers, "S|");
    assert!(
        !tls.is_empty() && tls.iter().all(|t| t.starts_with("TLSv1.3/TLS_")),
        "{servers}"
    );
    let clients = psql_ok(&admin("require"), "SHOW CLIENTS").await;
    let tls = column(&clients, "C|");
    assert!(
        tls.iter().all(|t| t.starts_with("TLSv1.3/TLS_")),
        "{clients}"
    );
    let clients = psql_ok(&admin("disable"), "SHOW CLIENTS").await;
    assert_eq!(column(&clients, "C|"), vec![String::new()], "{clients}");
}

/// A pgporter requiring client TLS with `settings` too, and its SHOW CLIENTS (over TLS, as
/// the admin: that session's `tls` column shows what was negotiated).
async fn clients_over_tls(certs: &Certs, settings: &str) -> (Fixture, String) {
    let fx = Fixture::custom(|names| {
        Spec::new(format!(
            "{}{settings}admin_users = {}\n",
            certs.client_tls("require"),
            names.user
        ))
    })
    .await;
    let admin = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=pgbouncer sslmode=require",
        fx.porter.port(),
        fx.user,
        fx.password
    );
    let clients = psql_ok(&admin, "SHOW CLIENTS").await;
    (fx, clients)
}

/// An OpenSSL cipher string from a pgbouncer.ini works: with TLS 1.2 only, the one suite an
/// OpenSSL name picks is the one negotiated (SHOW CLIENTS `tls`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_cipher_strings_choose_the_suite() {
    let certs = Certs::new();
    let (fx, clients) = clients_over_tls(
        &certs,
        "client_tls_protocols = tlsv1.2\n\
         client_tls_ciphers = ECDHE-ECDSA-CHACHA20-POLY1305:!aNULL:!MD5\n\
         server_tls_ciphers = HIGH:!aNULL:!MD5\n",
    )
    .await;
    assert!(
        clients.contains("|TLSv1.2/TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
        "{clients}"
    );
    assert_eq!(
        psql_ok(&conn(&fx, "sslmode=require"), SERVER_SSL).await,
        "t"
    );
}

/// client_tls13_ciphers (PgBouncer 1.24+) and client_tls_ecdhcurve: the TLS 1.3 suite and the
/// group named are the ones negotiated, whatever libpq prefers (TLS_AES_256_GCM_SHA384,
/// X25519).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls13_cipher_list_and_an_ecdh_curve_choose_suite_and_group() {
    let certs = Certs::new();
    let (_fx, clients) = clients_over_tls(
        &certs,
        "client_tls13_ciphers = TLS_CHACHA20_POLY1305_SHA256\nclient_tls_ecdhcurve = P-384\n",
    )
    .await;
    assert!(
        clients.contains("|TLSv1.3/TLS_CHACHA20_POLY1305_SHA256/ECDH=secp384r1|"),
        "{clients}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_refused_under_require() {
    let certs = Certs::new();
    let fx = Fixture::custom(|_| Spec::new(certs.client_tls("require"))).await;
    let err = psql_err(&conn(&fx, "sslmode=disable"), "SELECT 1").await;
    assert!(err.contains("SSL required"), "{err}");
    assert_eq!(psql_ok(&conn(&fx, "sslmode=prefer"), "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_root_ca_and_bad_client_certificates_fail() {
    let certs = Certs::new();
    let other = Certs::new();
    let fx = Fixture::custom(|_| Spec::new(certs.client_tls("verify-ca"))).await;
    let good = certs.pki.client(&fx.user, "good-client");
    let forged = other.pki.client(&fx.user, "forged-client");
    let ca = certs.pki.ca_file().display().to_string();

    // The client does not trust pgporter's certificate.
    let err = psql_err(
        &conn(
            &fx,
            &format!(
                "sslmode=verify-full sslrootcert={}",
                other.pki.ca_file().display()
            ),
        ),
        "SELECT 1",
    )
    .await;
    assert!(err.contains("certificate verify failed"), "{err}");

    // verify-ca: no client certificate, or one from another CA, is refused in the handshake.
    // (libpq reports the TLS alert as an "SSL error"; no ErrorResponse can be sent mid-handshake.)
    let err = psql_err(
        &conn(&fx, &format!("sslmode=verify-full sslrootcert={ca}")),
        "SELECT 1",
    )
    .await;
    assert!(
        err.contains("SSL error") || err.contains("certificate"),
        "{err}"
    );
    let err = psql_err(
        &conn(
            &fx,
            &format!(
                "sslmode=verify-full sslrootcert={ca} sslcert={} sslkey={}",
                forged.cert.display(),
                forged.key.display()
            ),
        ),
        "SELECT 1",
    )
    .await;
    eprintln!("forged client certificate -> {err}");
    assert!(
        err.contains("SSL error") || err.contains("certificate"),
        "{err}"
    );

    // A certificate from the right CA works (then the password too).
    let ok = psql_ok(
        &conn(
            &fx,
            &format!(
                "sslmode=verify-full sslrootcert={ca} sslcert={} sslkey={}",
                good.cert.display(),
                good.key.display()
            ),
        ),
        "SELECT 1",
    )
    .await;
    assert_eq!(ok, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_auth_uses_the_common_name() {
    let certs = Certs::new();
    let fx = Fixture::custom(|_| {
        Spec::new(format!(
            "{}auth_type = cert\n",
            certs.client_tls("verify-full")
        ))
    })
    .await;
    let ca = certs.pki.ca_file().display().to_string();
    let mine = certs.pki.client(&fx.user, "mine");
    let theirs = certs.pki.client("somebody_else", "theirs");
    let with = |leaf: &Leaf| {
        // No password: the certificate is the credential.
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=verify-full sslrootcert={ca} \
             sslcert={} sslkey={}",
            fx.porter.port(),
            fx.user,
            fx.db,
            leaf.cert.display(),
            leaf.key.display()
        )
    };
    assert_eq!(psql_ok(&with(&mine), "SELECT current_user").await, fx.user);
    let err = psql_err(&with(&theirs), "SELECT 1").await;
    assert!(
        err.contains(&format!(
            "certificate authentication failed for user \"{}\"",
            fx.user
        )),
        "{err}"
    );
    assert_eq!(fx.porter.shared().stats.auth_failures_of(&fx.user), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_cert_line_with_ident_map() {
    let certs = Certs::new();
    let fx = Fixture::custom(|n| Spec {
        files: vec![
            (
                "hba.conf".into(),
                "hostssl all all 127.0.0.1/32 cert map=laptops\n".into(),
            ),
            (
                "ident.conf".into(),
                format!("laptops alice-laptop {}\n", n.user),
            ),
        ],
        ..Spec::new(format!(
            "auth_type = hba\nauth_hba_file = hba.conf\nauth_ident_file = ident.conf\n{}",
            certs.client_tls("require")
        ))
    })
    .await;
    let ca = certs.pki.ca_file().display().to_string();
    let with = |leaf: &Leaf| {
        format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=verify-full sslrootcert={ca} \
             sslcert={} sslkey={}",
            fx.porter.port(),
            fx.user,
            fx.db,
            leaf.cert.display(),
            leaf.key.display()
        )
    };
    let laptop = certs.pki.client("alice-laptop", "laptop");
    assert_eq!(
        psql_ok(&with(&laptop), "SELECT current_user").await,
        fx.user
    );
    // With a map, the user's own name as CN is not enough.
    let own = certs.pki.client(&fx.user, "own");
    let err = psql_err(&with(&own), "SELECT 1").await;
    assert!(err.contains("certificate authentication failed"), "{err}");
    // No certificate at all.
    let err = psql_err(
        &format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=require",
            fx.porter.port(),
            fx.user,
            fx.db
        ),
        "SELECT 1",
    )
    .await;
    assert!(
        err.contains("connection requires a valid client certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_verify_full_with_wrong_ca_fails_clearly() {
    let certs = Certs::new();
    let fx = Fixture::custom(|_| {
        Spec::new(format!(
            "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n",
            certs.pki.ca_file().display()
        ))
    })
    .await;
    let err = psql_err(&conn(&fx, "sslmode=disable"), "SELECT 1").await;
    assert!(
        err.contains("TLS handshake with the server failed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_disable_stays_plaintext() {
    let fx = Fixture::custom(|_| Spec::new("server_tls_sslmode = disable\n")).await;
    assert_eq!(
        psql_ok(&conn(&fx, "sslmode=disable"), SERVER_SSL).await,
        "f"
    );
}

/// RELOAD (SIGHUP) reads the TLS files again: a certificate renewed in place (as cert-manager
/// and CloudNativePG renew it) is served to the next client, channel binding included, and a
/// changed server_tls_sslmode applies to new server connections. A TLS file that does not load
/// refuses the reload and the running certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_renewed_certificates_and_server_tls_settings() {
    let certs = Certs::new();
    let fx = Fixture::custom(|_| {
        Spec::new(format!(
            "{}server_tls_sslmode = disable\n",
            certs.client_tls("require")
        ))
    })
    .await;
    let renewed_dir = tempfile::tempdir().expect("tempdir");
    let renewed = Pki::new(renewed_dir.path(), "renewed");
    let leaf = renewed.server("porter-renewed");
    let verified_by = |pki: &Pki| {
        conn(
            &fx,
            &format!(
                "sslmode=verify-full sslrootcert={} channel_binding=require",
                pki.ca_file().display()
            ),
        )
    };
    assert_eq!(psql_ok(&verified_by(&certs.pki), SERVER_SSL).await, "f");
    let err = psql_err(&verified_by(&renewed), "SELECT 1").await;
    assert!(err.contains("certificate verify failed"), "{err}");

    // Renew in place and switch the server side to TLS, then reload.
    std::fs::copy(&leaf.cert, &certs.server.cert).expect("renew the certificate");
    std::fs::copy(&leaf.key, &certs.server.key).expect("renew the key");
    (fx.porter)
        .reload_edited(|ini| {
            ini.replace(
                "server_tls_sslmode = disable\n",
                "server_tls_sslmode = require\n",
            )
        })
        .await;
    let stats = &fx.porter.shared().stats;
    let reloads = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(psql_ok(&verified_by(&renewed), SERVER_SSL).await, "t");
    let err = psql_err(&verified_by(&certs.pki), "SELECT 1").await;
    assert!(err.contains("certificate verify failed"), "{err}");

    // A broken certificate file: the reload is refused, the renewed certificate stays.
    std::fs::write(&certs.server.cert, "not a certificate\n").expect("break the file");
    let failed_before = reloads(&stats.reloads_failed);
    fx.porter.control(pgporter::Control::Reload);
    crate::ops::eventually("reload refused", || async {
        reloads(&stats.reloads_failed) > failed_before
    })
    .await;
    assert_eq!(psql_ok(&verified_by(&renewed), "SELECT 1").await, "1");
}

/// A TLS client trusting `ca`, offering ALPN "postgresql".
fn tls_client(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut config = tls_client_config(ca);
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn startup(conn: &mut FramedConn<Stream>, user: &str, db: &str) -> Vec<String> {
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", user), ("database", db)], &mut buf).expect("encode");
    conn.queue(&buf);
    conn.flush().await.expect("sending startup");
    let msg = conn.read_message(1 << 16).await.expect("auth request");
    assert_eq!(msg.tag, b'R');
    assert_eq!(&msg.body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    msg.body[4..]
        .split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_and_channel_binding_downgrade() {
    let certs = Certs::new();
    let fx = Fixture::custom(|_| Spec::new(certs.client_tls("require"))).await;
    let connector = tls_client(certs.pki.ca_file());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // Direct TLS (PostgreSQL 17's sslnegotiation=direct): TLS first, ALPN "postgresql".
    let tcp = TcpStream::connect(fx.porter.addr()).await.unwrap();
    let tls = tokio::time::timeout(HANG, connector.connect(name.clone(), tcp))
        .await
        .expect("direct TLS hung")
        .expect("direct TLS handshake");
    let mut conn = FramedConn::new(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))));
    let mechanisms = startup(&mut conn, &fx.user, &fx.db).await;
    assert_eq!(mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);

    // A client claiming "y" (supports binding, thinks we do not) while PLUS was offered: a
    // downgrade, refused.
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", b"y,,n=,r=abcdefgh", &mut buf).unwrap();
    conn.queue(&buf);
    conn.flush().await.unwrap();
    let msg = conn.read_message(1 << 16).await.expect("error response");
    assert_eq!(msg.tag, b'E');
    let text = String::from_utf8_lossy(&msg.body).into_owned();
    assert!(text.contains("channel binding negotiation error"), "{text}");

    // Direct TLS without ALPN is dropped.
    let no_alpn = tls_client_config(certs.pki.ca_file());
    let tcp = TcpStream::connect(fx.porter.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(no_alpn))
        .connect(name, tcp)
        .await
        .expect("handshake completes before the ALPN check");
    let mut conn = FramedConn::new(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))));
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", fx.user.as_str())], &mut buf).unwrap();
    conn.queue(&buf);
    let _ = conn.flush().await;
    let read = tokio::time::timeout(HANG, conn.read_message(1 << 16))
        .await
        .expect("no-ALPN connection hung");
    match read {
        Err(_) => {}
        Ok(m) => assert_eq!(m.tag, b'E', "expected the connection to be refused"),
    }
}

pub(crate) fn tls_client_config(ca: &std::path::Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("reading CA");
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA pem")).expect("adding CA");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[test]
fn example_tls_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pgporter-tls.ini");
    let config = pgporter::config::load(&path).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.hba.len(), 4);
    assert!(config.userlist.values().all(|s| s.plaintext().is_none()));
}

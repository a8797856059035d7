use super::*;
use crate::auth::Secret;
use postgres_protocol::authentication::sasl::{ChannelBinding as ClientCb, ScramSha256};

/// RFC 7677 §3: user "user", password "pencil".
const RFC_SECRET: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
const RFC_CLIENT_KEY: &str = "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos=";

fn rfc_secret() -> ScramSecret {
    Secret::parse(RFC_SECRET, verifier::DEFAULT_ITERATIONS)
        .unwrap()
        .scram()
        .unwrap()
        .clone()
}

fn rfc_server_after_first() -> ScramServer {
    let mut server = ScramServer::with_server_nonce(rfc_secret(), RFC_SERVER_NONCE);
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    server
}

fn secret_for(password: &str) -> ScramSecret {
    let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
    Secret::parse(&text, verifier::DEFAULT_ITERATIONS)
        .unwrap()
        .scram()
        .unwrap()
        .clone()
}

/// Run a full exchange between `server` and a postgres-protocol client.
fn exchange(server: &mut ScramServer, password: &str, cb: ClientCb) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), cb);
    let server_first = server.client_first(client.message())?;
    client.update(&server_first).unwrap();
    let server_final = server.client_final(client.message())?;
    client
        .finish(&server_final)
        .expect("client accepts server signature");
    Ok(())
}

fn malformed<T: std::fmt::Debug>(r: Result<T, AuthError>) -> &'static str {
    match r {
        Err(AuthError::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn plain_passwords_are_checked_against_the_verifier() {
    let key = verify_plain(&rfc_secret(), b"pencil").expect("pencil matches");
    assert_eq!(STANDARD.encode(key), RFC_CLIENT_KEY);
    assert_eq!(verify_plain(&rfc_secret(), b"pencil "), None);
    assert_eq!(verify_plain(&rfc_secret(), b""), None);
    // SASLprep as PostgreSQL: a non-ASCII space maps to a space.
    let secret = secret_for("pen cil");
    assert!(verify_plain(&secret, "pen\u{00A0}cil".as_bytes()).is_some());
}

#[test]
fn rfc7677_vector() {
    let mut server = ScramServer::with_server_nonce(rfc_secret(), RFC_SERVER_NONCE);
    assert_eq!(server.client_key(), None);
    let first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(std::str::from_utf8(&first).unwrap(), RFC_SERVER_FIRST);
    let fin = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(std::str::from_utf8(&fin).unwrap(), RFC_SERVER_FINAL);
    assert_eq!(
        server.client_key().map(|k| STANDARD.encode(k)).as_deref(),
        Some(RFC_CLIENT_KEY)
    );
    // Finished: nothing more is accepted, the key stays available.
    assert_eq!(
        malformed(server.client_final(RFC_CLIENT_FINAL.as_bytes())),
        "unexpected message"
    );
    assert!(server.client_key().is_some());
}

#[test]
fn rfc7677_wrong_proof_fails() {
    let mut server = rfc_server_after_first();
    let bad = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(server.client_final(bad.as_bytes()), Err(AuthError::Failed));
    assert_eq!(server.client_key(), None);
}

#[test]
fn exchange_with_postgres_protocol_client() {
    let secret = secret_for("hunter2");
    for cb in [ClientCb::unsupported(), ClientCb::unrequested()] {
        let mut server = ScramServer::new(secret.clone());
        assert_eq!(exchange(&mut server, "hunter2", cb), Ok(()));
        assert!(server.client_key().is_some());
    }
}

#[test]
fn exchange_with_plaintext_secret() {
    let secret = Secret::parse("correct horse", verifier::DEFAULT_ITERATIONS).unwrap();
    let mut server = ScramServer::new(secret.scram().unwrap().clone());
    assert_eq!(
        exchange(&mut server, "correct horse", ClientCb::unsupported()),
        Ok(())
    );
}

#[test]
fn client_key_matches_stored_key() {
    let secret = secret_for("pw");
    let mut server = ScramServer::new(secret.clone());
    exchange(&mut server, "pw", ClientCb::unsupported()).unwrap();
    let key = server.client_key().unwrap();
    assert_eq!(<[u8; 32]>::from(Sha256::digest(key)), secret.stored_key);
}

#[test]
fn wrong_password_fails() {
    let mut server = ScramServer::new(secret_for("hunter2"));
    assert_eq!(
        exchange(&mut server, "hunter3", ClientCb::unsupported()),
        Err(AuthError::Failed)
    );
    assert_eq!(server.client_key(), None);
    assert_eq!(
        malformed(server.client_first(b"n,,n=,r=x")),
        "unexpected message"
    );
}

#[test]
fn server_nonce_is_random_and_prefixed_by_client_nonce() {
    let first =
        |s: &mut ScramServer| String::from_utf8(s.client_first(b"n,,n=,r=abc").unwrap()).unwrap();
    let a = first(&mut ScramServer::new(secret_for("x")));
    let b = first(&mut ScramServer::new(secret_for("x")));
    assert!(a.starts_with("r=abc"));
    assert_ne!(a, b);
    let nonce = a.split(',').next().unwrap();
    assert_eq!(
        STANDARD.decode(&nonce[5..]).unwrap().len(),
        SERVER_NONCE_LEN
    );
}

#[test]
fn mock_always_fails_with_stable_salt() {
    let salt_of = |user: &str, key: &[u8]| {
        let first = ScramServer::mock(user, key, 4096)
            .client_first(b"n,,n=,r=abc")
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(first.ends_with(",i=4096"), "{first}");
        first.split(',').nth(1).unwrap().to_owned()
    };
    assert_eq!(salt_of("ghost", b"k1"), salt_of("ghost", b"k1"));
    assert_ne!(salt_of("ghost", b"k1"), salt_of("phantom", b"k1"));
    assert_ne!(salt_of("ghost", b"k1"), salt_of("ghost", b"k2"));
    let salt = salt_of("ghost", b"k1");
    assert_eq!(
        STANDARD.decode(&salt[2..]).unwrap().len(),
        verifier::SALT_LEN
    );

    for password in ["", "anything", "hunter2"] {
        let mut server = ScramServer::mock("ghost", b"k1", 4096);
        assert_eq!(
            exchange(&mut server, password, ClientCb::unsupported()),
            Err(AuthError::Failed)
        );
        assert_eq!(server.client_key(), None);
    }
    // Malformed input is still reported as such.
    let mut server = ScramServer::mock("ghost", b"k1", 4096);
    server.client_first(b"n,,n=,r=abc").unwrap();
    assert_eq!(malformed(server.client_final(b"garbage")), "missing proof");
}

/// A mock exchange announces the count it is given (scram_iterations), as a verifier built
/// with it would.
#[test]
fn mock_announces_the_configured_iterations() {
    let first = ScramServer::mock("ghost", b"k1", 1000)
        .client_first(b"n,,n=,r=abc")
        .unwrap();
    assert!(first.ends_with(b",i=1000"), "{first:?}");
}

#[test]
fn channel_binding_requests_rejected() {
    let mut server = ScramServer::new(secret_for("pw"));
    let cb = ClientCb::tls_server_end_point(vec![1, 2, 3]);
    assert_eq!(
        malformed(exchange(&mut server, "pw", cb)),
        "channel binding not supported"
    );
}

#[test]
fn malformed_client_first() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "invalid gs2 header"),
        (b"garbage", "invalid gs2 header"),
        (b"n,", "invalid gs2 header"),
        (b"x,,n=,r=abc", "invalid channel binding flag"),
        (
            b"p=tls-server-end-point,,n=,r=abc",
            "channel binding not supported",
        ),
        (b"n,a=bob,n=,r=abc", "authorization identity not supported"),
        (b"n,bob,n=,r=abc", "invalid gs2 header"),
        (b"n,,m=ext,n=,r=abc", "mandatory extensions not supported"),
        (b"n,,r=abc", "expected username attribute"),
        (b"n,,n=", "expected nonce attribute"),
        (b"n,,n=,x=abc", "expected nonce attribute"),
        (b"n,,n=,r=", "invalid nonce"),
        (b"n,,n=,r=ab c", "invalid nonce"),
        (b"n,,n=,r=abc,", "invalid attribute"),
        (b"n,,n=,r=abc,garbage", "invalid attribute"),
        (b"n,,n=,r=abc\0", "message contains a NUL byte"),
        (b"n,,n=,r=\xff", "message is not valid UTF-8"),
    ];
    for (msg, reason) in cases {
        let mut server = ScramServer::new(secret_for("pw"));
        assert_eq!(
            malformed(server.client_first(msg)),
            *reason,
            "{}",
            String::from_utf8_lossy(msg)
        );
    }
    let long = format!("n,,n=,r={}", "a".repeat(MAX_MESSAGE_LEN));
    assert_eq!(
        malformed(ScramServer::new(secret_for("pw")).client_first(long.as_bytes())),
        "message too long"
    );
}

#[test]
fn accepted_client_first_variants() {
    for msg in [
        "n,,n=,r=abc",
        "y,,n=,r=abc",
        "n,a=,n=user,r=abc",
        "n,,n=some=2Cone,r=abc,x=extension",
    ] {
        let mut server = ScramServer::new(secret_for("pw"));
        assert!(server.client_first(msg.as_bytes()).is_ok(), "{msg}");
    }
}

#[test]
fn malformed_client_final() {
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cases = [
        (String::new(), "missing proof"),
        ("garbage".to_owned(), "missing proof"),
        (format!("c=biws,r={nonce}"), "missing proof"),
        (format!("c=biws,r={nonce},p="), "invalid proof"),
        (format!("c=biws,r={nonce},p=AAAA"), "invalid proof"),
        (format!("c=biws,r={nonce},p=!!!"), "invalid proof"),
        (format!("c=biws,r={nonce}X,{proof}"), "nonce mismatch"),
        (
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,{proof}"),
            "nonce mismatch",
        ),
        (
            format!("c=eSws,r={nonce},{proof}"),
            "channel binding mismatch",
        ),
        (format!("c=,r={nonce},{proof}"), "channel binding mismatch"),
        (
            format!("r={nonce},{proof}"),
            "expected channel binding attribute",
        ),
        (format!("c=biws,{proof}"), "expected nonce attribute"),
        (format!("c=biws,r={nonce},{proof},x=1"), "missing proof"),
        (
            format!("c=biws,r={nonce},{proof},{proof}"),
            "proof must be the last attribute",
        ),
        (
            format!("c=biws,r={nonce},junk,{proof}"),
            "invalid attribute",
        ),
    ];
    for (msg, reason) in cases {
        let mut server = rfc_server_after_first();
        assert_eq!(
            malformed(server.client_final(msg.as_bytes())),
            reason,
            "{msg}"
        );
        assert_eq!(server.client_key(), None);
    }
    // Extensions before the proof are skipped but covered by the signature, so they fail.
    let mut server = rfc_server_after_first();
    let msg = format!("c=biws,r={nonce},x=1,{proof}");
    assert_eq!(server.client_final(msg.as_bytes()), Err(AuthError::Failed));
}

#[test]
fn channel_binding_flag_must_match_gs2_header() {
    // Client said `y,,` in client-first; `c=biws` (for `n,,`) must be rejected and vice versa.
    let mut server = ScramServer::with_server_nonce(rfc_secret(), RFC_SERVER_NONCE);
    server
        .client_first(RFC_CLIENT_FIRST.replacen('n', "y", 1).as_bytes())
        .unwrap();
    assert_eq!(
        malformed(server.client_final(RFC_CLIENT_FINAL.as_bytes())),
        "channel binding mismatch"
    );
}

#[test]
fn out_of_order() {
    let mut server = ScramServer::new(secret_for("pw"));
    assert_eq!(
        malformed(server.client_final(RFC_CLIENT_FINAL.as_bytes())),
        "unexpected message"
    );
    assert_eq!(
        malformed(server.client_first(b"n,,n=,r=abc")),
        "unexpected message"
    );

    let mut server = ScramServer::new(secret_for("pw"));
    server.client_first(b"n,,n=,r=abc").unwrap();
    assert_eq!(
        malformed(server.client_first(b"n,,n=,r=abc")),
        "unexpected message"
    );
    assert_eq!(
        malformed(server.client_final(b"c=biws,r=abc,p=AAAA")),
        "unexpected message"
    );
}

#[test]
fn debug_hides_secrets() {
    let mut server = rfc_server_after_first();
    server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    let dbg = format!("{server:?}");
    assert!(dbg.contains("Succeeded"), "{dbg}");
    assert!(!dbg.contains("W22Z") && !dbg.contains("rOpr"), "{dbg}");
}

#[test]
fn channel_binding_plus() {
    let end_point: std::sync::Arc<[u8]> = std::sync::Arc::from(&[9u8; 32][..]);
    let plus = || ScramServer::new(secret_for("pw")).with_channel_binding(Some(end_point.clone()));
    assert_eq!(plus().mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    assert_eq!(
        ScramServer::new(secret_for("pw")).mechanisms(),
        [SCRAM_SHA_256]
    );

    // A real exchange bound to the same end point succeeds.
    let mut server = plus();
    server
        .select_mechanism(SCRAM_SHA_256_PLUS.as_bytes())
        .unwrap();
    exchange(
        &mut server,
        "pw",
        ClientCb::tls_server_end_point(end_point.to_vec()),
    )
    .unwrap();

    // Bound to another certificate (a man in the middle): refused.
    let mut server = plus();
    server
        .select_mechanism(SCRAM_SHA_256_PLUS.as_bytes())
        .unwrap();
    assert_eq!(
        malformed(exchange(
            &mut server,
            "pw",
            ClientCb::tls_server_end_point(vec![1; 32])
        )),
        "channel binding mismatch"
    );

    // Downgrades.
    let mut server = plus();
    server.select_mechanism(SCRAM_SHA_256.as_bytes()).unwrap();
    assert_eq!(
        malformed(server.client_first(b"y,,n=,r=abc")),
        "channel binding negotiation error"
    );
    let mut server = plus();
    server
        .select_mechanism(SCRAM_SHA_256_PLUS.as_bytes())
        .unwrap();
    assert_eq!(
        malformed(server.client_first(b"n,,n=,r=abc")),
        "SCRAM-SHA-256-PLUS selected without channel binding"
    );
    let mut server = plus();
    server.select_mechanism(SCRAM_SHA_256.as_bytes()).unwrap();
    assert_eq!(
        malformed(server.client_first(b"p=tls-server-end-point,,n=,r=abc")),
        "channel binding not supported"
    );
    // PLUS cannot be chosen when it was not offered; "n" without PLUS is fine.
    let mut plain = ScramServer::new(secret_for("pw"));
    assert!(plain
        .select_mechanism(SCRAM_SHA_256_PLUS.as_bytes())
        .is_err());
    let mut server = plus();
    server.select_mechanism(SCRAM_SHA_256.as_bytes()).unwrap();
    exchange(&mut server, "pw", ClientCb::unsupported()).unwrap();
}

//! The SCRAM-SHA-256 server exchange against a postgres-protocol client. The verifier uses one
//! PBKDF2 iteration so that the client's key derivation does not drown the server's work (the
//! server never runs PBKDF2: it checks the proof with StoredKey and signs with ServerKey).

use criterion::{black_box, Criterion};
use hmac::{Hmac, Mac};
use pgporter::auth::scram::ScramServer;
use pgporter::auth::ScramSecret;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use sha2::{Digest, Sha256};

const PASSWORD: &[u8] = b"bench-password";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A verifier with `iterations == 1`: SaltedPassword = HMAC(password, salt || INT(1)).
fn secret() -> ScramSecret {
    let salt = b"0123456789abcdef".to_vec();
    let mut first = salt.clone();
    first.extend_from_slice(&1u32.to_be_bytes());
    let salted = hmac(PASSWORD, &first);
    let client_key = hmac(&salted, b"Client Key");
    ScramSecret {
        iterations: 1,
        salt,
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, b"Server Key"),
    }
}

fn exchange(secret: &ScramSecret) {
    let mut server = ScramServer::new(secret.clone());
    let mut client = ScramSha256::new(PASSWORD, ChannelBinding::unsupported());
    let first = server.client_first(client.message()).expect("client-first");
    client.update(&first).expect("server-first");
    let fin = server
        .client_final(client.message())
        .expect("proof accepted");
    client.finish(&fin).expect("server signature");
    black_box(server.client_key());
}

pub(crate) fn bench(c: &mut Criterion) {
    let secret = secret();
    exchange(&secret); // fail fast if the verifier is wrong
    let mut g = c.benchmark_group("scram");
    g.bench_function("server_exchange_with_client_i1", |b| {
        b.iter(|| exchange(black_box(&secret)))
    });
    g.finish();
}

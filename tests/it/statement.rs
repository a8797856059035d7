//! Statement pool mode, as PgBouncer's: transaction mode in which a request that leaves a
//! transaction open (a transaction block) ends the session with PgBouncer's FATAL 08P01
//! "transaction blocks not allowed in statement pooling mode", and its server connection is
//! closed (PostgreSQL rolls the transaction back).

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use crate::support::cmd::e2e_script;
use crate::support::psql::psql_err;
use crate::support::skip::python;
use crate::support::Fixture;
use crate::transaction::value;

const REFUSED: &str = "transaction blocks not allowed in statement pooling mode";

/// One server connection, statement mode; the fixture's user is an admin too (SHOW POOLS).
async fn fixture() -> Fixture {
    crate::transaction::one_connection("statement", "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_share_a_connection_and_transaction_blocks_end_the_session() {
    let fx = fixture().await;
    let (a, b) = (fx.connect().await, fx.connect().await);
    let pid = value(&a, "select pg_backend_pid()").await;
    assert_eq!(value(&b, "select pg_backend_pid()").await, pid);
    // A multi-statement Query is one implicit transaction, and so is an extended-protocol
    // batch (tokio-postgres: a named statement, renamed and shared by pgporter).
    let rows = a.simple_query("begin; select 1; commit").await.unwrap();
    assert!(rows
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("1"))));
    let sum: i32 = b
        .query_one("select $1::int4 + 1", &[&41i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 42);
    assert_eq!(value(&a, "select pg_backend_pid()").await, pid);

    // A transaction block: the session ends, its server connection is closed.
    let err = a.simple_query("begin").await.expect_err("refused");
    let db = crate::support::db_error(&err);
    assert_eq!(db.code(), &SqlState::PROTOCOL_VIOLATION);
    assert_eq!(db.message(), REFUSED);
    assert_eq!(format!("{:?}", db.severity()), "\"FATAL\"");
    assert!(a.simple_query("select 1").await.is_err(), "session ended");
    // The other client goes on, on a new connection with no transaction open.
    let pid2 = value(&b, "select pg_backend_pid()").await;
    assert_ne!(pid2, pid);
    assert_eq!(value(&b, "select now() = statement_timestamp()").await, "t");
    let mut c = fx.connect().await;
    let Err(err) = c.transaction().await else {
        panic!("a transaction block was allowed")
    };
    assert_eq!(crate::support::db_error(&err).message(), REFUSED);

    // psql says what it says through PgBouncer 1.18.
    let stderr = psql_err(&fx.connstring(), "begin").await;
    assert!(stderr.contains(&format!("FATAL:  {REFUSED}")), "{stderr}");

    assert_eq!(fx.shown_pool_mode().await.as_deref(), Some("statement"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_in_statement_mode() {
    let Some(python) = python("statement mode with Python drivers") else {
        return;
    };
    let fx = fixture().await;
    e2e_script(&python, "statement_mode.py", &fx, "statement mode: ok").await;
}

/// A client that pipelines a transaction block behind another request gets that request's
/// whole answer before the FATAL, however the two answers were read: here pgporter reads
/// them together (the client reads nothing until both are on pgporter's side), and the
/// earlier answer's tail (its last rows, CommandComplete, ReadyForQuery) used to be dropped
/// with BEGIN's. (PgBouncer 1.18, checked live, cuts the rows short here and closes without
/// the FATAL; it passes the first answer on only when it read it apart from BEGIN's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_before_a_refused_transaction_block_are_passed_on() {
    use crate::support::raw::RawClient;
    const ROWS: usize = 20_000;
    let fx = fixture().await;
    let mut c = RawClient::login(fx.porter.addr(), &fx.user, &fx.password, &fx.db).await;
    let sql = format!("select repeat('x', 200) from generate_series(1, {ROWS})\0");
    c.send_all(&[(b'Q', sql.as_bytes()), (b'Q', b"begin\0")])
        .await;
    // Both answers wait in the socket buffers, then come to pgporter in large reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut msgs = Vec::new();
    while let Some(m) = c.read_msg().await {
        msgs.push(m);
    }
    let rows = msgs.iter().filter(|m| m.tag == b'D').count();
    assert_eq!(rows, ROWS, "the first answer is whole");
    let tail: Vec<u8> = msgs
        .iter()
        .skip_while(|m| m.tag != b'C')
        .map(|m| m.tag)
        .collect();
    assert_eq!(
        tail, b"CZE",
        "SELECT's end, then the FATAL; nothing of BEGIN's answer"
    );
    let last = msgs.last().unwrap();
    assert_eq!(last.sqlstate().as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&last.body).contains(REFUSED));
}

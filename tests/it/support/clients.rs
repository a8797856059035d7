//! tokio-postgres helpers.

use futures_util::stream::poll_fn;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The first column of the first row of a simple query (None: no row, or NULL).
pub(crate) async fn simple_value(client: &Client, sql: &str) -> Option<String> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
        _ => None,
    })?
}

/// Connect (bounded by [`super::HANG`]) and drive the connection on a spawned task.
pub(crate) async fn connect(connstring: &str) -> Client {
    let (client, conn) =
        tokio::time::timeout(super::HANG, tokio_postgres::connect(connstring, NoTls))
            .await
            .unwrap_or_else(|_| panic!("connect hung: {connstring}"))
            .unwrap_or_else(|e| panic!("connect failed: {e:?} ({connstring})"));
    tokio::spawn(conn);
    client
}

/// Connect, and forward the connection's notices and notifications to a channel.
pub(crate) async fn connect_with_messages(
    connstring: &str,
) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut conn) =
        tokio::time::timeout(super::HANG, tokio_postgres::connect(connstring, NoTls))
            .await
            .unwrap_or_else(|_| panic!("connect hung: {connstring}"))
            .unwrap_or_else(|e| panic!("connect failed: {e:?} ({connstring})"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = messages.next().await {
            if tx.send(msg).is_err() {
                // Keep driving the connection even if nobody listens any more.
                continue;
            }
        }
    });
    (client, rx)
}

/// The server's ErrorResponse inside a tokio-postgres error, or a panic naming what it was.
pub(crate) fn db_error(e: &tokio_postgres::Error) -> &DbError {
    e.as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse from the server, got: {e:?}"))
}

/// Connect, expecting the login to fail; returns the error.
pub(crate) async fn connect_err(connstring: &str) -> tokio_postgres::Error {
    match tokio::time::timeout(super::HANG, tokio_postgres::connect(connstring, NoTls))
        .await
        .unwrap_or_else(|_| panic!("connect hung: {connstring}"))
    {
        Ok(_) => panic!("connect unexpectedly succeeded: {connstring}"),
        Err(e) => e,
    }
}

//! Simple queries pgporter itself runs on a server connection (parameter sync, reset).

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::{ServerConn, ServerError};
use crate::protocol::backend::{self, ErrorFields};
use crate::protocol::ProtocolError;

/// How a query pgporter ran ended.
#[derive(Debug)]
pub enum QueryOutcome {
    /// ReadyForQuery with this status byte.
    Done(u8),
    /// The server reported an error (then ReadyForQuery followed).
    Failed(ErrorFields),
}

/// Run `sql` and read up to ReadyForQuery, keeping ParameterStatus values; rows are discarded.
pub async fn simple_query(server: &mut ServerConn, sql: &str) -> Result<QueryOutcome, ServerError> {
    // Rows of a reset or SET are tiny; anything larger is still read in whole messages.
    let (status, error) = run(server, sql, usize::MAX >> 1, |_| Ok(())).await?;
    Ok(match error {
        Some(e) => QueryOutcome::Failed(e),
        None => QueryOutcome::Done(status),
    })
}

/// Run `sql` (text format) and return the first row's values; `None` for no row. A server
/// error is returned as [`ServerError::Rejected`].
pub async fn query_row(
    server: &mut ServerConn,
    sql: &str,
) -> Result<Option<Vec<Option<String>>>, ServerError> {
    let mut row = None;
    let limit = crate::protocol::MAX_CONTROL_MESSAGE;
    let (_, error) = run(server, sql, limit, |body| {
        if row.is_none() {
            row = Some(backend::parse_data_row(body).ok_or(ProtocolError::Malformed("DataRow"))?);
        }
        Ok(())
    })
    .await?;
    match error {
        Some(e) => Err(ServerError::Rejected(e)),
        None => Ok(row),
    }
}

/// Send `sql` as a simple Query and read through ReadyForQuery: DataRow bodies go to `on_row`,
/// ParameterStatus values are kept; returns the status byte and the server's error, if any.
async fn run(
    server: &mut ServerConn,
    sql: &str,
    max_message: usize,
    on_row: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
) -> Result<(u8, Option<ErrorFields>), ServerError> {
    send_queries(server, &[sql]).await?;
    read_answer(server, max_message, on_row).await
}

/// Send simple Queries for each of `sqls`, in one write, without waiting for anything.
pub(crate) async fn send_queries(
    server: &mut ServerConn,
    sqls: &[&str],
) -> Result<(), ServerError> {
    queue_queries(&mut server.conn.wbuf, sqls)?;
    server.conn.flush().await?;
    Ok(())
}

/// Append a simple Query for each of `sqls` to `wbuf`, reserving the room once; nothing is
/// appended if one cannot be encoded (a NUL in the text).
pub(crate) fn queue_queries(wbuf: &mut BytesMut, sqls: &[&str]) -> Result<(), ProtocolError> {
    let start = wbuf.len();
    // Type byte, length word, text, NUL.
    wbuf.reserve(sqls.iter().map(|sql| sql.len() + 6).sum());
    for sql in sqls {
        if let Err(e) = frontend::query(sql, wbuf) {
            wbuf.truncate(start);
            return Err(ProtocolError::Io(e));
        }
    }
    Ok(())
}

/// Read one query's answer through its ReadyForQuery: DataRow bodies go to `on_row`,
/// ParameterStatus values are kept; returns the status byte and the server's error, if any.
pub(crate) async fn read_answer(
    server: &mut ServerConn,
    max_message: usize,
    mut on_row: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
) -> Result<(u8, Option<ErrorFields>), ServerError> {
    let mut error = None;
    loop {
        let msg = server.conn.read_message(max_message).await?;
        match msg.tag {
            backend::READY_FOR_QUERY => {
                return Ok((msg.body.first().copied().unwrap_or(b'E'), error));
            }
            backend::ERROR_RESPONSE => {
                error = Some(
                    ErrorFields::parse(&msg.body)
                        .ok_or(ProtocolError::Malformed("ErrorResponse"))?,
                );
            }
            backend::DATA_ROW => on_row(&msg.body)?,
            backend::COMMAND_COMPLETE if super::statements::drops_all(&msg.body) => {
                server.statements.clear();
            }
            backend::PARAMETER_STATUS => {
                if let Some((k, v)) = backend::parse_parameter_status(&msg.body) {
                    server.set_param(&k, &v);
                }
            }
            backend::COPY_IN_RESPONSE
            | backend::COPY_OUT_RESPONSE
            | backend::COPY_BOTH_RESPONSE => {
                return Err(ProtocolError::Unexpected(msg.tag).into());
            }
            _ => {}
        }
    }
}

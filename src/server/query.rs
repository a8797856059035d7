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
    let mut buf = BytesMut::new();
    frontend::query(sql, &mut buf).map_err(ProtocolError::Io)?;
    server.conn.queue(&buf);
    server.conn.flush().await?;
    let mut error = None;
    loop {
        // Rows of a reset or SET are tiny; anything larger is still read in whole messages.
        let msg = server.conn.read_message(usize::MAX >> 1).await?;
        match msg.tag {
            backend::READY_FOR_QUERY => {
                let status = msg.body.first().copied().unwrap_or(b'E');
                return Ok(match error {
                    Some(e) => QueryOutcome::Failed(e),
                    None => QueryOutcome::Done(status),
                });
            }
            backend::ERROR_RESPONSE => {
                error = Some(
                    ErrorFields::parse(&msg.body)
                        .ok_or(ProtocolError::Malformed("ErrorResponse"))?,
                );
            }
            backend::PARAMETER_STATUS => {
                if let Some((k, v)) = backend::parse_parameter_status(&msg.body) {
                    server.params.insert(k, v);
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

/// Run `sql` (text format) and return the first row's values; `None` for no row. A server
/// error is returned as [`ServerError::Rejected`].
pub async fn query_row(
    server: &mut ServerConn,
    sql: &str,
) -> Result<Option<Vec<Option<String>>>, ServerError> {
    let mut buf = BytesMut::new();
    frontend::query(sql, &mut buf).map_err(ProtocolError::Io)?;
    server.conn.queue(&buf);
    server.conn.flush().await?;
    let (mut row, mut error) = (None, None);
    loop {
        let msg = server
            .conn
            .read_message(crate::protocol::MAX_CONTROL_MESSAGE)
            .await?;
        match msg.tag {
            backend::READY_FOR_QUERY => {
                return match error {
                    Some(e) => Err(ServerError::Rejected(e)),
                    None => Ok(row),
                };
            }
            backend::ERROR_RESPONSE => {
                error = Some(
                    ErrorFields::parse(&msg.body)
                        .ok_or(ProtocolError::Malformed("ErrorResponse"))?,
                );
            }
            backend::DATA_ROW if row.is_none() => {
                row = Some(
                    backend::parse_data_row(&msg.body)
                        .ok_or(ProtocolError::Malformed("DataRow"))?,
                );
            }
            backend::PARAMETER_STATUS => {
                if let Some((k, v)) = backend::parse_parameter_status(&msg.body) {
                    server.params.insert(k, v);
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

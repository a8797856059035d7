//! One client session through pgporter with tokio-postgres: the protocol features a
//! transparent pooler must relay, and session state that must not leak between clients.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt as _, StreamExt as _, TryStreamExt as _};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

use crate::support::checks::backend_running;
use crate::support::{connect_with_messages, db_error, simple_value, Fixture, HANG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    let msgs = client
        .simple_query("select 1 as one, 'two' as two; select current_user")
        .await
        .expect("simple query");
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get("one"), Some("1"));
    assert_eq!(rows[0].get("two"), Some("two"));
    assert_eq!(rows[1].get(0), Some(fx.user.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_with_parameters() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    let row = client
        .query_one(
            "select $1::int4 + $2::int4, $3::text || '!'",
            &[&40i32, &2i32, &"hi"],
        )
        .await
        .expect("extended query");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");

    // A named prepared statement reused several times in the same session.
    let stmt = client
        .prepare("select $1::int8 * 2, current_database()")
        .await
        .expect("prepare");
    for i in 0..5i64 {
        let row = client
            .query_one(&stmt, &[&i])
            .await
            .expect("execute prepared");
        assert_eq!(row.get::<_, i64>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), fx.db);
    }
    // NULL parameters and zero-row results.
    let rows = client
        .query(
            "select x from (select $1::text as x) s where x is not null",
            &[&None::<String>],
        )
        .await
        .expect("null parameter");
    assert!(rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    client
        .batch_execute("create table items (id int primary key, name text)")
        .await
        .expect("create table");

    let n = 10_000;
    let data: String = (1..=n).map(|i| format!("{i}\tname {i}\n")).collect();
    let sink = client
        .copy_in("COPY items (id, name) FROM STDIN")
        .await
        .expect("copy in");
    pin_mut!(sink);
    // Several chunks, so the COPY spans many CopyData messages.
    for chunk in data.as_bytes().chunks(16 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .expect("copy data");
    }
    let copied = sink.as_mut().finish().await.expect("copy done");
    assert_eq!(copied, n);

    let stream = client
        .copy_out("COPY (select id, name from items order by id) TO STDOUT")
        .await
        .expect("copy out");
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("copy out data");
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).expect("utf8"), data);

    // The session is usable after both COPYs.
    assert_eq!(
        simple_value(&client, "select count(*) from items")
            .await
            .as_deref(),
        Some("10000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_running_query() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let res = client.simple_query("select pg_sleep(30)").await;
        (client, res)
    });
    backend_running(&fx, "pg_sleep(30)").await;
    token
        .cancel_query(NoTls)
        .await
        .expect("sending the cancel request");

    let (client, res) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancelled query did not end within 10 s")
        .expect("task");
    let err = res.expect_err("pg_sleep(30) should have been cancelled");
    assert_eq!(db_error(&err).code(), &SqlState::QUERY_CANCELED, "{err:?}");
    // The session survives the cancel.
    assert_eq!(
        simple_value(&client, "select 1").await.as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_between_two_clients() {
    let fx = Fixture::new(4).await;
    let (listener, mut messages) = connect_with_messages(&fx.connstring()).await;
    listener
        .batch_execute("LISTEN porter_events")
        .await
        .expect("listen");
    let notifier = fx.connect().await;
    notifier
        .batch_execute("NOTIFY porter_events, 'hello through pgporter'")
        .await
        .expect("notify");

    let note = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match messages.recv().await {
                Some(AsyncMessage::Notification(n)) => break n,
                Some(_) => continue,
                None => panic!("listener connection closed"),
            }
        }
    })
    .await
    .expect("no notification within 10 s");
    assert_eq!(note.channel(), "porter_events");
    assert_eq!(note.payload(), "hello through pgporter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_table_survives_across_statements() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    client
        .batch_execute("create temporary table scratch (x int)")
        .await
        .expect("create temp table");
    client
        .execute(
            "insert into scratch select generate_series(1, $1)",
            &[&10i32],
        )
        .await
        .expect("insert");
    client
        .batch_execute("set work_mem = '8MB'")
        .await
        .expect("set");
    let row = client
        .query_one(
            "select sum(x)::int8, current_setting('work_mem') from scratch",
            &[],
        )
        .await
        .expect("select from temp table");
    assert_eq!(row.get::<_, i64>(0), 55);
    assert_eq!(row.get::<_, String>(1), "8MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_is_streamed_completely() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    const ROWS: i64 = 200_000;
    const WIDTH: usize = 250;
    let sql = format!("select g::int8, repeat('x', {WIDTH}) from generate_series(1, {ROWS}) g");
    let stream = tokio::time::timeout(
        HANG,
        client.query_raw(sql.as_str(), std::iter::empty::<&dyn ToSql>()),
    )
    .await
    .expect("query hung")
    .expect("large query");
    pin_mut!(stream);
    let (mut rows, mut bytes, mut last) = (0i64, 0usize, 0i64);
    let counting = async {
        while let Some(row) = stream.next().await {
            let row = row.expect("row");
            last = row.get::<_, i64>(0);
            bytes += row.get::<_, &str>(1).len();
            rows += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), counting)
        .await
        .expect("streaming ~50 MB took longer than 120 s");
    assert_eq!(rows, ROWS);
    assert_eq!(last, ROWS);
    assert_eq!(bytes, ROWS as usize * WIDTH);
    assert_eq!(
        simple_value(&client, "select 'still here'")
            .await
            .as_deref(),
        Some("still here")
    );
}

/// The next NoticeResponse on a connection (bounded).
async fn next_notice(
    messages: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
) -> tokio_postgres::error::DbError {
    let next = async {
        loop {
            match messages.recv().await {
                Some(AsyncMessage::Notice(n)) => break n,
                Some(_) => continue,
                None => panic!("connection closed"),
            }
        }
    };
    tokio::time::timeout(HANG, next).await.expect("no notice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_reaches_the_client() {
    let fx = Fixture::new(4).await;
    let (client, mut messages) = connect_with_messages(&fx.connstring()).await;
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'porter notice %', 42; END $$")
        .await
        .expect("DO block");
    let notice = next_notice(&mut messages).await;
    assert_eq!(notice.message(), "porter notice 42");
    assert_eq!(notice.severity(), "NOTICE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_carries_its_sqlstate_and_session_continues() {
    let fx = Fixture::new(4).await;
    let client = fx.connect().await;
    let err = client
        .simple_query("select * from no_such_table")
        .await
        .expect_err("selecting from a missing table");
    let db = db_error(&err);
    assert_eq!(db.code(), &SqlState::UNDEFINED_TABLE);
    assert!(db.message().contains("no_such_table"), "{}", db.message());
    // Extended protocol error too, then recovery.
    let err = client
        .query("select 1/0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(db_error(&err).code(), &SqlState::DIVISION_BY_ZERO);
    assert_eq!(
        simple_value(&client, "select 2").await.as_deref(),
        Some("2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_does_not_leak_to_next_client() {
    let fx = Fixture::new(1).await;
    let first = fx.connect().await;
    first
        .batch_execute(
            "create temporary table leaked (x int); insert into leaked values (1); \
             set pgporter_test.marker = 'leaked'; set statement_timeout = '123s'; \
             prepare leaked_stmt as select 1",
        )
        .await
        .expect("setting session state");
    let first_pid = simple_value(&first, "select pg_backend_pid()").await;
    drop(first);

    let second = fx.connect().await;
    let second_pid = simple_value(&second, "select pg_backend_pid()").await;
    assert_eq!(
        first_pid, second_pid,
        "with pool size 1 the second client should get the first client's server connection \
         back (reset, not reconnected); otherwise this test does not check the reset"
    );
    assert_eq!(
        simple_value(&second, "select to_regclass('pg_temp.leaked')::text").await,
        None
    );
    let marker = simple_value(
        &second,
        "select current_setting('pgporter_test.marker', true)",
    )
    .await;
    assert!(
        matches!(marker.as_deref(), None | Some("")),
        "GUC leaked: {marker:?}"
    );
    assert_eq!(
        simple_value(&second, "show statement_timeout")
            .await
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        simple_value(&second, "select count(*) from pg_prepared_statements")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_transaction_leaves_no_open_transaction() {
    let fx = Fixture::new(1).await;
    let setup = fx.direct().await;
    setup
        .batch_execute("create table ledger (x int)")
        .await
        .expect("create table");

    let first = fx.connect().await;
    first
        .batch_execute("begin; insert into ledger values (1); set local work_mem = '9MB'")
        .await
        .expect("open transaction");
    drop(first); // Terminate while the server is inside the transaction.

    let second = fx.connect().await;
    assert_eq!(
        simple_value(&second, "select count(*) from ledger")
            .await
            .as_deref(),
        Some("0"),
        "the next client saw the abandoned transaction's insert"
    );
    assert_eq!(
        simple_value(&second, "select pg_current_xact_id_if_assigned()::text").await,
        None,
        "the next client runs inside someone else's transaction"
    );
    // A BEGIN/COMMIT of its own works normally (would warn/fail inside a leftover transaction).
    second
        .batch_execute("begin; insert into ledger values (2); commit")
        .await
        .expect("own transaction");
    let count: i64 = setup
        .query_one("select count(*) from ledger", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
}

/// Which idle server connection a new client gets: the most recently used (the others idle
/// out), or with server_round_robin the least recently used, as in PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_round_robin_picks_the_least_recently_used_connection() {
    for round_robin in [false, true] {
        let fx = Fixture::with_settings(
            2,
            &format!("server_round_robin = {}", u8::from(round_robin)),
        )
        .await;
        let (first, second) = (fx.connect().await, fx.connect().await);
        let p1 = simple_value(&first, "select pg_backend_pid()")
            .await
            .unwrap();
        let p2 = simple_value(&second, "select pg_backend_pid()")
            .await
            .unwrap();
        drop(first);
        fx.porter.until_idle(1).await;
        drop(second);
        fx.porter.until_idle(2).await;
        let third = fx.connect().await;
        let p3 = simple_value(&third, "select pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(
            p3,
            if round_robin { p1 } else { p2 },
            "round robin {round_robin}"
        );
    }
}

/// login_notify_message (PgBouncer 1.25): a NOTICE every client gets once logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_notify_message_greets_every_client() {
    let fx = Fixture::with_settings(2, "login_notify_message = You are on pgporter").await;
    let out = crate::support::psql::psql(&fx.connstring(), "select 1").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("NOTICE:  You are on pgporter"), "{stderr}");
}

/// query_wait_notify (PgBouncer 1.22+): a client waiting that long for a server connection
/// gets one NOTICE saying it is queued, then its answer once a connection is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_queued_that_long_is_told_once() {
    let fx = Fixture::with_settings(1, "query_wait_notify = 1").await;
    let holder = fx.connect().await;
    holder.batch_execute("select 1").await.unwrap();
    let (waiter, mut messages) = connect_with_messages(&fx.connstring()).await;
    let query = tokio::spawn(async move { simple_value(&waiter, "select 2").await });
    let notice = next_notice(&mut messages).await;
    assert_eq!(
        notice.message(),
        "No server connection available in postgres backend, client being queued"
    );
    assert_eq!(notice.code().code(), "00000");
    drop(holder);
    let answer = tokio::time::timeout(HANG, query).await.unwrap().unwrap();
    assert_eq!(answer.as_deref(), Some("2"));
    assert!(messages.try_recv().is_err(), "one notice only");
}

/// In transaction mode a client may wait at every transaction: as PgBouncer, the
/// query_wait_notify NOTICE goes out once per client, not once per wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_mode_client_is_told_once_not_at_every_wait() {
    let fx = crate::transaction::one_connection(
        "transaction",
        "query_wait_notify = 1\nquery_wait_timeout = 20",
    )
    .await;
    let holder = fx.connect().await;
    let (waiter, mut messages) = connect_with_messages(&fx.connstring()).await;
    let waiter = std::sync::Arc::new(waiter);
    for round in 0..2 {
        holder.batch_execute("begin").await.unwrap();
        let w = std::sync::Arc::clone(&waiter);
        let query = tokio::spawn(async move { simple_value(&w, "select 2").await });
        if round == 0 {
            // Told while it waits: awaited, not slept for (a sleep of 1.5 s from the spawn
            // could end before the query had waited its 1 s on a loaded machine).
            let notice = next_notice(&mut messages).await;
            assert_eq!(notice.code().code(), "00000");
        } else {
            // Queued again, and for longer than query_wait_notify: no second notice.
            let deadline = tokio::time::Instant::now() + HANG;
            while fx.porter.pool_counts().iter().all(|(_, c)| c.waiting == 0) {
                assert!(tokio::time::Instant::now() < deadline, "not queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        holder.batch_execute("commit").await.unwrap();
        let answer = tokio::time::timeout(HANG, query).await.unwrap().unwrap();
        assert_eq!(answer.as_deref(), Some("2"), "round {round}");
    }
    assert!(messages.try_recv().is_err(), "one notice only");
}

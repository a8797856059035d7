"""Python PostgreSQL drivers through pgporter: one compatibility check list per driver.

Usage: drivers.py DRIVER HOST PORT USER PASSWORD DBNAME
  DRIVER: psycopg2 | psycopg3-simple | psycopg3-prepared | asyncpg | sqlalchemy

Run by tests/it/drivers.rs with the venv interpreter scripts/test.sh prepares. Each check
prints `PASS driver:check`; a check the driver cannot do prints `SKIP driver:check: reason`
(the Rust side counts skips); `OK` at the end. A failure raises (traceback, non-zero exit).
The same list for every driver: connect (SCRAM), simple query, parameters / prepared
statements, a temporary table across statements, a transaction rolled back, COPY in and out,
cancel of a running query (57014), an error with its SQLSTATE (42P01) after which the session
still works, and a wrong password (28P01 where the driver exposes it).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import time

SLEEP = "SELECT pg_sleep(30)"


def passed(driver: str, check: str) -> None:
    print(f"PASS {driver}:{check}", flush=True)


def skipped(driver: str, check: str, reason: str) -> None:
    print(f"SKIP {driver}:{check}: {reason}", flush=True)


def wait_running(dsn: str, limit: float = 20.0) -> None:
    """Return once a session of this user runs SLEEP, as seen from a connection of its own
    (psycopg2, through the pooler at `dsn`; the pool has room for it)."""
    import psycopg2

    mon = psycopg2.connect(dsn)
    try:
        mon.autocommit = True
        cur = mon.cursor()
        deadline = time.monotonic() + limit
        while True:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user"
                " AND state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
                ("%" + SLEEP + "%",),
            )
            if cur.fetchone()[0] > 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{SLEEP} not seen running within {limit} s")
            time.sleep(0.05)
    finally:
        mon.close()


class cancel_later:
    """Call `cancel()` from another thread once the main thread's SLEEP runs (watched through
    `dsn`): PostgreSQL ignores a cancel that comes before its backend has started the query,
    which a fixed delay could not rule out on a loaded machine (the query then ran its 30 s).
    `done()` waits for that call and raises what it raised (a cancel that reached the server
    but failed on the client's side, e.g. libpq 17+'s encrypted cancel without the pooler's
    TLS close_notify, is a failure too)."""

    def __init__(self, cancel, dsn: str) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                wait_running(dsn)
                cancel()
            except BaseException as e:  # noqa: BLE001 - reported by done()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self) -> None:
        self.thread.join(30)
        if self.error is not None:
            raise AssertionError(f"the cancel call failed: {self.error!r}")


# PGPORTER_TEST_SSLMODE=require runs the same check list over client TLS (default: disable).
SSLMODE = os.environ.get("PGPORTER_TEST_SSLMODE", "disable")


def libpq_dsn(host, port, user, password, db) -> str:
    return f"host={host} port={port} user={user} password={password} dbname={db} sslmode={SSLMODE}"


# --- psycopg2 (libpq, simple query protocol with client-side parameters) -------------------


def run_psycopg2(name, host, port, user, password, db) -> None:
    import psycopg2
    import psycopg2.errors

    conn = psycopg2.connect(libpq_dsn(host, port, user, password, db))
    passed(name, "connect")
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    passed(name, "simple-query")
    cur.execute("SELECT %s::int + %s, %s", (40, 2, "x'y"))
    assert cur.fetchone() == (42, "x'y")
    cur.execute("PREPARE twice(int) AS SELECT $1 * 2")
    cur.execute("EXECUTE twice(21)")
    assert cur.fetchone() == (42,)
    passed(name, "params-prepared")
    cur.execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text)")
    conn.commit()
    cur.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    conn.commit()
    cur.execute("SELECT count(*) FROM t")
    assert cur.fetchone() == (2,)
    conn.commit()
    passed(name, "temp-table")
    cur.execute("INSERT INTO t VALUES (3, 'three')")
    conn.rollback()
    cur.execute("SELECT count(*) FROM t")
    assert cur.fetchone() == (2,)
    conn.commit()
    passed(name, "rollback")
    cur.copy_expert("COPY t FROM STDIN", io.StringIO("10\tten\n11\televen\n"))
    out = io.StringIO()
    cur.copy_expert("COPY (SELECT id, name FROM t WHERE id >= 10 ORDER BY id) TO STDOUT", out)
    assert out.getvalue() == "10\tten\n11\televen\n", out.getvalue()
    conn.commit()
    passed(name, "copy")
    canceller = cancel_later(conn.cancel, libpq_dsn(host, port, user, password, db))
    try:
        cur.execute(SLEEP)
        raise AssertionError("pg_sleep was not cancelled")
    except psycopg2.errors.QueryCanceled as e:
        assert e.pgcode == "57014", e.pgcode
    canceller.done()
    conn.rollback()
    passed(name, "cancel")
    try:
        cur.execute("SELECT * FROM no_such_table")
        raise AssertionError("no error")
    except psycopg2.Error as e:
        assert e.pgcode == "42P01", e.pgcode
    conn.rollback()
    cur.execute("SELECT count(*) FROM t")
    assert cur.fetchone() == (4,)
    passed(name, "error-sqlstate")
    conn.close()
    try:
        psycopg2.connect(libpq_dsn(host, port, user, password + "-wrong", db))
        raise AssertionError("wrong password accepted")
    except psycopg2.OperationalError as e:
        assert "password authentication failed" in str(e), str(e)
    passed(name, "wrong-password")
    skipped(name, "wrong-password-sqlstate",
            "libpq does not expose the SQLSTATE of a connection-time error (message checked)")


# --- psycopg 3: client-side binding over the simple protocol, or named prepared statements --


def run_psycopg3(name, host, port, user, password, db, prepared: bool) -> None:
    import psycopg
    import psycopg.errors

    kwargs = {"prepare_threshold": 0} if prepared else {"cursor_factory": psycopg.ClientCursor}
    conn = psycopg.connect(libpq_dsn(host, port, user, password, db), **kwargs)
    passed(name, "connect")
    cur = conn.cursor()
    assert cur.execute("SELECT 1").fetchone() == (1,)
    passed(name, "simple-query")
    for i in range(3):  # prepared: the 2nd and 3rd run reuse the server-side statement
        assert cur.execute("SELECT %s::int + %s, %s", (40, 2 + i, "x'y")).fetchone() == (42 + i, "x'y")
    if prepared:
        n = cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '_pg3_%%'").fetchone()[0]
        assert n >= 1, "psycopg did not prepare a named statement"
        with conn.pipeline():
            rows = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(5)]
        assert [c.fetchone()[0] for c in rows] == [0, 2, 4, 6, 8]
    passed(name, "params-prepared")
    cur.execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text)")
    conn.commit()
    cur.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
    conn.commit()
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (2,)
    conn.commit()
    passed(name, "temp-table")
    try:
        with conn.transaction():
            cur.execute("INSERT INTO t VALUES (3, 'three')")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (2,)
    conn.commit()
    passed(name, "rollback")
    with cur.copy("COPY t (id, name) FROM STDIN") as copy:
        copy.write_row((10, "ten"))
        copy.write_row((11, "eleven"))
    with cur.copy("COPY (SELECT id, name FROM t WHERE id >= 10 ORDER BY id) TO STDOUT") as copy:
        rows = list(copy.rows())
    assert rows == [("10", "ten"), ("11", "eleven")], rows
    conn.commit()
    passed(name, "copy")
    canceller = cancel_later(
        getattr(conn, "cancel_safe", conn.cancel), libpq_dsn(host, port, user, password, db)
    )
    try:
        cur.execute(SLEEP)
        raise AssertionError("pg_sleep was not cancelled")
    except psycopg.errors.QueryCanceled as e:
        assert e.sqlstate == "57014", e.sqlstate
    canceller.done()
    conn.rollback()
    passed(name, "cancel")
    try:
        cur.execute("SELECT * FROM no_such_table WHERE x = %s", (1,))
        raise AssertionError("no error")
    except psycopg.Error as e:
        assert e.sqlstate == "42P01", e.sqlstate
    conn.rollback()
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (4,)
    passed(name, "error-sqlstate")
    conn.close()
    try:
        psycopg.connect(libpq_dsn(host, port, user, password + "-wrong", db))
        raise AssertionError("wrong password accepted")
    except psycopg.OperationalError as e:
        assert "password authentication failed" in str(e), str(e)
    passed(name, "wrong-password")
    skipped(name, "wrong-password-sqlstate",
            "libpq does not expose the SQLSTATE of a connection-time error (message checked)")


# --- asyncpg: extended protocol throughout, named prepared statements, binary COPY ----------


async def run_asyncpg(name, host, port, user, password, db) -> None:
    import asyncpg

    def connect(pw):
        ssl = "require" if SSLMODE != "disable" else False
        return asyncpg.connect(host=host, port=port, user=user, password=pw, database=db, ssl=ssl)

    conn = await connect(password)
    passed(name, "connect")
    assert await conn.fetchval("SELECT 1") == 1
    await conn.execute("SELECT 1; SELECT 2")  # no arguments: the simple protocol
    passed(name, "simple-query")
    assert await conn.fetchval("SELECT $1::int + $2", 40, 2) == 42
    stmt = await conn.prepare("SELECT $1::int * 2")
    assert [await stmt.fetchval(i) for i in range(3)] == [0, 2, 4]
    names = await conn.fetch("SELECT name FROM pg_prepared_statements")
    assert any(r["name"].startswith("__asyncpg_stmt_") for r in names), names
    passed(name, "params-prepared")
    await conn.execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text)")
    await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(1, "one"), (2, "two")])
    assert await conn.fetchval("SELECT count(*) FROM t") == 2
    passed(name, "temp-table")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (3, 'three')")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert await conn.fetchval("SELECT count(*) FROM t") == 2
    passed(name, "rollback")
    await conn.copy_records_to_table("t", records=[(10, "ten"), (11, "eleven")])
    out = io.BytesIO()
    await conn.copy_from_query("SELECT id, name FROM t WHERE id >= 10 ORDER BY id", output=out)
    assert out.getvalue() == b"10\tten\n11\televen\n", out.getvalue()
    passed(name, "copy")
    dsn = libpq_dsn(host, port, user, password, db)
    # A timeout makes asyncpg send a CancelRequest for the running query. Its timer runs on
    # this event loop, so the loop is held (a blocking wait_running) from the moment the query
    # is sent until it runs: the overdue timer fires then, never before the backend has the
    # query (a cancel that came first would be ignored and the query would run its 30 s).
    sleep = await conn.prepare(SLEEP)
    fetch = asyncio.ensure_future(sleep.fetch(timeout=0.5))
    await asyncio.sleep(0)  # the task sends Bind/Execute, then waits for the answer
    wait_running(dsn)
    try:
        await fetch
        raise AssertionError("pg_sleep was not cancelled")
    except asyncio.TimeoutError:
        pass
    assert await conn.fetchval("SELECT 7") == 7
    # Cancelling the awaiting task also cancels the query on the server (once it runs).
    task = asyncio.ensure_future(conn.fetch(SLEEP))
    await asyncio.get_running_loop().run_in_executor(None, wait_running, dsn)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await conn.fetchval("SELECT 8") == 8
    passed(name, "cancel")
    try:
        await conn.fetch("SELECT * FROM no_such_table WHERE x = $1", 1)
        raise AssertionError("no error")
    except asyncpg.PostgresError as e:
        assert e.sqlstate == "42P01", e.sqlstate
    assert await conn.fetchval("SELECT count(*) FROM t") == 4
    passed(name, "error-sqlstate")
    await conn.close()
    try:
        await connect(password + "-wrong")
        raise AssertionError("wrong password accepted")
    except asyncpg.PostgresError as e:
        assert e.sqlstate == "28P01", e.sqlstate
    passed(name, "wrong-password")


# --- SQLAlchemy 2 on psycopg2 -------------------------------------------------------------


def run_sqlalchemy(name, host, port, user, password, db) -> None:
    import sqlalchemy
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import URL

    assert sqlalchemy.__version__.startswith("2."), sqlalchemy.__version__

    def engine_for(pw):
        url = URL.create("postgresql+psycopg2", user, pw, host, port, db, {"sslmode": SSLMODE})
        return create_engine(url, pool_size=2, pool_pre_ping=True)

    engine = engine_for(password)
    with engine.connect() as conn:
        passed(name, "connect")
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
        passed(name, "simple-query")
        assert conn.execute(text("SELECT :a + :b"), {"a": 40, "b": 2}).scalar_one() == 42
        passed(name, "params-prepared")
        conn.execute(text("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, name text)"))
        conn.commit()
        conn.execute(text("INSERT INTO t VALUES (:id, :name)"), [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
        conn.commit()
        passed(name, "temp-table")
        with conn.begin():
            conn.execute(text("INSERT INTO t VALUES (3, 'three')"))
            conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
        conn.commit()
        passed(name, "rollback")
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.copy_expert("COPY t FROM STDIN", io.StringIO("10\tten\n11\televen\n"))
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 4
        conn.commit()
        passed(name, "copy")
        canceller = cancel_later(raw.cancel, libpq_dsn(host, port, user, password, db))
        try:
            conn.execute(text(SLEEP))
            raise AssertionError("pg_sleep was not cancelled")
        except sqlalchemy.exc.OperationalError as e:
            assert e.orig.pgcode == "57014", e.orig.pgcode
        canceller.done()
        conn.rollback()
        passed(name, "cancel")
        try:
            conn.execute(text("SELECT * FROM no_such_table"))
            raise AssertionError("no error")
        except sqlalchemy.exc.ProgrammingError as e:
            assert e.orig.pgcode == "42P01", e.orig.pgcode
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 4
        passed(name, "error-sqlstate")
    # The pooled connection comes back (pre-ping) and the session's temp table is still there.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 4
    passed(name, "pool-reuse")
    engine.dispose()
    try:
        with engine_for(password + "-wrong").connect():
            pass
        raise AssertionError("wrong password accepted")
    except sqlalchemy.exc.OperationalError as e:
        assert "password authentication failed" in str(e), str(e)
    passed(name, "wrong-password")


def main() -> None:
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    driver, host, port, user, password, db = sys.argv[1:]
    port = int(port)
    args = (driver, host, port, user, password, db)
    if driver == "psycopg2":
        run_psycopg2(*args)
    elif driver in ("psycopg3-simple", "psycopg3-prepared"):
        run_psycopg3(*args, prepared=driver.endswith("prepared"))
    elif driver == "asyncpg":
        asyncio.run(run_asyncpg(*args))
    elif driver == "sqlalchemy":
        run_sqlalchemy(*args)
    else:
        sys.exit(f"unknown driver {driver}")
    print("OK", flush=True)


if __name__ == "__main__":
    main()

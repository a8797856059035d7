"""Python drivers through a pgporter pool in statement mode (one server connection).

Usage: statement_mode.py HOST PORT USER PASSWORD DBNAME

Run by tests/it/statement.rs. In autocommit mode psycopg 3 (named prepared statements,
a pipeline, executemany), asyncpg (its statement cache, executemany) and psycopg2 share the
one server connection. A transaction block fails as through PgBouncer 1.18: psycopg 3 raises
OperationalError 08P01 "transaction blocks not allowed in statement pooling mode" (not
"received 2 results from command 'BEGIN'", which it raises when BEGIN's CommandComplete
arrives before the error), asyncpg's connection is closed with that message, psycopg2
(autocommit off) reports the connection closed. Prints
`statement mode: ok`; a failure raises.
"""

from __future__ import annotations

import asyncio
import sys

REFUSED = "transaction blocks not allowed in statement pooling mode"


def psycopg3(host, port, user, password, db) -> None:
    import psycopg

    def connect():
        return psycopg.connect(host=host, port=port, user=user, password=password,
                               dbname=db, sslmode="disable", autocommit=True,
                               prepare_threshold=0)

    conns = [connect() for _ in range(2)]
    for i in range(6):
        for n, conn in enumerate(conns):
            row = conn.execute("SELECT %s::int * 2, %s::text", (i, f"c{n}")).fetchone()
            assert row == (i * 2, f"c{n}"), row
    with conns[0].pipeline():
        cursors = [conns[0].execute("SELECT %s::int + 1", (i,), prepare=True) for i in range(5)]
    assert [c.fetchone()[0] for c in cursors] == [1, 2, 3, 4, 5]
    conns[1].cursor().executemany("SELECT %s::int", [(i,) for i in range(50)])
    try:
        with conns[0].transaction():
            conns[0].execute("SELECT 1")
        raise AssertionError("psycopg 3: a transaction block was allowed")
    except psycopg.OperationalError as e:
        assert e.sqlstate == "08P01" and REFUSED in str(e), (e.sqlstate, str(e))
    assert conns[1].execute("SELECT 2").fetchone() == (2,)
    for conn in conns:
        conn.close()


async def asyncpg_(host, port, user, password, db) -> None:
    import asyncpg

    conns = [await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                                   database=db, ssl=False) for _ in range(3)]
    for i in range(4):
        for conn in conns:
            assert await conn.fetchval("SELECT $1::int * 3", i) == i * 3
    await conns[0].executemany("SELECT $1::int", [(i,) for i in range(50)])
    try:
        async with conns[1].transaction():
            await conns[1].fetchval("SELECT 1")
        raise AssertionError("asyncpg: a transaction block was allowed")
    except asyncpg.exceptions.ConnectionDoesNotExistError as e:
        assert REFUSED in str(e), str(e)
    assert await conns[2].fetchval("SELECT 4") == 4
    for conn in (conns[0], conns[2]):
        await conn.close()


def psycopg2_(host, port, user, password, db) -> None:
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user=user, password=password, dbname=db,
                            sslmode="disable")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT %s::int", (7,))
        assert cur.fetchone() == (7,)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        raise AssertionError("psycopg2: a transaction block was allowed")
    except psycopg2.OperationalError:
        # libpq reports the closed connection, not the FATAL before it (the same through
        # PgBouncer 1.18).
        assert conn.closed


def main() -> None:
    host, port, user, password, db = sys.argv[1:6]
    psycopg3(host, port, user, password, db)
    asyncio.run(asyncpg_(host, port, user, password, db))
    psycopg2_(host, port, user, password, db)
    print("statement mode: ok")


if __name__ == "__main__":
    main()

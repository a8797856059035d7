"""Python drivers through a pgporter pool in transaction mode, with their default settings.

Usage: transaction_mode.py HOST PORT USER PASSWORD DBNAME

Run by tests/it/transaction.rs against a pool of two server connections. Each driver opens
two connections and alternates them over the same statements, more often than psycopg 3's
prepare_threshold (5): psycopg 3 and asyncpg then use named prepared statements, which in
PgBouncer's transaction mode (without max_prepared_statements) fail on the next server
connection ("prepared statement ... does not exist"). pgporter keeps a client with a named
statement open on its server connection, so they work. psycopg2 (no server-side prepares)
shares the connections. psycopg 3 runs twice: its statement names repeat on the same server
connections, so what a client leaves prepared must be gone when it leaves. Prints `transaction mode: ok`; a failure raises.
"""

from __future__ import annotations

import asyncio
import sys


def psycopg3(host, port, user, password, db) -> None:
    import psycopg

    conns = [
        psycopg.connect(host=host, port=port, user=user, password=password, dbname=db,
                        sslmode="disable", autocommit=True)
        for _ in range(2)
    ]
    for i in range(12):
        for n, conn in enumerate(conns):
            row = conn.execute("SELECT %s::int * 2, %s::text", (i, f"c{n}")).fetchone()
            assert row == (i * 2, f"c{n}"), row
    # A transaction block, then the other connection.
    with conns[0].transaction():
        conns[0].execute("SELECT 1")
    assert conns[1].execute("SELECT 2").fetchone() == (2,)
    for conn in conns:
        conn.close()


def psycopg2(host, port, user, password, db) -> None:
    import psycopg2 as pg2

    conns = [
        pg2.connect(host=host, port=port, user=user, password=password, dbname=db,
                    sslmode="disable")
        for _ in range(3)
    ]
    for i in range(6):
        for n, conn in enumerate(conns):
            with conn.cursor() as cur:
                cur.execute("SELECT %s * 2, %s", (i, f"c{n}"))
                assert cur.fetchone() == (i * 2, f"c{n}")
            conn.commit()
    for conn in conns:
        conn.close()


async def asyncpg_run(host, port, user, password, db) -> None:
    import asyncpg

    conns = [
        await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                              database=db, ssl=False)
        for _ in range(2)
    ]
    for i in range(8):
        for n, conn in enumerate(conns):
            row = await conn.fetchrow("SELECT $1::int * 2 AS v, $2::text AS c", i, f"c{n}")
            assert (row["v"], row["c"]) == (i * 2, f"c{n}"), row
    for conn in conns:
        await conn.close()


def main() -> None:
    host, port, user, password, db = sys.argv[1:6]
    # Twice: the second run's statements have the first run's names, on the same server
    # connections (what a client leaves prepared is deallocated when it leaves).
    for _ in range(2):
        psycopg3(host, port, user, password, db)
    print("psycopg 3: ok", flush=True)
    psycopg2(host, port, user, password, db)
    print("psycopg2: ok", flush=True)
    asyncio.run(asyncpg_run(host, port, user, password, db))
    print("asyncpg: ok", flush=True)
    print("transaction mode: ok", flush=True)


if __name__ == "__main__":
    main()

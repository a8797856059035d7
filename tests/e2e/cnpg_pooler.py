"""SQLAlchemy engines through pgporter running CloudNativePG's generated pgbouncer.ini.

Usage: cnpg_pooler.py HOST PORT USER PASSWORD DBNAME
       cnpg_pooler.py console SOCKET_DIR PORT

Run by tests/it/cnpg.rs. The user is not in any auth_file: pgporter finds their SCRAM
verifier with CloudNativePG's auth_query (public.user_search, as cnpg_pooler_pgbouncer,
which logs in to PostgreSQL with its TLS client certificate). For psycopg2 and psycopg 3,
as the butler builds its engines (SQLAlchemy 2, pool_pre_ping, sslmode=require): a
transaction with bound parameters, a session's temporary table across statements, a rolled
back transaction, an error with its SQLSTATE after which the engine still works, and both
legs on TLS (pg_stat_ssl on the server's side).

`console`: the admin console as the instance manager's exporter opens it (pgx: the unix
socket, user pgbouncer, startup parameters client_encoding=UTF8 and datestyle=ISO, the simple
query protocol, which pgx only runs when the server reports standard_conforming_strings on
and client_encoding UTF8), then its three queries. psycopg2, whose execute() is a simple
Query; libpq sends PGDATESTYLE and PGCLIENTENCODING as startup parameters.

Prints `PASS driver:check` per check and `OK` at the end; a failure raises.
"""

from __future__ import annotations

import sys

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}


def passed(driver: str, check: str) -> None:
    print(f"PASS {driver}:{check}", flush=True)


def sqlstate(e: DBAPIError) -> str | None:
    orig = e.orig
    return getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)


def run(driver: str, host: str, port: int, user: str, password: str, db: str) -> None:
    url = URL.create(DRIVERS[driver], user, password, host, port, db, {"sslmode": "require"})
    engine = create_engine(url, pool_size=2, max_overflow=0, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
            ).one()
            assert tuple(row) == (user, True), row
            passed(driver, "login-through-auth_query-and-tls-to-postgres")

            conn.execute(text("CREATE TEMPORARY TABLE datasets (id int, name text)"))
            conn.execute(
                text("INSERT INTO datasets VALUES (:id, :name)"),
                [{"id": 1, "name": "raw/2026-11-27"}, {"id": 2, "name": "calexp"}],
            )
            conn.commit()
            names = conn.execute(text("SELECT name FROM datasets ORDER BY id")).scalars()
            assert list(names) == ["raw/2026-11-27", "calexp"]
            passed(driver, "temporary-table-and-bound-parameters")

            conn.execute(text("INSERT INTO datasets VALUES (3, 'rolled back')"))
            conn.rollback()
            count = conn.execute(text("SELECT count(*) FROM datasets")).scalar_one()
            assert count == 2, count
            passed(driver, "rollback")

            try:
                conn.execute(text("SELECT * FROM no_such_table"))
                raise AssertionError("the query on a missing table succeeded")
            except DBAPIError as e:
                assert sqlstate(e) == "42P01", sqlstate(e)
            conn.rollback()
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
            passed(driver, "error-sqlstate-then-usable")
        # The pooled connection again, through the pre-ping.
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == user
        passed(driver, "pre-ping-reuse")
    finally:
        engine.dispose()


def console(socket_dir: str, port: str) -> None:
    import os

    import psycopg2

    os.environ["PGDATESTYLE"] = "ISO"
    os.environ["PGCLIENTENCODING"] = "UTF8"
    conn = psycopg2.connect(
        host=socket_dir, port=port, user="pgbouncer", dbname="pgbouncer", sslmode="disable"
    )
    conn.autocommit = True
    reported = {
        k: conn.get_parameter_status(k) for k in ("standard_conforming_strings", "client_encoding")
    }
    assert reported == {"standard_conforming_strings": "on", "client_encoding": "UTF8"}, reported
    passed("exporter", "startup-parameters")
    cur = conn.cursor()
    for query, columns in (("SHOW LISTS;", 2), ("SHOW POOLS;", 17), ("SHOW STATS;", None)):
        cur.execute(query)
        assert columns is None or len(cur.description) == columns, (query, cur.description)
        assert cur.fetchall(), query
        passed("exporter", query.rstrip(";").lower().replace(" ", "-"))
    conn.close()


def main() -> None:
    if sys.argv[1] == "console":
        console(sys.argv[2], sys.argv[3])
        print("OK", flush=True)
        return
    host, port, user, password, db = sys.argv[1:6]
    for driver in DRIVERS:
        run(driver, host, int(port), user, password, db)
    print("OK", flush=True)


if __name__ == "__main__":
    main()

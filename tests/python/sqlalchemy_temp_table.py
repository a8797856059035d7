"""A TEMPORARY table through pgporter with SQLAlchemy 2 + psycopg2.

Usage: sqlalchemy_temp_table.py "<libpq connection string>"

Run by tests/it/clients.rs (python_sqlalchemy_temp_table) with the interpreter named by
PGPORTER_TEST_PYTHON, which scripts/test.sh points at ./target/test-venv. Prints OK on success;
any failure raises (non-zero exit, traceback on stderr).
"""

import sys

import psycopg2
import sqlalchemy
from sqlalchemy import create_engine, text


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} '<libpq connection string>'")
    dsn = sys.argv[1]
    assert sqlalchemy.__version__.startswith("2."), sqlalchemy.__version__
    # The libpq key=value string goes to psycopg2 untouched (no URL re-encoding).
    engine = create_engine(
        "postgresql+psycopg2://",
        creator=lambda: psycopg2.connect(dsn),
        poolclass=sqlalchemy.pool.NullPool,
    )
    with engine.connect() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE porter_tmp (id int PRIMARY KEY, name text)"))
        conn.execute(
            text("INSERT INTO porter_tmp (id, name) VALUES (:id, :name)"),
            [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
        )
        conn.commit()
        # A later statement (and transaction) of the same connection still sees the table.
        rows = conn.execute(text("SELECT id, name FROM porter_tmp ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "one"), (2, "two")], rows
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        again = conn.execute(text("SELECT count(*) FROM porter_tmp")).scalar_one()
        assert again == 2, again
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == backend
    engine.dispose()
    print("OK")


if __name__ == "__main__":
    main()

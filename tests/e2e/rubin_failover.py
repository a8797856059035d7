"""SQLAlchemy engines of several people through pgporter, across a RELOAD and a failover.

Usage:
  rubin_failover.py --dir DIR --host 127.0.0.1 --port RW --ro-port RO --dbname butler
                    --primary P0 --promoted P1 --app-name NAME
                    --person NAME:DRIVER:PASSWORD [--person ...] --reader NAME:DRIVER:PASSWORD

Run by tests/it/rubin.rs, which drives the cluster and pgporter between the phases: this
script writes DIR/ready-N when phase N is done and waits for DIR/go-N before the next.
  1. each person's engine (pool_pre_ping) opens a session on the primary with a temp table
     and SETs and keeps it; another pooled connection goes back to the engine's pool.
     The Rust side then reloads pgporter (the entry's application_name and the pool size).
  2. the kept sessions go on (temp table still there); a new engine's session is on the
     replacing pool (the new application_name). The Rust side then stops the primary, and
     promotes a standby a moment later.
  3. each engine's next checkout: the pre-ping finds the pooled connection dead, the engine
     reconnects, and the session lands on the promoted primary within the failover wait; the
     reader's engine (read-only endpoint) keeps serving.
Prints `OK` at the end; any failed check raises.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

WHERE = text("SELECT inet_server_port(), pg_is_in_recovery()")
DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}


def handshake(workdir: Path, n: int) -> None:
    (workdir / f"ready-{n}").touch()
    deadline = time.monotonic() + 90
    while not (workdir / f"go-{n}").exists():
        assert time.monotonic() < deadline, f"no go-{n} from the test"
        time.sleep(0.05)


def engine(args, spec: str, port: int):
    name, driver, password = spec.split(":", 2)
    url = URL.create(DRIVERS[driver], name, password, args.host, port, args.dbname,
                     {"sslmode": "disable", "connect_timeout": "30"})
    return name, create_engine(url, pool_size=2, max_overflow=0, pool_pre_ping=True)


def main() -> None:
    p = argparse.ArgumentParser()
    for flag in ("--dir", "--host", "--dbname", "--app-name", "--reader"):
        p.add_argument(flag, required=True)
    for flag in ("--port", "--ro-port", "--primary", "--promoted"):
        p.add_argument(flag, type=int, required=True)
    p.add_argument("--person", action="append", required=True)
    args = p.parse_args()
    workdir = Path(args.dir)
    assert sqlalchemy.__version__.startswith("2."), sqlalchemy.__version__

    # 1. Sessions on the primary, one kept per person, one back in each engine's pool.
    people = [engine(args, spec, args.port) for spec in args.person]
    kept = {}
    for name, eng in people:
        c = eng.connect()
        c.execute(text("CREATE TEMPORARY TABLE upload (id int)"))
        c.execute(text("INSERT INTO upload VALUES (1)"))
        c.execute(text("SET TIME ZONE 0"))
        zone = c.execute(text("SHOW TIME ZONE")).scalar_one()
        c.commit()
        kept[name] = (c, zone)
        with eng.connect() as other:
            assert tuple(other.execute(WHERE).one()) == (args.primary, False), name
    reader_name, reader = engine(args, args.reader, args.ro_port)
    with reader.connect() as c:
        port, standby = c.execute(WHERE).one()
        assert standby and port != args.primary, (port, standby)
    print("STEP sessions on the primary", flush=True)
    handshake(workdir, 1)

    # 2. After the reload: kept sessions go on; new sessions use the replacing pool.
    for name, (c, zone) in kept.items():
        assert c.execute(text("SELECT count(*) FROM upload")).scalar_one() == 1, name
        assert c.execute(text("SHOW TIME ZONE")).scalar_one() == zone, name
        c.commit()
        c.close()
    for spec in args.person:
        name, fresh = engine(args, spec, args.port)
        with fresh.connect() as c:
            got = c.execute(text("SHOW application_name")).scalar_one()
            assert got == args.app_name, (name, got)
            # The session before this one on the server connection left nothing behind.
            n = c.execute(text(
                "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()")).scalar_one()
            assert n == 0, (name, n)
        fresh.dispose()
    print("STEP reload", flush=True)
    handshake(workdir, 2)

    # 3. The primary is gone (and promoted elsewhere a moment later): each engine's pooled
    #    connections are dead; pre-ping notices, the engine reconnects and lands on the new one.
    for name, eng in people:
        started = time.monotonic()
        with eng.connect() as c:
            assert tuple(c.execute(WHERE).one()) == (args.promoted, False), name
            c.execute(text("CREATE TEMPORARY TABLE upload (id int)"))
            c.commit()
        took = time.monotonic() - started
        assert took < 25, (name, took)
        print(f"STEP {name} reconnected after the failover in {took:.1f} s", flush=True)
    with reader.connect() as c:
        port, _ = c.execute(WHERE).one()
        assert c.execute(text("SHOW transaction_read_only")).scalar_one() == "on", port
    print(f"STEP {reader_name} still served (port {port})", flush=True)
    print("OK", flush=True)


if __name__ == "__main__":
    main()

"""The Rubin data butler (lsst-daf-butler) end to end through pgporter, as two people.

Usage:
  butler_e2e.py --workdir DIR --host 127.0.0.1 --port PGPORTER_PORT --dbname butler
                --person alice:PASSWORD --person bob:PASSWORD
                [--readonly-port PORT] [--audit-log PATH]

Run by tests/it/butler.rs with the venv interpreter that scripts/test.sh prepares. Everything
goes through pgporter: the butler CLI (`butler create`, `register-dataset-type`, `query-*`) as
subprocesses and the Python API in this process. Credentials come from each person's own
db-auth.yaml (mode 600), named by LSST_DB_AUTH.

Output: the butler commands' output, `STEP name` lines, `SKIP name: reason` lines for steps
whose pgporter feature is not given on the command line (the Rust side counts them), and `OK`
at the end. Any failed assertion raises (traceback, non-zero exit).
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import sqlalchemy
import yaml

# What each optional step needs from pgporter, named for the skip message.
NEEDS = {
    "readonly": "pgporter's read-only endpoint and its 25006 hint (--readonly-port)",
    "audit": "pgporter's audit trail and identity tag (--audit-log)",
}

DATASET_TYPE = "porter_metrics"
INSTRUMENT = "PorterCam"


_current: list[str] = []


def step(name: str | None) -> None:
    """Start step `name` (None: the end); the step before it passed."""
    if _current:
        print(f"PASS butler:{_current.pop()}", flush=True)
    if name is not None:
        _current.append(name)
        print(f"STEP {name}", flush=True)


def skip(name: str, feature: str) -> None:
    print(f"SKIP butler:{name}: needs {NEEDS[feature]}, not in this build", flush=True)


class Person:
    """One butler user: their DSN, their db-auth.yaml, their butler config for the repo."""

    def __init__(self, spec: str, args: argparse.Namespace, repo: Path):
        name, self.driver, self.password = spec.split(":", 2)
        self.name = name
        # db-auth.yaml URLs name the dialect only; the registry URL may name the driver.
        self.auth_url = f"postgresql://{name}@{args.host}:{args.port}/{args.dbname}"
        self.dsn = self.auth_url.replace("postgresql:", f"postgresql+{self.driver}:", 1)
        home = Path(args.workdir) / f"home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        self.db_auth = home / "db-auth.yaml"
        write_db_auth(self.db_auth, [(self.auth_url, self.password)])
        # The repo's butler.yaml names its creator's DSN; everyone else gets a config file of
        # their own in the repo directory (so <butlerRoot> still resolves to the repo).
        self.config = repo / f"butler-{name}.yaml"
        self.env = dict(os.environ, LSST_DB_AUTH=str(self.db_auth))

    def butler_cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the butler CLI as this person; echo its output into the test log."""
        cmd = [str(Path(sys.executable).with_name("butler")), *argv]
        print(f"$ LSST_DB_AUTH={self.db_auth} butler {' '.join(argv)}", flush=True)
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        for stream in (out.stdout, out.stderr):
            lines = stream.rstrip().splitlines()
            if not check and out.returncode != 0:
                lines = lines[-3:]  # an expected failure: its last lines, not the traceback
            if lines:
                print("\n".join(lines), flush=True)
        print(f"[exit {out.returncode}]", flush=True)
        if check and out.returncode != 0:
            raise AssertionError(f"butler {argv[0]} failed with exit {out.returncode}")
        return out

    def butler(self, writeable: bool = True, run: str | None = None):
        """The Python API as this person (LSST_DB_AUTH is read when the butler connects)."""
        from lsst.daf.butler import Butler

        os.environ["LSST_DB_AUTH"] = str(self.db_auth)
        return Butler.from_config(str(self.config), writeable=writeable, run=run)


def write_db_auth(path: Path, entries: list[tuple[str, str]]) -> None:
    """The butler's db-auth.yaml; it refuses files readable by group or others."""
    path.write_text(yaml.safe_dump([{"url": url, "password": pw} for url, pw in entries]))
    path.chmod(0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class TempTableCounter:
    """Counts CREATE TEMPORARY TABLE statements sent by any SQLAlchemy engine in-process."""

    def __init__(self) -> None:
        self.count = 0
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if "CREATE TEMPORARY TABLE" in statement.upper():
            self.count += 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--dbname", default="butler")
    p.add_argument("--person", action="append", required=True, help="name:driver:password")
    p.add_argument("--readonly-port", type=int)
    p.add_argument("--audit-log")
    args = p.parse_args()

    from lsst.daf.butler import CollectionType, DatasetType

    repo = Path(args.workdir) / "repo"
    people = [Person(spec, args, repo) for spec in args.person]
    alice, bob = people[0], people[1]
    temp_tables = TempTableCounter()

    step("create")
    seed = Path(args.workdir) / "seed.yaml"
    seed.write_text(yaml.safe_dump({"registry": {"db": alice.dsn}}))
    alice.butler_cli("create", str(repo), "--seed-config", str(seed))
    config = yaml.safe_load((repo / "butler.yaml").read_text())
    assert config["registry"]["db"] == alice.dsn, config["registry"]
    for person in people:
        own = dict(config, registry=dict(config["registry"], db=person.dsn))
        person.config.write_text(yaml.safe_dump(own))
    alice.butler_cli("config-validate", str(alice.config))

    step("dimensions")
    butler = alice.butler()
    butler.registry.insertDimensionData("instrument", {"name": INSTRUMENT, "detector_max": 8})
    butler.registry.insertDimensionData(
        "detector",
        *[{"instrument": INSTRUMENT, "id": d, "full_name": f"D{d}"} for d in range(1, 5)],
    )
    out = alice.butler_cli("query-dimension-records", str(alice.config), "detector")
    for d in range(1, 5):
        assert f"D{d}" in out.stdout, f"detector D{d} missing from query-dimension-records"

    step("dataset-type")
    alice.butler_cli(
        "register-dataset-type", str(alice.config), DATASET_TYPE, "StructuredDataDict",
        "instrument", "detector",
    )
    out = alice.butler_cli("query-dataset-types", str(alice.config))
    assert DATASET_TYPE in out.stdout, out.stdout
    dataset_type = butler.get_dataset_type(DATASET_TYPE)
    assert set(dataset_type.dimensions.names) >= {"instrument", "detector"}, dataset_type

    step("put-get")
    puts = {
        (person.name, d): {"who": person.name, "detector": d, "value": 10 * d + i}
        for i, person in enumerate(people)
        for d in range(1, 5)
    }
    refs = {}
    for person in people:
        run = f"{person.name}/run1"
        with person.butler(run=run) as b:
            assert b.collections.register(run, CollectionType.RUN) in (True, False)
            for d in range(1, 5):
                data_id = {"instrument": INSTRUMENT, "detector": d}
                refs[(person.name, d)] = b.put(puts[(person.name, d)], DATASET_TYPE, data_id)
    # Each person reads everyone's datasets back.
    for person in people:
        with person.butler(writeable=False) as b:
            for (owner, d), expected in puts.items():
                got = b.get(DATASET_TYPE, {"instrument": INSTRUMENT, "detector": d},
                            collections=f"{owner}/run1")
                assert got == expected, (person.name, owner, d, got, expected)
    print(f"put {len(puts)} datasets, read each back as {len(people)} people", flush=True)

    step("tagged")
    tag = "porter/tagged"
    with bob.butler() as b:
        assert b.collections.register(tag, CollectionType.TAGGED)
        chosen = [refs[("alice", 1)], refs[("alice", 2)], refs[("bob", 3)]]
        b.registry.associate(tag, chosen)
    out = alice.butler_cli("query-collections", str(alice.config))
    for name in ("alice/run1", "bob/run1", tag):
        assert name in out.stdout, f"{name} missing from query-collections"
    info = butler.collections.query_info(tag)
    assert [i.type for i in info] == [CollectionType.TAGGED], info
    tagged = butler.query_datasets(DATASET_TYPE, collections=tag)
    assert sorted((r.dataId["detector"], r.run) for r in tagged) == [
        (1, "alice/run1"), (2, "alice/run1"), (3, "bob/run1")
    ], tagged
    out = bob.butler_cli("query-datasets", str(bob.config), DATASET_TYPE, "--collections", tag)
    assert out.stdout.count(DATASET_TYPE) >= 3, out.stdout

    step("temp-table-queries")
    before = temp_tables.count
    with alice.butler(writeable=False) as b:
        # A where clause over a find-first search of two RUN collections.
        found = b.query_datasets(
            DATASET_TYPE, collections=["bob/run1", "alice/run1"], where=f"instrument = '{INSTRUMENT}' AND detector > 2"
        )
        assert sorted((r.dataId["detector"], r.run) for r in found) == [
            (3, "bob/run1"), (4, "bob/run1")
        ], found
        with b.query() as q:
            # Uploading data IDs and materializing both use temporary tables.
            coords = [b.registry.expandDataId(instrument=INSTRUMENT, detector=d) for d in (2, 4)]
            q = q.join_data_coordinates(coords).materialize()
            ids = sorted(d["detector"] for d in q.data_ids(["detector"]))
            assert ids == [2, 4], ids
            data = sorted(
                (r.dataId["detector"], r.run)
                for r in q.datasets(DATASET_TYPE, collections=["alice/run1"], find_first=True)
            )
            assert data == [(2, "alice/run1"), (4, "alice/run1")], data
    created = temp_tables.count - before
    print(f"temporary tables created by the queries: {created}", flush=True)
    assert created >= 1, "the queries did not use temporary tables"
    out = alice.butler_cli(
        "query-data-ids", str(alice.config), "detector", "--where", f"instrument='{INSTRUMENT}'",
    )
    assert all(f" {d} " in f" {out.stdout} " or f"{d}" in out.stdout for d in range(1, 5))

    step("wrong-password")
    # libpq-based drivers (psycopg2, psycopg 3) put the server's message in the error but not
    # its SQLSTATE; pg8000 shows every field of the ErrorResponse, so the butler's own error
    # shows 28P01 when the registry URL selects it.
    for driver, shows in (("psycopg2", "password authentication failed"), ("pg8000", "28P01")):
        wrong = Path(args.workdir) / f"home-wrong-{driver}" / "db-auth.yaml"
        wrong.parent.mkdir(parents=True, exist_ok=True)
        write_db_auth(wrong, [(alice.auth_url, alice.password + "-wrong")])
        config = yaml.safe_load(alice.config.read_text())
        config["registry"]["db"] = alice.auth_url.replace("postgresql:", f"postgresql+{driver}:")
        wrong_config = repo / f"butler-wrong-{driver}.yaml"
        wrong_config.write_text(yaml.safe_dump(config))
        bad = Person.__new__(Person)
        bad.__dict__.update(alice.__dict__, db_auth=wrong, env=dict(alice.env, LSST_DB_AUTH=str(wrong)))
        out = bad.butler_cli("query-collections", str(wrong_config), check=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0, f"a wrong password was accepted ({driver})"
        assert 'password authentication failed for user "alice"' in text, text
        assert shows in text, f"{shows!r} not in the butler's error ({driver})"
    print("wrong password: the butler's error shows SQLSTATE 28P01", flush=True)
    step(None)

    if args.readonly_port is None:
        skip("readonly", "readonly")
    else:
        readonly(args, repo, people)

    if args.audit_log is None:
        skip("audit", "audit")
    else:
        audit(args, people)

    print("OK", flush=True)


def readonly(args: argparse.Namespace, repo: Path, people: list[Person]) -> None:
    """Bob through the read-only endpoint: temporary tables off; a write shows the 25006 hint.
    Run when --readonly-port is given."""
    step("readonly")
    _readonly(args, repo, people)
    step(None)


def _readonly(args: argparse.Namespace, repo: Path, people: list[Person]) -> None:
    bob = people[1]
    config = yaml.safe_load(bob.config.read_text())
    dsn = f"postgresql://{bob.name}@{args.host}:{args.readonly_port}/{args.dbname}"
    config["registry"] = dict(config["registry"], db=dsn, temporary_tables=False)
    ro_config = repo / f"butler-{bob.name}-readonly.yaml"
    ro_config.write_text(yaml.safe_dump(config))
    write_db_auth(bob.db_auth, [(bob.auth_url, bob.password), (dsn, bob.password)])
    out = bob.butler_cli("query-datasets", str(ro_config), DATASET_TYPE, "--collections", "bob/run1")
    assert out.stdout.count(DATASET_TYPE) >= 4, out.stdout
    out = bob.butler_cli("remove-runs", str(ro_config), "bob/run1", "--no-confirm", check=False)
    text = out.stdout + out.stderr
    # libpq drivers put PostgreSQL's message and pgporter's HINT in the error, not the code.
    refused = "25006" in text or "read-only transaction" in text
    assert out.returncode != 0 and refused, f"no 25006 (read-only) error on a write:\n{text}"
    assert "read-only endpoint" in text.lower() or "read-write" in text.lower(), (
        f"no pgporter read-only HINT in the error:\n{text}"
    )


def audit(args: argparse.Namespace, people: list[Person]) -> None:
    """Every write attributed to the right person. Run when --audit-log is given."""
    step("audit")
    _audit(args, people)
    step(None)


def _audit(args: argparse.Namespace, people: list[Person]) -> None:
    import json

    events = [json.loads(line) for line in Path(args.audit_log).read_text().splitlines()]
    for person in people:
        mine = [e for e in events if e.get("client_user") == person.name]
        assert mine, f"no audit events for {person.name}"
        writes = [e for e in mine if e["event"] == "statement" and e["outcome"] == "ok"]
        assert writes, f"no logged writes for {person.name}"
        print(f"audit: {person.name}: {len(writes)} write statements logged", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The one test command: unit tests, the integration binary (tests/it) against a real
# PostgreSQL 15, doc tests. Installs what the integration tests need when it can:
#   - PostgreSQL 15 server + client binaries (apt, as root),
#   - a Python venv at ./target/test-venv with psycopg2-binary and SQLAlchemy 2,
# and exports PGPORTER_TEST_PYTHON so no test is skipped. Exits non-zero on any failure.
#
# Extra arguments go to the test binaries, e.g. `scripts/test.sh session::` to filter.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN="${PGPORTER_PG_BIN:-/usr/lib/postgresql/15/bin}"
VENV="$PWD/target/test-venv"

log() { printf '==> %s\n' "$*" >&2; }

ensure_postgres() {
  if [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pgbench" && -x "$PG_BIN/psql" ]]; then
    return
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    log "PostgreSQL 15 binaries not found in $PG_BIN."
    log "Install them (Debian/Ubuntu: sudo apt-get install -y postgresql-15 postgresql-client-15,"
    log "from apt.postgresql.org if your release lacks 15) or set PGPORTER_PG_BIN to their directory."
    exit 1
  fi
  log "installing postgresql-15 and postgresql-client-15"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends postgresql-15 postgresql-client-15
  [[ -x "$PG_BIN/initdb" ]] || { log "still no $PG_BIN/initdb after apt-get"; exit 1; }
}

ensure_venv() {
  if [[ -x "$VENV/bin/python" ]] &&
     "$VENV/bin/python" -c 'import psycopg2, sqlalchemy; assert sqlalchemy.__version__.startswith("2.")' 2>/dev/null; then
    return
  fi
  log "creating Python venv $VENV (psycopg2-binary, sqlalchemy 2)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'psycopg2-binary>=2.9' 'sqlalchemy>=2,<3'
}

log "versions:"
cargo --version >&2
rustc --version >&2
ensure_postgres
"$PG_BIN/postgres" --version >&2
python3 --version >&2
ensure_venv
export PGPORTER_TEST_PYTHON="$VENV/bin/python"
export PGPORTER_PG_BIN="$PG_BIN"

# Skip notices are written straight to stderr (not captured by libtest), so they show here.
log "cargo test --all-targets"
cargo test --all-targets -- "$@"
log "cargo test --doc"
cargo test --doc
log "all tests passed"

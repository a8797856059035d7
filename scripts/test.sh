#!/usr/bin/env bash
# The one test command: unit tests, the integration binary (tests/it) against a real
# PostgreSQL 15, doc tests. Installs what the integration tests need when it can:
#   - PostgreSQL 15 server + client binaries (apt, as root),
#   - a Python venv at ./target/test-venv with the drivers of the driver matrix (psycopg2-binary,
#     psycopg 3, asyncpg, pg8000, SQLAlchemy 2) and the Rubin data butler (lsst-daf-butler),
#   - Debian's PostgreSQL JDBC driver (libpostgresql-jdbc-java) for the JDBC column,
#   - PgBouncer (apt, as root; its service is never started) for the benchmark smoke run,
#   - pgbadger (apt, as root) for the log_format = pgbouncer test,
# and exports PGPORTER_TEST_PYTHON. Skips are never silent: each prints its reason, and the
# list and count of skips (PGPORTER_SKIP_LOG) is printed at the end. Exits non-zero on any failure.
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

# First install ~45 s and ~450 MB (lsst-daf-butler brings astropy and numpy); reused afterwards.
PY_PACKAGES=('psycopg2-binary>=2.9' 'sqlalchemy>=2,<3' 'psycopg[binary]>=3.1' 'asyncpg>=0.29'
  'pg8000>=1.30' 'lsst-daf-butler')
PY_CHECK='import psycopg2, psycopg, asyncpg, pg8000, sqlalchemy, lsst.daf.butler
assert sqlalchemy.__version__.startswith("2."), sqlalchemy.__version__'

ensure_venv() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "$PY_CHECK" 2>/dev/null; then
    return
  fi
  log "creating Python venv $VENV (${PY_PACKAGES[*]})"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  "$VENV/bin/python" -c "$PY_CHECK"
}

# The JDBC column of the driver matrix; without root or apt the test skips with its reason.
ensure_jdbc() {
  if [[ -f /usr/share/java/postgresql.jar ]] || [[ "$(id -u)" -ne 0 ]]; then
    return
  fi
  log "installing libpostgresql-jdbc-java"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends libpostgresql-jdbc-java >/dev/null ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends libpostgresql-jdbc-java >/dev/null; } ||
    log "could not install libpostgresql-jdbc-java: the JDBC test will skip"
}

# PgBouncer for the benchmark's side-by-side column. Its package would start the system service:
# a policy-rc.d that refuses (exit 101) keeps it stopped (Docker images ship one already).
ensure_pgbouncer() {
  if command -v pgbouncer >/dev/null || [[ -x /usr/sbin/pgbouncer ]] || [[ "$(id -u)" -ne 0 ]]; then
    return
  fi
  log "installing pgbouncer (service not started)"
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends pgbouncer >/dev/null ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends pgbouncer >/dev/null; } ||
    log "could not install pgbouncer: the benchmark smoke run leaves its column out"
  if [[ "$own_policy" == 1 ]]; then rm -f "$policy"; fi
}

# pgbadger (a Perl script and two Perl modules) for the log_format = pgbouncer test, which reads
# pgporter's log with it as operators read PgBouncer's.
ensure_pgbadger() {
  if command -v pgbadger >/dev/null || [[ "$(id -u)" -ne 0 ]]; then
    return
  fi
  log "installing pgbadger"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends pgbadger >/dev/null ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends pgbadger >/dev/null; } ||
    log "could not install pgbadger: the log_format test's pgbadger part will skip"
}

log "versions:"
cargo --version >&2
rustc --version >&2
ensure_postgres
"$PG_BIN/postgres" --version >&2
python3 --version >&2
ensure_venv
ensure_jdbc
ensure_pgbouncer
ensure_pgbadger
export PGPORTER_TEST_PYTHON="$VENV/bin/python"
export PGPORTER_SKIP_LOG="$PWD/target/test-skips.log"
: >"$PGPORTER_SKIP_LOG"

TEST_LOG="$PWD/target/test-output.log"
: >"$TEST_LOG"

# At exit: the skips with their reasons, then one closing line summing every libtest run
# ("N passed, N failed, N skipped"), so CI reads the whole suite's count, not the last binary's.
report() {
  local n passed failed
  n=$(wc -l <"$PGPORTER_SKIP_LOG")
  log "skips: $n (each with its reason)"
  sed 's/^/    /' "$PGPORTER_SKIP_LOG" >&2
  passed=$(grep -ho '^test result: .*' "$TEST_LOG" | grep -o '[0-9]* passed' | awk '{s+=$1} END {print s+0}')
  failed=$(grep -ho '^test result: .*' "$TEST_LOG" | grep -o '[0-9]* failed' | awk '{s+=$1} END {print s+0}')
  echo "tests: $passed passed, $failed failed, $n skipped"
}
trap report EXIT
export PGPORTER_PG_BIN="$PG_BIN"

# Skip notices are written straight to stderr (not captured by libtest), so they show here.
# --all-targets also builds the idle_clients example and runs each criterion micro-benchmark once
# (criterion's test mode), so the benches keep compiling without a separate `cargo bench --no-run`.
log "cargo test --all-targets"
cargo test --all-targets -- "$@" 2>&1 | tee "$TEST_LOG"
# The load benchmark's short mode as a smoke test (debug build: it must complete, speed is not
# judged). Skipped when a test filter was given.
if [[ $# -eq 0 ]]; then
  if ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
    echo "benchmark smoke run: pgbouncer not installed, its column is left out" >>"$PGPORTER_SKIP_LOG"
  fi
  log "benchmark smoke run: SHORT=1 PROFILE=dev benches/compare.sh"
  SHORT=1 PROFILE=dev OUT="$PWD/target/bench-smoke.json" bash benches/compare.sh
  # The soak's short mode (about a minute): idle clients, churn, and a mixed soak with faults;
  # fails on any unexcused failed session, leaked fd or server connection.
  log "soak, short mode (benches/soak)"
  bash scripts/soak.sh short
fi
log "all tests passed"

#!/usr/bin/env bash
# Try pgporter locally: build it, start a throwaway PostgreSQL 15 in ./.dev/pg on
# 127.0.0.1:54329 with roles alice/bob (password "secret") and rubin ("rubin-secret") and a
# database butler, then run pgporter with config/pgporter.ini in the foreground (Ctrl-C stops
# both). As root, PostgreSQL runs as the `postgres` OS user (initdb refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN="${PGPORTER_PG_BIN:-/usr/lib/postgresql/15/bin}"
PGDATA_DIR="$PWD/.dev/pg"
PG_PORT=54329

if [[ ! -x "$PG_BIN/initdb" ]]; then
  echo "PostgreSQL 15 not found in $PG_BIN: apt-get install postgresql-15 postgresql-client-15" >&2
  echo "(or set PGPORTER_PG_BIN to the directory holding initdb, pg_ctl, psql)" >&2
  exit 1
fi

as_pg() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

psql_su() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDATA_DIR" -p "$PG_PORT" -U postgres -d "${1:-postgres}"
}

cargo build --release

mkdir -p "$PGDATA_DIR"
if [[ "$(id -u)" -eq 0 ]]; then
  chown postgres:postgres "$PGDATA_DIR"
fi

if [[ ! -f "$PGDATA_DIR/data/PG_VERSION" ]]; then
  echo "==> initdb $PGDATA_DIR/data"
  as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR/data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  cat >"$PGDATA_DIR/data/pg_hba.conf" <<HBA
local all all trust
host all all 127.0.0.1/32 scram-sha-256
HBA
fi

stop_pg() {
  echo "==> stopping PostgreSQL ($PGDATA_DIR/data)"
  as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR/data" -m fast >/dev/null 2>&1 || true
}

if as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA_DIR/data" >/dev/null 2>&1; then
  echo "==> reusing the running PostgreSQL in $PGDATA_DIR (stopped when this script exits)"
else
  echo "==> starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" start -w -D "$PGDATA_DIR/data" -l "$PGDATA_DIR/server.log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PGDATA_DIR -c password_encryption=scram-sha-256" \
    >/dev/null
fi
trap stop_pg EXIT
trap 'exit 130' INT TERM

echo "==> roles alice, bob, rubin; database butler"
psql_su postgres <<'SQL'
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES ('alice', 'secret'), ('bob', 'secret'), ('rubin', 'rubin-secret')) v(name, pw) LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', r.name);
    END IF;
    EXECUTE format('ALTER ROLE %I PASSWORD %L', r.name, r.pw);
  END LOOP;
END $$;
SELECT 'CREATE DATABASE butler OWNER rubin'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'butler') \gexec
GRANT CONNECT, TEMPORARY ON DATABASE butler TO alice, bob;
SQL
psql_su butler <<'SQL'
GRANT USAGE, CREATE ON SCHEMA public TO alice, bob;
SQL

# The example config puts the unix socket in /var/run/postgresql (Debian's default for psql).
# Where that directory cannot be used, run a copy of the config with the socket in /tmp.
config=config/pgporter.ini
if [[ "$(id -u)" -eq 0 ]]; then
  mkdir -p /var/run/postgresql
fi
if [[ ! -w /var/run/postgresql ]]; then
  mkdir -p .dev
  sed 's|^unix_socket_dir = .*|unix_socket_dir = /tmp|' config/pgporter.ini >.dev/pgporter.ini
  cp config/userlist.txt .dev/userlist.txt
  config=.dev/pgporter.ini
  echo "==> /var/run/postgresql is not writable: unix socket in /tmp instead (use psql -h /tmp)"
fi

echo
echo "pgporter is starting on 127.0.0.1:6432 ($config). In another terminal:"
echo
echo "  psql \"postgresql://alice:secret@127.0.0.1:6432/butler\" -c 'select current_user'"
echo "  PGPASSWORD=secret psql -p 6432 -U admin pgbouncer -c 'SHOW POOLS'   # admin console"
echo "  curl -s localhost:9127/metrics | grep pgbouncer_pools                 # Prometheus"
echo
target/release/pgporter "$config"

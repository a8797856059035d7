#!/usr/bin/env bash
# pgbench through pgporter (release build) with audit_statements = none / write / all.
#   bash benches/audit_pgbench.sh [seconds per run] [rounds]     (short: ... 2 1, ~10 s)
# Starts a throwaway PostgreSQL 15 on a free loopback port (as `postgres` when root), runs
# `pgbench -S -c 16 -j 2` (read-only, simple protocol) for each setting, alternating the
# settings over several rounds to even out machine noise, prints tps per run and the ratios.
# Ports come from below the kernel's ephemeral range (bench_tool.py free-ports, as
# compare.sh's). PGPORTER_BIN runs another pgporter binary (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-15}"
ROUNDS="${2:-2}"
PG_BIN="${PGPORTER_PG_BIN:-/usr/lib/postgresql/15/bin}"
BIN="${PGPORTER_BIN:-$PWD/target/release/pgporter}"
[[ -x "$BIN" ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v ss >/dev/null || { echo "ss (iproute2) is needed to wait for pgporter" >&2; exit 1; }

DIR="$(mktemp -d /tmp/pgporter-bench-XXXXXX)"
as_pg() { if [[ "$(id -u)" -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ "$(id -u)" -eq 0 ]] && chown postgres "$DIR"
# Picked with bind(0) and released, a port is in the range where bind(0) and every outgoing
# connection's local end get theirs, and could be taken before initdb and pgbench -i are done.
read -r PG_PORT PORTER_PORT < <(python3 benches/bench_tool.py free-ports 2 | paste -sd' ')
[[ -n "$PORTER_PORT" ]] || { echo "no free ports" >&2; exit 1; }
PORTER_PID=""
cleanup() {
  [[ -n "$PORTER_PID" ]] && kill "$PORTER_PID" 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl" stop -D "$DIR/data" -m immediate >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres -E UTF8 --locale=C --auth-local=trust \
  --auth-host=scram-sha-256 >/dev/null
as_pg "$PG_BIN/pg_ctl" start -w -D "$DIR/data" -l "$DIR/pg.log" -o \
  "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$DIR -c fsync=off -c max_connections=100" >/dev/null
"$PG_BIN/psql" -X -q -h "$DIR" -p "$PG_PORT" -U postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" \
  -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench "$PG_BIN/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1
echo '"bench" "bench"' >"$DIR/userlist.txt"

# Until pgporter (pid $1) listens on $2, up to 30 s; fails if it exits first.
wait_listen() {
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$1" 2>/dev/null || { echo "pgporter exited at start: $(tail -n 5 "$DIR/pgporter.err")" >&2; return 1; }
    ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  echo "pgporter is not listening on 127.0.0.1:$2 after 30 s" >&2
  return 1
}

run() {
  local mode="$1" port="$PORTER_PORT"
  cat >"$DIR/pgporter.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_file = userlist.txt
default_pool_size = 16
log_connections = 0
log_disconnections = 0
audit_log = $DIR/audit-$mode.log
audit_statements = $mode
INI
  "$BIN" -q "$DIR/pgporter.ini" 2>>"$DIR/pgporter.err" &
  PORTER_PID=$!
  wait_listen "$PORTER_PID" "$port" || { kill "$PORTER_PID" 2>/dev/null; return 1; }
  local tps
  tps=$(PGPASSWORD=bench "$PG_BIN/pgbench" -n -S -c 16 -j 2 -T "$SECS" -h 127.0.0.1 -p "$port" \
        -U bench bench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  kill "$PORTER_PID"; wait "$PORTER_PID" 2>/dev/null || true; PORTER_PID=""
  echo "$mode $tps $(wc -l <"$DIR/audit-$mode.log")"
}

declare -A SUM
for r in $(seq "$ROUNDS"); do
  for mode in none write all; do
    read -r m tps lines < <(run "$mode")
    echo "round $r: audit_statements=$m tps=$tps (audit lines so far: $lines)"
    SUM[$m]=$(python3 -c "print(${SUM[$m]:-0} + $tps)")
  done
done
python3 - "${SUM[none]}" "${SUM[write]}" "${SUM[all]}" "$ROUNDS" <<'PY'
import sys
none, write, all_, n = map(float, sys.argv[1:])
print(f"mean tps: none={none/n:.0f} write={write/n:.0f} all={all_/n:.0f}")
print(f"write/none = {write/none:.3f}   all/none = {all_/none:.3f}")
PY

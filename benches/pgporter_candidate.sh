#!/usr/bin/env bash
# Start pgporter as the benchmark "candidate" from the BENCH_* variables that
# ../shared/bench/compare.sh and benches/compare.sh export (see their headers):
#   CANDIDATE_CMD="$PWD/benches/pgporter_candidate.sh" ../shared/bench/compare.sh
# WORKER_THREADS (or BENCH_WORKER_THREADS), when set, becomes `worker_threads` (0 = one per CPU).
# BENCH_TX_POOL_SIZE, when set, adds database ${BENCH_DB}_tx: the same, in transaction mode.
# Session mode, SCRAM client auth from the same auth file PgBouncer gets, same pool size.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${PGPORTER_BIN:-$here/target/release/pgporter}"
dir="${BENCH_RUN_DIR:-/tmp}/pgporter-candidate"
mkdir -p "$dir"
cp "$BENCH_AUTH_FILE" "$dir/userlist.txt"
# The auth file holds the server's SCRAM secret; until SCRAM passthrough is configured the
# backend login uses the bench password from the database entry.
cat >"$dir/pgporter.ini" <<INI
[databases]
$BENCH_DB = host=$BENCH_PG_HOST port=$BENCH_PG_PORT dbname=$BENCH_DB password=$BENCH_PASSWORD
${BENCH_TX_POOL_SIZE:+${BENCH_DB}_tx = host=$BENCH_PG_HOST port=$BENCH_PG_PORT dbname=$BENCH_DB password=$BENCH_PASSWORD pool_mode=transaction pool_size=$BENCH_TX_POOL_SIZE}
[pgbouncer]
listen_addr = $BENCH_LISTEN_HOST
listen_port = $BENCH_LISTEN_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = userlist.txt
pool_mode = ${BENCH_POOL_MODE:-session}
default_pool_size = $BENCH_POOL_SIZE
max_client_conn = $BENCH_MAX_CLIENT_CONN
log_connections = 0
log_disconnections = 0
INI
threads="${BENCH_WORKER_THREADS:-${WORKER_THREADS:-}}"
if [[ -n "$threads" ]]; then
    echo "worker_threads = $threads" >>"$dir/pgporter.ini"
fi
# BENCH_WRAP: a command line to run pgporter under (benches/compare.sh CALLGRIND=1: valgrind)
# shellcheck disable=SC2086
exec ${BENCH_WRAP:-} "$bin" -q "$dir/pgporter.ini"

#!/usr/bin/env bash
# benches/compare.sh - pgporter's load benchmark: direct PostgreSQL vs PgBouncer vs pgporter, side by
# side in one run on one machine, pgbench over TCP on 127.0.0.1 with SCRAM-SHA-256.
#
# It starts everything it needs in a temporary directory and stops it at exit: a PostgreSQL 15
# server (as OS user postgres when run as root), pgbench data, pgporter (release build, started by
# benches/pgporter_candidate.sh) and, when installed, PgBouncer (session mode, same auth file with
# the server's exact SCRAM secret, same pool size). Ports are picked free on 127.0.0.1.
#
#   W1 pgbench -S -M simple -c 16 -j 2          W2 the same with -M extended
#   W3 pgbench -S -C -c 16 -j 2 (connect per transaction: full SCRAM each time)
#   W4 pgbench -S -C -c $W4_CLIENTS -j 2        (direct skipped if max_connections is too low)
#   W5 pgbench -S -c 1 -j 1 -l: p50/p99 latency from the per-transaction log
#   W6 $IDLE_CLIENTS logged-in idle clients (target/*/examples/idle_clients): pooler RSS per client
#   W7 pooler CPU microseconds per transaction (/proc/PID/stat) during W1 and W3
#   W8 transaction pool mode: pgbench -b tpcb-like -M simple -c $W8_CLIENTS -j 2 through a pool of
#      $W8_POOL_SIZE (database bench_tx, pool_mode=transaction in both poolers; direct: $W8_CLIENTS
#      connections of its own).
#   W9 named prepared statements in transaction mode: pgbench -S -M prepared -c $W8_CLIENTS -j 2
#      through the same pool (pgporter renames them per server connection; PgBouncer before 1.21
#      cannot, so its cell is left out).
# Each round runs every target once per workload (A B C, then C B A, ...); a cell is the median of rounds.
#
# Usage: bash benches/compare.sh            (full: ~10 min)     SHORT=1 bash benches/compare.sh (~1-2 min)
# Knobs (environment; full / SHORT=1 defaults):
#   DURATION [10 / 2] s per pgbench run   ROUNDS [3 / 1]   WARMUP [3 / 1] s per target
#   SCALE [10 / 1]   IDLE_CLIENTS [10000 / 100]   IDLE_CONCURRENCY [64]   W4_CLIENTS [200]
#   POOL_SIZE [20]   W8_CLIENTS [32]   W8_POOL_SIZE [8]   MAX_CONNECTIONS [300]   SCRAM_ITER [4096] iterations of the bench role's secret
#   WORKLOADS ["W6 W1 W2 W3 W4 W5 W8 W9"] (W6 first: the poolers are still fresh; W7 comes from W1/W3)
#   PGBOUNCER [auto] 0 = leave PgBouncer out    WORKER_THREADS [unset] pgporter's worker_threads
#   PROFILE [release] cargo profile for pgporter and idle_clients (dev = the debug build)
#   OUT [target/bench.json]   KEEP [0] 1 = keep the temp dir (logs, raw pgbench output)
#   PGBIN [/usr/lib/postgresql/15/bin]
#   SERVER_SOCKET [tcp] unix = both poolers reach PostgreSQL over its unix socket (as a sidecar in
#                 PostgreSQL's pod could; local logins are trust in this cluster); clients stay on TCP
#   CALLGRIND [0] 1 = count instead of time: both poolers run under valgrind --tool=callgrind and
#                 the table gives user-space instructions per transaction (C1 -M simple, C2 -M
#                 extended: -c 1 -t CG_XACTS [20000] after 1000) and per connection (C3 -C -c 1
#                 -t CG_CONNS [300] after 50). Counts do not depend on the machine's load or steal.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOL="$ROOT/benches/bench_tool.py"
SHORT="${SHORT:-0}"
if [[ "$SHORT" == 1 ]]; then
    : "${DURATION:=2}" "${ROUNDS:=1}" "${WARMUP:=1}" "${SCALE:=1}" "${IDLE_CLIENTS:=100}"
else
    : "${DURATION:=10}" "${ROUNDS:=3}" "${WARMUP:=3}" "${SCALE:=10}" "${IDLE_CLIENTS:=10000}"
fi
: "${CALLGRIND:=0}" "${CG_XACTS:=20000}" "${CG_CONNS:=300}"
: "${IDLE_CONCURRENCY:=64}" "${W4_CLIENTS:=200}" "${POOL_SIZE:=20}" "${MAX_CONNECTIONS:=300}"
: "${W8_CLIENTS:=32}" "${W8_POOL_SIZE:=8}"
: "${SCRAM_ITER:=4096}" "${WORKLOADS:=W6 W1 W2 W3 W4 W5 W8 W9}" "${PGBOUNCER:=auto}" "${PROFILE:=release}"
: "${OUT:=$ROOT/target/bench.json}" "${KEEP:=0}" "${PGBIN:=/usr/lib/postgresql/15/bin}"
: "${SERVER_SOCKET:=tcp}"
PGBENCH="$PGBIN/pgbench"
[[ -x "$PGBENCH" ]] || PGBENCH="$(command -v pgbench || true)"
DB=bench USER_NAME=bench PASSWORD="bench-$RANDOM-$RANDOM"
T0=$(date +%s)

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
stop_pid() { # pid [seconds]: TERM, then KILL after the grace period
    local pid="$1" i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${2:-10} * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
wait_listen() { # pid port name
    local i
    for ((i = 0; i < 300; i++)); do
        alive "$1" || die "$3 exited at start (log: $RUN/$3.log): $(tail -n 5 "$RUN/$3.log" 2>/dev/null)"
        listening "$2" && return 0
        sleep 0.1
    done
    die "$3 is not listening on 127.0.0.1:$2 after 30 s"
}

[[ -x "$PGBIN/initdb" && -n "$PGBENCH" ]] || die "PostgreSQL 15 binaries not found in $PGBIN (set PGBIN)"
command -v ss >/dev/null || die "ss (iproute2) is needed to wait for listeners"
WRAP=() # CALLGRIND=1: the command line both poolers run under
if [[ "$CALLGRIND" == 1 ]]; then
    command -v valgrind >/dev/null || die "CALLGRIND=1 needs valgrind (apt-get install valgrind)"
fi
if [[ "$(id -u)" -eq 0 ]]; then
    OSUSER=postgres
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/tmp)
else
    OSUSER="$(id -un)"
    AS_PG=(env)
fi
PGB_BIN=""
if [[ "$PGBOUNCER" != 0 ]]; then
    PGB_BIN="$(command -v pgbouncer || { [[ -x /usr/sbin/pgbouncer ]] && echo /usr/sbin/pgbouncer; } || true)"
    [[ -n "$PGB_BIN" ]] || log "pgbouncer is not installed (apt-get install pgbouncer): its column is skipped"
fi

# Idle clients need one descriptor each, in the pooler and in the client: raise the soft limit.
need_fds=$((IDLE_CLIENTS + W4_CLIENTS + 4 * POOL_SIZE + 200))
if (($(ulimit -Sn) < need_fds)); then
    hard="$(ulimit -Hn)"
    [[ "$hard" == unlimited ]] && hard=$need_fds
    ulimit -Sn "$((need_fds < hard ? need_fds : hard))"
    (($(ulimit -Sn) >= need_fds)) || log "fd limit $(ulimit -Sn) < $need_fds: W6 may fail for large IDLE_CLIENTS"
fi

RUN="$(mktemp -d /tmp/pgporter-bench.XXXXXX)"
chmod 0755 "$RUN"
mkdir -p "$RUN/data" "$RUN/sock" "$RUN/pgbouncer" "$RUN/lat"
chmod 0700 "$RUN/data"
chown "$OSUSER:" "$RUN/data" "$RUN/sock" "$RUN/pgbouncer" "$RUN/lat" 2>/dev/null || true
if [[ "$CALLGRIND" == 1 ]]; then
    mkdir -p "$RUN/callgrind"
    chmod 0777 "$RUN/callgrind"
    WRAP=(valgrind --tool=callgrind "--callgrind-out-file=$RUN/callgrind/%q{BENCH_TARGET}.out")
fi
PG_PID="" PGB_PID="" PORTER_PID="" IDLE_PID="" BENCH_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$IDLE_PID" 5
    stop_pid "$BENCH_PID" 5
    stop_pid "$PORTER_PID" 10
    stop_pid "$PGB_PID" 10
    if [[ -f "$RUN/data/postmaster.pid" ]]; then
        "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$RUN/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ "$KEEP" == 1 || "$rc" -ne 0 ]]; then log "run directory kept: $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r PG_PORT PGB_PORT PORTER_PORT < <(python3 "$TOOL" free-ports 3 | paste -sd' ')

# ------------------------------------------------------------------ build --
if [[ "$PROFILE" == dev || "$PROFILE" == debug ]]; then BIN_DIR="$ROOT/target/debug"; else BIN_DIR="$ROOT/target/$PROFILE"; fi
log "cargo build --profile $PROFILE (pgporter, idle_clients)"
(cd "$ROOT" && cargo build -q --profile "$PROFILE" --bin pgporter --example idle_clients) || die "cargo build failed"
export PGPORTER_BIN="$BIN_DIR/pgporter"
IDLE_BIN="$BIN_DIR/examples/idle_clients"

# ------------------------------------------------------------- PostgreSQL --
log "initdb + start PostgreSQL on 127.0.0.1:$PG_PORT ($RUN)"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$RUN/data" -U postgres -A trust --auth-host=scram-sha-256 -E UTF8 \
    --locale=C.UTF-8 >"$RUN/initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$RUN/initdb.log")"
cat >>"$RUN/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN/sock'
max_connections = $MAX_CONNECTIONS
password_encryption = 'scram-sha-256'
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
jit = off
EOF
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$RUN/data" -l "$RUN/sock/postgres.log" -w -t 60 start >/dev/null ||
    die "PostgreSQL did not start: $(tail -n 5 "$RUN/sock/postgres.log")"
PG_PID="$(head -1 "$RUN/data/postmaster.pid")"
psql_admin() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN/sock" -p "$PG_PORT" -U postgres "$@"; }
secret="$(python3 "$TOOL" scram-secret "$PASSWORD" "$SCRAM_ITER")"
psql_admin -d postgres -v secret="$secret" >/dev/null <<EOF
CREATE ROLE $USER_NAME LOGIN PASSWORD :'secret';
CREATE DATABASE $DB OWNER $USER_NAME;
EOF
log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h "$RUN/sock" -p "$PG_PORT" -U "$USER_NAME" "$DB" >"$RUN/pgbench-init.log" 2>&1 ||
    die "pgbench -i failed: $(tail -n 5 "$RUN/pgbench-init.log")"
psql_admin -d "$DB" -c 'CREATE EXTENSION IF NOT EXISTS pg_prewarm' \
    -c "SELECT pg_prewarm(c) FROM unnest(ARRAY['pgbench_accounts','pgbench_accounts_pkey','pgbench_branches','pgbench_tellers']) c" \
    >/dev/null 2>&1 || log "pg_prewarm not available: the first runs warm the cache"
# The auth file both poolers read: the server's exact SCRAM secret, so they can log in with the
# ClientKey recovered from the client's proof.
psql_admin -d postgres -At -c "SELECT format('\"%s\" \"%s\"', rolname, rolpassword) FROM pg_authid WHERE rolname = '$USER_NAME'" \
    >"$RUN/userlist.txt"
chown "$OSUSER:" "$RUN/userlist.txt"
chmod 0600 "$RUN/userlist.txt"
MAX_CLIENT_CONN=$((IDLE_CLIENTS > 10000 ? IDLE_CLIENTS + 100 : 10100))

# ---------------------------------------------------------------- poolers --
case "$SERVER_SOCKET" in
tcp) SERVER_HOST=127.0.0.1 ;;
unix) SERVER_HOST="$RUN/sock" ;;
*) die "SERVER_SOCKET must be tcp or unix, not $SERVER_SOCKET" ;;
esac
TARGETS=(direct)
if [[ -n "$PGB_BIN" ]]; then
    cat >"$RUN/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$DB = host=$SERVER_HOST port=$PG_PORT dbname=$DB
${DB}_tx = host=$SERVER_HOST port=$PG_PORT dbname=$DB pool_mode=transaction pool_size=$W8_POOL_SIZE
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $RUN/userlist.txt
pool_mode = session
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $RUN/pgbouncer/pgbouncer.log
pidfile = $RUN/pgbouncer/pgbouncer.pid
EOF
    chown -R "$OSUSER:" "$RUN/pgbouncer"
    # pgbouncer refuses to run as root; setpriv execs, so $! is pgbouncer itself
    BENCH_TARGET=pgbouncer "${AS_PG[@]}" "${WRAP[@]}" "$PGB_BIN" --quiet "$RUN/pgbouncer/pgbouncer.ini" </dev/null >"$RUN/pgbouncer.log" 2>&1 &
    PGB_PID=$!
    wait_listen "$PGB_PID" "$PGB_PORT" pgbouncer
    TARGETS+=(pgbouncer)
    log "$("$PGB_BIN" --version | head -1) pid $PGB_PID on 127.0.0.1:$PGB_PORT"
fi
BENCH_TARGET=pgporter BENCH_LISTEN_HOST=127.0.0.1 BENCH_LISTEN_PORT="$PORTER_PORT" BENCH_PG_HOST="$SERVER_HOST" BENCH_PG_PORT="$PG_PORT" \
    BENCH_DB="$DB" BENCH_USER="$USER_NAME" BENCH_PASSWORD="$PASSWORD" BENCH_AUTH_FILE="$RUN/userlist.txt" \
    BENCH_POOL_SIZE="$POOL_SIZE" BENCH_POOL_MODE=session BENCH_TX_POOL_SIZE="$W8_POOL_SIZE" BENCH_MAX_CLIENT_CONN="$MAX_CLIENT_CONN" \
    BENCH_RUN_DIR="$RUN" BENCH_WORKER_THREADS="${WORKER_THREADS:-}" BENCH_WRAP="${WRAP[*]}" \
    bash "$ROOT/benches/pgporter_candidate.sh" </dev/null >"$RUN/pgporter.log" 2>&1 &
PORTER_PID=$!
wait_listen "$PORTER_PID" "$PORTER_PORT" pgporter
TARGETS+=(pgporter)
log "pgporter ($PROFILE) pid $PORTER_PID on 127.0.0.1:$PORTER_PORT${WORKER_THREADS:+, worker_threads=$WORKER_THREADS}"

port_of() { case "$1" in direct) echo "$PG_PORT" ;; pgbouncer) echo "$PGB_PORT" ;; pgporter) echo "$PORTER_PORT" ;; esac; }
pgb_renames() { # PgBouncer 1.21+ renames prepared statements in transaction mode
    local v
    v="$("$PGB_BIN" --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)"
    python3 -c 'import sys; a, b = map(int, sys.argv[1].split(".")); sys.exit(0 if (a, b) >= (1, 21) else 1)' "$v"
}
pid_of() { case "$1" in pgbouncer) echo "$PGB_PID" ;; pgporter) echo "$PORTER_PID" ;; *) echo "" ;; esac; }
conninfo() { # target [workload]: W8 and W9 go through the poolers' transaction-mode entry
    local db="$DB"
    [[ "${2:-}" == W[89] && "$1" != direct ]] && db="${DB}_tx"
    echo "host=127.0.0.1 port=$(port_of "$1") dbname=$db user=$USER_NAME"
}
for t in "${TARGETS[@]}"; do # every target must accept a SCRAM login before anything is measured
    PGPASSWORD="$PASSWORD" "$PGBIN/psql" -X -At -c 'SELECT 1' "$(conninfo "$t")" >/dev/null 2>"$RUN/login.$t.err" ||
        die "SCRAM login through $t failed: $(cat "$RUN/login.$t.err")"
done

# ---------------------------------------------------------------- W6 -------
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
idle_test() { # target: writes one JSON object to $RUN/w6.$t.json
    local t="$1" pid r0 r1 ready="$RUN/idle.$t.json" i res
    pid="$(pid_of "$t")"
    r0="$(rss_kb "$pid")"
    log "W6: $IDLE_CLIENTS idle SCRAM clients -> $t (pid $pid, RSS $r0 KB)"
    PGPASSWORD="$PASSWORD" "$IDLE_BIN" --host 127.0.0.1 --port "$(port_of "$t")" --user "$USER_NAME" --db "$DB" \
        -n "$IDLE_CLIENTS" --concurrency "$IDLE_CONCURRENCY" --ready-file "$ready" </dev/null >"$RUN/idle.$t.log" 2>&1 &
    IDLE_PID=$!
    for ((i = 0; i < 6000; i++)); do [[ -f "$ready" ]] && break; alive "$IDLE_PID" || break; sleep 0.1; done
    if [[ ! -f "$ready" ]]; then
        stop_pid "$IDLE_PID" 5; IDLE_PID=""
        log "W6 $t: idle client did not finish: $(tail -n 3 "$RUN/idle.$t.log")"
        echo "{\"error\": \"idle client did not finish\"}" >"$RUN/w6.$t.json"; return
    fi
    sleep 1
    r1="$(rss_kb "$pid")"
    stop_pid "$IDLE_PID" 10; IDLE_PID=""
    res="$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]) if sys.argv[2] else {}
r0,r1=int(sys.argv[3]),int(sys.argv[4]); a.update(b); a.update(rss_before_kb=r0, rss_during_kb=r1,
  kb_per_client=round((r1-r0)/a["ok"],3) if a["ok"] else None); print(json.dumps(a))' \
        "$(head -1 "$ready")" "$(grep -h '"held"' "$RUN/idle.$t.log" || true)" "$r0" "$r1")"
    log "W6 $t: $res"
    echo "$res" >"$RUN/w6.$t.json"
}

# ------------------------------------------------------------- pgbench -----
RUNS="$RUN/runs.jsonl" MEM="$RUN/memory.json"
: >"$RUNS"
wl_args() {
    case "$1" in
        W1) echo -S -M simple -c 16 -j 2 ;;
        W2) echo -S -M extended -c 16 -j 2 ;;
        W3) echo -S -M simple -C -c 16 -j 2 ;;
        W4) echo -S -M simple -C -c "$W4_CLIENTS" -j 2 ;;
        W5) echo -S -M simple -c 1 -j 1 ;;
        W8) echo -b tpcb-like -M simple -c "$W8_CLIENTS" -j 2 ;;
        W9) echo -S -M prepared -c "$W8_CLIENTS" -j 2 ;;
    esac
}
pgbench_bg() { # log args...: pgbench in the background so that cleanup can stop it
    local logf="$1" rc=0; shift
    PGPASSWORD="$PASSWORD" "$PGBENCH" -n "$@" </dev/null >"$logf" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    return "$rc"
}
snap() { python3 "$TOOL" snap "$$" "$PG_PID" "$PGB_PID" "$PORTER_PID"; }
run_one() { # workload round target
    local wl="$1" rnd="$2" t="$3" logf="$RUN/$1.r$2.$3.log" lat="" before after rc=0 args
    read -r -a args <<<"$(wl_args "$wl")"
    if [[ "$wl" == W5 ]]; then
        rm -rf "$RUN/lat/"*
        lat="$RUN/lat/l"
        args+=(-l "--log-prefix=$lat")
    fi
    before="$(snap)"
    pgbench_bg "$logf" -T "$DURATION" "${args[@]}" "$(conninfo "$t" "$wl")" || rc=$?
    sleep 0.3 # let the postmaster reap exited backends so their CPU is counted
    after="$(snap)"
    python3 "$TOOL" record --workload "$wl" --target "$t" --round "$rnd" --rc "$rc" --log "$logf" \
        --before "$before" --after "$after" --out "$RUNS" --pooler-pid "$(pid_of "$t")" ${lat:+--latlog "$lat"} || true
}

for t in "${TARGETS[@]}"; do
    pgbench_bg "$RUN/warmup.$t.log" -T "$WARMUP" -S -c 16 -j 2 "$(conninfo "$t")" ||
        die "warmup against $t failed: $(tail -n 5 "$RUN/warmup.$t.log")"
done
if [[ "$CALLGRIND" == 1 ]]; then
    # shellcheck source=benches/callgrind_counts.sh
    source "$ROOT/benches/callgrind_counts.sh"
    count_all
    exit 0
fi
mem_parts=()
for wl in $WORKLOADS; do
    if [[ "$wl" == W6 ]]; then
        for t in "${TARGETS[@]}"; do
            [[ "$t" == direct ]] && continue
            idle_test "$t"
            mem_parts+=("\"$t\": $(cat "$RUN/w6.$t.json")")
        done
        printf '{"n": %s, "targets": {%s}}\n' "$IDLE_CLIENTS" "$(IFS=,; echo "${mem_parts[*]}")" >"$MEM"
        continue
    fi
    [[ -n "$(wl_args "$wl")" ]] || die "unknown workload $wl"
    for ((rnd = 1; rnd <= ROUNDS; rnd++)); do
        order=("${TARGETS[@]}") # odd rounds A B C, even rounds C B A: no target always goes first
        if ((rnd % 2 == 0)); then order=($(printf '%s\n' "${TARGETS[@]}" | tac)); fi
        for t in "${order[@]}"; do
            if [[ "$wl" == W4 && "$t" == direct ]] && ((MAX_CONNECTIONS < W4_CLIENTS + 10)); then
                log "W4 direct skipped: $W4_CLIENTS clients > max_connections $MAX_CONNECTIONS - 10"
                continue
            fi
            if [[ "$wl" == W9 && "$t" == pgbouncer ]] && ! pgb_renames; then
                ((rnd > 1)) || log "W9 pgbouncer skipped: $("$PGB_BIN" --version | head -1) has no max_prepared_statements (1.21+)"
                continue
            fi
            run_one "$wl" "$rnd" "$t"
        done
    done
done

# ----------------------------------------------------------------- report --
cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
python3 - "$RUN/meta.json" <<EOF
import json, sys
json.dump({"short": $SHORT == 1, "duration_s": $DURATION, "rounds": $ROUNDS, "scale": $SCALE,
  "pool_size": $POOL_SIZE, "w4_clients": $W4_CLIENTS, "w8_clients": $W8_CLIENTS, "w8_pool_size": $W8_POOL_SIZE, "idle_clients": $IDLE_CLIENTS, "scram_iterations": $SCRAM_ITER,
  "max_connections": $MAX_CONNECTIONS, "server_socket": "$SERVER_SOCKET", "worker_threads": "${WORKER_THREADS:-}", "profile": "$PROFILE",
  "targets": "${TARGETS[*]}".split(), "nproc": $(nproc), "cpu": """$cpu_model""",
  "mem_total_kb": $(awk '/^MemTotal/ {print $2}' /proc/meminfo), "loadavg_end": open("/proc/loadavg").read().split()[:3],
  "kernel": """$(uname -r)""", "postgres": """$("$PGBIN/postgres" --version)""",
  "pgbouncer": """$([[ -n "$PGB_BIN" ]] && "$PGB_BIN" --version | head -1)""",
  "pgporter_commit": """$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)""",
  "wall_s": $(($(date +%s) - T0))}, open(sys.argv[1], "w"), indent=1)
EOF
mkdir -p "$(dirname "$OUT")"
echo "pgporter benchmark: $(nproc) CPUs ($cpu_model), load average $(cut -d' ' -f1-3 /proc/loadavg), poolers reach PostgreSQL over $SERVER_SOCKET"
python3 "$TOOL" report "$RUNS" "$MEM" "$RUN/meta.json" "$OUT" || die "some runs failed (pgbench logs in $RUN)"
log "JSON written to $OUT; wall time $(($(date +%s) - T0)) s"

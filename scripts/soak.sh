#!/usr/bin/env bash
# Load and soak pgporter (benches/soak): `scripts/soak.sh short` (about a minute, also run by
# scripts/test.sh) or `scripts/soak.sh full` (10,000 idle clients, 100,000 connect/SCRAM/query/
# disconnect cycles, a 10-minute mixed soak with faults). Extra arguments override the mode's
# numbers: --idle N --cycles N --soak-secs N --workers N --pool N --restart-every SECS.
# Only loopback addresses are used. Exits non-zero on failed sessions or leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-short}"
shift || true
# 10,000 clients need 10,000 fds here and as many in pgporter (which inherits this limit).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export PGPORTER_PG_BIN="${PGPORTER_PG_BIN:-/usr/lib/postgresql/15/bin}"
exec cargo test --bench soak -- --mode "$mode" "$@"

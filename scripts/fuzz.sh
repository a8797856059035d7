#!/usr/bin/env bash
# Run every cargo-fuzz target under fuzz/ for a fixed time each and print executions per
# target. Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). CI does not run this: the same entry points are covered on
# every commit by the proptest properties (`cargo test --lib proptests`).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
#
# Builds are debug (`--dev`) unless FUZZ_RELEASE=1. A crash leaves its input in
# fuzz/artifacts/<target>/; turn it into a regression test next to the parser's unit tests.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
profile=(--dev)
[[ "${FUZZ_RELEASE:-0}" == 1 ]] && profile=()
status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  if cargo +nightly fuzz run "${profile[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 >"$log" 2>&1; then
    result="ok"
  else
    result="CRASH (see fuzz/artifacts/$t/)"
    status=1
    tail -40 "$log" >&2
  fi
  runs="$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)"
  summary+=("$t: $result; ${runs:-no run count}; corpus $(ls "corpus/$t" | wc -l) inputs")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
exit "$status"

# benches/callgrind_counts.sh - sourced by benches/compare.sh when CALLGRIND=1, after both poolers
# started under valgrind --tool=callgrind. It counts each pooler's user-space instructions (Ir,
# every thread) per transaction and per connection with callgrind_control: warm up, zero the
# counters, run pgbench, read them. Counts do not move with the machine's load or steal, so two
# builds (or pgporter and PgBouncer) can be compared on a busy shared machine; they leave out the
# kernel, which is most of a pooler's CPU (README, "What the profiles show"). With KEEP=1 the
# profile of each measured run stays in $RUN/callgrind/ for callgrind_annotate.

cg_control() { # target args...: callgrind_control as the pooler's OS user (vgdb fails across users)
    local t="$1"
    shift
    if [[ "$t" == pgbouncer ]]; then timeout 60 "${AS_PG[@]}" callgrind_control "$@"; else timeout 60 callgrind_control "$@"; fi
}

ir_of() { # target pid: instructions counted since the last zero, all threads
    cg_control "$1" -e Ir "$2" 2>/dev/null | awk '$1 == "Th" { gsub(",", "", $3); n += $3 } END { print n + 0 }'
}

count_one() { # id target warm-up-count measured-count pgbench-args...: prints instructions per transaction
    local id="$1" t="$2" warm="$3" n="$4" pid logf ir xacts
    shift 4
    pid="$(pid_of "$t")"
    logf="$RUN/$id.$t.log"
    pgbench_bg "$RUN/$id.$t.warm.log" -t "$warm" "$@" "$(conninfo "$t")" ||
        die "$id warm-up through $t failed: $(tail -n 3 "$RUN/$id.$t.warm.log")"
    cg_control "$t" -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z $pid ($t) failed"
    pgbench_bg "$logf" -t "$n" "$@" "$(conninfo "$t")" || die "$id through $t failed: $(tail -n 3 "$logf")"
    ir="$(ir_of "$t" "$pid")"
    cg_control "$t" --dump="$id" "$pid" >/dev/null 2>&1 || true # the profile: $RUN/callgrind/$t.out.N
    xacts="$(awk '/^number of transactions actually processed:/ { split($6, a, "/"); print a[1] }' "$logf")"
    ((ir > 0 && xacts > 0)) || die "$id $t: no count (Ir '$ir', transactions '$xacts')"
    log "$id $t: $ir instructions over $xacts transactions"
    echo $((ir / xacts))
}

count_all() {
    local t id json=() c1 c2 c3 line
    local -A got
    for t in "${TARGETS[@]}"; do
        [[ "$t" == direct ]] && continue
        got[$t.C1]="$(count_one C1 "$t" 1000 "$CG_XACTS" -S -M simple -c 1 -j 1)"
        got[$t.C2]="$(count_one C2 "$t" 1000 "$CG_XACTS" -S -M extended -c 1 -j 1)"
        got[$t.C3]="$(count_one C3 "$t" 50 "$CG_CONNS" -S -M simple -C -c 1 -j 1)"
        json+=("\"$t\": {\"C1_ir_per_xact\": ${got[$t.C1]}, \"C2_ir_per_xact\": ${got[$t.C2]}, \"C3_ir_per_conn\": ${got[$t.C3]}}")
    done
    mkdir -p "$(dirname "$OUT")"
    printf '{"callgrind": {%s}, "xacts": %s, "conns": %s, "scram_iterations": %s, "pgporter_commit": "%s"}\n' \
        "$(IFS=,; echo "${json[*]}")" "$CG_XACTS" "$CG_CONNS" "$SCRAM_ITER" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)" >"$OUT"
    printf '%-34s %11s %11s %9s\n' "user-space instructions (callgrind)" pgbouncer pgporter pgp/pgb
    for id in C1 C2 C3; do
        case "$id" in
            C1) line="C1 per xact -S simple -c1" ;;
            C2) line="C2 per xact -S extended -c1" ;;
            C3) line="C3 per connection -S -C -c1" ;;
        esac
        c1="${got[pgbouncer.$id]:-}" c2="${got[pgporter.$id]:-}" c3="-"
        [[ -n "$c1" && -n "$c2" ]] && c3="$(awk -v a="$c2" -v b="$c1" 'BEGIN { printf "%.2f", a / b }')"
        printf '%-34s %11s %11s %9s\n' "$line" "${c1:--}" "${c2:--}" "$c3"
    done
    log "JSON written to $OUT; wall time $(($(date +%s) - T0)) s"
}

#!/usr/bin/env python3
"""Helpers for benches/compare.sh (Python standard library only).

  free-ports N                   N free TCP ports on 127.0.0.1, one per line
  scram-secret PASSWORD ITER     a PostgreSQL SCRAM-SHA-256 verifier with ITER iterations
  snap SHELL_PID PG_PID [POOLER_PID...]   CPU snapshot (JSON on one line)
  record ...                     parse one pgbench run + CPU delta, append a JSON line to --out
  report RUNS MEMORY META OUT    median over rounds, ratios, the text table; writes OUT (JSON)
"""
import argparse
import base64
import glob
import hashlib
import hmac
import json
import os
import re
import socket
import statistics
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct", "pgbouncer", "pgporter"]
# Ports other benchmark users on this box take by hand: never hand them out.
RESERVED = {55432, 55433, 6432, 6433, 57432, 57640, 57641}


def free_ports(n):
    """n loopback ports free when probed, from below the kernel's ephemeral range: the ports
    are bound seconds later (after initdb and pgbench -i), and a port probed with bind(0) and
    released is in the range where bind(0) and every outgoing connection's local end get theirs,
    so it could be taken meanwhile (tests/it/support/process.rs free_port does the same)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    span = min(low - 1024, 16384)
    socks, ports = [], []
    if span < 1024:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
            socks.append(s)
            if p not in RESERVED:
                ports.append(p)
    else:
        start = (os.getpid() * 7919) % span
        for i in range(span):
            p = low - span + (start + i) % span
            if p in RESERVED:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(p)
            if len(ports) == n:
                break
    for s in socks:
        s.close()
    if len(ports) < n:
        sys.exit(f"free-ports: only {len(ports)} of {n} free ports below {low}")
    return ports


def scram_secret(password, iterations):
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (
        iterations, b64(salt), b64(hashlib.sha256(client_key).digest()), b64(server_key))


def proc_ticks(pid):
    """(utime, stime, cutime, cstime) of pid, in ticks; zeros if gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return tuple(int(x) for x in fields[11:15])
    except (OSError, IndexError, ValueError):
        return (0, 0, 0, 0)


def proc_cpu(pid, children=False):
    """utime+stime (and optionally the reaped children's) of pid, in ticks; 0 if gone."""
    t = proc_ticks(pid)
    return sum(t) if children else t[0] + t[1]


def proc_switches(pid):
    """[voluntary, involuntary] context switches summed over pid's threads."""
    total = [0, 0]
    for path in glob.glob("/proc/%s/task/*/status" % pid):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total[0] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        total[1] += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def child_pids(pid):
    try:
        with open("/proc/%s/task/%s/children" % (pid, pid)) as f:
            return f.read().split()
    except OSError:
        return []


def snap(shell_pid, pg_pid, poolers):
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    # steal (time the hypervisor gave our vCPUs to other guests) is kept apart from busy:
    # it is not CPU any process here used, but it slows every target alike
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    steal = v[7] if len(v) > 7 else 0
    total = busy + steal + v[3] + v[4]
    pg = proc_cpu(pg_pid, True) + sum(proc_cpu(c, True) for c in child_pids(pg_pid))
    ticks = {p: proc_ticks(p) for p in poolers if p}
    return {
        "t": time.time(), "busy": busy, "steal": steal, "total": total, "pg": pg,
        "shell": proc_cpu(shell_pid, True),
        "poolers": {p: t[0] + t[1] for p, t in ticks.items()},
        "pooler_user": {p: t[0] for p, t in ticks.items()},
        "pooler_switches": {p: proc_switches(p) for p in poolers if p},
    }


def parse_pgbench(text):
    def num(pattern):
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else None
    return {
        "tps": num(r"^tps = ([0-9.]+)"),
        "xacts": num(r"^number of transactions actually processed: ([0-9]+)"),
        "failed": num(r"^number of failed transactions: ([0-9]+)"),
        "lat_avg_ms": num(r"^latency average = ([0-9.]+) ms"),
        "conn_avg_ms": num(r"^average connection time = ([0-9.]+) ms"),
    }


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def latencies_us(prefix):
    vals = []
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    vals.append(int(parts[2]))
    vals.sort()
    return vals


def record(a):
    with open(a.log) as f:
        run = parse_pgbench(f.read())
    b, e = json.loads(a.before), json.loads(a.after)
    span = max(1, e["total"] - b["total"])
    pooler_ticks = {p: e["poolers"].get(p, 0) - b["poolers"].get(p, 0) for p in b["poolers"]}
    ours = (e["pg"] - b["pg"]) + (e["shell"] - b["shell"]) + sum(pooler_ticks.values())
    foreign = max(0, (e["busy"] - b["busy"]) - ours)
    run.update({
        "workload": a.workload, "target": a.target, "round": a.round, "rc": a.rc,
        "wall_s": round(e["t"] - b["t"], 3),
        "foreign_cpu_pct": round(100.0 * foreign / span, 1),
        "machine_busy_pct": round(100.0 * (e["busy"] - b["busy"]) / span, 1),
        "steal_pct": round(100.0 * (e.get("steal", 0) - b.get("steal", 0)) / span, 1),
    })
    if a.pooler_pid and run["xacts"]:
        us = pooler_ticks.get(a.pooler_pid, 0) * 1e6 / TICK
        run["pooler_cpu_us_per_xact"] = round(us / run["xacts"], 2)
        p = a.pooler_pid
        if p in b.get("pooler_user", {}):
            user = (e["pooler_user"].get(p, 0) - b["pooler_user"][p]) * 1e6 / TICK
            run["pooler_user_us_per_xact"] = round(user / run["xacts"], 2)
        if p in b.get("pooler_switches", {}):
            (v0, i0), (v1, i1) = b["pooler_switches"][p], e["pooler_switches"].get(p, [0, 0])
            run["pooler_vol_switches_per_xact"] = round((v1 - v0) / run["xacts"], 3)
            run["pooler_invol_switches_per_xact"] = round((i1 - i0) / run["xacts"], 3)
    if a.latlog:
        lat = latencies_us(a.latlog)
        run["lat_samples"] = len(lat)
        run["lat_p50_ms"] = percentile(lat, 0.50) / 1000.0 if lat else None
        run["lat_p99_ms"] = percentile(lat, 0.99) / 1000.0 if lat else None
    with open(a.out, "a") as f:
        f.write(json.dumps(run) + "\n")
    ok = a.rc == 0 and run["tps"] is not None
    print("%-3s %-9s round %d: tps=%s%s%s foreign_cpu=%s%% steal=%s%%%s" % (
        a.workload, a.target, a.round, fmt(run["tps"], 0),
        " p50=%.3fms p99=%.3fms" % (run["lat_p50_ms"], run["lat_p99_ms"]) if run.get("lat_p50_ms") else "",
        " pooler=%sus/xact" % run["pooler_cpu_us_per_xact"] if "pooler_cpu_us_per_xact" in run else "",
        run["foreign_cpu_pct"], run["steal_pct"], "" if ok else " FAILED (rc=%d, see %s)" % (a.rc, a.log)), file=sys.stderr)
    return 0 if ok else 2


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs):
    out = {}
    for r in runs:
        out.setdefault(r["workload"], {}).setdefault(r["target"], []).append(r)
    summary = {}
    for wl, by_target in out.items():
        summary[wl] = {}
        for tgt, rs in by_target.items():
            good = [r for r in rs if r["rc"] == 0 and r["tps"] is not None]
            tps = [r["tps"] for r in good]
            summary[wl][tgt] = {
                "tps": median(tps), "tps_runs": tps, "failed_runs": len(rs) - len(good),
                "lat_p50_ms": median([r.get("lat_p50_ms") for r in good]),
                "lat_p99_ms": median([r.get("lat_p99_ms") for r in good]),
                "lat_avg_ms": median([r.get("lat_avg_ms") for r in good]),
                "pooler_cpu_us_per_xact": median([r.get("pooler_cpu_us_per_xact") for r in good]),
                "pooler_user_us_per_xact": median([r.get("pooler_user_us_per_xact") for r in good]),
                "pooler_invol_switches_per_xact": median(
                    [r.get("pooler_invol_switches_per_xact") for r in good]),
                "foreign_cpu_pct_max": max([r["foreign_cpu_pct"] for r in rs], default=None),
                "steal_pct_max": max([r.get("steal_pct", 0) for r in rs], default=None),
            }
    return summary


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def fmt(v, digits=1):
    if v is None:
        return "-"
    return ("%%.%df" % digits) % v


def report(runs_path, mem_path, meta_path, out_path):
    runs = []
    if os.path.exists(runs_path):
        with open(runs_path) as f:
            runs = [json.loads(l) for l in f if l.strip()]
    memory = {}
    if os.path.exists(mem_path):
        with open(mem_path) as f:
            memory = json.load(f)
    with open(meta_path) as f:
        meta = json.load(f)
    summary = summarize(runs)
    rows = []  # (label, direct, pgbouncer, pgporter, digits, (foreign, steal))

    def cell(wl, tgt, key):
        return summary.get(wl, {}).get(tgt, {}).get(key)

    def foreign(wl):
        def most(key):
            return max([v[key] for v in summary.get(wl, {}).values() if v.get(key) is not None],
                       default=None)
        return (most("foreign_cpu_pct_max"), most("steal_pct_max"))

    labels = {"W1": "W1 tps simple -c16", "W2": "W2 tps extended -c16", "W3": "W3 tps connect -C -c16",
              "W4": "W4 tps connect -C -c%s" % meta.get("w4_clients", 200), "W5": "W5 tps -c1",
              "W8": "W8 tps txn-mode -c%s/pool %s" % (meta.get("w8_clients"), meta.get("w8_pool_size")),
              "W9": "W9 tps txn prepared -S -c%s" % meta.get("w8_clients")}
    for wl in ["W1", "W2", "W3", "W4", "W5", "W8", "W9"]:
        if wl in summary:
            rows.append((labels[wl], *[cell(wl, t, "tps") for t in TARGETS], 0, foreign(wl)))
    if "W5" in summary:
        rows.append(("W5 latency p50 ms", *[cell("W5", t, "lat_p50_ms") for t in TARGETS], 3, (None, None)))
        rows.append(("W5 latency p99 ms", *[cell("W5", t, "lat_p99_ms") for t in TARGETS], 3, (None, None)))
    mem_t = memory.get("targets", {})
    if mem_t:
        rows.append(("W6 KB/idle client (n=%s)" % memory.get("n"),
                     None, *[mem_t.get(t, {}).get("kb_per_client") for t in TARGETS[1:]], 2, (None, None)))
    for wl in ["W1", "W3"]:
        if wl in summary:
            rows.append(("W7 pooler CPU us/xact %s" % wl,
                         None, *[cell(wl, t, "pooler_cpu_us_per_xact") for t in TARGETS[1:]], 1, (None, None)))
            rows.append(("  of which user us/xact %s" % wl,
                         None, *[cell(wl, t, "pooler_user_us_per_xact") for t in TARGETS[1:]], 1, (None, None)))
            if wl == "W1":
                rows.append(("  pooler preempted /xact W1", None,
                             *[cell(wl, t, "pooler_invol_switches_per_xact") for t in TARGETS[1:]], 2, (None, None)))

    ratios = {}
    lines = ["%-30s %11s %11s %11s %9s %9s %8s %6s" % (
        "workload", "direct", "pgbouncer", "pgporter", "pgp/pgb", "pgp/dir", "foreign%", "steal%")]
    for label, d, b, p, digits, (frn, stl) in rows:
        rb, rd = ratio(p, b), ratio(p, d)
        ratios[label] = {"pgporter/pgbouncer": rb, "pgporter/direct": rd, "pgbouncer/direct": ratio(b, d)}
        lines.append("%-30s %11s %11s %11s %9s %9s %8s %6s" % (
            label, fmt(d, digits), fmt(b, digits), fmt(p, digits), fmt(rb, 2), fmt(rd, 2), fmt(frn, 0),
            fmt(stl, 0)))
    if "W5" in summary:
        d = cell("W5", "direct", "lat_p50_ms")
        added = {t: round((cell("W5", t, "lat_p50_ms") - d) * 1000, 1)
                 for t in TARGETS[1:] if d is not None and cell("W5", t, "lat_p50_ms") is not None}
        if added:
            lines.append("W5 added p50 latency over direct: " +
                         ", ".join("%s %+.1f us" % (t, v) for t, v in added.items()))
            ratios["W5 added p50 us"] = added
    for t, m in mem_t.items():
        lines.append("W6 %s: %s of %s idle clients logged in (%s failed, %s lost while held), RSS %s -> %s KB, connect %s s%s" % (
            t, m.get("ok"), memory.get("n"), m.get("failed"), m.get("lost_while_held"),
            m.get("rss_before_kb"), m.get("rss_during_kb"), m.get("connect_s"),
            "; errors: %s" % m["errors"] if m.get("errors") else ""))
    failed = [r for r in runs if r["rc"] != 0 or r["tps"] is None]
    for r in failed:
        lines.append("FAILED run: %s %s round %s (rc=%s)" % (r["workload"], r["target"], r["round"], r["rc"]))
    lines.append("median of %s round(s) x %s s per cell; foreign%% = max CPU share of processes not part "
                 "of the benchmark during the row's runs; steal%% = max share of the vCPUs' time the hypervisor gave "
                 "to other guests (both slow every target)" % (meta.get("rounds"), meta.get("duration_s")))
    table = "\n".join(lines)
    print(table)
    result = {"meta": meta, "summary": summary, "ratios": ratios, "memory": memory, "runs": runs, "table": table}
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    idle_bad = [t for t, m in mem_t.items() if m.get("error") or m.get("failed") or m.get("lost_while_held")]
    if failed or idle_bad:
        print("benchmark had failures: %d pgbench run(s)%s" % (
            len(failed), "; idle clients: %s" % ", ".join(idle_bad) if idle_bad else ""), file=sys.stderr)
        return 3
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("free-ports"); p.add_argument("n", type=int)
    p = sub.add_parser("scram-secret"); p.add_argument("password"); p.add_argument("iterations", type=int)
    p = sub.add_parser("snap"); p.add_argument("shell"); p.add_argument("pg"); p.add_argument("poolers", nargs="*")
    p = sub.add_parser("record")
    for k in ["--workload", "--target", "--log", "--before", "--after", "--out"]:
        p.add_argument(k, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--rc", type=int, required=True)
    p.add_argument("--pooler-pid", default="")
    p.add_argument("--latlog", default="")
    p = sub.add_parser("report")
    for k in ["runs", "memory", "meta", "out"]:
        p.add_argument(k)
    a = ap.parse_args()
    if a.cmd == "free-ports":
        print("\n".join(map(str, free_ports(a.n))))
    elif a.cmd == "scram-secret":
        print(scram_secret(a.password, a.iterations))
    elif a.cmd == "snap":
        print(json.dumps(snap(a.shell, a.pg, a.poolers)))
    elif a.cmd == "record":
        return record(a)
    elif a.cmd == "report":
        return report(a.runs, a.memory, a.meta, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

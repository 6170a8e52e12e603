#!/usr/bin/env python3
"""Helpers for bench/run.sh.

  report.py wrk WRK_OUT [--perf CSV --ticks-before S --ticks-after S --hz N
                         --stat-before F --stat-after F --proxy-cpus LIST --seq N]
      one closed-loop run as a JSON row: wrk's req/s, p50, p99, errors and completed
      requests, and the CPU time the proxy's processes spent over the run (perf task-clock
      when --perf names a file perf wrote, and /proc utime+stime ticks per role), with the
      CPU microseconds per request; plus what else ran on the proxy CPUs (steal, busy time
      not spent by the measured processes).
      With --into RUN.json --round N --key KEY: stored in the run's file; prints its errors.
  report.py loadgen OUT [--into RUN.json --key KEY]   a loadgen run (already JSON) as a row
  report.py tables RUN.json the result tables (the format BENCHMARKS.md uses) of a run:
      the medians over rounds, each round's figures, the budget of issue #15
"""

import argparse
import json
import re
import statistics
import sys


def to_ms(value):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"unrecognised wrk duration {value!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def parse_wrk(text):
    row = {"errors": 0}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"(50|99)(?:\.000)?%\s+(\S+)", line)
        if m:
            row[f"p{m.group(1)}_ms"] = to_ms(m.group(2))
            continue
        m = re.match(r"(\d+) requests in ([\d.]+\w+),", line)
        if m:
            row["requests"] = int(m.group(1))
            row["seconds"] = to_ms(m.group(2)) / 1e3
        elif line.startswith("Requests/sec:"):
            row["rps"] = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            row["errors"] += int(line.split()[-1])
        elif line.startswith("Socket errors:"):
            # connect/read/write/timeout; reads at the end of a run are the closing sockets
            nums = [int(x) for x in re.findall(r"(\d+)", line)]
            row["errors"] += nums[0] + nums[2] + nums[3]
    if "rps" not in row or "requests" not in row:
        raise ValueError("wrk printed no Requests/sec or request count:\n" + text)
    return row


def parse_ticks(text):
    """'role:pid:ticks role:pid:ticks …' -> {(role, pid): ticks}"""
    out = {}
    for item in text.split():
        role, pid, ticks = item.rsplit(":", 2)
        out[(role, pid)] = int(ticks)
    return out


def cpu_list(spec):
    cpus = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        cpus += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return cpus


def parse_stat(path, cpus):
    """Busy and steal jiffies of the given CPUs, from a copy of /proc/stat's cpuN lines."""
    busy = steal = 0
    for line in open(path):
        f = line.split()
        if not re.fullmatch(r"cpu\d+", f[0]) or int(f[0][3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal guest guest_nice
        v = [int(x) for x in f[1:]]
        busy += v[0] + v[1] + v[2] + v[5] + v[6]
        steal += v[7] if len(v) > 7 else 0
    return busy, steal


def cmd_wrk(argv):
    ap = argparse.ArgumentParser(prog="report.py wrk")
    ap.add_argument("wrk_out")
    ap.add_argument("--perf")
    ap.add_argument("--ticks-before", default="")
    ap.add_argument("--ticks-after", default="")
    ap.add_argument("--hz", type=int, default=100)
    ap.add_argument("--stat-before")
    ap.add_argument("--stat-after")
    ap.add_argument("--proxy-cpus")
    ap.add_argument("--seq", type=int)
    ap.add_argument("--into", help="the run's JSON file: the row is stored there, and its error count printed")
    ap.add_argument("--round", default="-", help="round number (1…), or - for a row run once")
    ap.add_argument("--key")
    ap.add_argument("--window", nargs=2, type=float, help="wall-clock start and end of the measured window")
    a = ap.parse_args(argv)
    row = parse_wrk(open(a.wrk_out).read())
    if a.seq is not None:
        row["seq"] = a.seq
    n = row["requests"]
    before, after = parse_ticks(a.ticks_before), parse_ticks(a.ticks_after)
    if before:
        by_role = {}
        for k, t in after.items():
            by_role[k[0]] = by_role.get(k[0], 0) + t - before.get(k, t)
        # CPU time per role in ms, from /proc utime+stime (1/hz s resolution)
        row["proc_cpu_ms"] = {r: t * 1000 / a.hz for r, t in by_role.items()}
        proc_ms = sum(row["proc_cpu_ms"].values())
        row["cpu_ms"], row["cpu_source"] = proc_ms, "proc"
    perf_ms = None
    if a.perf:
        try:
            for line in open(a.perf):
                f = line.strip().split(",")
                if len(f) > 2 and f[2] == "task-clock" and f[0] and not line.startswith("#"):
                    perf_ms = float(f[0])
        except FileNotFoundError:
            pass
    if perf_ms is not None:
        row["perf_cpu_ms"] = perf_ms
        row["cpu_ms"], row["cpu_source"] = perf_ms, "perf"
    if "cpu_ms" in row and n:
        row["cpu_us"] = row["cpu_ms"] * 1000 / n
    if a.stat_before and a.stat_after and a.proxy_cpus:
        cpus = cpu_list(a.proxy_cpus)
        b0, s0 = parse_stat(a.stat_before, cpus)
        b1, s1 = parse_stat(a.stat_after, cpus)
        window_s = a.window[1] - a.window[0] if a.window else row["seconds"]
        row["window_s"] = window_s
        if a.window:
            row["start"] = a.window[0]
        wall_ms = window_s * 1000 * len(cpus)
        row["proxy_cpus_steal_pct"] = 100 * (s1 - s0) * 1000 / a.hz / wall_ms
        # busy time of the proxy CPUs that the measured processes did not spend (their
        # softirqs, other processes); only meaningful for rows that measure a proxy
        if "proc_cpu_ms" in row:
            other = (b1 - b0) * 1000 / a.hz - sum(row["proc_cpu_ms"].values())
            row["proxy_cpus_other_pct"] = 100 * max(other, 0) / wall_ms
    emit(row, a.into, a.round, a.key)


def emit(row, into, rnd, key):
    """Print the row, or store it in the run's JSON file and print its error count."""
    if not into:
        print(json.dumps(row))
        return
    res = json.load(open(into))
    if rnd == "-":
        res["rows"][key] = row
    else:
        while len(res["rounds"]) < int(rnd):
            res["rounds"].append({})
        res["rounds"][int(rnd) - 1][key] = row
    json.dump(res, open(into, "w"))
    print(int(row.get("errors", 0)))


def cmd_loadgen(argv):
    ap = argparse.ArgumentParser(prog="report.py loadgen")
    ap.add_argument("out")
    ap.add_argument("--into")
    ap.add_argument("--key")
    a = ap.parse_args(argv)
    emit(json.loads(open(a.out).read()), a.into, "-", a.key)


def fmt(x, nd=2):
    return "—" if x is None else f"{x:,.{nd}f}"


# A quiet 2-core run's references: closed-loop p99 under 1 ms, nginx's fixed-rate p99 2-6 ms
# (BENCHMARKS.md); beyond these the machine, not a proxy, set the figures.
DISTURBED_CLOSED_P99_MS = 5.0
DISTURBED_RATE_P99_MS = 10.0
# The proxy CPUs are the proxy's alone: when something else (another process, the
# hypervisor's steal) took more than this share of them during a run, that run's round is
# disturbed.
DISTURBED_OTHER_PCT = 10.0

CLOSED = [
    # key, label, reference key for the ratios, ratio name
    ("direct.closed", "provider direct (no proxy)", None, None),
    ("nginx.closed", "nginx `proxy_pass` (keep-alive upstream)", None, None),
    ("egress.closed", "plano-egress, chat pass-through", "nginx.closed", "egress/nginx"),
    ("messages.closed", "plano-egress, `/v1/messages` translated", "nginx.closed", "messages/nginx"),
    ("edge.closed", "plano-edge → plano-egress (both on the proxy CPU)", "egress.closed", "edge chain/egress"),
    ("floor.closed", "floor: Plano's listener + upstream pool, no features (`bare-proxy`)", "nginx.closed", "floor/nginx"),
]
STREAMS = [
    ("direct", "provider direct (no proxy)", None, None),
    ("nginx", "nginx `proxy_pass`", None, None),
    ("egress", "plano-egress", "nginx.stream", "egress/nginx"),
]
SHORT = {
    "direct.closed": "direct", "nginx.closed": "nginx", "egress.closed": "egress chat",
    "messages.closed": "messages", "edge.closed": "edge chain", "floor.closed": "floor",
    "direct.stream": "direct stream", "nginx.stream": "nginx stream", "egress.stream": "egress stream",
}


def ratio(a, b):
    return None if not a or not b else a / b


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs, nd=2, unit=""):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return f" ({min(xs):.{nd}f} to {max(xs):.{nd}f}{unit})"


class Run:
    def __init__(self, res):
        self.meta = res["meta"]
        self.rounds = res.get("rounds", [])
        self.rows = res.get("rows", {})

    def per_round(self, key, field):
        return [rnd.get(key, {}).get(field) for rnd in self.rounds]

    def med(self, key, field):
        return median(self.per_round(key, field))

    def ratios(self, key, ref):
        """Each round's row / reference req/s."""
        return [ratio(rnd.get(key, {}).get("rps"), rnd.get(ref, {}).get("rps")) for rnd in self.rounds]

    def cpu_ratios(self, key, ref):
        """Each round's reference µs / row µs (higher is better, like the req/s ratio)."""
        return [ratio(rnd.get(ref, {}).get("cpu_us"), rnd.get(key, {}).get("cpu_us")) for rnd in self.rounds]

    def p99_deltas(self, key):
        out = []
        for rnd in self.rounds:
            a, b = rnd.get(key, {}).get("p99_ms"), rnd.get("nginx.closed", {}).get("p99_ms")
            out.append(None if a is None or b is None else a - b)
        return out

    def disturbed_rounds(self):
        """{round number: [reasons]} for the rounds whose references stalled."""
        out = {}
        for i, rnd in enumerate(self.rounds, 1):
            for key, label in [("direct.closed", "provider direct"), ("nginx.closed", "nginx `proxy_pass`")]:
                p99 = rnd.get(key, {}).get("p99_ms")
                if p99 is not None and p99 > DISTURBED_CLOSED_P99_MS:
                    out.setdefault(i, []).append(f"{label} p99 {p99:.2f} ms")
            taken = [
                (x.get("proxy_cpus_other_pct") or 0) + (x.get("proxy_cpus_steal_pct") or 0)
                for x in rnd.values()
                if "proxy_cpus_other_pct" in x
            ]
            over = [t for t in taken if t > DISTURBED_OTHER_PCT]
            if over:
                out.setdefault(i, []).append(
                    f"others took up to {max(over):.0f} % of the proxy CPUs ({len(over)} of {len(taken)} runs)"
                )
        return out


def cmd_tables(argv):
    run = Run(json.load(open(argv[0])))
    meta, rows = run.meta, run.rows
    n_rounds = len(run.rounds)
    r = lambda k: rows.get(k, {})
    print(
        f"Produced by `{meta['command']}` on {meta['date']} {meta.get('time', '')} UTC "
        f"(commit {meta.get('commit', '?')}) — {meta['machine']}, release build; load average "
        f"at the end {meta.get('loadavg_end', '?')}."
    )
    cpu_src = (
        "`perf stat -e task-clock`" if meta.get("cpu_source") == "perf" else "/proc utime+stime (ticks)"
    )
    print(
        f"Proxy under test on CPU(s) {meta['proxy_cpus']} (alone); provider (static nginx "
        f"`return 200`, ~1 KB chat completion or a {meta['events']}-event SSE body) and load "
        f"generator on CPU(s) {meta['load_cpus']}. Closed loop: `wrk -t1 -c{meta['connections']}`, "
        f"{n_rounds} rounds, each row {meta['warm']} s warm-up + {meta['duration']} s measured per "
        f"round, nginx first in each round and the other rows rotated one place per round; "
        f"figures are medians over the rounds, ratios the median of each round's ratio. CPU "
        f"µs/request: {cpu_src} of the proxy's processes over its run / completed requests "
        f"(CPU ratio = reference µs / row µs). Fixed rate: `loadgen --mode rate` at "
        f"{meta['rate']} req/s for {meta['row_duration']} s (latency from each request's "
        f"scheduled start). Errors across all runs: {meta['errors']}."
    )
    print()
    print(f"### Non-streaming, closed loop ({meta['connections']} connections; medians of {n_rounds} rounds)")
    print()
    print("| path | req/s | p50 ms | p99 ms | ratio | CPU µs/request | CPU ratio | p99 − nginx p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for key, label, ref, rname in CLOSED:
        rat = median(run.ratios(key, ref)) if ref else None
        crat = median(run.cpu_ratios(key, ref)) if ref else None
        d99 = median(run.p99_deltas(key)) if key not in ("direct.closed", "nginx.closed") else None
        print(
            f"| {label} | {fmt(run.med(key, 'rps'), 0)} | {fmt(run.med(key, 'p50_ms'))} | "
            f"{fmt(run.med(key, 'p99_ms'))} | {'' if rat is None else f'{rat:.2f}× ({rname})'} | "
            f"{'' if key == 'direct.closed' else fmt(run.med(key, 'cpu_us'), 1)} | "
            f"{'' if crat is None else f'{crat:.2f}×'} | {'' if d99 is None else f'{d99:+.2f} ms'} |"
        )
    print()
    print(f"### Non-streaming, fixed {meta['rate']} requests/s")
    print()
    print("| path | p50 ms | p99 ms | p99 − nginx p99 |")
    print("|---|---|---|---|")
    ngr = r("nginx.rate")
    for label, key in [
        ("nginx `proxy_pass`", "nginx.rate"),
        ("plano-egress, chat pass-through", "egress.rate"),
        ("plano-egress, `/v1/messages` translated", "messages.rate"),
        ("plano-edge → plano-egress", "edge.rate"),
    ]:
        x = r(key)
        d99 = None if key == "nginx.rate" or x.get("p99_ms") is None or ngr.get("p99_ms") is None else x["p99_ms"] - ngr["p99_ms"]
        print(f"| {label} | {fmt(x.get('p50_ms'))} | {fmt(x.get('p99_ms'))} | {'' if d99 is None else f'{d99:+.2f} ms'} |")
    print()
    print(f"### Streaming ({meta['events']} SSE events per answer)")
    print()
    print(
        f"| path | TTFT p50 ms | TTFT p99 ms | streams/s ({meta['connections']} connections) | "
        "relayed events/s | ratio | CPU µs/stream | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, label, ref, rname in STREAMS:
        t = r(f"{name}.ttft")
        key = f"{name}.stream"
        sps = run.med(key, "rps")
        ev = sps * meta["events"] if sps else None
        rat = median(run.ratios(key, ref)) if ref else None
        crat = median(run.cpu_ratios(key, ref)) if ref else None
        print(
            f"| {label} | {fmt(t.get('first_p50_ms'))} | {fmt(t.get('first_p99_ms'))} | {fmt(sps, 0)} | "
            f"{fmt(ev, 0)} | {'' if rat is None else f'{rat:.2f}× ({rname})'} | "
            f"{'' if name == 'direct' else fmt(run.med(key, 'cpu_us'), 1)} | {'' if crat is None else f'{crat:.2f}×'} |"
        )
    print()
    print_rounds(run)
    print()
    print("### Against the budget (DESIGN.md §9, issue #15)")
    print()
    print(
        "Medians over the rounds, with the lowest and highest round in brackets; the CPU column is the "
        "same ratio in CPU time per request (reference µs / row µs), less sensitive to a busy neighbour."
    )
    print()
    print("| target | budget | measured (req/s) | met | measured (CPU per request) | met |")
    print("|---|---|---|---|---|---|")

    def check(name, budget, values, ok, cpu_values=None, unit="×"):
        v = median(values)
        c = median(cpu_values) if cpu_values is not None else None
        vt = "not measured" if v is None else f"{v:.2f}{unit}{spread(values, 2, unit)}"
        ct = "" if c is None else f"{c:.2f}{unit}{spread(cpu_values, 2, unit)}"
        print(
            f"| {name} | {budget} | {vt} | {'—' if v is None else ('yes' if ok(v) else 'no')} | "
            f"{ct} | {'' if c is None else ('yes' if ok(c) else 'no')} |"
        )

    for key, name, budget, limit in [
        ("egress.closed", "egress throughput / nginx", "≥ 0.7×", 0.7),
        ("messages.closed", "`/v1/messages` throughput / nginx", "≥ 0.6×", 0.6),
    ]:
        check(name, budget, run.ratios(key, "nginx.closed"), lambda v, lim=limit: v >= lim,
              run.cpu_ratios(key, "nginx.closed"))
    check("edge → egress / egress alone", "≥ 0.5×", run.ratios("edge.closed", "egress.closed"),
          lambda v: v >= 0.5, run.cpu_ratios("edge.closed", "egress.closed"))
    check(f"egress p99 − nginx p99 ({meta['connections']} connections)", "≤ +0.3 ms",
          run.p99_deltas("egress.closed"), lambda v: v <= 0.3, None, " ms")
    dt, et = r("direct.ttft").get("first_p50_ms"), r("egress.ttft").get("first_p50_ms")
    check("streaming TTFT added (p50, egress − direct)", "≤ 0.3 ms",
          [None if dt is None or et is None else et - dt], lambda v: v <= 0.3, None, " ms")
    print(
        f"| egress RSS idle / after the runs | ≤ 30 MiB idle | {meta['rss_idle']} / {meta['rss_after']} MiB | "
        f"{'yes' if float(meta['rss_idle']) <= 30 else 'no'} | | |"
    )
    print_disturbed(run)


def print_rounds(run):
    rounds = run.rounds
    if not rounds:
        return
    keys = [k for k in SHORT if any(k in rnd for rnd in rounds)]
    head = "| path | " + " | ".join(f"round {i}" for i in range(1, len(rounds) + 1)) + " |"
    sep = "|---|" + "---|" * len(rounds)
    refs = {k: ref for k, _, ref, _ in CLOSED}
    refs.update({f"{n}.stream": ref for n, _, ref, _ in STREAMS})
    print("#### Each round")
    print()
    print("Order of the runs: " + "; ".join(
        f"round {i}: " + ", ".join(SHORT.get(k, k) for k in sorted(rnd, key=lambda k: rnd[k].get("seq", 0)))
        for i, rnd in enumerate(rounds, 1)
    ) + ".")
    print()
    print("req/s (ratio to the reference of the same round) · p99 ms")
    print()
    print(head)
    print(sep)
    for k in keys:
        cells = []
        for rnd in rounds:
            x, ref = rnd.get(k, {}), rnd.get(refs.get(k) or "", {})
            rat = ratio(x.get("rps"), ref.get("rps"))
            cells.append(
                "—" if x.get("rps") is None else
                f"{x['rps']:,.0f}{'' if rat is None else f' ({rat:.2f}×)'} · {fmt(x.get('p99_ms'))}"
            )
        print(f"| {SHORT[k]} | " + " | ".join(cells) + " |")
    print()
    print("CPU µs/request (CPU ratio) · steal / other busy time on the proxy CPUs, % of the run")
    print()
    print(head)
    print(sep)
    for k in keys:
        if k.startswith("direct."):
            continue
        cells = []
        for rnd in rounds:
            x, ref = rnd.get(k, {}), rnd.get(refs.get(k) or "", {})
            crat = ratio(ref.get("cpu_us"), x.get("cpu_us"))
            cells.append(
                "—" if x.get("cpu_us") is None else
                f"{x['cpu_us']:.1f}{'' if crat is None else f' ({crat:.2f}×)'} · "
                f"{fmt(x.get('proxy_cpus_steal_pct'), 0)} / {fmt(x.get('proxy_cpus_other_pct'), 0)} %"
            )
        print(f"| {SHORT[k]} | " + " | ".join(cells) + " |")


def print_disturbed(run):
    # The references are static servers: when they stall, the machine did, and the ratios of
    # that round are suspect (seen on shared VMs: nginx's own p99 at 50-170 ms, its req/s halved).
    bad = run.disturbed_rounds()
    n = len(run.rounds)
    notes = []
    ngr = run.rows.get("nginx.rate", {}).get("p99_ms")
    if ngr is not None and ngr > DISTURBED_RATE_P99_MS:
        notes.append(f"nginx `proxy_pass` fixed-rate p99 {ngr:.2f} ms (> {DISTURBED_RATE_P99_MS} ms): the fixed-rate table is suspect")
    if not bad and not notes:
        return
    print()
    where = "; ".join(f"round {i}: " + ", ".join(v) for i, v in sorted(bad.items()))
    limit = (
        f"a reference's closed-loop p99 > {DISTURBED_CLOSED_P99_MS} ms, or more than "
        f"{DISTURBED_OTHER_PCT:.0f} % of the proxy CPUs busy with something other than the proxy or stolen"
    )
    if bad and 2 * len(bad) >= n:
        print(
            f"**Disturbed run:** {len(bad)} of {n} rounds were disturbed ({limit}; {where}), "
            "so the medians may come from a disturbed round. Do not compare its ratios; run again "
            "on a quieter machine, or A/B with bench/instructions.sh."
            + ("" if not notes else " Also: " + "; ".join(notes) + ".")
        )
    elif bad:
        print(
            f"**Disturbed rounds:** {len(bad)} of {n} rounds were disturbed ({limit}; {where}); "
            "the medians leave a minority of outlying rounds out, but look at the rounds' spread."
            + ("" if not notes else " Also: " + "; ".join(notes) + ".")
        )
    else:
        print("**Disturbed fixed-rate rows:** " + "; ".join(notes) + ".")

if __name__ == "__main__":
    cmd = sys.argv[1]
    {"wrk": cmd_wrk, "loadgen": cmd_loadgen, "tables": cmd_tables}[cmd](sys.argv[2:])

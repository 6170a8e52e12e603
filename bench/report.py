#!/usr/bin/env python3
"""Helpers for bench/run.sh.

  report.py wrk|loadgen OUT [--perf CSV --ticks-before S --ticks-after S --hz N
                         --stat-before F --stat-after F --proxy-cpus LIST --seq N --window T0 T1]
      one run as a JSON row: wrk's req/s, p50, p99, errors and completed requests (or
      loadgen's JSON, its `ok` the completed requests), and the CPU time the proxy's
      processes spent over the run (perf task-clock when --perf names a file perf wrote,
      and /proc utime+stime ticks per role), with the CPU microseconds per request; plus
      what else ran on the proxy CPUs (steal, busy time not spent by the measured processes).
      With --into RUN.json --round N --key KEY: stored in the run's file; prints its errors.
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
    cmd_run("wrk", argv)


def cmd_loadgen(argv):
    cmd_run("loadgen", argv)


def cmd_run(kind, argv):
    ap = argparse.ArgumentParser(prog=f"report.py {kind}")
    ap.add_argument("out", help=f"what {kind} printed")
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
    text = open(a.out).read()
    if kind == "wrk":
        row = parse_wrk(text)
    else:
        row = json.loads(text)
        row["requests"] = row.get("ok", 0)
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
        window_s = a.window[1] - a.window[0] if a.window else row.get("seconds", 0)
        row["window_s"] = window_s
        if a.window:
            row["start"] = a.window[0]
        wall_ms = max(window_s, 1e-3) * 1000 * len(cpus)
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
RATE = [
    ("nginx.rate", "nginx `proxy_pass`", None),
    ("egress.rate", "plano-egress, chat pass-through", "nginx.rate"),
    ("messages.rate", "plano-egress, `/v1/messages` translated", "nginx.rate"),
    ("edge.rate", "plano-edge → plano-egress", "egress.rate"),
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
    "nginx.rate": "nginx fixed rate", "egress.rate": "egress fixed rate",
    "messages.rate": "messages fixed rate", "edge.rate": "edge chain fixed rate",
    "direct.ttft": "direct TTFT", "nginx.ttft": "nginx TTFT", "egress.ttft": "egress TTFT",
}
# The reference of each row's ratios (req/s, CPU).
REFS = {k: ref for k, _, ref, _ in CLOSED}
REFS.update({f"{n}.stream": ref for n, _, ref, _ in STREAMS})
REFS.update({k: ref for k, _, ref in RATE})


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
        # Rows run once (an older run, or a row left out of the rounds) count as one round.
        self.rows = res.get("rows", {})

    def runs(self, key):
        found = [rnd.get(key, {}) for rnd in self.rounds]
        if not any(found) and key in self.rows:
            return [self.rows[key]]
        return found

    def per_round(self, key, field):
        return [x.get(field) for x in self.runs(key)]

    def med(self, key, field):
        return median(self.per_round(key, field))

    def pairs(self, key, ref):
        if ref is None:
            return []
        return list(zip(self.runs(key), self.runs(ref)))

    def ratios(self, key, ref):
        """Each round's row / reference req/s."""
        return [ratio(x.get("rps"), y.get("rps")) for x, y in self.pairs(key, ref)]

    def cpu_ratios(self, key, ref):
        """Each round's reference µs / row µs (higher is better, like the req/s ratio)."""
        return [ratio(y.get("cpu_us"), x.get("cpu_us")) for x, y in self.pairs(key, ref)]

    def p99_deltas(self, key, ref):
        out = []
        for x, y in self.pairs(key, ref):
            a, b = x.get("p99_ms"), y.get("p99_ms")
            out.append(None if a is None or b is None else a - b)
        return out

    def disturbed_rounds(self):
        """{round number: [reasons]} for the rounds the machine disturbed."""
        out = {}
        for i, rnd in enumerate(self.rounds, 1):
            for key, label, limit in [
                ("direct.closed", "provider direct closed-loop", DISTURBED_CLOSED_P99_MS),
                ("nginx.closed", "nginx `proxy_pass` closed-loop", DISTURBED_CLOSED_P99_MS),
                ("nginx.rate", "nginx `proxy_pass` fixed-rate", DISTURBED_RATE_P99_MS),
            ]:
                p99 = rnd.get(key, {}).get("p99_ms")
                if p99 is not None and p99 > limit:
                    out.setdefault(i, []).append(f"{label} p99 {p99:,.2f} ms")
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


def rtxt(v, name=None):
    return "" if v is None else f"{v:.2f}×" + (f" ({name})" if name else "")


def cmd_tables(argv):
    run = Run(json.load(open(argv[0])))
    meta = run.meta
    n_rounds = max(len(run.rounds), 1)
    print(
        f"Produced by `{meta['command']}` on {meta['date']} {meta.get('time', '')} UTC "
        f"(tree at {meta.get('commit', '?')}"
        + ("" if meta.get("rebuilt", True) else ", binaries not rebuilt")
        + (f", egress `{meta['egress_bin']}`" if meta.get("egress_bin", "target/release/plano-egress") != "target/release/plano-egress" else "")
        + f") — {meta['machine']}, release build; load average at the end {meta.get('loadavg_end', '?')}."
    )
    cpu_src = (
        "`perf stat -e task-clock`" if meta.get("cpu_source") == "perf" else "/proc utime+stime (ticks)"
    )
    print(
        f"Proxy under test on CPU(s) {meta['proxy_cpus']} (alone); provider (static nginx "
        f"`return 200`, ~1 KB chat completion or a {meta['events']}-event SSE body) and load "
        f"generator on CPU(s) {meta['load_cpus']}. {n_rounds} rounds; in each, every row runs once, "
        f"the reference first in its group and the other rows rotated one place per round. Closed "
        f"loop: `wrk -t1 -c{meta['connections']}`, {meta['warm']} s warm-up + {meta['duration']} s "
        f"measured; fixed rate: `loadgen --mode rate` at {meta['rate']} req/s for "
        f"{meta['row_duration']} s (latency from each request's scheduled start); TTFT: `loadgen "
        f"--mode ttft`, 8 streams, {meta['row_duration']} s. Figures are medians over the rounds, "
        f"ratios the median of each round's ratio. CPU µs/request: {cpu_src} of the proxy's "
        f"processes over its run / completed requests; CPU ratio = reference µs / row µs. Errors "
        f"across all runs: {meta['errors']}."
    )
    print()
    print(f"### Non-streaming, closed loop ({meta['connections']} connections; medians of {n_rounds} rounds)")
    print()
    print("| path | req/s | p50 ms | p99 ms | ratio | CPU µs/request | CPU ratio | p99 − nginx p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for key, label, ref, rname in CLOSED:
        d99 = median(run.p99_deltas(key, "nginx.closed")) if ref else None
        print(
            f"| {label} | {fmt(run.med(key, 'rps'), 0)} | {fmt(run.med(key, 'p50_ms'))} | "
            f"{fmt(run.med(key, 'p99_ms'))} | {rtxt(median(run.ratios(key, ref)), rname)} | "
            f"{'' if key == 'direct.closed' else fmt(run.med(key, 'cpu_us'), 1)} | "
            f"{rtxt(median(run.cpu_ratios(key, ref)))} | {'' if d99 is None else f'{d99:+.2f} ms'} |"
        )
    print()
    print(f"### Non-streaming, fixed {meta['rate']} requests/s (medians of {n_rounds} rounds)")
    print()
    print(
        "CPU per request at this rate compares the proxies at one light load: most of it is the "
        "cost of waking up for each request (epoll, scheduler), which every proxy pays, so these "
        "ratios sit nearer 1 than at saturation; for throughput, read the closed-loop CPU ratios. "
        "The edge chain's CPU ratio is against the egress alone."
    )
    print()
    print("| path | p50 ms | p99 ms | p99 − nginx p99 | CPU µs/request | CPU ratio |")
    print("|---|---|---|---|---|---|")
    for key, label, ref in RATE:
        d99 = median(run.p99_deltas(key, "nginx.rate")) if ref else None
        print(
            f"| {label} | {fmt(run.med(key, 'p50_ms'))} | {fmt(run.med(key, 'p99_ms'))} | "
            f"{'' if d99 is None else f'{d99:+.2f} ms'} | {fmt(run.med(key, 'cpu_us'), 1)} | "
            f"{rtxt(median(run.cpu_ratios(key, ref)))} |"
        )
    print()
    print(f"### Streaming ({meta['events']} SSE events per answer; medians of {n_rounds} rounds)")
    print()
    print(
        f"| path | TTFT p50 ms | TTFT p99 ms | streams/s ({meta['connections']} connections) | "
        "relayed events/s | ratio | CPU µs/stream | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, label, ref, rname in STREAMS:
        key = f"{name}.stream"
        sps = run.med(key, "rps")
        ev = sps * meta["events"] if sps else None
        print(
            f"| {label} | {fmt(run.med(f'{name}.ttft', 'first_p50_ms'))} | "
            f"{fmt(run.med(f'{name}.ttft', 'first_p99_ms'))} | {fmt(sps, 0)} | {fmt(ev, 0)} | "
            f"{rtxt(median(run.ratios(key, ref)), rname)} | "
            f"{'' if name == 'direct' else fmt(run.med(key, 'cpu_us'), 1)} | "
            f"{rtxt(median(run.cpu_ratios(key, ref)))} |"
        )
    print()
    print_rounds(run)
    print()
    print("### Against the budget (DESIGN.md §9, issue #15)")
    print()
    print(
        "Medians over the rounds, the lowest and highest round in brackets; the CPU column is "
        "the same ratio in CPU time per request in the closed loop (reference µs / row µs), less "
        "moved by a busy neighbour than req/s."
    )
    print()
    print("| target | budget | req/s | met | CPU per request | met |")
    print("|---|---|---|---|---|---|")

    def cell(values, ok, unit="×"):
        v = median(values)
        if v is None:
            return "not measured | —"
        return f"{v:.2f}{unit}{spread(values, 2, unit)} | {'yes' if ok(v) else 'no'}"

    for key, name, budget, limit, ref in [
        ("egress.closed", "egress throughput / nginx", "≥ 0.7×", 0.7, "nginx.closed"),
        ("messages.closed", "`/v1/messages` throughput / nginx", "≥ 0.6×", 0.6, "nginx.closed"),
        ("edge.closed", "edge → egress / egress alone", "≥ 0.5×", 0.5, "egress.closed"),
    ]:
        ok = lambda v, lim=limit: v >= lim
        print(f"| {name} | {budget} | {cell(run.ratios(key, ref), ok)} | {cell(run.cpu_ratios(key, ref), ok)} |")
    ok = lambda v: v <= 0.3
    print(
        f"| egress p99 − nginx p99 ({meta['connections']} connections) | ≤ +0.3 ms | "
        f"{cell(run.p99_deltas('egress.closed', 'nginx.closed'), ok, ' ms')} | | |"
    )
    print(
        "| streaming TTFT added (p50, egress − direct) | ≤ 0.3 ms | "
        + cell(
            [None if a is None or b is None else a - b
             for a, b in zip(run.per_round("egress.ttft", "first_p50_ms"), run.per_round("direct.ttft", "first_p50_ms"))],
            ok, " ms",
        )
        + " | | |"
    )
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
    print("#### Each round")
    print()
    print("Order of the runs: " + "; ".join(
        f"round {i}: " + ", ".join(SHORT.get(k, k) for k in sorted(rnd, key=lambda k: rnd[k].get("seq", 0)))
        for i, rnd in enumerate(rounds, 1)
    ) + ".")
    print()
    print("req/s (ratio to the reference of the same round) · p99 ms; TTFT rows: TTFT p50 · p99 ms")
    print()
    print(head)
    print(sep)
    for k in keys:
        cells = []
        for rnd in rounds:
            x, ref = rnd.get(k, {}), rnd.get(REFS.get(k) or "", {})
            if k.endswith(".ttft"):
                cells.append(f"{fmt(x.get('first_p50_ms'))} · {fmt(x.get('first_p99_ms'))}")
                continue
            rat = ratio(x.get("rps"), ref.get("rps"))
            cells.append(
                "—" if x.get("rps") is None else
                f"{x['rps']:,.0f}{'' if rat is None or k.endswith('.rate') else f' ({rat:.2f}×)'} · {fmt(x.get('p99_ms'))}"
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
            x, ref = rnd.get(k, {}), rnd.get(REFS.get(k) or "", {})
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
    if not bad:
        return
    print()
    where = "; ".join(f"round {i}: " + ", ".join(v) for i, v in sorted(bad.items()))
    limit = (
        f"a reference's p99 over {DISTURBED_CLOSED_P99_MS:.0f} ms in closed loop or "
        f"{DISTURBED_RATE_P99_MS:.0f} ms at the fixed rate, or more than "
        f"{DISTURBED_OTHER_PCT:.0f} % of the proxy CPUs busy with something other than the proxy or stolen"
    )
    if 2 * len(bad) >= n:
        print(
            f"**Disturbed run:** {len(bad)} of {n} rounds were disturbed ({limit}; {where}), "
            "so the medians may come from a disturbed round. Do not compare its ratios; run again "
            "on a quieter machine, or A/B with bench/instructions.sh."
        )
    else:
        print(
            f"**Disturbed rounds:** {len(bad)} of {n} rounds were disturbed ({limit}; {where}); "
            "the medians leave a minority of outlying rounds out, but look at the rounds' spread."
        )


if __name__ == "__main__":
    cmd = sys.argv[1]
    {"wrk": cmd_wrk, "loadgen": cmd_loadgen, "tables": cmd_tables}[cmd](sys.argv[2:])

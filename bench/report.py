#!/usr/bin/env python3
"""Helpers for bench/run.sh: parse wrk and loadgen output into JSON rows, and print the
result tables (the format BENCHMARKS.md uses) from the collected rows."""

import json
import re
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
        elif line.startswith("Requests/sec:"):
            row["rps"] = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            row["errors"] += int(line.split()[-1])
        elif line.startswith("Socket errors:"):
            # connect/read/write/timeout; reads at the end of a run are the closing sockets
            nums = [int(x) for x in re.findall(r"(\d+)", line)]
            row["errors"] += nums[0] + nums[2] + nums[3]
    if "rps" not in row:
        raise ValueError("wrk printed no Requests/sec:\n" + text)
    return row


def cmd_wrk(path):
    print(json.dumps(parse_wrk(open(path).read())))


def cmd_loadgen(path):
    data = json.loads(open(path).read())
    print(json.dumps(data))


def fmt(x, nd=2):
    return "—" if x is None else f"{x:.{nd}f}"


# A quiet 2-core run's references: closed-loop p99 under 1 ms, nginx's fixed-rate p99 2-6 ms
# (BENCHMARKS.md); beyond these the machine, not a proxy, set the figures.
DISTURBED_CLOSED_P99_MS = 5.0
DISTURBED_RATE_P99_MS = 10.0


def ratio(a, b):
    return None if not a or not b else a / b


def cmd_tables(path, meta_path):
    rows = json.load(open(path))
    meta = json.load(open(meta_path))
    r = lambda k: rows.get(k, {})
    print(f"Produced by `{meta['command']}` on {meta['date']} — {meta['machine']}, release build.")
    print(
        f"Proxy under test on CPU(s) {meta['proxy_cpus']} (alone); provider (static nginx "
        f"`return 200`, ~1 KB chat completion or a {meta['events']}-event SSE body) and load "
        f"generator on CPU(s) {meta['load_cpus']}. Closed loop: `wrk -t1 -c{meta['connections']}`, "
        f"{meta['duration']} s per row; fixed rate: `loadgen --mode rate` at {meta['rate']} req/s "
        f"(latency from each request's scheduled start). Errors across all runs: {meta['errors']}."
    )
    print()
    print(f"### Non-streaming, closed loop ({meta['connections']} connections)")
    print()
    print("| path | req/s | p50 ms | p99 ms | ratio | p99 − nginx p99 |")
    print("|---|---|---|---|---|---|")
    ng = r("nginx.closed")
    eg = r("egress.closed")
    lines = [
        ("provider direct (no proxy)", "direct.closed", None, None),
        ("nginx `proxy_pass` (keep-alive upstream)", "nginx.closed", None, None),
        ("plano-egress, chat pass-through", "egress.closed", "egress/nginx", ng),
        ("plano-egress, `/v1/messages` translated", "messages.closed", "messages/nginx", ng),
        ("plano-edge → plano-egress (both on the proxy CPU)", "edge.closed", "edge chain/egress", eg),
        ("floor: Plano's listener + upstream pool, no features (`bare-proxy`)", "floor.closed", "floor/nginx", ng),
    ]
    for label, key, rname, ref in lines:
        x = r(key)
        rat = ratio(x.get("rps"), ref.get("rps")) if ref is not None else None
        d99 = (
            x.get("p99_ms") - ng.get("p99_ms")
            if key not in ("direct.closed", "nginx.closed") and x.get("p99_ms") is not None and ng.get("p99_ms") is not None
            else None
        )
        rtxt = f"{rat:.2f}× ({rname})" if rat is not None else ""
        dtxt = f"{d99:+.2f} ms" if d99 is not None else ""
        print(f"| {label} | {fmt(x.get('rps'), 0)} | {fmt(x.get('p50_ms'))} | {fmt(x.get('p99_ms'))} | {rtxt} | {dtxt} |")
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
        f"| path | TTFT p50 ms | TTFT p99 ms | streams/s ({meta['connections']} connections) | relayed events/s | ratio |"
    )
    print("|---|---|---|---|---|---|")
    ngs = r("nginx.stream")
    for label, key, ref in [
        ("provider direct (no proxy)", "direct", None),
        ("nginx `proxy_pass`", "nginx", None),
        ("plano-egress", "egress", ngs),
    ]:
        t = r(f"{key}.ttft")
        s = r(f"{key}.stream")
        ev = s.get("rps") * meta["events"] if s.get("rps") else None
        rat = ratio(s.get("rps"), ref.get("rps")) if ref is not None else None
        print(
            f"| {label} | {fmt(t.get('first_p50_ms'))} | {fmt(t.get('first_p99_ms'))} | {fmt(s.get('rps'), 0)} | "
            f"{fmt(ev, 0)} | {'' if rat is None else f'{rat:.2f}× (egress/nginx)'} |"
        )
    print()
    print("### Against the budget (DESIGN.md §9, issue #15)")
    print()
    print("| target | budget | measured | met |")
    print("|---|---|---|---|")

    def check(name, budget, value, ok, unit=""):
        if value is None:
            print(f"| {name} | {budget} | not measured | — |")
        else:
            print(f"| {name} | {budget} | {value:.2f}{unit} | {'yes' if ok(value) else 'no'} |")

    check("egress throughput / nginx", "≥ 0.7×", ratio(eg.get("rps"), ng.get("rps")), lambda v: v >= 0.7, "×")
    check("`/v1/messages` throughput / nginx", "≥ 0.6×", ratio(r("messages.closed").get("rps"), ng.get("rps")), lambda v: v >= 0.6, "×")
    check("edge → egress / egress alone", "≥ 0.5×", ratio(r("edge.closed").get("rps"), eg.get("rps")), lambda v: v >= 0.5, "×")
    d = None if eg.get("p99_ms") is None or ng.get("p99_ms") is None else eg["p99_ms"] - ng["p99_ms"]
    check(f"egress p99 − nginx p99 ({meta['connections']} connections)", "≤ +0.3 ms", d, lambda v: v <= 0.3, " ms")
    dt, et = r("direct.ttft").get("first_p50_ms"), r("egress.ttft").get("first_p50_ms")
    check("streaming TTFT added (p50, egress − direct)", "≤ 0.3 ms", None if dt is None or et is None else et - dt, lambda v: v <= 0.3, " ms")
    print(f"| egress RSS idle / after the runs | ≤ 30 MiB idle | {meta['rss_idle']} / {meta['rss_after']} MiB | {'yes' if float(meta['rss_idle']) <= 30 else 'no'} |")
    # The references are static servers: when they stall, the machine did, and every ratio of
    # the run is suspect (seen on shared VMs: nginx's own p99 at 50-170 ms, its req/s halved).
    stalls = []
    for label, key, limit in [
        ("provider direct, closed loop", "direct.closed", DISTURBED_CLOSED_P99_MS),
        ("nginx `proxy_pass`, closed loop", "nginx.closed", DISTURBED_CLOSED_P99_MS),
        ("nginx `proxy_pass`, fixed rate", "nginx.rate", DISTURBED_RATE_P99_MS),
    ]:
        p99 = r(key).get("p99_ms")
        if p99 is not None and p99 > limit:
            stalls.append(f"{label} p99 {p99:.2f} ms (> {limit} ms)")
    if stalls:
        print()
        print(
            "**Disturbed run:** the references stalled ("
            + "; ".join(stalls)
            + "). Do not compare its ratios; run again on a quiet machine, or A/B with "
            "bench/instructions.sh."
        )


if __name__ == "__main__":
    cmd = sys.argv[1]
    {"wrk": cmd_wrk, "loadgen": cmd_loadgen, "tables": cmd_tables}[cmd](*sys.argv[2:])

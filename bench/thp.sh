#!/usr/bin/env bash
# What transparent huge pages cost or buy the egress (issue #15, item 3): the same static
# nginx provider and request bodies as bench/run.sh, the egress alone on PROXY_CPUS, run
# in alternating pairs A, B, A, B, … (a fresh egress process per run) so that a shared
# machine's drift falls on both sides alike. Per run: wrk closed loop on the chat row and
# the stream row (req/s), then a fixed number of chat requests at a fixed rate with
# `perf stat -e task-clock,page-faults` on the egress: CPU microseconds per request is
# less noise-prone than req/s (this VM has no hardware counters: cycles, instructions and
# dTLB misses read "not supported", so task-clock is the measure).
#
#   bench/thp.sh                      # A = MIMALLOC_ALLOW_THP=1, B = MIMALLOC_ALLOW_THP=0
#   A_BIN=x B_BIN=y A_ENV= B_ENV= bench/thp.sh   # two builds (e.g. with and without no_thp)
#
# Environment: PAIRS=5, DURATION=3 (s per wrk row), RATE=2000 and RATE_SECONDS=5 (the
# fixed-rate CPU row: RATE × RATE_SECONDS requests), PROXY_CPUS=1, LOAD_CPUS=0,
# CONNECTIONS=32, A_ENV / B_ENV (space-separated VAR=value for each side), A_BIN / B_BIN.
# Needs: nginx, wrk, perf, taskset, ss, python3, the release binaries (plano-egress, loadgen).
# shellcheck disable=SC2034,SC2154  # variables shared with bench/lib.sh and bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
case ${1:-} in -h|--help) sed -n '2,/^# Needs/p' "$0"; exit 0 ;; "") ;; *) die "unknown argument $1 (try --help)" ;; esac

PAIRS=${PAIRS:-5}
DURATION=${DURATION:-3}
RATE=${RATE:-2000}
RATE_SECONDS=${RATE_SECONDS:-5}
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
CONNECTIONS=${CONNECTIONS:-32}
A_ENV=${A_ENV-MIMALLOC_ALLOW_THP=1}
B_ENV=${B_ENV-MIMALLOC_ALLOW_THP=0}
bin=target/release
A_BIN=${A_BIN:-$bin/plano-egress}
B_BIN=${B_BIN:-$bin/plano-egress}
for t in nginx wrk perf taskset ss python3; do need "$t" "apt-get install -y $t"; done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for b in "$A_BIN" "$B_BIN" "$bin/loadgen"; do [ -x "$b" ] || die "$b is missing (cargo build --release)"; done
proxy_n=$(cpu_count "$PROXY_CPUS")
load_n=$(cpu_count "$LOAD_CPUS")

bench_work=$(mktemp -d)
trap cleanup EXIT
# shellcheck source=bench/setup.sh
. bench/setup.sh
start "$LOAD_CPUS" "$work/provider.log" "$NGINX" -p "$work/provider" -c "$work/provider/nginx.conf" -g 'daemon off;'
owns "$started" "$P_JSON"; owns "$started" "$P_SSE"
chat=/v1/chat/completions

wrk_rps() {
  # wrk_rps URL LUA: 1 s warm-up, then DURATION s; prints requests/s
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d1s -s "$work/$2.lua" "$1" >/dev/null
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$work/$2.lua" "$1" >"$work/wrk.out"
  ! grep -q "Non-2xx" "$work/wrk.out" || die "non-2xx answers: $(cat "$work/wrk.out")"
  awk '/^Requests\/sec/ {print $2}' "$work/wrk.out"
}

one() {
  # one SIDE BIN ENV: a fresh egress; prints "chat_rps stream_rps cpu_us_per_req faults_per_req ok rss"
  local side=$1 b=$2 envs=$3
  # shellcheck disable=SC2086  # ENV is a list of VAR=value words
  RUST_LOG=info start "$PROXY_CPUS" "$work/egress-$side.log" env $envs "$b" --config "$work/plano.yaml"
  local pid=$started
  owns "$pid" "$EGRESS"; owns "$pid" "$ADMIN_EG"
  smoke "http://127.0.0.1:$EGRESS$chat" chat '"chat.completion"'
  smoke "http://127.0.0.1:$EGRESS$chat" stream 'data: \[DONE\]'
  local c s
  c=$(wrk_rps "http://127.0.0.1:$EGRESS$chat" chat)
  s=$(wrk_rps "http://127.0.0.1:$EGRESS$chat" stream)
  perf stat -x, -e task-clock,page-faults -p "$pid" -o "$work/perf.csv" &
  local perf=$!
  sleep 0.2
  taskset -c "$LOAD_CPUS" "$bin/loadgen" --url "http://127.0.0.1:$EGRESS$chat" --mode rate --rate "$RATE" \
    --seconds "$RATE_SECONDS" --header 'x-user-id: bench' --model bench-json >"$work/rate.json"
  sleep 0.2
  kill -INT "$perf"; wait "$perf" || true
  local rss; rss=$(rss_mib "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$work/perf.csv" "$work/rate.json" "$c" "$s" "$rss" <<'PY'
import json, sys
vals = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and not line.startswith("#"):
        vals[f[2]] = float(f[0])
r = json.load(open(sys.argv[2]))
ok = r["ok"]
if r["errors"]:
    sys.exit(f"fixed-rate row: {r['errors']} errors")
print(sys.argv[3], sys.argv[4], f"{vals['task-clock'] * 1000 / ok:.1f}", f"{vals['page-faults'] / ok:.3f}", ok, sys.argv[5])
PY
}

echo "A: ${A_ENV:-(no env)} $A_BIN"
echo "B: ${B_ENV:-(no env)} $B_BIN"
echo
echo "| pair | A chat req/s | B chat req/s | A stream req/s | B stream req/s | A CPU µs/req | B CPU µs/req | B/A CPU | A faults/req | B faults/req | A RSS | B RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
rows=()
for i in $(seq 1 "$PAIRS"); do
  read -r ac as acpu af _ arss <<<"$(one A "$A_BIN" "$A_ENV")"
  read -r bc bs bcpu bf _ brss <<<"$(one B "$B_BIN" "$B_ENV")"
  ratio=$(python3 -c "import sys; print(f'{float(sys.argv[2])/float(sys.argv[1]):.3f}')" "$acpu" "$bcpu")
  echo "| $i | $ac | $bc | $as | $bs | $acpu | $bcpu | $ratio | $af | $bf | $arss MiB | $brss MiB |"
  rows+=("$ac $bc $as $bs $acpu $bcpu")
done
python3 - "${rows[@]}" <<'PY'
import statistics as st, sys
rows = [list(map(float, r.split())) for r in sys.argv[1:]]
def med(k): return st.median(r[k] for r in rows)
print()
print(f"median B/A: chat req/s {med(1)/med(0):.3f}, stream req/s {med(3)/med(2):.3f}, "
      f"CPU per request {st.median(r[5]/r[4] for r in rows):.3f} (per-pair ratios, median)")
PY
echo
echo "Measured by \`bench/thp.sh\` on $(date -u +%Y-%m-%d\ %H:%M) UTC, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); egress on CPU $PROXY_CPUS, wrk and the nginx provider on CPU $LOAD_CPUS; $CONNECTIONS connections, ${DURATION} s per wrk row; fixed-rate row $RATE req/s × ${RATE_SECONDS} s; load average $(cut -d' ' -f1-3 /proc/loadavg)."

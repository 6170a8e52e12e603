#!/usr/bin/env bash
# Throughput, latency and CPU per request of the proxies, measured so that the proxy is the
# bottleneck (DESIGN.md §9, issue #15): a static nginx provider (`return 200`, ~1 KB chat
# completion or a pre-rendered SSE stream) and the load generator share LOAD_CPUS; the
# proxy under test runs alone on PROXY_CPUS; nginx `proxy_pass` (keep-alive upstream) is
# measured in the same run as the reference. Prints markdown tables (the format of
# BENCHMARKS.md) and keeps every figure in a JSON file (JSON_OUT).
#
# Rounds: every row runs ROUNDS times, alternated. Each round runs, in groups, the
# closed-loop rows (nginx first, then provider direct, the floor, egress chat, egress
# /v1/messages, the edge chain), the closed-loop streaming rows (nginx first), the
# fixed-rate rows (nginx first) and the time-to-first-token rows (provider direct first);
# within a group the rows after the reference are rotated by one place per round. A row's
# figures are medians over the rounds; a ratio is the median of each round's ratio (row /
# nginx of the same round; edge chain / egress of the same round), so a neighbour's burst
# falls on both sides of a ratio or on neither. CPU per request: `perf stat -e task-clock`
# of the proxy's processes during its run (utime+stime from /proc when perf is missing or
# refused), divided by the requests it completed.
#
#   bench/run.sh            # 3 rounds of 9 closed-loop runs × (1 + 8 s) and 7 loadgen
#                           # runs × 5 s: ~7 minutes after the release build
#   bench/run.sh --quick    # 3 rounds, closed loop 1 + 2 s, loadgen 2 s: ~3 minutes
#   python3 bench/report.py tables /tmp/plano-bench-….json   # the tables again from a saved run
#
# Environment:
#   PROXY_CPUS=1  LOAD_CPUS=0   taskset CPU lists (on larger machines e.g. PROXY_CPUS=2-3
#                               LOAD_CPUS=0-1; the proxies use as many threads as CPUs)
#   ROUNDS=3                    rounds (every row runs once per round)
#   DURATION=8                  seconds per measured closed-loop run (2 with --quick)
#   WARM=1                      seconds of warm-up before each closed-loop run
#   ROW_DURATION=5              seconds per fixed-rate and TTFT run (2 with --quick)
#   CONNECTIONS=32              closed-loop connections (wrk -t1)
#   RATE=2000                   requests/s of the fixed-rate rows
#   CPU_SOURCE=perf|proc        force the CPU-time source (default: perf when it works)
#   JSON_OUT=path               where the JSON of the run goes (default /tmp/plano-bench-DATE.json)
#   BENCH_NO_BUILD=1            use the binaries already in target/release
#   EGRESS_BIN=path             another plano-egress binary (A/B comparisons of a change)
#   PERF_OUT=/tmp/egress.perf   also `perf record -g` the egress during its first-round chat run
#                               (then: perf report -i /tmp/egress.perf --no-children)
# Needs: nginx, wrk, taskset, ss, python3 (apt-get install -y nginx wrk util-linux iproute2);
# perf (linux-perf) for task-clock CPU time, else /proc's tick counts are used.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

QUICK=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^# perf (linux-perf)/p' "$0"; exit 0 ;;
    *) die "unknown argument $a (try --help)" ;;
  esac
done
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
CONNECTIONS=${CONNECTIONS:-32}
RATE=${RATE:-2000}
ROUNDS=${ROUNDS:-3}
WARM=${WARM:-1}
if [ "$QUICK" = 1 ]; then default_duration=2; default_row_duration=2
else default_duration=8; default_row_duration=5; fi
DURATION=${DURATION:-$default_duration}
ROW_DURATION=${ROW_DURATION:-$default_row_duration}
for v in ROUNDS WARM DURATION ROW_DURATION CONNECTIONS RATE; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v} is not a positive whole number"
done
JSON_OUT=${JSON_OUT:-/tmp/plano-bench-$(date -u +%Y%m%dT%H%M%SZ).json}
started_at=$(date -u +%H:%M)

need nginx "apt-get install -y nginx"
need wrk "apt-get install -y wrk"
need taskset "apt-get install -y util-linux"
need ss "apt-get install -y iproute2"
need python3 "apt-get install -y python3"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
proxy_n=$(cpu_count "$PROXY_CPUS")
load_n=$(cpu_count "$LOAD_CPUS")
[ "$proxy_n" -le "$(nproc)" ] || die "PROXY_CPUS=$PROXY_CPUS names more CPUs than this machine has"
cpu_source_asked=${CPU_SOURCE:-}
if [ -z "$cpu_source_asked" ]; then
  if command -v perf >/dev/null 2>&1 && perf stat -x, -e task-clock -o /dev/null -p $$ -- true 2>/dev/null; then
    CPU_SOURCE=perf
  else
    CPU_SOURCE=proc
    echo "perf stat is missing or refused: CPU time from /proc utime+stime (1/$(getconf CLK_TCK) s ticks)" >&2
  fi
fi
case $CPU_SOURCE in perf) need perf "apt-get install -y linux-perf" ;; proc) ;; *) die "CPU_SOURCE=$CPU_SOURCE (perf or proc)" ;; esac
HZ=$(getconf CLK_TCK)

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "building release binaries" >&2
  cargo build --release --quiet -p plano-egress -p plano-edge -p integration-tests \
    --bin plano-egress --bin plano-edge --bin loadgen --bin bare-proxy
fi
bin=target/release
for b in plano-egress plano-edge loadgen bare-proxy; do [ -x "$bin/$b" ] || die "$bin/$b is missing (run without BENCH_NO_BUILD)"; done

bench_work=$(mktemp -d)
trap cleanup EXIT
# shellcheck source=bench/setup.sh
. bench/setup.sh
start "$LOAD_CPUS" "$work/provider.log" "$NGINX" -p "$work/provider" -c "$work/provider/nginx.conf" -g 'daemon off;'
provider_pid=$started
start "$PROXY_CPUS" "$work/proxy.log" "$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf" -g 'daemon off;'
nginx_proxy_pid=$started
RUST_LOG=info start "$PROXY_CPUS" "$work/egress.log" "${EGRESS_BIN:-$bin/plano-egress}" --config "$work/plano.yaml"
egress_pid=$started
RUST_LOG=info start "$PROXY_CPUS" "$work/edge.log" "$bin/plano-edge" --config "$work/plano.yaml"
edge_pid=$started
# The floor: Plano's listener and upstream pool with no feature between them.
read -r FLOOR <<<"$(free_ports 1)"
start "$PROXY_CPUS" "$work/floor.log" "$bin/bare-proxy" --listen "127.0.0.1:$FLOOR" \
  --upstream "http://127.0.0.1:$P_JSON" --threads "$proxy_n"
floor_pid=$started

owns "$provider_pid" "$P_JSON"; owns "$provider_pid" "$P_SSE"
owns "$nginx_proxy_pid" "$N_JSON"; owns "$nginx_proxy_pid" "$N_SSE"
owns "$egress_pid" "$EGRESS"; owns "$egress_pid" "$ADMIN_EG"
owns "$edge_pid" "$EDGE"; owns "$edge_pid" "$ADMIN_ED"
owns "$floor_pid" "$FLOOR"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$ADMIN_EG/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$ADMIN_ED/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
# nginx `proxy_pass`'s CPU time is its master's and its workers' (the workers do the work).
nginx_workers=$(children "$nginx_proxy_pid")
[ -n "$nginx_workers" ] || die "nginx proxy_pass ($nginx_proxy_pid) has no workers"
NGINX_CPU=("nginx:$nginx_proxy_pid")
for w in $nginx_workers; do NGINX_CPU+=("nginx:$w"); done

smoke "http://127.0.0.1:$N_JSON/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/messages" messages '"type":"message"'
smoke "http://127.0.0.1:$EDGE/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$FLOOR/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/chat/completions" stream 'data: \[DONE\]'
smoke "http://127.0.0.1:$N_SSE/v1/chat/completions" stream 'data: \[DONE\]'

rss_idle=$(rss_mib "$egress_pid")
results=$work/results.json
echo '{"rounds": [], "rows": {}}' >"$results"
errors=0
seq_no=0
record() {
  # record KEY ERRORS: count a row's failed requests
  errors=$((errors + $2))
  [ "$2" = 0 ] || echo "  $1: $2 errors" >&2
}
measure() {
  # measure ROUND KEY PARSER [ROLE:PID...] -- CMD...: run CMD on LOAD_CPUS (its output
  # parsed by `report.py PARSER`) and count the CPU time the listed processes spend over
  # it; the row goes into the run's JSON
  local rnd=$1 key=$2 parser=$3 specs=()
  shift 3
  while [ $# -gt 0 ] && [ "$1" != -- ]; do specs+=("$1"); shift; done
  shift
  seq_no=$((seq_no + 1))
  echo "round $rnd: $key" >&2
  local before after pids="" t0 t1 e
  rm -f "$work/perf.csv"
  t0=$EPOCHREALTIME
  grep '^cpu' /proc/stat >"$work/stat.before"
  before=$(cpu_ticks "${specs[@]}")
  if [ "$CPU_SOURCE" = perf ] && [ ${#specs[@]} -gt 0 ]; then
    pids=$(printf '%s\n' "${specs[@]}" | sed 's/.*://' | paste -sd,)
    taskset -c "$LOAD_CPUS" perf stat -x, -e task-clock -o "$work/perf.csv" -p "$pids" -- "$@" >"$work/run.out"
  else
    taskset -c "$LOAD_CPUS" "$@" >"$work/run.out"
  fi
  after=$(cpu_ticks "${specs[@]}")
  grep '^cpu' /proc/stat >"$work/stat.after"
  t1=$EPOCHREALTIME
  e=$(python3 bench/report.py "$parser" "$work/run.out" --into "$results" --round "$rnd" --key "$key" \
    --seq "$seq_no" --hz "$HZ" --window "$t0" "$t1" \
    --perf "$work/perf.csv" --ticks-before "$before" --ticks-after "$after" \
    --stat-before "$work/stat.before" --stat-after "$work/stat.after" --proxy-cpus "$PROXY_CPUS")
  record "$key" "$e"
}
closed() {
  # closed ROUND KEY URL LUA [ROLE:PID...]: warm-up, then a measured closed-loop run
  local rnd=$1 key=$2 url=$3 lua=$4
  shift 4
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${WARM}s" -s "$work/$lua.lua" "$url" >/dev/null
  measure "$rnd" "$key" wrk "$@" -- wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/$lua.lua" "$url"
}
loadgen() {
  # loadgen ROUND KEY URL [ROLE:PID...] -- ARGS...: a fixed-rate or TTFT run
  local rnd=$1 key=$2 url=$3
  shift 3
  local specs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do specs+=("$1"); shift; done
  shift
  measure "$rnd" "$key" loadgen "${specs[@]}" -- "$bin/loadgen" --url "$url" --seconds "$ROW_DURATION" \
    --header 'x-user-id: bench' "$@"
}
chat=/v1/chat/completions
row() {
  # row ROUND NAME: one run of a row
  local r=$1
  case $2 in
    nginx) closed "$r" nginx.closed "http://127.0.0.1:$N_JSON$chat" chat "${NGINX_CPU[@]}" ;;
    direct) closed "$r" direct.closed "http://127.0.0.1:$P_JSON$chat" chat ;;
    floor) closed "$r" floor.closed "http://127.0.0.1:$FLOOR$chat" chat "floor:$floor_pid" ;;
    egress)
      if [ -n "${PERF_OUT:-}" ] && [ "$r" = 1 ]; then
        need perf "apt-get install -y linux-perf"
        (sleep "$WARM"; perf record -q -g -p "$egress_pid" -o "$PERF_OUT" -- sleep "$DURATION" 2>/dev/null) &
        local perf_job=$!
      fi
      closed "$r" egress.closed "http://127.0.0.1:$EGRESS$chat" chat "egress:$egress_pid"
      [ -z "${perf_job:-}" ] || wait "$perf_job"
      ;;
    messages) closed "$r" messages.closed "http://127.0.0.1:$EGRESS/v1/messages" messages "egress:$egress_pid" ;;
    edge) closed "$r" edge.closed "http://127.0.0.1:$EDGE$chat" chat "edge:$edge_pid" "egress:$egress_pid" ;;
    nginx.stream) closed "$r" nginx.stream "http://127.0.0.1:$N_SSE$chat" stream "${NGINX_CPU[@]}" ;;
    direct.stream) closed "$r" direct.stream "http://127.0.0.1:$P_SSE$chat" stream ;;
    egress.stream) closed "$r" egress.stream "http://127.0.0.1:$EGRESS$chat" stream "egress:$egress_pid" ;;
    nginx.rate) loadgen "$r" nginx.rate "http://127.0.0.1:$N_JSON$chat" "${NGINX_CPU[@]}" -- \
      --mode rate --rate "$RATE" --model bench-json ;;
    egress.rate) loadgen "$r" egress.rate "http://127.0.0.1:$EGRESS$chat" "egress:$egress_pid" -- \
      --mode rate --rate "$RATE" --model bench-json ;;
    messages.rate) loadgen "$r" messages.rate "http://127.0.0.1:$EGRESS/v1/messages" "egress:$egress_pid" -- \
      --mode rate --rate "$RATE" --model bench-json --api messages ;;
    edge.rate) loadgen "$r" edge.rate "http://127.0.0.1:$EDGE$chat" "edge:$edge_pid" "egress:$egress_pid" -- \
      --mode rate --rate "$RATE" --model bench-json ;;
    direct.ttft) loadgen "$r" direct.ttft "http://127.0.0.1:$P_SSE$chat" -- --mode ttft --concurrency 8 --model bench-sse ;;
    nginx.ttft) loadgen "$r" nginx.ttft "http://127.0.0.1:$N_SSE$chat" "${NGINX_CPU[@]}" -- \
      --mode ttft --concurrency 8 --model bench-sse ;;
    egress.ttft) loadgen "$r" egress.ttft "http://127.0.0.1:$EGRESS$chat" "egress:$egress_pid" -- \
      --mode ttft --concurrency 8 --model bench-sse ;;
    *) die "row $2?" ;;
  esac
}

# The rounds: each group's reference first (nginx; provider direct for time to first
# token), then the group's other rows rotated by one place per round, so that no row
# always runs right after the reference (or last).
rotated() {
  # rotated ROUND ROW...: the rows, rotated by ROUND - 1 places
  local r=$1 i
  shift
  for i in $(seq 0 $(($# - 1))); do
    local k=$(((i + r - 1) % $# + 1))
    echo "${!k}"
  done
}
for r in $(seq 1 "$ROUNDS"); do
  for name in nginx $(rotated "$r" direct floor egress messages edge) \
    nginx.stream $(rotated "$r" direct.stream egress.stream) \
    nginx.rate $(rotated "$r" egress.rate messages.rate edge.rate) \
    direct.ttft $(rotated "$r" nginx.ttft egress.ttft); do
    row "$r" "$name"
  done
done
rss_after=$(rss_mib "$egress_pid")

cmd="bench/run.sh${1:+ $1}"
for d in ROUNDS=3 WARM=1 "DURATION=$default_duration" "ROW_DURATION=$default_row_duration" \
  CONNECTIONS=32 RATE=2000 PROXY_CPUS=1 LOAD_CPUS=0; do
  v=${d%%=*}
  [ "${!v}" = "${d#*=}" ] || cmd="$v=${!v} $cmd"
done
[ -z "$cpu_source_asked" ] || cmd="CPU_SOURCE=$cpu_source_asked $cmd"
python3 - "$results" <<PY
import json, sys
res = json.load(open(sys.argv[1]))
res["meta"] = {
  "command": "$cmd", "date": "$(date -u +%Y-%m-%d)", "time": "$started_at–$(date -u +%H:%M)",
  "machine": "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))",
  "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)",
  "rebuilt": "${BENCH_NO_BUILD:-0}" != "1", "egress_bin": "${EGRESS_BIN:-$bin/plano-egress}",
  "proxy_cpus": "$PROXY_CPUS", "load_cpus": "$LOAD_CPUS", "connections": $CONNECTIONS,
  "rounds": $ROUNDS, "duration": $DURATION, "warm": $WARM, "row_duration": $ROW_DURATION,
  "rate": $RATE, "events": $EVENTS, "errors": $errors, "cpu_source": "$CPU_SOURCE",
  "rss_idle": "$rss_idle", "rss_after": "$rss_after",
  "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
}
json.dump(res, open(sys.argv[1], "w"), indent=1)
PY
cp "$results" "$JSON_OUT"
echo "every figure of this run: $JSON_OUT" >&2
python3 bench/report.py tables "$JSON_OUT"
[ "$errors" = 0 ] || die "$errors requests failed (see the rows above)"

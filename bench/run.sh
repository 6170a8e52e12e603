#!/usr/bin/env bash
# Throughput and latency of the proxies, measured so that the proxy is the bottleneck
# (DESIGN.md §9, issue #15): a static nginx provider (`return 200`, ~1 KB chat completion
# or a pre-rendered SSE stream) and the load generator share LOAD_CPUS; the proxy under
# test runs alone on PROXY_CPUS; nginx `proxy_pass` (keep-alive upstream) is measured in
# the same run as the reference. Prints markdown tables (the format of BENCHMARKS.md).
#
#   bench/run.sh            # full run, ~9 minutes after the release build (measured)
#   bench/run.sh --quick    # 3 s per row, under 2 minutes after the build
#
# Environment:
#   PROXY_CPUS=1  LOAD_CPUS=0   taskset CPU lists (on larger machines e.g. PROXY_CPUS=2-3
#                               LOAD_CPUS=0-1; the proxies use as many threads as CPUs)
#   DURATION=15                 seconds per measured row (3 with --quick)
#   CONNECTIONS=32              closed-loop connections (wrk -t1)
#   RATE=2000                   requests/s of the fixed-rate rows
#   BENCH_NO_BUILD=1            use the binaries already in target/release
#   EGRESS_BIN=path             another plano-egress binary (A/B comparisons of a change)
#   PERF_OUT=/tmp/egress.perf   also `perf record -g` the egress during its closed-loop row
#                               (then: perf report -i /tmp/egress.perf --no-children)
# Needs: nginx, wrk, taskset, ss, python3 (apt-get install -y nginx wrk util-linux iproute2).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

QUICK=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,/^# Needs/p' "$0"; exit 0 ;;
    *) die "unknown argument $a (try --help)" ;;
  esac
done
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
CONNECTIONS=${CONNECTIONS:-32}
RATE=${RATE:-2000}
if [ "$QUICK" = 1 ]; then DURATION=${DURATION:-3}; WARM=1; else DURATION=${DURATION:-15}; WARM=3; fi

need nginx "apt-get install -y nginx"
need wrk "apt-get install -y wrk"
need taskset "apt-get install -y util-linux"
need ss "apt-get install -y iproute2"
need python3 "apt-get install -y python3"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
proxy_n=$(cpu_count "$PROXY_CPUS")
load_n=$(cpu_count "$LOAD_CPUS")
[ "$proxy_n" -le "$(nproc)" ] || die "PROXY_CPUS=$PROXY_CPUS names more CPUs than this machine has"

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

smoke "http://127.0.0.1:$N_JSON/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/messages" messages '"type":"message"'
smoke "http://127.0.0.1:$EDGE/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$FLOOR/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/chat/completions" stream 'data: \[DONE\]'
smoke "http://127.0.0.1:$N_SSE/v1/chat/completions" stream 'data: \[DONE\]'

rss_idle=$(rss_mib "$egress_pid")
rows=$work/rows.json
echo '{}' > "$rows"
errors=0
record() {
  # record KEY JSON
  python3 - "$rows" "$1" "$2" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1])); rows[sys.argv[2]] = json.loads(sys.argv[3])
json.dump(rows, open(sys.argv[1], "w"))
PY
  local e
  e=$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1]).get('errors', 0)))" "$2")
  errors=$((errors + e))
  [ "$e" = 0 ] || echo "  $1: $e errors" >&2
}
closed() {
  # closed KEY URL LUA: warm-up, then a measured closed-loop run
  echo "closed loop: $1" >&2
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${WARM}s" -s "$work/$3.lua" "$2" >/dev/null
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/$3.lua" "$2" >"$work/wrk.out"
  record "$1" "$(python3 bench/report.py wrk "$work/wrk.out")"
}
loadgen() {
  # loadgen KEY URL ARGS...: fixed-rate or TTFT rows
  echo "loadgen: $1" >&2
  local key=$1 url=$2; shift 2
  taskset -c "$LOAD_CPUS" "$bin/loadgen" --url "$url" --seconds "$DURATION" --header 'x-user-id: bench' "$@" >"$work/loadgen.out"
  record "$key" "$(cat "$work/loadgen.out")"
}

chat=/v1/chat/completions
closed direct.closed "http://127.0.0.1:$P_JSON$chat" chat
closed nginx.closed "http://127.0.0.1:$N_JSON$chat" chat
if [ -n "${PERF_OUT:-}" ]; then
  need perf "apt-get install -y linux-perf"
  (sleep "$WARM"; perf record -q -g -p "$egress_pid" -o "$PERF_OUT" -- sleep "$DURATION" 2>/dev/null) &
  perf_job=$!
fi
closed egress.closed "http://127.0.0.1:$EGRESS$chat" chat
[ -z "${PERF_OUT:-}" ] || wait "$perf_job"
closed messages.closed "http://127.0.0.1:$EGRESS/v1/messages" messages
closed edge.closed "http://127.0.0.1:$EDGE$chat" chat
closed floor.closed "http://127.0.0.1:$FLOOR$chat" chat
loadgen nginx.rate "http://127.0.0.1:$N_JSON$chat" --mode rate --rate "$RATE" --model bench-json
loadgen egress.rate "http://127.0.0.1:$EGRESS$chat" --mode rate --rate "$RATE" --model bench-json
loadgen messages.rate "http://127.0.0.1:$EGRESS/v1/messages" --mode rate --rate "$RATE" --model bench-json --api messages
loadgen edge.rate "http://127.0.0.1:$EDGE$chat" --mode rate --rate "$RATE" --model bench-json
for t in direct:$P_SSE nginx:$N_SSE egress:$EGRESS; do
  loadgen "${t%%:*}.ttft" "http://127.0.0.1:${t#*:}$chat" --mode ttft --concurrency 8 --model bench-sse
  closed "${t%%:*}.stream" "http://127.0.0.1:${t#*:}$chat" stream
done
rss_after=$(rss_mib "$egress_pid")

cmd="bench/run.sh${1:+ $1}"
[ "$PROXY_CPUS" != 1 ] || [ "$LOAD_CPUS" != 0 ] && cmd="PROXY_CPUS=$PROXY_CPUS LOAD_CPUS=$LOAD_CPUS $cmd"
python3 - "$work/meta.json" <<PY
import json, sys
json.dump({
  "command": "$cmd", "date": "$(date -u +%Y-%m-%d)",
  "machine": "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))",
  "proxy_cpus": "$PROXY_CPUS", "load_cpus": "$LOAD_CPUS", "connections": $CONNECTIONS,
  "duration": $DURATION, "rate": $RATE, "events": $EVENTS, "errors": $errors,
  "rss_idle": "$rss_idle", "rss_after": "$rss_after",
}, open(sys.argv[1], "w"))
PY
python3 bench/report.py tables "$rows" "$work/meta.json"
[ "$errors" = 0 ] || die "$errors requests failed (see the rows above)"

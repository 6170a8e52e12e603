#!/usr/bin/env bash
# Memory of plano-egress and plano-edge (DESIGN.md §9, issue #15): RSS idle, with 1,000
# concurrent open streams from a slowly streaming provider, after they finish, and over a
# soak at a fixed mixed rate (streams and whole answers, some upstream errors) sampled
# every 10 s. RSS is not timing-sensitive: this can run on a busy machine.
#
# "Near idle" after the streams (issue #15: "back near idle after they finish") means
# RSS ≤ idle + NEAR_IDLE_MIB (20 MiB), read 5 s after the last stream ended and again
# AFTER_SECONDS (120 s) after it, past the upstream pool's 90 s idle timeout. An absolute
# margin, not a multiple of idle: idle RSS is mostly the mapped binary (~13 MiB of it is
# file-backed text), so "2 × idle" would allow a few MiB of heap on one build and twice
# that on another. 20 MiB leaves room for what the process keeps on purpose after a
# burst — up to 256 pooled upstream connections, its listeners' maps, the allocator's
# per-thread caches — and is well under what 1,000 streams take (40–80 MiB).
#
#   bench/memory.sh            # 1,000 streams + a 10-minute soak per binary (~25 minutes)
#   bench/memory.sh --short    # 1,000 streams + a 1-minute soak per binary (~5 minutes)
#
# Environment: STREAMS=1000, SOAK_SECONDS (600, or 60 with --short), SOAK_RATE=100
# (requests/s: 1/4 streams, 1/10 to a provider answering 500), NEAR_IDLE_MIB=20,
# AFTER_SECONDS=120, WARMUP_SECONDS (growth is measured from this point of the soak; by
# default its first fifth; BENCHMARKS.md says why this mix warms up for ~8 minutes),
# BENCH_NO_BUILD=1, BIN_DIR (binaries to measure, default target/release; with
# BENCH_NO_BUILD=1 for an A/B of two builds), ONLY=egress or ONLY=edge (measure one binary),
# PLANO_ALLOC_COLLECT and MIMALLOC_*
# (passed through to both binaries, e.g.
# MIMALLOC_ALLOW_THP=1 for transparent huge pages, off by default; docs/deployment.md).
# Needs: nginx (the failing provider), taskset, ss, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SHORT=0
for a in "$@"; do
  case $a in
    --short) SHORT=1 ;;
    -h|--help) sed -n '2,/^# Needs/p' "$0"; exit 0 ;;
    *) die "unknown argument $a (try --help)" ;;
  esac
done
STREAMS=${STREAMS:-1000}
case ${ONLY:-} in '' | egress | edge) ;; *) die "ONLY=$ONLY (egress or edge)" ;; esac
SOAK_RATE=${SOAK_RATE:-100}
NEAR_IDLE_MIB=${NEAR_IDLE_MIB:-20}
AFTER_SECONDS=${AFTER_SECONDS:-120}
[ "$AFTER_SECONDS" -ge 5 ] || die "AFTER_SECONDS must be at least 5"
if [ "$SHORT" = 1 ]; then SOAK_SECONDS=${SOAK_SECONDS:-60}; else SOAK_SECONDS=${SOAK_SECONDS:-600}; fi
need nginx "apt-get install -y nginx"
need taskset "apt-get install -y util-linux"
need ss "apt-get install -y iproute2"
need python3 "apt-get install -y python3"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((STREAMS * 3 + 100)) ] || die "open files limit $(ulimit -n) is too low for $STREAMS streams (ulimit -n)"

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "building release binaries" >&2
  cargo build --release --quiet -p plano-egress -p plano-edge -p integration-tests \
    --bin plano-egress --bin plano-edge --bin loadgen --bin mock-llm
fi
bin=${BIN_DIR:-target/release}
for b in plano-egress plano-edge loadgen mock-llm; do [ -x "$bin/$b" ] || die "$bin/$b is missing (run without BENCH_NO_BUILD)"; done

bench_work=$(mktemp -d)
trap cleanup EXIT
work=$bench_work
read -r P_SLOW P_FAIL EGRESS EDGE ADMIN_EG ADMIN_ED <<<"$(free_ports 6)"

# A slow provider: each stream is 100 chunks 100 ms apart (~10 s), whole answers ~1 KB.
MOCK_WORKERS=2 start 0-$(($(nproc) - 1)) "$work/mock.log" "$bin/mock-llm" --listen "127.0.0.1:$P_SLOW" --chunks 100 --chunk-delay-ms 100
mock_pid=$started
mkdir -p "$work/fail/logs"
cat > "$work/fail/nginx.conf" <<NGINX
worker_processes 1;
error_log $work/fail/logs/error.log warn;
pid $work/fail/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/fail/body; proxy_temp_path $work/fail/proxy;
  fastcgi_temp_path $work/fail/fcgi; uwsgi_temp_path $work/fail/uwsgi; scgi_temp_path $work/fail/scgi;
  server { listen 127.0.0.1:$P_FAIL; location / { default_type application/json;
    return 500 '{"error":{"message":"bench: provider failure","type":"server_error"}}'; } }
}
NGINX
start 0-$(($(nproc) - 1)) "$work/fail.log" "$NGINX" -p "$work/fail" -c "$work/fail/nginx.conf" -g 'daemon off;'
fail_pid=$started

cat > "$work/plano.yaml" <<YAML
version: v0.4.0
model_providers:
  - model: openai/gpt-4o-mini
    base_url: http://127.0.0.1:$P_SLOW
    default: true
  - model: openai/bench-fail
    base_url: http://127.0.0.1:$P_FAIL
ratelimits:
  - model: openai/gpt-4o-mini
    selector: {key: x-user-id, value: "*"}
    limit: {requests: 1000000000, unit: second}
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: $EGRESS
    timeout: 120s
    max_retries: 0
  - type: edge
    name: public
    address: 127.0.0.1
    port: $EDGE
    timeout: 120s
egress:
  url: http://127.0.0.1:$EGRESS
  health: http://127.0.0.1:$ADMIN_EG
admin:
  egress: 127.0.0.1:$ADMIN_EG
  edge: 127.0.0.1:$ADMIN_ED
YAML
cpus=0-$(($(nproc) - 1))
RUST_LOG=info start "$cpus" "$work/egress.log" "$bin/plano-egress" --config "$work/plano.yaml"
egress_pid=$started
RUST_LOG=info start "$cpus" "$work/edge.log" "$bin/plano-edge" --config "$work/plano.yaml"
edge_pid=$started
owns "$mock_pid" "$P_SLOW"; owns "$fail_pid" "$P_FAIL"
owns "$egress_pid" "$EGRESS"; owns "$egress_pid" "$ADMIN_EG"
owns "$edge_pid" "$EDGE"; owns "$edge_pid" "$ADMIN_ED"
sleep 1

echo "| binary | THP | idle | $STREAMS open streams (peak) | 5 s after | ${AFTER_SECONDS} s after | near idle (≤ idle + $NEAR_IDLE_MIB MiB) at 5 s / ${AFTER_SECONDS} s | soak: after warm-up → end | growth |"
echo "|---|---|---|---|---|---|---|---|---|"

# upstream PORT: connections open to PORT (the egress's to the provider, the edge's to
# the egress): after a burst, what the binary's pool keeps.
upstream() { ss -Htn state established "( dport = :$1 )" 2>/dev/null | wc -l; }
# Transparent huge pages for the process: the kernel's THP_enabled (0 after
# PR_SET_THP_DISABLE) and the MiB of anonymous memory in huge pages.
thp() {
  local on; on=$(awk '/^THP_enabled/ {print $2}' "/proc/$1/status")
  local huge; huge=$(awk '/^AnonHugePages/ {printf "%.0f", $2/1024}' "/proc/$1/smaps_rollup" 2>/dev/null || echo "?")
  case $on in 0) echo "off" ;; 1) echo "on (${huge} MiB)" ;; *) echo "? (${huge} MiB)" ;; esac
}

measure() {
  # measure NAME PID PORT UPSTREAM_PORT: streams through PORT while sampling PID's RSS, then a soak
  local name=$1 pid=$2 port=$3 up=$4
  local url="http://127.0.0.1:$port/v1/chat/completions"
  local idle peak=0 after later
  # One request of each kind first: what a process allocates once is not "idle" growth.
  "$bin/loadgen" --url "$url" --mode max --concurrency 4 --seconds 2 --header 'x-user-id: m' >/dev/null
  sleep 2
  idle=$(rss_mib "$pid")
  echo "$name: $STREAMS concurrent streams (~10 s each)" >&2
  "$bin/loadgen" --url "$url" --mode ttft --concurrency "$STREAMS" --seconds 8 --header 'x-user-id: m' >"$work/streams.json" &
  local lg=$!
  local open
  while kill -0 "$lg" 2>/dev/null; do
    local now; now=$(rss_mib "$pid")
    open=$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$now" "$peak" && peak=$now
    echo "  rss ${now} MiB, ${open} client connections" >&2
    sleep 1
  done
  wait "$lg"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"  streams completed: {d.get('ok', d.get('count', '?'))}, errors: {d.get('errors')}, time to end p50 {d.get('p50_ms', 0):.0f} ms\")" "$work/streams.json" >&2
  sleep 5
  after=$(rss_mib "$pid")
  echo "  5 s after: rss ${after} MiB, $(upstream "$up") upstream connections pooled" >&2
  sleep $((AFTER_SECONDS - 5))
  later=$(rss_mib "$pid")
  echo "  ${AFTER_SECONDS} s after: rss ${later} MiB, $(upstream "$up") upstream connections pooled" >&2
  local met
  met=$(python3 -c "import sys; n = float(sys.argv[3]) + float(sys.argv[4]); print(' / '.join('yes' if float(a) <= n else 'no' for a in sys.argv[1:3]))" "$after" "$later" "$idle" "$NEAR_IDLE_MIB")

  echo "$name: soak ${SOAK_SECONDS}s at ${SOAK_RATE} req/s" >&2
  local third=$((SOAK_RATE / 4)) fail=$((SOAK_RATE / 10))
  local whole=$((SOAK_RATE - third - fail))
  "$bin/loadgen" --url "$url" --mode rate --rate "$whole" --seconds "$SOAK_SECONDS" --header 'x-user-id: m' >/dev/null &
  local a=$!
  "$bin/loadgen" --url "$url" --mode rate --rate "$fail" --seconds "$SOAK_SECONDS" --model bench-fail >/dev/null &
  local b=$!
  # Streams: closed loop at a concurrency giving about `third` streams/s of ~10 s each.
  "$bin/loadgen" --url "$url" --mode ttft --concurrency $((third * 10)) --seconds "$SOAK_SECONDS" --header 'x-user-id: m' >/dev/null &
  local c=$!
  local t=0 samples=()
  while [ "$t" -le "$SOAK_SECONDS" ]; do
    samples+=("$(rss_mib "$pid")")
    echo "  t=${t}s rss ${samples[-1]} MiB" >&2
    sleep 10; t=$((t + 10))
  done
  wait "$a" "$b" "$c" || true
  # Warm-up: WARMUP_SECONDS, by default the first 20 % of the soak (at least one sample).
  local warm=$(( ${#samples[@]} / 5 ))
  [ -z "${WARMUP_SECONDS:-}" ] || warm=$((WARMUP_SECONDS / 10))
  [ "$warm" -ge 1 ] || warm=1
  [ "$warm" -lt "${#samples[@]}" ] || warm=$(( ${#samples[@]} - 1 ))
  local base=${samples[$warm]} end=${samples[-1]}
  local growth; growth=$(python3 -c "import sys; print(f'{(float(sys.argv[2])/float(sys.argv[1])-1)*100:+.1f} %')" "$base" "$end")
  echo "| $name | $(thp "$pid") | $idle MiB | $peak MiB | $after MiB | $later MiB | $met | $base → $end MiB (samples: ${samples[*]}) | $growth |"
}

[ "${ONLY:-}" = edge ] || measure plano-egress "$egress_pid" "$EGRESS" "$P_SLOW"
[ "${ONLY:-}" = egress ] || measure "plano-edge (→ egress)" "$edge_pid" "$EDGE" "$EGRESS"
echo
echo "Measured by \`bench/memory.sh${1:+ $1}\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); ${STREAMS} streams of 100 chunks 100 ms apart; soak ${SOAK_SECONDS} s at ${SOAK_RATE} req/s (1/4 streams, 1/10 answered 500 by the provider); RSS from /proc/PID/status; THP as the process had it at the end (huge-page MiB from smaps_rollup)${MIMALLOC_ALLOW_THP:+, MIMALLOC_ALLOW_THP=$MIMALLOC_ALLOW_THP}."

#!/usr/bin/env bash
# Benchmark of the data plane against a zero-delay local mock; writes BENCHMARKS.md
# (the budget table at its end lists each target).
#   bench/run.sh            # builds release binaries, runs everything, rewrites BENCHMARKS.md
# Needs: nginx (installed with apt-get if missing). Takes about 3 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
    || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet -p plano-egress -p plano-edge -p integration-tests \
  --bin plano-egress --bin plano-edge --bin mock-llm --bin loadgen --bin gencert
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

MOCK=127.0.0.1:18181; EGRESS=127.0.0.1:18182; NGX=127.0.0.1:18183; EDGE=127.0.0.1:18184; EDGE_TLS=127.0.0.1:18185
"$bin/gencert" "$work"

MOCK_WORKERS=1 "$bin/mock-llm" --listen $MOCK --body-bytes 1024 --chunks 20 >/dev/null 2>&1 & pids+=($!)

cat > "$work/plano.yaml" <<YAML
version: v0.4.0
model_providers:
  - model: openai/gpt-4o-mini
    base_url: http://$MOCK
    default: true
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: ${EGRESS##*:}
    timeout: 30s
  - type: edge
    name: public
    address: 127.0.0.1
    port: ${EDGE##*:}
  - type: edge
    name: public_tls
    address: 127.0.0.1
    port: ${EDGE_TLS##*:}
    tls:
      cert_path: $work/cert.pem
      key_path: $work/key.pem
egress:
  url: http://$EGRESS
  health: http://127.0.0.1:18192
admin:
  egress: 127.0.0.1:18192
  edge: 127.0.0.1:18191
YAML
RUST_LOG=warn "$bin/plano-egress" --config "$work/plano.yaml" >/dev/null 2>&1 & egress_pid=$!; pids+=($egress_pid)
RUST_LOG=warn "$bin/plano-edge" --config "$work/plano.yaml" >/dev/null 2>&1 & pids+=($!)

mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 2;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  upstream mock { server $MOCK; keepalive 256; }
  server {
    listen $NGX;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & pids+=($!)

for addr in $MOCK $EGRESS $NGX $EDGE $EDGE_TLS; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/${addr%:*}/${addr##*:}) 2>/dev/null && break; sleep 0.1; done
done
sleep 1
rss() { awk '/^VmRSS/ {print int($2/1024)}' /proc/$1/status; }
hwm() { awk '/^VmHWM/ {print int($2/1024)}' /proc/$1/status; }
idle_rss=$(rss $egress_pid)

url() { case $1 in $EDGE_TLS) echo "https://localhost:${1##*:}/v1/chat/completions";; *) echo "http://$1/v1/chat/completions";; esac; }
run() { "$bin/loadgen" --url "$(url "$1")" --ca "$work/ca.pem" --seconds "$SECONDS_PER_RUN" "${@:2}"; }
warm() { "$bin/loadgen" --url "$(url "$1")" --ca "$work/ca.pem" --seconds 2 --mode max --concurrency 16 >/dev/null; }
field() { python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['$2'], 3))" "$1"; }

echo "warming up" >&2
for addr in $MOCK $EGRESS $NGX $EDGE $EDGE_TLS; do warm "$addr"; done

declare -A R
for target in direct:$MOCK egress:$EGRESS nginx:$NGX edge:$EDGE edgetls:$EDGE_TLS; do
  name=${target%%:*}; addr=${target#*:}
  echo "fixed 1000 rps: $name" >&2;  R[$name.rate]=$(run "$addr" --mode rate --rate 1000)
  echo "max throughput: $name" >&2;  R[$name.max]=$(run "$addr" --mode max --concurrency 64 --threads 1)
done
echo "fixed 1000 rps: egress, /v1/messages translated to chat" >&2
R[translated.rate]=$("$bin/loadgen" --url "http://$EGRESS/v1/messages" --api messages --seconds "$SECONDS_PER_RUN" --mode rate --rate 1000)
for target in direct:$MOCK egress:$EGRESS; do
  name=${target%%:*}; addr=${target#*:}
  echo "streaming TTFT: $name" >&2; R[$name.ttft]=$(run "$addr" --mode ttft --concurrency 8)
done
peak_rss=$(hwm $egress_pid)
echo "rate-limit check cost" >&2
ratelimit_bench=$(cargo bench -q -p plano-egress --bench ratelimit 2>/dev/null | grep -v '^$')
echo "translation CPU cost" >&2
translate_bench=$(cargo bench -q -p plano-egress --bench translate 2>/dev/null | grep -v '^$')
# µs of CPU a translated request costs beyond a pass-through one (request + whole answer).
translate_us=$(echo "$translate_bench" | awk '/^translated: \/v1\/messages request|^translated: ~1 KB/ {t+=$(NF-1)} /^pass-through/ {p+=$(NF-1)} END {printf "%.2f", t-p}')

d50=$(field "${R[direct.rate]}" p50_ms); d99=$(field "${R[direct.rate]}" p99_ms)
e50=$(field "${R[egress.rate]}" p50_ms); e99=$(field "${R[egress.rate]}" p99_ms)
n50=$(field "${R[nginx.rate]}" p50_ms); n99=$(field "${R[nginx.rate]}" p99_ms)
x50=$(field "${R[translated.rate]}" p50_ms); x99=$(field "${R[translated.rate]}" p99_ms)
g50=$(field "${R[edge.rate]}" p50_ms); g99=$(field "${R[edge.rate]}" p99_ms)
t50=$(field "${R[edgetls.rate]}" p50_ms); t99=$(field "${R[edgetls.rate]}" p99_ms); tmax=$(field "${R[edgetls.max]}" rps)
dmax=$(field "${R[direct.max]}" rps); emax=$(field "${R[egress.max]}" rps); nmax=$(field "${R[nginx.max]}" rps); gmax=$(field "${R[edge.max]}" rps)
dt50=$(field "${R[direct.ttft]}" first_p50_ms); dt99=$(field "${R[direct.ttft]}" first_p99_ms)
et50=$(field "${R[egress.ttft]}" first_p50_ms); et99=$(field "${R[egress.ttft]}" first_p99_ms)
added99=$(python3 -c "print(round($e99-$d99,3))"); translate99=$(python3 -c "print(round($x99-$e99,3))"); ratio=$(python3 -c "print(round($emax/$nmax,2))")
ttft_added=$(python3 -c "print(round($et50-$dt50,3))")
errs=$(for k in "${!R[@]}"; do field "${R[$k]}" errors; done | paste -sd+ | bc)

cat > BENCHMARKS.md <<MD
# Benchmarks

Produced by \`bench/run.sh\` on $(date -u +%Y-%m-%d) — $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),
release build. Mock provider: \`mock-llm\` (1 worker thread, zero delay, ~1 KB answers, 20-chunk
streams). Load: \`loadgen\` (same client for every target, HTTP/1.1 keep-alive), ${SECONDS_PER_RUN}s per run,
everything on the same 2 cores (load generator, mock, proxy), so absolute numbers include
contention; compare rows, not machines. Errors across all runs: ${errs}.

## Non-streaming, fixed 1,000 requests/s (latency from scheduled start)

| path | p50 ms | p99 ms |
|---|---|---|
| direct to mock | $d50 | $d99 |
| through plano-egress | $e50 | $e99 |
| through plano-egress, \`/v1/messages\` translated to chat and back | $x50 | $x99 |
| through nginx proxy_pass | $n50 | $n99 |
| through plano-edge → plano-egress | $g50 | $g99 |
| through plano-edge (TLS 1.3, keep-alive) → plano-egress | $t50 | $t99 |

## Max throughput (64 concurrent connections)

| path | requests/s |
|---|---|
| direct to mock | $dmax |
| through plano-egress | $emax |
| through nginx proxy_pass | $nmax |
| through plano-edge → plano-egress | $gmax |
| through plano-edge (TLS 1.3, keep-alive) → plano-egress | $tmax |

## Streaming (8 concurrent streams), time to first event

| path | p50 ms | p99 ms |
|---|---|---|
| direct to mock | $dt50 | $dt99 |
| through plano-egress | $et50 | $et99 |

## Against the performance budget

| target | budget | measured | met |
|---|---|---|---|
| egress added p99 at 1k rps | ≤ 0.5 ms | $added99 ms | $(python3 -c "print('inconclusive: direct p99 was worse (noise)' if $added99 < 0 else ('yes' if $added99 <= 0.5 else 'no'))") |
| translation added p99 (\`/v1/messages\` vs pass-through chat, load test above) | ≤ 0.3 ms | $translate99 ms | $(python3 -c "print('inconclusive: pass-through p99 was worse (noise)' if $translate99 < 0 else ('yes' if $translate99 <= 0.3 else 'no'))") |
| translation added CPU per request (in-process, \`benches/translate.rs\`) | ≤ 0.3 ms | $translate_us µs | $(python3 -c "print('yes' if $translate_us <= 300 else 'no')") |
| egress throughput vs nginx | ≥ 0.8× | ${ratio}× | $(python3 -c "print('yes' if $ratio >= 0.8 else 'no')") |
| streaming TTFT added (p50) | ≤ 0.5 ms | $ttft_added ms | $(python3 -c "print('yes' if $ttft_added <= 0.5 else 'no')") |
| egress idle RSS | ≤ 30 MiB | $idle_rss MiB | $(python3 -c "print('yes' if $idle_rss <= 30 else 'no')") |
| egress peak RSS during the runs | — | $peak_rss MiB | |

Not measured yet: RSS with 1,000 concurrent streams, a soak for memory growth.

## Cost of one rate-limit check (\`cargo bench -p plano-egress --bench ratelimit\`)

\`\`\`
$ratelimit_bench
\`\`\`

## Cost of translation (\`cargo bench -p plano-egress --bench translate\`)

The work a \`/v1/messages\` request to an OpenAI-style provider does beyond pass-through,
in-process (no sockets, no scheduling noise):

\`\`\`
$translate_bench
\`\`\`

## Reading these numbers

All processes share 2 cores, so the fixed-rate p99s are dominated by scheduling noise
(two runs on 2026-11-25 gave an egress-added p99 of +2.66 ms and −1.63 ms; the p50s are
stable within ~0.2 ms):
nginx, which does almost nothing per request, adds about as much p99 as the egress. The
throughput gap to nginx is real: per request the egress parses the JSON body, rewrites
\`model\` and re-serialises it, parses the answer again to meter tokens, clones label
strings for several metrics, and goes through axum's router and a tower middleware; nginx
copies bytes. Runs before 2026-11-25 10:00 showed 0.83× against a \`mock-llm\` that kept a
log of every request; without it the mock (and so nginx) is about twice as fast and the gap
shows. The binaries use mimalloc since: with glibc's allocator, malloc/free were about a
fifth of the egress's CPU under this load (perf), and the switch gave +21% throughput on an
ad-hoc run (18.0k → 21.9k requests/s; idle RSS 10 → 18 MiB). Likely next steps, in order of expected gain: meter tokens from the tail of
the body instead of a full parse, cache per-provider metric handles instead of building
labels per call, rewrite \`model\` in place without a full re-serialisation. Rate-limit
check costs are in \`docs/ratelimits.md\`.
MD
cat BENCHMARKS.md

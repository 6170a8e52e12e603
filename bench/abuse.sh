#!/usr/bin/env bash
# The long part of the abuse suite (docs/hardening.md): IDLE (default 10,000) idle
# connections against each release binary — the egress model listener and an edge
# listener — then a new client must still get its answer. Also prints each binary's RSS
# and the connection metrics. Run on a quiet machine; results go in BENCHMARKS.md.
#
#   bench/abuse.sh                 # 10,000 idle connections per binary
#   IDLE=2000 bench/abuse.sh       # a small run on a shared machine
#   BIN=target/debug bench/abuse.sh  # without a release build
#   ROUNDS=2 bench/abuse.sh        # each flood twice (retention or leak?)
#   PORT_BASE=19280 bench/abuse.sh # other ports (default 18280: 18281-18292)
set -euo pipefail
cd "$(dirname "$0")/.."

IDLE=${IDLE:-10000}
BIN=${BIN:-target/release}
if [ "$BIN" = target/release ]; then
  cargo build --release --quiet -p plano-egress -p plano-edge -p integration-tests \
    --bin plano-egress --bin plano-edge --bin mock-llm
fi
for b in plano-egress plano-edge mock-llm; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing (cargo build --release -p integration-tests --bin $b …)" >&2; exit 1; }
done
# The client side holds IDLE sockets too.
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# PORT_BASE moves every port (two runs on one machine).
P=${PORT_BASE:-18280}
MOCK=127.0.0.1:$((P + 1)); EGRESS=127.0.0.1:$((P + 2)); EDGE=127.0.0.1:$((P + 4))
EGRESS_ADMIN=127.0.0.1:$((P + 12)); EDGE_ADMIN=127.0.0.1:$((P + 11))
# The edge gets a cap above IDLE, so all IDLE connections are held at once; the egress keeps
# its default (derived from the open-files limit: 9,488 at a limit of 20,000), so at 10,000
# the longest-idle are shed. EDGE_CAP=$((IDLE / 2)) shows shedding on the edge too.
EDGE_CAP=${EDGE_CAP:-$((IDLE + 2000))}

MOCK_WORKERS=1 "$BIN/mock-llm" --listen $MOCK >/dev/null 2>&1 & pids+=($!)
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
  - type: edge
    name: public
    address: 127.0.0.1
    port: ${EDGE##*:}
    connections: {max: $EDGE_CAP}
egress:
  url: http://$EGRESS
  health: http://$EGRESS_ADMIN
admin:
  egress: $EGRESS_ADMIN
  edge: $EDGE_ADMIN
YAML
RUST_LOG=warn "$BIN/plano-egress" --config "$work/plano.yaml" >"$work/egress.log" 2>&1 & egress_pid=$!; pids+=("$egress_pid")
RUST_LOG=warn "$BIN/plano-edge" --config "$work/plano.yaml" >"$work/edge.log" 2>&1 & edge_pid=$!; pids+=("$edge_pid")
for _ in $(seq 1 100); do
  curl -fsS "http://$EDGE_ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
# Every process this script talks to must be its own and answering before a flood: a
# missing mock would make the egress's answer a 502 that says nothing about the egress.
first=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
  "http://$EGRESS/v1/chat/completions" || true)
[ "$first" = 200 ] || { echo "the egress did not answer 200 before any flood (HTTP $first): is something else on ports $P-$((P + 12))?" >&2; tail -5 "$work/egress.log" >&2; exit 1; }

rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

probe() { # name addr pid admin
  local name=$1 addr=$2 pid=$3 admin=$4
  local ready="$work/$name.ready"
  rm -f "$ready"
  local base_kb; base_kb=$(rss_kb "$pid")
  python3 - "$addr" "$IDLE" "$ready" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
ready = sys.argv[3]
socks = []
start = time.time()
# Keep-alive connections that have had one answer and then go quiet: connect and send a
# request on each (so the header-read timeout does not apply), then read every answer.
for i in range(n):
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        socks.append(s)
    except OSError as e:
        print(f"  connect {i} failed: {e}", flush=True)
        break
answered = 0
for s in socks:
    try:
        if s.recv(4096).startswith(b"HTTP/1.1 "):
            answered += 1
    except OSError:
        pass
print(f"  {len(socks)} connections opened, {answered} answered, now idle, in {time.time() - start:.1f}s", flush=True)
open(ready, "w").close()
time.sleep(30)
PY
  local holder=$!
  # Wait until the holder's connections are open, answered and idle (bounded).
  for _ in $(seq 1 1800); do
    [ -e "$ready" ] && break
    sleep 0.1
  done
  local t0 t1 code
  t0=$(date +%s.%N)
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
    -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' \
    "http://$addr/v1/chat/completions" || true)
  t1=$(date +%s.%N)
  echo "$name: a new client with $IDLE idle connections open: HTTP $code in $(awk "BEGIN {printf \"%.3f\", $t1 - $t0}") s; RSS $(rss "$pid")"
  local metrics open
  metrics=$(curl -s "http://$admin/metrics" | grep -E '^plano_connections_(open|rejected_total|closed_total)' || true)
  echo "$metrics" | sed 's/^/  /'
  # Connections held at the new request (the open gauge counts the probe's own as well).
  open=$(echo "$metrics" | awk '/^plano_connections_open/ {n += $2} END {print int(n)}')
  if [ "${open:-0}" -gt 0 ]; then
    echo "$name: $(awk "BEGIN {printf \"%.1f\", ($(rss_kb "$pid") - $base_kb) * 1024 / $open}") bytes of RSS per open connection (RSS with the flood - RSS before it, / $open open)"
  fi
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  sleep 3
  echo "$name: RSS 3 s after the flood's connections closed: $(rss "$pid")"
  [ "$code" = 200 ] || { echo "FAIL: $name did not serve the new client"; exit 1; }
}

echo "idle RSS: egress $(rss $egress_pid), edge $(rss $edge_pid)"
# ROUNDS=2 floods each binary twice: RSS that stays flat on the second round is memory the
# allocator kept for reuse, RSS that grows again would be a leak.
for _ in $(seq 1 "${ROUNDS:-1}"); do
  probe egress "$EGRESS" "$egress_pid" "$EGRESS_ADMIN"
done
for _ in $(seq 1 "${ROUNDS:-1}"); do
  probe edge "$EDGE" "$edge_pid" "$EDGE_ADMIN"
done
echo "PASS"

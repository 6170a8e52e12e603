#!/usr/bin/env bash
# Instructions the egress spends per request in `plano-common/src/h1_errors.rs` (the wrapper
# that gives hyper's bodiless 400/431/414 the API's error body; docs/hardening.md), against
# its total per request, under callgrind: N keep-alive chat completions and N streams on one
# connection each, counted only while they run (callgrind_control toggles instrumentation).
# Needs valgrind and a release build (it builds one). Instruction counts do not depend on
# machine load, so a shared machine is fine.
#
#   bench/h1_errors_cost.sh          # N=300
#   N=1000 bench/h1_errors_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-300}
BIN=${BIN:-target/release}
if [ "$BIN" = target/release ]; then
  cargo build --release --quiet -p plano-egress -p integration-tests --bin plano-egress --bin mock-llm
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

MOCK=127.0.0.1:18381; EGRESS=127.0.0.1:18382; ADMIN=127.0.0.1:18392
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
admin:
  egress: $ADMIN
YAML
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --dump-line=yes \
  --callgrind-out-file="$work/cg.out" "$BIN/plano-egress" --config "$work/plano.yaml" \
  >"$work/egress.log" 2>&1 & vg=$!; pids+=("$vg")
for _ in $(seq 1 600); do
  curl -fsS "http://$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

client() { # stream(true|false) count
  python3 - "$EGRESS" "$1" "$2" <<'PY'
import http.client, json, sys
host, port = sys.argv[1].rsplit(":", 1)
stream = sys.argv[2] == "true"
n = int(sys.argv[3])
c = http.client.HTTPConnection(host, int(port), timeout=60)
body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                   "messages": [{"role": "user", "content": "hi"}]})
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data[:200])
PY
}
client false 5; client true 5   # warm up (pools, first-use paths) outside the count
callgrind_control -i on "$vg" >/dev/null
client false "$N"
client true "$N"
callgrind_control -i off "$vg" >/dev/null
callgrind_control -d "$vg" >/dev/null
sleep 1
out="$work/cg.out.1"   # the first dump (callgrind_control -d)
[ -n "${CG_OUT:-}" ] && cp "$out" "$CG_OUT"
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}')
# Self cost attributed to h1_errors.rs: the wrapper's functions and code inlined from it.
wrapper=$(callgrind_annotate --auto=no --threshold=100 "$out" 2>/dev/null \
  | awk '/h1_errors.rs/ {gsub(",", "", $1); s += $1} END {print s + 0}')
requests=$((2 * N))
echo "requests: $requests ($N chat completions + $N streams, keep-alive)"
echo "egress instructions: $total total, $((total / requests)) per request"
echo "in h1_errors.rs: $wrapper total, $(awk "BEGIN {printf \"%.1f\", $wrapper / $requests}") per request ($(awk "BEGIN {printf \"%.4f\", 100 * $wrapper / $total}") %)"

#!/usr/bin/env bash
# Start mock-llm and plano-egress with deploy/examples/quickstart.yaml, show a request,
# keep serving until Ctrl-C. `scripts/quickstart.sh --smoke` sends the requests and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

# The ports this script's own processes take: mock-llm, the egress model listener, the
# egress admin port. Anything already listening there would answer in their place.
ports="18080 12000 9902"

holder() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$1" 2>/dev/null | sed 's/^/    /'
  elif command -v lsof >/dev/null 2>&1; then
    lsof -nP -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | sed 's/^/    /'
  fi
}

busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

fail_port() {
  echo "quickstart: port $1 on 127.0.0.1 is already in use; $2 cannot listen there." >&2
  local who
  who=$(holder "$1")
  if [ -n "$who" ]; then
    echo "  held by:" >&2
    echo "$who" >&2
  else
    echo "  (install ss or lsof to see which process holds it)" >&2
  fi
  echo "  Stop it, then run this script again." >&2
  exit 1
}

for port in $ports; do
  case $port in
    18080) what="mock-llm" ;;
    12000) what="plano-egress (model listener)" ;;
    *) what="plano-egress (admin)" ;;
  esac
  if busy "$port"; then fail_port "$port" "$what"; fi
done

cargo build --quiet -p plano-egress -p integration-tests --bin plano-egress --bin mock-llm
bin=target/debug

"$bin/mock-llm" --port 18080 &
mock=$!
"$bin/plano-egress" --config deploy/examples/quickstart.yaml &
egress=$!
trap 'kill $egress $mock 2>/dev/null; wait 2>/dev/null' EXIT

ready=""
for _ in $(seq 1 100); do
  # A process that could not bind exits: never talk to whatever else answers there.
  kill -0 "$mock" 2>/dev/null || fail_port 18080 "mock-llm"
  kill -0 "$egress" 2>/dev/null || {
    echo "quickstart: plano-egress exited before it was ready (see its log above)." >&2
    exit 1
  }
  if curl -sf http://127.0.0.1:12000/healthz >/dev/null 2>&1 && busy 18080; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "quickstart: plano-egress did not answer /healthz on 127.0.0.1:12000 within 10s." >&2
  exit 1
fi

echo
echo "== curl http://127.0.0.1:12000/v1/chat/completions (model: fast)"
curl -sS -f -i http://127.0.0.1:12000/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model": "fast", "messages": [{"role": "user", "content": "Hello!"}]}'
echo
echo
echo "== streaming (model: smart)"
curl -sS -f -N http://127.0.0.1:12000/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model": "smart", "stream": true, "messages": [{"role": "user", "content": "Hello!"}]}'
echo
echo "== Anthropic Messages API, translated to chat completions (model: fast)"
curl -sS -f http://127.0.0.1:12000/v1/messages \
  -H 'content-type: application/json' \
  -d '{"model": "fast", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello!"}]}'
echo
echo
echo "== chat completions, translated to Anthropic Messages (model: claude-sonnet-4-5)"
curl -sS -f http://127.0.0.1:12000/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello!"}]}'
echo
if [ "${1:-}" = "--smoke" ]; then
  exit 0
fi
cat <<'MSG'

Plano egress is serving on http://127.0.0.1:12000/v1 (admin and metrics on 127.0.0.1:9902).
Point any OpenAI client at it, e.g. with the Python SDK:

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:12000/v1", api_key="unused")
  print(client.chat.completions.create(model="fast",
        messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)

Press Ctrl-C to stop.
MSG
wait $egress

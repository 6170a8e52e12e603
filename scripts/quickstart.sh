#!/usr/bin/env bash
# Start mock-llm and plano-egress with deploy/examples/quickstart.yaml, show a request,
# keep serving until Ctrl-C. `scripts/quickstart.sh --smoke` sends the requests and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p plano-egress -p integration-tests --bin plano-egress --bin mock-llm
bin=target/debug

"$bin/mock-llm" --port 18080 &
mock=$!
"$bin/plano-egress" --config deploy/examples/quickstart.yaml &
egress=$!
trap 'kill $egress $mock 2>/dev/null; wait 2>/dev/null' EXIT

for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:12000/healthz >/dev/null 2>&1 && break
  sleep 0.1
done

echo
echo "== curl http://127.0.0.1:12000/v1/chat/completions (model: fast)"
curl -sS -i http://127.0.0.1:12000/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model": "fast", "messages": [{"role": "user", "content": "Hello!"}]}'
echo
echo
echo "== streaming (model: smart)"
curl -sS -N http://127.0.0.1:12000/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model": "smart", "stream": true, "messages": [{"role": "user", "content": "Hello!"}]}'
echo
echo "== Anthropic Messages API, translated to chat completions (model: fast)"
curl -sS http://127.0.0.1:12000/v1/messages \
  -H 'content-type: application/json' \
  -d '{"model": "fast", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello!"}]}'
echo
echo
echo "== chat completions, translated to Anthropic Messages (model: claude-sonnet-4-5)"
curl -sS http://127.0.0.1:12000/v1/chat/completions \
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

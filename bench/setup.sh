# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # variables are shared with the script that sources this
# Shared by bench/run.sh and bench/instructions.sh (sourced after bench/lib.sh, with
# $bench_work set): picks the ports, writes the static provider's answers and nginx
# configs (provider and the nginx `proxy_pass` reference), the wrk request bodies and the
# Plano config with every feature of a deployment on. Starts nothing.
# Needs: bench_work NGINX load_n proxy_n. Sets: work P_JSON P_SSE N_JSON N_SSE EGRESS EDGE
# ADMIN_EG ADMIN_ED EVENTS, and defines smoke().
work=$bench_work
read -r P_JSON P_SSE N_JSON N_SSE EGRESS EDGE ADMIN_EG ADMIN_ED <<<"$(free_ports 8)"

# --- the static provider: answers and request bodies -------------------------------------
EVENTS=$(python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
words = ("The quick brown fox jumps over the lazy dog while the proxy relays every byte "
         "of this answer without changing its meaning. ")
content = (words * 8)[:820]
answer = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "bench-json",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 160, "total_tokens": 174},
}
chunk = lambda delta, finish=None, usage=None: {
    "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
    "model": "bench-sse",
    "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
    **({"usage": usage} if usage else {}),
}
pieces = [content[i:i + 41] for i in range(0, 820, 41)]
events = [chunk({"role": "assistant", "content": ""})]
events += [chunk({"content": p}) for p in pieces]
events.append(chunk({}, "stop"))
events.append(chunk(None, usage={"prompt_tokens": 14, "completion_tokens": 160, "total_tokens": 174}))
sse = "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events) + "data: [DONE]\n\n"
def nginx_return(s, content_type):
    # nginx reads at most 4 KB per token: longer answers are set in pieces and joined.
    quote = lambda p: '"' + p.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    pieces = [s[i:i + 2000] for i in range(0, len(s), 2000)]
    sets = " ".join(f"set $a{i} {quote(p)};" for i, p in enumerate(pieces))
    joined = "".join(f"$a{i}" for i in range(len(pieces)))
    return f'default_type {content_type}; {sets} return 200 "{joined}";'
open(f"{work}/answer.json", "w").write(json.dumps(answer))
open(f"{work}/answer.nginx", "w").write(nginx_return(json.dumps(answer), "application/json"))
open(f"{work}/stream.nginx", "w").write(nginx_return(sse, "text/event-stream"))
ask = "Say hello in one short sentence, please, and keep it under twenty words."
def lua(path, body):
    open(path, "w").write(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["x-user-id"] = "bench"\n'
        f"wrk.body = [[{json.dumps(body)}]]\n")
msgs = [{"role": "user", "content": ask}]
lua(f"{work}/chat.lua", {"model": "bench-json", "messages": msgs})
lua(f"{work}/messages.lua", {"model": "bench-json", "max_tokens": 256, "messages": msgs})
lua(f"{work}/stream.lua", {"model": "bench-sse", "stream": True, "messages": msgs})
print(len(events) + 1)
PY
)

nginx_conf() {
  # nginx_conf DIR WORKERS SERVERS...
  local dir=$1 workers=$2; shift 2
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<NGINX
worker_processes $workers;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
$*
}
NGINX
  "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/logs/check.log" \
    || die "nginx rejects $dir/nginx.conf: $(cat "$dir/logs/check.log")"
}

nginx_conf "$work/provider" "$load_n" "
  server { listen 127.0.0.1:$P_JSON; location / { $(cat "$work/answer.nginx") } }
  server { listen 127.0.0.1:$P_SSE; location / { $(cat "$work/stream.nginx") } }"

nginx_conf "$work/proxy" "$proxy_n" "
  upstream json { server 127.0.0.1:$P_JSON; keepalive 256; }
  upstream sse { server 127.0.0.1:$P_SSE; keepalive 256; }
  server { listen 127.0.0.1:$N_JSON; location / { proxy_pass http://json; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
  server { listen 127.0.0.1:$N_SSE; location / { proxy_pass http://sse; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; } }"

# --- plano: every feature of a real deployment on (selection, a rate limit, metrics,
# usage metering, logs at info) -------------------------------------------------------------
cat > "$work/plano.yaml" <<YAML
version: v0.4.0
model_providers:
  - model: openai/bench-json
    base_url: http://127.0.0.1:$P_JSON
    default: true
  - model: openai/bench-sse
    base_url: http://127.0.0.1:$P_SSE
ratelimits:
  - model: openai/bench-json
    selector: {key: x-user-id, value: "*"}
    limit: {requests: 1000000000, unit: second}
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: $EGRESS
    timeout: 30s
  - type: edge
    name: public
    address: 127.0.0.1
    port: $EDGE
egress:
  url: http://127.0.0.1:$EGRESS
  health: http://127.0.0.1:$ADMIN_EG
admin:
  egress: 127.0.0.1:$ADMIN_EG
  edge: 127.0.0.1:$ADMIN_ED
YAML

# Every path answers what the provider sent before anything is measured.
smoke() {
  local url=$1 lua=$2 want=$3 body
  body=$(python3 -c "import re,sys; print(re.search(r'\[\[(.*)\]\]', open(sys.argv[1]).read(), re.S).group(1))" "$work/$lua.lua")
  local got
  got=$(curl -sS -H 'content-type: application/json' -H 'x-user-id: bench' --data-binary "$body" "$url") \
    || die "no answer from $url"
  grep -q -- "$want" <<<"$got" || die "$url answered something else: ${got:0:300}"
}

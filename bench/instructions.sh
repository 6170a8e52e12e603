#!/usr/bin/env bash
# Instructions per request of the proxies, under callgrind: the provider, config and
# request bodies of bench/run.sh (every feature on), the egress (and, for the edge row,
# the edge) under `valgrind --tool=callgrind`, counted only while a row's load runs
# (`callgrind_control -i on/off`), divided by the requests that completed. Instruction
# counts do not depend on machine load, so a shared machine gives repeatable figures
# (two runs of one binary differ by < 1 %); use them to A/B a change, never as req/s.
#
#   bench/instructions.sh                 # rows: chat messages stream edge
#   bench/instructions.sh nginx chat      # nginx `proxy_pass` (the reference) and the egress
#   bench/instructions.sh chat stream     # some rows
#   bench/instructions.sh floor chat      # the floor: listener + upstream pool and nothing else
#                                         # (integration-tests' bare-proxy), against the egress
#   EGRESS_BIN=/path/plano-egress EDGE_BIN=/path/plano-edge bench/instructions.sh
#   SECONDS_PER_ROW=8 TOP=25 bench/instructions.sh
#   KEEP=/tmp/cg bench/instructions.sh    # keep the callgrind files (callgrind_annotate them)
#   INCLUSIVE=1 bench/instructions.sh     # top functions by inclusive cost (default: self cost)
#
# Prints, per row: requests, Ir/request of the egress (and of the edge for `edge`), and the
# TOP functions by self (or inclusive) Ir/request. Needs valgrind, nginx, wrk, ss, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(chat messages stream edge)
for r in "${ROWS[@]}"; do
  case $r in chat|messages|stream|edge|nginx|floor) ;; -h|--help) sed -n '2,/^# TOP/p' "$0"; exit 0 ;; *) die "unknown row $r (chat, messages, stream, edge, nginx, floor)" ;; esac
done
SECONDS_PER_ROW=${SECONDS_PER_ROW:-5}
TOP=${TOP:-15}
[ "${INCLUSIVE:-0}" = 1 ] && INCL=yes || INCL=no
CONNECTIONS=${CONNECTIONS:-32}
need valgrind "apt-get install -y valgrind"
need nginx "apt-get install -y nginx"
need wrk "apt-get install -y wrk"
need ss "apt-get install -y iproute2"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
load_n=1
proxy_n=1
EGRESS_BIN=${EGRESS_BIN:-target/release/plano-egress}
EDGE_BIN=${EDGE_BIN:-target/release/plano-edge}
FLOOR_BIN=${FLOOR_BIN:-target/release/bare-proxy}
if [ "${BENCH_NO_BUILD:-0}" != 1 ] && [ "$EGRESS_BIN" = target/release/plano-egress ]; then
  echo "building release binaries" >&2
  cargo build --release --quiet -p plano-egress -p plano-edge -p integration-tests \
    --bin plano-egress --bin plano-edge --bin bare-proxy
fi
for b in "$EGRESS_BIN" "$EDGE_BIN" "$FLOOR_BIN"; do [ -x "$b" ] || die "$b is missing"; done

bench_work=$(mktemp -d)
trap cleanup EXIT
# shellcheck source=bench/setup.sh
. bench/setup.sh

start 0 "$work/provider.log" "$NGINX" -p "$work/provider" -c "$work/provider/nginx.conf" -g 'daemon off;'
provider_pid=$started
grind() { # grind NAME BIN: the binary under callgrind, instrumentation off until a row runs
  RUST_LOG=info start 0-127 "$work/$1.log" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$1.cg.%p" "$2" --config "$work/plano.yaml"
}
grind egress "$EGRESS_BIN"; egress_pid=$started
grind edge "$EDGE_BIN"; edge_pid=$started
# nginx `proxy_pass` as one process (no master), for its instructions per request.
start 0-127 "$work/nginx.log" valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/nginx.cg.%p" "$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf" \
  -g 'daemon off; master_process off;'
nginx_pid=$started
read -r FLOOR <<<"$(free_ports 1)"
start 0-127 "$work/floor.log" valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/floor.cg.%p" "$FLOOR_BIN" --listen "127.0.0.1:$FLOOR" \
  --upstream "http://127.0.0.1:$P_JSON"
floor_pid=$started
owns "$provider_pid" "$P_JSON"
owns "$egress_pid" "$EGRESS"
owns "$edge_pid" "$EDGE"
owns "$nginx_pid" "$N_JSON"
owns "$floor_pid" "$FLOOR"
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$ADMIN_EG/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$ADMIN_ED/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
smoke "http://127.0.0.1:$EGRESS/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$EGRESS/v1/messages" messages '"type":"message"'
smoke "http://127.0.0.1:$EGRESS/v1/chat/completions" stream 'data: \[DONE\]'
smoke "http://127.0.0.1:$EDGE/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$N_JSON/v1/chat/completions" chat '"chat.completion"'
smoke "http://127.0.0.1:$FLOOR/v1/chat/completions" chat '"chat.completion"'

# total_ir FILE: the summary line's instruction count.
total_ir() { awk '/^totals:/ {print $2; exit}' "$1"; }

row() { # row NAME URL LUA PIDS...
  local name=$1 url=$2 lua=$3; shift 3
  local p
  # Warm the path (pool, caches) uncounted, then count one run.
  wrk -t1 -c"$CONNECTIONS" -d2s -s "$work/$lua.lua" "$url" >/dev/null
  for p in "$@"; do callgrind_control -z "$p" >/dev/null; callgrind_control -i on "$p" >/dev/null; done
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_ROW}s" -s "$work/$lua.lua" "$url" >"$work/wrk.out"
  for p in "$@"; do callgrind_control -i off "$p" >/dev/null; callgrind_control -d "$name" "$p" >/dev/null; done
  local n non2xx
  n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.out")
  [ -z "$non2xx" ] || die "$name: $non2xx answers were not 2xx"
  echo "## $name: $n requests in ${SECONDS_PER_ROW} s (under callgrind), $CONNECTIONS connections"
  for p in "$@"; do
    local f who
    f=$(ls -t "$work"/*.cg."$p".* 2>/dev/null | head -1)
    [ -n "$f" ] || die "no callgrind dump for pid $p"
    case $p in "$edge_pid") who=plano-edge ;; "$nginx_pid") who=nginx ;; "$floor_pid") who=bare-proxy ;; *) who=plano-egress ;; esac
    local ir
    ir=$(total_ir "$f")
    [ -n "$ir" ] || { cp "$f" /tmp/instructions-debug.cg; die "no total in $f (copied to /tmp/instructions-debug.cg)"; }
    python3 -c "import sys; print(f'{sys.argv[1]}: {int(sys.argv[2]) / int(sys.argv[3]):,.0f} Ir/request')" "$who" "$ir" "$n"
    if [ "$TOP" -gt 0 ]; then
      callgrind_annotate --inclusive="$INCL" "$f" 2>/dev/null | python3 -c '
import re, sys
n, top = int(sys.argv[1]), int(sys.argv[2])
out = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(\S.*)$", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    ir = int(m.group(1).replace(",", ""))
    print(f"  {ir / n:>10,.0f}  {m.group(2)[:150]}")
    out += 1
    if out >= top:
        break
for _ in sys.stdin:  # drain, so callgrind_annotate does not die of SIGPIPE
    pass
' "$n" "$TOP"
    fi
    [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; cp "$f" "$KEEP/$name.$who.cg"; }
    [ -n "${KEEP:-}" ] || rm -f "$f"
  done
}

chat=/v1/chat/completions
for r in "${ROWS[@]}"; do
  case $r in
    chat) row chat "http://127.0.0.1:$EGRESS$chat" chat "$egress_pid" ;;
    messages) row messages "http://127.0.0.1:$EGRESS/v1/messages" messages "$egress_pid" ;;
    stream) row stream "http://127.0.0.1:$EGRESS$chat" stream "$egress_pid" ;;
    nginx) row nginx "http://127.0.0.1:$N_JSON$chat" chat "$nginx_pid" ;;
    floor) row floor "http://127.0.0.1:$FLOOR$chat" chat "$floor_pid" ;;
    edge) row edge "http://127.0.0.1:$EDGE$chat" chat "$edge_pid" "$egress_pid" ;;
  esac
done

# shellcheck shell=bash
# Shared by bench/run.sh and bench/memory.sh (sourced, not run).
# Processes started with `start` are remembered and stopped by `cleanup` (EXIT trap);
# every port the bench talks to is checked to be held by the process the bench started.

bench_pids=()
bench_work=""

die() { echo "bench: $*" >&2; exit 1; }

need() {
  # need CMD "how to install"
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || die "$1 is missing; install it with: $2"
}

cleanup() {
  local p
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bench_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$bench_work" ] && rm -rf "$bench_work"
}

# free_ports N: N ports the kernel hands out now (the bench then checks they are ours).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# cpu_count LIST: how many CPUs a taskset list like "0-3,6" names.
cpu_count() {
  python3 - "$1" <<'PY'
import sys
n = 0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    n += (int(b) - int(a) + 1) if b else 1
print(n)
PY
}

# start CPUS LOGFILE CMD...: run CMD pinned to CPUS in the background; sets $started.
start() {
  local cpus=$1 log=$2; shift 2
  taskset -c "$cpus" "$@" >"$log" 2>&1 &
  started=$!
  bench_pids+=("$started")
}

# owns PID PORT: wait until PORT listens, then check PID (or a child of it) holds it.
owns() {
  local pid=$1 port=$2 line
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || die "process $pid (for port $port) exited; see its log in $bench_work"
    line=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
    [ -n "$line" ] && break
    sleep 0.05
  done
  [ -n "$line" ] || die "nothing listens on port $port after 10 s"
  local holders
  holders=$(grep -o 'pid=[0-9]*' <<<"$line" | cut -d= -f2 | sort -u)
  for h in $holders; do
    [ "$h" = "$pid" ] && return 0
    [ "$(awk '{print $4}' "/proc/$h/stat" 2>/dev/null)" = "$pid" ] && return 0
  done
  die "port $port is held by pid(s) $(xargs <<<"$holders"), not by the bench's process $pid"
}

rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# children PID: the PIDs of PID's children (e.g. nginx's workers), space-separated.
children() {
  local c
  c=$(cat /proc/"$1"/task/*/children 2>/dev/null | xargs)
  [ -n "$c" ] || c=$(pgrep -P "$1" 2>/dev/null | xargs)
  echo "$c"
}

# cpu_ticks ROLE:PID...: prints "ROLE:PID:TICKS " for each, TICKS = utime + stime of the
# whole process (all its threads, dead ones included) in clock ticks (getconf CLK_TCK).
cpu_ticks() {
  local s p f a
  for s in "$@"; do
    p=${s##*:}
    f=$(<"/proc/$p/stat") || die "process $p ($s) is gone"
    f=${f##*) }   # the fields after the command name (which may hold spaces)
    read -ra a <<<"$f"
    printf '%s:%s ' "$s" $((a[11] + a[12]))
  done
}

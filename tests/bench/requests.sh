#!/usr/bin/env bash
# Requests parsed from socket payload, side by side in one run: ksight (`top --batch --json
# --delay 1`, every signal, payload with the default snaplen, requests parsed) next to
# bpftrace running tests/bench/requests.bt — the same raw_syscalls tracepoints, counting
# bytes per socket and the first 4 bytes of every socket call's payload — and nothing at
# all. Run through `cargo xtask bench requests`, as root.
#
# http:   nginx (1 worker, keep-alive, access_log off, a small static file) on loopback,
#         `wrk -t1 -c$CONNS -d${DURATION}s --latency`.
# redis:  Debian's redis-server, `redis-benchmark -t set,get -c $CONNS -n $REQUESTS --csv`
#         (redis 7: requests/s and p99 per test; the mean of SET's and GET's is reported).
#
# Knobs: ROUNDS (5), DURATION (wrk seconds, 10), CONNS (50), REQUESTS (200000 per test),
# HTTP_PORT, REDIS_PORT, NGINX_SENDFILE (on), KSIGHT_BIN; arguments pick `http` / `redis`.
#
# kernel: ns the tracer's programs spend per request completed (BPF run-time statistics,
#         kernel.bpf_stats_enabled=1, summed over the programs that appeared when the tracer
#         started, divided by the requests the load generator completed in the window), and
#         the CPU time of the tracer's own process in the same window per request (ksight:
#         reading, decoding and parsing; bpftrace: nearly idle until it prints its maps);
#         one pass per tracer with the statistics on; the throughput rounds run with them off.
# rounds: ROUNDS alternating rounds of none / ksight / bpftrace; medians of requests/s and
#         p99 latency, with ratios.
# count:  in every ksight round, the requests ksight paired at the server end (HTTP: the
#         server rows with the benchmark's Host; Redis: SET and GET server rows of the
#         redis-server's cgroup), next to what the load generator completed. wrk stops with
#         up to $CONNS requests in flight that the server may still have answered.
set -euo pipefail
cd "$(dirname "$0")/../.."
KSIGHT=${KSIGHT_BIN:-target/release/ksight}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
REQUESTS=${REQUESTS:-200000}
HTTP_PORT=${HTTP_PORT:-8089}
REDIS_PORT=${REDIS_PORT:-6399}
SENDFILE=${NGINX_SENDFILE:-on}
WHAT=${*:-http redis}
[ "$(id -u)" = 0 ] || { echo "bench: needs root" >&2; exit 1; }
for c in nginx wrk redis-server redis-benchmark bpftrace bpftool python3; do
  command -v "$c" >/dev/null || { echo "bench: $c missing (cargo xtask bench requests installs it)" >&2; exit 1; }
done
[ -x "$KSIGHT" ] || { echo "bench: no $KSIGHT (KSIGHT_BIN)" >&2; exit 1; }

DIR=$(mktemp -d)
NGINX_PID= REDIS_PID= TRACER_PID=
stop_tracer() {
  [ -z "$TRACER_PID" ] && return
  # ksight: the interval holding the end of the load is printed before it stops.
  sleep 1.5
  kill -INT "$TRACER_PID" 2>/dev/null || true
  wait "$TRACER_PID" 2>/dev/null || true
  TRACER_PID=
}
cleanup() {
  stop_tracer
  [ -z "$NGINX_PID" ] || kill "$NGINX_PID" 2>/dev/null || true
  [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM PIPE
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || { echo "bench: port $1 is taken" >&2; exit 1; }; }

# nginx: master and one worker in the foreground, everything under $DIR.
mkdir -p "$DIR/www" "$DIR/tmp"
chmod 755 "$DIR" "$DIR/www" # the worker runs as nobody
head -c 612 /dev/zero | tr '\0' 'x' >"$DIR/www/index.html" # nginx's welcome page size
cat >"$DIR/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile $SENDFILE;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  client_body_temp_path $DIR/tmp;
  proxy_temp_path $DIR/tmp;
  fastcgi_temp_path $DIR/tmp;
  uwsgi_temp_path $DIR/tmp;
  scgi_temp_path $DIR/tmp;
  default_type text/html;
  server {
    listen 127.0.0.1:$HTTP_PORT;
    root $DIR/www;
  }
}
EOF

TRACERS="none ksight bpftrace"
KS_OUT=$DIR/ksight.json
BT_OUT=$DIR/bpftrace.out
# The tracer's programs: those loaded since just before it started (other users of the
# machine may load their own; counting every tracepoint program would count theirs).
prog_ids() { bpftool prog show -j | python3 -c 'import json,sys; print(" ".join(str(p["id"]) for p in json.load(sys.stdin)))'; }
TRACER_PROGS=
start_tracer() { # $1: none | ksight | bpftrace
  local before
  before=$(prog_ids)
  case $1 in
    none) TRACER_PID= ;;
    ksight) "$KSIGHT" top --batch --json --delay 1 >"$KS_OUT" 2>"$DIR/ksight.err" & TRACER_PID=$! ;;
    bpftrace) bpftrace tests/bench/requests.bt >"$BT_OUT" 2>"$DIR/bpftrace.err" & TRACER_PID=$! ;;
  esac
  TRACER_PROGS=
  [ -n "$TRACER_PID" ] || return 0
  # Until its sys_exit program is attached.
  for _ in $(seq 300); do
    TRACER_PROGS=$(bpftool prog show -j | python3 -c '
import json, sys
before = set(sys.argv[1].split())
new = [p for p in json.load(sys.stdin) if str(p["id"]) not in before]
if any("sys_exit" in p.get("name", "") for p in new):
    print(" ".join(str(p["id"]) for p in new))' "$before")
    [ -n "$TRACER_PROGS" ] && break
    kill -0 "$TRACER_PID" 2>/dev/null || { echo "bench: $1 exited: $(cat "$DIR/$1.err")" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$TRACER_PROGS" ] || { echo "bench: $1 attached no sys_exit program" >&2; exit 1; }
  # Its other programs may still be loading: until the set holds still.
  local now
  while sleep 0.5; now=$(new_progs "$before"); [ "$now" != "$TRACER_PROGS" ]; do
    TRACER_PROGS=$now
  done
}
new_progs() { # ids of the programs not in $1
  bpftool prog show -j | python3 -c '
import json, sys
before = set(sys.argv[1].split())
print(" ".join(str(p["id"]) for p in json.load(sys.stdin) if str(p["id"]) not in before))' "$1"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cpu_ms() { # CPU time (user + system) of the tracer's process so far, ms
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$TRACER_PID/stat"; }
prog_ns() { # total run time and runs of the tracer's programs
  bpftool prog show -j | python3 -c '
import json, sys
mine = set(sys.argv[1].split())
ns = runs = 0
for p in json.load(sys.stdin):
    if str(p["id"]) in mine and p.get("run_cnt"):
        ns += p["run_time_ns"]; runs += p["run_cnt"]
print(ns, runs)' "$TRACER_PROGS"; }

# One load, its results on one line: requests/s, p99 ms, requests completed.
http_load() {
  wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$HTTP_PORT/index.html" |
    python3 -c '
import re, sys
text = sys.stdin.read()
scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
done = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if bad:
    print("wrk: %s non-2xx responses" % bad.group(1), file=sys.stderr)
print("%.1f %.3f %d" % (rps, float(p99.group(1)) * scale[p99.group(2)], done))'
}
redis_load() {
  redis-benchmark -p "$REDIS_PORT" -n "$REQUESTS" -c "$CONNS" -t set,get --csv 2>/dev/null |
    python3 -c '
import csv, sys
rows = [r for r in csv.DictReader(sys.stdin) if r["test"] in ("SET", "GET")]
assert len(rows) == 2, rows
# Mean of the two tests (same request count each), mean of their p99.
print("%.1f %.3f %d" % (sum(float(r["rps"]) for r in rows) / 2,
      sum(float(r["p99_latency_ms"]) for r in rows) / 2, int(sys.argv[1]) * 2))' "$REQUESTS"
}

# Requests ksight paired at the server end, summed over its intervals.
ksight_count() { # $1: http | redis
  python3 - "$1" "$KS_OUT" "$HTTP_PORT" "${REDIS_CGROUP:-0}" <<'EOF'
import json, sys
what, path, port, cgroup = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
n = unmatched = unanswered = malformed = lost = unlisted = 0
for line in open(path):
    if not line.strip():
        continue
    s = json.loads(line)
    lost += s.get("lost_events", 0)
    p = s.get("protocols", {})
    unmatched += p.get("unmatched_responses", 0)
    unanswered += p.get("unanswered", 0)
    malformed += p.get("malformed", 0)
    unlisted += p.get("unlisted_requests", 0)
    if what == "http":
        n += sum(r["count"] for r in s["http"]["requests"]
                 if r["role"] == "server" and r.get("host") == "127.0.0.1:" + port)
    else:
        n += sum(r["count"] for r in s["redis"]["commands"]
                 if r["role"] == "server" and r["command"] in ("SET", "GET")
                 and (cgroup == 0 or r["cgroup_id"] == cgroup))
print(n, unmatched, unanswered, malformed, unlisted, lost)
EOF
}

run_workload() { # $1: http | redis
  local what=$1 load
  case $what in
    http)
      port_free "$HTTP_PORT"
      nginx -p "$DIR" -c "$DIR/nginx.conf" & NGINX_PID=$!
      for _ in $(seq 50); do
        wrk -t1 -c1 -d1s "http://127.0.0.1:$HTTP_PORT/index.html" >/dev/null 2>&1 && break
        sleep 0.1
      done
      kill -0 "$NGINX_PID" 2>/dev/null || { echo "bench: nginx exited: $(cat "$DIR/error.log")" >&2; exit 1; }
      load=http_load
      title="HTTP/1.1: nginx (1 worker, keep-alive, sendfile $SENDFILE), wrk -t1 -c$CONNS -d${DURATION}s"
      unit="wrk requests completed" ;;
    redis)
      port_free "$REDIS_PORT"
      redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no >/dev/null 2>&1 & REDIS_PID=$!
      for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
      kill -0 "$REDIS_PID" 2>/dev/null || { echo "bench: redis-server exited" >&2; exit 1; }
      # The server's cgroup id (the inode of its cgroup v2 directory), as ksight reports it.
      REDIS_CGROUP=$(stat -c %i "$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)$(sed -n 's/^0:://p' "/proc/$REDIS_PID/cgroup")" 2>/dev/null || echo 0)
      load=redis_load
      title="Redis: redis-server, redis-benchmark -t set,get -c $CONNS -n $REQUESTS"
      unit="requests (SET + GET)" ;;
  esac

  echo "## $title"
  echo
  echo "### Kernel cost per request (BPF run-time statistics, one pass each)"
  echo
  echo "| tracer | requests completed | program runs | socket calls recorded | kernel ns per request | ns per program run | tracer process CPU µs per request |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  local old tracer ns0 runs0 ns1 runs1 rps p99 completed calls cpu0 cpu1
  old=$(sysctl -n kernel.bpf_stats_enabled)
  sysctl -q kernel.bpf_stats_enabled=1
  for tracer in ksight bpftrace; do
    start_tracer "$tracer"
    read -r ns0 runs0 < <(prog_ns)
    cpu0=$(cpu_ms)
    read -r rps p99 completed < <($load)
    read -r ns1 runs1 < <(prog_ns)
    cpu1=$(cpu_ms)
    stop_tracer
    if [ "$tracer" = ksight ]; then
      calls=$(python3 -c 'import json,sys; print(sum(json.loads(l)["socket_io"]["calls"] for l in open(sys.argv[1]) if l.strip()))' "$KS_OUT")
    else
      calls=$(awk '/^@calls:/ {print $2}' "$BT_OUT")
    fi
    awk -v t="$tracer" -v d="$completed" -v c="${calls:-0}" -v ns=$((ns1 - ns0)) -v r=$((runs1 - runs0)) \
      -v c0="$cpu0" -v c1="$cpu1" \
      'BEGIN {printf "| %s | %d | %d | %d | %.0f | %.0f | %.2f |\n", t, d, r, c, ns / d, ns / r, (c1 - c0) * 1000 / d}'
  done
  sysctl -q kernel.bpf_stats_enabled="$old"
  echo

  echo "### Throughput ($ROUNDS alternating rounds) and ksight's count"
  echo
  echo "| round | tracer | requests/s | p99 ms | $unit | ksight's server-side count | unmatched / unanswered / malformed / unlisted / lost events |"
  echo "|---:|---|---:|---:|---:|---:|---|"
  declare -A RPS P99
  local round counted unmatched unanswered malformed unlisted lost
  for round in $(seq "$ROUNDS"); do
    for tracer in $TRACERS; do
      start_tracer "$tracer"
      read -r rps p99 completed < <($load)
      stop_tracer
      RPS[$tracer]+="$rps "
      P99[$tracer]+="$p99 "
      if [ "$tracer" = ksight ]; then
        read -r counted unmatched unanswered malformed unlisted lost < <(ksight_count "$what")
        echo "| $round | $tracer | $rps | $p99 | $completed | $counted | $unmatched / $unanswered / $malformed / $unlisted / $lost |"
      else
        echo "| $round | $tracer | $rps | $p99 | $completed | | |"
      fi
    done
  done
  echo
  local b k t bp kp tp
  b=$(echo "${RPS[none]}" | median); k=$(echo "${RPS[ksight]}" | median); t=$(echo "${RPS[bpftrace]}" | median)
  bp=$(echo "${P99[none]}" | median); kp=$(echo "${P99[ksight]}" | median); tp=$(echo "${P99[bpftrace]}" | median)
  echo "| median | uncaptured | ksight | bpftrace | ksight / uncaptured | bpftrace / uncaptured | ksight / bpftrace |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  awk -v b="$b" -v k="$k" -v t="$t" 'BEGIN {printf "| requests/s | %.0f | %.0f | %.0f | %.3f | %.3f | %.3f |\n", b, k, t, k/b, t/b, k/t}'
  awk -v b="$bp" -v k="$kp" -v t="$tp" 'BEGIN {printf "| p99 latency ms | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f |\n", b, k, t, k/b, t/b, k/t}'
  echo

  case $what in
    http) kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID= ;;
    redis) kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID= ;;
  esac
}

for w in $WHAT; do run_workload "$w"; done

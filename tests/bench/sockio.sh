#!/usr/bin/env bash
# Socket I/O cost, side by side in one run: ksight (`top --batch`, every signal, payload
# records with the default snaplen) next to bpftrace running tests/bench/sock-bytes.bt —
# the same raw_syscalls tracepoints, counting bytes per socket — and nothing at all.
# Run through `cargo xtask bench sockio`, as root.
#
# kernel:     ns the programs spend per socket call (BPF run-time statistics summed over
#             the tracer's programs, divided by the socket calls it recorded), and per
#             system call of any kind (both hooks run on every one).
# throughput: redis-benchmark (SET and GET, 50 clients) against Debian's redis-server on
#             loopback, ROUNDS alternating rounds; median requests/s and ratios.
# files:      what the hooks cost calls that are not on sockets: `dd bs=1` between
#             /dev/zero and /dev/null (every read and write looked up, none recorded).
# snaplen:    ns per socket call with --snaplen 64, 512 (the default) and 4096, on SET/GET
#             of 2 KiB values: what copying more payload costs.
set -euo pipefail
cd "$(dirname "$0")/../.."
KSIGHT=${KSIGHT_BIN:-target/release/ksight}
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-200000}
PORT=${REDIS_PORT:-6399}
[ "$(id -u)" = 0 ] || { echo "bench: needs root" >&2; exit 1; }

redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >/dev/null 2>&1 & REDIS_PID=$!
TRACER_PID=
stop_tracer() { [ -z "$TRACER_PID" ] || { sleep 1.5; kill -INT "$TRACER_PID"; wait "$TRACER_PID" 2>/dev/null || true; TRACER_PID=; }; }
trap 'stop_tracer; kill $REDIS_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

KS_OUT=$(mktemp); BT_OUT=$(mktemp)
SNAPLEN=512
start_tracer() { # $1: none | ksight | bpftrace
  case $1 in
    none) TRACER_PID= ;;
    # Per-second snapshots: the socket calls it recorded are their sum (stop_tracer
    # waits for the last interval to be printed).
    ksight) "$KSIGHT" top --batch --json --delay 1 --snaplen "$SNAPLEN" >"$KS_OUT" 2>/dev/null & TRACER_PID=$! ;;
    bpftrace) bpftrace tests/bench/sock-bytes.bt >"$BT_OUT" 2>/dev/null & TRACER_PID=$! ;;
  esac
  if [ -n "$TRACER_PID" ]; then
    # Until a sys_exit program is attached.
    for _ in $(seq 100); do
      bpftool prog show 2>/dev/null | grep -Eq 'ks_sys_exit|sys_exit' && break
      sleep 0.1
    done
    sleep 0.5
  fi
}
bench() { redis-benchmark -p "$PORT" -n "$REQUESTS" -c 50 -t set,get -q --csv "$@" 2>/dev/null |
  python3 -c 'import csv,sys; r=[float(x[1]) for x in csv.reader(sys.stdin) if x and x[0] in ("SET","GET")]; print(sum(r)/len(r))'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
prog_ns() { # total run time and runs of the tracepoint programs loaded now
  bpftool prog show -j | python3 -c '
import json, sys
ns = runs = 0
for p in json.load(sys.stdin):
    if p.get("type") in ("tracepoint", "raw_tracepoint") and p.get("run_cnt"):
        ns += p["run_time_ns"]; runs += p["run_cnt"]
print(ns, runs)'; }

echo "## Socket I/O: kernel cost per call (redis-benchmark, $REQUESTS requests × SET+GET)"
echo
echo "| tracer | socket calls recorded | program runs | ns per socket call | ns per program run |"
echo "|---|---:|---:|---:|---:|"
old=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q kernel.bpf_stats_enabled=1
for tracer in ksight bpftrace; do
  start_tracer "$tracer"
  read -r ns0 runs0 < <(prog_ns)
  bench >/dev/null
  read -r ns1 runs1 < <(prog_ns)
  stop_tracer
  if [ "$tracer" = ksight ]; then
    calls=$(python3 -c 'import json,sys; print(sum(json.loads(l)["socket_io"]["calls"] for l in open(sys.argv[1]) if l.strip()))' "$KS_OUT")
  else
    calls=$(awk '/^@calls:/ {print $2}' "$BT_OUT")
  fi
  awk -v t="$tracer" -v c="$calls" -v ns=$((ns1 - ns0)) -v r=$((runs1 - runs0)) \
    'BEGIN {printf "| %s | %d | %d | %.0f | %.0f |\n", t, c, r, ns / c, ns / r}'
done
sysctl -q kernel.bpf_stats_enabled="$old"
echo

echo "## Socket I/O: redis throughput ($ROUNDS alternating rounds, median requests/s)"
echo
declare -A rps
for round in $(seq "$ROUNDS"); do
  for tracer in none ksight bpftrace; do
    start_tracer "$tracer"
    rps[$tracer]+="$(bench) "
    stop_tracer
  done
done
base=$(echo ${rps[none]} | tr ' ' '\n' | median)
ks=$(echo ${rps[ksight]} | tr ' ' '\n' | median)
bt=$(echo ${rps[bpftrace]} | tr ' ' '\n' | median)
echo "| uncaptured req/s | ksight req/s | bpftrace req/s | ksight / uncaptured | bpftrace / uncaptured | ksight / bpftrace |"
echo "|---:|---:|---:|---:|---:|---:|"
awk -v b="$base" -v k="$ks" -v t="$bt" 'BEGIN {printf "| %.0f | %.0f | %.0f | %.3f | %.3f | %.3f |\n", b, k, t, k/b, t/b, k/t}'
echo
echo "## Socket I/O hooks on calls that are not socket calls ($ROUNDS alternating rounds, median)"
echo
declare -A dd_ms
now_ns() { date +%s%N; }
for round in $(seq "$ROUNDS"); do
  for tracer in none ksight bpftrace; do
    start_tracer "$tracer"
    t0=$(now_ns); dd if=/dev/zero of=/dev/null bs=1 count=1000000 2>/dev/null; t1=$(now_ns)
    stop_tracer
    dd_ms[$tracer]+="$(( (t1 - t0) / 1000000 )) "
  done
done
base=$(echo ${dd_ms[none]} | tr ' ' '\n' | median)
ks=$(echo ${dd_ms[ksight]} | tr ' ' '\n' | median)
bt=$(echo ${dd_ms[bpftrace]} | tr ' ' '\n' | median)
echo "| 1M × (read + write) of 1 byte | uncaptured ms | ksight ms | bpftrace ms | ksight / uncaptured | bpftrace / uncaptured | ksight / bpftrace |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk -v b="$base" -v k="$ks" -v t="$bt" 'BEGIN {printf "| dd bs=1 | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n", b, k, t, k/b, t/b, k/t}'

echo
echo "## Socket I/O: kernel cost by snaplen (2 KiB values)"
echo
echo "| snaplen | socket calls recorded | payload bytes copied | ns per socket call |"
echo "|---:|---:|---:|---:|"
sysctl -q kernel.bpf_stats_enabled=1
for SNAPLEN in 64 512 4096; do
  start_tracer ksight
  read -r ns0 runs0 < <(prog_ns)
  bench -d 2048 >/dev/null
  read -r ns1 runs1 < <(prog_ns)
  stop_tracer
  read -r calls payload < <(python3 -c 'import json,sys
s=[json.loads(l)["socket_io"] for l in open(sys.argv[1]) if l.strip()]
print(sum(x["calls"] for x in s), sum(x["payload_bytes"] for x in s))' "$KS_OUT")
  awk -v s="$SNAPLEN" -v c="$calls" -v p="$payload" -v ns=$((ns1 - ns0)) \
    'BEGIN {printf "| %d | %d | %d | %.0f |\n", s, c, p, ns / c}'
done
sysctl -q kernel.bpf_stats_enabled="$old"
rm -f "$KS_OUT" "$BT_OUT"

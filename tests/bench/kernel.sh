#!/usr/bin/env bash
# Kernel-side cost and workload slowdown of ksight next to bpftrace doing the equivalent
# counting, measured side by side in one run. Run through `cargo xtask bench`, as root.
#
# kernel:   ns per event of every program, from the kernel's BPF run-time statistics
#           (kernel.bpf_stats_enabled=1, read with bpftool), for ksight and bpftrace alike.
# flood:    three parallel connect loops under `ksight top --batch`: events per second
#           delivered and events lost with the default 8 MiB ring buffer.
# slowdown: wall time of an exec-heavy loop and a connect/close-heavy loop, uncaptured,
#           under `ksight top --batch` (capture + full aggregation) and under bpftrace;
#           rounds alternate so machine noise hits all three alike; medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
KSIGHT=${KSIGHT_BIN:-target/release/ksight}
WORKLOAD=${WORKLOAD_BIN:-target/release/ksight-workload}
EXECS=${EXECS:-2000}
CONNECTS=${CONNECTS:-5000}
ROUNDS=${ROUNDS:-5}
WHAT=${*:-kernel flood slowdown}
[ "$(id -u)" = 0 ] || { echo "bench: needs root" >&2; exit 1; }
command -v bpftool >/dev/null || apt-get install -y -qq bpftool >/dev/null
command -v bpftrace >/dev/null || apt-get install -y -qq bpftrace >/dev/null

BPFTRACE_PROG='
tracepoint:sched:sched_process_exec,
tracepoint:sched:sched_process_fork,
tracepoint:sched:sched_process_exit,
tracepoint:tcp:tcp_retransmit_skb,
tracepoint:tcp:tcp_send_reset,
tracepoint:tcp:tcp_receive_reset,
tracepoint:block:block_bio_queue,
tracepoint:block:block_rq_issue,
tracepoint:block:block_rq_complete { @events[probe, pid] = count(); }
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  @events[probe, pid] = count();
  if (args->newstate == 7) {
    @sent[pid] = sum(((struct tcp_sock *)args->skaddr)->bytes_acked);
    @received[pid] = sum(((struct tcp_sock *)args->skaddr)->bytes_received);
  }
}'

exec_loop() { sh -c "i=0; while [ \$i -lt $EXECS ]; do /bin/true; i=\$((i+1)); done"; }
connect_loop() { "$WORKLOAD" connect-loop "$CONNECTS"; }

TRACER_PID=
start_tracer() { # $1: none | ksight | bpftrace
  case $1 in
    none) TRACER_PID= ;;
    ksight) "$KSIGHT" top --batch --json --delay 3600 >/dev/null 2>&1 & TRACER_PID=$! ;;
    bpftrace) bpftrace -e "$BPFTRACE_PROG" >/dev/null 2>&1 & TRACER_PID=$! ;;
  esac
  # Wait until the tracer's programs are attached.
  if [ -n "$TRACER_PID" ]; then
    for _ in $(seq 100); do
      n=$(bpftool prog show -j 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin) if p.get("type") in ("tracepoint","raw_tracepoint")))')
      [ "$n" -ge 10 ] && break
      sleep 0.1
    done
    sleep 0.5
  fi
}
trap 'stop_tracer' EXIT
stop_tracer() { [ -z "$TRACER_PID" ] || { kill -INT "$TRACER_PID"; wait "$TRACER_PID" 2>/dev/null || true; TRACER_PID=; }; }
now_ns() { date +%s%N; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

if [[ $WHAT == *kernel* ]]; then
  echo "## Kernel-side cost per event (BPF run-time statistics)"
  echo
  echo "| tracer | program | events | ns/event |"
  echo "|---|---|---:|---:|"
  old=$(sysctl -n kernel.bpf_stats_enabled)
  sysctl -q kernel.bpf_stats_enabled=1
  for tracer in ksight bpftrace; do
    start_tracer "$tracer"
    exec_loop; connect_loop
    bpftool prog show -j | python3 -c '
import json, sys
tracer = sys.argv[1]
for p in json.load(sys.stdin):
    if p.get("type") not in ("tracepoint", "raw_tracepoint") or not p.get("run_cnt"):
        continue
    name, runs, ns = p.get("name", "?"), p["run_cnt"], p["run_time_ns"]
    print(f"| {tracer} | {name} | {runs} | {ns / runs:.0f} |")
' "$tracer"
    stop_tracer
  done
  sysctl -q kernel.bpf_stats_enabled="$old"
  echo
fi

if [[ $WHAT == *flood* ]]; then
  echo "## Event rate and losses with default buffers"
  echo
  out=$(mktemp)
  "$KSIGHT" top --batch --json --delay 1 > "$out" 2>/dev/null & TRACER_PID=$!
  sleep 2
  for _ in 1 2 3; do "$WORKLOAD" connect-loop 20000 & done
  wait $(jobs -p | grep -v "^$TRACER_PID$") 2>/dev/null || true
  sleep 1.5
  stop_tracer
  python3 - "$out" <<'PY'
import json, sys
snaps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"| 1 s intervals | events | peak events/s | lost |")
print(f"|---:|---:|---:|---:|")
print(f"| {len(snaps)} | {sum(s['events'] for s in snaps)} | {max(s['events'] for s in snaps)} | {sum(s['lost_events'] for s in snaps)} |")
PY
  rm -f "$out"
  echo
fi

if [[ $WHAT == *slowdown* ]]; then
  echo "## Workload slowdown ($ROUNDS alternating rounds, median wall time)"
  echo
  declare -A times
  for round in $(seq "$ROUNDS"); do
    for tracer in none ksight bpftrace; do
      start_tracer "$tracer"
      t0=$(now_ns); exec_loop; t1=$(now_ns); connect_loop; t2=$(now_ns)
      stop_tracer
      times[exec,$tracer]+="$(( (t1 - t0) / 1000 )) "
      times[connect,$tracer]+="$(( (t2 - t1) / 1000 )) "
    done
  done
  echo "| workload | uncaptured ms | ksight ms | bpftrace ms | ksight / uncaptured | bpftrace / uncaptured | ksight / bpftrace |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for w in exec connect; do
    base=$(echo ${times[$w,none]} | tr ' ' '\n' | median)
    ks=$(echo ${times[$w,ksight]} | tr ' ' '\n' | median)
    bt=$(echo ${times[$w,bpftrace]} | tr ' ' '\n' | median)
    label=$([ $w = exec ] && echo "$EXECS × exec /bin/true" || echo "$CONNECTS × connect/close")
    awk -v l="$label" -v b="$base" -v k="$ks" -v t="$bt" 'BEGIN {printf "| %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n", l, b/1000, k/1000, t/1000, k/b, t/b, k/t}'
  done
fi

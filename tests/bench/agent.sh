#!/usr/bin/env bash
# Footprint of `ksight agent` (release build, eBPF backend): resident memory and CPU at
# idle and under a steady event load (`ksight-workload connect-loop`, loopback
# connections back to back), plus the time from start to the first published events.
# Prometheus scrapes are simulated every 5 s in both phases. As root:
#
#   cargo build --release -p ksight -p ksight-integration-tests
#   bash tests/bench/agent.sh            # PHASE=30 seconds per phase by default
#
# CPU is the agent's user+system time over the phase (from /proc/PID/stat) as a
# percentage of one core; RSS is sampled every second (mean and max of VmRSS).
set -euo pipefail
cd "$(dirname "$0")/../.."
KSIGHT=${KSIGHT_BIN:-target/release/ksight}
WORKLOAD=${WORKLOAD_BIN:-target/release/ksight-workload}
PHASE=${PHASE:-30}
[ "$(id -u)" = 0 ] || { echo "bench: needs root" >&2; exit 1; }
[ -x "$KSIGHT" ] && [ -x "$WORKLOAD" ] || {
  echo "bench: build first: cargo build --release -p ksight -p ksight-integration-tests" >&2; exit 1; }

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$tmp/ksight.toml" <<EOF
backend = "ebpf"
[prometheus]
listen = "127.0.0.1:$port"
[socket]
path = "$tmp/ksight.sock"
EOF

AGENT=; LOAD=
cleanup() {
  [ -z "$LOAD" ] || kill "$LOAD" 2>/dev/null || true
  [ -z "$AGENT" ] || { kill -TERM "$AGENT" 2>/dev/null; wait "$AGENT" 2>/dev/null || true; }
  rm -rf "$tmp"
}
trap cleanup EXIT

scrape() { curl -sf -m 5 "http://127.0.0.1:$port/metrics" 2>/dev/null || true; }
metric() { scrape | awk -v n="$1" '$1 == n { print $2 }'; }
ms() { date +%s%3N; }

t0=$(ms)
"$KSIGHT" agent --config "$tmp/ksight.toml" 2>"$tmp/agent.log" &
AGENT=$!
# Ready: the backend is attached and /metrics answers; first events: a tick published
# a non-zero event count.
ready=; first=
for _ in $(seq 400); do
  events=$(metric ksight_events_total)
  [ -n "$events" ] && [ -z "$ready" ] && ready=$(( $(ms) - t0 ))
  if [ -n "$events" ] && [ "${events%.*}" -gt 0 ]; then first=$(( $(ms) - t0 )); break; fi
  sleep 0.02
done
[ -n "$first" ] || { cat "$tmp/agent.log" >&2; echo "bench: the agent never published events" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$AGENT/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$AGENT/status"; }

# One phase: CPU %, mean and max RSS (MiB), events/s.
measure() {
  local c0 e0 t_start sum=0 max=0 n=0 r
  c0=$(cpu_ticks); e0=$(metric ksight_events_total); t_start=$(ms)
  for i in $(seq "$PHASE"); do
    sleep 1
    r=$(rss_kib); sum=$((sum + r)); n=$((n + 1)); [ "$r" -gt "$max" ] && max=$r
    [ $((i % 5)) -eq 0 ] && scrape >/dev/null
  done
  local c1 e1 elapsed
  c1=$(cpu_ticks); e1=$(metric ksight_events_total); elapsed=$(( $(ms) - t_start ))
  awk -v dc=$((c1 - c0)) -v hz="$ticks" -v ms="$elapsed" -v sum="$sum" -v n="$n" -v max="$max" \
      -v de="$(awk -v a="$e0" -v b="$e1" 'BEGIN { print b - a }')" \
    'BEGIN { printf "%.2f %.1f %.1f %.0f\n", 100 * dc / hz / (ms / 1000), sum / n / 1024, max / 1024, de / (ms / 1000) }'
}

read -r idle_cpu idle_rss idle_max idle_eps < <(measure)
( while :; do "$WORKLOAD" connect-loop 20000 || exit; done ) &
LOAD=$!
sleep 2
read -r load_cpu load_rss load_max load_eps < <(measure)
kill "$LOAD" 2>/dev/null || true; wait "$LOAD" 2>/dev/null || true; LOAD=
lost=$(scrape | awk '$1 ~ /^ksight_lost_events_total/ { s += $2 } END { print s + 0 }')

echo "## ksight agent footprint ($(uname -r), $(nproc) CPUs, ${PHASE} s per phase)"
echo
attached=$(sed -n 's/.*backend attached \([0-9]*\) ms after start.*/\1/p' "$tmp/agent.log")
echo "backend attached ${attached} ms after start (agent's log); seen from a polling client:"
echo "/metrics up after ${ready} ms, first events published after ${first} ms"
echo
echo "| phase | agent CPU (% of one core) | RSS mean (MiB) | RSS max (MiB) | events/s |"
echo "|---|---:|---:|---:|---:|"
echo "| idle | $idle_cpu | $idle_rss | $idle_max | $idle_eps |"
echo "| connect-loop | $load_cpu | $load_rss | $load_max | $load_eps |"
echo
echo "lost events over both phases: $lost"

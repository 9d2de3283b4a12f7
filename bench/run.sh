#!/usr/bin/env bash
# Runs the load scenarios of docs/benchmarks.md against seedport (the naive
# tutorial port) and Relay, in one go: a fresh server per run, pinned to
# CPU 0 with GOMAXPROCS=1, the load generator pinned to CPU 1. Writes the
# raw results and a markdown table (bench/report) to the output directory.
#
#   bench/run.sh                       # every scenario, both servers
#   bench/run.sh topics fanout1k_100   # some scenarios
#   SERVERS=relay bench/run.sh conns19k
#
# Needs ../shared/bench (or RELAY_SHARED_BENCH), taskset, curl, and ~19k
# file descriptors. Takes about 10 minutes for everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${RELAY_SHARED_BENCH:-$root/../shared/bench}
out=${OUT:-$root/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
servers=${SERVERS:-seedport relay}
port=${PORT:-8000}
mkdir -p "$out/bin"

# name | load generator arguments
scenarios='
conns19k|conns -n 19000 -idle 10s
conns10k|conns -n 10000
fanout1k_max|fanout -n 1000 -m 5000 -rate 0 -inflight 32
fanout1k_100|fanout -n 1000 -m 1000 -rate 100
fanout1k_100_stalled|fanout -n 1000 -m 1000 -rate 100
fanout10k_10|fanout -n 10000 -m 100 -rate 10
overload10k|fanout -n 10000 -m 500 -rate 0 -inflight 32
topics|topics -topics 1000 -subs 10 -publishers 32 -duration 10s
httppub|fanout -n 0 -m 100000 -rate 0 -inflight 32
fanout19k_5|fanout -n 19000 -m 50 -rate 5
fanout19k_max|fanout -n 19000 -m 300 -rate 0 -inflight 32
'
want=" $* "

echo "building into $out/bin" >&2
(cd "$shared/loadgen" && go build -o "$out/bin/loadgen" .)
(cd "$shared/seedport" && go build -o "$out/bin/seedport" .)
(cd "$root" && for t in stall report writefloor; do go build -o "$out/bin/$t" "./bench/$t"; done && go build -o "$out/bin/relay" ./cmd/relay)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "go: $(go version)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)"
  echo "kernel: $(uname -r)"
  echo "nofile: $(ulimit -Hn)"
  # The floor under every fan-out figure: one small loopback write.
  taskset -c 0 "$out/bin/writefloor" -serve "127.0.0.1:$port" -n 1000 -rounds 200 & wf=$!
  sleep 0.3
  taskset -c 1 "$out/bin/writefloor" -read "127.0.0.1:$port" -n 1000
  wait $wf
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

start_server() { # server -> sets pid
  case $1 in
    relay) taskset -c 0 env GOMAXPROCS=1 "$out/bin/relay" -addr "127.0.0.1:$port" -log-level warn 2>>"$out/relay.log" & ;;
    seedport) taskset -c 0 env GOMAXPROCS=1 "$out/bin/seedport" -port "$port" >/dev/null 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/health" && return 0
    sleep 0.1
  done
  echo "$1 did not start" >&2
  return 1
}

stop_server() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 1 # let the kernel release the sockets
}

while IFS='|' read -r name args; do
  [ -n "$name" ] || continue
  if [ "$want" != "  " ] && [[ "$want" != *" $name "* ]]; then continue; fi
  for server in $servers; do
    echo "== $server / $name: loadgen $args" >&2
    start_server "$server"
    helper=
    case $name in
      conns19k)
        if [ "$server" = relay ]; then # count goroutines mid-idle
          ( sleep 9; g=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^go_goroutines /{print $2}')
            echo "{\"label\":\"extra/relay/conns19k\",\"goroutines\":${g:-0}}" >> "$out/results.jsonl" ) &
          helper=$!
        fi ;;
      fanout1k_100_stalled)
        taskset -c 1 "$out/bin/stall" -http "http://127.0.0.1:$port" -n 1 -hold 25s 2>>"$out/stall.log" &
        helper=$!
        sleep 1 ;;
    esac
    # shellcheck disable=SC2086
    taskset -c 1 "$out/bin/loadgen" $args -http "http://127.0.0.1:$port" -server-pid "$pid" \
      -label "$server/$name" -out "$out/results.jsonl" >/dev/null 2>>"$out/loadgen.log" \
      || echo "loadgen failed for $server/$name (see $out/loadgen.log)" >&2
    tail -n 4 "$out/loadgen.log" | sed 's/^/   /' >&2
    [ -z "$helper" ] || wait "$helper" || true
    stop_server
  done
done <<< "$scenarios"

"$out/bin/report" "$out/results.jsonl" > "$out/table.md"
cat "$out/table.md"
echo "results in $out" >&2

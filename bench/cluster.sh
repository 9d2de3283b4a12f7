#!/usr/bin/env bash
# Runs the scale-out scenarios of docs/benchmarks.md: the same load on one
# memory node, one Redis node, two Redis nodes and two NATS nodes (and
# seedport as the floor), in one go, with a fresh Redis / NATS server and
# fresh nodes per run. Nodes and the engine server share CPU 0 (each node
# GOMAXPROCS=1); the load generator runs on CPU 1. Prints one markdown
# row per run: deliveries/s, publishes/s, latency p50/p99, losses, and the
# CPU seconds each node and the engine server used.
#
#   bench/cluster.sh                          # everything
#   SETUPS="memory1 redis2" bench/cluster.sh fanout1k_100
#
# Needs ../shared/bench (or RELAY_SHARED_BENCH), taskset, curl, jq,
# redis-server and nats-server. Takes about 5 minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${RELAY_SHARED_BENCH:-$root/../shared/bench}
out=${OUT:-$root/bench/out/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
setups=${SETUPS:-seedport memory1 redis1 redis2 nats2}
mkdir -p "$out/bin"

scenarios='
fanout1k_max|fanout -n 1000 -m 5000 -rate 0 -inflight 32
fanout1k_100|fanout -n 1000 -m 1000 -rate 100
topics|topics -topics 1000 -subs 10 -publishers 32 -duration 10s
'
want=" $* "

(cd "$shared/loadgen" && go build -o "$out/bin/loadgen" .)
(cd "$shared/seedport" && go build -o "$out/bin/seedport" .)
(cd "$root" && go build -o "$out/bin/relay" ./cmd/relay)

cpu_s() { # pid -> user+system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

wait_http() { # url
  for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 did not answer" >&2; return 1
}

engine_pid= ; pids=() ; urls=
start_setup() { # setup
  pids=(); urls=; engine_pid=; local broker=memory n=1
  case $1 in
    seedport)
      taskset -c 0 env GOMAXPROCS=1 "$out/bin/seedport" -port 8000 >/dev/null 2>&1 & pids+=($!)
      urls=http://127.0.0.1:8000; wait_http "$urls/health"; return ;;
    memory1) ;;
    redis*) n=${1#redis}
      taskset -c 0 redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & engine_pid=$!
      broker=redis://127.0.0.1:6390/0 ;;
    nats*) n=${1#nats}
      rm -rf "$out/nats"; taskset -c 0 nats-server -js -a 127.0.0.1 -p 4290 -sd "$out/nats" >/dev/null 2>&1 & engine_pid=$!
      broker=nats://127.0.0.1:4290 ;;
  esac
  sleep 0.5
  for i in $(seq 0 $((n - 1))); do
    taskset -c 0 env GOMAXPROCS=1 "$out/bin/relay" -addr "127.0.0.1:$((8000 + i))" -broker "$broker" \
      -register-rate 0 -connect-rate 0 -log-level warn 2>>"$out/relay.log" & pids+=($!)
    urls="${urls:+$urls,}http://127.0.0.1:$((8000 + i))"
    wait_http "http://127.0.0.1:$((8000 + i))/readyz"
  done
}

stop_setup() {
  for p in "${pids[@]}" $engine_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  sleep 1
}

echo "| setup | scenario | deliveries/s | publishes/s | p50 ms | p99 ms | lost | node CPU s | engine CPU s |" > "$out/table.md"
echo "|---|---|---|---|---|---|---|---|---|" >> "$out/table.md"
while IFS='|' read -r name args; do
  [ -n "$name" ] || continue
  if [ "$want" != "  " ] && [[ "$want" != *" $name "* ]]; then continue; fi
  for setup in $setups; do
    echo "== $setup / $name: loadgen $args" >&2
    start_setup "$setup" || { stop_setup; continue; }
    node_cpu0=0; for p in "${pids[@]}"; do node_cpu0=$(echo "$node_cpu0 + $(cpu_s "$p")" | bc); done
    eng_cpu0=0; [ -z "$engine_pid" ] || eng_cpu0=$(cpu_s "$engine_pid")
    # shellcheck disable=SC2086
    taskset -c 1 "$out/bin/loadgen" $args -http "$urls" -server-pid "${pids[0]}" \
      -label "$setup/$name" -out "$out/results.jsonl" >/dev/null 2>>"$out/loadgen.log" \
      || echo "loadgen failed for $setup/$name (see $out/loadgen.log)" >&2
    node_cpu=0; for p in "${pids[@]}"; do node_cpu=$(echo "$node_cpu + $(cpu_s "$p")" | bc); done
    eng_cpu=0; [ -z "$engine_pid" ] || eng_cpu=$(cpu_s "$engine_pid")
    tail -n 1 "$out/results.jsonl" | jq -r --arg s "$setup" --arg n "$name" \
      --arg nc "$(echo "$node_cpu - $node_cpu0" | bc)" --arg ec "$(echo "$eng_cpu - $eng_cpu0" | bc)" \
      '"| \($s) | \($n) | \(.delivery.per_s // 0 | floor) | \(.publish.accepted_per_s // 0 | floor) | \(.delivery.latency.p50_ms // "-") | \(.delivery.latency.p99_ms // "-") | \(.delivery.lost // "-") | \($nc) | \($ec) |"' >> "$out/table.md"
    tail -n 1 "$out/table.md" >&2
    stop_setup
  done
done <<< "$scenarios"

cat "$out/table.md"
echo "results in $out" >&2

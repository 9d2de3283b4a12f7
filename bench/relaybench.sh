#!/usr/bin/env bash
# Runs `relay bench` (the load generator in this repository) and, when
# ../shared/bench is there, the shared load generator on the same
# scenarios in the same run, against Relay and seedport: a fresh server per
# run, pinned to CPU 0 with GOMAXPROCS=1, the load generator pinned to
# CPU 1. Prints a markdown table comparing the figures (docs/benchmarks.md,
# "relay bench").
#
#   bench/relaybench.sh                        # the default scenarios
#   bench/relaybench.sh fanout1k_100 topics    # some of them
#   LOADGENS=relaybench SERVERS=relay bench/relaybench.sh   # the repository alone
#   SCALE=0.2 bench/relaybench.sh              # shorter runs on a busy machine
#
# Needs taskset, curl, jq and ~10k file descriptors (19k for conns19k).
# Results land in bench/out/relaybench-<time>/: results.jsonl, table.md,
# the logs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${RELAY_SHARED_BENCH:-$root/../shared/bench}
out=${OUT:-$root/bench/out/relaybench-$(date -u +%Y%m%dT%H%M%SZ)}
port=${PORT:-8000}
scale=${SCALE:-1}
servers=${SERVERS:-relay seedport}
if [ -z "${LOADGENS:-}" ]; then
  LOADGENS=relaybench
  [ -d "$shared/loadgen" ] && LOADGENS="relaybench loadgen"
fi
mkdir -p "$out/bin"

n() { awk -v a="$1" -v s="$scale" 'BEGIN { v = int(a * s); print (v < 1 ? 1 : v) }'; }

# name | relay bench arguments | shared loadgen arguments (the same load)
scenarios="
conns10k|-scenario connections -connections $(n 10000) -duration 2s|conns -n $(n 10000) -idle 2s
fanout1k_max|-scenario fanout -connections 1000 -messages $(n 5000) -rate 0 -inflight 32 -duration 60s|fanout -n 1000 -m $(n 5000) -rate 0 -inflight 32
fanout1k_100|-scenario fanout -connections 1000 -messages $(n 1000) -rate 100 -duration 60s|fanout -n 1000 -m $(n 1000) -rate 100
topics|-scenario topics -topics 1000 -connections 10000 -rate 0 -inflight 32 -duration $(n 10)s|topics -topics 1000 -subs 10 -publishers 32 -duration $(n 10)s
conns19k|-scenario connections -connections 19000 -duration 5s|conns -n 19000 -idle 5s
"
default="conns10k fanout1k_max fanout1k_100 topics"
want=" ${*:-$default} "

echo "building into $out/bin" >&2
(cd "$root" && go build -o "$out/bin/relay" ./cmd/relay)
if [[ " $LOADGENS " == *" loadgen "* ]]; then (cd "$shared/loadgen" && go build -o "$out/bin/loadgen" .); fi
if [[ " $servers " == *" seedport "* ]]; then (cd "$shared/seedport" && go build -o "$out/bin/seedport" .); fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "go: $(go version)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)"
  echo "nofile: $(ulimit -Hn)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "scale: $scale"
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

while IFS='|' read -r name rbargs lgargs; do
  [ -n "$name" ] || continue
  [[ "$want" == *" $name "* ]] || continue
  for server in $servers; do
    for lg in $LOADGENS; do
      label="$server/$name/$lg"
      echo "== $label" >&2
      start_server "$server"
      case $lg in
        relaybench)
          # shellcheck disable=SC2086
          if taskset -c 1 "$out/bin/relay" bench $rbargs -server "http://127.0.0.1:$port" -json -q \
              >"$out/last.json" 2>>"$out/relaybench.log"; then :; else
            echo "relay bench reported a failed run for $label (see $out/relaybench.log)" >&2
          fi
          jq -c --arg l "$label" '. + {label: $l}' "$out/last.json" >> "$out/results.jsonl" || true ;;
        loadgen)
          # shellcheck disable=SC2086
          taskset -c 1 "$out/bin/loadgen" $lgargs -http "http://127.0.0.1:$port" -server-pid "$pid" \
            -label "$label" -out "$out/results.jsonl" >/dev/null 2>>"$out/loadgen.log" \
            || echo "loadgen failed for $label (see $out/loadgen.log)" >&2 ;;
      esac
      stop_server
    done
  done
done <<< "$scenarios"

# One row per run; the two load generators name their fields differently.
jq -rs '
  def f(x; d): if x == null then "–" else (x * pow(10; d) | round) / pow(10; d) | tostring end;
  "| scenario | server | load generator | conn/s | server B/conn | publishes/s | deliveries/s | p50 ms | p99 ms | lost | server µs/delivery | loadgen CPU % |",
  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  (.[] | (.label | split("/")) as $l | ($l[2] == "relaybench") as $rb |
    (if .publish == null then {} else .delivery end) as $d |
    "| \($l[1]) | \($l[0]) | \(if $rb then "relay bench" else "shared loadgen" end) | " +
    ([ f(if $rb then .connect.per_second else .connect.rate_per_s end; 0),
       f(if $rb then .memory.per_connection_bytes else .memory.server_bytes_per_conn end; 0),
       f(if $rb then .publish.per_second else .publish.accepted_per_s end; 0),
       f(if $rb then $d.per_second else $d.per_s end; 0),
       f($d.latency.p50_ms; 2),
       f($d.latency.p99_ms; 2),
       f($d.lost; 0),
       f(.cpu.server_us_per_delivery; 2),
       f(.cpu.loadgen_pct_of_core; 0) ] | join(" | ")) + " |")
' "$out/results.jsonl" > "$out/table.md"
cat "$out/table.md"
echo "results in $out" >&2

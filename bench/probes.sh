#!/usr/bin/env bash
# Runs the attacks of issue 9 (bench/probe) against Relay, one probe at a
# time: for each, a fresh server pinned to CPU 0 with GOMAXPROCS=1 and its
# default settings (but for what the probe needs), and the probe pinned to
# CPU 1, reading the server's RSS and CPU time from /proc. Writes every
# result line to $OUT/probes.jsonl and a markdown table to $OUT/table.md.
#
#   bench/probes.sh                            # every probe
#   bench/probes.sh fresh partial              # some
#   RELAY_BIN=/tmp/relay-old bench/probes.sh   # a prebuilt server, e.g. an older commit's
#   PROBE_FLAGS="-duration 10s" bench/probes.sh subscribe   # extra flags for every probe
#   $OUT/bin/probe table old/probes.jsonl new/probes.jsonl  # two runs side by side
#
# An older commit's server, for comparison:
#   git worktree add /tmp/relay-old a68aaaa && (cd /tmp/relay-old && go build -o /tmp/relay-old-bin ./cmd/relay)
#   RELAY_BIN=/tmp/relay-old-bin bench/probes.sh
#
# Needs taskset, curl and ~5000 file descriptors (the probe raises its
# soft limit to the hard one). Everything stays on loopback. Takes about
# 6 minutes for everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/bench/out/probes-$(date -u +%Y%m%dT%H%M%SZ)}
port=${PORT:-8000}
mkdir -p "$out/bin"

# name | server's open-file limit | server flags | probe and its flags
#
# slowloris runs the server under `ulimit -n 4096`, issue 9's setting, so
# that 4300 connections are more than it can hold; expiry needs a short
# registration TTL so that the 100,000 registrations expire within the run.
probes='
fresh|||fresh
fresh_history|||fresh -history
slowloris|4096||slowloris
slowloris_same_src|4096||slowloris -same-src
partial|||partial
subscribe|||subscribe
history|||history
pingflood|||pingflood
pingflood_continuation|||pingflood -continuation
expiry||-registration-ttl 20s|expiry -ttl 20s
pusherchurn||-pusher-app-id 1 -pusher-app-key probekey -pusher-app-secret probesecretprobesecret -pusher-subscription-count|pusherchurn
'
want=" $* "
for w in "$@"; do
  grep -q "^$w|" <<< "$probes" || { echo "unknown probe $w; known: $(cut -d'|' -f1 <<< "$probes" | xargs)" >&2; exit 2; }
done

echo "building into $out/bin" >&2
(cd "$root" && go build -o "$out/bin/probe" ./bench/probe)
if [ -n "${RELAY_BIN:-}" ]; then
  relay=$RELAY_BIN
  run=${RUN:-$(basename "$RELAY_BIN")}
else
  (cd "$root" && go build -o "$out/bin/relay" ./cmd/relay)
  relay=$out/bin/relay
  dirty=$(git -C "$root" status --porcelain -- cmd internal go.mod go.sum 2>/dev/null | head -1)
  run=${RUN:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo relay)${dirty:++dirty}}
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "run: $run"
  echo "relay: $relay ($(sha256sum "$relay" | cut -c1-16))"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "go: $(go version)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)"
  echo "kernel: $(uname -r)"
  echo "nofile: soft $(ulimit -Sn), hard $(ulimit -Hn)"
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$port/health"; then
  echo "something already answers on 127.0.0.1:$port; stop it or set PORT" >&2
  exit 1
fi

start_server() { # nofile [flags...] -> sets pid
  local nofile=$1
  shift
  (
    if [ -n "$nofile" ]; then ulimit -n "$nofile"; fi
    exec taskset -c 0 env GOMAXPROCS=1 "$relay" -addr "127.0.0.1:$port" -log-level warn "$@"
  ) 2>>"$out/relay.log" &
  pid=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "relay did not start (see $out/relay.log)" >&2
  return 1
}

problems=
stop_server() { # name
  if ! kill -0 "$pid" 2>/dev/null; then
    problems+="$1: the server had exited before the probe ended; "
  fi
  kill "$pid" 2>/dev/null || true
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  if [ "$rc" != 0 ]; then
    problems+="$1: the server exited with status $rc; "
  fi
  sleep 2 # let the kernel release the sockets
}

while IFS='|' read -r name nofile flags args; do
  [ -n "$name" ] || continue
  if [ "$want" != "  " ] && [[ "$want" != *" $name "* ]]; then continue; fi
  echo "== $name: relay $flags${nofile:+ (ulimit -n $nofile)}; probe $args" >&2
  echo "== $name" >> "$out/relay.log"
  # shellcheck disable=SC2086
  start_server "$nofile" $flags
  # shellcheck disable=SC2086
  { taskset -c 1 "$out/bin/probe" $args ${PROBE_FLAGS:-} -http "http://127.0.0.1:$port" -server-pid "$pid" \
      -label "$name" -run "$run" -out "$out/probes.jsonl" 2>&1 >/dev/null || echo "probe failed for $name" ; } \
    | tee -a "$out/probe.log" >&2
  stop_server "$name"
  if sed -n "/^== $name\$/,\$p" "$out/relay.log" | grep -qE '^(panic|fatal error)'; then
    problems+="$name: the server panicked (see $out/relay.log); "
  fi
done <<< "$probes"

"$out/bin/probe" table "$out/probes.jsonl" > "$out/table.md"
cat "$out/table.md"
if [ -n "$problems" ]; then
  echo "problems: $problems" | tee "$out/problems.txt" >&2
fi
echo "results in $out" >&2

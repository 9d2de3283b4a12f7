#!/usr/bin/env bash
# Every test suite of the repository: the Go packages, then the Node ones.
# Arguments go to `go test` (CI passes -race -count=1).
#
# The Node suites need Node.js >= 20 and npm; without them they are skipped
# with a note, unless RELAY_REQUIRE_NODE=1 (as in CI) makes that a failure.
set -euo pipefail
cd "$(dirname "$0")"

go test "$@" ./...

node_suites=(clients/js internal/protocol/pusher/testdata/node)
if ! command -v npm >/dev/null 2>&1; then
  if [ "${RELAY_REQUIRE_NODE:-}" = 1 ]; then
    echo "test.sh: npm not found and RELAY_REQUIRE_NODE=1" >&2; exit 1
  fi
  echo "test.sh: npm not found: skipped ${node_suites[*]}" >&2
  exit 0
fi
for dir in "${node_suites[@]}"; do
  printf '\n== %s: npm ci && npm test\n' "$dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error && npm test)
done

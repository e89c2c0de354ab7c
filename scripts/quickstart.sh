#!/usr/bin/env bash
# Runs the quickstart: starts credbroker on examples/quickstart, fetches the
# demo credential over the socket API, shows the decision in the audit log,
# then stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/credbroker}
state=/tmp/credbroker-quickstart
sock=$state/broker.sock
mkdir -p "$state"

"$bin" run --config examples/quickstart 2>"$state/broker.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do   # up to a minute on a busy machine
  [ -S "$sock" ] && break
  kill -0 $pid 2>/dev/null || { cat "$state/broker.log" >&2; exit 1; }
  sleep 0.1
done

echo "\$ credbroker get demo --socket $sock"
"$bin" get demo --socket "$sock"
echo
echo "\$ credbroker audit query --db $state/audit.db --since 1m --limit 5"
"$bin" audit query --db "$state/audit.db" --since 1m --limit 5

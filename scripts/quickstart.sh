#!/usr/bin/env bash
# Runs the quickstart: starts credbroker on examples/quickstart, fetches the
# demo credential over the socket API, shows the decision in the audit log,
# then stops the broker.
#
# Its state — socket, audit log and keys, checkpoint, the broker's log — is
# kept in a directory of the user's own: $XDG_RUNTIME_DIR/credbroker-quickstart
# when XDG_RUNTIME_DIR is a directory of the user's, else
# ${TMPDIR:-/tmp}/credbroker-quickstart-UID. The directory has mode 0700; one
# that is a symbolic link or belongs to someone else is refused, never used.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/credbroker}

if [ -n "${XDG_RUNTIME_DIR:-}" ] && [ -d "$XDG_RUNTIME_DIR" ] && [ -O "$XDG_RUNTIME_DIR" ]; then
  state=$XDG_RUNTIME_DIR/credbroker-quickstart
else
  state=${TMPDIR:-/tmp}
  state=${state%/}/credbroker-quickstart-$(id -u)
fi
mkdir -m 0700 "$state" 2>/dev/null || true
if [ -L "$state" ] || [ ! -d "$state" ] || [ ! -O "$state" ]; then
  echo "quickstart: $state is not a directory of yours; remove it, or set TMPDIR to a directory of yours" >&2
  exit 1
fi
chmod 0700 "$state"
sock=$state/broker.sock

"$bin" run --config examples/quickstart --socket "$sock" --audit-db "$state/audit.db" \
  --checkpoint "$state/checkpoint.json" 2>"$state/broker.log" &
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

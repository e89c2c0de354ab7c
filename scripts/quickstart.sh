#!/usr/bin/env bash
# Runs the quickstart: starts a demo upstream (examples/quickstart/upstream,
# an API that echoes the Authorization header it receives, masked) and
# credbroker on examples/quickstart plus an http injection listener in front
# of that upstream; fetches the demo credential over the socket API; calls
# the upstream through the listener, which adds the credential on the way
# out; shows the audit rows of both decisions; then stops both servers.
#
# Its state — socket, listener socket, audit log and keys, checkpoint, the
# logs, the configuration directory — is kept in a directory of the user's
# own: $XDG_RUNTIME_DIR/credbroker-quickstart when XDG_RUNTIME_DIR is a
# directory of the user's, else ${TMPDIR:-/tmp}/credbroker-quickstart-UID.
# The directory has mode 0700; one that is a symbolic link or belongs to
# someone else is refused, never used.
#
# The listener listens on a Unix socket in that directory, not on a TCP
# port: a caller on a Unix socket is attested by its kernel peer
# credentials, which needs no privilege, while finding the process behind
# a TCP connection means reading every process's open files, which needs
# root or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. Its address is a path in
# the state directory, so the configuration the broker runs on is a
# directory made here: links to examples/quickstart's files, and a
# listener.yaml written for this run.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/credbroker}
GO=${GO:-go}

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
api=$state/demo-api.sock

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
# wait_for TEST PID LOG: waits up to a minute (a busy machine) for
# `test TEST` to hold, failing with LOG when PID exits first.
wait_for() {
  for _ in $(seq 1 600); do
    test "$1" "$2" && return 0
    kill -0 "$3" 2>/dev/null || { cat "$4" >&2; exit 1; }
    sleep 0.1
  done
  echo "quickstart: $2 did not appear within a minute" >&2
  cat "$4" >&2
  exit 1
}

# The demo upstream, on a port the kernel chooses.
"$GO" build -buildvcs=false -o "$state/demo-upstream" ./examples/quickstart/upstream
rm -f "$state/upstream.addr"
"$state/demo-upstream" -listen 127.0.0.1:0 -addr-file "$state/upstream.addr" 2>"$state/upstream.log" &
pids+=($!)
wait_for -s "$state/upstream.addr" $! "$state/upstream.log"
upstream=http://$(cat "$state/upstream.addr")

# examples/quickstart, and the listener in front of the upstream.
config=$state/config
rm -rf "$config"
mkdir "$config"
for f in examples/quickstart/*.yaml examples/quickstart/secrets; do
  ln -s "$PWD/$f" "$config/"
done
cat >"$config/listener.yaml" <<EOF
# Written by scripts/quickstart.sh for this run: the demo upstream's port
# is chosen anew each time.
listeners:
  - http:
      listen: unix://$api
      upstream: $upstream
      credential: demo
      header: {name: Authorization, value: "Bearer {{.value}}"}
EOF

rm -f "$api"
"$bin" run --config "$config" --socket "$sock" --audit-db "$state/audit.db" \
  --checkpoint "$state/checkpoint.json" 2>"$state/broker.log" &
pids+=($!)
wait_for -S "$api" $! "$state/broker.log"   # both sockets, the listener's and the API's
wait_for -S "$sock" $! "$state/broker.log"

echo "\$ credbroker get demo --socket $sock"
"$bin" get demo --socket "$sock"
echo
echo "# the app calls the API through the http listener without a credential; the broker adds it"
if command -v curl >/dev/null; then
  echo "\$ curl --unix-socket $api http://demo-api/hello"
  curl -sS --fail-with-body --unix-socket "$api" http://demo-api/hello
else
  echo "\$ $state/demo-upstream -call unix://$api /hello    # curl is not installed"
  "$state/demo-upstream" -call "unix://$api" /hello
fi
echo
echo "\$ credbroker audit query --db $state/audit.db --since 1m --columns time,decision,channel,subject,credential,method,path,policy,decision_id"
"$bin" audit query --db "$state/audit.db" --since 1m --columns time,decision,channel,subject,credential,method,path,policy,decision_id

#!/usr/bin/env bash
# Measures the socket API of credbroker (examples/quickstart, credential
# demo) and, in the same run, a bare net/http server on a Unix socket that
# returns a reply of the same size: the ceiling of this hop on this machine.
# Prints both and their ratio; saves the JSON results under bench/results/.
#
#   scripts/bench.sh bin/credbroker          (make bench builds and calls it)
#
# Environment: DURATION (10s), WARMUP (1s), CLIENTS (32), RATE (5000 req/s),
# CONFIG (examples/quickstart; must serve credential demo to this user), GO (go). See bench/README.md for how to read the output.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:?usage: scripts/bench.sh path/to/credbroker}
duration=${DURATION:-10s}
warmup=${WARMUP:-1s}
clients=${CLIENTS:-32}
rate=${RATE:-5000}
config=${CONFIG:-examples/quickstart}
cred_path=/v1/credentials/demo

pids=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/credbroker-bench.XXXXXX")
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# die MESSAGE [LOG]: report a failure, with the tail of LOG, and exit 1.
die() {
  echo "bench: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "--- $2 (last 40 lines)" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}

# wait_socket SOCKET PID LOG NAME: wait up to 10 s for SOCKET to appear
# while PID is alive.
wait_socket() {
  for _ in $(seq 1 100); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { wait "$2" || true; die "$4 exited before listening on $1" "$3"; }
    sleep 0.1
  done
  die "$4 did not listen on $1 within 10s" "$3"
}

# stop PID: SIGTERM and wait, so that the process has flushed its state.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

[ -x "$bin" ] || die "$bin: no such executable (run make build)"

echo "== machine"
uptime
echo "nproc: $(nproc)"
echo "runs: closed loop $clients clients, closed loop 1 client, open loop $rate req/s; $duration each after $warmup warm-up"
echo

# The load generator also serves the bare baseline.
lg=$tmp/loadgen
"${GO:-go}" build -o "$lg" ./bench/loadgen

"$bin" run --config "$config" --socket "$tmp/broker.sock" \
  --audit-db "$tmp/audit.db" --checkpoint "$tmp/checkpoint.json" --admin off >"$tmp/broker.log" 2>&1 &
broker_pid=$!
pids+=("$broker_pid")
wait_socket "$tmp/broker.sock" "$broker_pid" "$tmp/broker.log" "credbroker"

# One real reply, to size the baseline's reply. The body holds the demo
# secret, so only its size is shown.
out=$(curl -sS --unix-socket "$tmp/broker.sock" -H 'Credbroker-Request: 1' \
  -o "$tmp/reply.json" -w '%{http_code} %{size_download}' "http://localhost$cred_path") ||
  die "curl to the broker failed" "$tmp/broker.log"
read -r status size <<<"$out"
if [ "$status" != 200 ]; then
  echo "reply: $(cat "$tmp/reply.json")" >&2
  die "broker answered $status to GET $cred_path" "$tmp/broker.log"
fi
echo "broker reply to GET $cred_path: $status, $size bytes; the bare server replies with $size bytes"

"$lg" -serve-bare "$tmp/bare.sock" -reply-size "$size" >"$tmp/bare.log" 2>&1 &
bare_pid=$!
pids+=("$bare_pid")
wait_socket "$tmp/bare.sock" "$bare_pid" "$tmp/bare.log" "bare server"
echo

results=$tmp/results.jsonl
# run TARGET ARGS...: one loadgen run against bare or broker, appended to
# $results; its text line goes to the terminal.
run() {
  local target=$1 sock pid log
  shift
  case $target in
  bare) sock=$tmp/bare.sock pid=$bare_pid log=$tmp/bare.log ;;
  broker) sock=$tmp/broker.sock pid=$broker_pid log=$tmp/broker.log ;;
  esac
  if ! "$lg" -label "$target" -socket "$sock" -path "$cred_path" -d "$duration" \
    -warmup "$warmup" -watch-pid "$pid" -json "$@" >>"$results" 2>"$tmp/run.txt"; then
    cat "$tmp/run.txt" >&2
    die "loadgen failed against $target"
  fi
  cat "$tmp/run.txt"
  kill -0 "$pid" 2>/dev/null || die "$target exited during the run" "$log"
}

# Targets alternate within each scenario so that both see the same machine.
echo "== runs"
for target in bare broker; do run "$target" -c "$clients"; done
for target in bare broker; do run "$target" -c 1; done
for target in bare broker; do run "$target" -rate "$rate"; done
echo

# field NAME LINE: a number from one compact JSON result line.
field() { grep -o "\"$1\":[0-9.e+-]*" <<<"$2" | head -n1 | cut -d: -f2; }

broker_c32=$(grep '"label":"broker"' "$results" | grep "\"mode\":\"closed\",\"clients\":$clients," || true)
rss=$(field server_rss_peak_kb "$broker_c32" | awk '{printf "%.1f MiB", $1 / 1024}')
mem=$(awk '/^Vm(HWM|RSS):/ {printf "%s%s %.1f MiB", sep, $1, $2 / 1024; sep = ", "}' \
  "/proc/$broker_pid/status" 2>/dev/null || true)
sent=$(grep '"label":"broker"' "$results" | grep -o '"total_requests":[0-9]*' | cut -d: -f2 |
  awk '{s += $1} END {print s + 1}') # + the sizing request
errors=$(grep -o '"errors":[0-9]*' "$results" | cut -d: -f2 | awk '{s += $1} END {print s + 0}')

stop "$broker_pid"
stop "$bare_pid"

ts=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
summary=bench/results/bench-$ts.txt
{
  echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, reply $size bytes, $duration per run)"
  "$lg" -report "$results"
  echo
  echo "broker RSS under $clients clients: peak ${rss:-unknown} (VmRSS sampled every 100ms); after all runs: ${mem:-unknown}"
  if command -v sqlite3 >/dev/null; then
    rows=$(sqlite3 -readonly "$tmp/audit.db" 'SELECT count(*) FROM decisions' 2>&1) || rows="unreadable: $rows"
    echo "audit rows after the run: $rows (requests sent to the broker, incl. warm-up: $sent)"
  fi
  echo "load average after: $(uptime | sed 's/.*load average: //')"
} | tee "$summary"
cp "$results" "bench/results/bench-$ts.jsonl"
echo "saved bench/results/bench-$ts.jsonl and $summary"

if [ "$errors" -gt 0 ]; then
  die "$errors requests failed across the runs (see the errors rows and the lines above)" "$tmp/broker.log"
fi

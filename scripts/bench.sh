#!/usr/bin/env bash
# Measures the socket API of credbroker (examples/quickstart, credential
# demo) and, in the same run, its floors: a bare net/http server on a Unix
# socket that returns a reply of the same size (the ceiling of this hop on
# this machine), the fsync floor, a small write and fsync as the audit
# writer commits it, on the filesystem of the broker's audit database, and
# the durable floor, the bare server doing such a write and fsync before
# each reply (one decision committed alone: a request and a commit measured
# together, since on a VM the sum of the other two understates it).
# With BASELINE, an older credbroker binary is measured too, alternating with
# the others, so that a change is compared with its base on the same machine
# in the same minutes. Prints the figures (medians over ROUNDS), their ratios
# to their floors and the targets; saves the JSON results under bench/results/.
#
#   scripts/bench.sh bin/credbroker          (make bench builds and calls it)
#   BASELINE=/tmp/cb-baseline/credbroker ROUNDS=3 scripts/bench.sh bin/credbroker
#   make bench BASELINE=/tmp/cb-baseline/credbroker ROUNDS=3
#
# Environment: DURATION (5s), WARMUP (1s), CLIENTS (32), RATES ("1000 5000"
# req/s, open loop; RATE=n is RATES=n), ROUNDS (3), BASELINE (none), CONFIG
# (examples/quickstart; must serve credential demo to this user),
# BASELINE_CONFIG (CONFIG; for when the old release rejects the current
# config), GO (go). See bench/README.md for how to read the output. A missed target is printed, not an error: the script
# fails only when something does not start or a request fails.
set -euo pipefail

# abspath PATH: PATH made absolute against the caller's directory.
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

bin=$(abspath "${1:?usage: [BASELINE=old/credbroker] [ROUNDS=n] scripts/bench.sh path/to/credbroker}")
baseline=${BASELINE:+$(abspath "$BASELINE")}
baseline_config=${BASELINE_CONFIG:+$(abspath "$BASELINE_CONFIG")}
cd "$(dirname "$0")/.."

duration=${DURATION:-5s}
warmup=${WARMUP:-1s}
clients=${CLIENTS:-32}
rates=${RATES:-${RATE:-1000 5000}}
rounds=${ROUNDS:-3}
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

# die MESSAGE [LOG...]: report a failure, with the tail of each LOG, and exit 1.
die() {
  echo "bench: $1" >&2
  shift
  for log in "$@"; do
    if [ -s "$log" ]; then
      echo "--- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    fi
  done
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
[ -z "$baseline" ] || [ -x "$baseline" ] || die "BASELINE=$baseline: no such executable"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$rounds: want a whole number ≥ 1"
[[ $clients =~ ^[1-9][0-9]*$ ]] || die "CLIENTS=$clients: want a whole number ≥ 1"
read -ra rates <<<"$rates"
[ "${#rates[@]}" -gt 0 ] || die "RATES is empty: want open-loop rates in req/s, e.g. RATES=\"1000 5000\""
for r in "${rates[@]}"; do
  [[ $r =~ ^[1-9][0-9]*$ ]] || die "RATES: $r: want whole numbers of req/s ≥ 1"
done

# Per target: its socket, process and log. Each broker keeps all its state
# (socket, audit database, checkpoint, whatever else it writes beside them)
# in its own directory under $tmp.
declare -A sock pid log exe cfg
brokers=(broker)
exe[broker]=$bin cfg[broker]=$config
if [ -n "$baseline" ]; then
  brokers=(baseline broker)
  exe[baseline]=$baseline cfg[baseline]=${baseline_config:-$config}
fi
# The durable server runs in every scenario: it is the floor of a decision
# committed alone, as measured, wake-ups after each fsync included.
targets=(bare durable "${brokers[@]}")
# The fsync floor goes where it means something: one writer committing
# back to back (against 1 client) or at the open loop's rate. With 32
# clients the broker shares a commit between waiting decisions, which one
# writer alone does not measure.
floored=(bare fsync durable "${brokers[@]}")

echo "== machine"
uptime
echo "nproc: $(nproc)"
echo "runs: closed loop $clients clients (${targets[*]}), closed loop 1 client and open loop ${rates[*]} req/s (${floored[*]});" \
  "$duration each after $warmup warm-up; $rounds round(s), targets alternating within each scenario"
for t in "${brokers[@]}"; do
  echo "$t: ${exe[$t]} ($("${exe[$t]}" version 2>/dev/null || echo "version unknown"))"
done
echo

# The load generator also serves the bare baseline.
lg=$tmp/loadgen
"${GO:-go}" build -o "$lg" ./bench/loadgen

# start_broker LABEL: start ${exe[LABEL]} on ${cfg[LABEL]} with its state
# in $tmp/LABEL. Only the flags every release has: run --config
# --socket --audit-db --checkpoint --admin.
start_broker() {
  local dir=$tmp/$1
  mkdir -p "$dir"
  sock[$1]=$dir/broker.sock
  log[$1]=$dir/broker.log
  "${exe[$1]}" run --config "${cfg[$1]}" --socket "${sock[$1]}" \
    --audit-db "$dir/audit.db" --checkpoint "$dir/checkpoint.json" --admin off >"${log[$1]}" 2>&1 &
  pid[$1]=$!
  pids+=("${pid[$1]}")
  wait_socket "${sock[$1]}" "${pid[$1]}" "${log[$1]}" "$1 (${exe[$1]})"
}

# reply_size LABEL: one real request; prints the reply's size. The body
# holds the demo secret, so only its size is shown.
reply_size() {
  local out status size
  out=$(curl -sS --unix-socket "${sock[$1]}" -H 'Credbroker-Request: 1' \
    -o "$tmp/reply.json" -w '%{http_code} %{size_download}' "http://localhost$cred_path") ||
    die "curl to $1 failed" "${log[$1]}"
  read -r status size <<<"$out"
  if [ "$status" != 200 ]; then
    echo "reply: $(cat "$tmp/reply.json")" >&2
    die "$1 answered $status to GET $cred_path" "${log[$1]}"
  fi
  rm -f "$tmp/reply.json"
  echo "$size"
}

declare -A size
for t in "${brokers[@]}"; do
  start_broker "$t"
  size[$t]=$(reply_size "$t")
  echo "$t reply to GET $cred_path: 200, ${size[$t]} bytes"
done
# The fsync floor and the durable server write beside the broker's audit
# database: same filesystem, same mount options.
floor_dir=$tmp/broker
echo "fsync floor: 4120-byte writes, each followed by fsync, in $floor_dir"
echo "durable floor: the bare server, one 4120-byte write and fsync before each reply, in $floor_dir"
if [ -n "$baseline" ] && [ "${size[baseline]}" != "${size[broker]}" ]; then
  echo "note: the replies differ in size; the bare server answers with the broker's ${size[broker]} bytes"
fi

sock[bare]=$tmp/bare.sock
log[bare]=$tmp/bare.log
"$lg" -serve-bare "${sock[bare]}" -reply-size "${size[broker]}" >"${log[bare]}" 2>&1 &
pid[bare]=$!
pids+=("${pid[bare]}")
wait_socket "${sock[bare]}" "${pid[bare]}" "${log[bare]}" "bare server"
echo "bare server replies with ${size[broker]} bytes"

# The durable server removes its file in $floor_dir when stopped.
sock[durable]=$tmp/durable.sock
log[durable]=$tmp/durable.log
"$lg" -serve-bare "${sock[durable]}" -reply-size "${size[broker]}" -durable "$floor_dir" >"${log[durable]}" 2>&1 &
pid[durable]=$!
pids+=("${pid[durable]}")
wait_socket "${sock[durable]}" "${pid[durable]}" "${log[durable]}" "durable server"
echo "durable server replies with ${size[broker]} bytes"
echo

results=$tmp/results.jsonl
# run TARGET ARGS...: one loadgen run against TARGET, appended to $results;
# its text line goes to the terminal. TARGET fsync is the fsync floor in
# $floor_dir, with -c 1 or -rate.
run() {
  local target=$1
  shift
  if [ "$target" = fsync ]; then
    if ! "$lg" -label fsync -fsync-floor "$floor_dir" -d "$duration" -warmup "$warmup" -json "$@" \
      >>"$results" 2>"$tmp/run.txt"; then
      cat "$tmp/run.txt" >&2
      die "the fsync floor failed in $floor_dir"
    fi
    cat "$tmp/run.txt"
    return
  fi
  if ! "$lg" -label "$target" -socket "${sock[$target]}" -path "$cred_path" -d "$duration" \
    -warmup "$warmup" -watch-pid "${pid[$target]}" -json "$@" >>"$results" 2>"$tmp/run.txt"; then
    cat "$tmp/run.txt" >&2
    die "loadgen failed against $target"
  fi
  cat "$tmp/run.txt"
  kill -0 "${pid[$target]}" 2>/dev/null || die "$target exited during the run" "${log[$target]}"
}

# Targets alternate within each scenario, and the scenarios within each
# round, so that all see the same machine.
echo "== runs"
for round in $(seq 1 "$rounds"); do
  [ "$rounds" -eq 1 ] || echo "-- round $round of $rounds"
  for t in "${targets[@]}"; do run "$t" -c "$clients"; done
  for t in "${floored[@]}"; do run "$t" -c 1; done
  for r in "${rates[@]}"; do
    for t in "${floored[@]}"; do run "$t" -rate "$r"; done
  done
done
echo

# of LABEL: the result lines of LABEL.
of() { grep "\"label\":\"$1\"" "$results" || true; }
# of_mode LABEL MODE: the result lines of LABEL in MODE (closed or open).
of_mode() { of "$1" | awk -v m="\"mode\":\"$2\"" 'index($0, m)'; }
# sum_field NAME: the sum of NAME over the result lines on stdin.
sum_field() { { grep -o "\"$1\":[0-9]*" || true; } | cut -d: -f2 | awk '{s += $1} END {print s + 0}'; }
# sum_status: the sum of the non-200 replies (status_errors, by status)
# over the result lines on stdin.
sum_status() {
  sed -n 's/.*"status_errors":{\([^}]*\)}.*/\1/p' | tr , '\n' | sed -n 's/.*:\([0-9]*\)$/\1/p' |
    awk '{s += $1} END {print s + 0}'
}

declare -A rss mem sent errors
for t in "${targets[@]}"; do
  errors[$t]=$(of "$t" | sum_field errors)
done
# The durable server commits one request at a time, so at an open-loop
# rate above what that sustains its requests queue (most are late), and
# those it cannot answer before the grace runs out (transport errors,
# dropped) measure that queue, not a failure. A non-200 reply (a write or
# fsync that failed) still is one, and so is any error in the closed loops.
errors[durable]=$(($(of_mode durable closed | sum_field errors) + $(of_mode durable open | sum_status)))
durable_behind=$(of_mode durable open |
  sed -n 's/.*"rate":\([0-9]*\),.*"ok":\([0-9]*\),"errors":\([0-9]*\),.*"late":\([0-9]*\),"dropped":\([0-9]*\),.*/\1 \2 \3 \4 \5/p' |
  awk '$3 + $5 > 0 || 2 * $4 > $2 + $3 {
    printf "%s%s req/s: %d of %d late, %d unanswered, %d dropped", sep, $1, $4, $2 + $3, $3, $5; sep = "; "
  }')
for t in "${brokers[@]}"; do
  rss[$t]=$(of "$t" | grep "\"mode\":\"closed\",\"clients\":$clients," |
    grep -o '"server_rss_peak_kb":[0-9]*' | cut -d: -f2 |
    awk 'NR == 1 || $1 > m {m = $1} END {if (NR) printf "%.1f MiB", m / 1024}')
  mem[$t]=$(awk '/^Vm(HWM|RSS):/ {printf "%s%s %.1f MiB", sep, $1, $2 / 1024; sep = ", "}' \
    "/proc/${pid[$t]}/status" 2>/dev/null || true)
  sent[$t]=$(($(of "$t" | sum_field total_requests) + 1)) # + the sizing request
done

for t in "${targets[@]}"; do stop "${pid[$t]}"; done

ts=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
summary=bench/results/bench-$ts.txt
{
  echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, reply ${size[broker]} bytes, $duration per run, $rounds round(s))"
  for t in "${brokers[@]}"; do
    echo "$t: ${exe[$t]} ($("${exe[$t]}" version 2>/dev/null || echo "version unknown"))"
  done
  fs=$(grep -o '"fs":"[^"]*"' "$results" | sed -n '1s/.*:"\(.*\)"/\1/p' || true)
  echo "fsync floor: 4120-byte writes, each followed by fsync, on ${fs:-an unknown filesystem} beside the broker's audit database"
  echo "durable floor: the bare server writing and fsyncing one 4120-byte record there before each reply"
  "$lg" -report "$results"
  echo
  for t in "${brokers[@]}"; do
    echo "$t RSS under $clients clients: peak ${rss[$t]:-unknown} (VmRSS sampled every 100ms, most over rounds); after all runs: ${mem[$t]:-unknown}"
  done
  if command -v sqlite3 >/dev/null; then
    # Schema 1 holds decisions only; later ones add event rows of other
    # kinds (lifecycle events, signed heads) to the same table.
    for t in "${brokers[@]}"; do
      db=$tmp/$t/audit.db
      if kind=$(sqlite3 -readonly "$db" "SELECT count(*) FROM pragma_table_info('decisions') WHERE name = 'kind'" 2>&1) &&
        [ "$kind" = 1 ]; then
        q="SELECT sum(kind = 'decision') || ' decision rows, ' || sum(kind != 'decision') || ' other rows' FROM decisions"
      else
        q="SELECT count(*) || ' decision rows' FROM decisions"
      fi
      rows=$(sqlite3 -readonly "$db" "$q" 2>&1) || rows="unreadable: $rows"
      echo "$t audit after the run: $rows (requests sent to it, incl. warm-up: ${sent[$t]})"
    done
  fi
  if [ -n "$durable_behind" ]; then
    echo "note: the durable server fell behind the open loop (${durable_behind}): it commits one request at a time, so its figures there measure its queue"
  fi
  echo "load average after: $(uptime | sed 's/.*load average: //')"
} | tee "$summary"
cp "$results" "bench/results/bench-$ts.jsonl"
echo "saved bench/results/bench-$ts.jsonl and $summary"

failed='' logs=()
for t in "${targets[@]}"; do
  if [ "${errors[$t]}" -gt 0 ]; then
    failed+="${failed:+, }$t ${errors[$t]}"
    logs+=("${log[$t]}")
  fi
done
if [ -n "$failed" ]; then
  die "requests failed across the runs ($failed; see the errors rows and the lines above)" "${logs[@]}"
fi

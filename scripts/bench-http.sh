#!/usr/bin/env bash
# Measures credbroker's HTTP injection listener (inject/httpproxy) against a
# direct connection to the same upstream, against HAProxy's `mode http`
# relay setting the same header, and against gorelay, a bare Go relay
# (bench/httpbench -relay: httputil.ReverseProxy with a Rewrite setting the
# same header, a pooled http.Transport, an http.Server, built as the
# broker's listener is, minus attestation, policy and audit: the floor of
# any relay on Go's standard library), in one run, targets alternating:
# HTTP/1.1 with keep-alive, `wrk` with 50 connections (throughput, p50,
# p99) and with one (the latency one request adds). Every request through
# the broker is a decision whose audit row is committed (fsync) before it
# is forwarded, so the fsync floor on the filesystem of its audit database
# is measured in the same run too. Prints the medians over ROUNDS, the
# ratios, the targets of the issue (PASS/FAIL), the audit rows against the
# requests sent, and a `floor:` line (no verdict) saying what gorelay
# reaches, so that the broker's gap to HAProxy splits into what Go's relay
# costs and what the broker's per-request decision costs; saves the output
# as bench/results/http-<UTC time>.txt.
#
#   scripts/bench-http.sh                          # builds bin/credbroker first
#   scripts/bench-http.sh path/to/credbroker       # that binary, no build
#   ROUNDS=1 DURATION=1s scripts/bench-http.sh     # a quick look, well under a minute
#
# Environment: DURATION (5s per run), WARMUP (1s, once per target before
# the rounds, not recorded), ROUNDS (3), CONNS (50), THREADS (2: wrk's at
# CONNS connections; one at one connection), REPLY_SIZE (64 bytes, the
# upstream's body), BENCH_DIR (${TMPDIR:-/tmp}: where the temporary
# directory, and so the broker's audit database and the fsync floor's file,
# go), GO (go). Installs wrk and haproxy from Debian when missing. See
# bench/README.md. A missed target is printed, not an error: the script
# fails only when something does not start, a request fails (a non-2xx
# reply or a socket error in wrk's counts), or the broker's audit database
# holds fewer allow rows than requests it was sent.
set -euo pipefail

# abspath PATH: PATH made absolute against the caller's directory.
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

bin=${1:+$(abspath "$1")}
bench_dir=$(abspath "${BENCH_DIR:-${TMPDIR:-/tmp}}")
cd "$(dirname "$0")/.."
GO=${GO:-go}

duration=${DURATION:-5s}
warmup=${WARMUP:-1s}
rounds=${ROUNDS:-3}
conns=${CONNS:-50}
threads=${THREADS:-2}
reply_size=${REPLY_SIZE:-64}
cred=upstream-api
# The issue's targets.
min_vs_haproxy=0.5 # broker req/s ≥ this × HAProxy's, at $conns connections
added_slack_ms=0.2 # broker p50 − direct p50 at one connection ≤ fsync floor p50 + this
max_rss_mib=60     # broker peak RSS

die() {
  echo "bench-http: $1" >&2
  shift
  for log in "$@"; do
    if [ -s "$log" ]; then
      echo "--- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    fi
  done
  exit 1
}

[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$rounds: want a whole number ≥ 1"
[[ $conns =~ ^[1-9][0-9]*$ ]] || die "CONNS=$conns: want a whole number ≥ 1"
[[ $threads =~ ^[1-9][0-9]*$ ]] && [ "$threads" -le "$conns" ] || die "THREADS=$threads: want a whole number from 1 to CONNS"
[[ $reply_size =~ ^[0-9]+$ ]] || die "REPLY_SIZE=$reply_size: want a whole number of bytes"
[[ $duration =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION=$duration: want wrk's form, e.g. 5s"
[[ $warmup =~ ^[0-9]+[smh]?$ ]] || die "WARMUP=$warmup: want wrk's form, e.g. 1s, or 0"
[ -d "$bench_dir" ] || die "BENCH_DIR=$bench_dir: no such directory"

# need CMD PACKAGE: install PACKAGE from Debian when CMD is missing.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need wrk wrk
need haproxy haproxy
need curl curl
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]} (from Debian's packages)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pids=()
tmp=$(mktemp -d "$bench_dir/credbroker-bench-http.XXXXXX")
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop PID: SIGTERM and wait, so that the process has flushed its state.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# alive PID LOG NAME: fail when PID has exited.
alive() {
  kill -0 "$1" 2>/dev/null || {
    wait "$1" || true
    die "$3 exited" "$2"
  }
}

# wait_http URL PID LOG NAME: wait up to 20 s for URL to answer while PID
# is alive.
wait_http() {
  for _ in $(seq 1 200); do
    curl -s -o /dev/null --max-time 2 "$1" && return 0
    alive "$2" "$3" "$4"
    sleep 0.1
  done
  die "$4 did not answer $1 within 20s" "$3"
}

# wait_file FILE PID LOG NAME: wait up to 20 s for FILE to appear while
# PID is alive.
wait_file() {
  for _ in $(seq 1 200); do
    [ -s "$1" ] && return 0
    alive "$2" "$3" "$4"
    sleep 0.1
  done
  die "$4 did not write $1 within 20s" "$3"
}

echo "== machine"
uptime
echo "nproc: $(nproc)"
# The broker attests each request on TCP by finding the client socket's
# holder in /proc/*/fd, so its cost grows with the processes and open files.
echo "processes: $(find /proc -mindepth 1 -maxdepth 1 -name '[0-9]*' | wc -l), open files: $(find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
load_before=$(uptime | sed 's/.*load average: //')

echo "== build"
if [ -z "$bin" ]; then
  bin=$PWD/bin/credbroker
  version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
  CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin" ./cmd/credbroker
fi
[ -x "$bin" ] || die "$bin: no such executable"
lg=$tmp/loadgen
up=$tmp/httpbench
CGO_ENABLED=0 "$GO" build -o "$lg" ./bench/loadgen
CGO_ENABLED=0 "$GO" build -o "$up" ./bench/httpbench
echo "broker: $bin ($("$bin" version 2>/dev/null || echo "version unknown"))"
echo "wrk: $(wrk -v 2>&1 | sed -n '1s/ Copyright.*//p'); haproxy: $(haproxy -v | sed -n '1s/ - https.*//p')"

# The token both relays set. It is a secret like any other: written to
# files of mode 0600 in $tmp, never printed.
umask 077
head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$tmp/token"

# The upstream: a fixed reply of $reply_size bytes, keep-alive, 401 to an
# Authorization other than "Bearer <token>".
declare -A url pid log
log[upstream]=$tmp/upstream.log
"$up" -listen 127.0.0.1:0 -reply-size "$reply_size" -token-file "$tmp/token" -addr-file "$tmp/upstream.addr" \
  >"${log[upstream]}" 2>&1 &
pid[upstream]=$!
pids+=("${pid[upstream]}")
wait_file "$tmp/upstream.addr" "${pid[upstream]}" "${log[upstream]}" "the upstream"
upstream_addr=$(cat "$tmp/upstream.addr")
url[direct]=http://$upstream_addr/v1/ping
pid[direct]=${pid[upstream]} log[direct]=${log[upstream]}
wait_http "${url[direct]}" "${pid[upstream]}" "${log[upstream]}" "the upstream"

# HAProxy, mode http, keep-alive both sides, no logging, setting the header
# the broker sets. It needs a fixed port: a free one is picked at random,
# and another tried if it cannot bind.
log[haproxy]=$tmp/haproxy.log
for attempt in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || continue
  cat >"$tmp/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend bench
    bind 127.0.0.1:$port
    http-request set-header Authorization "Bearer $(cat "$tmp/token")"
    default_backend upstream
backend upstream
    http-reuse always
    server upstream $upstream_addr
EOF
  haproxy -db -f "$tmp/haproxy.cfg" >"${log[haproxy]}" 2>&1 &
  pid[haproxy]=$!
  url[haproxy]=http://127.0.0.1:$port/v1/ping
  for _ in $(seq 1 100); do
    curl -s -o /dev/null --max-time 2 "${url[haproxy]}" && break
    kill -0 "${pid[haproxy]}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid[haproxy]}" 2>/dev/null; then
    pids+=("${pid[haproxy]}")
    break
  fi
  wait "${pid[haproxy]}" 2>/dev/null || true
  [ "$attempt" -lt 5 ] || die "haproxy did not start" "${log[haproxy]}"
done
wait_http "${url[haproxy]}" "${pid[haproxy]}" "${log[haproxy]}" "haproxy"

# gorelay: the floor of a relay on Go's standard library, setting the same
# header from the same token file (bench/httpbench/relay.go).
log[gorelay]=$tmp/gorelay.log
"$up" -relay "http://$upstream_addr" -token-file "$tmp/token" -listen 127.0.0.1:0 -addr-file "$tmp/gorelay.addr" \
  >"${log[gorelay]}" 2>&1 &
pid[gorelay]=$!
pids+=("${pid[gorelay]}")
wait_file "$tmp/gorelay.addr" "${pid[gorelay]}" "${log[gorelay]}" "gorelay"
url[gorelay]=http://$(cat "$tmp/gorelay.addr")/v1/ping
wait_http "${url[gorelay]}" "${pid[gorelay]}" "${log[gorelay]}" "gorelay"

# The broker: a static credential holding the token, an allow policy for
# this user, an http listener to the upstream; its audit database and
# everything else it writes in $tmp/broker.
dir=$tmp/broker
mkdir -p "$dir/secrets"
cp "$tmp/token" "$dir/secrets/$cred"
cat >"$dir/policies.yaml" <<EOF
policies:
  - name: bench-calls-upstream
    effect: allow
    workloads: [{unix: {uid: self}}]
    credentials: [$cred]
EOF
cat >"$dir/credbroker.yaml" <<EOF
socket: $dir/broker.sock
admin: ""
audit: {path: $dir/audit.db, checkpoint: {file: $dir/checkpoint.json, interval: 5s}}
policies: policies.yaml
log: {format: text}
credentials:
  - {name: $cred, ttl: 1h, static: {file: secrets/$cred}}
listeners:
  - http: {listen: "127.0.0.1:0", upstream: "http://$upstream_addr", credential: $cred,
           header: {name: Authorization, value: "Bearer {{.value}}"}}
EOF
log[broker]=$dir/broker.log
"$bin" check --config "$dir/credbroker.yaml" >"$tmp/check.log" 2>&1 || die "credbroker check refused the benchmark's config" "$tmp/check.log"
"$bin" run --config "$dir/credbroker.yaml" >"${log[broker]}" 2>&1 &
pid[broker]=$!
pids+=("${pid[broker]}")
broker_addr=
for _ in $(seq 1 200); do
  broker_addr=$(sed -n 's/.*http listening.*addr="\{0,1\}\([0-9.]*:[0-9]*\).*/\1/p' "${log[broker]}" 2>/dev/null | head -n 1 || true)
  [ -z "$broker_addr" ] || break
  alive "${pid[broker]}" "${log[broker]}" "the broker"
  sleep 0.1
done
[ -n "$broker_addr" ] || die "the broker did not log its http listener's address within 20s" "${log[broker]}"
url[broker]=http://$broker_addr/v1/ping

# One request through each target: 200 and the upstream's reply. The
# upstream refuses a wrong Authorization, so a relay that set a wrong one
# fails here; the upstream's counts at the end show that all three set it.
for t in direct haproxy gorelay broker; do
  out=$(curl -sS --max-time 10 -o "$tmp/reply" -w '%{http_code} %{size_download}' "${url[$t]}") ||
    die "curl to $t (${url[$t]}) failed" "${log[$t]}"
  read -r status size <<<"$out"
  if [ "$status" != 200 ] || [ "$size" != "$reply_size" ]; then
    echo "reply: $(head -c 300 "$tmp/reply")" >&2
    die "$t answered $status with $size bytes to GET ${url[$t]}, want 200 with $reply_size" "${log[$t]}"
  fi
done
rm -f "$tmp/reply"
echo "upstream http://$upstream_addr ($reply_size-byte reply), haproxy ${url[haproxy]%/v1/ping}, gorelay ${url[gorelay]%/v1/ping}, broker ${url[broker]%/v1/ping}: each answered 200"
echo "broker audit database and fsync floor in $dir ($(stat -f -c %T "$dir"))"
echo "runs: wrk -t$threads -c$conns and -t1 -c1, -d$duration --latency, against direct, haproxy, gorelay, broker; fsync floor at one writer;" \
  "$rounds round(s), targets alternating; warm-up $warmup per target, not recorded"
echo

# ticks PID: the process's user + system CPU time, in clock ticks.
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
hz=$(getconf CLK_TCK)

# ms VALUE: a wrk duration (123.45us, 1.23ms, 2.00s, 1.00m) in ms.
ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (f < 0) { print "?"; exit 1 }
    printf "%.3f", n * f
  }'
}

# Every run is a line of $runs: label conns round rps p50_ms p99_ms
# requests errors relay_cpu_us_per_req upstream_cpu_us_per_req.
runs=$tmp/runs.tsv
: >"$runs"
lines=$tmp/lines.txt
: >"$lines"
declare -A sent # requests wrk completed per target, warm-ups included

# wrk_run TARGET CONNS ROUND: one wrk run against TARGET; ROUND 0 is a
# warm-up, counted in sent but not recorded.
wrk_run() {
  local t=$1 c=$2 round=$3 th=$threads d=$duration relay=${pid[$1]}
  [ "$c" -gt 1 ] || th=1
  [ "$round" -gt 0 ] || d=$warmup
  [ "$t" != direct ] || relay=
  local r0 u0 r1 u1 out
  u0=$(ticks "${pid[upstream]}")
  r0=${relay:+$(ticks "$relay")}
  out=$(wrk -t"$th" -c"$c" -d"$d" --latency "${url[$t]}" 2>&1) || {
    echo "$out" >&2
    die "wrk failed against $t" "${log[$t]}"
  }
  u1=$(ticks "${pid[upstream]}")
  r1=${relay:+$(ticks "$relay")}
  alive "${pid[$t]}" "${log[$t]}" "$t"
  local requests rps p50 p99 non2xx sock errors
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  p50=$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  non2xx=$(echo "$out" | awk '/Non-2xx or 3xx responses:/ {print $NF}')
  sock=$(echo "$out" | sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' |
    awk '{print $1 + $2 + $3 + $4}')
  errors=$((${non2xx:-0} + ${sock:-0}))
  [ -n "$requests" ] && [ -n "$rps" ] || {
    echo "$out" >&2
    die "cannot read wrk's output against $t"
  }
  sent[$t]=$((${sent[$t]:-0} + requests))
  local rcpu=- ucpu
  [ -z "$relay" ] || rcpu=$(awk -v a="$r0" -v b="$r1" -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz * 1e6 / (n > 0 ? n : 1)}')
  ucpu=$(awk -v a="$u0" -v b="$u1" -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz * 1e6 / (n > 0 ? n : 1)}')
  if [ "$round" -eq 0 ]; then
    printf '%-8s warm-up c=%-3d %s: %d requests, %d errors\n' "$t" "$c" "$d" "$requests" "$errors" | tee -a "$lines"
  else
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$round" "$rps" "$p50" "$p99" "$requests" "$errors" "$rcpu" "$ucpu" >>"$runs"
    printf '%-8s c=%-3d %s: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  %8d requests  %d errors  relay cpu %s µs/req  upstream cpu %s µs/req\n' \
      "$t" "$c" "$d" "$rps" "$p50" "$p99" "$requests" "$errors" "$rcpu" "$ucpu" | tee -a "$lines"
  fi
}

# fsync_run ROUND: the fsync floor beside the broker's audit database, one
# writer back to back.
fsync_run() {
  local out
  out=$("$lg" -label fsync -fsync-floor "$dir" -d "$duration" -warmup 0s -json 2>"$tmp/fsync.txt") || {
    cat "$tmp/fsync.txt" >&2
    die "the fsync floor failed in $dir"
  }
  local p50 p99 rps ok
  p50=$(echo "$out" | grep -o '"p50_ms":[0-9.e+-]*' | cut -d: -f2)
  p99=$(echo "$out" | grep -o '"p99_ms":[0-9.e+-]*' | cut -d: -f2)
  rps=$(echo "$out" | grep -o '"rps":[0-9.e+-]*' | cut -d: -f2)
  ok=$(echo "$out" | grep -o '"ok":[0-9]*' | cut -d: -f2)
  fs_type=$(echo "$out" | grep -o '"fs":"[^"]*"' | cut -d'"' -f4)
  printf 'fsync\t1\t%s\t%s\t%s\t%s\t%s\t0\t-\t-\n' "$1" "$rps" "$p50" "$p99" "$ok" >>"$runs"
  printf '%-8s c=1   %s: %9.0f syncs/s p50 %7.3f ms  p99 %7.3f ms  (4120-byte writes + fsync on %s)\n' \
    fsync "$duration" "$rps" "$p50" "$p99" "$fs_type" | tee -a "$lines"
}

echo "== runs"
if [[ ! $warmup =~ ^0+[smh]?$ ]]; then
  for t in direct haproxy gorelay broker; do wrk_run "$t" "$conns" 0; done
fi
fs_type=
for round in $(seq 1 "$rounds"); do
  [ "$rounds" -eq 1 ] || echo "-- round $round of $rounds" | tee -a "$lines"
  for t in direct haproxy gorelay broker; do wrk_run "$t" "$conns" "$round"; done
  for t in direct haproxy gorelay broker; do wrk_run "$t" 1 "$round"; done
  fsync_run "$round"
done
echo

# med LABEL CONNS COLUMN: the median of COLUMN (4 rps, 5 p50, 6 p99, 9
# relay cpu, 10 upstream cpu) over the rounds of LABEL at CONNS; - if none.
med() {
  awk -F'\t' -v l="$1" -v c="$2" -v k="$3" '$1 == l && $2 == c && $k != "-" {print $k}' "$runs" | sort -g |
    awk '{v[NR] = $1} END {
      if (!NR) { print "-"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      print m
    }'
}
# range LABEL CONNS COLUMN: lowest–highest over the rounds.
range() {
  awk -F'\t' -v l="$1" -v c="$2" -v k="$3" '$1 == l && $2 == c {print $k}' "$runs" | sort -g |
    awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.0f–%.0f", lo, hi}'
}
# num FORMAT VALUE: VALUE printed with FORMAT, - as is.
num() { if [ "$2" = - ]; then echo -; else awk -v f="$1" -v v="$2" 'BEGIN {printf f, v}'; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b}'; }
errors_total=$(awk -F'\t' '$1 != "fsync" {s += $8} END {print s + 0}' "$runs")
warmup_errors=$(grep -c 'warm-up.*[1-9][0-9]* errors$' "$lines" || true)

# The broker's memory, before it stops: peak (VmHWM) and now (VmRSS).
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/${pid[broker]}/status")
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/${pid[broker]}/status")
haproxy_hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/${pid[haproxy]}/status")
gorelay_hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/${pid[gorelay]}/status")

for t in broker gorelay haproxy upstream; do stop "${pid[$t]}"; done
upstream_counts=$(sed -n 's/^httpbench: //p' "${log[upstream]}")
gorelay_counts=$(sed -n 's/^httpbench: relay: //p' "${log[gorelay]}")

# Every request the broker forwarded was a decision, committed before it
# was forwarded: its allow rows for the credential against the requests
# wrk completed through it (warm-up included) and the check request. wrk
# does not count requests still in flight when a run ends, so the rows may
# exceed its count by up to $conns a run, never fall short.
decisions=$("$bin" audit query --db "$dir/audit.db" --credential "$cred" --kind decision --format json |
  grep -o '"decision":"[a-z]*"' | cut -d'"' -f4 | sort | uniq -c) || die "cannot query the broker's audit database $dir/audit.db"
count() { echo "$decisions" | awk -v d="$1" '$2 == d {print $1; f = 1} END {if (!f) print 0}'; }
allow_rows=$(count allow) deny_rows=$(count deny) error_rows=$(count error)
broker_sent=$((${sent[broker]:-0} + 1))

ts=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
summary=bench/results/http-$ts.txt
pf() { awk -v ok="$1" 'BEGIN {print ok ? "PASS" : "FAIL"}'; }
{
  echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $reply_size-byte reply, $duration per run, $rounds round(s), medians)"
  echo "broker: $bin ($("$bin" version 2>/dev/null || echo "version unknown")); $(wrk -v 2>&1 | sed -n '1s/ Copyright.*//p'); $(haproxy -v | sed -n '1s/ - https.*//p')"
  echo "load average before: $load_before"
  echo
  printf '%-26s %12s %12s %12s %12s %15s %15s %16s %14s %15s\n' "" direct haproxy gorelay broker \
    broker/haproxy broker/gorelay gorelay/haproxy broker/direct haproxy/direct
  for c in "$conns" 1; do
    for k in 4 5 6 9; do
      case $k in
      4) name="req/s" f=%.0f ;; 5) name="p50 ms" f=%.3f ;; 6) name="p99 ms" f=%.3f ;; 9) name="relay CPU µs/req" f=%.1f ;;
      esac
      d=$(med direct "$c" "$k") h=$(med haproxy "$c" "$k") g=$(med gorelay "$c" "$k") b=$(med broker "$c" "$k")
      rd=$(ratio "$b" "$d") rh=$(ratio "$h" "$d")
      [ "$k" != 9 ] || rd=- rh=-
      printf '%-26s %12s %12s %12s %12s %15s %15s %16s %14s %15s\n' "c=$c $name" "$(num "$f" "$d")" "$(num "$f" "$h")" "$(num "$f" "$g")" \
        "$(num "$f" "$b")" "$(ratio "$b" "$h")" "$(ratio "$b" "$g")" "$(ratio "$g" "$h")" "$rd" "$rh"
    done
    if [ "$rounds" -gt 1 ]; then
      printf '%-26s %12s %12s %12s %12s\n' "c=$c req/s range" "$(range direct "$c" 4)" "$(range haproxy "$c" 4)" \
        "$(range gorelay "$c" 4)" "$(range broker "$c" 4)"
    fi
  done
  f50=$(num %.3f "$(med fsync 1 5)") f99=$(num %.3f "$(med fsync 1 6)") frps=$(med fsync 1 4)
  printf '%-26s %12s (p99 %s ms, %.0f syncs/s, one writer, %s, beside the audit database)\n' "fsync floor p50 ms" "$f50" "$f99" "$frps" "${fs_type:-unknown fs}"
  echo "relay CPU: the user + system time of haproxy, gorelay or the broker per request (the upstream's own: direct $(med direct "$conns" 10), haproxy $(med haproxy "$conns" 10), gorelay $(med gorelay "$conns" 10), broker $(med broker "$conns" 10) µs/req at c=$conns)"
  echo
  echo "targets:"
  b=$(med broker "$conns" 4) h=$(med haproxy "$conns" 4)
  ok=$(awk -v b="$b" -v h="$h" -v m="$min_vs_haproxy" 'BEGIN {print (b >= m * h)}')
  printf '  %s  throughput at c=%s: broker %.0f req/s ≥ %s × haproxy %.0f = %.0f req/s (ratio %s)\n' \
    "$(pf "$ok")" "$conns" "$b" "$min_vs_haproxy" "$h" "$(awk -v h="$h" -v m="$min_vs_haproxy" 'BEGIN {print m * h}')" "$(ratio "$b" "$h")"
  added=$(awk -v b="$(med broker 1 5)" -v d="$(med direct 1 5)" 'BEGIN {printf "%.3f", b - d}')
  hadded=$(awk -v b="$(med haproxy 1 5)" -v d="$(med direct 1 5)" 'BEGIN {printf "%.3f", b - d}')
  limit=$(awk -v f="$f50" -v s="$added_slack_ms" 'BEGIN {printf "%.3f", f + s}')
  ok=$(awk -v a="$added" -v l="$limit" 'BEGIN {print (a <= l)}')
  printf '  %s  added p50 at c=1: broker %s − direct %s = %s ms ≤ fsync floor p50 %s + %s = %s ms (haproxy adds %s ms)\n' \
    "$(pf "$ok")" "$(med broker 1 5)" "$(med direct 1 5)" "$added" "$f50" "$added_slack_ms" "$limit" "$hadded"
  ok=$(awk -v k="$hwm_kb" -v m="$max_rss_mib" 'BEGIN {print (k / 1024 < m)}')
  printf '  %s  broker RSS: peak (VmHWM) %.1f MiB < %s MiB; after the runs (VmRSS) %.1f MiB; haproxy peak %.1f MiB\n' \
    "$(pf "$ok")" "$(awk -v k="$hwm_kb" 'BEGIN {print k / 1024}')" "$max_rss_mib" "$(awk -v k="$rss_kb" 'BEGIN {print k / 1024}')" \
    "$(awk -v k="$haproxy_hwm_kb" 'BEGIN {print k / 1024}')"
  ok=$((allow_rows >= broker_sent && deny_rows == 0))
  printf '  %s  audit: %d allow decision rows for %s ≥ %d requests completed through the broker (wrk, warm-up included, + 1 check); %d deny, %d error\n' \
    "$(pf "$ok")" "$allow_rows" "$cred" "$broker_sent" "$deny_rows" "$error_rows"
  if [ "$error_rows" -gt 0 ]; then
    echo "        (error rows: requests in flight when a wrk run ended, whose caller had exited or closed its socket before it was attested; see the broker's log)"
  fi
  # The floor, for information: what a bare Go relay costs, so that the
  # broker's gap to haproxy splits into Go's relay and the broker's
  # per-request decision (attestation, policy, audit).
  g=$(med gorelay "$conns" 4) gcpu=$(med gorelay "$conns" 9) bcpu=$(med broker "$conns" 9)
  gadded=$(awk -v g="$(med gorelay 1 5)" -v d="$(med direct 1 5)" 'BEGIN {printf "%.3f", g - d}')
  printf '  floor: a bare Go httputil.ReverseProxy relay (gorelay) reaches %s req/s = %s × haproxy at c=%s, adds %s ms p50 at c=1 (haproxy %s, broker %s), uses %s µs CPU/req (haproxy %s, broker %s) and %.1f MiB peak RSS; the broker reaches %s × gorelay\n' \
    "$(num %.0f "$g")" "$(ratio "$g" "$h")" "$conns" "$gadded" "$hadded" "$added" "$(num %.1f "$gcpu")" "$(num %.1f "$(med haproxy "$conns" 9)")" \
    "$(num %.1f "$bcpu")" "$(awk -v k="$gorelay_hwm_kb" 'BEGIN {print k / 1024}')" "$(ratio "$b" "$g")"
  echo "upstream: $upstream_counts (haproxy, gorelay and broker set the header; direct does not)"
  echo "gorelay: $gorelay_counts"
  echo "request errors (non-2xx + socket errors) over the recorded runs: $errors_total"
  echo "load average after: $(uptime | sed 's/.*load average: //')"
} >"$tmp/summary.txt"
cat "$tmp/summary.txt"
{
  echo "== runs"
  cat "$lines"
  echo
  cat "$tmp/summary.txt"
} >"$summary"
echo "saved $summary"

if [ "$errors_total" -gt 0 ] || [ "$warmup_errors" -gt 0 ]; then
  die "requests failed during the runs (see the errors in the run lines)" "${log[broker]}" "${log[gorelay]}" "${log[haproxy]}" "${log[upstream]}"
fi
if [ "$allow_rows" -lt "$broker_sent" ] || [ "$deny_rows" -ne 0 ]; then
  die "the broker's audit database holds $allow_rows allow rows (and $deny_rows deny) for $broker_sent requests completed through it" "${log[broker]}"
fi

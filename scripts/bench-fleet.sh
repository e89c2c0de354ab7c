#!/usr/bin/env bash
# Measures the fleet audit store (audit/fleet, docs/audit-fleet.md) on a
# throwaway PostgreSQL on this machine:
#
#  1. query: ROWS rows (10,000,000) from INSTALLS installs (100), times
#     spread over 30 days, loaded with generate_series into the schema
#     `credbroker audit fleet-init` creates (its indexes dropped for the
#     load and made again by a second fleet-init, which is idempotent);
#     then `credbroker audit query --fleet` filtered by workload and a
#     1-hour window, RUNS times each, wall clock of the whole command
#     (process start, connection, query, JSON output) — median and max.
#     Target: under 200 ms.
#  2. forwarding under load: the quickstart broker forwarding to the store
#     while bench/loadgen drives it (CLIENTS closed-loop clients for
#     DURATION): decisions/s, rows/s forwarded, and the lag (rows and
#     seconds) sampled from /metrics every second.
#  3. forwarding throughput: a backlog left by the same load with the
#     store unreachable, then drained by an idle broker: rows/s.
#
#   scripts/bench-fleet.sh bin/credbroker      (make bench-fleet builds and calls it)
#   ROWS=1000000 RUNS=5 scripts/bench-fleet.sh bin/credbroker
#
# Environment: ROWS (10000000), INSTALLS (100), RUNS (7), CLIENTS (32),
# DURATION (15s), BENCH_DIR (/tmp; needs about 1 GB per million rows),
# SKIP_QUERY or SKIP_FORWARD (1 to leave a part out), GO (go). A missed
# target is printed, not an error: the script fails only when something
# does not start or a step fails.
set -euo pipefail

abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
bin=$(abspath "${1:?usage: [ROWS=n] scripts/bench-fleet.sh path/to/credbroker}")
cd "$(dirname "$0")/.."
repo=$PWD

rows=${ROWS:-10000000}
installs=${INSTALLS:-100}
runs=${RUNS:-7}
clients=${CLIENTS:-32}
duration=${DURATION:-15s}
bench_dir=${BENCH_DIR:-${TMPDIR:-/tmp}}

die() {
  echo "bench-fleet: $1" >&2
  shift
  for log in "$@"; do
    if [ -s "$log" ]; then
      echo "--- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    fi
  done
  exit 1
}
[ -x "$bin" ] || die "$bin: no such executable (run make build)"
for v in rows installs runs clients; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "${v^^}=${!v}: want a whole number ≥ 1"
done
[ $((rows % installs)) -eq 0 ] || die "ROWS=$rows is not a multiple of INSTALLS=$installs"
[[ $duration =~ ^[1-9][0-9]*s$ ]] || die "DURATION=$duration: want whole seconds, such as 15s"
[ -d "$bench_dir" ] || die "BENCH_DIR=$bench_dir: no such directory"

# PostgreSQL's server programs are not on PATH in a stock Debian install.
if ! command -v initdb >/dev/null 2>&1; then
  pgbin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  [ -z "$pgbin" ] || PATH=$pgbin:$PATH
fi
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need initdb postgresql-15
need psql postgresql-client-15
need pg_isready postgresql-client-15
need curl curl
need setpriv util-linux
if [ ${#missing[@]} -gt 0 ]; then
  read -r -a missing <<<"$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
  echo "== installing: ${missing[*]} (from Debian's packages)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  pgbin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  [ -z "$pgbin" ] || PATH=$pgbin:$PATH
fi

tmp=$(mktemp -d "$bench_dir/credbroker-bench-fleet.XXXXXX")
pids=()
pg_pid=
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$pg_pid" ] || kill -INT "$pg_pid" 2>/dev/null || true
  [ -z "$pg_pid" ] || wait "$pg_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
      echo "$p"
      return 0
    }
  done
  die "no free port found"
}

# now_ms: milliseconds since the epoch.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# median and max of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
maximum() { sort -n | tail -n 1; }

echo "== machine"
uptime
echo "nproc: $(nproc)"
echo "credbroker: $bin ($("$bin" version 2>/dev/null | head -n 1))"
echo "postgres: $(postgres --version)"
echo

# --- PostgreSQL, as its own user when run as root (it refuses root).
if [ "$(id -u)" -eq 0 ]; then
  pg_owner=nobody
  ! id postgres >/dev/null 2>&1 || pg_owner=postgres
  as_owner=(setpriv --reuid="$pg_owner" --regid="$(id -g "$pg_owner")" --init-groups --)
  chmod 711 "$tmp"
else
  as_owner=()
fi
pgdir=$tmp/pg
mkdir -p "$pgdir"
[ "$(id -u)" -ne 0 ] || chown "$pg_owner:" "$pgdir"
"${as_owner[@]}" initdb -D "$pgdir/data" -U postgres --auth-local=trust --auth-host=reject \
  --no-locale -E UTF8 >"$tmp/initdb.log" 2>&1 || die "initdb failed" "$tmp/initdb.log"
pg_port=$(free_port)
# Settings of a small dedicated server: more memory for index builds and
# the cache than the defaults; durability as shipped (fsync, synchronous
# commits) for the forwarding figures.
"${as_owner[@]}" postgres -D "$pgdir/data" -c listen_addresses= -c port="$pg_port" \
  -c unix_socket_directories="$pgdir" -c shared_buffers=1GB -c maintenance_work_mem=1GB \
  -c max_wal_size=8GB -c checkpoint_timeout=30min -c effective_cache_size=8GB \
  -c logging_collector=off >"$pgdir/postgres.log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 300); do
  pg_isready -q -h "$pgdir" -p "$pg_port" && break
  kill -0 "$pg_pid" 2>/dev/null || die "postgres exited" "$pgdir/postgres.log"
  sleep 0.1
done
pg_isready -q -h "$pgdir" -p "$pg_port" || die "postgres did not start" "$pgdir/postgres.log"
psql_() { psql -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -p "$pg_port" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE fleet"
owner_dsn="host=$pgdir port=$pg_port user=postgres dbname=fleet"
"$bin" audit fleet-init --fleet "$owner_dsn" >/dev/null || die "fleet-init failed"
psql_ -d fleet -c "CREATE ROLE credbroker_forward LOGIN" \
  -c "GRANT INSERT ON audit_installs, audit_rows, audit_checkpoints, audit_anchors TO credbroker_forward" \
  -c "CREATE ROLE credbroker_audit LOGIN" \
  -c "GRANT SELECT ON audit_schema, audit_installs, audit_rows, audit_checkpoints, audit_anchors TO credbroker_audit"
reader_dsn="host=$pgdir port=$pg_port user=credbroker_audit dbname=fleet"
forward_dsn="host=$pgdir port=$pg_port user=credbroker_forward dbname=fleet"
target_ms=200
result=PASS

if [ -z "${SKIP_QUERY:-}" ]; then
  echo "== query: $rows rows from $installs installs over 30 days"
  # Times: 30 days ending now, evenly spread; the window is one hour in the
  # middle.
  end_s=$(date +%s)
  t0_ns=$(((end_s - 30 * 86400) * 1000000000))
  step_ns=$((30 * 86400 * 1000000000 / rows))
  indexes=$(psql_ -d fleet -At -c "SELECT string_agg(indexname, ',') FROM pg_indexes WHERE tablename = 'audit_rows' AND indexname <> 'audit_rows_pkey'")
  psql_ -d fleet -c "DROP INDEX $indexes"
  start=$(now_ms)
  # Rows shaped like a broker's: a decision id, a kubernetes subject (53
  # namespaces × 41 service accounts), claims, a ~330-byte input, hashes;
  # one in 97 a signed head, one in 13 a lease event, one in 17 a deny.
  psql_ -d fleet -v rows="$rows" -v installs="$installs" -v t0="$t0_ns" -v step="$step_ns" <<'SQL'
SET synchronous_commit = off;
INSERT INTO audit_rows (install_id, seq, host, kind, time_ns, decision_id, decision, reason, policy,
  policy_version, attestor, subject, claims, peer_pid, peer_uid, credential, provider, channel,
  target_host, method, path, lease_id, expires_ns, fingerprint, latency_ns, input, prev_hash, hash,
  database_name, upstream_user, escaped, subject_raw)
SELECT md5('install ' || i) || md5('key ' || i), s, 'node-' || i,
  CASE WHEN g % 97 = 0 THEN 'signed_head' WHEN g % 13 = 0 THEN 'lease' ELSE 'decision' END,
  t, substr(md5(g::text), 1, 32),
  CASE WHEN g % 17 = 0 THEN 'deny' WHEN g % 101 = 0 THEN 'error' ELSE 'allow' END,
  'allowed by policy ' || ns || '-reads', ns || '-reads', 'sha256:9f2c1e0b7a6d', 'kubernetes', sub,
  '{"namespace":"' || ns || '","pod_name":"' || sa || '-7d9f8c6b5-x2x7q","service_account":"' || sa || '"}',
  4000 + g % 30000, -1, 'cred-' || (g % 20), 'static', 'socket', '', 'GET', '/v1/credentials/demo',
  'static-' || substr(md5(g::text || 'l'), 1, 24), t + 3600000000000,
  'hmac-sha256:' || md5(g::text || 'f') || md5(g::text || 'g'), 250000 + g % 100000,
  '{"identity":{"claims":{"namespace":"' || ns || '","service_account":"' || sa || '","pod_uid":"0b5e2a4c-3f1d-4e8a-9c7b-2d6e8f1a3b5c","audience":"credbroker"},"method":"kubernetes","subject":"' || sub || '"},"now":"2026-01-01T00:00:00Z","request":{"channel":"socket","credential":"cred-' || (g % 20) || '","method":"GET","path":"/v1/credentials/demo"}}',
  md5((g - 1)::text) || md5((g - 1)::text || 'x'), md5(g::text) || md5(g::text || 'x'), '', '', 0, ''
FROM (SELECT g, g % :installs AS i, g / :installs + 1 AS s, :t0::bigint + g * :step::bigint AS t,
        'ns-' || (g % 53) AS ns, 'sa-' || (g / 53 % 41) AS sa,
        'system:serviceaccount:ns-' || (g % 53) || ':sa-' || (g / 53 % 41) AS sub
      FROM generate_series(0, :rows - 1) AS g) AS x;
SQL
  load_ms=$(($(now_ms) - start))
  start=$(now_ms)
  "$bin" audit fleet-init --fleet "$owner_dsn" >/dev/null || die "fleet-init (the indexes) failed"
  index_ms=$(($(now_ms) - start))
  psql_ -d fleet -c "VACUUM ANALYZE audit_rows"
  size=$(psql_ -d fleet -At -c "SELECT pg_size_pretty(pg_total_relation_size('audit_rows'))")
  echo "loaded in $((load_ms / 1000)) s, indexes made by fleet-init in $((index_ms / 1000)) s; audit_rows with its indexes: $size"

  mid_s=$(((end_s - 15 * 86400) / 3600 * 3600))
  since=$(date -u -d "@$mid_s" +%Y-%m-%dT%H:%M:%SZ)
  until=$(date -u -d "@$((mid_s + 3600))" +%Y-%m-%dT%H:%M:%SZ)
  echo "window: $since to $until"
  for workload in 'system:serviceaccount:ns-7:sa-3' 'system:serviceaccount:ns-7:*' '*:sa-3'; do
    n=$("$bin" audit query --fleet "$reader_dsn" --workload "$workload" --since "$since" --until "$until" --format json | wc -l)
    times=()
    for _ in $(seq 1 "$runs"); do
      start=$(date +%s%N)
      "$bin" audit query --fleet "$reader_dsn" --workload "$workload" --since "$since" --until "$until" --format json >/dev/null
      times+=($((($(date +%s%N) - start) / 1000000)))
    done
    med=$(printf '%s\n' "${times[@]}" | median)
    max=$(printf '%s\n' "${times[@]}" | maximum)
    verdict=PASS
    awk -v m="$med" -v t="$target_ms" 'BEGIN {exit !(m < t)}' || verdict=FAIL result=FAIL
    printf '  --workload %-34s %6s rows  median %5s ms  max %5s ms  (%s runs)  target < %s ms: %s\n' \
      "'$workload'" "$n" "$med" "$max" "$runs" "$target_ms" "$verdict"
  done
  echo "plan of the exact workload's query (EXPLAIN ANALYZE):"
  psql_ -d fleet -At -c "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM audit_rows WHERE time_ns >= $((mid_s * 1000000000)) AND time_ns < $(((mid_s + 3600) * 1000000000)) AND subject = 'system:serviceaccount:ns-7:sa-3' AND kind <> 'signed_head' ORDER BY time_ns, install_id, seq" | sed 's/^/    /'
  echo
fi

if [ -z "${SKIP_FORWARD:-}" ]; then
  echo "== forwarding: the quickstart broker under bench/loadgen ($clients clients, $duration), forwarding to the store"
  lg=$tmp/loadgen
  "${GO:-go}" build -o "$lg" ./bench/loadgen
  bdir=$tmp/broker
  mkdir -p "$bdir"
  admin_port=$(free_port)
  printf '%s\n' "$forward_dsn" >"$bdir/forward.dsn"
  chmod 600 "$bdir/forward.dsn"
  cat >"$bdir/credbroker.yaml" <<EOF
socket_mode: "0600"
admin: 127.0.0.1:$admin_port
audit:
  checkpoint: {interval: 5s}
  forward: {postgres: {dsn_file: $bdir/forward.dsn, host: bench-host, batch_size: 1000}}
policies: $repo/examples/quickstart/policies.yaml
credentials:
  - {name: demo, ttl: 1h, static: {file: $repo/examples/quickstart/secrets/demo}}
log: {format: text}
EOF
  broker_pid=
  start_broker() {
    "$bin" run --config "$bdir/credbroker.yaml" --socket "$bdir/broker.sock" --audit-db "$bdir/audit.db" \
      --checkpoint "$bdir/checkpoint.json" >>"$bdir/broker.log" 2>&1 &
    broker_pid=$!
    pids+=("$broker_pid")
    for _ in $(seq 1 100); do
      [ -S "$bdir/broker.sock" ] && curl -sf "http://127.0.0.1:$admin_port/healthz" >/dev/null && return 0
      kill -0 "$broker_pid" 2>/dev/null || die "the broker exited" "$bdir/broker.log"
      sleep 0.1
    done
    die "the broker did not start" "$bdir/broker.log"
  }
  stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  }
  metric() { curl -sf "http://127.0.0.1:$admin_port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

  # 2. Under load: sample rows forwarded and lag every second.
  start_broker
  "$lg" -socket "$bdir/broker.sock" -c "$clients" -d "$duration" -warmup 1s >"$tmp/load.txt" 2>&1 &
  lg_pid=$!
  pids+=("$lg_pid")
  f0=$(metric credbroker_audit_forward_rows_total)
  t0=$(now_ms)
  max_lag_rows=0 max_lag_s=0 samples=0
  while kill -0 "$lg_pid" 2>/dev/null; do
    sleep 1
    lr=$(metric credbroker_audit_forward_lag_rows)
    ls=$(metric credbroker_audit_forward_lag_seconds)
    samples=$((samples + 1))
    max_lag_rows=$(awk -v a="$max_lag_rows" -v b="${lr:-0}" 'BEGIN {print (b > a ? b : a)}')
    max_lag_s=$(awk -v a="$max_lag_s" -v b="${ls:-0}" 'BEGIN {print (b > a ? b : a)}')
  done
  wait "$lg_pid" || die "loadgen failed" "$tmp/load.txt"
  f1=$(metric credbroker_audit_forward_rows_total)
  t1=$(now_ms)
  echo "load: $(tail -n 1 "$tmp/load.txt")"
  awk -v f0="$f0" -v f1="$f1" -v ms="$((t1 - t0))" -v lr="$max_lag_rows" -v ls="$max_lag_s" -v n="$samples" 'BEGIN {
    printf "forwarded while loaded: %.0f rows/s; lag sampled every second (%d samples): at most %.0f rows, %.2f s\n", (f1 - f0) / (ms / 1000), n, lr, ls }'
  start=$(now_ms)
  until [ "$(metric credbroker_audit_forward_lag_rows)" = 0 ]; do
    [ $(($(now_ms) - start)) -lt 120000 ] || die "forwarding did not catch up within 2 minutes" "$bdir/broker.log"
    sleep 0.05
  done
  echo "caught up $(($(now_ms) - start)) ms after the load ended"
  stop_broker

  # 3. A backlog left with the store unreachable, drained by an idle broker.
  printf 'host=%s port=1 user=credbroker_forward dbname=fleet connect_timeout=1\n' "$pgdir" >"$bdir/forward.dsn"
  start_broker
  "$lg" -socket "$bdir/broker.sock" -c "$clients" -d "$duration" -warmup 1s >"$tmp/load2.txt" 2>&1 || die "loadgen failed" "$tmp/load2.txt"
  stop_broker
  # The backlog: the log's head less the forwarder's cursor.
  head_seq=$("$bin" audit verify --db "$bdir/audit.db" | sed -n 's/.*head seq \([0-9]*\).*/\1/p')
  cursor_seq=$(sed -n 's/.*"seq":\([0-9]*\).*/\1/p' "$bdir/audit.db.forward")
  backlog=$((head_seq - cursor_seq))
  printf '%s\n' "$forward_dsn" >"$bdir/forward.dsn"
  start=$(now_ms)
  start_broker
  until [ "$(metric credbroker_audit_forward_rows_total | awk '{printf "%d", $1}')" -ge "$backlog" ] &&
    [ "$(metric credbroker_audit_forward_lag_rows)" = 0 ]; do
    [ $(($(now_ms) - start)) -lt 600000 ] || die "the backlog was not drained within 10 minutes" "$bdir/broker.log"
    sleep 0.05
  done
  drain_ms=$(($(now_ms) - start))
  awk -v n="$backlog" -v ms="$drain_ms" 'BEGIN {
    printf "a backlog of %d rows (left while the store was unreachable) drained by an idle broker in %.1f s, its start included: %.0f rows/s\n", n, ms / 1000, n / (ms / 1000) }'
  stop_broker
  out=$("$bin" audit verify --fleet "$reader_dsn" --install "$(psql_ -d fleet -At -c "SELECT install_id FROM audit_installs WHERE host = 'bench-host'")") ||
    die "audit verify --fleet failed: $out"
  echo "audit verify --fleet of the bench broker: ${out:0:160}…"
  echo
fi
echo "== result: $result"

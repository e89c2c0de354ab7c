#!/usr/bin/env bash
# Measures credbroker's database injection listeners (inject/postgres,
# inject/redis) against a direct connection to the same server, against
# HAProxy's `mode tcp` relay to it, and against gorelay, a bare TCP relay
# on Go's standard library (bench/tcprelay: accept, dial the upstream,
# io.Copy both ways, which the kernel splices, close both when either
# ends: the plain way to relay in Go, where the broker's listeners use an
# epoll event loop after their login), in one run, targets alternating (each round starts
# with the next target). The client authenticates itself directly and
# through HAProxy and gorelay; through the broker it sends no password,
# the broker logs in upstream with the credential it holds:
#
#   PostgreSQL 15 (a throwaway cluster, scram-sha-256 on 127.0.0.1, a
#   `pgbench -i -s SCALE` database): pgbench -S (select only), the default
#   TPC-B-like script, -S -C (a new connection per transaction) and -S -R
#   PG_RATE (a steady rate that does not saturate the relay: what it costs
#   a quiet workload), each with -c CLIENTS -j JOBS -T DURATION; and
#   -S -C through the broker's listener on a Unix socket too, where the
#   kernel names the caller (on TCP the broker scans /proc/*/fd for it);
#   Redis (a throwaway redis-server, an ACL user, the default user off):
#   redis-benchmark -t get,set -c REDIS_CLIENTS -n N, N chosen so that
#   each test through HAProxy lasts about DURATION.
#
# Around each run the script reads the relay's (haproxy's, gorelay's or
# the broker's) user + system CPU time from /proc/PID/stat: CPU per
# transaction or request. Prints the share of CPU time that was busy, idle
# and stolen by the hypervisor during the rounds, the medians over ROUNDS,
# the ratios (for the targets also per round: broker over HAProxy in the
# same round, which a slow spell of the machine weighs on alike), the
# issue's targets (PASS/FAIL), the broker's audit rows, and `floor:` lines
# (no verdict) saying what gorelay reaches, so that the broker's gap to
# HAProxy splits into what a relay in Go costs and what the broker's own
# work costs; saves the output as bench/results/db-<UTC time>.txt.
#
#   scripts/bench-db.sh                          # builds bin/credbroker first
#   scripts/bench-db.sh path/to/credbroker       # that binary, no build
#   ROUNDS=1 DURATION=2s scripts/bench-db.sh     # a quick look, about 100 s
#
# Environment: DURATION (10s per run; whole seconds, s or m), ROUNDS (3),
# WARMUP (2s, once per target and workload before the rounds, not
# recorded; 0 for none), CLIENTS (8) and JOBS (2): pgbench's -c and -j,
# SCALE (10, pgbench -i -s), PG_RATE (200, pgbench -R), REDIS_CLIENTS
# (50), REDIS_REQUESTS (redis-benchmark's -n per test; default from the
# warm-up), DBS ("postgres redis"), TARGETS ("direct haproxy gorelay
# broker"), BENCH_DIR (${TMPDIR:-/tmp}: where the temporary directory, and
# so Redis's files and the broker's audit database, go), PG_DIR (/dev/shm
# when it is writable with 1 GiB free, else BENCH_DIR: where the PostgreSQL
# cluster goes; on a disk, every TPC-B-like commit waits for an fsync
# whose time the host's other work sets, which drowns the relays' share),
# TCP_LOOKUP (auto: attestors.unix.tcp_lookup of the broker, which finds
# the process behind each TCP connection with a BPF iterator when it can
# load one, here as root, and by reading /proc/*/fd otherwise; proc to
# measure the latter), GO (go).
# Installs what is missing from Debian's packages. See bench/README.md. A
# missed target is printed, not an error: the script fails only when
# something does not start, a check query through a target fails, a run
# fails (pgbench's exit status or failed transactions, an error reply
# counted by Redis), or the broker's audit database holds fewer allow rows
# than connections it was sent.
set -euo pipefail

# abspath PATH: PATH made absolute against the caller's directory.
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

bin=${1:+$(abspath "$1")}
bench_dir=$(abspath "${BENCH_DIR:-${TMPDIR:-/tmp}}")
pg_base=${PG_DIR:-}
if [ -z "$pg_base" ]; then
  pg_base=$bench_dir
  # /dev/shm when it can take the database (a container's may hold 64 MiB).
  if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -ge $((1 << 20)) ]; then
    pg_base=/dev/shm
  fi
fi
pg_base=$(abspath "$pg_base")
cd "$(dirname "$0")/.."
GO=${GO:-go}

duration=${DURATION:-10s}
rounds=${ROUNDS:-3}
warmup=${WARMUP:-2s}
clients=${CLIENTS:-8}
jobs=${JOBS:-2}
scale=${SCALE:-10}
pg_rate=${PG_RATE:-200}
redis_clients=${REDIS_CLIENTS:-50}
redis_requests=${REDIS_REQUESTS:-}
read -r -a dbs <<<"${DBS:-postgres redis}"
read -r -a targets <<<"${TARGETS:-direct haproxy gorelay broker}"
pg_cred=bench-pg
redis_cred=bench-redis
# The issue's targets.
min_c_vs_direct=0.85 # broker -S -C TPS ≥ this × direct's
max_rss_mib=80       # broker peak RSS

die() {
  echo "bench-db: $1" >&2
  shift
  for log in "$@"; do
    if [ -s "$log" ]; then
      echo "--- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    fi
  done
  exit 1
}

# seconds DURATION: whole seconds of 10, 10s or 1m; empty when malformed.
seconds() {
  case $1 in
  *m) [[ ${1%m} =~ ^[0-9]+$ ]] && echo $((${1%m} * 60)) ;;
  *s) [[ ${1%s} =~ ^[0-9]+$ ]] && echo $((10#${1%s})) ;;
  *) [[ $1 =~ ^[0-9]+$ ]] && echo $((10#$1)) ;;
  esac
}
dur_s=$(seconds "$duration" || true)
warm_s=$(seconds "$warmup" || true)
[ -n "$dur_s" ] && [ "$dur_s" -ge 1 ] || die "DURATION=$duration: want whole seconds, e.g. 10s or 1m"
[ -n "$warm_s" ] || die "WARMUP=$warmup: want whole seconds, e.g. 2s, or 0"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$rounds: want a whole number ≥ 1"
[[ $clients =~ ^[1-9][0-9]*$ ]] || die "CLIENTS=$clients: want a whole number ≥ 1"
[[ $jobs =~ ^[1-9][0-9]*$ ]] && [ "$jobs" -le "$clients" ] || die "JOBS=$jobs: want a whole number from 1 to CLIENTS"
[[ $pg_rate =~ ^[1-9][0-9]*$ ]] || die "PG_RATE=$pg_rate: want a whole number of transactions a second"
[[ $scale =~ ^[1-9][0-9]*$ ]] || die "SCALE=$scale: want a whole number ≥ 1"
[[ $redis_clients =~ ^[1-9][0-9]*$ ]] || die "REDIS_CLIENTS=$redis_clients: want a whole number ≥ 1"
[ -z "$redis_requests" ] || [[ $redis_requests =~ ^[1-9][0-9]*$ ]] || die "REDIS_REQUESTS=$redis_requests: want a whole number ≥ 1"
[ -d "$bench_dir" ] || die "BENCH_DIR=$bench_dir: no such directory"
[ -d "$pg_base" ] || die "PG_DIR=$pg_base: no such directory"
declare -A want_db want_target
for d in "${dbs[@]}"; do
  case $d in postgres | redis) want_db[$d]=1 ;; *) die "DBS: unknown database $d (want postgres and/or redis)" ;; esac
done
for t in "${targets[@]}"; do
  case $t in direct | haproxy | gorelay | broker) want_target[$t]=1 ;; *) die "TARGETS: unknown target $t (want direct, haproxy, gorelay and/or broker)" ;; esac
done
[ ${#want_db[@]} -gt 0 ] || die "DBS is empty"
[ ${#want_target[@]} -gt 0 ] || die "TARGETS is empty"
# The targets in a fixed order, whatever order TARGETS names them in.
order=()
for t in direct haproxy gorelay broker; do [ -z "${want_target[$t]:-}" ] || order+=("$t"); done
has() { [ -n "${want_target[$1]:-}" ]; }
db() { [ -n "${want_db[$1]:-}" ]; }

# PostgreSQL's server programs are not on PATH in a stock Debian install:
# the newest /usr/lib/postgresql/N/bin.
if ! command -v initdb >/dev/null 2>&1; then
  pgbin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
  [ -z "$pgbin" ] || PATH=$pgbin:$PATH
fi

# need CMD PACKAGE: install PACKAGE from Debian when CMD is missing.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
if db postgres; then
  need initdb postgresql-15 # Debian's postinst may create and start a "main" cluster; the script does not use it
  need pgbench postgresql-client-15
  need psql postgresql-client-15
  need pg_isready postgresql-client-15
fi
if db redis; then
  need redis-server redis-server
  need redis-benchmark redis-tools
  need redis-cli redis-tools
fi
has haproxy && need haproxy haproxy
need setpriv util-linux
if [ ${#missing[@]} -gt 0 ]; then
  read -r -a missing <<<"$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
  echo "== installing: ${missing[*]} (from Debian's packages)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  if ! command -v initdb >/dev/null 2>&1; then
    pgbin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [ -z "$pgbin" ] || PATH=$pgbin:$PATH
  fi
fi

pids=()
tmp=$(mktemp -d "$bench_dir/credbroker-bench-db.XXXXXX")
pgdir=
pg_pid=
cleanup() {
  # PostgreSQL stops at once on SIGINT (fast shutdown); SIGTERM would wait
  # for its sessions.
  [ -z "$pg_pid" ] || kill -INT "$pg_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$pg_pid" ] || wait "$pg_pid" 2>/dev/null || true
  rm -rf "$tmp" ${pgdir:+"$pgdir"}
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

# free_port: a TCP port on 127.0.0.1 that nothing answers on. The servers
# that need a fixed port are started on one; a clash shows as a start
# failure, which names the port.
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

# wait_port PORT PID LOG NAME: wait up to 30 s for 127.0.0.1:PORT to accept
# while PID is alive.
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    alive "$2" "$3" "$4"
    sleep 0.1
  done
  die "$4 did not accept on 127.0.0.1:$1 within 30s" "$3"
}

# redact: the command lines printed, with the passwords replaced.
redact() { sed -e "s/${pg_pass:-@none@}/***/g" -e "s/${redis_pass:-@none@}/***/g"; }

echo "== machine"
uptime
echo "nproc: $(nproc)"
# The broker attests each connection on TCP by finding the client socket's
# holder in /proc/*/fd, so its cost grows with the processes and open files.
echo "processes: $(find /proc -mindepth 1 -maxdepth 1 -name '[0-9]*' | wc -l), open files: $(find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
load_before=$(uptime | sed 's/.*load average: //')

echo "== build"
if has broker; then
  if [ -z "$bin" ]; then
    bin=$PWD/bin/credbroker
    version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
    CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin" ./cmd/credbroker
  fi
  [ -x "$bin" ] || die "$bin: no such executable"
  broker_version="$bin ($("$bin" version 2>/dev/null || echo "version unknown"))"
else
  broker_version="not run (TARGETS=${order[*]})"
fi
echo "broker: $broker_version"
if has gorelay; then
  relay_bin=$tmp/tcprelay
  CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$relay_bin" ./bench/tcprelay
fi
tools=()
db postgres && tools+=("$(pgbench --version)" "$(postgres --version)")
db redis && tools+=("$(redis-server --version | cut -d' ' -f1-3)" "redis-benchmark $(redis-benchmark --version 2>/dev/null | cut -d' ' -f2 || echo '?')")
has haproxy && tools+=("$(haproxy -v | sed -n '1s/ - https.*//p')")
has gorelay && tools+=("gorelay: bench/tcprelay, $("$GO" env GOVERSION)")
tools_line=$(printf '%s; ' "${tools[@]}")
tools_line=${tools_line%; }
echo "$tools_line"

# The passwords: secrets like any other, written to files of mode 0600 in
# $tmp, never printed (the command lines shown are redacted).
umask 077
pg_user=bench redis_user=bench
pg_pass=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
redis_pass=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
declare -A port pid log
nopass=$tmp/no-pgpass # a password file that does not exist: libpq reads none

# The user the PostgreSQL server runs as: it refuses root.
if [ "$(id -u)" -eq 0 ]; then
  pg_owner=nobody
  ! id postgres >/dev/null 2>&1 || pg_owner=postgres
  as_owner=(setpriv --reuid="$pg_owner" --regid="$(id -g "$pg_owner")" --init-groups --)
  chmod 711 "$tmp" # the owner must reach its own directory, and read nothing else
else
  pg_owner=$(id -un)
  as_owner=()
fi

if db postgres; then
  echo "== postgres"
  pgdir=$(mktemp -d "$pg_base/credbroker-bench-pg.XXXXXX")
  [ "$(id -u)" -ne 0 ] || chown "$pg_owner:" "$pgdir"
  log[pg]=$pgdir/postgres.log
  "${as_owner[@]}" initdb -D "$pgdir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --no-locale -E UTF8 >"$tmp/initdb.log" 2>&1 || die "initdb failed (as $pg_owner)" "$tmp/initdb.log"
  for attempt in 1 2 3; do
    port[pg]=$(free_port)
    # Started in the foreground (setpriv execs it): $! is the postmaster.
    "${as_owner[@]}" postgres -D "$pgdir/data" -c listen_addresses=127.0.0.1 -c port="${port[pg]}" \
      -c unix_socket_directories="$pgdir" -c max_connections=100 -c logging_collector=off >"${log[pg]}" 2>&1 &
    pg_pid=$!
    ready=
    for _ in $(seq 1 300); do
      if pg_isready -q -h "$pgdir" -p "${port[pg]}"; then
        ready=1
        break
      fi
      kill -0 "$pg_pid" 2>/dev/null || break
      sleep 0.1
    done
    [ -z "$ready" ] || break
    kill -INT "$pg_pid" 2>/dev/null || true
    wait "$pg_pid" 2>/dev/null || true
    pg_pid=
    [ "$attempt" -lt 3 ] || die "postgres did not start" "${log[pg]}"
  done
  pid[pg]=$pg_pid
  # The role and its database, through the Unix socket (trust, the owner's
  # superuser); the password goes on stdin, never on a command line.
  psql -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -p "${port[pg]}" -U postgres -d postgres >"$tmp/psql.log" 2>&1 <<EOF ||
CREATE ROLE $pg_user LOGIN PASSWORD '$pg_pass';
CREATE DATABASE $pg_user OWNER $pg_user;
EOF
    die "cannot create the role $pg_user" "$tmp/psql.log" "${log[pg]}"
  echo "postgres $(postgres --version | awk '{print $3}') on 127.0.0.1:${port[pg]} as $pg_owner, scram-sha-256, data in $pg_base ($(stat -f -c %T "$pgdir")); pgbench -i -s $scale"
  PGPASSWORD=$pg_pass PGPASSFILE=$nopass PGSSLMODE=disable pgbench -i -q -s "$scale" -h 127.0.0.1 -p "${port[pg]}" -U "$pg_user" "$pg_user" \
    >"$tmp/pgbench-init.log" 2>&1 || die "pgbench -i failed" "$tmp/pgbench-init.log" "${log[pg]}"
  tail -n 1 "$tmp/pgbench-init.log"
fi

if db redis; then
  echo "== redis"
  log[redis]=$tmp/redis.log
  for attempt in 1 2 3; do
    port[redis]=$(free_port)
    cat >"$tmp/redis.conf" <<EOF
port ${port[redis]}
bind 127.0.0.1
save ""
appendonly no
daemonize no
dir $tmp
user default off
user $redis_user on >$redis_pass ~* &* +@all
EOF
    redis-server "$tmp/redis.conf" >"${log[redis]}" 2>&1 &
    pid[redis]=$!
    for _ in $(seq 1 300); do
      (exec 3<>"/dev/tcp/127.0.0.1/${port[redis]}") 2>/dev/null && break
      kill -0 "${pid[redis]}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid[redis]}" 2>/dev/null; then
      pids+=("${pid[redis]}")
      break
    fi
    wait "${pid[redis]}" 2>/dev/null || true
    [ "$attempt" -lt 3 ] || die "redis-server did not start" "${log[redis]}"
  done
  wait_port "${port[redis]}" "${pid[redis]}" "${log[redis]}" "redis-server"
  echo "$(redis-server --version | cut -d' ' -f3) on 127.0.0.1:${port[redis]}, ACL user $redis_user, the default user off, no persistence"
fi

# HAProxy, mode tcp, one frontend per database, no logging.
if has haproxy; then
  echo "== haproxy"
  log[haproxy]=$tmp/haproxy.log
  for attempt in 1 2 3; do
    {
      cat <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
EOF
      for d in postgres redis; do
        db "$d" || continue
        up=pg
        [ "$d" = postgres ] || up=redis
        port[haproxy-$d]=$(free_port)
        printf 'listen %s\n    bind 127.0.0.1:%s\n    server %s 127.0.0.1:%s\n' "$d" "${port[haproxy-$d]}" "$d" "${port[$up]}"
      done
    } >"$tmp/haproxy.cfg"
    haproxy -db -f "$tmp/haproxy.cfg" >"${log[haproxy]}" 2>&1 &
    pid[haproxy]=$!
    ok=1
    for d in postgres redis; do
      db "$d" || continue
      for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/${port[haproxy-$d]}") 2>/dev/null && break
        kill -0 "${pid[haproxy]}" 2>/dev/null || break
        sleep 0.1
      done
      kill -0 "${pid[haproxy]}" 2>/dev/null || ok=
    done
    if [ -n "$ok" ]; then
      pids+=("${pid[haproxy]}")
      break
    fi
    wait "${pid[haproxy]}" 2>/dev/null || true
    [ "$attempt" -lt 3 ] || die "haproxy did not start" "${log[haproxy]}"
  done
  for d in postgres redis; do
    db "$d" || continue
    wait_port "${port[haproxy-$d]}" "${pid[haproxy]}" "${log[haproxy]}" "haproxy"
    echo "haproxy mode tcp: $d on 127.0.0.1:${port[haproxy-$d]}"
  done
fi

# gorelay: the floor of a relay on Go's standard library (bench/tcprelay),
# one process per database, each on a port of its own choosing, written to
# an address file.
if has gorelay; then
  echo "== gorelay"
  for d in postgres redis; do
    db "$d" || continue
    up=pg
    [ "$d" = postgres ] || up=redis
    log[gorelay-$d]=$tmp/gorelay-$d.log
    "$relay_bin" -listen 127.0.0.1:0 -upstream "127.0.0.1:${port[$up]}" -addr-file "$tmp/gorelay-$d.addr" >"${log[gorelay-$d]}" 2>&1 &
    pid[gorelay-$d]=$!
    pids+=("${pid[gorelay-$d]}")
    wait_file "$tmp/gorelay-$d.addr" "${pid[gorelay-$d]}" "${log[gorelay-$d]}" "gorelay ($d)"
    addr=$(cat "$tmp/gorelay-$d.addr")
    port[gorelay-$d]=${addr##*:}
    wait_port "${port[gorelay-$d]}" "${pid[gorelay-$d]}" "${log[gorelay-$d]}" "gorelay ($d)"
    echo "gorelay (bench/tcprelay): $d on $addr"
  done
fi

# The broker: static credentials holding the usernames and passwords, an
# allow policy for this user, one listener per database; its audit
# database and everything else it writes in $tmp/broker.
if has broker; then
  echo "== broker"
  dir=$tmp/broker
  mkdir -p "$dir/secrets" "$dir/pg"
  creds=()
  {
    echo "policies:"
    echo "  - name: bench-calls-databases"
    echo "    effect: allow"
    echo "    workloads: [{unix: {uid: self}}]"
    db postgres && creds+=("$pg_cred")
    db redis && creds+=("$redis_cred")
    echo "    credentials: [$(
      IFS=,
      echo "${creds[*]}"
    )]"
  } >"$dir/policies.yaml"
  {
    cat <<EOF
socket: $dir/broker.sock
admin: ""
audit: {path: $dir/audit.db, checkpoint: {file: $dir/checkpoint.json, interval: 5s}}
policies: policies.yaml
log: {format: text}
attestors: {unix: {tcp_lookup: ${TCP_LOOKUP:-auto}}}
credentials:
EOF
    if db postgres; then
      printf '%s' "$pg_user" >"$dir/secrets/pg-user"
      printf '%s' "$pg_pass" >"$dir/secrets/pg-pass"
      echo "  - {name: $pg_cred, ttl: 1h, static: {fields: {username: {file: secrets/pg-user}, password: {file: secrets/pg-pass}}}}"
    fi
    if db redis; then
      printf '%s' "$redis_user" >"$dir/secrets/redis-user"
      printf '%s' "$redis_pass" >"$dir/secrets/redis-pass"
      echo "  - {name: $redis_cred, ttl: 1h, static: {fields: {username: {file: secrets/redis-user}, password: {file: secrets/redis-pass}}}}"
    fi
    echo "listeners:"
    ! db postgres || echo "  - postgres: {listen: \"127.0.0.1:0\", upstream: \"127.0.0.1:${port[pg]}\", credential: $pg_cred, tls: {mode: disable}}"
    # The same on a Unix socket, for pg -S -C only (broker-unix).
    ! db postgres || echo "  - postgres: {listen: \"unix://$dir/pg/.s.PGSQL.5432\", upstream: \"127.0.0.1:${port[pg]}\", credential: $pg_cred, tls: {mode: disable}}"
    ! db redis || echo "  - redis: {listen: \"127.0.0.1:0\", upstream: \"127.0.0.1:${port[redis]}\", credential: $redis_cred}"
  } >"$dir/credbroker.yaml"
  log[broker]=$dir/broker.log
  "$bin" check --config "$dir/credbroker.yaml" >"$tmp/check.log" 2>&1 || {
    echo "--- $dir/credbroker.yaml" >&2
    cat "$dir/credbroker.yaml" >&2
    die "credbroker check refused the benchmark's config" "$tmp/check.log"
  }
  "$bin" run --config "$dir/credbroker.yaml" >"${log[broker]}" 2>&1 &
  pid[broker]=$!
  pids+=("${pid[broker]}")
  for d in postgres redis; do
    db "$d" || continue
    addr=
    for _ in $(seq 1 200); do
      addr=$(sed -n "s/.*$d listening.*addr=\"\{0,1\}\([0-9.]*:[0-9]*\).*/\1/p" "${log[broker]}" 2>/dev/null | head -n 1 || true)
      [ -z "$addr" ] || break
      alive "${pid[broker]}" "${log[broker]}" "the broker"
      sleep 0.1
    done
    [ -n "$addr" ] || die "the broker did not log its $d listener's address within 20s" "${log[broker]}"
    port[broker-$d]=${addr##*:}
    echo "broker $d listener on $addr"
  done
  if db postgres; then
    for _ in $(seq 1 200); do
      [ ! -S "$dir/pg/.s.PGSQL.5432" ] || break
      alive "${pid[broker]}" "${log[broker]}" "the broker"
      sleep 0.1
    done
    [ -S "$dir/pg/.s.PGSQL.5432" ] || die "the broker did not create its postgres listener's socket $dir/pg/.s.PGSQL.5432 within 20s" "${log[broker]}"
    echo "broker postgres listener on unix://$dir/pg/.s.PGSQL.5432 (pg -S -C only)"
  fi
  echo "broker audit database in $dir ($(stat -f -c %T "$dir"))"
fi
port[direct-postgres]=${port[pg]:-}
port[direct-redis]=${port[redis]:-}
pid[direct]=
pid[haproxy]=${pid[haproxy]:-}
pid[broker]=${pid[broker]:-}
# The relay process and its log per target and database: haproxy and the
# broker serve both databases, gorelay runs once per database.
for d in postgres redis; do
  for t in direct haproxy broker; do pid[$t-$d]=${pid[$t]} log[$t-$d]=${log[$t]:-}; done
  pid[broker-unix-$d]=${pid[broker]} log[broker-unix-$d]=${log[broker]:-}
  pid[gorelay-$d]=${pid[gorelay-$d]:-} log[gorelay-$d]=${log[gorelay-$d]:-}
done

# pg_env TARGET: the environment of a PostgreSQL client for TARGET: the
# password directly and through haproxy and gorelay, none through the
# broker.
pg_env() {
  local e=(PGPASSFILE="$nopass" PGSSLMODE=disable PGCONNECT_TIMEOUT=10)
  case $1 in broker | broker-unix) ;; *) e+=(PGPASSWORD="$pg_pass") ;; esac
  echo "${e[@]}"
}
# redis_auth TARGET: redis-cli/redis-benchmark's credential flags for
# TARGET: the ACL user and password directly and through haproxy and
# gorelay, none through the broker.
redis_auth() { [ "$1" = broker ] || echo "--user $redis_user -a $redis_pass"; }

# One query through each target: it must answer as the bench role or user,
# the broker's without the client sending a password.
echo "== checks"
declare -A sent_conns # connections opened through the broker per database
for t in "${order[@]}"; do
  if db postgres; then
    # shellcheck disable=SC2046
    out=$(env -u PGPASSWORD $(pg_env "$t") psql -X -At -h 127.0.0.1 -p "${port[$t-postgres]}" -U "$pg_user" -d "$pg_user" \
      -c 'select current_user, count(*) from pgbench_branches' 2>&1) ||
      die "psql through $t failed: $(echo "$out" | redact)" "${log[$t-postgres]}" "${log[pg]}"
    [ "$out" = "$pg_user|$scale" ] || die "psql through $t answered $(echo "$out" | redact), want $pg_user|$scale" "${log[$t-postgres]}"
    [ "$t" != broker ] || sent_conns[postgres]=1
    echo "postgres through $t (127.0.0.1:${port[$t-postgres]}): current_user $pg_user"
  fi
  if db redis; then
    # shellcheck disable=SC2046
    out=$(redis-cli --no-auth-warning -h 127.0.0.1 -p "${port[$t-redis]}" $(redis_auth "$t") ACL WHOAMI 2>&1) ||
      die "redis-cli through $t failed: $(echo "$out" | redact)" "${log[$t-redis]}" "${log[redis]}"
    [ "$out" = "$redis_user" ] || die "redis-cli ACL WHOAMI through $t answered $(echo "$out" | redact), want $redis_user" "${log[$t-redis]}" "${log[redis]}"
    [ "$t" != broker ] || sent_conns[redis]=1
    echo "redis through $t (127.0.0.1:${port[$t-redis]}): ACL WHOAMI $redis_user"
  fi
done

# ticks PID: the process's user + system CPU time, in clock ticks.
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
hz=$(getconf CLK_TCK)
# cpu_times: the machine's busy, idle and steal time so far, in clock
# ticks (/proc/stat; steal is time the hypervisor ran something else
# while this VM wanted the CPU, which moves every target's figures).
cpu_times() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $5 + $6, $9; exit}' /proc/stat; }
# wakeups PID: how many times the process's main thread has been woken
# from a sleep (its voluntary context switches). For redis-server, whose
# main thread sleeps only in epoll_wait, a request per wake-up is how
# many requests a relay hands it at once: fewer wake-ups for the same
# requests is less CPU it takes from the client and the relay.
wakeups() { awk '/^voluntary_ctxt_switches:/ {print $2}' "/proc/$1/status"; }
# cpu_per T0 T1 N: µs of CPU per operation.
cpu_per() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz * 1e6 / (n > 0 ? n : 1)}'; }

# Every run is a line of $runs: workload target round rate lat_ms p99_ms
# ops errors relay_cpu_us_per_op server_wakeups_per_op (redis only).
runs=$tmp/runs.tsv
: >"$runs"
lines=$tmp/lines.txt
: >"$lines"
cmds=$tmp/commands.txt
: >"$cmds"

# The pgbench workloads: name and flags.
# pg-R is pgbench -S held to PG_RATE transactions a second (-R): not a
# throughput test (every target reaches the rate) but what a relay costs
# a workload that is not saturating it, which is what a sidecar mostly
# sees: read its relay CPU row.
declare -A pg_flags=([pg-S]="-S" [pg-tpcb]="" [pg-SC]="-S -C" [pg-R]="-S -R $pg_rate")
pg_workloads=(pg-S pg-tpcb pg-SC pg-R)

# pg_run WORKLOAD TARGET ROUND: one pgbench run; ROUND 0 is a warm-up,
# counted in sent_conns but not recorded.
pg_run() {
  local w=$1 t=$2 round=$3 relay=${pid[$2-postgres]} secs=$dur_s
  [ "$round" -gt 0 ] || secs=$warm_s
  # shellcheck disable=SC2206
  local where=(-h 127.0.0.1 -p "${port[$t-postgres]:-}")
  [ "$t" != broker-unix ] || where=(-h "$tmp/broker/pg")
  local args=(${pg_flags[$w]} -c "$clients" -j "$jobs" -T "$secs" "${where[@]}" -U "$pg_user" "$pg_user")
  [ "$round" -eq 0 ] || grep -qF -- "$w $t:" "$cmds" || echo "$w $t: $(pg_env "$t" | tr ' ' '\n' | grep -v '^PGPASSFILE\|^PGCONNECT' | tr '\n' ' ')pgbench ${args[*]}" | redact >>"$cmds"
  local r0 r1 out rc=0
  r0=${relay:+$(ticks "$relay")}
  # shellcheck disable=SC2046
  out=$(env -u PGPASSWORD $(pg_env "$t") pgbench "${args[@]}" 2>&1) || rc=$?
  r1=${relay:+$(ticks "$relay")}
  [ -z "$relay" ] || alive "$relay" "${log[$t-postgres]}" "$t"
  local tps lat n failed
  # Here-strings, not pipes: awk stops at the first match, and a writer
  # into a pipe it has left would die of SIGPIPE, ending the script
  # (pipefail) silently before the failure below could be reported.
  tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
  lat=$(awk '/^latency average = / {print $4; exit}' <<<"$out")
  n=$(awk -F': ' '/^number of transactions actually processed:/ {split($2, a, "/"); print a[1]; exit}' <<<"$out")
  failed=$(awk -F': ' '/^number of failed transactions:/ {split($2, a, " "); print a[1]; exit}' <<<"$out")
  if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ -z "$n" ] || [ "${failed:-0}" -ne 0 ]; then
    echo "$out" | redact | tail -n 30 >&2
    die "pgbench ${pg_flags[$w]} through $t failed (exit status $rc, ${failed:-?} failed transactions)" "${log[$t-postgres]}" "${log[pg]}"
  fi
  if [ "$t" = broker ] || [ "$t" = broker-unix ]; then
    # Connections the broker was sent: each client's, or one per
    # transaction with -C, plus pgbench's own first one.
    local c=$clients
    [[ $w != pg-SC ]] || c=$n
    sent_conns[postgres]=$((${sent_conns[postgres]:-0} + c + 1))
  fi
  local rcpu=-
  [ -z "$relay" ] || rcpu=$(cpu_per "$r0" "$r1" "$n")
  if [ "$round" -eq 0 ]; then
    printf '%-8s %-8s warm-up %ss: %d transactions\n' "$w" "$t" "$secs" "$n" | tee -a "$lines"
  else
    printf '%s\t%s\t%s\t%s\t%s\t-\t%s\t0\t%s\t-\n' "$w" "$t" "$round" "$tps" "$lat" "$n" "$rcpu" >>"$runs"
    printf '%-8s %-8s %ss: %9.0f tps  latency avg %7.3f ms  %8d transactions  relay cpu %s µs/tx\n' \
      "$w" "$t" "$secs" "$tps" "$lat" "$n" "$rcpu" | tee -a "$lines"
  fi
}

# redis_run TARGET ROUND REQUESTS: one redis-benchmark run of get and set;
# ROUND 0 is a warm-up, not recorded. Sets last_rps to the slower test's
# req/s.
last_rps=
redis_run() {
  local t=$1 round=$2 n=$3 relay=${pid[$1-redis]}
  local args=(-h 127.0.0.1 -p "${port[$t-redis]}" -c "$redis_clients" -n "$n" -t "get,set" --csv)
  local auth
  read -r -a auth <<<"$(redis_auth "$t")"
  [ "$round" -eq 0 ] || grep -qF -- "redis $t:" "$cmds" || echo "redis $t: redis-benchmark ${auth[*]:+${auth[*]} }${args[*]}" | redact >>"$cmds"
  local r0 r1 w0 w1 out rc=0
  r0=${relay:+$(ticks "$relay")}
  w0=$(wakeups "${pid[redis]}")
  out=$(redis-benchmark "${auth[@]}" "${args[@]}" 2>"$tmp/redis-benchmark.err") || rc=$?
  w1=$(wakeups "${pid[redis]}")
  r1=${relay:+$(ticks "$relay")}
  [ -z "$relay" ] || alive "$relay" "${log[$t-redis]}" "$t"
  local get set
  get=$(echo "$out" | awk -F'","' '$1 == "\"GET" {print $2, $5, $7}' | tr -d '"')
  set=$(echo "$out" | awk -F'","' '$1 == "\"SET" {print $2, $5, $7}' | tr -d '"')
  if [ "$rc" -ne 0 ] || [ -z "$get" ] || [ -z "$set" ]; then
    echo "$out" | tail -n 10 >&2
    redact <"$tmp/redis-benchmark.err" | tail -n 10 >&2
    die "redis-benchmark through $t failed (exit status $rc)" "${log[$t-redis]}" "${log[redis]}"
  fi
  # Each test opens its own clients.
  [ "$t" != broker ] || sent_conns[redis]=$((${sent_conns[redis]:-0} + 2 * redis_clients))
  local rcpu=-
  [ -z "$relay" ] || rcpu=$(cpu_per "$r0" "$r1" $((2 * n)))
  local wake
  wake=$(awk -v a="$w0" -v b="$w1" -v n=$((2 * n)) 'BEGIN {printf "%.3f", (b - a) / n}')
  last_rps=$(awk -v a="${get%% *}" -v b="${set%% *}" 'BEGIN {print (a < b) ? a : b}')
  local test
  for test in get set; do
    local v rps p50 p99
    [ "$test" = get ] && v=$get || v=$set
    read -r rps p50 p99 <<<"$v"
    if [ "$round" -eq 0 ]; then
      printf 'redis-%s %-8s warm-up: %9.0f req/s, %d requests\n' "$test" "$t" "$rps" "$n" | tee -a "$lines"
    else
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t0\t%s\t%s\n' "redis-$test" "$t" "$round" "$rps" "$p50" "$p99" "$n" "$rcpu" "$wake" >>"$runs"
      printf 'redis-%s %-8s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  %8d requests  relay cpu %s µs/req, server wake-ups %s/req (get and set)\n' \
        "$test" "$t" "$rps" "$p50" "$p99" "$n" "$rcpu" "$wake" | tee -a "$lines"
    fi
  done
}

# rotated ROUND: the targets, starting with the ROUND-th, so that no
# target always runs first or last.
rotated() {
  local k=$((($1 - 1) % ${#order[@]})) i
  for i in $(seq 0 $((${#order[@]} - 1))); do echo "${order[$(((k + i) % ${#order[@]}))]}"; done
}

echo
echo "== runs"
echo "postgres: pgbench -c $clients -j $jobs -T $dur_s (-S, TPC-B-like, -S -C, -S -R $pg_rate); redis: redis-benchmark -t get,set -c $redis_clients;" \
  "$rounds round(s), targets alternating; warm-up ${warm_s}s per target and workload, not recorded" | tee -a "$lines"
if db postgres && [ "$warm_s" -gt 0 ]; then
  for w in "${pg_workloads[@]}"; do for t in "${order[@]}"; do pg_run "$w" "$t" 0; done; done
  ! has broker || pg_run pg-SC broker-unix 0
fi
if db redis; then
  # The warm-up is the calibration too: N such that each test (get, set)
  # through haproxy (or the first target) lasts about DURATION.
  cal=haproxy
  has haproxy || cal=${order[0]}
  declare -A warm_rps
  if [ -z "$redis_requests" ] || [ "$warm_s" -gt 0 ]; then
    for t in "${order[@]}"; do
      redis_run "$t" 0 50000
      warm_rps[$t]=$last_rps
    done
  fi
  if [ -z "$redis_requests" ]; then
    redis_requests=$(awk -v r="${warm_rps[$cal]}" -v d="$dur_s" 'BEGIN {n = int(r * d / 1000) * 1000; print (n < 10000) ? 10000 : n}')
    echo "redis: -n $redis_requests per test (from $cal's warm-up, $(printf '%.0f' "${warm_rps[$cal]}") req/s)" | tee -a "$lines"
  fi
fi
read -r busy0 idle0 steal0 <<<"$(cpu_times)"
for round in $(seq 1 "$rounds"); do
  [ "$rounds" -eq 1 ] || echo "-- round $round of $rounds" | tee -a "$lines"
  mapfile -t round_order < <(rotated "$round")
  if db postgres; then
    for w in "${pg_workloads[@]}"; do for t in "${round_order[@]}"; do pg_run "$w" "$t" "$round"; done; done
    # The broker's listener on a Unix socket, where the kernel names the
    # peer: what -C costs without the scan of /proc a TCP caller needs.
    ! has broker || pg_run pg-SC broker-unix "$round"
  fi
  if db redis; then
    for t in "${round_order[@]}"; do redis_run "$t" "$round" "$redis_requests"; done
  fi
done
read -r busy1 idle1 steal1 <<<"$(cpu_times)"
cpu_share=$(awk -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) -v s=$((steal1 - steal0)) \
  'BEGIN {t = b + i + s; if (t > 0) printf "busy %.0f%%, idle %.0f%%, stolen by the hypervisor %.0f%%", 100 * b / t, 100 * i / t, 100 * s / t; else print "-"}')
echo

# median [FORMAT]: the median of the numbers on stdin, one a line, with
# the lowest and highest after it when FORMAT is "range"; - if none.
median() {
  sort -g | awk -v f="${1:-}" '{v[NR] = $1} END {
    if (!NR) { print "-"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    if (f == "range") printf "%.2f, %.2f–%.2f\n", m, v[1], v[NR]; else print m
  }'
}
# med WORKLOAD TARGET COLUMN: the median of COLUMN (4 rate, 5 latency, 6
# p99, 9 relay cpu, 10 server wake-ups) over the rounds; - if none.
med() {
  awk -F'\t' -v w="$1" -v t="$2" -v k="$3" '$1 == w && $2 == t && $k != "-" {print $k}' "$runs" | median
}
# paired WORKLOAD TARGET BASE: TARGET's rate over BASE's in each round
# (the two ran minutes apart at most, so a slow spell of the machine
# weighs on both): "median, lowest–highest" over the rounds; - if none.
paired() {
  awk -F'\t' -v w="$1" -v t="$2" -v b="$3" '$1 == w && $2 == t {x[$3] = $4} $1 == w && $2 == b {y[$3] = $4}
    END {for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r]}' "$runs" | median range
}
# range WORKLOAD TARGET: lowest–highest rate over the rounds.
range() {
  awk -F'\t' -v w="$1" -v t="$2" '$1 == w && $2 == t {print $4}' "$runs" | sort -g |
    awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR) printf "%.0f–%.0f", lo, hi; else print "-"}'
}
# num FORMAT VALUE: VALUE printed with FORMAT, - as is.
num() { if [ "$2" = - ]; then echo -; else awk -v f="$1" -v v="$2" 'BEGIN {printf f, v}'; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b}'; }
# hwm PID: VmHWM in KiB; - when not running.
hwm() { if [ -n "$1" ] && [ -r "/proc/$1/status" ]; then awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; else echo -; fi; }
rss() { if [ -n "$1" ] && [ -r "/proc/$1/status" ]; then awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; else echo -; fi; }
mib() { if [ "$1" = - ]; then echo -; else awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; fi; }
# mibs KIB: "N.N MiB", or - when not measured.
mibs() { if [ "$1" = - ]; then echo -; else echo "$(mib "$1") MiB"; fi; }

# The relays' memory, before they stop: peak (VmHWM) and now (VmRSS).
broker_hwm=$(hwm "${pid[broker]}") broker_rss=$(rss "${pid[broker]}") haproxy_hwm=$(hwm "${pid[haproxy]}")
declare -A gorelay_hwm=([postgres]=$(hwm "${pid[gorelay-postgres]}") [redis]=$(hwm "${pid[gorelay-redis]}"))

# Redis counts every error reply it sent (an unauthenticated or refused
# command among them): none is allowed.
redis_errors=0
if db redis; then
  redis_errors=$(REDISCLI_AUTH=$redis_pass redis-cli --no-auth-warning -h 127.0.0.1 -p "${port[redis]}" --user "$redis_user" INFO stats |
    tr -d '\r' | awk -F: '$1 == "total_error_replies" {print $2}')
fi

[ -z "${pid[broker]}" ] || stop "${pid[broker]}"
[ -z "${pid[haproxy]}" ] || stop "${pid[haproxy]}"
# gorelay's own count at exit: connections relayed, and closed because the
# upstream could not be dialled.
declare -A gorelay_counts
for d in postgres redis; do
  [ -n "${pid[gorelay-$d]}" ] || continue
  stop "${pid[gorelay-$d]}"
  gorelay_counts[$d]=$(sed -n 's/^tcprelay: \([0-9]* connections relayed.*\)/\1/p' "${log[gorelay-$d]}" | tail -n 1)
done

# Every connection through the broker was a decision, committed before it
# was relayed: its allow rows per credential against the connections it
# was sent (counted from below: pgbench's -C count is of completed
# transactions).
declare -A allow deny errs
audit_ok=1
if has broker; then
  for d in postgres redis; do
    db "$d" || continue
    cred=$pg_cred
    [ "$d" = postgres ] || cred=$redis_cred
    counts=$("$bin" audit query --db "$dir/audit.db" --credential "$cred" --kind decision --format json |
      grep -o '"decision":"[a-z]*"' | cut -d'"' -f4 | sort | uniq -c) || die "cannot query the broker's audit database $dir/audit.db"
    count() { echo "$counts" | awk -v d="$1" '$2 == d {print $1; f = 1} END {if (!f) print 0}'; }
    allow[$d]=$(count allow) deny[$d]=$(count deny) errs[$d]=$(count error)
    [ "${allow[$d]}" -ge "${sent_conns[$d]:-0}" ] && [ "${deny[$d]}" -eq 0 ] || audit_ok=
  done
fi

ts=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
summary=bench/results/db-$ts.txt
pf() { awk -v ok="$1" 'BEGIN {print ok ? "PASS" : "FAIL"}'; }
# target NAME BROKER LIMIT TEXT: a PASS/FAIL line for BROKER ≥ LIMIT, n/a
# when either is missing.
target_ge() {
  if [ "$2" = - ] || [ "$3" = - ]; then
    printf '  n/a   %s: not measured (TARGETS=%s, DBS=%s)\n' "$1" "${order[*]}" "${dbs[*]}"
    return
  fi
  printf '  %s  %s: %s\n' "$(pf "$(awk -v b="$2" -v l="$3" 'BEGIN {print (b >= l)}')")" "$1" "$4"
}
{
  echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, ${dur_s}s per run, $rounds round(s), medians)"
  [ "$rounds" -ge 3 ] || echo "(fewer than 3 rounds: indicative only)"
  echo "broker: $broker_version"
  echo "$tools_line"
  echo "load average before: $load_before"
  echo "CPU time during the rounds: $cpu_share"
  echo
  # label LABEL: LABEL padded to 28 columns (printf pads bytes; µ is 2).
  label() { if [[ $1 == *µ* ]]; then printf '%-29s' "$1"; else printf '%-28s' "$1"; fi; }
  cols=' %11s %11s %11s %11s %15s %15s %16s %14s %15s\n'
  label ""
  # shellcheck disable=SC2059
  printf "$cols" direct haproxy gorelay broker broker/haproxy broker/gorelay gorelay/haproxy broker/direct haproxy/direct
  # row LABEL WORKLOAD COLUMN FORMAT [noratio]: noratio leaves out the
  # ratios to direct, which has no relay.
  row() {
    local d h g b
    d=$(med "$2" direct "$3") h=$(med "$2" haproxy "$3") g=$(med "$2" gorelay "$3") b=$(med "$2" broker "$3")
    local rd rh
    rd=$(ratio "$b" "$d") rh=$(ratio "$h" "$d")
    [ -z "${5:-}" ] || rd=- rh=-
    label "$1"
    # shellcheck disable=SC2059
    printf "$cols" "$(num "$4" "$d")" "$(num "$4" "$h")" "$(num "$4" "$g")" "$(num "$4" "$b")" \
      "$(ratio "$b" "$h")" "$(ratio "$b" "$g")" "$(ratio "$g" "$h")" "$rd" "$rh"
  }
  rangerow() {
    [ "$rounds" -gt 1 ] || return 0
    local t r line
    line=$(printf '%-28s' "$1")
    for t in direct haproxy gorelay broker; do
      r=$(range "$2" "$t")
      # printf pads bytes: the en dash is 3 bytes wide, 1 column.
      case $r in *–*) line+=$(printf ' %13s' "$r") ;; *) line+=$(printf ' %11s' "$r") ;; esac
    done
    echo "$line"
  }
  if db postgres; then
    for w in "${pg_workloads[@]}"; do
      case $w in pg-S) name="pg -S" ;; pg-tpcb) name="pg TPC-B" ;; pg-SC) name="pg -S -C" ;; pg-R) name="pg -S -R $pg_rate" ;; esac
      row "$name TPS" "$w" 4 %.0f
      rangerow "$name TPS range" "$w"
      row "$name latency avg ms" "$w" 5 %.3f
      row "$name relay CPU µs/tx" "$w" 9 %.1f noratio
    done
  fi
  if db redis; then
    for test in get set; do
      row "redis $test req/s" "redis-$test" 4 %.0f
      rangerow "redis $test req/s range" "redis-$test"
      row "redis $test p50 ms" "redis-$test" 5 %.3f
      row "redis $test p99 ms" "redis-$test" 6 %.3f
    done
    row "redis relay CPU µs/req" redis-get 9 %.1f noratio
    row "redis server wake-ups/req" redis-get 10 %.3f
  fi
  echo "relay CPU: the user + system time of haproxy, gorelay (its process for that database) or the broker per transaction or request (redis: over get and set together)"
  ! db redis || echo "redis server wake-ups: redis-server's main thread woken from epoll_wait (voluntary context switches) per request, get and set together"
  echo
  echo "targets:"
  if db postgres; then
    b=$(med pg-S broker 4) h=$(med pg-S haproxy 4)
    target_ge "pg -S TPS" "$b" "$h" "broker $(num %.0f "$b") ≥ haproxy $(num %.0f "$h") (ratio $(ratio "$b" "$h"); per round $(paired pg-S broker haproxy))"
    b=$(med pg-tpcb broker 4) h=$(med pg-tpcb haproxy 4)
    target_ge "pg TPC-B TPS" "$b" "$h" "broker $(num %.0f "$b") ≥ haproxy $(num %.0f "$h") (ratio $(ratio "$b" "$h"); per round $(paired pg-tpcb broker haproxy))"
    b=$(med pg-SC broker 4) d=$(med pg-SC direct 4)
    l=-
    [ "$d" = - ] || l=$(awk -v d="$d" -v m="$min_c_vs_direct" 'BEGIN {print m * d}')
    target_ge "pg -S -C TPS" "$b" "$l" "broker $(num %.0f "$b") ≥ $min_c_vs_direct × direct $(num %.0f "$d") = $(num %.0f "$l") (ratio $(ratio "$b" "$d"); haproxy $(num %.0f "$(med pg-SC haproxy 4)"))"
    if has broker; then
      u=$(med pg-SC broker-unix 4)
      printf '  info: pg -S -C through the broker'"'"'s listener on a Unix socket (the kernel names the peer: no search for the process holding the client socket): %s TPS = %s × direct (per round %s), %s µs broker CPU/tx (on TCP %s)\n' \
        "$(num %.0f "$u")" "$(ratio "$u" "$d")" "$(paired pg-SC broker-unix direct)" "$(num %.1f "$(med pg-SC broker-unix 9)")" "$(num %.1f "$(med pg-SC broker 9)")"
    fi
  fi
  if db redis; then
    for test in get set; do
      b=$(med "redis-$test" broker 4) h=$(med "redis-$test" haproxy 4)
      target_ge "redis $test req/s" "$b" "$h" "broker $(num %.0f "$b") ≥ haproxy $(num %.0f "$h") (ratio $(ratio "$b" "$h"); per round $(paired "redis-$test" broker haproxy))"
    done
  fi
  if [ "$broker_hwm" != - ]; then
    ok=$(awk -v k="$broker_hwm" -v m="$max_rss_mib" 'BEGIN {print (k / 1024 < m)}')
    printf '  %s  broker RSS: peak (VmHWM) %s MiB < %s MiB; after the runs (VmRSS) %s MiB; haproxy peak %s MiB\n' \
      "$(pf "$ok")" "$(mib "$broker_hwm")" "$max_rss_mib" "$(mib "$broker_rss")" "$(mib "$haproxy_hwm")"
  else
    printf '  n/a   broker RSS: not measured (TARGETS=%s)\n' "${order[*]}"
  fi
  if has broker; then
    for d in postgres redis; do
      db "$d" || continue
      printf '  %s  audit %s: %d allow decision rows ≥ %d connections opened through the broker (warm-ups and check included); %d deny, %d error\n' \
        "$(pf "$((${allow[$d]} >= ${sent_conns[$d]:-0} && ${deny[$d]} == 0))")" "$d" "${allow[$d]}" "${sent_conns[$d]:-0}" "${deny[$d]}" "${errs[$d]}"
    done
  fi
  # The floor, for information: what a bare Go relay costs, so that the
  # broker's gap to haproxy splits into Go's relay and the broker's own
  # work (attestation, decision, audit, login, and Redis's command reader).
  if has gorelay; then
    if db postgres; then
      for w in pg-S pg-tpcb; do
        case $w in pg-S) name="pg -S" ;; pg-tpcb) name="pg TPC-B" ;; esac
        g=$(med "$w" gorelay 4) h=$(med "$w" haproxy 4) b=$(med "$w" broker 4)
        printf '  floor: a bare Go io.Copy relay (gorelay) reaches %s TPS = %s × haproxy on %s, using %s µs CPU/tx (haproxy %s, broker %s); the broker reaches %s × gorelay\n' \
          "$(num %.0f "$g")" "$(ratio "$g" "$h")" "$name" "$(num %.1f "$(med "$w" gorelay 9)")" "$(num %.1f "$(med "$w" haproxy 9)")" \
          "$(num %.1f "$(med "$w" broker 9)")" "$(ratio "$b" "$g")"
      done
    fi
    if db redis; then
      gg=$(med redis-get gorelay 4) gs=$(med redis-set gorelay 4)
      printf '  floor: a bare Go io.Copy relay (gorelay) reaches %s get / %s set req/s = %s / %s × haproxy on redis, using %s µs CPU/req (haproxy %s, broker %s); the broker reaches %s / %s × gorelay\n' \
        "$(num %.0f "$gg")" "$(num %.0f "$gs")" "$(ratio "$gg" "$(med redis-get haproxy 4)")" "$(ratio "$gs" "$(med redis-set haproxy 4)")" \
        "$(num %.1f "$(med redis-get gorelay 9)")" "$(num %.1f "$(med redis-get haproxy 9)")" "$(num %.1f "$(med redis-get broker 9)")" \
        "$(ratio "$(med redis-get broker 4)" "$gg")" "$(ratio "$(med redis-set broker 4)" "$gs")"
    fi
    rss_line=
    for d in postgres redis; do
      db "$d" || continue
      rss_line+="${rss_line:+, }$(mibs "${gorelay_hwm[$d]}") ($d)"
    done
    echo "  floor: gorelay's peak RSS (VmHWM, one process per database) $rss_line; haproxy $(mibs "$haproxy_hwm"), broker $(mibs "$broker_hwm") (one process each, both databases)"
  fi
  ! db redis || echo "redis error replies (total_error_replies, every target): $redis_errors"
  for d in postgres redis; do
    [ -z "${gorelay_counts[$d]:-}" ] || echo "gorelay $d: ${gorelay_counts[$d]}"
  done
  if has broker; then
    echo "broker log: $(grep -c 'level=ERROR' "${log[broker]}" || true) error and $(grep -c 'level=WARN' "${log[broker]}" || true) warning lines; TCP callers found by $(grep -o 'tcp_lookup=[a-z]*' "${log[broker]}" | head -n 1 | cut -d= -f2) (attestors.unix.tcp_lookup ${TCP_LOOKUP:-auto})"
  fi
  echo
  echo "commands (passwords redacted; PGSSLMODE=disable, no password file):"
  sed 's/^/  /' "$cmds"
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

if [ "${redis_errors:-0}" != 0 ]; then
  die "redis-server sent $redis_errors error replies during the runs" "${log[broker]:-}" "${log[redis]:-}"
fi
[ -n "$audit_ok" ] || die "the broker's audit database holds fewer allow rows than connections it was sent, or a deny row (see the audit lines)" "${log[broker]}"

#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing from Debian's
# packages, checks formatting and vet, builds the static binary, runs every
# test with the race detector, then runs each fuzz target for a few seconds.
# Each stage is announced with the time since the start ("== [2:05] ...") and
# says how long it took; the long compiles report progress every 15s, and a
# summary of the stages' times ends the run. From a cold build cache on two
# cores the suite takes about 11 minutes, two thirds of it compiling (the
# same dependencies for vet, without cgo, with the race detector, and with
# the fuzzer's instrumentation).
#
#   FUZZTIME=100000x scripts/test.sh   # longer fuzzing
#   SKIP_FUZZ=1 scripts/test.sh        # tests only
#
# Fuzzing runs a count of executions rather than a duration: with a duration,
# Go 1.26's fuzz coordinator can report a spurious "context deadline
# exceeded" failure at the deadline on a loaded machine (go.dev/issue/75804,
# fixed in Go 1.27).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20000x}

# clock SECONDS prints m:ss.
clock() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }
t0=$SECONDS
stage_name= stage_t0=$SECONDS summary=
# stage TITLE [WHY]: ends the current stage, printing its time, and announces
# the next with the time since the start.
stage() {
  stage_end
  stage_name=$1 stage_t0=$SECONDS
  echo "== [$(clock $((SECONDS - t0)))] $1${2:+ ($2)}"
}
stage_end() {
  [ -n "$stage_name" ] || return 0
  local took; took=$(clock $((SECONDS - stage_t0)))
  echo "   $stage_name: $took"
  summary+=$(printf '  %6s  %s' "$took" "$stage_name")$'\n'
  stage_name=
}
# progress CMD...: runs a `go build -v` command, which names each package
# as it compiles it; shows a count every 15s rather than every name, and
# passes everything else (compile errors) through.
progress() {
  "$@" 2>&1 | {
    n=0 last=$SECONDS
    while IFS= read -r line; do
      if [[ $line =~ ^[A-Za-z0-9._/~+-]+$ ]]; then
        n=$((n + 1))
        if ((SECONDS - last >= 15)); then
          last=$SECONDS
          echo "   [$(clock $((SECONDS - t0)))] $n packages compiled, latest $line"
        fi
      else
        echo "$line"
      fi
    done
    echo "   $n packages compiled"
  }
}

# need CMD PACKAGE: install PACKAGE from Debian when CMD is missing.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need go golang-go
need gcc gcc            # the race detector needs cgo
need mount mount
need unshare util-linux
need sqlite3 sqlite3    # tamper tests edit copies of the audit database
need make make
need curl curl
need python3 python3    # a Python HTTP client must keep working against the socket API
need prlimit util-linux # a broker under a descriptor limit
need file file
need mariadbd mariadb-server     # MySQL injection listener tests
need mariadb mariadb-client      # … and the client they drive
need redis-server redis-server   # Redis injection listener tests
need redis-cli redis-tools       # … and the client they drive
need chromium chromium           # audit report tests render the HTML in headless Chromium
need systemd-analyze systemd     # deploy: verify the unit; systemd-sysusers and -tmpfiles apply its entries
need setpriv util-linux          # deploy: the broker run with the unit's user and capabilities
if [ ${#missing[@]} -gt 0 ]; then
  stage "installing: ${missing[*]}" "from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stage "go mod download" "the first run fetches every module, silently"
go mod download

stage "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

stage "go build" "the first run compiles every dependency: a few minutes"
progress go build -v ./...

stage "go vet"
go vet ./...

stage "static build" "every package again, without cgo"
progress env CGO_ENABLED=0 go build -v -o bin/credbroker ./cmd/credbroker
if command -v file >/dev/null && ! file bin/credbroker | grep -q 'statically linked'; then
  echo "bin/credbroker is not statically linked"; exit 1
fi

stage "go build -race" "the first run compiles the runtime and every dependency again, with the race detector: a few minutes"
progress go build -race -v ./...

# Test peers that are built from source (a Vault server, MinIO) go to a
# cache outside the clone and are reused; each script under scripts/peers/
# builds its peer when the cache lacks it and prints where it is.
export CREDBROKER_PEERS=${CREDBROKER_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/credbroker-peers}
for peer in scripts/peers/*.sh; do
  [ -e "$peer" ] || continue
  stage "test peer $(basename "$peer" .sh)" "built once into $CREDBROKER_PEERS, then reused"
  bash "$peer"
done

stage "go test -race" "one line per package as it finishes; the cmd/credbroker end-to-end tests take the longest"
go test -race -count=1 -timeout 15m ./...

if [ -z "${SKIP_FUZZ:-}" ]; then
  stage "fuzz" "$FUZZTIME executions of each target, each target compiled with coverage first"
  # Every Fuzz function in the tree, found rather than listed, so a new
  # target is fuzzed without editing this script.
  grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
    pkg=./$(dirname "${f#./}")
    for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
      echo "-- [$(clock $((SECONDS - t0)))] $pkg $fn"
      go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/fuzz-$$.log 2>&1 || { cat /tmp/fuzz-$$.log; exit 1; }
    done
  done
fi
stage_end
echo "== [$(clock $((SECONDS - t0)))] all tests passed"
printf '%s' "$summary"
echo "  $(printf '%6s' "$(clock $((SECONDS - t0)))")  in all"

#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing from Debian's
# packages, checks formatting and vet, builds the static binary, runs every
# test with the race detector, then runs each fuzz target for a few seconds.
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
need file file
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== static build"
CGO_ENABLED=0 go build -o bin/credbroker ./cmd/credbroker
if command -v file >/dev/null && ! file bin/credbroker | grep -q 'statically linked'; then
  echo "bin/credbroker is not statically linked"; exit 1
fi

echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

if [ -z "${SKIP_FUZZ:-}" ]; then
  echo "== fuzz ($FUZZTIME each)"
  # Every Fuzz function in the tree, found rather than listed, so a new
  # target is fuzzed without editing this script.
  grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
    pkg=./$(dirname "${f#./}")
    for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
      echo "-- $pkg $fn"
      go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/fuzz-$$.log 2>&1 || { cat /tmp/fuzz-$$.log; exit 1; }
    done
  done
fi
echo "== all tests passed"

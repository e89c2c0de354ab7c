#!/usr/bin/env bash
# Compares the audit package's benchmarks (by default the writer's: Append
# and Writer) of the working tree with those of a git revision, in one run:
# each tree's test binary is built once, then the two run alternately COUNT
# times, so that both see the same machine. Prints a benchstat comparison when
# benchstat can be run, else both raw outputs; saves them under bench/results/.
#
#   scripts/bench-audit.sh                         (REV: origin/main)
#   REV=d9bdc4f scripts/bench-audit.sh
#   REV=HEAD~3 COUNT=10 BENCH=. scripts/bench-audit.sh
#
# Environment: REV (origin/main; required when there is none), BENCH
# (regexp of top-level benchmark names, 'Append$|Writer$'; '.' adds the
# 1M-row query and verify benchmarks, which build a 1M-row database once),
# COUNT (6 runs per tree, benchstat's minimum for a confidence interval),
# BENCHTIME (1s), GO (go), BENCHSTAT (benchstat command; default: benchstat
# on PATH, else `go run golang.org/x/perf/cmd/benchstat@latest`).
# Benchmarks are compared by name: only those present in both trees run.
set -euo pipefail
cd "$(dirname "$0")/.."

go=${GO:-go}
bench=${BENCH:-'Append$|Writer$'}
count=${COUNT:-6}
benchtime=${BENCHTIME:-1s}
pkg=audit

die() {
  echo "bench-audit: $*" >&2
  exit 1
}

[[ $count =~ ^[1-9][0-9]*$ ]] || die "COUNT=$count: want a whole number ≥ 1"
rev=${REV:-}
if [ -z "$rev" ]; then
  git rev-parse -q --verify 'origin/main^{commit}' >/dev/null ||
    die "no origin/main here: give the revision to compare with, e.g. REV=HEAD~3 or REV=d9bdc4f"
  rev=origin/main
fi
commit=$(git rev-parse -q --verify "$rev^{commit}") || die "REV=$rev: not a commit"
short=$(git rev-parse --short "$commit")
base_name=$rev
[ "$rev" = "$short" ] || base_name="$rev ($short)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/credbroker-bench-audit.XXXXXX")
worktree=
cleanup() {
  if [ -n "$worktree" ]; then
    git worktree remove --force "$worktree" || echo "bench-audit: could not remove the worktree $worktree" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== machine"
uptime
echo "nproc: $(nproc)"
echo "comparing ./$pkg benchmarks matching '$bench': $base_name against the working tree ($(git describe --always --dirty)); $count alternating runs each, -benchtime $benchtime"
echo

# The base revision, checked out in a temporary worktree (removed at exit).
git worktree add --quiet --detach "$tmp/base" "$commit"
worktree=$tmp/base

# build DIR OUT: the audit package's test binary of the tree at DIR.
build() {
  (cd "$1" && "$go" test -c -o "$2" "./$pkg") >"$tmp/build.log" 2>&1 || {
    cat "$tmp/build.log" >&2
    die "the $pkg tests of $1 do not build (if others are editing the tree, retry in a minute)"
  }
}
echo "building the test binaries"
build "$worktree" "$tmp/base.test"
build "$PWD" "$tmp/tree.test"

# names BIN: the top-level benchmarks of BIN matching $bench.
names() {
  (cd "$pkg" && "$1" -test.list '^Benchmark') | grep -E "$bench" | sort || true
}
names "$tmp/base.test" >"$tmp/base.names"
names "$tmp/tree.test" >"$tmp/tree.names"
common=$(comm -12 "$tmp/base.names" "$tmp/tree.names")
only_base=$(comm -23 "$tmp/base.names" "$tmp/tree.names")
only_tree=$(comm -13 "$tmp/base.names" "$tmp/tree.names")
[ -z "$only_base" ] || echo "only in $short, not run: $(paste -sd" " <<<"$only_base")"
[ -z "$only_tree" ] || echo "only in the working tree, not run: $(paste -sd" " <<<"$only_tree")"
[ -n "$common" ] || die "no benchmark matching '$bench' in both trees"
echo "running: $(paste -sd" " <<<"$common")"
pattern="^($(paste -sd'|' <<<"$common"))\$"
echo

# run WHICH: one run of every common benchmark with WHICH's binary, from its
# own package directory (so that testdata is its own), appended to WHICH.txt.
run() {
  local dir=$PWD/$pkg
  [ "$1" = tree ] || dir=$worktree/$pkg
  (cd "$dir" && "$tmp/$1.test" -test.run '^$' -test.bench "$pattern" -test.benchmem \
    -test.benchtime "$benchtime" -test.count 1) >"$tmp/run.txt" 2>&1 || {
    cat "$tmp/run.txt" >&2
    die "the $1 benchmarks failed"
  }
  cat "$tmp/run.txt" >>"$tmp/$1.txt"
  grep '^Benchmark' "$tmp/run.txt" | sed "s/^/$1 /"
}

# Alternate, swapping the order every run (base tree, tree base, …), so that
# neither always runs on a machine the other has just warmed or loaded.
echo "== runs"
for i in $(seq 1 "$count"); do
  if ((i % 2)); then
    run base
    run tree
  else
    run tree
    run base
  fi
done
echo

ts=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
out=bench/results/audit-$ts
cp "$tmp/base.txt" "$out-$short.txt"
cp "$tmp/tree.txt" "$out-tree.txt"

if [ -n "${BENCHSTAT:-}" ]; then
  read -r -a benchstat <<<"$BENCHSTAT"
elif command -v benchstat >/dev/null; then
  benchstat=(benchstat)
else
  benchstat=("$go" run golang.org/x/perf/cmd/benchstat@latest)
fi
{
  echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $count runs each, -benchtime $benchtime)"
  echo "base: $base_name; tree: the working tree ($(git describe --always --dirty))"
  if (cd "$tmp" && "${benchstat[@]}" "$short=base.txt" "tree=tree.txt") >"$tmp/benchstat.txt" 2>"$tmp/benchstat.err"; then
    cat "$tmp/benchstat.txt"
  else
    msg=$(tail -n 1 "$tmp/benchstat.err")
    echo "(${benchstat[*]} failed${msg:+: $msg}; the raw outputs follow)"
    echo "-- $short"
    grep '^Benchmark' "$tmp/base.txt"
    echo "-- tree"
    grep '^Benchmark' "$tmp/tree.txt"
  fi
  echo "load average after: $(uptime | sed 's/.*load average: //')"
} | tee "$out.txt"
echo "saved $out.txt, $out-$short.txt and $out-tree.txt"

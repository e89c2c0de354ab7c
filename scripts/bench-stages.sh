#!/usr/bin/env bash
# Runs the benchmarks of each stage of a decision, so that a regression
# shows in the stage it is in: the broker's BenchmarkDecisionStages (attest,
# evaluate, record, decide, decide-parallel, on one broker with a real
# audit log and connections accepted through the unix attestor), and the
# packages' own benchmarks of those stages: attest/unix BenchmarkAttest,
# policies BenchmarkEvaluate and audit BenchmarkCommit. Each runs COUNT
# times; prints a benchstat summary when benchstat is on PATH, else the raw
# lines; saves both under bench/results/.
#
#   scripts/bench-stages.sh
#   COUNT=6 BENCHTIME=2s scripts/bench-stages.sh
#
# Environment: COUNT (3 runs of each benchmark), BENCHTIME (1s), GO (go),
# BENCHSTAT (benchstat command; default: benchstat on PATH, else none).
# Exits non-zero when a benchmark fails or does not build.
set -euo pipefail
cd "$(dirname "$0")/.."

go=${GO:-go}
count=${COUNT:-3}
benchtime=${BENCHTIME:-1s}

# The package and top-level benchmark of each stage, in decision order.
benches=(
  "./broker ^BenchmarkDecisionStages\$"
  "./attest/unix ^BenchmarkAttest\$"
  "./policies ^BenchmarkEvaluate\$"
  "./audit ^BenchmarkCommit\$"
)

die() {
  echo "bench-stages: $*" >&2
  exit 1
}

[[ $count =~ ^[1-9][0-9]*$ ]] || die "COUNT=$count: want a whole number ≥ 1"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/credbroker-bench-stages.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== machine"
uptime
echo "nproc: $(nproc)"
echo "the working tree ($(git describe --always --dirty)); $count runs of each benchmark, -benchtime $benchtime"
echo

echo "== runs"
for b in "${benches[@]}"; do
  read -r pkg pattern <<<"$b"
  echo "-- $pkg $pattern"
  "$go" test -run '^$' -bench "$pattern" -benchmem -benchtime "$benchtime" -count "$count" "$pkg" >"$tmp/run.txt" 2>&1 || {
    cat "$tmp/run.txt" >&2
    die "$pkg $pattern failed (if others are editing the tree, retry in a minute)"
  }
  cat "$tmp/run.txt" >>"$tmp/raw.txt"
  grep '^Benchmark' "$tmp/run.txt"
done
echo

ts=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
out=bench/results/stages-$ts
cp "$tmp/raw.txt" "$out-raw.txt"

benchstat=()
if [ -n "${BENCHSTAT:-}" ]; then
  read -r -a benchstat <<<"$BENCHSTAT"
elif command -v benchstat >/dev/null; then
  benchstat=(benchstat)
fi
{
  echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $count runs each, -benchtime $benchtime)"
  echo "tree: the working tree ($(git describe --always --dirty))"
  if [ ${#benchstat[@]} -eq 0 ]; then
    echo "(no benchstat on PATH; the raw lines follow)"
    grep -E '^(pkg:|Benchmark)' "$tmp/raw.txt"
  elif (cd "$tmp" && "${benchstat[@]}" tree=raw.txt) >"$tmp/benchstat.txt" 2>"$tmp/benchstat.err"; then
    cat "$tmp/benchstat.txt"
  else
    msg=$(tail -n 1 "$tmp/benchstat.err")
    echo "(${benchstat[*]} failed${msg:+: $msg}; the raw lines follow)"
    grep -E '^(pkg:|Benchmark)' "$tmp/raw.txt"
  fi
  echo "load average after: $(uptime | sed 's/.*load average: //')"
} | tee "$out.txt"
echo "saved $out.txt and $out-raw.txt"

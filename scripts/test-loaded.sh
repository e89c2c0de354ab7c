#!/usr/bin/env bash
# The suite on a busy machine: runs `make test` RUNS times in a row with HOGS
# CPU-bound processes running beside it, and prints each run's result,
# duration and load average. No test may depend on the machine's speed, so
# every run must pass. The hogs are killed when the script ends, however it
# ends; each run's full output is kept in a log.
#
#   scripts/test-loaded.sh                  # 3 runs beside 2 hogs
#   RUNS=5 HOGS=4 scripts/test-loaded.sh
#   SKIP_FUZZ=1 scripts/test-loaded.sh      # passed on to scripts/test.sh
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
HOGS=${HOGS:-2}
logs=$(mktemp -d /tmp/test-loaded.XXXXXX)

clock() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

hogs=()
stop_hogs() {
  [ ${#hogs[@]} -gt 0 ] || return 0
  kill "${hogs[@]}" 2>/dev/null
  wait "${hogs[@]}" 2>/dev/null
  hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$HOGS"); do
  sh -c 'while :; do :; done' &
  hogs+=($!)
done
echo "== $HOGS CPU hogs running (pids ${hogs[*]:-none}); logs in $logs"

results=() failed=0
for i in $(seq "$RUNS"); do
  log=$logs/run$i.log
  echo "== run $i of $RUNS (load average $(loadavg)); its stages:"
  t=$SECONDS
  # The stage lines show progress; the whole output goes to the log.
  make test 2>&1 | tee "$log" | grep --line-buffered '^== ' | sed -u 's/^/   /'
  code=${PIPESTATUS[0]}
  took=$(clock $((SECONDS - t)))
  if [ "$code" -eq 0 ]; then
    results+=("run $i: pass in $took (load average $(loadavg))")
  else
    failed=$((failed + 1))
    results+=("run $i: FAIL (exit $code) in $took (load average $(loadavg)); see $log")
    grep -E -B2 -A20 '^(--- FAIL|FAIL|panic:)' "$log" | head -80
  fi
  echo "   ${results[-1]}"
done
stop_hogs

echo "== $RUNS runs beside $HOGS CPU hogs"
printf '   %s\n' "${results[@]}"
[ "$failed" -eq 0 ]

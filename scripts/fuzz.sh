#!/bin/bash
# Runs each libFuzzer target for SECONDS: scripts/fuzz.sh OUT SECONDS TARGET...
# (FUZZ_JOBS of them at a time, one per CPU by default).
# Seeds come from tests/fuzz/corpus/<target>/ (read only); what a run finds
# goes to OUT/corpus/<target>/, a crashing input to OUT/artifacts/. Prints one
# line per target (inputs tried, corpus size) and "N passed, N failed"; exits
# non-zero if any target failed. FUZZ_SEED=N fixes libFuzzer's seed (the
# smoke run in make test does: from an empty OUT corpus, as in CI's clean
# clone, the same sequence of inputs each time, cut wherever SECONDS end;
# make fuzz explores with a new seed each run, printed in each log).
set -u
out=$1 secs=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
passed=0 failed=0 total_runs=0
mkdir -p "$out/artifacts"
# Targets run FUZZ_JOBS at a time (default: one per CPU; each is one process).
jobs=${FUZZ_JOBS:-$(nproc)}
report() {  # report TARGET PID: waits for it, prints its line, counts it
  local t=$1 pid=$2 rc log="$out/$1.log" runs corpus
  wait "$pid"
  rc=$?
  # The targets name their temporary files and state directories by pid.
  rm -rf /dev/shm/mbxfuzz-"$pid"-*
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  runs=${runs:-0}
  total_runs=$((total_runs + runs))
  corpus=$(ls "$out/corpus/$t" | wc -l)
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ok, $runs inputs in ${secs}s, corpus $corpus"
  else
    failed=$((failed + 1))
    echo "fuzz $t: FAILED (exit $rc), $runs inputs; log $log:"
    grep -E "ERROR|SUMMARY|Test unit written|deadly signal|Timeout" "$log" | head -8 | sed 's/^/    /'
  fi
}
names=() pids=()
for t in "$@"; do
  mkdir -p "$out/corpus/$t" "$root/tests/fuzz/corpus/$t"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb guards memory growth.
  "$out/$t" -max_total_time="$secs" ${FUZZ_SEED:+-seed="$FUZZ_SEED"} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t-" "$out/corpus/$t" "$root/tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1 &
  names+=("$t") pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    for i in "${!pids[@]}"; do report "${names[$i]}" "${pids[$i]}"; done
    names=() pids=()
  fi
done
for i in "${!pids[@]}"; do report "${names[$i]}" "${pids[$i]}"; done
echo "fuzz: $total_runs inputs tried"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every test binary with a deadline and prints one summary line:
# "N passed, N failed, N skipped". Exits non-zero on any failure.
#   tests/run.sh [OUT] [--mount-again-under-load] [--extras]
# --mount-again-under-load runs the mount suite a second time beside one
# busy loop per CPU at nice 19: the tests must not depend on timing. With
# --extras it runs once instead, beside the background sanitizer and fuzz
# builds at nice 19 and, once they end, the busy loops (the loaded run is the
# stricter; the ASan run of the suite later is a third schedule), which keeps
# CI near ten minutes.
# It also checks the layer rule (scripts/check-layers.py).
# --extras (implied when CI=true) also runs clang -Wthread-safety -Werror over
# the daemon and library (make thread-safety) and the reliability smokes, and
# folds their counts in: ASan+UBSan and TSan builds (scripts/ci-sanitizers.sh),
# `make fuzz-smoke` and a one-minute `make soak`.
# python3 is $MBX_PYTHON, else /usr/bin/python3, else the first on PATH.
# Each gtest suite runs as MBX_TEST_SHARDS (default 2) gtest shards at once.
# JUnit XML goes to OUT/test-results/.
set -u
out=out under_load=0 extras=0
[ "${CI:-}" = true ] && extras=1
for a in "$@"; do
  case "$a" in
    --mount-again-under-load) under_load=1 ;;
    --extras) extras=1 ;;
    -*) echo "usage: $0 [OUT] [--mount-again-under-load] [--extras]" >&2; exit 2 ;;
    *) out=$a ;;
  esac
done
export MAILBOXFS_BIN="$(cd "$out" && pwd)/mailboxfs"
if [ -z "${MBX_PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then MBX_PYTHON=/usr/bin/python3; else MBX_PYTHON=$(command -v python3); fi
fi
export MBX_PYTHON
# Each gtest suite runs as this many shards at once (see run()).
shards=${MBX_TEST_SHARDS:-2}
results="$out/test-results"
mkdir -p "$results"
pass=0 fail=0 skip=0

# The CPU load: one busy loop per CPU at the lowest priority, run by a
# loader (stopped by its pid: it stops its loops). Given a lock file, the
# loader starts them only once the lock is free: it blocks in flock(1) until
# the processes holding it (the background builds) have all ended.
load_pids=()
start_load() {
  nice -n 19 sh -c 'trap '\''kill $kids 2>/dev/null; exit 0'\'' TERM INT HUP
    kids=
    if [ -n "$1" ]; then flock "$1" true & kids=$!; wait $!; fi
    i=0; while [ "$i" -lt "$2" ]; do (while :; do :; done) & kids="$kids $!"; i=$((i + 1)); done
    wait' sh "${1:-}" "$(nproc)" &
  load_pids+=($!)
}
stop_load() {
  [ ${#load_pids[@]} -eq 0 ] && return
  kill "${load_pids[@]}" 2>/dev/null
  wait "${load_pids[@]}" 2>/dev/null
  load_pids=()
}
trap stop_load EXIT
trap 'stop_load; exit 130' INT TERM

# run BINARY NAME [SHARDS]: runs one suite, shows each test's verdict and
# every failure in full (expected and actual values), and adds its counts to
# the totals. With SHARDS > 1 the suite runs as that many gtest shards at once
# (GTEST_TOTAL_SHARDS, GTEST_SHARD_INDEX): its tests mostly wait for daemons
# and other processes, so the shards overlap those waits, and each is load
# for the others. A shard's verdicts are shown when it ends.
run() {
  local bin=$1 name=$2 shards=${3:-1} i log rc
  local logs=() pids=()
  if [ "$shards" -le 1 ]; then
    echo "== $name (at ${SECONDS} s)"
    log=$(mktemp)
    timeout -k 10 1200 "$bin" --gtest_color=no --gtest_output="xml:$results/$name.xml" 2>&1 | tee "$log" | verdicts
    count "$name" "${PIPESTATUS[0]}" "$log"
    return
  fi
  echo "== $name ($shards shards, at ${SECONDS} s)"
  for ((i = 0; i < shards; i++)); do
    logs+=("$(mktemp)")
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i timeout -k 10 1200 "$bin" --gtest_color=no \
      --gtest_output="xml:$results/$name-shard$i.xml" >"${logs[$i]}" 2>&1 &
    pids+=($!)
  done
  for ((i = 0; i < shards; i++)); do
    wait "${pids[$i]}"
    rc=$?
    verdicts <"${logs[$i]}"
    count "$name shard $i" "$rc" "${logs[$i]}"
  done
}

# count NAME STATUS LOG: adds a gtest run's counts to the totals (a non-zero
# exit with no failure reported is one failure), and removes LOG.
count() {
  local p f s
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$3" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$3" | tail -1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$3" | tail -1)
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
  if [ "$2" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
    echo "$1 exited with status $2 before reporting (crash or deadline)"
    fail=$((fail + 1))
  fi
  rm -f "$3"
}

# The verdict lines of a gtest log, with each failure's text.
verdicts() {
  awk '/^\[ +(OK|FAILED|SKIPPED) +\]/ { block = 0; print; next }
       /: Failure$|error:/ { block = 1 }
       block { print }'
}

# With the extras, the sanitizer and fuzz builds (the longest part of CI)
# run in the background at nice 19 while the unit and mount suites run:
# they overlap in time, and the mount suite meets a real compile load too.
# They hold a lock on $bg_lock (inherited, released when the last of their
# processes ends): what waits for their end (start_load) blocks on it.
bg_build= bg_lock="$results/background-build.lock"
if [ "$extras" -eq 1 ]; then
  exec {lock_fd}>"$bg_lock"
  flock "$lock_fd"
  MOUNT_TESTS="$(cd "$out" && pwd)/mount_tests" UNIT_OBJS_FROM="$out" \
    nice -n 19 sh -c 'scripts/ci-sanitizers.sh --build-only && make --no-print-directory -s -j"$(nproc)" build-fuzz' \
    >"$results/background-build.log" 2>&1 &
  bg_build=$!
  exec {lock_fd}>&-  # the builds hold it now
  echo "== background: sanitizer and fuzz builds at nice 19 (pid $bg_build)"
fi

run "$out/unit_tests" unit_tests "$shards"
[ "$under_load" -eq 1 ] && [ "$extras" -eq 1 ] || run "$out/mount_tests" mount_tests "$shards"
if [ "$under_load" -eq 1 ]; then
  if [ -n "$bg_build" ]; then
    # The background builds are the load while they run (they get the CPU
    # that busy loops would take from them: CI ends sooner), then the loops.
    start_load "$bg_lock"
    echo "== under load: the background builds at nice 19, then $(nproc) busy loops at nice 19"
  else
    start_load
    echo "== under load: $(nproc) busy loops at nice 19"
  fi
  run "$out/mount_tests" mount_tests-under-load "$shards"
  stop_load
fi
# Only the extras need the background builds: waited for here, not before the
# run under load (which it would have left waiting for them, ~100 s in CI).
if [ -n "$bg_build" ]; then
  bg_ok=1
  echo "== waiting for the background builds (at ${SECONDS} s)"
  wait "$bg_build" || bg_ok=0
  if [ "$bg_ok" -eq 0 ]; then
    echo "background sanitizer/fuzz build failed:"; tail -20 "$results/background-build.log"; fail=$((fail + 1))
  fi
fi

# extra NAME COMMAND...: a smoke that ends with its own "N passed, N failed[,
# N skipped]" line; its counts are added, and a non-zero exit with no failure
# counted is one failure.
extra() {
  local name=$1 log rc line p f s
  shift
  log=$(mktemp)
  echo "== $name (at ${SECONDS} s)"
  timeout -k 10 2400 "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
  f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
  s=$(echo "$line" | sed -n 's/.* \([0-9]*\) skipped.*/\1/p')
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
    echo "$name exited with status $rc"; fail=$((fail + 1))
  fi
  rm -f "$log"
}

# The architecture's rules, checked: no file includes a higher layer.
extra layers python3 scripts/check-layers.py

if [ "$extras" -eq 1 ]; then
  # clang's lock checker (GUARDED_BY/REQUIRES) over the daemon and the library.
  extra thread-safety sh -c 'make --no-print-directory thread-safety && echo "1 passed, 0 failed"'
  # Under ASan: no stress tests, no RSS bounds (shadow memory), no install
  # checks, no instruction-by-instruction kills; the normal runs have them all.
  # The daemon is built with the sanitizers; the mount suite's client binary
  # is the normal one (MOUNT_TESTS). The builds ran in the background above.
  extra sanitizers env ASAN_MOUNT_FILTER='-*Stress*:BenchSmoke*:Ecosystem*:MemoryBound*' \
    ASAN_UNIT_FILTER='-*SegmentKill*' MOUNT_TESTS="$(cd "$out" && pwd)/mount_tests" scripts/ci-sanitizers.sh --no-build
  extra fuzz-smoke make --no-print-directory fuzz-smoke
  extra soak make --no-print-directory soak MINUTES=1 OUT="$out"
fi

# Nothing of ours may stay mounted or in /dev/shm.
for m in $(awk '$3 == "fuse.mailboxfs" && $2 ~ /^\/tmp\/mbxtest\./ {print $2}' /proc/mounts); do
  echo "leftover mount $m"; fusermount3 -u -z "$m"; fail=$((fail + 1))
done
if ls -d /dev/shm/mbxtest-* >/dev/null 2>&1; then
  echo "leftover state in /dev/shm: $(ls -d /dev/shm/mbxtest-*)"; rm -rf /dev/shm/mbxtest-*; fail=$((fail + 1))
fi
echo "== done (at ${SECONDS} s)"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

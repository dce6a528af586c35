#!/usr/bin/env bash
# CI: the unit and mount suites built with ASan+UBSan (out-asan), and the
# concurrency tests built with TSan (out-tsan). Each sanitizer writes its
# reports to files (log_path) so that one in a daemon the mount tests started
# is not lost with the daemon's log: any report is a failure.
# Prints the time of each piece and ends with "N passed, N failed, N skipped";
# exits non-zero on any failure. Options: --no-build, --build-only, --skip-mount,
# --skip-tsan.
set -u
cd "$(dirname "$0")/.."
build=1 mount=1 tsan=1 only_build=0
for a in "$@"; do
  case $a in
    --no-build) build=0 ;;
    --build-only) only_build=1 ;;
    --skip-mount) mount=0 ;;
    --skip-tsan) tsan=0 ;;
    *) echo "usage: $0 [--no-build | --build-only] [--skip-mount] [--skip-tsan]" >&2; exit 2 ;;
  esac
done
ASAN_OUT=${ASAN_OUT:-out-asan}
TSAN_OUT=${TSAN_OUT:-out-tsan}
# The mount tests under ASan: all by default; CI may pass a filter.
ASAN_MOUNT_FILTER=${ASAN_MOUNT_FILTER:-*}
# The mount tests are clients: what they check runs in the daemon, so only the
# daemon needs the sanitizer. An already built mount_tests binary (MOUNT_TESTS)
# spares compiling the whole mount suite a second time; without one it is
# built under ASan too.
MOUNT_TESTS=${MOUNT_TESTS:-}
# Likewise the unit tests: given a normal build's OUT (UNIT_OBJS_FROM), its
# test objects are linked with the instrumented core, fusefs/options.o and the
# sanitizer runtimes, so the 21 test files are not compiled again under ASan;
# every core and daemon source still is.
UNIT_OBJS_FROM=${UNIT_OBJS_FROM:-}
# The unit tests under ASan: all by default. SegmentKill single-steps a child
# through every instruction with ptrace: minutes under ASan, and it checks the
# ring, not memory safety; CI leaves it to the normal run.
ASAN_UNIT_FILTER=${ASAN_UNIT_FILTER:-*}
JOBS=${JOBS:-2}
# Sanitizer builds at -O1: about 40% less compile time than -O2, and the
# checks are the same (read by the Makefile's CXXFLAGS ?=).
export CXXFLAGS=${SAN_CXXFLAGS:--O1}

pass=0 fail=0 skip=0
logs=$(mktemp -d /tmp/mbxsan.XXXXXX)
trap 'rm -rf "$logs"' EXIT
stamp() { date +%s; }

piece() {  # piece NAME SECONDS
  echo "sanitizers: $1 took $2 s"
}

# run NAME COMMAND...: a gtest binary with a deadline; prints its failures
# and time, and leaves its counts in $logs/NAME.counts for tally (so that it
# may run in the background).
run() {
  local name=$1 log="$logs/$1.log" t0 rc p f s
  shift
  t0=$(stamp)
  timeout -k 10 900 "$@" --gtest_color=no >"$log" 2>&1
  rc=$?
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  f=${f:-0}
  # Each failed test with its failure text (expected and actual values, the
  # daemon's log the test printed), as tests/run.sh shows them.
  awk '/^\[ +(RUN|OK|SKIPPED) +\]/ { block = 0; next }
       /^\[  FAILED  \] [^ ]+ \([0-9]+ ms\)/ { block = 0; print; next }
       /: Failure$|error:/ { block = 1 }
       block { print }' "$log" | head -200 | sed 's/^/    /'
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "sanitizers: $name exited with status $rc before reporting (a sanitizer report, crash or deadline):"
    grep -E 'ERROR: .*Sanitizer|WARNING: ThreadSanitizer|runtime error|SUMMARY' "$log" | head -5 | sed 's/^/    /'
    f=1
  fi
  echo "${p:-0} $f ${s:-0}" >"$logs/$name.counts"
  piece "$name (${p:-0} passed, $f failed)" $(($(stamp) - t0))
}

# tally NAME: adds a finished run's counts (none left: it did not finish, a failure).
tally() {
  local p=0 f=1 s=0
  [ -s "$logs/$1.counts" ] && read -r p f s <"$logs/$1.counts"
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
}

# reports DIR: sanitizer report files left by any process (daemons included).
reports() {
  local n files
  files=$(grep -lE 'ERROR: |WARNING: ThreadSanitizer|runtime error' -r "$1")
  n=$(echo -n "$files" | grep -c .)
  if [ "$n" -ne 0 ]; then
    echo "sanitizers: $n report file(s) in $1:"
    for f in $(echo "$files" | head -3); do
      echo "  == $f"; grep -E 'ERROR|WARNING|runtime error|SUMMARY|^    #[0-9] ' "$f" | head -12 | sed 's/^/    /'
    done
    fail=$((fail + n))
  fi
}

if [ $build -eq 1 ]; then
  t0=$(stamp)
  targets="$ASAN_OUT/unit_tests"
  [ $mount -eq 1 ] && targets="$targets $ASAN_OUT/mailboxfs"
  [ $mount -eq 1 ] && [ -z "$MOUNT_TESTS" ] && targets="$targets $ASAN_OUT/mount_tests"
  if ! make -s -j"$JOBS" OUT="$ASAN_OUT" ASAN=1 UBSAN=1 ${UNIT_OBJS_FROM:+UNIT_OBJ_OUT="$UNIT_OBJS_FROM"} $targets \
    >"$logs/build-asan.log" 2>&1; then
    tail -20 "$logs/build-asan.log"; echo "0 passed, 1 failed, 0 skipped"; exit 1
  fi
  piece "ASan+UBSan build" $(($(stamp) - t0))
  if [ $tsan -eq 1 ]; then
    t0=$(stamp)
    if ! make -s -j"$JOBS" OUT="$TSAN_OUT" TSAN=1 "$TSAN_OUT/concurrency_tests" >"$logs/build-tsan.log" 2>&1; then
      tail -20 "$logs/build-tsan.log"; echo "0 passed, 1 failed, 0 skipped"; exit 1
    fi
    piece "TSan build" $(($(stamp) - t0))
  fi
fi

if [ $only_build -eq 1 ]; then
  echo "0 passed, 0 failed, 0 skipped"
  exit 0
fi

# ASan+UBSan: leaks too; UBSan stops at the first report (built with -fno-sanitize-recover).
mkdir -p "$logs/asan"
export ASAN_OPTIONS="log_path=$logs/asan/asan:detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="log_path=$logs/asan/ubsan:print_stacktrace=1:halt_on_error=1"
# Suppressions, each with its reason: tests/lsan.supp.
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
# The ASan mount suite mostly waits (on its daemons and child processes):
# it runs in the background, beside the CPU-bound ASan unit and TSan runs,
# which yield to it (nice 10). Every run keeps its own options and report directory.
# It runs as MBX_TEST_SHARDS gtest shards at once, as tests/run.sh runs it.
mount_bg=() shards=${MBX_TEST_SHARDS:-2}
if [ $mount -eq 1 ]; then
  for ((i = 0; i < shards; i++)); do
    GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i MAILBOXFS_BIN="$(cd "$ASAN_OUT" && pwd)/mailboxfs" \
      run asan-mount-$i "${MOUNT_TESTS:-$ASAN_OUT/mount_tests}" --gtest_filter="$ASAN_MOUNT_FILTER" \
      >"$logs/asan-mount-$i.out" 2>&1 &
    mount_bg+=($!)
  done
fi
run asan-unit nice -n 10 "$ASAN_OUT/unit_tests" --gtest_filter="$ASAN_UNIT_FILTER"
tally asan-unit
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

if [ $tsan -eq 1 ]; then
  # Suppressions, each with its reason: tests/tsan.supp.
  mkdir -p "$logs/tsan"
  export TSAN_OPTIONS="log_path=$logs/tsan/tsan:suppressions=$PWD/tests/tsan.supp:halt_on_error=0:second_deadlock_stack=1"
  run tsan-concurrency nice -n 10 "$TSAN_OUT/concurrency_tests"
  tally tsan-concurrency
  reports "$logs/tsan"
  unset TSAN_OPTIONS
fi

for ((i = 0; i < ${#mount_bg[@]}; i++)); do
  wait "${mount_bg[$i]}"
  cat "$logs/asan-mount-$i.out"
  tally asan-mount-$i
done
reports "$logs/asan"

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

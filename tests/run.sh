#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every test binary with a deadline and prints one summary line:
# "N passed, N failed, N skipped". Exits non-zero on any failure.
set -u
out=${1:-out}
export MAILBOXFS_BIN="$(cd "$out" && pwd)/mailboxfs"
pass=0 fail=0 skip=0
for bin in "$out/unit_tests" "$out/mount_tests"; do
  log=$(mktemp)
  echo "== $(basename "$bin")"
  timeout -k 10 600 "$bin" --gtest_color=no 2>&1 | tee "$log" | grep -E '^\[ +(OK|FAILED|SKIPPED) +\]|Failure|error:|Expected|Which is|Value of|Actual' 
  rc=${PIPESTATUS[0]}
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
    echo "$(basename "$bin") exited with status $rc before reporting (crash or deadline)"
    fail=$((fail + 1))
  fi
  rm -f "$log"
done
# Nothing of ours may stay mounted or in /dev/shm.
for m in $(awk '$3 == "fuse.mailboxfs" && $2 ~ /^\/tmp\/mbxtest\./ {print $2}' /proc/mounts); do
  echo "leftover mount $m"; fusermount3 -u -z "$m"; fail=$((fail + 1))
done
if ls -d /dev/shm/mbxtest-* >/dev/null 2>&1; then
  echo "leftover state in /dev/shm: $(ls -d /dev/shm/mbxtest-*)"; rm -rf /dev/shm/mbxtest-*; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

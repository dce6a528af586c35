#!/usr/bin/env bash
# Mounts mailboxfs on a temporary directory, runs out/bench against it and
# every peer, writes the CSV and the Markdown table, and unmounts.
# Usage: run.sh OUTDIR [--quick]
set -uo pipefail
out=$1; shift
quick=${1:-}
mnt=$(mktemp -d /tmp/mbxbench.XXXXXX)
state=/dev/shm/mbxbench-$$
"$out/mailboxfs" -f -o "state_dir=$state" "$mnt" 2>"$out/bench-daemon.log" & daemon=$!
cleanup() {
  fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null
  rm -rf "$state"; rmdir "$mnt" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 200); do grep -q " $mnt fuse.mailboxfs " /proc/mounts && break; sleep 0.05; done
grep -q " $mnt fuse.mailboxfs " /proc/mounts || { echo "bench: mount failed" >&2; exit 1; }
if [ "$quick" = --quick ]; then
  "$out/bench" --quick --mount "$mnt" --csv "$out/bench-quick.csv" --md "$out/bench-quick.md"
else
  "$out/bench" --mount "$mnt" --csv "$out/bench.csv" --md docs/benchmarks.md
fi

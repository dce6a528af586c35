#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mounts mailboxfs and the FUSE floor (bench-floor) on temporary directories,
# runs OUTDIR/bench against them and every peer, writes the CSV, the Markdown
# page and the chart, and always unmounts and stops what it started. With
# redis-server installed, also a private redis-server on a unix socket in a
# temporary directory and two mailboxfs daemons on it (the Redis rows).
# Usage: run.sh OUTDIR [--quick] [--only NAME,...] [--reps N]
# Full run: out/bench.csv, docs/benchmarks.md, docs/benchmarks.png.
# Quick or partial (--only) run: everything under OUTDIR (bench-quick.* or
# bench-only.*), docs/ untouched.
set -uo pipefail
out=$1; shift
quick= extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=--quick ;;
    --only|--reps) [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
                   extra+=("$1" "$2"); shift ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mnt=$(mktemp -d /tmp/mbxbench.XXXXXX)
flr=$(mktemp -d /tmp/mbxfloor.XXXXXX)
state=/dev/shm/mbxbench-$$
daemon= floor= bench= names=
rdir= redis= r1= r2= rmnt1= rmnt2=

# Unmounts (lazily if something still holds the mount) and stops only the
# daemons this script started, by pid.
stop() {  # stop MOUNTPOINT PID
  if grep -q " $1 " /proc/mounts; then
    fusermount3 -u "$1" 2>/dev/null || fusermount3 -u -z "$1" 2>/dev/null
  fi
  if [ -n "$2" ]; then
    kill "$2" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$2" 2>/dev/null
    wait "$2" 2>/dev/null
  fi
  rmdir "$1" 2>/dev/null
}
cleanup() {
  # $bench is set only while the process is ours and unreaped (its pid cannot
  # be reused). A bench that failed or overran leaves its named peers behind:
  # they carry its pid.
  if [ -n "$bench" ]; then kill "$bench" 2>/dev/null; wait "$bench" 2>/dev/null; fi
  [ -n "$names" ] && rm -f /dev/shm/mbxbench-bmq-"$names"-* /tmp/mbxbench-fifo-"$names"-*
  stop "$mnt" "$daemon"
  stop "$flr" "$floor"
  rm -rf "$state"
  if [ -n "$rdir" ]; then  # the daemons go before the server they use
    stop "$rmnt1" "$r1"
    stop "$rmnt2" "$r2"
    rm -rf "$state-r1" "$state-r2"
    if [ -n "$redis" ]; then kill "$redis" 2>/dev/null; wait "$redis" 2>/dev/null; fi
    rm -rf "$rdir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_mount() {  # wait_mount DIR TYPE
  for _ in $(seq 200); do grep -q " $1 $2 " /proc/mounts && return 0; sleep 0.05; done
  echo "bench: mount of $1 failed" >&2
  return 1
}
"$out/mailboxfs" -f -o "state_dir=$state" "$mnt" 2>"$out/bench-daemon.log" & daemon=$!
"$out/bench-floor" "$flr" 2>"$out/bench-floor.log" & floor=$!
wait_mount "$mnt" fuse.mailboxfs || exit 1
wait_mount "$flr" fuse.floor || exit 1

# The Redis rows: skipped, with the reason, without redis-server.
redis_args=()
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
  rdir=$(mktemp -d /tmp/mbxbench-redis.XXXXXX)
  rmnt1=$rdir/m1 rmnt2=$rdir/m2
  mkdir "$rmnt1" "$rmnt2"
  redis-server --port 0 --unixsocket "$rdir/sock" --dir "$rdir" --save '' --appendonly no \
    --daemonize no --logfile "$rdir/log" & redis=$!
  for _ in $(seq 200); do [ "$(redis-cli -s "$rdir/sock" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
  be="backend=redis+unix://$rdir/sock,namespace=bench"
  "$out/mailboxfs" -f -o "state_dir=$state-r1,$be" "$rmnt1" 2>"$out/bench-redis1.log" & r1=$!
  "$out/mailboxfs" -f -o "state_dir=$state-r2,$be" "$rmnt2" 2>"$out/bench-redis2.log" & r2=$!
  wait_mount "$rmnt1" fuse.mailboxfs || exit 1
  wait_mount "$rmnt2" fuse.mailboxfs || exit 1
  redis_args=(--redis-socket "$rdir/sock" --redis-mount "$rmnt1" --redis-mount2 "$rmnt2" --redis-daemon-pids "$r1,$r2")
else
  echo "bench: redis-server (or redis-cli) is not installed: the Redis rows are skipped" >&2
fi

if [ "$quick" = --quick ]; then
  csv=$out/bench-quick.csv md=$out/bench-quick.md chart=$out/bench-quick.png limit=300
elif [ ${#extra[@]} -gt 0 ]; then
  csv=$out/bench-only.csv md=$out/bench-only.md chart=$out/bench-only.png limit=900
else
  csv=$out/bench.csv md=docs/benchmarks.md chart=docs/benchmarks.png limit=900
fi
data=$out/bench-chart.dat
"$out/bench" ${quick:+--quick} --mount "$mnt" --floor "$flr" --daemon-pid "$daemon" \
  --floor-pid "$floor" --state "$state" "${redis_args[@]}" --csv "$csv" --md "$md" --chart-data "$data" \
  "${extra[@]}" & bench=$!
names=$bench
sleep "$limit" & timer=$!
wait -n -p done "$bench" "$timer"; rc=$?
if [ "$done" != "$bench" ]; then
  echo "bench: still running after ${limit}s, stopped" >&2
  exit 1
fi
bench=  # reaped
kill "$timer"; wait "$timer" 2>/dev/null
[ "$rc" -eq 0 ] || exit 1

# The chart: drawn when gnuplot is installed (scripts/deps.sh bench installs it).
if command -v gnuplot >/dev/null && gnuplot -e "datafile='$data'; outfile='$chart'" tests/bench/chart.gp; then
  line="![Throughput and latency of every mechanism, log scale]($(basename "$chart"))"
else
  line="Chart skipped: gnuplot is not installed (\`scripts/deps.sh bench\` installs it)."
  echo "bench: $line" >&2
fi
sed -i "s|^<!-- chart -->\$|$line|" "$md"
# Hand-written sections for measurements made outside this run (each file of
# docs/benchmarks.d/, e.g. the io_uring probe), appended so a full run keeps them.
if [ "$md" = docs/benchmarks.md ]; then
  for f in docs/benchmarks.d/*.md; do
    [ -e "$f" ] || continue
    printf '\n' >>"$md"
    sed '1s/^## /## Measured separately: /' "$f" >>"$md"
  done
fi
echo "bench: wrote $csv and $md" >&2

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs bench-uring on a temporary mount point with the fuse module's
# enable_uring set to Y, and always restores the parameter, unmounts the
# probe's own mount point and removes it.
# Usage: run.sh PROBE [probe options...]
set -uo pipefail
probe=$1; shift
param=/sys/module/fuse/parameters/enable_uring
[ "$(id -u)" = 0 ] || { echo "bench-uring: needs root (mount, $param)" >&2; exit 2; }
[ -w "$param" ] || { echo "bench-uring: $param missing: kernel without CONFIG_FUSE_IO_URING?" >&2; exit 2; }
saved=$(cat "$param")
mnt=$(mktemp -d /tmp/mbxuring.XXXXXX)
cleanup() {
  if grep -q " $mnt " /proc/mounts; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
  rmdir "$mnt" 2>/dev/null
  # Y/N as read back; writing it back restores the parameter.
  echo "$saved" > "$param"
  echo "# enable_uring restored to $(cat "$param")"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo Y > "$param"
echo "# $(uname -r), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg), enable_uring $saved -> $(cat "$param")"
"$probe" "$mnt" "$@"

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what mailboxfs needs to build, run and test, when run as root on
# Debian; otherwise names the exact command to run. Usage: deps.sh [run|test|bench]
set -euo pipefail
need=(g++ make pkg-config libfuse3-dev libhiredis-dev fuse3 attr)
case "${1:-run}" in
  test) need+=(libgtest-dev attr python3 python3-pip util-linux procps coreutils binutils gcc man-db libboost-dev
               gnuplot-nox redis-server redis-tools) ;;
  bench) need+=(libgtest-dev libbenchmark-dev libboost-dev gnuplot-nox python3) ;;
esac
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "mailboxfs: missing packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "mailboxfs: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null

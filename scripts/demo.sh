#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mounts mailboxfs on a temporary directory, shows message passing with plain
# shell tools, and unmounts. Usage: demo.sh [path/to/mailboxfs]
set -uo pipefail
bin=${1:-out/mailboxfs}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
mnt=$(mktemp -d /tmp/mailboxfs-demo.XXXXXX)
daemon=
cleanup() {
  cd /
  fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
  if [ -n "$daemon" ]; then
    # An unmounted daemon exits by itself once it has removed its state
    # directory; only one that does not is stopped.
    for _ in $(seq 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$daemon" 2>/dev/null; then kill -KILL "$daemon" 2>/dev/null || true; fi
    wait "$daemon" 2>/dev/null || true
  fi
  rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; eval "$@" || true; }

"$bin" -f "$mnt" & daemon=$!
for _ in $(seq 100); do grep -q " $mnt fuse.mailboxfs " /proc/mounts && break; sleep 0.05; done
grep -q " $mnt fuse.mailboxfs " /proc/mounts || { echo "demo: mount failed" >&2; exit 1; }
echo "mailboxfs mounted on $mnt"
cd "$mnt"

step 'touch jobs                      # create a mailbox (a port)'
step 'echo "compile main.c" > jobs    # send: one open-write-close is one message'
step 'echo "link app" > jobs'
step 'ls -l jobs                      # size = bytes queued'
step 'cat jobs                        # receive one message'
step 'getfattr -d -m user.mailbox. jobs | grep -E "capacity|framing|messages|sent|received"'
step 'msg=$(cat jobs); echo "worker got: $msg"'
step '( cat jobs; echo "(worker returned)" ) & worker=$!; sleep 0.5; echo "the mailbox is empty: the worker is blocked"'
step 'echo "deploy" > jobs; wait $worker   # a send releases the blocked receiver'
step 'touch handoff; setfattr -n user.mailbox.capacity -v 0 handoff   # rendezvous'
step '( echo "baton" > handoff; echo "sender released: its message was received" ) & sender=$!; sleep 0.5; echo "the sender is blocked until someone receives"; msg=$(cat handoff); wait $sender; echo "receiver got: $msg"'
step 'mkdir -p logs && touch logs/app && setfattr -n user.mailbox.framing -v line logs/app'
step 'printf "one\ntwo\nthree\n" > logs/app; getfattr -n user.mailbox.messages logs/app'
step 'timeout 1 cat jobs; echo "exit status $? (124: timed out while blocked, Ctrl-C works too)"'
step 'df -h .'
step 'rm jobs handoff logs/app && rmdir logs && ls -la'
echo
echo "demo done; unmounting $mnt"

#!/usr/bin/env python3
"""Soak: random traffic over both paths of a real mount, with faults.

Shell peers (bash printf > box, cat box) and libmailbox peers (soak_peer)
send and receive on datagram and line mailboxes while the soak SIGKILLs and
SIGSTOPs/SIGCONTs peers, kills -9 and restarts the daemon on the same
mountpoint (it re-attaches the segments), and with --corrupt scribbles on the
segment of one sacrificial mailbox ("victim"), which is left out of the
accounting. Then it checks:
  - every message received is byte for byte the one sent (canonical(p, s));
  - none is received twice, none that was never sent;
  - every message whose send returned success is received, except at most
    one per killed receiver and per shell reader cut off by a daemon kill
    (the message in its hands): received + lost == sent, lost within bound;
  - the mailboxes' counters agree (sent/received xattrs against the logs);
  - the mount never stops answering (a probe with a deadline: a wedge).
Prints the seed (--seed replays the same choices) and the figures, then
"N passed, N failed". Cleans up everything it started, by pid.
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def canonical(p, s):  # must match soak_peer.cc and SHELL_SENDER
    n = (s * 7 + p * 3) % 61
    return "M %d %d %s E\n" % (p, s, LETTERS[(p + s) % 26] * n)


SHELL_SENDER = r'''
p=$1 box=$2 log=$3 s=0 letters=abcdefghijklmnopqrstuvwxyz
while :; do
  n=$(( (s * 7 + p * 3) % 61 )); c=${letters:$(( (p + s) % 26 )):1}
  printf -v body '%*s' $n ''; body=${body// /$c}
  echo "S $p $s" >> "$log"
  if printf 'M %d %d %s E\n' $p $s "$body" > "$box" 2>/dev/null; then echo "D $p $s" >> "$log"; fi
  s=$((s + 1))
done
'''
# Reads until the mount goes away (a daemon restart); then the soak starts another.
SHELL_CAT = 'exec cat "$1" >> "$2" 2>/dev/null'
SHELL_HEAD = 'while head -n 1 "$1" >> "$2" 2>/dev/null; do :; done'

MSG = re.compile(r"^M (\d+) (\d+) [a-z]* E$")


class Soak:
    def run(self, cmd, timeout=10):
        """Runs cmd with a deadline; returns (status, stdout), status None if it
        did not finish. A process stuck in the kernel (D state) cannot be
        reaped now: it is kept and reaped once the daemon is gone (cleanup)."""
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
            self.last_err = err.decode(errors="replace")
            return p.returncode, out
        except subprocess.TimeoutExpired:
            p.kill()
            self.stuck.append(p)
            return None, b""

    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.tmp = tempfile.mkdtemp(prefix="mbxsoak.", dir="/tmp")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        # The mailboxes live in a directory of the mount: while a killed daemon's
        # mount is replaced, the bare mountpoint has no such directory, so a
        # shell `> box` fails instead of creating a plain file under the mount.
        self.q = os.path.join(self.mnt, "q")
        self.state = "/dev/shm/mbxsoak-%s" % os.path.basename(self.tmp).split(".")[1]
        self.logs = os.path.join(self.tmp, "logs")
        os.mkdir(self.logs)
        self.daemon = None
        self.daemon_logs = []
        self.peers = {}  # pid -> dict(kind, box, proc, stopped)
        self.next_producer = 1
        self.next_log = 0
        self.f = dict(peer_kills=0, receiver_kills=0, stops=0, daemon_restarts=0, corruptions=0,
                      probes=0, wedges=0, cutoff_readers=0, respawns=0)
        self.boxes = ["dg", "small", "ln"]  # accounted mailboxes
        self.errors = []
        self.stuck = []  # probes that did not finish (reaped in cleanup)
        self.last_err = ""

    # ---- processes ---------------------------------------------------------
    def start_daemon(self):
        log = os.path.join(self.tmp, "daemon-%d.log" % len(self.daemon_logs))
        self.daemon_logs.append(log)
        with open(log, "w") as err:
            self.daemon = subprocess.Popen(
                [os.path.join(self.a.bin, "mailboxfs"), "-f", "-o", "state_dir=" + self.state, self.mnt],
                stdout=err, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.mounted() and self.run(["ls", self.mnt])[0] == 0:
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("daemon did not mount: " + open(log).read())

    def mounted(self):
        with open("/proc/mounts") as m:
            return any(l.split()[1] == self.mnt and l.split()[2] == "fuse.mailboxfs" for l in m)

    def spawn(self, kind, box):
        path = os.path.join(self.q, box)
        log = os.path.join(self.logs, "%s-%s-%d.log" % (kind, box, self.next_log))
        self.next_log += 1
        peer = os.path.join(self.a.bin, "soak_peer")
        if kind in ("lib_send", "sh_send"):
            p = self.next_producer
            self.next_producer += 1
            cmd = ([peer, "send", path, str(p), "0", "100000000", log] if kind == "lib_send"
                   else ["bash", "-c", SHELL_SENDER, "sh", str(p), path, log])
        elif kind == "lib_recv":
            cmd = [peer, "recv", path, log]
        else:
            script = SHELL_HEAD if kind == "sh_head" else SHELL_CAT
            cmd = ["bash", "-c", script, "sh", path, log]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.peers[proc.pid] = dict(kind=kind, box=box, proc=proc, stopped=False)

    def signal_peer(self, pid, sig):
        try:
            os.killpg(pid, sig)  # the peer and its children (bash's cat/head)
        except ProcessLookupError:
            pass

    def reap_and_respawn(self):
        for pid, p in list(self.peers.items()):
            if p["proc"].poll() is not None:
                del self.peers[pid]
                self.signal_peer(pid, signal.SIGKILL)  # children left in its group
                self.f["respawns"] += 1
                self.spawn(p["kind"], p["box"])

    # ---- faults ------------------------------------------------------------
    def kill_peer(self):
        pid = self.rng.choice(sorted(self.peers))
        p = self.peers.pop(pid)
        self.signal_peer(pid, signal.SIGCONT)
        self.signal_peer(pid, signal.SIGKILL)
        p["proc"].wait()
        self.f["peer_kills"] += 1
        if p["kind"] not in ("lib_send", "sh_send"):
            self.f["receiver_kills"] += 1
        self.spawn(p["kind"], p["box"])

    def stop_peer(self):
        running = [pid for pid, p in self.peers.items() if not p["stopped"]]
        if not running:
            return
        pid = self.rng.choice(sorted(running))
        self.signal_peer(pid, signal.SIGSTOP)
        self.peers[pid]["stopped"] = True
        self.peers[pid]["until"] = time.monotonic() + self.rng.uniform(0.05, 1.5)
        self.f["stops"] += 1

    def continue_due(self, all_=False):
        now = time.monotonic()
        for pid, p in self.peers.items():
            if p["stopped"] and (all_ or p["until"] <= now):
                self.signal_peer(pid, signal.SIGCONT)
                p["stopped"] = False

    def restart_daemon(self):
        # Shell readers blocked in the daemon may lose the message it was answering with.
        self.f["cutoff_readers"] += sum(1 for p in self.peers.values()
                                        if p["kind"] in ("sh_cat", "sh_head") and p["box"] in self.boxes)
        self.daemon.kill()
        self.daemon.wait()
        self.f["daemon_restarts"] += 1
        self.start_daemon()

    def corrupt(self):
        try:
            seg = os.getxattr(os.path.join(self.q, "victim"), "user.mailbox.segment").decode()
            fd = os.open(seg, os.O_WRONLY)
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            for _ in range(self.rng.randint(1, 8)):
                r = self.rng.random()
                if r < 0.2:  # a lock word or its owner tid (send_lock at 64, recv_lock at 256)
                    off = self.rng.choice((64, 256)) + self.rng.randrange(0, 16)
                elif r < 0.7:
                    off = self.rng.randrange(0, 4096)
                else:
                    off = self.rng.randrange(0, size)
                os.pwrite(fd, bytes([self.rng.randrange(256)]), off)
            self.f["corruptions"] += 1
        finally:
            os.close(fd)

    def probe(self):
        # The mount must answer: a listing and a counter of every accounted mailbox.
        self.f["probes"] += 1
        cmd = "ls %s >/dev/null && for b in %s; do getfattr -n user.mailbox.messages %s/$b >/dev/null || exit 1; done" % (
            self.mnt, " ".join(self.boxes), self.q)
        rc, _ = self.run(["bash", "-c", cmd])
        if rc is None:
            self.f["wedges"] += 1
            self.errors.append("wedge: the mount did not answer a probe within 10 s")
        elif rc != 0:
            self.errors.append("probe failed: " + self.last_err[-300:])
        if self.a.corrupt:  # the victim may fail (EIO, EBADMSG), but must answer
            if self.run(["getfattr", "-n", "user.mailbox.messages", os.path.join(self.q, "victim")])[0] is None:
                self.f["wedges"] += 1
                self.errors.append("wedge: the corrupted mailbox did not answer within 10 s")

    # ---- run ---------------------------------------------------------------
    def setup(self):
        self.start_daemon()
        settings = {"dg": ("datagram", "64"), "small": ("datagram", "3"), "ln": ("line", "64")}
        if self.a.corrupt:
            settings["victim"] = ("datagram", "64")
        os.mkdir(self.q)
        for box, (framing, cap) in settings.items():
            path = os.path.join(self.q, box)
            open(path, "w").close()
            os.setxattr(path, "user.mailbox.framing", framing.encode())
            os.setxattr(path, "user.mailbox.capacity", cap.encode())
        for box in settings:
            for kind in ("lib_send", "sh_send", "lib_recv", "sh_cat"):
                self.spawn(kind, box)
            if self.a.head_readers and box == "ln":
                self.spawn("sh_head", box)

    def chaos(self):
        end = time.monotonic() + self.a.minutes * 60
        next_restart = time.monotonic() + self.rng.uniform(5, 15)
        while time.monotonic() < end:
            time.sleep(self.rng.uniform(0.05, 0.3))  # traffic runs meanwhile
            self.continue_due()
            self.reap_and_respawn()
            r = self.rng.random()
            if time.monotonic() >= next_restart:
                self.restart_daemon()
                next_restart = time.monotonic() + self.rng.uniform(5, 15)
            elif r < 0.35:
                self.kill_peer()
            elif r < 0.65:
                self.stop_peer()
            elif r < 0.8 and self.a.corrupt:
                self.corrupt()
            else:
                self.probe()

    def drain(self):
        # Senders stop; receivers empty every accounted mailbox.
        self.continue_due(all_=True)
        for pid, p in list(self.peers.items()):
            if p["kind"] in ("lib_send", "sh_send"):
                self.signal_peer(pid, signal.SIGKILL)
                p["proc"].wait()
                del self.peers[pid]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.reap_and_respawn()
            left = [self.xattr(b, "messages") for b in self.boxes]
            if all(n == 0 for n in left):
                return self.quiesce()
            time.sleep(0.1)
        self.errors.append("drain: messages left after 60 s: %s" % left)
        self.f["wedges"] += 1
        return False

    def quiesce(self):
        # Every message has left the mailboxes; wait until the receivers have
        # written what they took (their logs stop growing for 2 s, four of
        # their receive timeouts), then stop them: nothing is in their hands.
        def sizes():
            return {n: os.path.getsize(os.path.join(self.logs, n)) for n in os.listdir(self.logs)}
        last, since = sizes(), time.monotonic()
        while time.monotonic() - since < 2:
            time.sleep(0.2)
            now = sizes()
            if now != last:
                last, since = now, time.monotonic()
        for pid, p in list(self.peers.items()):
            self.signal_peer(pid, signal.SIGKILL)
            p["proc"].wait()
            del self.peers[pid]
        return True

    def xattr(self, box, name):
        rc, v = self.run(["getfattr", "--only-values", "-n", "user.mailbox." + name, os.path.join(self.q, box)])
        try:
            return int(v) if rc == 0 else -1
        except ValueError:
            return -1

    def verify(self):
        sent_try, sent_ok, got = set(), set(), {}
        bad = dupl = phantom = 0
        victim_ok = victim_bad = 0
        for name in os.listdir(self.logs):
            kind, box = name.split("-")[0], name.split("-")[1]
            with open(os.path.join(self.logs, name), "rb") as f:
                data = f.read().decode("latin-1")
            lines = data.split("\n")
            if kind in ("lib_send", "sh_send"):
                if box == "victim":
                    continue
                for l in lines:
                    w = l.split()
                    if len(w) == 3 and w[0] in "SD":
                        (sent_try if w[0] == "S" else sent_ok).add((int(w[1]), int(w[2])))
                continue
            for l in lines[:-1]:  # after the last newline: nothing, or a line cut by a kill
                if l == "":
                    continue
                m = MSG.match(l)
                ok = m is not None and canonical(int(m.group(1)), int(m.group(2))) == l + "\n"
                if box == "victim":
                    victim_ok += ok
                    victim_bad += not ok
                    continue
                if not ok:
                    bad += 1
                    if bad <= 3:
                        self.errors.append("damaged message in %s: %r" % (name, l[:100]))
                    continue
                key = (int(m.group(1)), int(m.group(2)))
                got[key] = got.get(key, 0) + 1
        for key, n in got.items():
            if n > 1:
                dupl += n - 1
            if key not in sent_try:
                phantom += 1
        missing = len(sent_ok - set(got))
        bound = self.f["receiver_kills"] + self.f["cutoff_readers"]
        sent_x = sum(self.xattr(b, "sent") for b in self.boxes)
        recv_x = sum(self.xattr(b, "received") for b in self.boxes)
        lost_x = sum(self.xattr(b, "lost") for b in self.boxes)
        received = sum(got.values())
        self.figures = dict(attempted=len(sent_try), sent=len(sent_ok), received=received, lost=missing,
                            loss_bound=bound, duplicates=dupl, damaged=bad, phantom=phantom,
                            mailbox_sent=sent_x, mailbox_received=recv_x, mailbox_lost=lost_x,
                            victim_ok=victim_ok, victim_damaged=victim_bad)
        if bad:
            self.errors.append("%d damaged messages" % bad)
        if dupl:
            self.errors.append("%d duplicates" % dupl)
        if phantom:
            self.errors.append("%d messages received that nobody sent" % phantom)
        if missing > bound:
            self.errors.append("%d messages lost, more than the %d in the hands of killed receivers" % (missing, bound))
        if not (len(sent_ok) <= sent_x <= len(sent_try)):
            self.errors.append("mailbox 'sent' %d outside [%d, %d]" % (sent_x, len(sent_ok), len(sent_try)))
        if not (received <= recv_x <= received + bound) or recv_x > sent_x:
            self.errors.append("mailbox 'received' %d does not match %d logged (bound %d)" % (recv_x, received, bound))
        for log in self.daemon_logs:
            text = open(log, errors="replace").read()
            if "Sanitizer" in text or "runtime error" in text:
                self.errors.append("sanitizer report in " + log)

    def cleanup(self):
        for pid, p in list(self.peers.items()):
            self.signal_peer(pid, signal.SIGCONT)
            self.signal_peer(pid, signal.SIGKILL)
        if self.mounted():
            if self.run(["fusermount3", "-u", self.mnt])[0] != 0:
                self.run(["fusermount3", "-u", "-z", self.mnt])
        if self.daemon and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        for pid, p in list(self.peers.items()):
            try:
                p["proc"].wait(10)  # a reader in the dead mount is released by the abort
            except subprocess.TimeoutExpired:
                self.errors.append("peer %d (%s) could not be reaped" % (pid, p["kind"]))
        for p in self.stuck:  # released when the daemon went
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                self.errors.append("probe %d could not be reaped" % p.pid)
        shutil.rmtree(self.state, ignore_errors=True)
        if not self.mounted():
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="out")
    ap.add_argument("--minutes", type=float, default=1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--corrupt", action="store_true", help="scribble on the sacrificial mailbox 'victim'")
    ap.add_argument("--head-readers", action="store_true", help="also read the line mailbox with head -n 1")
    ap.add_argument("--keep", action="store_true", help="keep the logs (prints where)")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "little")
    a.bin = os.path.abspath(a.bin)
    print("soak: seed %d, %g min%s%s (replay: --seed %d)" % (a.seed, a.minutes, ", corruption" if a.corrupt else "",
                                                             ", head readers" if a.head_readers else "", a.seed),
          flush=True)
    s = Soak(a)
    t0 = time.monotonic()
    try:
        s.setup()
        s.chaos()
        t1 = time.monotonic()
        s.drain()
        t2 = time.monotonic()
        s.verify()
        print("soak: drained in %.0f s, checked in %.0f s" % (t2 - t1, time.monotonic() - t2))
    except Exception as e:  # noqa: anything unexpected is a failure, after cleanup
        s.errors.append("soak aborted: %r" % e)
    finally:
        if a.keep:
            kept = tempfile.mkdtemp(prefix="mbxsoak-logs.")
            shutil.copytree(s.logs, kept, dirs_exist_ok=True)
            print("soak: logs kept in", kept)
        s.cleanup()
    f, g = s.f, getattr(s, "figures", {})
    print("soak: faults injected: %d peer kills (%d receivers), %d stops, %d daemon restarts, %d corruptions"
          % (f["peer_kills"], f["receiver_kills"], f["stops"], f["daemon_restarts"], f["corruptions"]))
    if g:
        print("soak: messages: %d attempted, %d sent, %d received and checked, %d lost (bound %d), "
              "%d duplicates, %d damaged, %d phantom" % (g["attempted"], g["sent"], g["received"], g["lost"],
                                                         g["loss_bound"], g["duplicates"], g["damaged"],
                                                         g["phantom"]))
        print("soak: mailbox counters: sent %d, received %d, lost %d; victim: %d intact, %d damaged"
              % (g["mailbox_sent"], g["mailbox_received"], g["mailbox_lost"], g["victim_ok"], g["victim_damaged"]))
    print("soak: %d probes, %d wedges, %d respawns, %.0f s" % (f["probes"], f["wedges"], f["respawns"],
                                                                time.monotonic() - t0))
    for e in s.errors:
        print("soak: FAIL:", e)
    print("%d passed, %d failed" % (0 if s.errors else 1, 1 if s.errors else 0))
    return 1 if s.errors else 0


if __name__ == "__main__":
    sys.exit(main())

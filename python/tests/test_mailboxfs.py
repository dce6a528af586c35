# SPDX-License-Identifier: MIT
"""The mailboxfs package against a real mount: MAILBOXFS_MOUNT names it.

Run: MAILBOXFS_MOUNT=/mnt/mbx python3 -m unittest discover -s python/tests
Other processes are real ones (fork, the shell); no test relies on timing:
a blocked call is woken by a message, and deadlines only guard against hangs.
"""
import errno
import os
import select
import subprocess
import unittest
import uuid

import mailboxfs

MOUNT = os.environ.get("MAILBOXFS_MOUNT")
HANG_GUARD = 20.0  # seconds: only a broken build ever waits this long


def child(fn):
    """Runs fn in a forked child; returns its pid (exit status 0 = fn returned)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def wait_ok(test, pid):
    _, status = os.waitpid(pid, 0)
    test.assertEqual(os.waitstatus_to_exitcode(status), 0)


@unittest.skipUnless(MOUNT, "MAILBOXFS_MOUNT is not set")
class MailboxTest(unittest.TestCase):
    def path(self, name="box"):
        p = os.path.join(MOUNT, "%s-%s" % (name, uuid.uuid4().hex[:8]))
        self.addCleanup(lambda: os.path.exists(p) and os.unlink(p))
        return p

    def test_send_receive_and_sender(self):
        with mailboxfs.create(self.path()) as box:
            box.send(b"hello")
            box.send("caf\u00e9")
            self.assertEqual(box.receive(), b"hello")
            self.assertEqual(box.sender.pid, os.getpid())
            self.assertEqual(box.receive(), "caf\u00e9".encode())

    def test_shell_and_library_see_the_same_messages(self):
        p = self.path()
        subprocess.run(["sh", "-c", "printf 'from shell' > %s" % p], check=True, timeout=HANG_GUARD)
        with mailboxfs.open(p) as box:
            self.assertEqual(box.receive(timeout=HANG_GUARD), b"from shell")
            box.send(b"to shell")
        with open(p, "rb") as f:
            self.assertEqual(f.read(), b"to shell")

    def test_timeouts_and_nonblocking(self):
        with mailboxfs.create(self.path(), capacity=1) as box:
            with self.assertRaises(BlockingIOError):
                box.receive(block=False)
            with self.assertRaises(TimeoutError):
                box.receive(timeout=0.01)
            box.send(b"1")
            with self.assertRaises(BlockingIOError):
                box.try_send(b"2")
            with self.assertRaises(TimeoutError):
                box.send(b"2", timeout=0.01)
            self.assertEqual(box.try_receive(), b"1")
        with mailboxfs.open(self._existing(), nonblock=True) as box:
            with self.assertRaises(BlockingIOError):
                box.receive()

    def _existing(self):
        p = self.path()
        mailboxfs.create(p).close()
        return p

    def test_blocked_receive_is_woken_by_another_process(self):
        p = self._existing()
        pid = child(lambda: mailboxfs.open(p, "w").send(b"wake"))
        with mailboxfs.open(p, "r") as box:
            self.assertEqual(box.receive(timeout=HANG_GUARD), b"wake")
            self.assertEqual(box.sender.pid, pid)
        wait_ok(self, pid)

    def test_errors_are_oserror_subclasses(self):
        with self.assertRaises(FileNotFoundError):
            mailboxfs.open(os.path.join(MOUNT, "no-such-mailbox"))
        p = self.path()
        with mailboxfs.create(p, max_message=16) as box:
            with self.assertRaises(OSError) as e:
                box.send(b"x" * 17)
            self.assertEqual(e.exception.errno, errno.EMSGSIZE)
        with self.assertRaises(FileExistsError):
            mailboxfs.create(p)
        with self.assertRaises(ValueError):
            mailboxfs.open(p, "x")

    def test_iteration_drains_a_nonblocking_mailbox(self):
        with mailboxfs.create(self.path(), nonblock=True) as box:
            for i in range(5):
                box.send(b"m%d" % i)
            self.assertEqual(list(box), [b"m%d" % i for i in range(5)])

    def test_context_manager_closes(self):
        with mailboxfs.create(self.path()) as box:
            pass
        self.assertTrue(box.closed)
        with self.assertRaises(ValueError):
            box.send(b"x")

    def test_fileno_works_with_select(self):
        p = self._existing()
        with mailboxfs.open(p, "r") as box:
            self.assertEqual(select.select([box], [], [], 0)[0], [])
            subprocess.run(["sh", "-c", "printf ready > %s" % p], check=True, timeout=HANG_GUARD)
            self.assertEqual(select.select([box], [], [], HANG_GUARD)[0], [box])
            self.assertEqual(box.receive(block=False), b"ready")
            self.assertEqual(select.select([box], [], [], 0)[0], [])

    def test_stat_reports_settings_and_counters(self):
        with mailboxfs.create(self.path(), capacity=3) as box:
            box.send(b"abc")
            s = box.stat()
        self.assertEqual(s["capacity"], 3)
        self.assertEqual(s["messages"], 1)
        self.assertEqual(s["bytes"], 3)
        self.assertEqual(s["blocked_receivers"], [])

    def test_many_processes_nothing_lost(self):
        p = self._existing()
        senders = [child(lambda k=k: [mailboxfs.open(p, "w").send(b"%d:%d" % (k, i)) for i in range(200)])
                   for k in range(4)]
        got = []
        with mailboxfs.open(p, "r") as box:
            for _ in range(800):
                got.append(box.receive(timeout=HANG_GUARD))
        for pid in senders:
            wait_ok(self, pid)
        self.assertEqual(sorted(got), sorted(b"%d:%d" % (k, i) for k in range(4) for i in range(200)))
        for k in range(4):  # order kept per sender
            mine = [int(m.split(b":")[1]) for m in got if m.startswith(b"%d:" % k)]
            self.assertEqual(mine, list(range(200)))


@unittest.skipUnless(MOUNT and os.path.isdir(os.path.join(MOUNT or "", "pid")), "no pid/ directory")
class DirectTest(unittest.TestCase):
    def test_send_to_and_receive_from(self):
        parent = os.getpid()
        r, w = os.pipe()

        def run():
            d = mailboxfs.Direct(MOUNT)
            d.send_to(parent, b"hi parent")
            os.read(r, 1)  # the parent has replied
            self.assertEqual(d.receive_from(parent, timeout=HANG_GUARD), b"hi child")

        pid = child(run)
        with mailboxfs.Direct(MOUNT) as d:
            self.assertEqual(d.receive_from(pid, timeout=HANG_GUARD), b"hi parent")
            d.send_to(pid, b"hi child")
            os.write(w, b"x")
        wait_ok(self, pid)

    def test_receive_from_any_names_the_sender(self):
        parent = os.getpid()
        pid = child(lambda: mailboxfs.Direct(MOUNT).send_to(parent, b"any"))
        with mailboxfs.Direct(MOUNT) as d:
            self.assertEqual(d.receive_from_any(timeout=HANG_GUARD), (pid, b"any"))
        wait_ok(self, pid)

    def test_no_such_process(self):
        with mailboxfs.Direct(MOUNT) as d:
            pid = child(lambda: None)
            os.waitpid(pid, 0)  # reaped: the pid names no process now
            with self.assertRaises(ProcessLookupError):
                d.send_to(pid, b"x", block=False)


if __name__ == "__main__":
    unittest.main()

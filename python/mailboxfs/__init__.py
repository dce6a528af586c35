# SPDX-License-Identifier: MIT
"""mailboxfs mailboxes from Python, through libmailbox's C API (ctypes).

A mailbox is a file on a mailboxfs mount; open() maps its shared-memory
segment, so send() and receive() make no system call when they need not wait.
The daemon, shell tools and other programs see the same messages.

    with mailboxfs.open("/mnt/mbx/jobs") as box:
        box.send(b"job 1")
        msg = box.receive(timeout=2.0)     # bytes
        for msg in box: ...                # until the timeout, or empty when nonblock

Timeouts are seconds (None waits forever). Errors raise OSError, whose
subclass follows errno: BlockingIOError (EAGAIN: non-blocking and it would
wait), TimeoutError, FileNotFoundError, PermissionError, ProcessLookupError
(ESRCH, Direct), and OSError with .errno for the rest (EMSGSIZE, EIDRM...).
"""
import ctypes
import errno as _errno
import os
import select
import time
from collections import namedtuple

__all__ = ["open", "create", "Mailbox", "Direct", "Sender", "UNBOUNDED", "library"]
__version__ = "0.1.0"

UNBOUNDED = 2**64 - 1
_SEND, _RECEIVE, _FALLBACK = 1, 2, 4

Sender = namedtuple("Sender", "pid uid gid")


def _load():
    """libmailbox.so.0: $MAILBOXFS_LIBMAILBOX, then the lib/ of this package's
    prefix (PREFIX/lib/pythonX.Y/site-packages/mailboxfs), then the loader's path."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get("MAILBOXFS_LIBMAILBOX"),
                  os.path.normpath(os.path.join(here, "..", "..", "..", "libmailbox.so.0")),
                  "libmailbox.so.0"]
    last = None
    for c in candidates:
        if not c or (os.sep in c and not os.path.exists(c)):
            continue
        try:
            return ctypes.CDLL(c, use_errno=True)
        except OSError as e:
            last = e
    raise ImportError("mailboxfs: cannot load libmailbox.so.0 (install libmailbox, or set "
                      "MAILBOXFS_LIBMAILBOX): %s" % last)


library = _load()
_p = ctypes.c_void_p
library.mbx_open.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(_p)]
library.mbx_open.restype = ctypes.c_int
library.mbx_create.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint, ctypes.c_uint,
                               ctypes.POINTER(_p)]
library.mbx_create.restype = ctypes.c_int
library.mbx_close.argtypes = [_p]
library.mbx_close.restype = None
library.mbx_send.argtypes = [_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
library.mbx_send.restype = ctypes.c_int
library.mbx_recv_view.argtypes = [_p, ctypes.POINTER(_p), ctypes.c_int]
library.mbx_recv_view.restype = ctypes.c_ssize_t
library.mbx_release.argtypes = [_p]
library.mbx_release.restype = None
library.mbx_last_sender.argtypes = [_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_uint),
                                    ctypes.POINTER(ctypes.c_uint)]
library.mbx_last_sender.restype = None


def _error(e, path=None):
    # OSError(errno, ...) constructs the matching subclass (TimeoutError for ETIMEDOUT, ...).
    return OSError(e, os.strerror(e), path)


def _timeout_ms(timeout, block):
    """The C API's timeout: -1 forever, 0 never wait, else milliseconds (rounded up)."""
    if not block:
        return 0
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be None or >= 0")
    ms = int(timeout * 1000)
    if ms < timeout * 1000:
        ms += 1
    return max(ms, 1) if timeout > 0 else 0


def _flags(mode, fallback):
    if not mode or set(mode) - set("rw"):
        raise ValueError("mode is 'r' (receive), 'w' (send) or 'rw'")
    return (_RECEIVE if "r" in mode else 0) | (_SEND if "w" in mode else 0) | (_FALLBACK if fallback else 0)


_DEFAULT = object()  # "as the mailbox's defaults" for timeout and block


class Mailbox:
    """One open mailbox. Use it from one thread at a time (open it once per thread)."""

    def __init__(self, handle, path, mode, timeout, nonblock):
        self._h = handle
        self.path = path
        self.mode = mode
        self.timeout = timeout      # default for send/receive: seconds, None = forever
        self.nonblock = nonblock    # default: never wait (BlockingIOError)
        self._fd = None
        self.sender = None          # Sender of the last message received

    def _handle(self):
        if self._h is None:
            raise ValueError("I/O operation on closed mailbox")
        return self._h

    def _wait(self, timeout, block):
        return _timeout_ms(self.timeout if timeout is _DEFAULT else timeout,
                           (not self.nonblock) if block is _DEFAULT else block)

    def send(self, data, timeout=_DEFAULT, block=_DEFAULT):
        """Sends one message (bytes, or str as UTF-8); blocks while the mailbox is full."""
        if isinstance(data, str):
            data = data.encode()
        data = bytes(data)
        rc = library.mbx_send(self._handle(), data, len(data), self._wait(timeout, block))
        if rc < 0:
            raise _error(-rc, self.path)

    def receive(self, timeout=_DEFAULT, block=_DEFAULT):
        """Receives one message as bytes; blocks while the mailbox is empty."""
        h = self._handle()
        data = _p()
        n = library.mbx_recv_view(h, ctypes.byref(data), self._wait(timeout, block))
        if n < 0:
            raise _error(-n, self.path)
        try:
            msg = ctypes.string_at(data, n) if n else b""
        finally:
            library.mbx_release(h)  # the view's message counts as received
        pid, uid, gid = ctypes.c_int(), ctypes.c_uint(), ctypes.c_uint()
        library.mbx_last_sender(h, ctypes.byref(pid), ctypes.byref(uid), ctypes.byref(gid))
        self.sender = Sender(pid.value, uid.value, gid.value)
        return msg

    def try_send(self, data):
        self.send(data, block=False)

    def try_receive(self):
        return self.receive(block=False)

    def __iter__(self):
        """Messages as they come; ends at the default timeout (or when empty,
        if nonblock) or when the mailbox is deleted."""
        while True:
            try:
                yield self.receive()
            except (TimeoutError, BlockingIOError):
                return
            except OSError as e:
                if e.errno == _errno.EIDRM:
                    return
                raise

    def fileno(self):
        """A descriptor of the mailbox file for select/poll/epoll: readable when
        a receive would not wait, writable when a send would not (opened once,
        read-only if this mailbox receives, else write-only; never read or
        written, so it takes and sends nothing)."""
        self._handle()
        if self._fd is None:
            flags = os.O_RDONLY if "r" in self.mode else os.O_WRONLY
            self._fd = os.open(self.path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
        return self._fd

    def stat(self):
        """The mailbox's settings and counters (its user.mailbox.* attributes)."""
        out = {}
        for name in os.listxattr(self.path):
            if not name.startswith("user.mailbox."):
                continue
            v = os.getxattr(self.path, name).decode()
            key = name[len("user.mailbox."):]
            if key.startswith("blocked_"):
                out[key] = [int(x) for x in v.split()]
            elif v.isdigit():
                out[key] = int(v)
            else:
                out[key] = v
        return out

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._h is not None:
            library.mbx_close(self._h)
            self._h = None

    @property
    def closed(self):
        return self._h is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "<mailboxfs.Mailbox %r mode=%r%s>" % (self.path, self.mode, " closed" if self.closed else "")


def open(path, mode="rw", timeout=None, nonblock=False, fallback=True):  # noqa: A001 (like io.open)
    """Opens the mailbox file at path: mode 'r' receives, 'w' sends, 'rw' both.
    timeout/nonblock are the defaults of its calls. fallback: if this user may
    not map the segment, go through the file (same results, slower)."""
    h = _p()
    rc = library.mbx_open(os.fsencode(path), _flags(mode, fallback), ctypes.byref(h))
    if rc < 0:
        raise _error(-rc, path)
    return Mailbox(h, os.fsdecode(path), mode, timeout, nonblock)


def create(path, capacity=64, max_message=1 << 20, perm=0o644, mode="rw", timeout=None, nonblock=False,
           fallback=True):
    """Creates a mailbox (FileExistsError if present) with these settings, then opens it."""
    h = _p()
    rc = library.mbx_create(os.fsencode(path), capacity, max_message, perm, _flags(mode, fallback), ctypes.byref(h))
    if rc < 0:
        raise _error(-rc, path)
    return Mailbox(h, os.fsdecode(path), mode, timeout, nonblock)


class Direct:
    """Messages between processes named by pid, through a mount's pid/ directory:
    send_to(pid, msg), receive_from(pid), receive_from_any(). One per process."""

    LIVENESS_CHECK = 0.05  # seconds between checks that a sender we wait on still lives

    def __init__(self, mountpoint):
        self.dir = os.path.join(os.fsdecode(mountpoint), "pid")
        if not os.path.isdir(self.dir):
            raise _error(_errno.ENOTSUP, self.dir)
        self._to, self._from, self._self = {}, {}, os.getpid()

    def _check_fork(self):
        if os.getpid() != self._self:  # a fork leaves the parent's links to the parent
            self._to, self._from, self._self = {}, {}, os.getpid()

    def send_to(self, pid, data, timeout=None, block=True):
        self._check_fork()
        box = self._to.get(pid)
        if box is None:
            try:
                box = open(os.path.join(self.dir, "to.%d" % pid), "w")
            except FileNotFoundError:
                raise _error(_errno.ESRCH, "pid %d" % pid) from None
            self._to[pid] = box
        try:
            box.send(data, timeout=timeout, block=block)
        except OSError as e:
            if e.errno == _errno.EIDRM:  # the daemon discarded the link: the receiver exited
                self._to.pop(pid).close()
                raise _error(_errno.ESRCH, "pid %d" % pid) from None
            raise

    def receive_from(self, pid, timeout=None, block=True):
        """The next message process pid sent to this one (ProcessLookupError once it
        exited with nothing left for us)."""
        self._check_fork()
        link = self._from.get(pid)
        if link is None:
            try:
                box = open(os.path.join(self.dir, "from.%d" % pid), "r")
            except FileNotFoundError:
                raise _error(_errno.ESRCH, "pid %d" % pid) from None
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = None
            link = self._from[pid] = (box, pidfd)
        box, pidfd = link
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if not block:
                    return box.receive(block=False)
                step = self.LIVENESS_CHECK
                if deadline is not None:
                    step = min(step, deadline - time.monotonic())
                    if step <= 0:
                        raise _error(_errno.ETIMEDOUT, "pid %d" % pid)
                return box.receive(timeout=step)
            except OSError as e:
                if e.errno not in (_errno.EIDRM, _errno.EAGAIN, _errno.ETIMEDOUT):
                    raise
                if e.errno == _errno.EIDRM or pidfd is None or select.select([pidfd], [], [], 0)[0]:
                    try:  # the sender exited: what it sent before is still ours
                        return box.receive(block=False)
                    except OSError:
                        self._drop(pid)
                        raise _error(_errno.ESRCH, "pid %d" % pid) from None
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise

    def _drop(self, pid):
        box, pidfd = self._from.pop(pid)
        box.close()
        if pidfd is not None:
            os.close(pidfd)

    def receive_from_any(self, timeout=None, block=True):
        """(pid, message): the next message any process sent to this one."""
        self._check_fork()
        for pid, (box, _) in list(self._from.items()):
            try:
                return pid, box.receive(block=False)
            except (BlockingIOError, OSError):
                pass
        fd = os.open(os.path.join(self.dir, "any"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            framing = os.getxattr(fd, "user.mailbox.framing").decode()
            msg = self._read_any(fd, framing, timeout, block)
            sender = os.getxattr(fd, "user.mailbox.sender").decode()
            pid = int(dict(kv.split("=") for kv in sender.split())["pid"])
            return pid, msg
        finally:
            os.close(fd)

    @staticmethod
    def _read_any(fd, framing, timeout, block):
        out = b""
        chunk = 1 if framing == "line" else 1 << 20
        while True:
            try:
                b = os.read(fd, chunk)
            except BlockingIOError:
                if out:  # the rest of a message is on its way
                    select.select([fd], [], [])
                    continue
                if not block:
                    raise
                r, _, _ = select.select([fd], [], [], timeout)
                if not r:
                    raise _error(_errno.ETIMEDOUT, "pid/any") from None
                continue
            if not b:
                return out  # file framing: end of the message
            out += b
            if framing == "datagram" or (framing == "line" and b == b"\n"):
                return out

    def close(self):
        for box in self._to.values():
            box.close()
        for pid in list(self._from):
            self._drop(pid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

// SPDX-License-Identifier: MIT
// Direct communication through pid/: send(P) and receive(Q) from the shell
// and from libmailbox, sender identity, process exit, pid reuse, who may
// reach whom, and several pairs at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <mailbox/direct.hpp>

#include "harness.h"

using mt::child;
using mt::finish;
using mt::reap;

namespace {

using mailbox::Clock;
using mt::Mount;
using mt::Proc;
using mt::q;
using namespace std::chrono_literals;

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// ---- from the shell ------------------------------------------------------------

TEST(DirectShell, SendToAProcessReceiveFromItsSender) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  // The receiver reads pid/<the shell>; the shell writes pid/<the receiver>.
  mt::Run r = m.sh(R"SH(T=$(mktemp)
python3 - $$ > $T <<'PY' &
import os, sys
src = sys.argv[1]
with open('pid/' + src, 'rb') as f:
    data = f.read()
print(data.decode().strip() + '|' + os.getxattr('pid/' + src, 'user.mailbox.sender').decode())
PY
R=$!
echo hello > pid/$R
wait $R; cat $T; rm -f $T; echo $$)SH");
  auto l = lines(r.out);
  ASSERT_EQ(l.size(), 2u) << r.out << r.err;
  EXPECT_EQ(l[0], "hello|pid=" + l[1] + " uid=0 gid=0");
  EXPECT_EQ(m.daemon_stderr(), "");
}

TEST(DirectShell, ReceiveFromAnyNamesEachSender) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // Three subshells each send their own pid; the receiver checks every
  // message against the sender the daemon names.
  mt::Run r = m.sh(R"SH(T=$(mktemp)
python3 - > $T <<'PY' &
import os
ok = set()
for i in range(3):
    with open('pid/any', 'rb') as f:
        data = f.read().decode().strip()
    sender = os.getxattr('pid/any', 'user.mailbox.sender').decode()
    if sender != 'pid=%s uid=0 gid=0' % data:
        print('mismatch', data, sender)
    ok.add(data)
print(len(ok))
PY
R=$!
for i in 1 2 3; do ( echo $BASHPID > pid/$R ) & done
wait; cat $T; rm -f $T)SH",
                   15000);
  EXPECT_EQ(r.out, "3\n") << r.err;
}

TEST(DirectShell, SenderXattrOnAnOrdinaryMailbox) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh(R"SH(touch box; echo hi > box; echo there > box
python3 - <<'PY'
import os, threading
with open('box', 'rb') as f:
    f.read()
print(os.getxattr('box', 'user.mailbox.sender').decode())
def other():  # a thread that received nothing has no sender to show
    try:
        os.getxattr('box', 'user.mailbox.sender')
        print('unexpected')
    except OSError as e:
        print('other thread', e.errno == 61)
t = threading.Thread(target=other); t.start(); t.join()
PY
echo $$)SH");
  auto l = lines(r.out);
  ASSERT_EQ(l.size(), 3u) << r.out << r.err;
  EXPECT_EQ(l[0], "pid=" + l[2] + " uid=0 gid=0");
  EXPECT_EQ(l[1], "other thread True");
  // Not listed: it depends on who asks.
  EXPECT_FALSE(has(m.sh("getfattr -d -m - box").out, "user.mailbox.sender="));
}

TEST(DirectShell, NoSuchProcessIsESRCH) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh("echo x > pid/32767; echo $?");  // pid_max - 1: free on a quiet machine
  if (kill(32767, 0) == 0) GTEST_SKIP() << "pid 32767 exists";
  EXPECT_TRUE(has(r.err, "No such process")) << r.err;
  EXPECT_EQ(r.out, "1\n");
  r = m.sh("cat pid/32767");
  EXPECT_TRUE(has(r.err, "No such process")) << r.err;
  EXPECT_TRUE(has(m.sh("cat pid/nope").err, "No such file")) << "only pids, to.P, from.Q, any";
}

TEST(DirectShell, WhatAnExitedSenderLeftIsStillReceived) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // The shell itself receives (builtin read; `cat` would be another process).
  mt::Run r = m.sh(R"SH(python3 -c "import os; open('pid/%d' % os.getppid(), 'w').write('last words\n')" &
P=$!; wait $P
read -r x < pid/$P; echo "$x"; read -r x < pid/$P; echo $?; cat pid/$P)SH");
  EXPECT_EQ(r.out, "last words\n1\n");
  EXPECT_TRUE(has(r.err, "No such process")) << r.err;  // drained: nothing more will come
}

TEST(DirectShell, BlockedReceiveFailsPromptlyWhenTheSenderExits) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Proc sender("exec sleep 1000", m.dir());  // sends nothing, then exits
  Proc receiver("exec python3 - " + std::to_string(sender.pid()) + R"SH( <<'PY'
import os, sys
f = open('pid/' + sys.argv[1], 'rb')
print('@ready', file=sys.stderr, flush=True)
try:
    f.read()
    print('got a message')
except OSError as e:
    print(e.errno)
PY)SH",
                m.dir());
  ASSERT_TRUE(receiver.wait_blocked()) << receiver.finish(0).err;
  EXPECT_TRUE(receiver.running());  // not before the exit
  sender.signal(SIGKILL);
  ASSERT_TRUE(sender.exits());
  mt::Run r = receiver.finish();
  EXPECT_FALSE(r.timed_out) << "the receive outlived its sender";
  EXPECT_EQ(r.out, "3\n") << r.err;  // ESRCH once the sender has exited
}

TEST(DirectShell, SignalEndsABlockedReceive) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Proc target("exec sleep 1000", m.dir());
  Proc cat(std::string(mt::kReadySh) + "exec cat pid/" + std::to_string(target.pid()), m.dir());
  ASSERT_TRUE(cat.wait_blocked());
  cat.signal(SIGINT);
  EXPECT_TRUE(cat.exits());
  EXPECT_EQ(cat.finish().status, 128 + SIGINT);
}

TEST(DirectShell, MailToAnExitedProcessIsDiscardedCountedAndNeverReachesAReusedPid) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to steer pid allocation";
  Mount m;
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh(R"SH(sleep 1000 & Q=$!
for i in 1 2 3; do echo secret$i > pid/$Q; done
getfattr -n user.mailbox.discarded --only-values pid; echo
kill $Q; wait $Q
# Poll until the exit is seen (the bound is a hang guard: 20 s).
for i in $(seq 1000); do [ "$(getfattr -n user.mailbox.discarded --only-values pid)" = 3 ] && break; sleep 0.02; done
getfattr -n user.mailbox.discarded --only-values pid; echo
# A new process with the same pid (steered through ns_last_pid) finds nothing.
S=$(mktemp); O=$(mktemp)
cat > $S <<'PY'
import os, sys
if os.getpid() != int(sys.argv[1]):
    print('other'); sys.exit()
got = []
for name in ('pid/any', 'pid/' + sys.argv[2]):
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    try:
        got.append(os.read(fd, 100))
    except BlockingIOError:
        pass
    os.close(fd)
print('reused', got)
PY
for try in 1 2 3 4 5 6 7 8; do
  echo $((Q - 1)) > /proc/sys/kernel/ns_last_pid
  python3 $S $Q $$ > $O
  [ "$(cat $O)" != other ] && break
done
cat $O; rm -f $S $O)SH");
  EXPECT_EQ(r.out, "0\n3\nreused []\n") << r.err;
}

TEST(DirectShell, LsShowsTheCallersLinksWithCounts) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh(R"SH(T=$(mktemp); G=$(mktemp -u)
mkfifo $G
python3 - $$ $G > $T <<'PY' &
import os, sys
open(sys.argv[2]).read()  # until the shell has sent
names = sorted(os.listdir('pid'))
print(names == sorted(['any', sys.argv[1], sys.argv[1] + '-to-%d' % os.getpid()]), os.stat('pid/' + sys.argv[1]).st_size, os.stat('pid/any').st_size)
print(open('pid/' + sys.argv[1]).read().strip(), open('pid/' + sys.argv[1]).read().strip())
print(os.stat('pid/' + sys.argv[1]).st_size, sorted(os.listdir('pid')))  # drained: not listed
PY
R=$!
echo one > pid/$R; echo two > pid/$R
stat -c %s pid/$$-to-$R          # root sees every link
ls pid | grep -c -- -to-
echo go > $G
wait $R; cat $T; rm -f $T $G)SH");
  EXPECT_EQ(r.out, "2\n1\nTrue 2 2\none two\n0 ['any']\n") << r.err;
}

TEST(DirectShell, ManyShortLivedSendersToOneReceiverFromAny) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // Each sender exits at once: its link is orphaned, drained through pid/any
  // (whose poll tokens are armed on it) and dropped.
  mt::Run r = m.sh(R"SH(T=$(mktemp)
python3 - > $T <<'PY' &
got = sorted(int(open('pid/any').read()) for i in range(60))
print(got == list(range(60)))
PY
R=$!
for i in $(seq 0 59); do bash -c "echo $i > pid/$R"; done
wait $R; cat $T; rm -f $T
for i in $(seq 400); do [ "$(getfattr -n user.mailbox.links --only-values pid)" = 0 ] && break; sleep 0.05; done
getfattr -n user.mailbox.links --only-values pid)SH",
                   30000);
  EXPECT_EQ(r.out, "True\n0") << r.err;
  EXPECT_EQ(m.daemon_stderr(), "");
}

TEST(DirectShell, LinksTakeTheMountsDefaults) {
  Mount m("framing=datagram,capacity=1,timeout_ms=300");
  ASSERT_TRUE(m.ok());
  // Datagram framing: each write() is a message; capacity 1: a second send
  // would block (O_NONBLOCK: EAGAIN); timeout_ms: a blocked receive fails.
  mt::Run r = m.sh(R"SH(sleep 1000 & Q=$!
python3 - $Q <<'PY'
import errno, os, sys, time
q = sys.argv[1]
fd = os.open('pid/' + q, os.O_WRONLY | os.O_NONBLOCK)
os.write(fd, b'one')
try:
    os.write(fd, b'two'); print('unexpected')
except BlockingIOError:
    print('full')
print(os.getxattr('pid/to.' + q, 'user.mailbox.messages'), os.getxattr('pid/to.' + q, 'user.mailbox.framing'))
t0 = time.time()
try:
    os.read(os.open('pid/' + q, os.O_RDONLY), 10)
except OSError as e:
    print(errno.errorcode[e.errno], 0.2 < time.time() - t0)  # not before the timeout
PY
kill $Q)SH");
  EXPECT_EQ(r.out, "full\nb'1' b'datagram'\nETIMEDOUT True\n") << r.err;
}

TEST(DirectShell, ThePidNameIsReserved) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh(
      "mkdir pid; python3 -c \"import os\ntry:\n os.open('pid', os.O_CREAT | os.O_EXCL)\n"
      "except OSError as e: print(e.errno)\"; rmdir pid; ls -A; stat -c %F pid");
  EXPECT_TRUE(has(r.err, "mkdir: cannot create directory")) << r.err;
  EXPECT_TRUE(has(r.err, "File exists")) << r.err;
  EXPECT_TRUE(has(r.err, "rmdir: failed to remove 'pid': Device or resource busy")) << r.err;
  EXPECT_EQ(r.out, "17\ndirectory\n");  // EEXIST; not listed at the root
  // A name that is not a process id does not exist, and a create cannot make it.
  EXPECT_TRUE(has(m.sh("touch pid/box").err, "No such file or directory"));
  EXPECT_TRUE(has(m.sh("echo x > pid/4194304").err, "No such file or directory"));
  EXPECT_TRUE(has(m.sh("mkdir pid/d").err, "Operation not permitted"));
  EXPECT_EQ(m.sh("mkdir jobs && touch jobs/pid && ls jobs").out, "pid\n");  // only the root's
}

TEST(DirectShell, NonblockingAndPollOnPidAny) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Proc py(R"SH(exec python3 - <<'PY'
import os, select, sys
fd = os.open('pid/any', os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 100); print('unexpected')
except BlockingIOError:
    print('EAGAIN')
p = select.poll(); p.register(fd, select.POLLIN)
print('@ready', file=sys.stderr, flush=True)
ev = p.poll()  # the test's hang guard ends it if the wake-up never comes
print(ev and ev[0][1] & select.POLLIN != 0, os.read(fd, 100))
PY)SH",
          m.dir());
  ASSERT_TRUE(py.wait_blocked(mt::Sleep::poll)) << py.finish(0).err;  // polling before the send
  ASSERT_EQ(m.sh("echo late > pid/" + std::to_string(py.pid())).status, 0);
  mt::Run r = py.finish();
  EXPECT_FALSE(r.timed_out) << "the poll was not woken";
  EXPECT_EQ(r.out, "EAGAIN\nTrue b'late\\n'\n") << r.err;
}

TEST(DirectShell, AnotherUserCanReadNoOnesLinksButItsOwnNorSendToRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  Mount m("allow_other");
  ASSERT_TRUE(m.ok());
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
  Proc target("exec sleep 1000", m.dir());  // a root process
  const std::string R = std::to_string(target.pid());
  const std::string me = lines(m.sh("echo secret > pid/" + R + "; echo $$").out).at(0);
  // nobody: not allowed to signal root, so not allowed to send to it.
  mt::Run r = m.sh(std::string(kNobody) + "bash -c " + q("echo x > pid/" + R));
  EXPECT_TRUE(has(r.err, "Operation not permitted")) << r.err;
  // Its own view has no links; root's view of the pair is not reachable; reading
  // pid/<a root process> gives nobody's own (empty) link from that process.
  r = m.sh(std::string(kNobody) + "bash -c " +
           q("ls pid; ls pid/" + me + "-to-" + R +
             " 2>&1 | grep -c 'No such file';"
             "python3 -c \"import os\nfd = os.open('pid/" +
             R +
             "', os.O_RDONLY | os.O_NONBLOCK)\n"
             "try: print(os.read(fd, 100))\nexcept BlockingIOError: print('EAGAIN')\"; whoami"));
  EXPECT_EQ(r.out, "any\n1\nEAGAIN\nnobody\n") << r.err;
  // nobody may send to its own processes.
  r = m.sh(
      std::string(kNobody) + "bash -c " +
      q("python3 -c \"import os\nprint(open('pid/%d' % os.getppid()).read().strip())\" & echo mine > pid/$!; wait"));
  EXPECT_EQ(r.out, "mine\n") << r.err;
  // A user's ls shows the links holding messages for its own processes, not root's.
  r = m.sh(std::string(kNobody) + "bash -c " + q("sleep 1000 & echo x > pid/$!; ls pid | grep -c -- -to-; kill $!"));
  EXPECT_EQ(r.out, "1\n") << r.err;
  // The message to the root process is still there, for it alone.
  EXPECT_EQ(m.sh("stat -c %s pid/" + me + "-to-" + R).out, "1\n");
}

TEST(DirectShell, SeveralPairsInParallelLoseAndCrossNothing) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // Four receivers read pid/any; four senders each send 100 numbered
  // messages to their own receiver, all at once.
  mt::Run r = m.sh(R"SH(T=$(mktemp -d)
for p in 1 2 3 4; do
  python3 - $p > $T/r$p <<'PY' &
import os, sys
want, bad, senders = 0, 0, set()
for i in range(100):
    with open('pid/any', 'rb') as f:
        pair, n = f.read().decode().split()
    senders.add(os.getxattr('pid/any', 'user.mailbox.sender').decode())
    if pair != sys.argv[1] or int(n) != want: bad += 1
    want += 1
print(sys.argv[1], bad, len(senders))
PY
  R[$p]=$!
done
for p in 1 2 3 4; do ( for i in $(seq 0 99); do echo "$p $i" > pid/${R[$p]}; done ) & done
wait; cat $T/r*; rm -rf $T)SH",
                   60000);
  EXPECT_EQ(r.out, "1 0 1\n2 0 1\n3 0 1\n4 0 1\n") << r.err;
  EXPECT_EQ(m.daemon_stderr(), "");
}

// ---- from libmailbox -------------------------------------------------------------

TEST(DirectLibrary, SendToAndReceiveFromAcrossProcesses) {
  Mount m;
  ASSERT_TRUE(m.ok());
  const pid_t parent = getpid();
  constexpr int kN = 5000;
  pid_t c = child([&] {
    auto d = mailbox::Direct::open(m.dir());
    if (!d) return 10;
    std::string msg;
    mailbox::Sender from;
    for (int i = 0; i < kN; i++) {
      if (d->receive_from(parent, msg, &from) != 0) return 11;
      if (msg != std::to_string(i) || from.pid != parent || from.uid != geteuid()) return 12;
    }
    return d->send_to(parent, "done") == 0 ? 0 : 13;
  });
  auto d = mailbox::Direct::open(m.dir());
  ASSERT_TRUE(d) << strerror(d.error());
  for (int i = 0; i < kN; i++) ASSERT_EQ(d->send_to(c, std::to_string(i)), 0) << i;
  std::string reply;
  EXPECT_EQ(d->receive_from_for(c, reply, 20s), 0);
  EXPECT_EQ(reply, "done");
  EXPECT_EQ(finish(c), 0);
}

TEST(DirectLibrary, LibraryAndShellTalkBothWays) {
  Mount m;
  ASSERT_TRUE(m.ok());
  const std::string me = std::to_string(getpid());
  Proc py("exec python3 - " + me + R"SH( <<'PY'
import os, sys
src = sys.argv[1]
data = open('pid/' + src, 'rb').read()
with open('pid/' + src, 'w') as f:
    f.write(data.decode().upper() + '|' + os.getxattr('pid/' + src, 'user.mailbox.sender').decode())
PY)SH",
          m.dir());
  auto d = mailbox::Direct::open(m.dir());
  ASSERT_TRUE(d);
  ASSERT_EQ(d->send_to(py.pid(), "from the library"), 0);
  std::string reply;
  mailbox::Sender from;
  ASSERT_EQ(d->receive_from_for(py.pid(), reply, 20s, &from), 0);
  EXPECT_EQ(reply, "FROM THE LIBRARY|pid=" + me + " uid=0 gid=0");
  EXPECT_EQ(from.pid, py.pid());
  EXPECT_EQ(py.finish().status, 0);
}

TEST(DirectLibrary, ReceiveFromAnyNamesTheSender) {
  Mount m;
  ASSERT_TRUE(m.ok());
  const pid_t parent = getpid();
  int hold[2];  // the senders stay alive until the parent has received (EOF here)
  ASSERT_EQ(pipe(hold), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 3; i++)
    kids.push_back(child([&] {
      close(hold[1]);
      auto d = mailbox::Direct::open(m.dir());
      if (!d || d->send_to(parent, std::to_string(getpid())) != 0) return 1;
      char c;
      return read(hold[0], &c, 1) == 0 ? 0 : 2;
    }));
  close(hold[0]);
  auto d = mailbox::Direct::open(m.dir());
  ASSERT_TRUE(d);
  std::set<pid_t> seen;
  for (int i = 0; i < 3; i++) {
    std::string msg;
    mailbox::Sender from;
    ASSERT_EQ(d->receive_from_any_for(msg, 20s, &from), 0);
    EXPECT_EQ(msg, std::to_string(from.pid));
    seen.insert(from.pid);
  }
  EXPECT_EQ(seen, std::set<pid_t>(kids.begin(), kids.end()));
  std::string none;
  EXPECT_EQ(d->try_receive_from_any(none), EAGAIN);
  EXPECT_EQ(d->receive_from_any_for(none, 100ms), ETIMEDOUT);
  close(hold[1]);
  for (pid_t k : kids) EXPECT_EQ(finish(k), 0);
}

TEST(DirectLibrary, ErrorsAndTheExitOfTheSender) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto d = mailbox::Direct::open(m.dir());
  ASSERT_TRUE(d);
  if (kill(32767, 0) != 0) {
    EXPECT_EQ(d->send_to(32767, "x"), ESRCH);
  }
  pid_t c = child([] {  // a sender that sends nothing and lives until killed
    pause();
    return 0;
  });
  std::string msg;
  EXPECT_EQ(d->try_receive_from(c, msg), EAGAIN);
  EXPECT_EQ(d->receive_from_for(c, msg, 50ms), ETIMEDOUT);
  // Another process kills the sender once this thread sleeps in receive_from().
  const pid_t me = getpid();
  pid_t killer = child([&] { return mt::wait_task_sleeping(me, mt::Sleep::any) && kill(c, SIGKILL) == 0 ? 0 : 1; });
  EXPECT_EQ(d->receive_from(c, msg), ESRCH);  // blocked, then the sender exits
  EXPECT_EQ(finish(killer), 0);
  EXPECT_EQ(finish(c), 128 + SIGKILL);
  EXPECT_EQ(d->send_to(c, "late"), ESRCH);
}

TEST(DirectLibrary, StressSeveralPairsChecksummed) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // Pairs of processes; receivers check content, order, checksum and sender.
  constexpr int kPairs = 4, kN = 3000;
  int fds[kPairs][2];
  std::vector<pid_t> procs;
  for (int p = 0; p < kPairs; p++) {
    ASSERT_EQ(pipe(fds[p]), 0);
    procs.push_back(child([&, p] {  // receiver: tells its pid through the pipe
      auto d = mailbox::Direct::open(m.dir());
      if (!d) return 10;
      pid_t me = getpid();
      if (write(fds[p][1], &me, sizeof me) != sizeof me) return 11;
      std::string msg;
      mailbox::Sender from;
      pid_t sender = 0;
      for (int i = 0; i < kN; i++) {
        // Half from the named sender, half from anyone: nothing may cross.
        int e = i % 2 && sender ? d->receive_from_for(sender, msg, 20s, &from)
                                : d->receive_from_any_for(msg, 20s, &from);
        if (e != 0) return 12;
        if (!sender) sender = from.pid;
        unsigned pair, n;
        unsigned long sum;
        char body[300];
        if (sscanf(msg.c_str(), "%u %u %lu %299s", &pair, &n, &sum, body) != 4) return 13;
        unsigned long h = 5381;
        for (char* c = body; *c; c++) h = h * 33 + static_cast<unsigned char>(*c);
        if (pair != unsigned(p) || n != unsigned(i) || h != sum || from.pid != sender) return 14;
      }
      return 0;
    }));
  }
  int hold[2];  // the senders stay alive until every receiver is done (EOF here)
  ASSERT_EQ(pipe(hold), 0);
  std::vector<pid_t> senders;
  for (int p = 0; p < kPairs; p++) {
    pid_t to;
    ASSERT_EQ(read(fds[p][0], &to, sizeof to), ssize_t(sizeof to));
    senders.push_back(child([&, p, to] {
      close(hold[1]);
      auto d = mailbox::Direct::open(m.dir());
      if (!d) return 20;
      for (int i = 0; i < kN; i++) {
        std::string body(1 + (i * 7 + p) % 200, char('a' + (i + p) % 26));
        unsigned long h = 5381;
        for (char c : body) h = h * 33 + static_cast<unsigned char>(c);
        if (d->send_to_for(to, std::to_string(p) + " " + std::to_string(i) + " " + std::to_string(h) + " " + body,
                           20s) != 0)
          return 21;
      }
      char c;
      return read(hold[0], &c, 1) == 0 ? 0 : 22;
    }));
  }
  close(hold[0]);
  for (pid_t c : procs) EXPECT_EQ(finish(c, 60000), 0);  // the receivers
  close(hold[1]);
  for (pid_t c : senders) EXPECT_EQ(finish(c), 0);
  for (auto& f : fds) close(f[0]), close(f[1]);
  EXPECT_EQ(m.daemon_stderr(), "");
}

}  // namespace

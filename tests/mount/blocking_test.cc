// SPDX-License-Identifier: MIT
// Blocking like the kernel does: receive on empty, send on full, rendezvous,
// O_NONBLOCK, timeouts, signals, and deletion of a mailbox with waiters.
#include <gtest/gtest.h>
#include <signal.h>

#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;

TEST(Blocking, ReceiveBlocksUntilASendArrives) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc reader("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));  // parked in the daemon
  EXPECT_TRUE(reader.running());
  m.sh("echo wake > box");
  EXPECT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().out, "wake\n");
}

TEST(Blocking, SendToAFullMailboxBlocksAtClose) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok());
  m.sh("echo first > box");
  Proc sender("echo second > box; echo sent", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  EXPECT_TRUE(sender.running());
  EXPECT_EQ(m.sh("cat box").out, "first\n");
  EXPECT_TRUE(sender.exits());
  EXPECT_EQ(sender.finish().out, "sent\n");
  EXPECT_EQ(m.sh("cat box").out, "second\n");
}

TEST(Blocking, RendezvousSendWaitsForTheReceiver) {
  Mount m("capacity=0");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc sender("echo handoff > box; echo delivered", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  EXPECT_TRUE(sender.running());
  EXPECT_EQ(m.sh("cat box").out, "handoff\n");
  EXPECT_TRUE(sender.exits());
  EXPECT_EQ(sender.finish().out, "delivered\n");
}

TEST(Blocking, NonblockingGivesEagain) {
  Mount m("capacity=1,framing=datagram");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; python3 -c \"\n"
      "import os, fcntl\n"
      "r = os.open('box', os.O_RDONLY | os.O_NONBLOCK)\n"
      "try: os.read(r, 10)\n"
      "except BlockingIOError: print('read EAGAIN')\n"
      "w = os.open('box', os.O_WRONLY)\n"
      "os.write(w, b'one')\n"
      "fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)  # set later, with fcntl\n"
      "try: os.write(w, b'two')\n"
      "except BlockingIOError: print('write EAGAIN')\n"
      "print(os.read(r, 10))\n\"");
  EXPECT_EQ(r.out, "read EAGAIN\nwrite EAGAIN\nb'one'\n") << r.err;
}

TEST(Blocking, TimeoutGivesEtimedout) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; setfattr -n user.mailbox.timeout_ms -v 200 box;"
      "s=$(date +%s%N); cat box; echo rc=$?; e=$(date +%s%N); echo $(( (e - s) / 100000000 ))");
  EXPECT_NE(r.err.find("Connection timed out"), std::string::npos) << r.err;
  ASSERT_EQ(r.out.substr(0, 5), "rc=1\n");
  EXPECT_GE(std::stoi(r.out.substr(5)), 2);  // not before the timeout (no upper bound: load delays it)
}

TEST(Blocking, CtrlCOnABlockedCatReturnsAtOnceAndLosesNothing) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc reader("exec cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));
  reader.signal_group(SIGINT);
  EXPECT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().status, 128 + SIGINT);
  m.sh("echo kept > box");
  EXPECT_EQ(m.sh("cat box").out, "kept\n");
}

TEST(Blocking, SigkillFreesABlockedReaderAndLosesNothing) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc reader("exec cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));
  reader.signal(SIGKILL);
  EXPECT_TRUE(reader.exits());
  m.sh("echo kept > box");
  EXPECT_EQ(m.sh("cat box").out, "kept\n");
  EXPECT_EQ(m.sh("getfattr --only-values -n user.mailbox.received box").out, "1");
}

TEST(Blocking, InterruptedSendDeliversNothing) {
  Mount m("capacity=0");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc sender("exec bash -c 'echo lost > box'", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  sender.signal_group(SIGINT);
  EXPECT_TRUE(sender.exits());
  // Nothing to receive: a non-blocking read finds no sender either.
  auto r = m.sh(
      "dd if=box iflag=nonblock bs=64K count=1 status=none; echo rc=$?;"
      "getfattr --only-values -n user.mailbox.sent box");
  EXPECT_EQ(r.out, "rc=1\n0");
  EXPECT_NE(r.err.find("Resource temporarily unavailable"), std::string::npos) << r.err;
}

TEST(Blocking, SignalHandlerSeesEintr) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  // Python retries reads interrupted by a handled signal (PEP 475) unless the
  // handler raises; the handler raising shows the read was interrupted.
  Proc reader(
      "python3 -c \"\n"
      "import os, signal, sys\n"
      "class Woke(Exception): pass\n"
      "def h(s, f): raise Woke()\n"
      "signal.signal(signal.SIGUSR1, h)\n"
      "fd = os.open('box', os.O_RDONLY)\n"
      "print('@ready', file=sys.stderr, flush=True)\n"
      "try: os.read(fd, 100)\n"
      "except Woke: print('interrupted')\n"
      "print('@ready', file=sys.stderr, flush=True)\n"
      "print(os.read(fd, 100))\n\"",
      m.dir());
  ASSERT_TRUE(reader.wait_ready(1));
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));
  reader.signal(SIGUSR1);
  ASSERT_TRUE(reader.wait_ready(2));                                     // the first read ended
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));  // blocked again in the second
  m.sh("echo after > box");
  EXPECT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().out, "interrupted\nb'after\\n'\n");
}

TEST(Blocking, DeletingAMailboxWakesItsWaiters) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok());
  m.sh("touch empty; echo x > full");
  Proc reader("cat empty", m.dir());
  // (bash ignores errors from close(); python reports them)
  Proc sender("python3 -c \"f = open('full', 'w'); f.write('y'); f.close()\"", m.dir());
  ASSERT_TRUE(m.wait_listed("empty", "blocked_receivers", reader.pid()));
  ASSERT_TRUE(m.wait_listed("full", "blocked_senders", sender.pid()));
  m.sh("rm empty full");
  EXPECT_TRUE(reader.exits());
  EXPECT_TRUE(sender.exits());
  auto rr = reader.finish(), sr = sender.finish();
  EXPECT_NE(rr.err.find("Identifier removed"), std::string::npos) << rr.err;
  EXPECT_NE(sr.err.find("Identifier removed"), std::string::npos) << sr.err;
  EXPECT_EQ(m.sh("ls " + mt::q(m.state_dir()) + " | grep -c '^m'").out, "0\n");  // segments freed
}

TEST(Blocking, BlockedReadersAreServedInArrivalOrder) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc a("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", a.pid()));
  Proc b("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", b.pid()));
  Proc c("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", c.pid()));
  EXPECT_EQ(m.xattr("box", "blocked_receivers"),
            std::to_string(a.pid()) + " " + std::to_string(b.pid()) + " " + std::to_string(c.pid()));
  m.sh("echo 1 > box; echo 2 > box; echo 3 > box");
  EXPECT_EQ(a.finish().out, "1\n");
  EXPECT_EQ(b.finish().out, "2\n");
  EXPECT_EQ(c.finish().out, "3\n");
}

TEST(Blocking, ManyReadersDoNotOccupyWorkerThreads) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box other");
  // Far more parked reads than libfuse has worker threads (10).
  Proc readers("for i in $(seq 40); do cat box > /dev/null & done; wait", m.dir());
  ASSERT_TRUE(m.wait_words("box", "blocked_receivers", 40));
  // The mount still answers everything else (the guard is for a hang, not for speed).
  auto r = m.sh("echo hi > other; cat other; ls | wc -l");
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.out, "hi\n2\n");
  m.sh("for i in $(seq 40); do echo $i > box; done");
  EXPECT_TRUE(readers.exits());
}

TEST(Blocking, ConcurrentClosesOfOneOpenFileSendItOnce) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok());
  m.sh("echo first > box");
  // Both processes close the same open file while the mailbox is full: the
  // message written through it must be sent once, not once per close.
  Proc writer(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY)\nos.write(fd, b'A')\n"
      "pid = os.fork()\nos.close(fd)\nif pid: os.waitpid(pid, 0)\n\"",
      m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", writer.pid()));
  EXPECT_EQ(m.sh("cat box").out, "first\n");
  EXPECT_TRUE(writer.exits());
  EXPECT_EQ(m.sh("cat box").out, "A");
  EXPECT_EQ(m.sh("dd if=box iflag=nonblock bs=64K count=1 status=none 2>/dev/null; echo rc=$?").out, "rc=1\n");
  EXPECT_EQ(m.xattr("box", "sent"), "2");
}

}  // namespace

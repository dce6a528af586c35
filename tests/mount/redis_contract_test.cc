// SPDX-License-Identifier: MIT
// The contract of a local mount, across daemons: two daemons on separate
// mount points (two hosts' stand-ins) on one private redis-server, started
// by each test on a unix socket in its own temporary directory. Each check
// makes a change through one daemon and looks, or is blocked, through the
// other. No timing: readiness is a blocked_* list or a sleeping task.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "../common/redis_mounts.h"
#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;
using mt::q;
using testredis::asleep;
using testredis::lines;
using testredis::listed;
using testredis::released;

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";

class RedisContract : public testredis::ServerDaemons {
 protected:
  RedisContract() : ServerDaemons("c") {}
};

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// One message (one read(2)) of `box`, or the error dd printed.
const char* kReadOne = "dd if=box bs=64K count=1 status=none";

// ---- names ----------------------------------------------------------------------

// A name another daemon removed or moved is gone here at once: no daemon
// lets the kernel cache a name the others can change.
TEST_F(RedisContract, ANameRemovedOnOneDaemonIsGoneOnTheOtherAtOnce) {
  two();
  ASSERT_EQ(a_->sh("touch box && echo kept > moved_src && mkdir dir && touch dir/inner").status, 0);
  // Daemon a looks each name up (the kernel may remember the answer)...
  ASSERT_EQ(a_->sh("stat box moved_src dir dir/inner > /dev/null").status, 0);
  // ...and daemon b changes them.
  ASSERT_EQ(b_->sh("rm box && mv moved_src moved && rm dir/inner && rmdir dir").status, 0);
  const mt::Run r = a_->sh("cat box; cat moved_src; ls dir; stat -c %s moved");
  EXPECT_EQ(r.out, "5\n");
  EXPECT_EQ(lines(r.err).size(), 3u) << r.err;
  for (const char* n : {"cat: box", "cat: moved_src", "cannot access 'dir'"}) {
    EXPECT_TRUE(has(r.err, std::string(n) + ": No such file or directory")) << n << ": " << r.err;
  }
  EXPECT_EQ(a_->sh("cat moved").out, "kept\n");
}

TEST_F(RedisContract, TouchLsRmMvMkdirAndSizesAcrossDaemons) {
  two();
  ASSERT_EQ(a_->sh("mkdir d && touch d/box && printf hello > d/box && printf again > d/box").status, 0);
  // The backlog and its size, as daemon b sees them.
  EXPECT_EQ(b_->sh("stat -c '%n %s %F' d/box").out, "d/box 10 regular file\n");
  EXPECT_EQ(b_->xattr("d/box", "messages"), "2");
  EXPECT_EQ(b_->sh("ls -l d | awk 'NR > 1 { print $5, $9 }'").out, "10 box\n");
  EXPECT_EQ(b_->sh("cat d/box").out, "hello");
  EXPECT_EQ(a_->sh("stat -c %s d/box").out, "5\n");
  ASSERT_EQ(b_->sh("mkdir d/e && mv d/box d/e/box2").status, 0);
  EXPECT_EQ(a_->sh("find . -mindepth 1 | sort").out, "./d\n./d/e\n./d/e/box2\n");
  EXPECT_EQ(a_->sh("cat d/e/box2").out, "again");
  ASSERT_EQ(a_->sh("rm d/e/box2 && rmdir d/e").status, 0);
  EXPECT_EQ(b_->sh("ls -A d").out, "");
}

// ---- framings -------------------------------------------------------------------

TEST_F(RedisContract, TheFramingSetOnOneDaemonIsTheOthersToo) {
  two();
  ASSERT_EQ(a_->sh("touch lines dgrams && setfattr -n user.mailbox.framing -v line lines && "
                   "setfattr -n user.mailbox.framing -v datagram dgrams")
                .status,
            0);
  EXPECT_EQ(b_->xattr("lines", "framing"), "line");
  EXPECT_EQ(b_->xattr("dgrams", "framing"), "datagram");
  // Line: one message per line written through b.
  ASSERT_EQ(b_->sh("printf 'one\\ntwo\\n' > lines").status, 0);
  EXPECT_EQ(a_->xattr("lines", "messages"), "2");
  EXPECT_EQ(a_->sh("dd if=lines bs=64K count=1 status=none").out, "one\n");
  // Datagram: one message per write(2) through b.
  ASSERT_EQ(b_->sh("python3 -c \"import os\nfd = os.open('dgrams', os.O_WRONLY)\nos.write(fd, b'x')\n"
                   "os.write(fd, b'yz')\"")
                .status,
            0);
  EXPECT_EQ(a_->xattr("dgrams", "messages"), "2");
  EXPECT_EQ(a_->sh("dd if=dgrams bs=64K count=1 status=none").out, "x");
  EXPECT_EQ(a_->sh("dd if=dgrams bs=64K count=1 status=none").out, "yz");
  // File (the default): one message per open-write-close, whatever was written.
  ASSERT_EQ(b_->sh("touch whole && printf 'a\\nb\\n' > whole").status, 0);
  EXPECT_EQ(a_->xattr("whole", "messages"), "1");
  EXPECT_EQ(a_->sh("cat whole").out, "a\nb\n");
}

// ---- capacities -----------------------------------------------------------------

TEST_F(RedisContract, ACapacitySetOnOneDaemonBoundsSendsThroughTheOther) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.framing -v datagram box && "
                   "setfattr -n user.mailbox.capacity -v 2 box && echo 1 > box")
                .status,
            0);
  EXPECT_EQ(b_->xattr("box", "capacity"), "2");
  // b fills it, then a non-blocking send there finds it full.
  const mt::Run r = b_->sh(
      "echo 2 > box && python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "try: os.write(fd, b'3')\nexcept BlockingIOError: print('EAGAIN')\"");
  EXPECT_EQ(r.out, "EAGAIN\n") << r.err;
  // A blocked send through b is released by a receive through a.
  Proc sender("echo 3 > box; echo sent", b_->dir());
  const auto sent = released(sender, listed(*b_, "box", "blocked_senders"),
                             [&] { EXPECT_EQ(a_->sh(kReadOne).out, "1\n"); });
  ASSERT_TRUE(sent);
  EXPECT_EQ(sent->out, "sent\n");
  EXPECT_EQ(a_->xattr("box", "messages"), "2");
}

TEST_F(RedisContract, UnboundedTakesMoreThanTheDefaultThroughEitherDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v unbounded box").status, 0);
  EXPECT_EQ(b_->xattr("box", "capacity"), "unbounded");
  ASSERT_EQ(b_->sh("for i in $(seq 100); do echo $i > box || exit 1; done").status, 0);  // never blocks
  EXPECT_EQ(a_->xattr("box", "messages"), "100");
  EXPECT_EQ(a_->sh("for i in $(seq 100); do cat box; done | tail -n1").out, "100\n");
}

TEST_F(RedisContract, RendezvousReceiverOnOneDaemonSenderOnTheOther) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v 0 box").status, 0);
  EXPECT_EQ(b_->xattr("box", "capacity"), "0");
  // Receiver first, on a.
  Proc reader("cat box", a_->dir());
  const auto r = released(reader, listed(*a_, "box", "blocked_receivers"), [&] {
    const mt::Run s = b_->sh("echo baton > box; echo rc=$?");
    EXPECT_EQ(s.out, "rc=0\n") << s.err;
  });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "baton\n");
  // Sender first, on b: it waits until a receives.
  Proc sender("echo second > box; echo delivered", b_->dir());
  const auto s = released(sender, listed(*b_, "box", "blocked_senders"),
                          [&] { EXPECT_EQ(a_->sh("cat box").out, "second\n"); });
  ASSERT_TRUE(s);
  EXPECT_EQ(s->out, "delivered\n");
  EXPECT_EQ(b_->xattr("box", "sent"), "2");
  EXPECT_EQ(b_->xattr("box", "messages"), "0");
}

// A non-blocking rendezvous send through one daemon is taken by a receiver
// blocked on the other, as on a local mount: the push hands the message to
// that daemon's parked receive (design.md §14, hand-offs).
TEST_F(RedisContract, ANonblockingRendezvousSendReachesAReceiverBlockedOnTheOtherDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v 0 box && "
                   "setfattr -n user.mailbox.framing -v line box")
                .status,
            0);
  Proc reader("head -n 1 box", b_->dir());
  ASSERT_TRUE(b_->wait_listed("box", "blocked_receivers", reader.pid()));
  const mt::Run s = a_->sh(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "try: os.write(fd, b'offer\\n'); print('sent')\nexcept BlockingIOError: print('EAGAIN')\"");
  EXPECT_EQ(s.out, "sent\n") << s.err;
  EXPECT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().out, "offer\n");
  EXPECT_EQ(a_->xattr("box", "sent"), "1");
  EXPECT_EQ(b_->xattr("box", "received"), "1");
  EXPECT_EQ(a_->xattr("box", "messages"), "0");
}

// The same with datagram framing and two receivers: each non-blocking send
// reaches one of them.
TEST_F(RedisContract, NonblockingRendezvousSendsReachReceiversBlockedOnTheOtherDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v 0 box && "
                   "setfattr -n user.mailbox.framing -v datagram box")
                .status,
            0);
  Proc r1(kReadOne, a_->dir()), r2(kReadOne, a_->dir());
  ASSERT_TRUE(a_->wait_listed("box", "blocked_receivers", r1.pid()));
  ASSERT_TRUE(a_->wait_listed("box", "blocked_receivers", r2.pid()));
  const mt::Run s = b_->sh(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "for m in (b'one', b'two'):\n  try: os.write(fd, m); print('sent')\n  except BlockingIOError: print('EAGAIN')\"");
  EXPECT_EQ(s.out, "sent\nsent\n") << s.err;
  std::vector<std::string> got;
  for (Proc* r : {&r1, &r2}) {
    EXPECT_TRUE(r->exits());
    got.push_back(r->finish().out);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(b_->xattr("box", "sent"), "2");
  EXPECT_EQ(a_->xattr("box", "received"), "2");
  // With nobody waiting any more, a non-blocking send is refused and nothing stays queued.
  const mt::Run t = b_->sh(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "try: os.write(fd, b'x'); print('sent')\nexcept BlockingIOError: print('EAGAIN')\"");
  EXPECT_EQ(t.out, "EAGAIN\n") << t.err;
  EXPECT_EQ(a_->xattr("box", "messages"), "0");
}

// Many processes: readers on both daemons, writers on both, a rendezvous
// mailbox, so most messages go from one daemon to a receive parked on the
// other (hand-offs). Checksums: nothing lost, nothing duplicated, and no
// waiter entry or hand-off left on the server once everyone is done.
TEST_F(RedisContract, ManyCrossDaemonHandOffsLoseAndRepeatNothing) {
  constexpr int kWriters = 6, kEach = 40, kReaders = 4;
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v 0 box && "
                   "setfattr -n user.mailbox.framing -v datagram box")
                .status,
            0);
  const std::string per_reader = std::to_string(kWriters * kEach / kReaders);
  std::vector<std::unique_ptr<Proc>> readers, writers;
  for (int r = 0; r < kReaders; r++)
    readers.push_back(
        std::make_unique<Proc>("python3 -c \"\nimport os\nfd = os.open('box', os.O_RDONLY)\nfor i in range(" +
                                   per_reader + "): print(os.read(fd, 65536).decode(), flush=True)\"",
                               (r % 2 ? a_ : b_)->dir()));
  for (int w = 0; w < kWriters; w++)
    writers.push_back(
        std::make_unique<Proc>("python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY)\nfor k in range(" +
                                   std::to_string(kEach) + "): os.write(fd, b'w" + std::to_string(w) + "-%d' % k)\"",
                               (w % 2 ? b_ : a_)->dir()));
  for (auto& p : writers) {
    const mt::Run r = p->finish();
    EXPECT_EQ(r.status, 0) << r.err;
  }
  std::vector<std::string> got, sent;
  for (auto& p : readers) {
    const mt::Run r = p->finish();
    EXPECT_EQ(r.status, 0) << r.err;
    for (auto& l : lines(r.out)) got.push_back(l);
  }
  for (int w = 0; w < kWriters; w++)
    for (int k = 0; k < kEach; k++) sent.push_back("w" + std::to_string(w) + "-" + std::to_string(k));
  std::sort(sent.begin(), sent.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, sent);  // each exactly once
  EXPECT_EQ(a_->xattr("box", "received"), std::to_string(kWriters * kEach));
  EXPECT_EQ(b_->xattr("box", "messages"), "0");
  const std::string handoffs = testredis::cli(server_, "HGET 'mbx:{c:1}:m' handoffs");
  EXPECT_GT(std::atoi(handoffs.c_str()), 0) << "no message went to a receive parked on the other daemon";
  // Acknowledged, and no receive left registered (readiness: the readers' daemons settled).
  EXPECT_TRUE(mt::wait_until([&] { return testredis::cli(server_, "HLEN 'mbx:{c:1}:x'") == "0"; }));
  EXPECT_TRUE(mt::wait_until([&] { return testredis::cli(server_, "HLEN 'mbx:{c:1}:w'") == "0"; }));
  std::fprintf(stderr, "%d messages, %s handed to the other daemon\n", kWriters * kEach, handoffs.c_str());
}

// A daemon killed (-9) while a message handed to its parked receive waits in
// the hand-offs hash: the lease recovery returns it to the front, counted in
// user.mailbox.returned, and a receive through the other daemon gets it.
TEST_F(RedisContract, AHandOffToADaemonKilledBeforeItDeliveredIsReturned) {
  two("lease_ms=4000");  // b's lease outlives the send below; its end is the recovery's readiness
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v 0 box && "
                   "setfattr -n user.mailbox.framing -v datagram box")
                .status,
            0);
  Proc reader(kReadOne, b_->dir());
  ASSERT_TRUE(b_->wait_listed("box", "blocked_receivers", reader.pid()));
  const pid_t b_pid = b_->daemon_pid();
  std::string b_id;
  for (auto& id : lines(testredis::cli(server_, "HKEYS 'mbx:{c}:daemons'")))
    if (id.find(":" + std::to_string(b_pid) + ":") != std::string::npos) b_id = id;
  ASSERT_FALSE(b_id.empty());
  // b frozen: the hand-off reaches the server, never b's reader.
  ::kill(b_pid, SIGSTOP);
  ASSERT_TRUE(mt::wait_until([&] {
    return mt::sh("grep -q '^State:.*T' /proc/" + std::to_string(b_pid) + "/status").status == 0;
  }));
  const mt::Run s = a_->sh(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "try: os.write(fd, b'handed'); print('sent')\nexcept BlockingIOError: print('EAGAIN')\"");
  EXPECT_EQ(s.out, "sent\n") << s.err;
  EXPECT_EQ(testredis::cli(server_, "HLEN 'mbx:{c:1}:x'"), "1");
  ASSERT_TRUE(b_->stop(SIGKILL));
  reader.finish();
  // b's lease runs out; a claims it and returns the record (readiness: b's set is gone).
  ASSERT_TRUE(mt::wait_until([&] {
    return testredis::cli(server_, "EXISTS " + q("mbx:{c}:inflight:" + b_id)) == "0";
  }));
  EXPECT_EQ(testredis::cli(server_, "HLEN 'mbx:{c:1}:x'"), "0");
  EXPECT_EQ(testredis::cli(server_, "HEXISTS 'mbx:{c:1}:w' " + q(b_id)), "0");
  EXPECT_EQ(a_->xattr("box", "messages"), "1");
  EXPECT_EQ(a_->xattr("box", "returned"), "1");
  EXPECT_EQ(a_->sh(kReadOne).out, "handed");
  EXPECT_EQ(a_->xattr("box", "received"), "1");
}

// poll(2) for writing on a rendezvous mailbox through one daemon wakes when
// a receiver starts waiting through the other, and the non-blocking send
// it then makes reaches that receiver.
TEST_F(RedisContract, ARendezvousMailboxIsWritableWhileAReceiverWaitsOnTheOtherDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.capacity -v 0 box && "
                   "setfattr -n user.mailbox.framing -v datagram box")
                .status,
            0);
  Proc poller(
      "python3 -c \"\n"
      "import os, select, sys\n"
      "fd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "p = select.poll(); p.register(fd, select.POLLOUT)\n"
      "print('nobody' if not p.poll(0) else 'writable?', flush=True)\n"
      "print('@ready', file=sys.stderr, flush=True)\n"
      "ev = p.poll()\n"
      "print('writable' if ev and ev[0][1] & select.POLLOUT else ev, flush=True)\n"
      "os.write(fd, b'go'); print('sent')\n\"",
      a_->dir());
  std::unique_ptr<Proc> reader;
  const auto r = released(poller, asleep(mt::Sleep::poll),
                          [&] { reader = std::make_unique<Proc>(kReadOne, b_->dir()); });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "nobody\nwritable\nsent\n") << r->err;
  ASSERT_TRUE(reader);
  EXPECT_TRUE(reader->exits());
  EXPECT_EQ(reader->finish().out, "go");
}

// ---- O_NONBLOCK, timeout_ms, EINTR ------------------------------------------------

TEST_F(RedisContract, NonblockingReceiveOfAnEmptyMailboxGivesEagain) {
  two();
  ASSERT_EQ(a_->sh("touch box").status, 0);
  const mt::Run r = b_->sh("dd if=box iflag=nonblock bs=64K count=1 status=none; echo rc=$?");
  EXPECT_EQ(r.out, "rc=1\n");
  EXPECT_TRUE(has(r.err, "Resource temporarily unavailable")) << r.err;
  ASSERT_EQ(a_->sh("echo now > box").status, 0);
  EXPECT_EQ(b_->sh("dd if=box iflag=nonblock bs=64K count=1 status=none").out, "now\n");
}

TEST_F(RedisContract, ATimeoutSetOnOneDaemonEndsCallsOnTheOther) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.timeout_ms -v 100 box").status, 0);
  EXPECT_EQ(b_->xattr("box", "timeout_ms"), "100");
  Proc reader("cat box; echo rc=$?", b_->dir());
  EXPECT_TRUE(reader.exits());
  const mt::Run r = reader.finish();
  EXPECT_EQ(r.out, "rc=1\n");
  EXPECT_TRUE(has(r.err, "Connection timed out")) << r.err;
  EXPECT_EQ(a_->xattr("box", "received"), "0");
}

TEST_F(RedisContract, AnInterruptedReceiveConsumesNothing) {
  two();
  ASSERT_EQ(a_->sh("touch box").status, 0);
  // Python retries a read a handled signal interrupted unless the handler raises.
  Proc reader(
      "python3 -c \"\n"
      "import os, signal, sys\n"
      "class Woke(Exception): pass\n"
      "def h(s, f): raise Woke()\n"
      "signal.signal(signal.SIGUSR1, h)\n"
      "fd = os.open('box', os.O_RDONLY)\n"
      "try: os.read(fd, 100)\n"
      "except Woke: print('interrupted', flush=True)\n"
      "print('@ready', file=sys.stderr, flush=True)\n"
      "signal.pause()\n\"",
      b_->dir());
  ASSERT_TRUE(b_->wait_listed("box", "blocked_receivers", reader.pid()));
  reader.signal(SIGUSR1);
  ASSERT_TRUE(reader.wait_ready(1));  // the read ended
  ASSERT_EQ(a_->sh("echo kept > box").status, 0);
  EXPECT_EQ(a_->sh("cat box").out, "kept\n");  // nobody took it
  EXPECT_EQ(b_->xattr("box", "received"), "1");
  reader.signal(SIGKILL);
  EXPECT_EQ(reader.finish().out, "interrupted\n");
  // SIGINT of a blocked cat on b: what a then sends stays for a.
  Proc cat("exec cat box", b_->dir());
  const auto c = released(cat, listed(*b_, "box", "blocked_receivers"), [&] { cat.signal_group(SIGINT); });
  ASSERT_TRUE(c);
  EXPECT_EQ(c->out, "");
  ASSERT_EQ(a_->sh("echo again > box").status, 0);
  EXPECT_EQ(a_->sh("cat box").out, "again\n");
}

// ---- poll and select ------------------------------------------------------------------

TEST_F(RedisContract, PollIsWokenByASendThroughTheOtherDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box").status, 0);
  Proc poller(
      "python3 -c \"\n"
      "import os, select, sys\n"
      "fd = os.open('box', os.O_RDONLY | os.O_NONBLOCK)\n"
      "p = select.poll(); p.register(fd, select.POLLIN)\n"
      "print('@ready', file=sys.stderr, flush=True)\n"
      "ev = p.poll()\n"
      "print('readable' if ev and ev[0][1] & select.POLLIN else ev)\n"
      "print(os.read(fd, 100))\n\"",
      b_->dir());
  const auto r = released(poller, asleep(mt::Sleep::poll), [&] { EXPECT_EQ(a_->sh("echo ping > box").status, 0); });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "readable\nb'ping\\n'\n") << r->err;
}

TEST_F(RedisContract, SelectForWritingIsWokenByAReceiveThroughTheOtherDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.framing -v datagram box && "
                   "setfattr -n user.mailbox.capacity -v 1 box && echo full > box")
                .status,
            0);
  Proc selector(
      "python3 -c \"\n"
      "import os, select, sys\n"
      "fd = os.open('box', os.O_WRONLY | os.O_NONBLOCK)\n"
      "r, w, x = select.select([], [fd], [], 0)\n"
      "print('full' if not w else 'writable?')\n"
      "print('@ready', file=sys.stderr, flush=True)\n"
      "r, w, x = select.select([], [fd], [])\n"
      "print('writable' if w else 'no')\n"
      "os.write(fd, b'next')\n\"",
      b_->dir());
  const auto r = released(selector, asleep(mt::Sleep::poll), [&] { EXPECT_EQ(a_->sh(kReadOne).out, "full\n"); });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->out, "full\nwritable\n") << r->err;
  EXPECT_EQ(a_->sh(kReadOne).out, "next");
}

// ---- rm wakes every daemon's blocked callers ------------------------------------------

TEST_F(RedisContract, RemoveWakesBlockedCallersOnEveryDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch empty full && setfattr -n user.mailbox.capacity -v 1 full && echo x > full").status, 0);
  const std::string send = "python3 -c \"f = open('full', 'w'); f.write('y'); f.close()\"";
  Proc read_a("cat empty", a_->dir()), read_b("cat empty", b_->dir());
  Proc send_a(send, a_->dir()), send_b(send, b_->dir());
  ASSERT_TRUE(a_->wait_listed("empty", "blocked_receivers", read_a.pid()));
  ASSERT_TRUE(b_->wait_listed("empty", "blocked_receivers", read_b.pid()));
  ASSERT_TRUE(a_->wait_listed("full", "blocked_senders", send_a.pid()));
  ASSERT_TRUE(b_->wait_listed("full", "blocked_senders", send_b.pid()));
  ASSERT_EQ(a_->sh("rm empty full").status, 0);
  for (Proc* p : {&read_a, &read_b, &send_a, &send_b}) {
    EXPECT_TRUE(p->exits());
    const mt::Run r = p->finish();
    EXPECT_NE(r.status, 0);
    EXPECT_TRUE(has(r.err, "Identifier removed")) << r.err;
  }
  EXPECT_EQ(b_->sh("ls").out, "");
}

// ---- settings and counters --------------------------------------------------------------

TEST_F(RedisContract, SettingsAndCountersAreTheSameOnEveryDaemon) {
  two();
  ASSERT_EQ(a_->sh("touch box && setfattr -n user.mailbox.max_message -v 8 box").status, 0);
  EXPECT_EQ(b_->xattr("box", "max_message"), "8");
  const mt::Run big = b_->sh("python3 -c \"f = open('box', 'w'); f.write('123456789'); f.close()\"");
  EXPECT_TRUE(has(big.err, "Message too long")) << big.err;
  ASSERT_EQ(b_->sh("printf 1234 > box && printf 12345678 > box").status, 0);
  for (Mount* m : {a_.get(), b_.get()}) {
    EXPECT_EQ(m->xattr("box", "messages"), "2");
    EXPECT_EQ(m->xattr("box", "bytes"), "12");
    EXPECT_EQ(m->xattr("box", "sent"), "2");
    EXPECT_EQ(m->xattr("box", "received"), "0");
  }
  EXPECT_EQ(a_->sh("cat box").out, "1234");
  for (Mount* m : {a_.get(), b_.get()}) {
    EXPECT_EQ(m->xattr("box", "messages"), "1");
    EXPECT_EQ(m->xattr("box", "received"), "1");
  }
  // Every setting, set on b, read on a.
  ASSERT_EQ(b_->sh("setfattr -n user.mailbox.capacity -v 5 box && setfattr -n user.mailbox.framing -v line box && "
                   "setfattr -n user.mailbox.timeout_ms -v 7000 box && setfattr -n user.mailbox.max_message -v 1K box")
                .status,
            0);
  const mt::Run all = a_->sh(
      "for k in capacity framing timeout_ms max_message; do "
      "getfattr --only-values -n user.mailbox.$k box; echo; done");
  EXPECT_EQ(all.out, "5\nline\n7000\n1024\n") << all.err;
}

// Priorities need a store that orders by them: a Redis mailbox is one list,
// so the setting is refused where it is made.
TEST_F(RedisContract, ASendPriorityIsRefused) {
  two();
  ASSERT_EQ(a_->sh("touch box").status, 0);
  const mt::Run r = a_->sh("setfattr -n user.mailbox.send_priority -v 3 box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Operation not supported")) << r.err;
  EXPECT_EQ(b_->xattr("box", "send_priority"), "0");
}

// ---- mode bits and owners ---------------------------------------------------------------

TEST_F(RedisContract, ModeBitsSetOnOneDaemonAreEnforcedOnTheOther) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  two("allow_other,root_mode=1777");
  for (Mount* m : {a_.get(), b_.get()}) {
    const std::string tmp = m->dir().substr(0, m->dir().rfind('/'));
    ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
  }
  ASSERT_EQ(a_->sh("touch box && chmod 600 box && mkdir d && chmod 700 d && touch d/in && chmod 666 d/in").status, 0);
  EXPECT_EQ(b_->sh("stat -c '%a %u' box").out, "600 0\n");
  const mt::Run denied = b_->sh(std::string(kNobody) + "bash -c 'echo no > box; cat d/in'");
  EXPECT_TRUE(has(denied.err, "box: Permission denied")) << denied.err;
  EXPECT_TRUE(has(denied.err, "d/in: Permission denied")) << denied.err;
  // Opened up on b, allowed on a.
  ASSERT_EQ(b_->sh("chmod 622 box && chmod 755 d").status, 0);
  EXPECT_EQ(a_->sh(std::string(kNobody) + "bash -c 'echo yes > box && echo in > d/in'").status, 0);
  EXPECT_EQ(b_->sh("cat box d/in").out, "yes\nin\n");
  // A name made by another uid keeps its number on the other daemon.
  ASSERT_EQ(a_->sh(std::string(kNobody) + "touch theirs").status, 0);
  EXPECT_EQ(b_->sh("stat -c '%u %g' theirs").out, "65534 65534\n");
}

// ---- sender identity --------------------------------------------------------------------

TEST_F(RedisContract, TheSenderCarriesItsHost) {
  two();
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  ASSERT_EQ(a_->sh("touch box").status, 0);
  const std::string pid = a_->sh("bash -c 'echo $$; echo hi > box'").out;
  const mt::Run r = b_->sh(
      "python3 -c \"\nimport os\nwith open('box', 'rb') as f: f.read()\n"
      "print(os.getxattr('box', 'user.mailbox.sender').decode())\"");
  EXPECT_EQ(r.out, "pid=" + lines(pid).at(0) + " uid=0 gid=0 host=" + host + "\n") << r.err;
}

}  // namespace

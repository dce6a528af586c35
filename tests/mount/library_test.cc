// SPDX-License-Identifier: MIT
// libmailbox against a real mount: the library is one more participant of
// the same mailboxes, beside shell tools that go through the daemon.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <set>

#include <mailbox/mailbox.h>
#include <mailbox/mailbox.hpp>

#include "harness.h"
#include "shm/segment.h"

using mt::child;
using mt::finish;
using mt::reap;

namespace {

using mailbox::Clock;
using mailbox::Mailbox;
using mt::Mount;
using mt::Proc;
using namespace std::chrono_literals;

TEST(Library, LibraryToLibraryAcrossProcesses) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mailbox::CreateOptions o;
  o.capacity = 4;
  o.max_message = 64;
  auto box = Mailbox::create(m.path("ring"), o);
  ASSERT_TRUE(box) << strerror(box.error());
  constexpr int kN = 20000;
  pid_t consumer = child([&] {
    auto b = Mailbox::open(m.path("ring"), {.send = false, .receive = true});
    if (!b) return 10;
    std::string msg;
    for (int i = 0; i < kN; i++)
      if (b->receive(msg) != 0 || msg != std::to_string(i)) return 11;  // FIFO, nothing lost
    return 0;
  });
  for (int i = 0; i < kN; i++) ASSERT_EQ(box->send(std::to_string(i)), 0);
  EXPECT_EQ(finish(consumer, 20000), 0);
  EXPECT_EQ(m.xattr("ring", "sent"), std::to_string(kN));
  EXPECT_EQ(m.xattr("ring", "received"), std::to_string(kN));
}

// Library senders take the mount's quota a batch at a time (16 KiB for a
// 1 GiB quota) and receives give it back in batches; listing a mailbox
// settles both, so `df` is exact again after `ls -l`.
TEST(Library, DfIsExactOnceTheMailboxIsListed) {
  Mount m("max_bytes=1G");
  ASSERT_TRUE(m.ok());
  auto box = Mailbox::create(m.path("box"), {});
  ASSERT_TRUE(box) << strerror(box.error());
  for (int i = 0; i < 3; i++) ASSERT_EQ(box->send("0123456789"), 0);  // 3 records of 48 bytes
  auto used = [&](const char* before) {
    auto r = m.sh(std::string(before) + " df -B1 --output=used . | tail -1");
    return std::atoll(r.out.c_str());
  };
  EXPECT_GE(used(""), 16384) << "the sends took a batch of quota";  // else this test proves nothing
  EXPECT_EQ(used("ls -l box >/dev/null;"), 4096);                   // 144 bytes: one 4 KiB block
  std::string out;
  for (int i = 0; i < 3; i++) ASSERT_EQ(box->receive(out), 0);
  EXPECT_EQ(used("ls -l box >/dev/null;"), 0);
}

TEST(Library, SendWakesACatParkedInTheDaemon) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc cat("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", cat.pid()));
  auto box = Mailbox::open(m.path("box"), {.send = true, .receive = false});
  ASSERT_TRUE(box) << strerror(box.error());
  ASSERT_EQ(box->send("from the library"), 0);
  EXPECT_TRUE(cat.exits());
  EXPECT_EQ(cat.finish().out, "from the library");
}

// A child that opens `path` with libmailbox, says `ready`, blocks in one
// receive and writes the message to `out`; status 10, 11, 12: open, receive
// or write failed.
pid_t library_receiver(const std::string& path, mt::Ready& ready, int out) {
  return child([&] {
    auto b = Mailbox::open(path, {.send = false, .receive = true});
    if (!b) return 10;
    std::string msg;
    ready.say();
    if (b->receive(msg) != 0) return 11;
    return write(out, msg.data(), msg.size()) == ssize_t(msg.size()) ? 0 : 12;
  });
}

TEST(Library, EchoWakesALibraryReceiverSleepingOnTheFutex) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  mt::Ready ready;
  pid_t receiver = library_receiver(m.path("box"), ready, fds[1]);
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(receiver, mt::Sleep::futex));  // blocked
  m.sh("echo from the shell > box");
  EXPECT_EQ(finish(receiver), 0);
  char buf[64] = {};
  EXPECT_GT(read(fds[0], buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "from the shell\n");
  close(fds[0]);
  close(fds[1]);
}

// A sender killed between publishing a message and waking the receiver asleep
// on the ring (here: Segment::push without after_push) leaves that receiver
// asleep beside a queued message. libmailbox's waits have no periodic
// re-check of their own (it made a signal fail to end a wait), so the repair
// is the daemon's idle sweep; without it this receiver sleeps forever. A
// `cat` parked in the daemon meanwhile keeps the sweep from trimming the
// mailbox, but not from waking the library's sleepers.
TEST(Library, ALostWakeUpIsRepairedByTheDaemon) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  Proc parked("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", parked.pid()));
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  mt::Ready ready;
  pid_t receiver = library_receiver(m.path("box"), ready, fds[1]);
  close(fds[1]);  // the child's end only: a failed child ends the read below, not the suite
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(receiver, mt::Sleep::futex));  // asleep on the ring
  char loc[4096];
  const ssize_t n = getxattr(m.path("box").c_str(), "user.mailbox.segment", loc, sizeof loc);
  ASSERT_GT(n, 0) << strerror(errno);
  auto seg = mbx::Segment::attach(std::string(loc, size_t(n)));
  ASSERT_TRUE(seg.ok());
  const std::string sent = "published, never woken";
  ASSERT_TRUE(seg->push(sent.data(), sent.size(), mbx::Sender{getpid(), 0, 0}, mbx::realtime_ns()).ok());
  EXPECT_EQ(finish(receiver), 0);
  char buf[64] = {};
  EXPECT_EQ(read(fds[0], buf, sizeof buf), ssize_t(sent.size()));
  EXPECT_EQ(std::string(buf), sent);
  close(fds[0]);
}

TEST(Library, BlockedLibrarySenderIsFreedByACatReceive) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok());
  m.sh("echo first > box");
  mt::Ready ready;
  pid_t sender = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = true, .receive = false});
    if (b) ready.say();
    return b && b->send("second") == 0 ? 0 : 1;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(sender, mt::Sleep::futex));  // full: blocked
  EXPECT_EQ(m.sh("cat box").out, "first\n");
  EXPECT_EQ(finish(sender), 0);
  EXPECT_EQ(m.sh("cat box").out, "second");
}

TEST(Library, LibraryReceiveFreesASenderParkedInTheDaemon) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok());
  m.sh("echo first > box");
  Proc sender("echo second > box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  auto box = Mailbox::open(m.path("box"));
  ASSERT_TRUE(box);
  std::string msg;
  ASSERT_EQ(box->receive(msg), 0);
  EXPECT_EQ(msg, "first\n");
  EXPECT_TRUE(sender.exits());  // the doorbell told the daemon
  ASSERT_EQ(box->receive_until(msg, Clock::now() + 20s), 0);
  EXPECT_EQ(msg, "second\n");
}

TEST(Library, RendezvousSendWaitsForTheReceiver) {
  Mount m("capacity=0");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  mt::Ready ready;
  pid_t sender = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = true, .receive = false});
    if (b) ready.say();
    return b && b->send("handoff") == 0 ? 0 : 1;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(sender, mt::Sleep::futex));  // waits for a receiver
  EXPECT_EQ(m.sh("cat box").out, "handoff");
  EXPECT_EQ(finish(sender), 0);
  // A rendezvous send that nobody takes in time is withdrawn.
  auto box = Mailbox::open(m.path("box"));
  ASSERT_TRUE(box);
  EXPECT_EQ(box->send_for("nobody", 100ms), ETIMEDOUT);
  EXPECT_EQ(box->try_send("nobody"), EAGAIN);
  EXPECT_EQ(m.xattr("box", "messages"), "0");
  EXPECT_EQ(m.sh("dd if=box iflag=nonblock bs=64K count=1 status=none 2>/dev/null; echo rc=$?").out, "rc=1\n");
}

TEST(Library, NonblockingTimeoutsAndSizes) {
  Mount m("capacity=1,max_message=16");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  auto box = Mailbox::open(m.path("box"));
  ASSERT_TRUE(box);
  char buf[4];
  EXPECT_EQ(box->try_receive(buf, sizeof buf).error(), EAGAIN);
  long long t0 = mt::now_ms();
  EXPECT_EQ(box->receive_for(buf, sizeof buf, 200ms).error(), ETIMEDOUT);
  EXPECT_GE(mt::now_ms() - t0, 190);  // not before the deadline (no upper bound: load delays it)
  EXPECT_EQ(box->send(std::string(17, 'x')), EMSGSIZE);
  EXPECT_EQ(box->send("0123456789"), 0);
  EXPECT_EQ(box->try_send("full"), EAGAIN);
  EXPECT_EQ(box->send_for("full", 100ms), ETIMEDOUT);
  EXPECT_EQ(box->receive(buf, sizeof buf).error(), EMSGSIZE);  // too small: left queued
  std::string msg;
  EXPECT_EQ(box->receive(msg), 0);
  EXPECT_EQ(msg, "0123456789");
}

TEST(Library, ResizedMailboxIsFollowedAndDeletedOneReported) {
  Mount m("capacity=2");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  auto box = Mailbox::open(m.path("box"));
  ASSERT_TRUE(box);
  ASSERT_EQ(box->send("a"), 0);
  m.sh("setfattr -n user.mailbox.capacity -v 8 box");  // a new segment
  for (const char* s : {"b", "c", "d"}) EXPECT_EQ(box->try_send(s), 0) << s;
  EXPECT_EQ(box->stats().capacity, 8u);
  EXPECT_EQ(m.sh("cat box; cat box").out, "ab");
  m.sh("rm box");
  EXPECT_EQ(box->send("gone"), EIDRM);
}

TEST(Library, OpenChecksModeBitsAndMailboxes) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box; mkdir dir");
  EXPECT_EQ(Mailbox::open(m.path("missing")).error(), ENOENT);
  EXPECT_EQ(Mailbox::open(m.path("dir")).error(), EISDIR);
  EXPECT_EQ(Mailbox::open("/etc/hostname", {.send = false, .receive = true}).error(), ENOTSUP);
  mailbox::CreateOptions o;
  EXPECT_EQ(Mailbox::create(m.path("box"), o).error(), EEXIST);
  if (geteuid() != 0) return;  // the rest needs root to act as another user
  // As nobody (mode bits of a root-owned 0644 mailbox: read, no write).
  pid_t p = child([&] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    return Mailbox::open(m.path("box"), {.send = true, .receive = false}).error() == EACCES ? 0 : 11;
  });
  EXPECT_EQ(finish(p), 0);
}

TEST(Library, CApiRoundTrip) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mbx_t* box = nullptr;
  ASSERT_EQ(mbx_create(m.path("c").c_str(), 2, 128, 0600, MBX_SEND | MBX_RECEIVE, &box), 0);
  EXPECT_EQ(mbx_send(box, "hello", 5, -1), 0);
  char buf[16];
  EXPECT_EQ(mbx_recv(box, buf, sizeof buf, 0), 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  EXPECT_EQ(mbx_recv(box, buf, sizeof buf, 0), -EAGAIN);
  EXPECT_EQ(mbx_recv(box, buf, sizeof buf, 50), -ETIMEDOUT);
  mbx_close(box);
  EXPECT_EQ(mbx_open(m.path("none").c_str(), MBX_SEND, &box), -ENOENT);
  EXPECT_EQ(m.sh("stat -c %a c").out, "600\n");
}

TEST(Library, ManySendersAndReceiversAcrossBothPaths) {
  Mount m("capacity=8,framing=datagram");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  constexpr int kPerSender = 500;
  std::vector<pid_t> senders;
  for (int s = 0; s < 2; s++)
    senders.push_back(child([&, s] {
      auto b = Mailbox::open(m.path("box"), {.send = true, .receive = false});
      if (!b) return 10;
      for (int i = 0; i < kPerSender; i++)
        if (b->send("L" + std::to_string(s) + ":" + std::to_string(i)) != 0) return 11;
      return 0;
    }));
  // Shell side: one more sender through the daemon, and receivers of both kinds.
  Proc shell_sender(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_WRONLY)\n"
      "for i in range(" +
          std::to_string(kPerSender) + "): os.write(fd, b'S:%d' % i)\n\"",
      m.dir());
  Proc shell_receiver(
      "python3 -c \"\nimport os\nfd = os.open('box', os.O_RDONLY)\n"
      "for i in range(" +
          std::to_string(kPerSender) + "): print(os.read(fd, 100).decode())\n\"",
      m.dir());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t lib_receiver = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = false, .receive = true});
    if (!b) return 10;
    std::string msg, all;
    for (int i = 0; i < 2 * kPerSender; i++) {
      if (b->receive_until(msg, Clock::now() + 20s) != 0) return 11;
      all += msg + "\n";
    }
    return write(fds[1], all.data(), all.size()) == ssize_t(all.size()) ? 0 : 12;
  });
  close(fds[1]);
  std::string lib_out;
  char buf[65536];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) lib_out.append(buf, size_t(n));
  close(fds[0]);
  for (pid_t p : senders) EXPECT_EQ(finish(p, 20000), 0);
  EXPECT_EQ(finish(lib_receiver, 20000), 0);
  EXPECT_TRUE(shell_sender.exits());
  auto shell = shell_receiver.finish();
  std::multiset<std::string> got;
  for (const std::string* out : {&lib_out, &shell.out}) {
    size_t start = 0;
    for (size_t nl; (nl = out->find('\n', start)) != std::string::npos; start = nl + 1)
      got.insert(out->substr(start, nl - start));
  }
  std::multiset<std::string> want;
  for (int i = 0; i < kPerSender; i++)
    for (const char* p : {"L0:", "L1:", "S:"}) want.insert(p + std::to_string(i));
  EXPECT_EQ(got, want);  // nothing lost, nothing duplicated
}

}  // namespace

namespace {

TEST(LibraryRegression, ReceiverSleepingOnADeletedMailboxGetsEidrm) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  mt::Ready ready;
  pid_t receiver = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = false, .receive = true});
    std::string msg;
    if (b) ready.say();
    return b && b->receive(msg) == EIDRM ? 0 : 1;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(receiver, mt::Sleep::futex));  // asleep on the futex
  m.sh("rm box");
  EXPECT_EQ(finish(receiver), 0);
}

TEST(LibraryRegression, ResizesDuringTrafficLoseNothing) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  constexpr int kN = 20000;
  pid_t receiver = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = false, .receive = true});
    if (!b) return 10;
    std::string msg;
    for (int i = 0; i < kN; i++) {
      const int e = b->receive_until(msg, Clock::now() + 20s);
      if (e != 0) return 20 + (e % 100);
      if (msg != std::to_string(i)) return 11;
    }
    return 0;
  });
  pid_t sender = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = true, .receive = false});
    if (!b) return 10;
    for (int i = 0; i < kN; i++)
      if (b->send(std::to_string(i)) != 0) return 11;
    return 0;
  });
  int resizes = 0;
  for (; resizes < 40; resizes++) {
    auto r = m.sh("setfattr -n user.mailbox.capacity -v " + std::to_string(8 + resizes % 2) + " box");
    ASSERT_EQ(r.status, 0) << "resize " << resizes << ": " << r.err;
  }
  EXPECT_EQ(finish(sender, 20000), 0);
  EXPECT_EQ(finish(receiver, 20000), 0) << "after " << resizes << " resizes";
  EXPECT_EQ(m.xattr("box", "sent"), std::to_string(kN));
  EXPECT_EQ(m.xattr("box", "received"), std::to_string(kN));
}

}  // namespace

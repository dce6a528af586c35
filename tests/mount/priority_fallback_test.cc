// SPDX-License-Identifier: MIT
// Priorities through the file, on a real mount: libmailbox's fallback (a
// user who may not map the segment) sends at a priority and learns the
// priority of what it receives, through two ioctls on the open file
// (layout.h: kSendPriorityIoctl, kReceivedIoctl) that are per open file and
// per thread, so threads and processes sharing a descriptor never race.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <latch>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <mailbox/layout.h>
#include <mailbox/mailbox.hpp>

#include "../common/redis_server.h"
#include "harness.h"

namespace {

using mailbox::Mailbox;
using mt::Mount;
using namespace std::chrono_literals;
namespace layout = mbx::layout;

constexpr unsigned kNobody = 65534;

// Runs `fn` in a child process as user nobody, in the mount's directory (the
// test's temporary directory is private: entered first); returns what fn
// returned, with the exit status appended if the child did not end well.
std::string as_nobody(const Mount& m, const std::function<std::string()>& fn) {
  int p[2];
  if (pipe(p) != 0) return "pipe";
  pid_t c = mt::child([&] {
    close(p[0]);
    if (chdir(m.dir().c_str()) != 0 || setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0)
      return 10;
    const std::string out = fn();
    return write(p[1], out.data(), out.size()) == static_cast<ssize_t>(out.size()) ? 0 : 11;
  });
  close(p[1]);
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd pf{p[0], POLLIN, 0};
    if (poll(&pf, 1, mt::kHang) != 1) break;  // hang guard only
    const ssize_t n = read(p[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(p[0]);
  if (const int st = mt::finish(c); st != 0) out += " [exit " + std::to_string(st) + "]";
  return out;
}

std::string chomp(std::string s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

int set_prio(int fd, uint32_t prio) { return ioctl(fd, layout::kSendPriorityIoctl, &prio) == 0 ? 0 : errno; }

// The priority this thread last received through `fd`, or -errno.
long received_prio(int fd, layout::ReceivedInfo* out = nullptr) {
  layout::ReceivedInfo ri{};
  if (ioctl(fd, layout::kReceivedIoctl, &ri) != 0) return -errno;
  if (out) *out = ri;
  return ri.priority;
}

std::string read_one(int fd) {
  char buf[256];
  const ssize_t n = read(fd, buf, sizeof buf);
  return n < 0 ? "E" + std::to_string(errno) : std::string(buf, static_cast<size_t>(n));
}

class PriorityFallback : public ::testing::TestWithParam<const char*> {};

// The report's case: a user other than the daemon's (segment files are
// 0600) sends at 3, 0 and 7 through libmailbox, and receives 7, 3, 0 with
// their priorities. It used to get ENOTSUP for 3 and 7, and priority 0 back.
TEST_P(PriorityFallback, OtherUserSendsAndReceivesAtPriorities) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  Mount m(std::string("allow_other,root_mode=1777,framing=") + GetParam());
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box && chmod 666 box").status, 0);

  const std::string sent = as_nobody(m, [] {
    auto b = Mailbox::open("box", {.send = true, .receive = false, .fallback = true});
    if (!b) return "open: " + std::to_string(b.error());
    if (!b->via_file()) return std::string("not through the file");
    std::string r;
    r += std::to_string(b->send("p3", 3)) + " ";
    r += std::to_string(b->send("p0", 0)) + " ";
    r += std::to_string(b->try_send("p7", 7)) + " ";
    r += std::to_string(b->send("x", mailbox::kMaxPriority + 1));
    return r;
  });
  EXPECT_EQ(sent, "0 0 0 " + std::to_string(EINVAL));
  EXPECT_EQ(m.xattr("box", "priorities"), "7:1 3:1 0:1");

  // Each of the three receive forms reports the priority.
  const std::string got = as_nobody(m, [] {
    auto b = Mailbox::open("box", {.send = false, .receive = true, .fallback = true});
    if (!b) return "open: " + std::to_string(b.error());
    std::string r;
    char buf[64];
    unsigned prio = 99;
    auto n = b->receive_until(buf, sizeof buf, &prio, mailbox::Clock::now() + 20s);
    if (!n) return "receive: " + std::to_string(n.error());
    r += chomp(std::string(buf, *n)) + ":" + std::to_string(prio) + " uid=" + std::to_string(b->last_sender().uid);
    auto v = b->try_receive_view();
    if (!v) return r + " view: " + std::to_string(v.error());
    r += " " + chomp(std::string(v->bytes())) + ":" + std::to_string(v->priority());
    v->release();
    std::string s;
    if (int e = b->try_receive(s)) return r + " receive: " + std::to_string(e);
    r += " " + chomp(s) + ":" + std::to_string(b->last_priority());
    return r;
  });
  EXPECT_EQ(got, "p7:7 uid=65534 p3:3 p0:0");
  EXPECT_EQ(m.xattr("box", "messages"), "0");
}

// A staged reservation is committed at its priority too.
TEST_P(PriorityFallback, ReservationCommitsAtItsPriority) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  Mount m(std::string("allow_other,root_mode=1777,framing=") + GetParam());
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box && chmod 666 box").status, 0);
  const std::string r = as_nobody(m, [] {
    auto b = Mailbox::open("box", {.send = true, .receive = false, .fallback = true});
    if (!b) return "open: " + std::to_string(b.error());
    auto res = b->reserve(2, 9);
    if (!res) return "reserve: " + std::to_string(res.error());
    std::memcpy(res->data(), "r9", 2);
    return std::to_string(res->commit());
  });
  EXPECT_EQ(r, "0");
  EXPECT_EQ(m.xattr("box", "priorities"), "9:1");
}

INSTANTIATE_TEST_SUITE_P(Framings, PriorityFallback, ::testing::Values("file", "datagram", "line"));

std::string out_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "out";
  const std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/'));
}

// The report's symptom: an unmodified mq program (tests/mq/prodcons.c, jobs
// of priorities 0 to 9) of a user other than the daemon's, under the
// preload, whose queues go through the file.
TEST(PriorityFallbackMq, ProducerConsumerOfAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  const std::string lib = out_dir() + "/libmailbox-mq.so", bin = out_dir() + "/mq_prodcons";
  if (access(lib.c_str(), R_OK) != 0 || access(bin.c_str(), X_OK) != 0)
    GTEST_SKIP() << "no libmailbox-mq.so or mq_prodcons in this build directory";
  Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(mt::sh("chmod 0755 " + mt::q(tmp)).status, 0);
  mt::Run r = mt::sh("exec setpriv --reuid=65534 --regid=65534 --clear-groups env LD_PRELOAD=" + mt::q(lib) +
                     " MAILBOXFS_MQ_ROOT=" + mt::q(m.dir()) + " " + mt::q(bin));
  EXPECT_FALSE(r.timed_out);
  // Phase 1 is the priorities' (as on the kernel); mq_notify, in the phases
  // after it, is not this test's (through the file it is ENOSYS today).
  const size_t end = r.out.find("phase 2:");
  EXPECT_EQ(r.out.substr(0, end),
            "phase 1: bounded buffer of 4\n"
            "  producer filled: 4 of 4 queued\n"
            "  got job 1 (prio 9), priority 9\n"
            "  got job 3 (prio 7), priority 7\n"
            "  got job 0 (prio 5), priority 5\n"
            "  got job 2 (prio 1), priority 1\n"
            "  got tail 0 (prio 0), priority 0\n"
            "  got tail 1 (prio 0), priority 0\n"
            "  got tail 2 (prio 0), priority 0\n"
            "  got tail 3 (prio 0), priority 0\n")
      << r.err << m.daemon_stderr();
}

// The ioctls themselves, on each framing. Datagram: the next write is one
// message at that priority, and the one after is back at the open file's.
TEST(PriorityIoctl, DatagramNextWriteOnly) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch dg").status, 0);
  const int w = open(m.path("dg").c_str(), O_WRONLY);
  const int r = open(m.path("dg").c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(w, 0);
  ASSERT_GE(r, 0);
  EXPECT_EQ(received_prio(r), -ENODATA);  // nothing received through it yet
  ASSERT_EQ(set_prio(w, 4), 0);
  ASSERT_EQ(write(w, "a", 1), 1);
  ASSERT_EQ(write(w, "b", 1), 1);
  // Per thread: another thread's write through the same descriptor does not
  // use this thread's priority.
  ASSERT_EQ(set_prio(w, 9), 0);
  std::thread([&] { EXPECT_EQ(write(w, "other", 5), 5); }).join();
  ASSERT_EQ(write(w, "mine", 4), 4);
  EXPECT_EQ(m.xattr("dg", "priorities"), "9:1 4:1 0:2");

  layout::ReceivedInfo ri{};
  EXPECT_EQ(read_one(r), "mine");
  EXPECT_EQ(received_prio(r, &ri), 9);
  EXPECT_EQ(ri.pid, getpid());  // the sending thread, as user.mailbox.sender says
  EXPECT_EQ(ri.uid, 0u);
  EXPECT_EQ(read_one(r), "a");
  EXPECT_EQ(received_prio(r), 4);
  EXPECT_EQ(read_one(r), "b");
  EXPECT_EQ(received_prio(r), 0);
  // Per thread: another thread has received nothing through it.
  std::thread([&] { EXPECT_EQ(received_prio(r), -ENODATA); }).join();
  EXPECT_EQ(read_one(r), "other");
  EXPECT_EQ(received_prio(r), 0);
  close(w);
  close(r);
}

// File framing: the message the thread's next close commits.
TEST(PriorityIoctl, FileFramingCommitAtClose) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch f").status, 0);
  int w = open(m.path("f").c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  ASSERT_EQ(set_prio(w, 6), 0);
  ASSERT_EQ(write(w, "x", 1), 1);
  ASSERT_EQ(write(w, "y", 1), 1);
  ASSERT_EQ(close(w), 0);
  w = open(m.path("f").c_str(), O_WRONLY);
  ASSERT_EQ(set_prio(w, 2), 0);  // nothing written: nothing sent, the setting goes with the file
  ASSERT_EQ(close(w), 0);
  ASSERT_EQ(m.sh("printf z > f").status, 0);  // the shell's write: the open file's priority (0)
  EXPECT_EQ(m.xattr("f", "priorities"), "6:1 0:1");

  int r = open(m.path("f").c_str(), O_RDONLY | O_NONBLOCK);
  EXPECT_EQ(read_one(r), "xy");
  EXPECT_EQ(read_one(r), "");  // one message per open
  EXPECT_EQ(received_prio(r), 6);
  close(r);
  r = open(m.path("f").c_str(), O_RDONLY | O_NONBLOCK);
  EXPECT_EQ(read_one(r), "z");
  EXPECT_EQ(received_prio(r), 0);
  close(r);
}

// kDiscardIoctl: what an open file wrote and did not send is dropped, so its
// close sends nothing (file framing's message, line framing's partial line);
// what was sent before stays, and the file may write a new message after.
TEST(DiscardIoctl, AWrittenMessageTakenBackIsNeverSent) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch f && touch l && setfattr -n user.mailbox.framing -v line l").status, 0);
  int w = open(m.path("f").c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  ASSERT_EQ(write(w, "taken back", 10), 10);
  ASSERT_EQ(ioctl(w, layout::kDiscardIoctl), 0) << strerror(errno);
  ASSERT_EQ(close(w), 0);
  EXPECT_EQ(m.xattr("f", "messages"), "0");
  w = open(m.path("f").c_str(), O_WRONLY);
  ASSERT_EQ(write(w, "dropped", 7), 7);
  ASSERT_EQ(ioctl(w, layout::kDiscardIoctl), 0);
  ASSERT_EQ(write(w, "kept", 4), 4);  // a new message after the take-back
  ASSERT_EQ(close(w), 0);
  EXPECT_EQ(m.xattr("f", "messages"), "1");
  int r = open(m.path("f").c_str(), O_RDONLY | O_NONBLOCK);
  EXPECT_EQ(read_one(r), "kept");
  close(r);
  w = open(m.path("l").c_str(), O_WRONLY);
  ASSERT_EQ(write(w, "one\npart", 8), 8);  // "one" sent, "part" buffered
  ASSERT_EQ(ioctl(w, layout::kDiscardIoctl), 0);
  ASSERT_EQ(close(w), 0);
  EXPECT_EQ(m.xattr("l", "messages"), "1");
}

// Line framing: the lines the thread's next write commits (a write that only
// buffers a partial line keeps it for the write or close that sends it).
TEST(PriorityIoctl, LineFramingLinesOfTheNextWrite) {
  Mount m("framing=line");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch l").status, 0);
  const int w = open(m.path("l").c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  ASSERT_EQ(set_prio(w, 3), 0);
  ASSERT_EQ(write(w, "ab", 2), 2);
  ASSERT_EQ(write(w, "c\nd\n", 4), 4);
  ASSERT_EQ(write(w, "e\n", 2), 2);
  ASSERT_EQ(set_prio(w, 5), 0);
  ASSERT_EQ(write(w, "f", 1), 1);
  ASSERT_EQ(close(w), 0);  // commits the partial line "f"
  EXPECT_EQ(m.xattr("l", "priorities"), "5:1 3:2 0:1");
  const int r = open(m.path("l").c_str(), O_RDONLY | O_NONBLOCK);
  std::string got;
  for (int i = 0; i < 4; i++) {
    got += read_one(r);
    got += "@" + std::to_string(received_prio(r)) + " ";
  }
  EXPECT_EQ(got, "f@5 abc\n@3 d\n@3 e\n@0 ");
  close(r);
}

TEST(PriorityIoctl, RangeAndMisuse) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch dg && mkdir d").status, 0);
  const int w = open(m.path("dg").c_str(), O_WRONLY);
  const int r = open(m.path("dg").c_str(), O_RDONLY | O_NONBLOCK);
  const int d = open(m.path("d").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(w, 0);
  ASSERT_GE(r, 0);
  ASSERT_GE(d, 0);
  EXPECT_EQ(set_prio(w, mailbox::kMaxPriority + 1), EINVAL);
  EXPECT_EQ(set_prio(w, UINT32_MAX), EINVAL);
  EXPECT_EQ(set_prio(r, 1), EBADF);  // not open for writing
  EXPECT_EQ(set_prio(d, 1), ENOTTY);
  ASSERT_EQ(set_prio(w, mailbox::kMaxPriority), 0);
  ASSERT_EQ(write(w, "top", 3), 3);
  EXPECT_EQ(m.xattr("dg", "priorities"), "32767:1");
  EXPECT_EQ(read_one(r), "top");
  EXPECT_EQ(received_prio(r), static_cast<long>(mailbox::kMaxPriority));
  close(w);
  close(r);
  close(d);
}

// A Redis mailbox is one list in send order: a priority above 0 is refused
// at the ioctl (as send_priority is), and libmailbox, which always goes
// through the file there, says ENOTSUP as for a segment without priorities.
TEST(PriorityIoctl, RedisMountRefusesAPriority) {
  testredis::Server server;  // outlives the mount
  ASSERT_TRUE(server.ready()) << "redis-server did not start (scripts/deps.sh test installs it)";
  Mount m("backend=" + server.url() + ",namespace=p,framing=datagram");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch dg").status, 0);
  const int w = open(m.path("dg").c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  EXPECT_EQ(set_prio(w, 3), EOPNOTSUPP);
  EXPECT_EQ(set_prio(w, 0), 0);
  EXPECT_EQ(write(w, "a", 1), 1);
  close(w);
  auto b = Mailbox::open(m.path("dg"));
  ASSERT_TRUE(b) << strerror(b.error());
  EXPECT_TRUE(b->via_file());
  EXPECT_EQ(b->send("b", 3), ENOTSUP);
  EXPECT_EQ(b->send("c", 0), 0);
  unsigned prio = 99;
  char buf[8];
  auto n = b->try_receive(buf, sizeof buf, &prio);
  ASSERT_TRUE(n) << strerror(n.error());
  EXPECT_EQ(std::string(buf, *n), "a");
  EXPECT_EQ(prio, 0u);
  EXPECT_EQ(m.xattr("dg", "messages"), "1");
}

// Two threads and a forked process share one descriptor and send
// concurrently, each at its own changing priorities, into a small mailbox
// (writes park in the daemon) while a receiver takes them: every message
// arrives once, with the priority its sender set for it, and each sender's
// messages of one priority in the order sent.
TEST(PriorityIoctl, SharedDescriptorThreadsAndProcessesChecksummed) {
  Mount m("framing=datagram,capacity=4");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch dg").status, 0);
  const int w = open(m.path("dg").c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  constexpr int kEach = 300;
  constexpr int kSenders = 3;  // two threads here, one forked process
  auto prio_of = [](int s, int i) { return static_cast<uint32_t>(100 * (s + 1) + i % 5); };
  // Returns 0, or the index of the first send that failed.
  auto send_all = [&](int s) {
    for (int i = 0; i < kEach; i++) {
      const uint32_t p = prio_of(s, i);
      const std::string msg = std::to_string(s) + " " + std::to_string(i) + " " + std::to_string(p);
      if (set_prio(w, p) != 0 || write(w, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return i + 1;
    }
    return 0;
  };
  auto rx = Mailbox::open(m.path("dg"));
  ASSERT_TRUE(rx) << strerror(rx.error());

  std::latch go(3);
  pid_t proc = mt::child([&] { return send_all(2); });
  int res[2] = {-1, -1};
  std::vector<std::thread> ts;
  for (int s = 0; s < 2; s++)
    ts.emplace_back([&, s] {
      go.arrive_and_wait();
      res[s] = send_all(s);
    });
  go.arrive_and_wait();

  std::set<std::string> seen;
  std::map<std::pair<int, unsigned>, int> last;  // (sender, prio) -> last index
  int bad = 0, dup = 0, order = 0, received = 0;
  long long sum = 0;
  std::string failure;
  for (int k = 0; k < kSenders * kEach; k++) {
    char buf[64];
    unsigned prio = 0;
    auto n = rx->receive_until(buf, sizeof buf, &prio, mailbox::Clock::now() + 20s);  // hang guard
    if (!n) {
      failure = "message " + std::to_string(k) + ": " + strerror(n.error());
      break;
    }
    received++;
    const std::string msg(buf, *n);
    int s = -1, i = -1;
    unsigned p = 0;
    if (sscanf(msg.c_str(), "%d %d %u", &s, &i, &p) != 3) {
      failure = "unreadable message " + msg;
      break;
    }
    bad += p != prio || p != prio_of(s, i);
    dup += !seen.insert(msg).second;
    auto [it, fresh] = last.try_emplace({s, p}, i);
    if (!fresh) {
      order += i < it->second;
      it->second = i;
    }
    sum += 1000 * s + i;
  }
  if (!failure.empty()) (void)m.sh("rm -f dg");  // ends the writes parked on it (EIDRM)
  for (auto& t : ts) t.join();
  EXPECT_EQ(failure, "");
  EXPECT_EQ(received, kSenders * kEach);
  EXPECT_EQ(res[0], 0);
  EXPECT_EQ(res[1], 0);
  EXPECT_EQ(mt::finish(proc), 0);
  close(w);
  EXPECT_EQ(bad, 0) << "messages at another sender's priority";
  EXPECT_EQ(dup, 0);
  EXPECT_EQ(order, 0);
  long long want = 0;
  for (int s = 0; s < kSenders; s++)
    for (int i = 0; i < kEach; i++) want += 1000 * s + i;
  EXPECT_EQ(sum, want);
  EXPECT_EQ(m.xattr("dg", "messages"), "0");
}

}  // namespace

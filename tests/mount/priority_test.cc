// SPDX-License-Identifier: MIT
// Message priorities on a real mount: the shell sends at a priority through
// user.mailbox.send_priority, cat and libmailbox take the oldest message of
// the highest priority, getfattr counts what is queued per priority, and
// many processes on both paths lose, duplicate or reorder nothing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

#include <mailbox/mailbox.h>
#include <mailbox/mailbox.hpp>

#include "harness.h"

using mt::child;
using mt::finish;

namespace {

using mailbox::Mailbox;
using mt::Mount;

// Each cat is one message (file framing: one message per open).
std::string cat_n(const Mount& m, const std::string& box, int n) {
  std::string script;
  for (int i = 0; i < n; i++) script += "cat " + box + "; ";
  mt::Run r = m.sh(script);
  EXPECT_EQ(r.status, 0) << r.err;
  return r.out;
}

TEST(Priority, ShellSendsAtAPriorityAndCatTakesTheHighestFirst) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh(
      "touch jobs && echo low1 > jobs"
      " && setfattr -n user.mailbox.send_priority -v 5 jobs && echo mid1 > jobs && echo mid2 > jobs"
      " && setfattr -n user.mailbox.send_priority -v 32767 jobs && echo top > jobs"
      " && setfattr -n user.mailbox.send_priority -v 0 jobs && echo low2 > jobs");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.xattr("jobs", "priorities"), "32767:1 5:2 0:2");
  EXPECT_EQ(m.xattr("jobs", "messages"), "5");
  EXPECT_EQ(cat_n(m, "jobs", 5), "top\nmid1\nmid2\nlow1\nlow2\n");
  EXPECT_EQ(m.xattr("jobs", "priorities"), "");
  // Out of range: refused, the setting unchanged.
  EXPECT_NE(m.sh("setfattr -n user.mailbox.send_priority -v 32768 jobs").status, 0);
  EXPECT_EQ(m.xattr("jobs", "send_priority"), "0");
}

// The priority is fixed when the file is opened, as the framing is: a
// writer that opened before the setting changed keeps its priority.
TEST(Priority, SendPriorityIsFixedAtOpen) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh(
      "touch q && exec 3>q && setfattr -n user.mailbox.send_priority -v 7 q"
      " && printf opened-at-0 >&3 && printf opened-at-7 > q && exec 3>&-");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.xattr("q", "priorities"), "7:1 0:1");
  auto box = Mailbox::open(m.path("q"));
  ASSERT_TRUE(box) << strerror(box.error());
  char buf[64];
  unsigned prio = 99;
  auto n = box->try_receive(buf, sizeof buf, &prio);
  ASSERT_TRUE(n);
  EXPECT_EQ(std::string(buf, *n), "opened-at-7");
  EXPECT_EQ(prio, 7u);
  n = box->try_receive(buf, sizeof buf, &prio);
  ASSERT_TRUE(n);
  EXPECT_EQ(std::string(buf, *n), "opened-at-0");
  EXPECT_EQ(prio, 0u);
}

// Library and file path on one mailbox: each sees the other's priorities.
TEST(Priority, LibraryAndFilePathMixed) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto box = Mailbox::create(m.path("mix"), {});
  ASSERT_TRUE(box) << strerror(box.error());
  ASSERT_EQ(box->send("lib3", 3), 0);
  ASSERT_EQ(m.sh("setfattr -n user.mailbox.send_priority -v 5 mix && printf shell5 > mix").status, 0);
  ASSERT_EQ(box->send("lib0"), 0);
  ASSERT_EQ(box->send("lib3b", 3), 0);
  EXPECT_EQ(box->send("x", mailbox::kMaxPriority + 1), EINVAL);
  EXPECT_EQ(m.xattr("mix", "priorities"), "5:1 3:2 0:1");
  // The library takes the shell's message first and reports its priority.
  std::string got;
  unsigned prio = 0;
  char buf[64];
  auto n = box->receive(buf, sizeof buf, &prio);
  ASSERT_TRUE(n);
  EXPECT_EQ(std::string(buf, *n), "shell5");
  EXPECT_EQ(prio, 5u);
  // cat takes the library's next highest, in the order they were sent.
  EXPECT_EQ(cat_n(m, "mix", 2), "lib3lib3b");
  auto v = box->try_receive_view();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->bytes(), "lib0");
  EXPECT_EQ(v->priority(), 0u);
  v->release();
  // The C API.
  mbx_t* c = nullptr;
  ASSERT_EQ(mbx_open(m.path("mix").c_str(), MBX_SEND | MBX_RECEIVE, &c), 0);
  ASSERT_EQ(mbx_send_prio(c, "a", 1, 1, 0), 0);
  ASSERT_EQ(mbx_send_prio(c, "b", 1, 2, 0), 0);
  EXPECT_EQ(mbx_send_prio(c, "c", 1, MBX_PRIO_MAX + 1, 0), -EINVAL);
  prio = 0;
  EXPECT_EQ(mbx_recv_prio(c, buf, sizeof buf, &prio, 0), 1);
  EXPECT_EQ(buf[0], 'b');
  EXPECT_EQ(prio, 2u);
  EXPECT_EQ(mbx_recv_prio(c, buf, sizeof buf, nullptr, 0), 1);
  EXPECT_EQ(buf[0], 'a');
  EXPECT_EQ(mbx_last_priority(c), 1u);
  mbx_close(c);
}

// A resize moves the queued messages with their priorities and their order.
TEST(Priority, ResizeKeepsPrioritiesAndOrder) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto box = Mailbox::create(m.path("r"), {});
  ASSERT_TRUE(box) << strerror(box.error());
  for (int i = 0; i < 12; i++) ASSERT_EQ(box->send("m" + std::to_string(i), i % 3), 0);
  char buf[16];
  unsigned prio = 0;
  auto n = box->receive(buf, sizeof buf, &prio);  // m2, taken from the middle: a tombstone
  ASSERT_TRUE(n);
  EXPECT_EQ(std::string(buf, *n), "m2");
  ASSERT_EQ(m.sh("setfattr -n user.mailbox.capacity -v 100 r").status, 0);
  EXPECT_EQ(m.xattr("r", "priorities"), "2:3 1:4 0:4");
  EXPECT_EQ(cat_n(m, "r", 11), "m5m8m11m1m4m7m10m0m3m6m9");
}

// Producers on both paths (library processes at every priority, shell
// writers at theirs) and library consumers, all at once: every message
// arrives exactly once and intact, and each consumer sees each producer's
// messages of one priority in the order they were sent.
TEST(Priority, ManyProcessesWithChecksums) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mailbox::CreateOptions o;
  o.capacity = 16;
  o.max_message = 256;
  auto box = Mailbox::create(m.path("many"), o);
  ASSERT_TRUE(box) << strerror(box.error());
  constexpr int kProducers = 4, kPerProducer = 3000, kConsumers = 3, kShellPerPrio = 20;
  const std::vector<unsigned> shell_prios = {0, 4, 9};
  const int total = kProducers * kPerProducer + int(shell_prios.size()) * kShellPerPrio;
  // "p<producer> i<index> q<prio> s<checksum>"
  auto checksum = [](int p, int i, unsigned q) { return (p * 2654435761u) ^ (i * 40503u) ^ (q * 977u); };
  auto payload = [&](int p, int i, unsigned q) {
    return "p" + std::to_string(p) + " i" + std::to_string(i) + " q" + std::to_string(q) + " s" +
           std::to_string(checksum(p, i, q));
  };
  // Each consumer writes what it received to a file of its own (a pipe
  // would fill while the test waits for the producers).
  int fds[kConsumers];
  std::vector<pid_t> consumers;
  for (int c = 0; c < kConsumers; c++) {
    char name[] = "/tmp/mbxtest-prio-XXXXXX";
    fds[c] = ::mkstemp(name);
    ASSERT_GE(fds[c], 0);
    ::unlink(name);
    consumers.push_back(child([&, c] {
      auto b = Mailbox::open(m.path("many"), {.send = false, .receive = true});
      if (!b) return 10;
      std::map<std::pair<int, unsigned>, int> last;  // (producer, prio) -> index
      char buf[256];
      for (;;) {
        unsigned q = 0;
        auto n = b->receive_for(buf, sizeof buf, &q, std::chrono::seconds(60));
        if (!n) return 11;
        std::string s(buf, *n);
        if (s == "stop") break;
        int p, i;
        unsigned qq, sum;
        if (std::sscanf(s.c_str(), "p%d i%d q%u s%u", &p, &i, &qq, &sum) != 4) return 12;
        if (qq != q || sum != checksum(p, i, q) || s != payload(p, i, q)) return 13;
        auto [it, fresh] = last.try_emplace({p, q}, i);
        if (!fresh && it->second >= i) return 14;  // FIFO within a priority, per producer
        it->second = i;
        const std::string line = s + "\n";
        if (::write(fds[c], line.data(), line.size()) != ssize_t(line.size())) return 15;
      }
      return 0;
    }));
  }
  std::vector<pid_t> producers;
  for (int p = 0; p < kProducers; p++) {
    producers.push_back(child([&, p] {
      auto b = Mailbox::open(m.path("many"), {.send = true, .receive = false});
      if (!b) return 20;
      for (int i = 0; i < kPerProducer; i++) {
        const unsigned q = (i * 7 + p) % 5 == 0 ? 0 : (i * 13 + p) % 12;
        if (b->send(payload(p, i, q), q) != 0) return 21;
      }
      return 0;
    }));
  }
  // Shell writers one after another: the setting is the mailbox's, fixed at each open.
  for (size_t k = 0; k < shell_prios.size(); k++) {
    const int p = 100 + int(k);
    const unsigned q = shell_prios[k];
    std::string script = "setfattr -n user.mailbox.send_priority -v " + std::to_string(q) + " many";
    for (int i = 0; i < kShellPerPrio; i++) script += " && printf %s " + mt::q(payload(p, i, q)) + " > many";
    mt::Run r = m.sh(script);
    ASSERT_EQ(r.status, 0) << r.err;
  }
  for (pid_t p : producers) EXPECT_EQ(finish(p), 0);
  // One stop per consumer, at the lowest priority: after everything else.
  ASSERT_EQ(m.sh("setfattr -n user.mailbox.send_priority -v 0 many").status, 0);
  for (int c = 0; c < kConsumers; c++) ASSERT_EQ(box->send("stop"), 0);
  for (pid_t c : consumers) EXPECT_EQ(finish(c), 0);
  std::map<std::string, int> seen;
  for (int c = 0; c < kConsumers; c++) {
    std::string all;
    char buf[65536];
    for (ssize_t n; (n = ::pread(fds[c], buf, sizeof buf, off_t(all.size()))) > 0;) all.append(buf, size_t(n));
    ::close(fds[c]);
    for (size_t at = 0, nl; (nl = all.find('\n', at)) != std::string::npos; at = nl + 1)
      seen[all.substr(at, nl - at)]++;
  }
  EXPECT_EQ(int(seen.size()), total);
  for (auto& [s, k] : seen) ASSERT_EQ(k, 1) << s;
  EXPECT_EQ(m.xattr("many", "messages"), "0");
  EXPECT_EQ(m.xattr("many", "priorities"), "");
  EXPECT_EQ(m.xattr("many", "lost"), "0");
}

}  // namespace

// SPDX-License-Identifier: MIT
// The biased halves (layout version 7, design.md section 4): a sender (a
// receiver) that keeps sending (receiving) alone does so without its half's
// lock; any other participant that takes the lock takes the bias back
// first, waits for a biased operation in progress, recovers from one its
// thread died inside, and (the daemon, no_wait) never waits for a thread
// stopped inside one. Threads with their
// own handles (also under TSan), and forked children for deaths and stops.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "shm/segment.h"
#include "test_util.h"

namespace mbx {
namespace {

using ut::SharedControl;
using ut::TempDir;

constexpr uint32_t kAlone = 200;  // more than kBiasAfter pushes in a row

pid_t tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// Waits until `step` is `want` (another thread's readiness; hang guard 60 s).
bool wait_step(const std::atomic<int>& step, int want) {
  const int64_t give_up = realtime_ns() + 60'000'000'000;
  while (step.load() != want) {
    if (realtime_ns() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

// Each test's segment `r` (made by make()) in a temporary directory.
class SegmentBias : public ::testing::Test {
 protected:
  bool make(uint64_t capacity) {
    r = ut::make_segment(path, capacity, 64, ctl);
    return r.valid();
  }
  TempDir d;
  SharedControl ctl;
  const std::string path = d.file("s");
  Segment r;
};

// Pushes `n` messages "<who>:<i>" through its own handle of `path`, waiting
// while the ring is full (a hang guard only: 30 s).
// `keep`: the handle is left there; `progress`: messages sent so far.
void push_n(const std::string& path, SharedControl& ctl, int who, uint32_t n, std::optional<Segment>* keep = nullptr,
            std::atomic<uint32_t>* progress = nullptr) {
  std::optional<Segment> mine;
  if (!keep) keep = &mine;
  auto a = Segment::attach(path);
  ASSERT_TRUE(a.ok());
  Segment& s = keep->emplace(std::move(a.value()));
  s.set_control(ctl.get(), true);
  const int64_t give_up = realtime_ns() + 30'000'000'000;
  for (uint32_t i = 0; i < n;) {
    const std::string m = std::to_string(who) + ":" + std::to_string(i);
    auto r = s.push(m.data(), m.size(), Sender{who, 0, 0}, 0);
    if (r) {
      i++;
      if (progress) progress->store(i);
      continue;
    }
    ASSERT_EQ(r.error(), Errc::again);
    ASSERT_LT(realtime_ns(), give_up);
    std::this_thread::yield();
  }
}

// A child that attaches, sends kAlone messages (so that it is biased), then
// leaves the state `inside` says: nothing (0), inside a send it died in (1),
// inside a send it is stopped in (2, SIGSTOP to itself; it finishes the send
// when continued).
pid_t biased_child(const std::string& path, SharedControl& ctl, int inside) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  auto s = Segment::attach(path);
  if (!s) ::_exit(10);
  s->set_control(ctl.get(), true);
  for (uint32_t i = 0; i < kAlone; i++)
    if (!s->push("alone", 5, {}, 0)) ::_exit(11);
  if (!s->biased()) ::_exit(12);
  layout::SegmentHeader* h = s->header();
  if (inside == 1) {  // as a kill between charge_quota_locked's marker and the commit
    h->bias_busy.store(1);
    std::atomic_ref<uint32_t>(h->inflight).store(layout::kInflightSend);
    ::_exit(0);
  }
  if (inside == 2) {
    h->bias_busy.store(1);
    ::raise(SIGSTOP);
    h->bias_busy.store(0, std::memory_order_release);
  }
  ::_exit(0);
}

// The child's exit code (-1: killed by the 60 s hang guard).
int reap(pid_t pid) {
  const int st = ut::wait_child(pid, std::chrono::seconds(60));
  return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Waits until the child stops (hang guard: 60 s, then it is killed).
bool wait_stopped(pid_t pid) {
  const int64_t give_up = realtime_ns() + 60'000'000'000;
  int st = 0;
  while (realtime_ns() < give_up) {
    const pid_t r = ::waitpid(pid, &st, WUNTRACED | WNOHANG);
    if (r == pid) return WIFSTOPPED(st);
    if (r < 0) return false;
    std::this_thread::yield();
  }
  ::kill(pid, SIGKILL);
  return false;
}

// Two sender threads and two receiver threads, each with its own handle:
// first one sender and one receiver alone (so that both halves are biased
// to them), then the others join (so that the halves are taken back from
// them). Every message arrives once, and what one receiver got of each
// sender is in that sender's order.
TEST_F(SegmentBias, SendersAndReceiversTakingItInTurnsLoseAndRepeatNothing) {
  ASSERT_TRUE(make(64));
  constexpr uint32_t kEach = 20000, kAloneFirst = 5000;
  std::atomic<uint32_t> taken{0}, sent_first{0};
  std::vector<std::string> got[2];
  std::optional<Segment> rx[2], tx[2];
  auto receive = [&](int k) {
    auto a = Segment::attach(path);
    ASSERT_TRUE(a.ok());
    Segment& mine = rx[k].emplace(std::move(a.value()));
    mine.set_control(ctl.get());
    std::string out;
    const int64_t give_up = realtime_ns() + 60'000'000'000;
    while (taken.load() < 2 * kEach && realtime_ns() < give_up) {
      out.clear();
      if (mine.pop(out, 0)) {
        got[k].push_back(out);
        taken++;
      } else {
        std::this_thread::yield();
      }
    }
  };
  std::thread r0(receive, 0), s0([&] { push_n(path, ctl, 1, kEach, &tx[0], &sent_first); });
  // The others join once the first pair has worked alone for a while (a
  // readiness condition, with a hang guard).
  const int64_t give_up = realtime_ns() + 60'000'000'000;
  while ((sent_first.load() < kAloneFirst || taken.load() < kAloneFirst / 2) && realtime_ns() < give_up)
    std::this_thread::yield();
  std::thread r1(receive, 1), s1([&] { push_n(path, ctl, 2, kEach, &tx[1]); });
  s0.join();
  s1.join();
  r0.join();
  r1.join();
  ASSERT_EQ(got[0].size() + got[1].size(), 2 * kEach);
  std::set<std::string> all;
  for (auto& g : got) {
    int64_t last[3] = {-1, -1, -1};
    for (const std::string& m : g) {
      const int who = m[0] - '0';
      ASSERT_TRUE(who == 1 || who == 2) << m;
      const int64_t i = std::stoll(m.substr(2));
      EXPECT_GT(i, last[who]) << "out of its sender's order";
      last[who] = i;
      EXPECT_TRUE(all.insert(m).second) << m << " received twice";
    }
  }
  const SegmentStats st = r.stats();
  EXPECT_EQ(st.total_sent, 2 * kEach);
  EXPECT_EQ(st.total_received, 2 * kEach);
  EXPECT_EQ(st.lost, 0u);
  // The first pair was biased alone, and the others took the halves back.
  EXPECT_GE(tx[0]->bias_counts(false).biased, 1u);
  EXPECT_GE(tx[0]->bias_counts(false).taken_back, 1u);
  EXPECT_GE(rx[0]->bias_counts(true).biased, 1u);
  EXPECT_GE(rx[0]->bias_counts(true).taken_back + (rx[1]->bias_counts(true).biased > 0 ? 1u : 0u), 1u);
}

// A receiver killed inside a biased receive (before its commit) changed
// nothing: the next holder of recv_lock recovers, and the message it was
// taking is still there.
TEST_F(SegmentBias, AReceiverKilledInsideABiasedReceiveLosesNothing) {
  ASSERT_TRUE(make(layout::kUnbounded));
  for (uint32_t i = 0; i < kAlone + 1; i++) ASSERT_TRUE(r.push("m", 1, {}, 0).ok());
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto s = Segment::attach(path);
    if (!s) ::_exit(10);
    s->set_control(ctl.get());
    std::string out;
    for (uint32_t i = 0; i < kAlone; i++)
      if (!s->pop(out, 0)) ::_exit(11);
    if (!s->receive_biased()) ::_exit(12);
    s->header()->recv_busy.store(1);  // as a kill while copying the last one out
    ::_exit(0);
  }
  ASSERT_EQ(reap(pid), 0);
  EXPECT_NE(r.header()->recv_bias.load(), 0u);
  std::string out;
  ASSERT_TRUE(r.pop(out, 0).ok());
  EXPECT_EQ(out, "m");
  EXPECT_EQ(r.header()->recv_bias.load(), 0u);
  EXPECT_EQ(r.header()->recv_busy.load(), 0u);
  EXPECT_EQ(r.pop(out, 0).error(), Errc::again);
  const SegmentStats st = r.stats();
  EXPECT_EQ(st.total_received, kAlone + 1);
  EXPECT_EQ(st.count, 0u);
}

// A thread biased by sending alone; another thread's send takes the bias
// back (kBiasRevoked until the first sees it), and the first's next send
// goes through send_lock and clears it.
TEST_F(SegmentBias, AnotherSenderTakesItBackAndTheFirstSeesIt) {
  ASSERT_TRUE(make(layout::kUnbounded));
  std::optional<Segment> first;
  pid_t first_tid = 0;
  std::atomic<int> step{0};  // 1: the first is biased; 2: taken back, send again; 3: done
  std::thread t([&] {
    first_tid = tid();
    push_n(path, ctl, 1, kAlone, &first);
    EXPECT_TRUE(first && first->biased());  // biased() is the calling thread's
    step = 1;
    if (!first || !wait_step(step, 2)) return;  // the main thread acts
    EXPECT_FALSE(first->biased());
    EXPECT_TRUE(first->push("again", 5, {}, 0).ok());  // sees the mark: through the lock, which clears it
    EXPECT_EQ(first->bias_counts(false).taken_back, 1u);
    step = 3;
  });
  const bool ready = wait_step(step, 1) && first;
  if (ready) {  // no ASSERT before the join: the thread must not be left waiting
    EXPECT_EQ(r.header()->send_bias.load(), static_cast<uint32_t>(first_tid));
    EXPECT_TRUE(r.push("other", 5, {}, 0).ok());  // this thread: takes it back
    EXPECT_EQ(r.header()->send_bias.load(),
              static_cast<uint32_t>(first_tid) | layout::kBiasRevoked | layout::kBiasFenced);
    EXPECT_EQ(r.header()->bias_busy.load(), 0u);
    EXPECT_FALSE(r.biased());
  }
  step = 2;
  t.join();
  ASSERT_TRUE(ready);
  EXPECT_EQ(step.load(), 3);
  EXPECT_EQ(r.header()->send_bias.load(), 0u);
  // Another thread that runs alone long enough is biased in turn; closing
  // its handle gives the bias back.
  std::optional<Segment> third;
  push_n(path, ctl, 3, 2 * kAlone, &third);
  EXPECT_TRUE(third->biased());
  EXPECT_EQ(r.header()->send_bias.load(), static_cast<uint32_t>(tid()));
  third.reset();
  EXPECT_EQ(r.header()->send_bias.load(), 0u);
  const SegmentStats st = r.stats();
  EXPECT_EQ(st.total_sent, kAlone + 1 + 1 + 2 * kAlone);
  EXPECT_EQ(st.count, st.total_sent);
}

// A revoked mark whose thread is gone without seeing it: a sender that
// runs alone long enough finds the thread gone, clears the mark and is
// biased itself.
TEST_F(SegmentBias, AMarkLeftByAThreadThatIsGoneIsCleared) {
  ASSERT_TRUE(make(layout::kUnbounded));
  std::optional<Segment> first;
  std::thread([&] { push_n(path, ctl, 1, kAlone, &first); }).join();
  ASSERT_TRUE(r.push("other", 5, {}, 0).ok());  // takes it back; the first thread is gone
  EXPECT_NE(r.header()->send_bias.load() & layout::kBiasRevoked, 0u);
  std::optional<Segment> third;
  push_n(path, ctl, 3, 2 * kAlone, &third);
  EXPECT_TRUE(third->biased());
  EXPECT_EQ(r.header()->send_bias.load(), static_cast<uint32_t>(tid()));
}

// The biased sender killed inside a send: the next holder of send_lock
// recovers as from a death holding it (the send counted lost), and the
// accounting holds.
TEST_F(SegmentBias, ASenderKilledInsideABiasedSendIsRecovered) {
  ASSERT_TRUE(make(layout::kUnbounded));
  ASSERT_EQ(reap(biased_child(path, ctl, 1)), 0);
  EXPECT_NE(r.header()->send_bias.load(), 0u);
  ASSERT_TRUE(r.push("after", 5, {}, 0).ok());
  EXPECT_EQ(r.header()->send_bias.load(), 0u);  // its thread is gone: cleared
  EXPECT_EQ(r.header()->bias_busy.load(), 0u);
  EXPECT_EQ(r.header()->state.load(), layout::kLive);
  const SegmentStats st = r.stats();
  EXPECT_EQ(st.lost, 1u);
  EXPECT_EQ(st.total_sent, kAlone + 1 + 1);
  EXPECT_EQ(st.total_sent, st.total_received + st.count + st.lost);
  std::string out;
  uint32_t n = 0;
  while (r.pop(out, 0)) n++;
  EXPECT_EQ(n, kAlone + 1);
}

// The daemon (no_wait) never waits for a sender stopped inside a biased
// send: its send and its stats answer at once (contended; the counters as
// last published), and once the sender finishes, the daemon's next send
// goes through.
TEST_F(SegmentBias, TheDaemonDoesNotWaitForASenderStoppedInsideABiasedSend) {
  ASSERT_TRUE(make(layout::kUnbounded));
  auto daemon = Segment::attach(path, /*no_wait=*/true);
  ASSERT_TRUE(daemon.ok());
  daemon->set_control(ctl.get());
  const pid_t child = biased_child(path, ctl, 2);
  ASSERT_TRUE(wait_stopped(child)) << "the child did not stop inside its send";
  EXPECT_EQ(daemon->push("d", 1, {}, 0).error(), Errc::contended);
  EXPECT_EQ(daemon->stats().total_sent, kAlone);  // as last published
  ::kill(child, SIGCONT);
  ASSERT_EQ(reap(child), 0);
  ASSERT_TRUE(daemon->push("d", 1, {}, 0).ok());
  EXPECT_EQ(r.stats().total_sent, kAlone + 1);
  EXPECT_EQ(r.stats().lost, 0u);
}

}  // namespace
}  // namespace mbx

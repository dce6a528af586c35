// Segment across processes: producers in forked children that attach the
// segment by path, the futex words, and recovery from a participant that died
// holding the robust mutex.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <vector>

#include "segment.h"
#include "test_util.h"

namespace mbx {
namespace {

using ut::SharedControl;
using ut::TempDir;

constexpr uint32_t kPerProducer = 3000;

// Child: attaches by path and pushes kPerProducer checksummed messages,
// sleeping on `popped` while the ring is full. Exit status 0 = all sent.
[[noreturn]] void produce(const std::string& path, SharedControl& ctl, uint32_t prod) {
  auto seg = Segment::attach(path);
  if (!seg) ::_exit(10);
  seg->set_control(ctl.get());
  const timespec deadline_step{0, 50 * 1000 * 1000};
  const int64_t give_up = realtime_ns() + 20'000'000'000;
  for (uint32_t i = 0; i < kPerProducer;) {
    std::string m = ut::make_msg(prod, i);
    const uint32_t seen = seg->header()->popped.load(std::memory_order_acquire);
    auto r = seg->push(m.data(), m.size(), Sender{static_cast<int32_t>(::getpid()), 0, 0}, realtime_ns());
    if (r) {
      seg->after_push(false);
      i++;
      continue;
    }
    if (r.error() != Errc::again) ::_exit(11);
    if (realtime_ns() > give_up) ::_exit(12);
    seg->header()->sleeping_senders.fetch_add(1);
    futex_wait(&seg->header()->popped, seen, &deadline_step);
    seg->header()->sleeping_senders.fetch_sub(1);
  }
  ::_exit(0);
}

TEST(SegmentProcess, ProducersInChildrenNothingLostOrDuplicated) {
  TempDir d;
  SharedControl ctl;
  const std::string path = d.file("s");
  Segment seg = ut::make_segment(path, 8, 400, ctl);  // small: producers often find it full
  ASSERT_TRUE(seg.valid());
  constexpr uint32_t kProducers = 3;
  std::vector<pid_t> kids;
  for (uint32_t p = 0; p < kProducers; p++) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) produce(path, ctl, p);
    kids.push_back(pid);
  }
  std::map<uint32_t, uint32_t> next;  // per producer: the next i expected
  uint32_t got = 0, damaged = 0, out_of_order = 0;
  const auto deadline = ut::Clock::now() + std::chrono::seconds(30);
  while (got < kProducers * kPerProducer && ut::Clock::now() < deadline) {
    seg.header()->sleeping_receivers.fetch_add(1);
    const uint32_t seen = seg.header()->pushed.load(std::memory_order_acquire);
    std::string out;
    auto r = seg.pop(out, realtime_ns());
    if (!r) {
      ASSERT_EQ(r.error(), Errc::again);
      const timespec step{0, 50 * 1000 * 1000};
      futex_wait(&seg.header()->pushed, seen, &step);
      seg.header()->sleeping_receivers.fetch_sub(1);
      continue;
    }
    seg.header()->sleeping_receivers.fetch_sub(1);
    seg.after_pop(true);
    got++;
    auto id = ut::check_msg(out);
    if (!id) {
      damaged++;
      continue;
    }
    if (id->second != next[id->first]) out_of_order++;  // also catches duplicates and losses
    next[id->first] = id->second + 1;
  }
  for (pid_t k : kids) {
    int st = ut::wait_child(k, std::chrono::seconds(10));
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "producer status " << st;
  }
  EXPECT_EQ(got, kProducers * kPerProducer);
  EXPECT_EQ(damaged, 0u);
  EXPECT_EQ(out_of_order, 0u);
  for (uint32_t p = 0; p < kProducers; p++) EXPECT_EQ(next[p], kPerProducer) << "producer " << p;
  std::string extra;
  EXPECT_EQ(seg.pop(extra, 0).error(), Errc::again);
  auto st = seg.stats();
  EXPECT_EQ(st.total_sent, kProducers * kPerProducer);
  EXPECT_EQ(st.total_received, kProducers * kPerProducer);
  EXPECT_EQ(st.lost, 0u);
  EXPECT_EQ(ctl.used(), 0u);
}

// A child that takes the segment's mutex (optionally damaging the ring) and
// dies without unlocking it.
void die_holding_lock(Segment& seg, bool damage) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (pthread_mutex_lock(&seg.header()->lock) != 0) ::_exit(1);
    if (damage) seg.header()->bytes += 5;  // a half-made change
    ::_exit(0);
  }
  int st = ut::wait_child(pid);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(SegmentProcess, OwnerDeathIsRecovered) {
  TempDir d;
  SharedControl ctl;
  Segment seg = ut::make_segment(d.file("s"), 8, 100, ctl);
  ASSERT_TRUE(seg.push("before", 6, {}, 0).ok());
  die_holding_lock(seg, false);
  // The next lock sees EOWNERDEAD, re-validates the ring and goes on.
  auto r = seg.push("after", 5, {}, 0);
  ASSERT_TRUE(r.ok()) << to_errno(r.error());
  EXPECT_EQ(seg.stats().lost, 1u);
  std::string out;
  ASSERT_TRUE(seg.pop(out, 0).ok());
  EXPECT_EQ(out, "before");
  out.clear();
  ASSERT_TRUE(seg.pop(out, 0).ok());
  EXPECT_EQ(out, "after");
  // The mutex is consistent again: a second death is counted once more.
  die_holding_lock(seg, false);
  out.clear();
  EXPECT_EQ(seg.pop(out, 0).error(), Errc::again);
  EXPECT_EQ(seg.stats().lost, 2u);
  EXPECT_EQ(seg.header()->state.load(), layout::kLive);
  // A pop in another thread after a normal unlock works (the mutex is usable).
  ASSERT_TRUE(seg.push("x", 1, {}, 0).ok());
  std::thread t([&] {
    std::string o;
    EXPECT_TRUE(seg.pop(o, 0).ok());
  });
  t.join();
}

TEST(SegmentProcess, OwnerDeathWithDamagedRingMarksCorrupt) {
  TempDir d;
  SharedControl ctl;
  Segment seg = ut::make_segment(d.file("s"), 8, 100, ctl);
  ASSERT_TRUE(seg.push("before", 6, {}, 0).ok());
  die_holding_lock(seg, true);
  EXPECT_EQ(seg.push("after", 5, {}, 0).error(), Errc::bad_message);
  EXPECT_EQ(seg.header()->state.load(), layout::kCorrupt);
  std::string out;
  EXPECT_EQ(seg.pop(out, 0).error(), Errc::bad_message);  // and the mutex was not left locked
  EXPECT_EQ(Segment::attach(seg.path()).error(), Errc::bad_message);
}

TEST(SegmentProcess, ChildAttachSeesParentMessages) {
  TempDir d;
  SharedControl ctl;
  Segment seg = ut::make_segment(d.file("s"), 8, 100, ctl);
  for (const char* m : {"one", "two"}) ASSERT_TRUE(seg.push(m, strlen(m), {}, 0).ok());
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = Segment::attach(seg.path());
    if (!s) ::_exit(1);
    s->set_control(ctl.get());
    std::string out;
    if (!s->pop(out, 0) || out != "one") ::_exit(2);
    if (!s->push("three", 5, {}, 0)) ::_exit(3);
    ::_exit(0);
  }
  int st = ut::wait_child(pid);
  ASSERT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
  std::string out;
  ASSERT_TRUE(seg.pop(out, 0).ok());
  EXPECT_EQ(out, "two");
  out.clear();
  ASSERT_TRUE(seg.pop(out, 0).ok());
  EXPECT_EQ(out, "three");
  EXPECT_EQ(ctl.used(), 0u);  // the child's quota accounting is shared
}

}  // namespace
}  // namespace mbx

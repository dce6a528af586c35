// SPDX-License-Identifier: MIT
// Segment sizing (layout version 5): a default mailbox's ring is sized by what
// traffic needs, not by capacity x max_message; version 4 segments still work.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "shm/segment.h"
#include "shm/state_dir.h"
#include "test_util.h"

namespace mbx {
namespace {

using ut::SharedControl;
using ut::TempDir;

// The defaults of a mount: capacity 64, max_message 1 MiB.
constexpr uint64_t kCap = 64, kMax = 1u << 20;

Segment default_segment(const std::string& path, SharedControl& ctl) { return ut::make_segment(path, kCap, kMax, ctl); }

// Pages of the whole mapping (header included) in memory.
size_t resident_pages(const Segment& s) {
  const size_t len = layout::kHeaderSize + s.data_size();
  std::vector<unsigned char> v(len / 4096);
  if (::mincore(s.header(), len, v.data()) != 0) return SIZE_MAX;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

long minor_faults() {
  rusage r;
  ::getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt;
}

// One producer thread and one consumer thread, each with its own mapping,
// `n` messages of `len` bytes, each carrying its number; checks the order.
void spsc(Segment& tx, Segment& rx, uint64_t n, size_t len, uint64_t first) {
  std::vector<char> msg(len, 'x');
  std::atomic<bool> bad{false};
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);  // hang guard only
  std::thread consumer([&] {
    std::vector<char> buf(len);
    for (uint64_t i = first; i < first + n && !bad;) {
      auto r = rx.pop_into(buf.data(), buf.size(), 0);
      if (!r) {
        if (r.error() != Errc::again || std::chrono::steady_clock::now() > give_up) bad = true;
        sched_yield();
        continue;
      }
      uint64_t got;
      std::memcpy(&got, buf.data(), sizeof got);
      if (r->len != len || got != i) bad = true;
      i++;
    }
  });
  for (uint64_t i = first; i < first + n && !bad;) {
    std::memcpy(msg.data(), &i, sizeof i);
    auto r = tx.push(msg.data(), msg.size(), {}, 0);
    if (!r) {
      if (r.error() != Errc::again || std::chrono::steady_clock::now() > give_up) bad = true;
      sched_yield();
      continue;
    }
    i++;
  }
  consumer.join();
  ASSERT_FALSE(bad);
}

// Steady 4 KiB traffic through a default mailbox settles in a ring of a few
// hundred KiB that stays allocated: no page fault per lap (version 4 gave the
// memory back behind the head and faulted it in again on each of the 68 MB
// area's laps: ~26,000 faults per 100,000 messages).
TEST(SegmentSizing, SteadyTrafficOnADefaultMailboxTakesNoPageFaults) {
  TempDir d;
  SharedControl ctl;
  Segment tx = default_segment(d.file("s"), ctl);
  auto rx = Segment::attach(tx.path());
  ASSERT_TRUE(rx.ok());
  rx->set_control(ctl.get(), true);
  ASSERT_GT(tx.data_size(), 64u << 20);
  spsc(tx, *rx, 20000, 4096, 0);  // warm-up: the ring finds its size
  const long before = minor_faults();
  spsc(tx, *rx, 100000, 4096, 20000);
  const long faults = minor_faults() - before;
  EXPECT_LT(faults, 64) << "minor page faults over 100,000 messages";
  EXPECT_GT(tx.header()->send.tail, 2 * tx.data_size());  // it did go round, early
  EXPECT_LE(resident_pages(tx), (layout::kKeepResident + layout::kHeaderSize) / 4096);
  EXPECT_EQ(tx.header()->state.load(), layout::kLive);
}

// A large message still goes through a ring that settled small, and a ring
// emptied after small traffic still takes its capacity of the largest
// messages with no receiver; then the memory beyond the kept area is given
// back as the receivers pass it.
TEST(SegmentSizing, LargeMessagesStillFitTheCapacity) {
  TempDir d;
  SharedControl ctl(1ull << 30);
  Segment s = default_segment(d.file("s"), ctl);
  std::string out;
  const std::string small(4000, 's');
  for (int i = 0; i < 5000; i++) {  // settled, wrapping early, some queued
    ASSERT_TRUE(s.push(small.data(), small.size(), {}, 0).ok()) << i;
    if (i >= 10) {
      ASSERT_TRUE(s.pop(out, 0).ok());
    }
  }
  const std::string big(kMax, 'B');
  ASSERT_TRUE(s.push(big.data(), big.size(), {}, 0).ok());  // behind ten small ones
  for (int i = 0; i < 10; i++) ASSERT_TRUE(s.pop(out, 0).ok());
  out.clear();
  ASSERT_TRUE(s.pop(out, 0).ok());
  EXPECT_EQ(out, big);
  // Empty now: the capacity in messages of max_message, no receiver.
  for (uint64_t i = 0; i < kCap; i++) ASSERT_TRUE(s.push(big.data(), big.size(), {}, 0).ok()) << i;
  EXPECT_EQ(s.push("x", 1, {}, 0).error(), Errc::again);  // full by count
  for (uint64_t i = 0; i < kCap; i++) {
    out.clear();
    ASSERT_TRUE(s.pop(out, 0).ok());
    ASSERT_EQ(out.size(), big.size());
  }
  // Back to small traffic: laps shrink, and what the large ones touched
  // beyond the kept area is released as the head passes it.
  for (int i = 0; i < 20000; i++) {
    ASSERT_TRUE(s.push(small.data(), small.size(), {}, 0).ok()) << i;
    if (i >= 40) {
      ASSERT_TRUE(s.pop(out, 0).ok());
    }
  }
  EXPECT_LE(resident_pages(s), (layout::kKeepResident + 2 * kMax) / 4096);
  EXPECT_EQ(s.header()->state.load(), layout::kLive);
}

// A mailbox nobody uses holds little: a fresh one its header page, one used
// for a ping-pong of small messages at most 64 KiB with the header, and
// trim() gives back all of it once it is empty.
TEST(SegmentSizing, IdleMailboxesHoldLittleMemory) {
  TempDir d;
  SharedControl ctl;
  Segment s = default_segment(d.file("s"), ctl);
  EXPECT_LE(resident_pages(s), 1u);
  const std::string m(4096, 'p');
  std::string out;
  for (int i = 0; i < 1000; i++) {  // a ping-pong
    ASSERT_TRUE(s.push(m.data(), m.size(), {}, 0).ok());
    out.clear();
    ASSERT_TRUE(s.pop(out, 0).ok());
  }
  EXPECT_LE(resident_pages(s) * 4096, 64u * 1024);
  // Lagging traffic grows the ring; trim() of the emptied ring gives it all back.
  for (int i = 0; i < 3000; i++) {
    ASSERT_TRUE(s.push(m.data(), m.size(), {}, 0).ok());
    if (i >= 60) {
      ASSERT_TRUE(s.pop(out, 0).ok());
    }
  }
  EXPECT_GT(resident_pages(s) * 4096, 64u * 1024);
  EXPECT_EQ(s.trim(), Errc::busy);  // not while something is queued
  while (s.pop(out, 0).ok()) {
  }
  EXPECT_EQ(s.trim(), Errc::ok);
  EXPECT_EQ(resident_pages(s), 1u);
  EXPECT_EQ(s.header()->send.tail % s.data_size(), 0u);
  // It works as before, and validation agrees with what trim() left.
  EXPECT_TRUE(Segment::attach(s.path()).ok());
  for (int i = 0; i < 200; i++) {
    const std::string msg = std::to_string(i);
    ASSERT_TRUE(s.push(msg.data(), msg.size(), {}, 0).ok());
    out.clear();
    ASSERT_TRUE(s.pop(out, 0).ok());
    ASSERT_EQ(out, msg);
  }
}

// A client of a segment being trimmed: attaches `path` and for each of
// `rounds` rounds sends (producer) or receives and checks (consumer) `per`
// make_msg() messages, sleeping on the futex words while it must wait; then
// says it is idle (a byte on `up`) and waits for a byte on `down`. Exit 0:
// every message went through whole and in order.
[[noreturn]] void trim_client(const std::string& path, SharedControl& ctl, bool producer, int rounds, uint32_t per,
                              int up, int down) {
  auto seg = Segment::attach(path);
  if (!seg) ::_exit(10);
  seg->set_control(ctl.get(), true);
  layout::SegmentHeader* h = seg->header();
  const int64_t give_up = realtime_ns() + 60'000'000'000;  // hang guard only
  const timespec step{0, 50 * 1000 * 1000};
  uint32_t i = 0;
  for (int r = 0; r < rounds; r++) {
    for (const uint32_t end = i + per; i < end;) {
      if (realtime_ns() > give_up) ::_exit(11);
      if (producer) {
        const std::string m = ut::make_msg(0, i);
        const uint32_t seen = h->popped.load(std::memory_order_acquire);
        auto p = seg->push(m.data(), m.size(), {}, realtime_ns());
        if (p) {
          seg->after_push(false);
          i++;
          continue;
        }
        if (p.error() != Errc::again) ::_exit(12);
        h->sleeping_senders.fetch_add(1);
        futex_wait(&h->popped, seen, &step);
        h->sleeping_senders.fetch_sub(1);
      } else {
        h->sleeping_receivers.fetch_add(1);
        const uint32_t seen = h->pushed.load(std::memory_order_acquire);
        std::string out;
        auto p = seg->pop(out, realtime_ns());
        if (!p) {
          if (p.error() != Errc::again) ::_exit(13);
          futex_wait(&h->pushed, seen, &step);
          h->sleeping_receivers.fetch_sub(1);
          continue;
        }
        h->sleeping_receivers.fetch_sub(1);
        seg->after_pop(false);
        auto id = ut::check_msg(out);
        if (!id || id->first != 0 || id->second != i) ::_exit(14);  // damaged, lost, duplicated or reordered
        i++;
      }
    }
    char c = 'i';
    if (::write(up, &c, 1) != 1 || ::read(down, &c, 1) != 1) ::_exit(15);
  }
  ::_exit(0);
}

// The daemon trims an idle mailbox while library clients have it mapped:
// trims made as often as possible during their traffic (each one that finds
// the ring empty moves it to the next lap and drops its memory) and one
// between rounds, while both clients sit idle, which leaves only the header
// resident. The clients see every message whole and in order.
TEST(SegmentSizing, TrimWhileClientsMapItLosesNothing) {
  TempDir d;
  SharedControl ctl;
  Segment s = default_segment(d.file("s"), ctl);
  s.set_no_wait(true);  // as the daemon: never waits for a client's lock
  constexpr int kRounds = 8;
  constexpr uint32_t kPer = 600;
  int up[2], down[2];
  ASSERT_EQ(::pipe(up), 0);
  ASSERT_EQ(::pipe(down), 0);
  std::vector<pid_t> kids;
  struct Reaper {  // an assertion that returns early leaves no client behind
    std::vector<pid_t>& kids;
    ~Reaper() {
      for (pid_t k : kids) ::kill(k, SIGKILL), ::waitpid(k, nullptr, 0);
    }
  } reaper{kids};
  for (bool producer : {true, false}) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) trim_client(s.path(), ctl, producer, kRounds, kPer, up[1], down[0]);
    kids.push_back(pid);
  }
  ::close(up[1]);
  ::close(down[0]);
  ASSERT_EQ(::fcntl(up[0], F_SETFL, O_NONBLOCK), 0);
  uint64_t trimmed_during = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // hang guard only
  for (int r = 0; r < kRounds; r++) {
    for (int idle = 0; idle < 2;) {
      char c;
      const ssize_t n = ::read(up[0], &c, 1);
      if (n == 1) {
        idle++;
        continue;
      }
      ASSERT_TRUE(n < 0 && errno == EAGAIN) << "a client ended early";
      ASSERT_LT(std::chrono::steady_clock::now(), give_up);
      const Errc e = s.trim();
      ASSERT_TRUE(e == Errc::ok || e == Errc::busy || e == Errc::contended) << to_errno(e);
      trimmed_during += e == Errc::ok;
    }
    ASSERT_EQ(s.trim(), Errc::ok);
    EXPECT_EQ(resident_pages(s), 1u) << "round " << r;
    const char go[2] = {'g', 'g'};
    ASSERT_EQ(::write(down[1], go, 2), 2);
  }
  for (pid_t k : kids) {
    const int st = ut::wait_child(k, std::chrono::seconds(60));
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "client status " << st;
  }
  kids.clear();
  ::close(up[0]);
  ::close(down[1]);
  const SegmentStats st = s.stats();
  EXPECT_EQ(st.total_sent, uint64_t{kRounds} * kPer);
  EXPECT_EQ(st.total_received, uint64_t{kRounds} * kPer);
  EXPECT_EQ(st.lost, 0u);
  EXPECT_EQ(s.header()->state.load(), layout::kLive);
  EXPECT_EQ(ctl.used(), 0u);  // stats() settled what the receives and the credit held
  RecordProperty("trims_during_traffic", std::to_string(trimmed_during));
}

// The sizing words are the senders' policy, but out of range they are a
// scribble: attach refuses the segment, and a sender marks it corrupt.
TEST(SegmentSizing, ScribbledSizingWordsAreCorruption) {
  struct Case {
    const char* name;
    void (*scribble)(layout::SegmentHeader*);
  };
  const Case cases[] = {
      {"lap_max too large", [](layout::SegmentHeader* h) { h->lap_max = layout::record_size(kMax) + 8; }},
      {"lap_max unaligned", [](layout::SegmentHeader* h) { h->lap_max = 4100; }},
      {"populated too large", [](layout::SegmentHeader* h) { h->populated = layout::kKeepResident + 4096; }},
      {"populated unaligned", [](layout::SegmentHeader* h) { h->populated = 100; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir d;
    SharedControl ctl;
    Segment s = default_segment(d.file("s"), ctl);
    std::string out;
    ASSERT_TRUE(s.push("abc", 3, {}, 0).ok());
    ASSERT_TRUE(s.pop(out, 0).ok());
    auto other = Segment::attach(s.path());  // a participant already attached
    ASSERT_TRUE(other.ok());
    c.scribble(s.header());
    EXPECT_EQ(Segment::attach(s.path()).error(), Errc::bad_message);
    EXPECT_EQ(s.header()->state.load(), layout::kCorrupt);
    s.header()->state.store(layout::kLive);  // the attach found it; now the sender on its own
    Errc e = Errc::ok;
    for (int i = 0; i < 100 && e == Errc::ok; i++) e = other->push("x", 1, {}, 0).error();  // within a page
    EXPECT_EQ(e, Errc::bad_message);
    EXPECT_EQ(s.header()->state.load(), layout::kCorrupt);
  }
}

// A version 4 segment (an older daemon's, adopted after a restart) is
// attached and used as version 4 used it: its sizing words stay unused, and
// its ring walks the whole area. Its control header is taken over too.
TEST(SegmentSizing, Version4SegmentsAndControlAreAdopted) {
  const std::string dir = ut::fresh_path();
  const std::string seg = dir + "/m5.0";
  {
    auto st = StateDir::open(dir, 1u << 30);
    ASSERT_TRUE(st.ok());
    st->control()->version = 4;
    auto made = Segment::create(seg, 8, 4000, data_size_for(8, 4000, 1u << 30), 0600);
    ASSERT_TRUE(made.ok());
    made->header()->version = 4;  // as version 4 wrote it: the same offsets, no sizing words
    st->keep();                   // the daemon died: its state stays
  }
  {
    auto st = StateDir::open(dir, 1u << 30);
    ASSERT_TRUE(st.ok());
    EXPECT_TRUE(st->restored());
    EXPECT_EQ(st->control()->version, layout::kVersion);
    auto s = Segment::attach(seg, /*no_wait=*/true);
    ASSERT_TRUE(s.ok()) << to_errno(s.error());
    s->set_control(st->control());
    std::string out;
    const std::string m(1000, 'v');
    uint64_t max_off = 0;
    for (int i = 0; i < 2000; i++) {
      ASSERT_TRUE(s->push(m.data(), m.size(), {}, 0).ok()) << i;
      max_off = std::max(max_off, s->header()->send.tail % s->data_size());
      if (i >= 4) {
        out.clear();
        ASSERT_TRUE(s->pop(out, 0).ok());
        ASSERT_EQ(out, m);
      }
    }
    EXPECT_EQ(s->header()->version, 4u);
    EXPECT_EQ(s->header()->lap_max, 0u);
    EXPECT_EQ(s->header()->populated, 0u);
    EXPECT_GT(max_off, s->data_size() - layout::record_size(1000));  // no early wrap
    EXPECT_TRUE(Segment::attach(seg).ok());
  }
  EXPECT_FALSE(ut::path_exists(dir));
}

}  // namespace
}  // namespace mbx

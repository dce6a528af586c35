// SPDX-License-Identifier: MIT
// Segment priorities (layout version 6): a receive takes the oldest record of
// the highest priority; one taken from the middle stays as a tombstone until
// the head passes it; a ring whose records all have priority 0 works as
// version 5 did; a scribbled priority word is caught.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "shm/segment.h"
#include "test_util.h"

namespace mbx {
namespace {

using ut::make_segment;
using ut::SharedControl;
using ut::TempDir;

struct Got {
  std::string data;
  unsigned prio;
  uint64_t seq;
};

std::optional<Got> pop_one(Segment& s, Errc* err = nullptr) {
  std::string out;
  auto r = s.pop(out, realtime_ns());
  if (err) *err = r.ok() ? Errc::ok : r.error();
  if (!r) return std::nullopt;
  return Got{out, r->prio, r->seq};
}

Result<uint64_t> push(Segment& s, const std::string& m, unsigned prio) {
  return s.push(m.data(), m.size(), Sender{1, 2, 3}, realtime_ns(), false, prio);
}

TEST(SegmentPrio, HighestFirstFifoWithinAPriority) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 64, 512, ctl);
  const std::vector<std::pair<std::string, unsigned>> sent = {{"a0", 0}, {"b5", 5}, {"c0", 0},         {"d9", 9},
                                                              {"e5", 5}, {"f9", 9}, {"g32767", 32767}, {"h0", 0}};
  for (auto& [m, p] : sent) ASSERT_TRUE(push(s, m, p).ok());
  EXPECT_EQ(push(s, "x", layout::kPrioMask + 1).error(), Errc::invalid);
  auto counts = s.priority_counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(*counts, (std::vector<std::pair<unsigned, uint64_t>>{{32767, 1}, {9, 2}, {5, 2}, {0, 3}}));
  EXPECT_EQ(*s.peek_len(), 6u);  // "g32767"
  const std::vector<std::pair<std::string, unsigned>> want = {{"g32767", 32767}, {"d9", 9}, {"f9", 9}, {"b5", 5},
                                                              {"e5", 5},         {"a0", 0}, {"c0", 0}, {"h0", 0}};
  for (auto& [m, p] : want) {
    auto g = pop_one(s);
    ASSERT_TRUE(g.has_value());
    EXPECT_EQ(g->data, m);
    EXPECT_EQ(g->prio, p);
  }
  Errc e;
  EXPECT_FALSE(pop_one(s, &e));
  EXPECT_EQ(e, Errc::again);
  // Every tombstone was passed: the ring is empty and back on the fast path.
  const auto* h = s.header();
  EXPECT_EQ(h->recv.head, h->send.tail);
  EXPECT_EQ(h->tombs, 0u);
  EXPECT_EQ(h->prio_popped, h->prio_pushed);
  EXPECT_EQ(s.stats().count, 0u);
  EXPECT_EQ(s.stats().total_received, 8u);
}

TEST(SegmentPrio, ViewAndPopIntoReportThePriority) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 8, 64, ctl);
  ASSERT_TRUE(push(s, "low", 1).ok());
  ASSERT_TRUE(push(s, "high", 7).ok());
  auto v = s.view(0);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::string(v->data, v->len), "high");
  EXPECT_EQ(v->prio, 7u);
  s.cancel_view();  // stays queued, still first
  v = s.view(0);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->prio, 7u);
  s.release_view();
  char buf[16];
  auto r = s.pop_into(buf, sizeof buf, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(buf, r->len), "low");
  EXPECT_EQ(r->prio, 1u);
  EXPECT_EQ(s.header()->recv.head, s.header()->send.tail);
}

// A model priority queue against the ring, over many laps of a small area,
// messages of random sizes and priorities, pushes and pops interleaved: the
// order is the model's, tombstones are reclaimed (the ring never stops
// accepting below what it can hold once drained), counters add up.
TEST(SegmentPrio, TombstonesAreReclaimedOverManyLaps) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 32, 200, ctl);
  std::mt19937 rng(15);
  // (prio desc, seq asc) -> payload
  std::map<std::pair<int, uint64_t>, std::string> model;
  uint64_t sent = 0, laps_start = s.header()->send.tail;
  uint64_t out_of_order = 0;
  for (int step = 0; step < 200000; step++) {
    const bool do_push = model.size() < 32 && (model.empty() || rng() % 100 < 52);
    if (do_push) {
      const unsigned prio = rng() % 4 == 0 ? 0 : rng() % 6;
      std::string m = "m" + std::to_string(sent) + std::string(rng() % 150, 'x');
      auto r = push(s, m, prio);
      if (!r.ok()) {
        // Tombstones hold room until the head passes them: the ring may be
        // full below the capacity, never while it holds only live records.
        ASSERT_EQ(r.error(), Errc::again) << step;
        ASSERT_GT(s.header()->tombs, 0u) << step;
        continue;
      }
      model[{-static_cast<int>(prio), *r}] = m;
      sent++;
    } else {
      auto g = pop_one(s);
      ASSERT_TRUE(g.has_value()) << step;
      auto it = model.begin();
      ASSERT_EQ(g->data, it->second) << step;
      ASSERT_EQ(g->prio, static_cast<unsigned>(-it->first.first));
      ASSERT_EQ(g->seq, it->first.second);
      const auto oldest = std::min_element(model.begin(), model.end(),
                                           [](auto& a, auto& b) { return a.first.second < b.first.second; });
      if (g->seq != oldest->first.second) out_of_order++;
      model.erase(it);
      if (model.empty()) {
        ASSERT_EQ(s.header()->recv.head, s.header()->send.tail) << step;
        ASSERT_EQ(s.header()->tombs, 0u) << step;
      }
    }
  }
  EXPECT_GT(out_of_order, 1000u);
  EXPECT_GT((s.header()->send.tail - laps_start) / s.data_size(), 20u);  // many laps
  const SegmentStats st = s.stats();
  EXPECT_EQ(st.count, model.size());
  EXPECT_EQ(st.total_sent, st.total_received + st.count);
  // A fresh attach validates the ring with its tombstones and words.
  auto again = Segment::attach(s.path());
  ASSERT_TRUE(again.ok());
  while (!model.empty()) {
    auto g = pop_one(*again);
    ASSERT_TRUE(g.has_value());
    ASSERT_EQ(g->data, model.begin()->second);
    model.erase(model.begin());
  }
  EXPECT_EQ(again->header()->recv.head, again->header()->send.tail);
}

// Priority 0 only: no word of version 6 moves and every record's flags stay
// 0, so the ring is byte for byte what version 5 made.
TEST(SegmentPrio, PriorityZeroLeavesTheVersion5Layout) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 16, 128, ctl);
  for (int i = 0; i < 1000; i++) {
    ASSERT_TRUE(push(s, "m" + std::to_string(i), 0).ok());
    if (i % 3 || s.stats().count > 8) {
      ASSERT_TRUE(pop_one(s).has_value());
    }
  }
  const auto* h = s.header();
  EXPECT_EQ(h->prio_pushed, 0u);
  EXPECT_EQ(h->prio_popped, 0u);
  EXPECT_EQ(h->tombs, 0u);
  EXPECT_EQ(h->recv_take, 0u);
}

// A segment of version 5 (an older daemon's) is adopted and used as before;
// a priority > 0 is refused there rather than ignored.
TEST(SegmentPrio, Version5SegmentIsAdoptedWithoutPriorities) {
  TempDir d;
  SharedControl ctl;
  std::string path = d.file("s");
  {
    Segment s = make_segment(path, 16, 128, ctl);
    ASSERT_TRUE(push(s, "old", 0).ok());
    s.header()->version = 5;
  }
  auto s = Segment::attach(path);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(push(*s, "new", 3).error(), Errc::not_supported);
  ASSERT_TRUE(push(*s, "new", 0).ok());
  auto g = pop_one(*s);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->data, "old");
  g = pop_one(*s);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->data, "new");
}

layout::RecordHeader* record_at(Segment& s, uint64_t pos) {
  return reinterpret_cast<layout::RecordHeader*>(reinterpret_cast<char*>(s.header()) + layout::kHeaderSize +
                                                 pos % s.data_size());
}

// A flags word with a bit no version writes is a scribble: quarantined.
TEST(SegmentPrio, ScribbledFlagsAreCorruption) {
  for (uint32_t bad : {1u << 20, layout::kTaken /* on the head's record */, layout::kTaken | 0u /* prio 0 */}) {
    TempDir d;
    SharedControl ctl;
    Segment s = make_segment(d.file("s"), 16, 128, ctl);
    ASSERT_TRUE(push(s, "a", 0).ok());
    ASSERT_TRUE(push(s, "b", 0).ok());
    record_at(s, s.header()->recv.head)->flags = bad;
    Errc e;
    EXPECT_FALSE(pop_one(s, &e));
    EXPECT_EQ(e, Errc::bad_message) << bad;
    EXPECT_TRUE(s.corrupt());
  }
}

// Version 6's words are checked where they are read: receivers counted
// ahead of senders, fewer tombstones counted than the ring holds, a take
// pending outside a commit.
TEST(SegmentPrio, ScribbledPriorityWordsAreCorruption) {
  enum { popped_ahead, tombs_low, take_pending };
  for (int what : {popped_ahead, tombs_low, take_pending}) {
    TempDir d;
    SharedControl ctl;
    const std::string path = d.file("s");
    Segment s = make_segment(path, 16, 128, ctl);
    ASSERT_TRUE(push(s, "a", 0).ok());
    ASSERT_TRUE(push(s, "b", 4).ok());
    ASSERT_TRUE(push(s, "c", 0).ok());
    ASSERT_EQ(pop_one(s)->data, "b");  // a tombstone after "a"
    auto* h = s.header();
    if (what == popped_ahead) h->prio_popped = h->prio_pushed + 1;
    if (what == tombs_low) h->tombs = 0;
    if (what == take_pending) h->recv_take = h->recv.head + 1;
    EXPECT_EQ(Segment::attach(path).error(), Errc::bad_message) << what;
  }
  // In use, too: a receiver that finds the words inconsistent stops.
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 16, 128, ctl);
  ASSERT_TRUE(push(s, "a", 0).ok());
  ASSERT_TRUE(push(s, "b", 4).ok());
  s.header()->prio_popped = 5;
  Errc e;
  EXPECT_FALSE(pop_one(s, &e));
  EXPECT_EQ(e, Errc::bad_message);
}

// A sender that died between counting its record of priority > 0 and
// publishing it leaves prio_pushed high: receives take the walk until one
// finds nothing of priority > 0 queued and catches up.
TEST(SegmentPrio, CountLeftHighByADeadSenderCatchesUp) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 16, 128, ctl);
  s.header()->prio_pushed += 1;  // as a death between the count and the commit
  ASSERT_TRUE(push(s, "a", 0).ok());
  ASSERT_TRUE(push(s, "b", 0).ok());
  EXPECT_EQ(pop_one(s)->data, "a");
  EXPECT_EQ(s.header()->prio_popped, s.header()->prio_pushed);
  EXPECT_EQ(pop_one(s)->data, "b");
  EXPECT_FALSE(s.corrupt());
}

// A resize keeps each message's priority and the order within a priority.
TEST(SegmentPrio, RetireAndTakeKeepsPriorities) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 16, 128, ctl);
  ASSERT_TRUE(push(s, "a", 0).ok());
  ASSERT_TRUE(push(s, "b", 3).ok());
  ASSERT_TRUE(push(s, "c", 3).ok());
  ASSERT_TRUE(push(s, "d", 1).ok());
  ASSERT_EQ(pop_one(s)->data, "b");  // leaves a tombstone: not moved
  std::vector<Segment::Taken> taken;
  ASSERT_TRUE(s.retire_and_take(taken).ok());
  ASSERT_EQ(taken.size(), 3u);
  EXPECT_EQ(taken[0].data, "a");
  EXPECT_EQ(taken[0].prio, 0u);
  EXPECT_EQ(taken[1].data, "c");
  EXPECT_EQ(taken[1].prio, 3u);
  EXPECT_EQ(taken[2].data, "d");
  EXPECT_EQ(taken[2].prio, 1u);
  Segment f = make_segment(d.file("f"), 16, 128, ctl);
  for (auto& t : taken) ASSERT_TRUE(f.push(t.data.data(), t.data.size(), t.from, 0, true, t.prio).ok());
  EXPECT_EQ(pop_one(f)->data, "c");
  EXPECT_EQ(pop_one(f)->data, "d");
  EXPECT_EQ(pop_one(f)->data, "a");
}

// Rendezvous: one message on offer at a time, so a priority orders nothing;
// a withdrawn offer of priority > 0 leaves the words consistent.
TEST(SegmentPrio, RendezvousWithdrawOfAPriorityMessage) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 0, 128, ctl);
  auto seq = push(s, "offer", 9);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(push(s, "second", 20).error(), Errc::again);
  EXPECT_EQ(s.try_withdraw(*seq), Segment::Withdrawn::taken_back);
  EXPECT_EQ(s.header()->prio_popped, s.header()->prio_pushed);
  ASSERT_TRUE(push(s, "next", 2).ok());
  auto g = pop_one(s);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->data, "next");
  EXPECT_EQ(s.consumed_seq(), *seq + 2);
}

}  // namespace
}  // namespace mbx

// SPDX-License-Identifier: MIT
// Segment: the shared-memory ring of one mailbox, used in one process.
#include "shm/segment.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "test_util.h"

namespace mbx {
namespace {

using ut::make_segment;
using ut::SharedControl;
using ut::TempDir;

std::string pop_one(Segment& s, Errc* err = nullptr) {
  std::string out;
  auto r = s.pop(out, realtime_ns());
  if (err) *err = r.error();
  return out;
}

TEST(Segment, CreateValidatesArguments) {
  TempDir d;
  // data_size must be page-aligned and hold two largest records.
  EXPECT_EQ(Segment::create(d.file("a"), 4, 100, 4095, 0600).error(), Errc::invalid);
  EXPECT_EQ(Segment::create(d.file("a"), 4, 4096, 4096, 0600).error(), Errc::invalid);
  EXPECT_EQ(Segment::create(d.file("a"), 4, UINT32_MAX, 1ull << 33, 0600).error(), Errc::invalid);
  EXPECT_FALSE(ut::path_exists(d.file("a")));
  auto s = Segment::create(d.file("a"), 4, 100, 4096, 0600);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->capacity(), 4u);
  EXPECT_EQ(s->max_message(), 100u);
  EXPECT_EQ(s->data_size(), 4096u);
  EXPECT_EQ(s->header()->magic, layout::kMagic);
  // O_EXCL: never reuses a file.
  EXPECT_EQ(Segment::create(d.file("a"), 4, 100, 4096, 0600).error(), Errc::exists);
  EXPECT_EQ(Segment::attach(d.file("missing")).error(), Errc::not_found);
}

TEST(Segment, DataSizeFor) {
  // capacity+1 largest records, page-rounded; rendezvous counts as one.
  EXPECT_EQ(data_size_for(4, 1000, 1ull << 30), 8192u);  // 5 * 1032 = 5160
  EXPECT_EQ(data_size_for(0, 1000, 1ull << 30), data_size_for(1, 1000, 1ull << 30));
  // Unbounded: the quota plus two spare records.
  EXPECT_EQ(data_size_for(layout::kUnbounded, 1000, 100000), 102400u);  // 102064 rounded up
  EXPECT_EQ(data_size_for(1000000, 1000, 100000), 102400u);             // the quota bounds it
}

TEST(Segment, DataSizeForHugeQuota) {
  // Regression: `quota_max + 2 * rec` must not wrap around for a huge quota.
  const uint64_t big = data_size_for(layout::kUnbounded, 1u << 20, 1ull << 40);
  EXPECT_GE(data_size_for(layout::kUnbounded, 1u << 20, UINT64_MAX - 4000), big);
  EXPECT_GE(data_size_for(layout::kUnbounded, 1u << 20, UINT64_MAX), big);
}

TEST(Segment, PushPopOrderAndSender) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 16, 512, ctl);
  for (int i = 0; i < 10; i++) {
    std::string m = "msg-" + std::to_string(i);
    auto r = s.push(m.data(), m.size(), Sender{100 + i, 7, 8}, realtime_ns());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, static_cast<uint64_t>(i));
  }
  EXPECT_EQ(*s.peek_len(), 5u);
  for (int i = 0; i < 10; i++) {
    std::string out;
    auto r = s.pop(out, realtime_ns());
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(out, "msg-" + std::to_string(i));
    EXPECT_EQ(r->seq, static_cast<uint64_t>(i));
    EXPECT_EQ(r->from.pid, 100 + i);
    EXPECT_EQ(r->from.uid, 7u);
    EXPECT_EQ(r->from.gid, 8u);
  }
  std::string out;
  EXPECT_EQ(s.pop(out, 0).error(), Errc::again);
  EXPECT_EQ(s.peek_len().error(), Errc::again);
  EXPECT_TRUE(out.empty());
  // Zero-length messages are messages too.
  ASSERT_TRUE(s.push(nullptr, 0, {}, 0).ok());
  auto r = s.pop(out, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(out, "");
  EXPECT_LT(ctl.used(), 64u * 1024);  // receives give quota back in batches
  s.settle_quota();
  EXPECT_EQ(ctl.used(), 0u);
}

// Random pushes and pops of random sizes against a model queue, over many
// wraps. A mailbox below its capacity must always accept a message of up to
// max_message bytes (data_size_for's promise).
void wrap_cycles(uint64_t capacity, uint64_t max_message, unsigned seed) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), capacity, max_message, ctl);
  ASSERT_TRUE(s.valid());
  std::mt19937 rng(seed);
  std::deque<std::string> model;
  uint64_t sent = 0, received = 0, wraps = 0;
  for (int op = 0; op < 30000; op++) {
    // Mostly pushes, so the ring stays near full and keeps going around
    // (the wrap is what this exercises).
    const bool push = model.empty() || (model.size() < capacity && rng() % 4 != 0);
    if (push) {
      size_t len = rng() % 4 == 0 ? max_message : rng() % (max_message + 1);
      std::string m(len, '\0');
      for (auto& c : m) c = static_cast<char>(rng());
      const uint64_t lap = s.header()->send.tail / s.data_size();
      auto r = s.push(m.data(), m.size(), {}, 0);
      if (!model.empty() && s.header()->send.tail / s.data_size() > lap) wraps++;
      ASSERT_TRUE(r.ok()) << "op " << op << " len " << len << " count " << model.size() << ": " << to_errno(r.error())
                          << " head " << s.header()->head_pub << " tail " << s.header()->tail_pub << " data_size "
                          << s.data_size();
      EXPECT_EQ(*r, sent++);
      model.push_back(std::move(m));
    } else {
      std::string out;
      auto r = s.pop(out, 0);
      ASSERT_TRUE(r.ok()) << "op " << op;
      ASSERT_EQ(r->seq, received++);
      ASSERT_EQ(ut::fnv(out.data(), out.size()), ut::fnv(model.front().data(), model.front().size()));
      ASSERT_EQ(out, model.front());
      model.pop_front();
    }
    if (model.size() == capacity) {
      ASSERT_EQ(s.push("x", 1, {}, 0).error(), Errc::again);
    }
  }
  auto st = s.stats();
  EXPECT_EQ(st.count, model.size());
  EXPECT_EQ(st.total_sent, sent);
  EXPECT_EQ(st.total_received, received);
  s.settle_quota();
  EXPECT_EQ(ctl.used(), st.record_bytes);
  if (capacity > 1) {
    EXPECT_GT(wraps, 50u);  // the ring really went around
  }
}

TEST(Segment, WrapAroundVariableSizes) {
  wrap_cycles(8, 1000, 1);
  wrap_cycles(1, 4000, 2);
  wrap_cycles(2, 2000, 3);
  wrap_cycles(3, 1300, 4);
  wrap_cycles(5, 17, 5);
  wrap_cycles(64, 100, 6);
}

TEST(Segment, FullByCapacity) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 3, 64, ctl);
  for (int i = 0; i < 3; i++) ASSERT_TRUE(s.push("abc", 3, {}, 0).ok());
  EXPECT_TRUE(s.full());
  EXPECT_EQ(s.push("d", 1, {}, 0).error(), Errc::again);
  EXPECT_EQ(s.stats().count, 3u);
  EXPECT_EQ(s.stats().total_sent, 3u);
  pop_one(s);
  EXPECT_FALSE(s.full());
  EXPECT_TRUE(s.push("d", 1, {}, 0).ok());
  // force ignores the limit (resizing moves every queued message).
  EXPECT_TRUE(s.push("e", 1, {}, 0, /*force=*/true).ok());
  EXPECT_EQ(s.stats().count, 4u);
}

TEST(Segment, RendezvousHoldsOne) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 0, 64, ctl);
  EXPECT_EQ(s.capacity(), 0u);
  EXPECT_FALSE(s.full());
  ASSERT_TRUE(s.push("only", 4, {}, 0).ok());
  EXPECT_TRUE(s.full());
  EXPECT_EQ(s.push("two", 3, {}, 0).error(), Errc::again);
  EXPECT_EQ(pop_one(s), "only");
  EXPECT_TRUE(s.push("two", 3, {}, 0).ok());
}

TEST(Segment, UnboundedStopsAtQuota) {
  TempDir d;
  SharedControl ctl(8192);
  Segment s = make_segment(d.file("s"), layout::kUnbounded, 1024, ctl);
  std::string m(1024, 'q');
  const uint64_t rec = layout::record_size(1024);
  int n = 0;
  for (; n < 100; n++) {
    auto r = s.push(m.data(), m.size(), {}, 0);
    if (!r) {
      EXPECT_EQ(r.error(), Errc::no_space);
      break;
    }
  }
  EXPECT_EQ(static_cast<uint64_t>(n), 8192 / rec);  // 7 records of 1056 bytes
  EXPECT_EQ(ctl.used(), n * rec);
  EXPECT_EQ(s.stats().record_bytes, n * rec);
  EXPECT_FALSE(s.full());  // never full by count
  // Small messages still fit in what is left.
  ASSERT_TRUE(s.push("x", 1, {}, 0).ok());
  pop_one(s);
  EXPECT_EQ(ctl.used(), n * rec + layout::record_size(1) - rec);
  ASSERT_TRUE(s.push(m.data(), 500, {}, 0).ok());
  s.discard_all();
  EXPECT_EQ(ctl.used(), 0u);
  EXPECT_EQ(s.stats().count, 0u);
  EXPECT_EQ(pop_one(s), "");
}

TEST(Segment, BoundedAlsoCountsTheMountQuota) {
  TempDir d;
  SharedControl ctl(4096);
  Segment a = make_segment(d.file("a"), 64, 1000, ctl);
  Segment b = make_segment(d.file("b"), 64, 1000, ctl);
  std::string m(1000, 'z');
  ASSERT_TRUE(a.push(m.data(), m.size(), {}, 0).ok());
  ASSERT_TRUE(a.push(m.data(), m.size(), {}, 0).ok());
  ASSERT_TRUE(b.push(m.data(), m.size(), {}, 0).ok());
  EXPECT_EQ(b.push(m.data(), m.size(), {}, 0).error(), Errc::no_space);  // 4 * 1032 > 4096
  EXPECT_EQ(b.stats().count, 1u);
  EXPECT_EQ(ctl.used(), 3 * layout::record_size(1000));
  pop_one(a);
  EXPECT_TRUE(b.push(m.data(), m.size(), {}, 0).ok());
}

// A library sender (batch_sends) takes quota a batch at a time and keeps the
// rest as credit in the segment: later sends touch no shared counter. Reading
// the counters, settling, emptying or resizing gives the credit back.
TEST(Segment, SendCreditTakesQuotaInBatchesAndGivesItBack) {
  TempDir d;
  SharedControl ctl(1ull << 30);  // batch = min(64 KiB, 1 GiB >> 16) = 16 KiB
  Segment s = make_segment(d.file("s"), 1000, 100, ctl);
  s.set_control(ctl.get(), /*batch_sends=*/true);
  const uint64_t batch = 16 * 1024, rec = layout::record_size(10);
  ASSERT_TRUE(s.push("0123456789", 10, {}, 0).ok());
  EXPECT_EQ(ctl.used(), batch);
  EXPECT_EQ(s.header()->send.quota_credit, batch - rec);
  for (int i = 1; i < 100; i++) ASSERT_TRUE(s.push("0123456789", 10, {}, 0).ok());
  EXPECT_EQ(ctl.used(), batch);  // paid from the credit
  EXPECT_EQ(s.header()->send.quota_credit, batch - 100 * rec);
  // Whoever looks sees the quota exact: what is queued, nothing more.
  EXPECT_EQ(s.stats().record_bytes, 100 * rec);
  EXPECT_EQ(ctl.used(), 100 * rec);
  EXPECT_EQ(s.header()->send.quota_credit, 0u);
  ASSERT_TRUE(s.push("0123456789", 10, {}, 0).ok());  // a new batch
  EXPECT_EQ(ctl.used(), 100 * rec + batch);
  s.discard_all();
  EXPECT_EQ(ctl.used(), 0u);
  ASSERT_TRUE(s.push("0123456789", 10, {}, 0).ok());
  std::vector<Segment::Taken> taken;
  s.retire_and_take(taken);  // a resize: the new segment charges the records again
  EXPECT_EQ(taken.size(), 1u);
  EXPECT_EQ(ctl.used(), 0u);
}

// Near the mount's limit a batch no longer fits: each send then charges
// exactly its record, so the credit never refuses a message the quota allows.
TEST(Segment, SendCreditNearTheLimitChargesExactly) {
  TempDir d;
  SharedControl ctl(64ull << 20);  // batch 1 KiB
  Segment s = make_segment(d.file("s"), layout::kUnbounded, 10, ctl);
  s.set_control(ctl.get(), /*batch_sends=*/true);
  const uint64_t rec = layout::record_size(10);
  const uint64_t start = ctl.get()->quota_max - 4 * rec - rec / 2;
  ctl.get()->quota_used.store(start);  // other mailboxes hold the rest
  for (int i = 0; i < 4; i++) ASSERT_TRUE(s.push("0123456789", 10, {}, 0).ok()) << i;
  EXPECT_EQ(ctl.used(), start + 4 * rec);
  EXPECT_EQ(s.header()->send.quota_credit, 0u);
  EXPECT_EQ(s.push("0123456789", 10, {}, 0).error(), Errc::no_space);
  EXPECT_EQ(ctl.used(), start + 4 * rec);  // the refused send took nothing
  pop_one(s);
  s.settle_quota();
  EXPECT_EQ(ctl.used(), start + 3 * rec);
}

// The credit is shared memory too: a scribbled one would let sends past the
// quota, so it makes the mailbox fail instead.
TEST(Segment, ScribbledSendCreditIsCorruption) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 8, 100, ctl);
  s.set_control(ctl.get(), /*batch_sends=*/true);
  ASSERT_TRUE(s.push("x", 1, {}, 0).ok());
  s.header()->send.quota_credit = 1ull << 40;
  EXPECT_EQ(Segment::attach(s.path()).error(), Errc::bad_message);
  EXPECT_EQ(s.push("y", 1, {}, 0).error(), Errc::bad_message);
  EXPECT_EQ(s.header()->state.load(), layout::kCorrupt);
}

TEST(Segment, MessageSize) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 4, 100, ctl);
  std::string m(101, 'm');
  EXPECT_EQ(s.push(m.data(), 101, {}, 0).error(), Errc::msg_size);
  EXPECT_EQ(s.stats().count, 0u);
  EXPECT_EQ(s.stats().next_seq, 0u);
  EXPECT_TRUE(s.push(m.data(), 100, {}, 0).ok());
  EXPECT_EQ(s.max_queued_len(), 100u);
}

TEST(Segment, Withdraw) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 0, 64, ctl);
  auto seq = s.push("offer", 5, {}, 0);
  ASSERT_TRUE(seq.ok());
  EXPECT_FALSE(s.withdraw(*seq + 1));  // not that message
  EXPECT_TRUE(s.withdraw(*seq));
  EXPECT_EQ(s.stats().count, 0u);
  EXPECT_EQ(s.stats().total_sent, 0u);  // never delivered: not counted as sent
  EXPECT_EQ(ctl.used(), 0u);
  EXPECT_EQ(pop_one(s), "");
  // Once received it cannot be taken back.
  seq = s.push("taken", 5, {}, 0);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(pop_one(s), "taken");
  EXPECT_FALSE(s.withdraw(*seq));
  EXPECT_GT(s.consumed_seq(), *seq);
  // Not the only message queued: refused.
  Segment b = make_segment(d.file("b"), 4, 64, ctl);
  auto s0 = b.push("a", 1, {}, 0);
  ASSERT_TRUE(b.push("b", 1, {}, 0).ok());
  EXPECT_FALSE(b.withdraw(*s0));
  EXPECT_EQ(b.stats().count, 2u);
}

TEST(Segment, StatsCounters) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 8, 256, ctl);
  auto st = s.stats();
  EXPECT_EQ(st.count + st.bytes + st.total_sent + st.total_received + st.next_seq, 0u);
  ASSERT_TRUE(s.push("hello", 5, {}, 111).ok());
  ASSERT_TRUE(s.push("hi", 2, {}, 222).ok());
  ASSERT_TRUE(s.push("", 0, {}, 333).ok());
  st = s.stats();
  EXPECT_EQ(st.count, 3u);
  EXPECT_EQ(st.bytes, 7u);
  EXPECT_EQ(st.record_bytes, layout::record_size(5) + layout::record_size(2) + layout::record_size(0));
  EXPECT_EQ(st.total_sent, 3u);
  EXPECT_EQ(st.next_seq, 3u);
  EXPECT_EQ(st.last_send_ns, 333);
  EXPECT_EQ(st.total_received, 0u);
  EXPECT_EQ(ctl.used(), st.record_bytes);
  std::string out;
  ASSERT_TRUE(s.pop(out, 444).ok());
  st = s.stats();
  EXPECT_EQ(st.count, 2u);
  EXPECT_EQ(st.bytes, 2u);
  EXPECT_EQ(st.total_received, 1u);
  EXPECT_EQ(st.consumed_seq, 1u);
  EXPECT_EQ(st.last_recv_ns, 444);
  EXPECT_EQ(st.lost, 0u);
  // Counters survive into a replacement segment.
  Segment r = make_segment(d.file("r"), 8, 256, ctl);
  r.adopt_counters(st);
  EXPECT_EQ(r.stats().total_sent, 3u);
  EXPECT_EQ(r.stats().total_received, 1u);
  EXPECT_EQ(r.stats().count, 0u);
}

TEST(Segment, AttachSeesTheSameRing) {
  TempDir d;
  SharedControl ctl;
  Segment a = make_segment(d.file("s"), 8, 256, ctl);
  for (const char* m : {"one", "two", "three"}) ASSERT_TRUE(a.push(m, strlen(m), {}, 0).ok());
  auto b = Segment::attach(d.file("s"));
  ASSERT_TRUE(b.ok()) << to_errno(b.error());
  b->set_control(ctl.get());
  EXPECT_EQ(b->capacity(), 8u);
  EXPECT_EQ(b->max_message(), 256u);
  EXPECT_EQ(b->data_size(), a.data_size());
  EXPECT_EQ(pop_one(*b), "one");
  EXPECT_EQ(pop_one(a), "two");
  ASSERT_TRUE(b->push("four", 4, {}, 0).ok());
  EXPECT_EQ(pop_one(a), "three");
  EXPECT_EQ(pop_one(a), "four");
  EXPECT_EQ(b->stats().total_received, 4u);
  b->settle_quota();  // what a's receives still hold is the segment's, not a's
  EXPECT_EQ(ctl.used(), 0u);
}

TEST(Segment, StateStopsParticipants) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 8, 256, ctl);
  ASSERT_TRUE(s.push("a", 1, {}, 0).ok());
  s.set_state(layout::kDeleted);
  EXPECT_EQ(s.push("b", 1, {}, 0).error(), Errc::removed);
  std::string out;
  EXPECT_EQ(s.pop(out, 0).error(), Errc::removed);
  EXPECT_EQ(Segment::attach(d.file("s")).error(), Errc::removed);
  s.set_state(layout::kRetired);  // replaced by a resize: look the mailbox up again
  EXPECT_EQ(s.push("b", 1, {}, 0).error(), Errc::stale);
  EXPECT_EQ(Segment::attach(d.file("s")).error(), Errc::stale);
  s.unlink_file();
  EXPECT_FALSE(ut::path_exists(d.file("s")));
}

TEST(Segment, AfterPushWakesASleeper) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 8, 256, ctl);
  std::atomic<bool> woke{false};
  const uint32_t seen = s.header()->pushed.load();
  s.header()->sleeping_receivers.fetch_add(1);
  std::thread t([&] {
    timespec ts{2, 0};
    futex_wait(&s.header()->pushed, seen, &ts);
    woke = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(s.push("x", 1, {}, 0).ok());
  auto t0 = ut::Clock::now();
  s.after_push(true);
  t.join();
  EXPECT_TRUE(woke);
  EXPECT_LT(ut::Clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ(s.header()->pushed.load(), seen + 1);
  // A daemon-side push never rings the doorbell; nor does anyone when the
  // daemon watches nothing.
  EXPECT_EQ(ctl.get()->doorbell.load(), 0u);
  s.after_push(false);
  EXPECT_EQ(ctl.get()->doorbell.load(), 0u);
  s.header()->daemon_watch.store(layout::kWatchReadable);
  s.after_pop(false);  // not watched for writability
  EXPECT_EQ(ctl.get()->doorbell.load(), 0u);
  s.after_push(false);
  EXPECT_EQ(ctl.get()->doorbell.load(), 1u);
  EXPECT_EQ(s.header()->kick.load(), 1u);
  s.header()->sleeping_receivers.fetch_sub(1);
}

}  // namespace
}  // namespace mbx

namespace mbx {
namespace {

// The split ring across threads, each with its own mapping as a separate
// process would have: 2 producers x 2 consumers, some through the zero-copy
// calls. Nothing lost, nothing duplicated, each producer's order kept. This
// is the test TSan runs over the lock-free hand-off between the halves.
TEST(SegmentThreads, TwoByTwoWithOwnMappingsNothingLostOrDuplicated) {
  TempDir d;
  SharedControl ctl;
  Segment owner = make_segment(d.file("s"), 16, 400, ctl);
  constexpr uint32_t kProducers = 2, kConsumers = 2, kPer = 4000;
  std::atomic<uint32_t> received{0};
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> got(kConsumers);
  auto mapped = [&] {
    auto s = Segment::attach(owner.path());
    EXPECT_TRUE(s.ok());
    s->set_control(ctl.get());
    return std::move(s).value();
  };
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kProducers; p++)
    threads.emplace_back([&, p] {
      Segment s = mapped();
      for (uint32_t i = 0; i < kPer;) {
        const std::string m = ut::make_msg(p, i);
        bool ok;
        if (i % 2) {
          auto r = s.reserve(m.size(), {}, 0);
          ok = r.ok();
          if (ok) {
            std::memcpy(*r, m.data(), m.size());
            s.commit_reserved();
          }
        } else {
          ok = s.push(m.data(), m.size(), {}, 0).ok();
        }
        if (ok) {
          s.after_push(true);
          i++;
        } else {
          std::this_thread::yield();
        }
      }
    });
  for (uint32_t c = 0; c < kConsumers; c++)
    threads.emplace_back([&, c] {
      Segment s = mapped();
      while (received.load() < kProducers * kPer) {
        std::string out;
        bool ok;
        if (c % 2) {
          auto v = s.view(0);
          ok = v.ok();
          if (ok) {
            out.assign(v->data, v->len);
            s.release_view();
          }
        } else {
          ok = s.pop(out, 0).ok();
        }
        if (!ok) {
          std::this_thread::yield();
          continue;
        }
        s.after_pop(true);
        received.fetch_add(1);
        auto id = ut::check_msg(out);
        ASSERT_TRUE(id.has_value()) << "damaged message";
        got[c].push_back(*id);
      }
    });
  for (auto& t : threads) t.join();
  std::set<std::pair<uint32_t, uint32_t>> all;
  for (const auto& g : got) {
    std::map<uint32_t, uint32_t> next;  // per producer, within one consumer: increasing
    for (auto [p, i] : g) {
      EXPECT_TRUE(next.count(p) == 0 || i >= next[p]) << "order";
      next[p] = i + 1;
      EXPECT_TRUE(all.insert({p, i}).second) << "duplicate " << p << ":" << i;
    }
  }
  EXPECT_EQ(all.size(), size_t{kProducers} * kPer);
  auto st = owner.stats();
  EXPECT_EQ(st.total_sent, st.total_received);
  EXPECT_EQ(st.count, 0u);
  owner.settle_quota();
  EXPECT_EQ(ctl.used(), 0u);
}

}  // namespace
}  // namespace mbx

namespace mbx {
namespace {

size_t resident_pages(const Segment& s) {
  const size_t pages = s.data_size() / 4096;
  std::vector<unsigned char> v(pages);
  char* area = reinterpret_cast<char*>(s.header()) + layout::kHeaderSize;
  if (::mincore(area, s.data_size(), v.data()) != 0) return SIZE_MAX;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

// Positions only grow, so a ring that keeps moving visits all of its area;
// the receivers give back what they have passed, a chunk at a time, so the
// memory a segment holds follows what is queued, not how much went through.
TEST(Segment, MemoryFollowsWhatIsQueuedNotTraffic) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 64, 64 * 1024, ctl);  // ~4 MiB of area
  ASSERT_GE(s.data_size(), 4u << 20);
  const std::string msg(1000, 'm');
  std::string out;
  for (uint64_t sent = 0; sent < 3 * s.data_size() / 1000; sent++) {  // three laps, one message queued at a time
    ASSERT_TRUE(s.push(msg.data(), msg.size(), {}, 0).ok());
    out.clear();
    ASSERT_TRUE(s.pop(out, 0).ok());
  }
  const size_t total = s.data_size() / 4096;
  EXPECT_LT(resident_pages(s), total / 4) << "of " << total << " pages";
  // And what is released comes back as zero pages that work as before.
  for (int i = 0; i < 50; i++) ASSERT_TRUE(s.push(msg.data(), msg.size(), {}, 0).ok());
  for (int i = 0; i < 50; i++) {
    out.clear();
    ASSERT_TRUE(s.pop(out, 0).ok());
    ASSERT_EQ(out, msg);
  }
}

}  // namespace
}  // namespace mbx

namespace mbx {
namespace {

// A ring that is usually drained starts again at offset 0 instead of walking
// its whole area: its working set stays small.
TEST(Segment, DrainedRingRestartsAtTheStart) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 64, 64 * 1024, ctl);
  const std::string msg(100, 'p');
  std::string out;
  for (int i = 0; i < 100000; i++) {
    ASSERT_TRUE(s.push(msg.data(), msg.size(), {}, 0).ok());
    out.clear();
    ASSERT_TRUE(s.pop(out, 0).ok());
    ASSERT_EQ(out, msg);
  }
  EXPECT_LT(s.header()->send.tail % s.data_size(), 64u * 1024 + layout::record_size(100));
  EXPECT_GT(s.header()->send.tail, s.data_size());  // it did go round
  EXPECT_LT(resident_pages(s), 64u);
  // Not while something is queued: order and contents survive the laps.
  int next_out = 0;
  for (int i = 0; i < 300000; i++) {
    const std::string m = std::to_string(i) + std::string(i % 700, 'x');
    ASSERT_TRUE(s.push(m.data(), m.size(), {}, 0).ok()) << i;
    if (i >= 40) {  // about 40 queued from here on
      out.clear();
      ASSERT_TRUE(s.pop(out, 0).ok());
      ASSERT_EQ(out, std::to_string(next_out) + std::string(next_out % 700, 'x'));
      next_out++;
    }
  }
}

// A sender that died between the restart's two commits left the tail at the
// next lap and the head before a marker: an empty ring, not a corrupt one.
TEST(Segment, RestartInterruptedBetweenItsCommitsIsAnEmptyRing) {
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 8, 100, ctl);
  std::string out;
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(s.push("abc", 3, {}, 0).ok());
    ASSERT_TRUE(s.pop(out, 0).ok());
  }
  layout::SegmentHeader* h = s.header();
  const uint64_t tail = h->send.tail, off = tail % s.data_size();
  ASSERT_EQ(h->recv.head, tail);
  reinterpret_cast<layout::RecordHeader*>(reinterpret_cast<char*>(h) + layout::kHeaderSize + off)->len =
      layout::kWrapMarker;
  h->send.tail = h->tail_pub = tail + (s.data_size() - off);
  EXPECT_EQ(s.pop(out, 0).error(), Errc::again);
  EXPECT_EQ(Segment::attach(s.path()).error(), Errc::ok);  // validation agrees
  ASSERT_TRUE(s.push("next", 4, {}, 0).ok());
  out.clear();
  auto p = s.pop(out, 0);
  ASSERT_TRUE(p.ok()) << to_errno(p.error()) << " head " << h->recv.head << " tail " << h->tail_pub << " D "
                      << s.data_size();
  EXPECT_EQ(out, "next");
  EXPECT_EQ(h->state.load(), layout::kLive);
}

}  // namespace
}  // namespace mbx

// SPDX-License-Identifier: MIT
// Mailbox core: parked calls (Waiters) and everything that finishes them:
// sends, receives, interrupts, timeouts, deletes, and the dying hook.
#include <gtest/gtest.h>

#include <set>

#include "test_util.h"

namespace mbx {
namespace {

using MailboxWait = ut::CoreTest;
using F = Framing;
using namespace std::chrono_literals;

std::optional<Outcome> rd(Mailbox& b, Handle& h, Waiter* w, size_t n = 65536) { return b.read(h, n, false, w); }
std::optional<Outcome> wr(Mailbox& b, Handle& h, const std::string& s, Waiter* w, bool nonblock = false) {
  return b.write(h, s.data(), s.size(), nonblock, Sender{77, 0, 0}, w);
}

TEST_F(MailboxWait, ParkedReaderGetsTheNextDatagram) {
  auto b = box(framed(F::datagram));
  auto& r = open(b, true, false);
  auto& w = open(b, false, true);
  ASSERT_FALSE(rd(*b, r, waiter(1, 501)).has_value());
  EXPECT_EQ(b->info().blocked_receivers, std::vector<pid_t>{501});
  EXPECT_FALSE(board_.wait(1, 50ms));  // really parked
  auto o = wr(*b, w, "hello", nullptr);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::ok);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.data, "hello");
  EXPECT_FALSE(e->from_interrupt);
  EXPECT_EQ(board_.count(1), 1);
  EXPECT_TRUE(b->info().blocked_receivers.empty());
  EXPECT_EQ(b->info().seg.count, 0u);
  b->interrupt(waiters_[0].get());  // finished already: nothing happens
  EXPECT_EQ(board_.count(1), 1);
}

TEST_F(MailboxWait, FileFramingParkedReaderThenEof) {
  auto b = box(framed(F::file));
  auto& r = open(b, true, false);
  ASSERT_FALSE(rd(*b, r, waiter(1)).has_value());
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "whole ", nullptr)->err, Errc::ok);
  ASSERT_EQ(wr(*b, w, "message", nullptr)->err, Errc::ok);
  EXPECT_FALSE(board_.wait(1, 20ms));  // not sent before close
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.data, "whole message");
  auto eof = rd(*b, r, waiter(2));
  ASSERT_TRUE(eof);  // completes at once
  EXPECT_EQ(eof->err, Errc::ok);
  EXPECT_EQ(eof->data, "");
  EXPECT_EQ(board_.count(2), 0);  // returned, not finished
}

TEST_F(MailboxWait, ReadersServedInArrivalOrder) {
  auto b = box(framed(F::datagram));
  std::vector<ut::TestWaiter*> ws;
  for (int i = 0; i < 5; i++) {
    auto& r = open(b, true, false);
    ws.push_back(waiter(i, 1000 + i));
    ASSERT_FALSE(rd(*b, r, ws.back()).has_value());
  }
  EXPECT_EQ(b->info().blocked_receivers, (std::vector<pid_t>{1000, 1001, 1002, 1003, 1004}));
  // A late reader does not overtake them.
  auto& late = open(b, true, false);
  EXPECT_EQ(b->read(late, 100, true, nullptr)->err, Errc::again);
  EXPECT_FALSE(b->read(late, 100, false, nullptr).has_value());
  auto& w = open(b, false, true);
  for (int i = 0; i < 5; i++) ASSERT_EQ(wr(*b, w, "m" + std::to_string(i), nullptr)->err, Errc::ok);
  for (int i = 0; i < 5; i++) {
    auto e = board_.wait(i);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->out.data, "m" + std::to_string(i));
  }
  EXPECT_EQ(board_.order(), (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST_F(MailboxWait, InterruptParkedReaderConsumesNothing) {
  auto b = box(framed(F::datagram));
  auto& r1 = open(b, true, false);
  auto* w1 = waiter(1, 601);
  ASSERT_FALSE(rd(*b, r1, w1).has_value());
  b->interrupt(w1);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::interrupted);
  EXPECT_TRUE(e->from_interrupt);
  EXPECT_TRUE(b->info().blocked_receivers.empty());
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "kept", nullptr)->err, Errc::ok);
  b->interrupt(w1);  // late second signal: ignored
  EXPECT_EQ(board_.count(1), 1);
  auto& r2 = open(b, true, false);
  EXPECT_EQ(b->read(r2, 100, true, nullptr)->data, "kept");
}

TEST_F(MailboxWait, InterruptBeforeParking) {
  auto b = box(framed(F::datagram));
  auto& r = open(b, true, false);
  auto* w1 = waiter(1);
  b->interrupt(w1);  // the signal arrives before the call parks
  EXPECT_EQ(board_.count(1), 0);
  auto o = rd(*b, r, w1);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::interrupted);
  EXPECT_TRUE(b->info().blocked_receivers.empty());
  // Even with a message ready, nothing is consumed.
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "stay", nullptr)->err, Errc::ok);
  auto* w2 = waiter(2);
  b->interrupt(w2);
  EXPECT_EQ(rd(*b, r, w2)->err, Errc::interrupted);
  auto* w3 = waiter(3);
  b->interrupt(w3);
  EXPECT_EQ(wr(*b, w, "nope", w3)->err, Errc::interrupted);
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "stay");
  EXPECT_EQ(board_.size(), 0u);
}

TEST_F(MailboxWait, TimeoutEndsParkedCalls) {
  auto b = box(framed(F::datagram, 1));
  ASSERT_EQ(b->set("timeout_ms", "100"), Errc::ok);
  auto& r = open(b, true, false);
  auto t0 = ut::Clock::now();
  ASSERT_FALSE(rd(*b, r, waiter(1)).has_value());
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::timed_out);
  EXPECT_FALSE(e->from_interrupt);
  EXPECT_GE(ut::Clock::now() - t0, 90ms);
  // A blocked send times out too, having delivered nothing.
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "fills", nullptr)->err, Errc::ok);
  ASSERT_FALSE(wr(*b, w, "blocked", waiter(2)).has_value());
  e = board_.wait(2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::timed_out);
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(b->info().seg.total_sent, 1u);
  // A call finished before its deadline is not finished again.
  auto& r2 = open(b, true, false);
  auto& r3 = open(b, true, false);
  EXPECT_EQ(b->read(r2, 100, true, nullptr)->data, "fills");
  ASSERT_FALSE(rd(*b, r3, waiter(3)).has_value());
  ASSERT_EQ(wr(*b, w, "quick", nullptr)->err, Errc::ok);
  ASSERT_TRUE(board_.wait(3));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(board_.count(3), 1);
  EXPECT_EQ(board_.wait(3)->out.data, "quick");
}

TEST_F(MailboxWait, RemoveFinishesEveryParkedCall) {
  auto empty = box(framed(F::datagram));
  auto full = box(framed(F::datagram, 1));
  auto rv = box(framed(F::datagram, 0));
  auto& r1 = open(empty, true, false);
  auto& r2 = open(empty, true, false);
  ASSERT_FALSE(rd(*empty, r1, waiter(1)).has_value());
  ASSERT_FALSE(rd(*empty, r2, waiter(2)).has_value());
  auto& fw = open(full, false, true);
  ASSERT_EQ(wr(*full, fw, "x", nullptr)->err, Errc::ok);
  ASSERT_FALSE(wr(*full, fw, "y", waiter(3)).has_value());
  auto& zw = open(rv, false, true);
  ASSERT_FALSE(wr(*rv, zw, "offer", waiter(4)).has_value());
  for (auto& b : {empty, full, rv}) b->remove();
  for (int t = 1; t <= 4; t++) {
    auto e = board_.wait(t);
    ASSERT_TRUE(e) << t;
    EXPECT_EQ(e->out.err, Errc::removed) << t;
    EXPECT_FALSE(e->from_interrupt);
  }
  EXPECT_EQ(mount_->quota_used(), 0u);
}

TEST_F(MailboxWait, FullMailboxSenderReleasedByRead) {
  auto b = box(framed(F::datagram, 1));
  auto& w = open(b, false, true);
  auto& r = open(b, true, false);
  ASSERT_EQ(wr(*b, w, "first", nullptr)->err, Errc::ok);
  ASSERT_FALSE(wr(*b, w, "second", nullptr).has_value());  // would block
  ASSERT_FALSE(wr(*b, w, "second", waiter(1, 700)).has_value());
  EXPECT_EQ(b->info().blocked_senders, std::vector<pid_t>{700});
  EXPECT_EQ(wr(*b, w, "third", nullptr, true)->err, Errc::again);
  EXPECT_FALSE(board_.wait(1, 30ms));
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "first");
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.written, 6u);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "second");
}

TEST_F(MailboxWait, FileFlushParksWhileFull) {
  auto b = box(framed(F::file, 1));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "one", nullptr)->err, Errc::ok);
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);
  ASSERT_EQ(wr(*b, w, "two", nullptr)->err, Errc::ok);
  EXPECT_FALSE(b->flush(w, Sender{}, nullptr).has_value());
  ASSERT_FALSE(b->flush(w, Sender{}, waiter(1)).has_value());
  auto& r = open(b, true, false);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "one");
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::ok);
  auto& r2 = open(b, true, false);
  EXPECT_EQ(b->read(r2, 100, true, nullptr)->data, "two");
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);  // nothing left to send
  EXPECT_EQ(b->info().seg.total_sent, 2u);
}

TEST_F(MailboxWait, LineWriteParksForTheLinesThatDidNotFit) {
  auto b = box(framed(F::line, 2));
  auto& w = open(b, false, true);
  ASSERT_FALSE(wr(*b, w, "a\nb\nc\n", waiter(1)).has_value());
  EXPECT_EQ(b->info().seg.count, 2u);
  auto& r = open(b, true, false);
  EXPECT_EQ(b->read(r, 2, true, nullptr)->data, "a\n");
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.written, 6u);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "b\n");  // one line per read
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "c\n");
  // Interrupted after some lines went: a short write of those lines.
  ASSERT_EQ(wr(*b, w, "1\n2\n", nullptr)->err, Errc::ok);
  auto* w2 = waiter(2);
  ASSERT_FALSE(wr(*b, w, "3\n4\n", w2).has_value());
  b->interrupt(w2);
  e = board_.wait(2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::interrupted);  // none of its lines went
  EXPECT_EQ(b->info().seg.count, 2u);
}

TEST_F(MailboxWait, RendezvousSendWaitsForAReceiver) {
  auto b = box(framed(F::datagram, 0));
  auto& w = open(b, false, true);
  auto& r = open(b, true, false);
  EXPECT_FALSE(wr(*b, w, "meet", nullptr).has_value());  // always waits
  EXPECT_EQ(b->info().seg.count, 0u);
  ASSERT_FALSE(wr(*b, w, "meet", waiter(1, 800)).has_value());
  EXPECT_EQ(b->info().blocked_senders, std::vector<pid_t>{800});
  EXPECT_FALSE(board_.wait(1, 30ms));  // on offer, not yet taken
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "meet");
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.written, 4u);
  EXPECT_EQ(b->info().seg.total_sent, 1u);
  // Non-blocking: fails while no receiver waits, succeeds when one does.
  EXPECT_EQ(wr(*b, w, "nb", nullptr, true)->err, Errc::again);
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(b->info().seg.total_sent, 1u);
  ASSERT_FALSE(b->read(r, 100, false, waiter(2)).has_value());
  auto o = wr(*b, w, "nb", nullptr, true);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::ok);
  EXPECT_EQ(board_.wait(2)->out.data, "nb");
}

// A non-blocking offer on a rendezvous mailbox, with a libmailbox receiver
// asleep on it, waits up to kRendezvousGrace for that receiver. It is offered
// once, by the pass that has a waiter, and is never both refused and taken.
TEST_F(MailboxWait, NonblockingRendezvousWaitsBrieflyForASleepingLibraryReceiver) {
  auto b = box(framed(F::datagram, 0));
  auto& w = open(b, false, true);
  auto lib = Segment::attach(b->info().locator.value());  // the library receiver's mapping
  ASSERT_TRUE(lib);
  auto& sleepers = lib->header()->sleeping_receivers;
  const uint32_t pushed0 = lib->header()->pushed.load();
  sleepers.store(1);
  // The first pass only asks for a waiter: nothing offered, nobody woken.
  EXPECT_FALSE(wr(*b, w, "g1", nullptr, true).has_value());
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(lib->header()->pushed.load(), pushed0);
  // The receiver is no longer asleep by the second pass: refused, and nothing stays on offer.
  sleepers.store(0);
  auto o = wr(*b, w, "g1", waiter(1), true);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::again);
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(b->info().seg.total_sent, 0u);
  // Asleep through both passes: on offer for the grace period. Taken within
  // it, the send succeeds; not taken, it is refused and withdrawn.
  sleepers.store(1);
  EXPECT_FALSE(wr(*b, w, "g2", nullptr, true).has_value());
  EXPECT_FALSE(wr(*b, w, "g2", waiter(2), true).has_value());
  std::string got;
  const bool taken = lib->pop(got, 0).ok();
  lib->header()->kick.store(1);  // as after_pop() does for a watching daemon
  b->service();
  auto e = board_.wait(2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, taken ? Errc::ok : Errc::again);
  if (taken) {
    EXPECT_EQ(got, "g2");
  }
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(b->info().seg.total_sent, taken ? 1u : 0u);
  // Nobody takes it: refused after the grace; those sleepers are not waited
  // for again (a receiver killed asleep never takes its count back) until
  // the count moves.
  sleepers.store(1);
  EXPECT_FALSE(wr(*b, w, "g3", nullptr, true).has_value());
  EXPECT_FALSE(wr(*b, w, "g3", waiter(3), true).has_value());
  auto e3 = board_.wait(3);
  ASSERT_TRUE(e3);
  EXPECT_EQ(e3->out.err, Errc::again);
  EXPECT_EQ(b->info().seg.count, 0u);
  auto o4 = wr(*b, w, "g4", nullptr, true);
  ASSERT_TRUE(o4);
  EXPECT_EQ(o4->err, Errc::again);  // at once
  sleepers.store(2);                // another receiver fell asleep
  EXPECT_FALSE(wr(*b, w, "g5", nullptr, true).has_value());
  sleepers.store(0);
}

TEST_F(MailboxWait, InterruptedRendezvousSendDeliversNothing) {
  auto b = box(framed(F::datagram, 0));
  auto& w = open(b, false, true);
  auto* sw = waiter(1);
  ASSERT_FALSE(wr(*b, w, "withdrawn", sw).has_value());
  b->interrupt(sw);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::interrupted);
  EXPECT_TRUE(e->from_interrupt);
  auto& r = open(b, true, false);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->err, Errc::again);
  ASSERT_FALSE(b->read(r, 100, false, waiter(2)).has_value());
  EXPECT_FALSE(board_.wait(2, 50ms));
  EXPECT_EQ(b->info().seg.total_sent, 0u);
  EXPECT_EQ(mount_->quota_used(), 0u);
  ASSERT_EQ(b->set("timeout_ms", "50"), Errc::ok);  // a timed-out offer is withdrawn too
  auto& r2 = open(b, true, false);
  auto o = wr(*b, w, "late", waiter(3));  // taken at once by the parked reader
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::ok);
  EXPECT_EQ(board_.wait(2)->out.data, "late");
  ASSERT_FALSE(wr(*b, w, "expires", waiter(4)).has_value());
  EXPECT_EQ(board_.wait(4)->out.err, Errc::timed_out);
  EXPECT_EQ(b->read(r2, 100, true, nullptr)->err, Errc::again);
}

TEST_F(MailboxWait, SetCapacityReleasesParkedSender) {
  auto b = box(framed(F::datagram, 1));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "queued", nullptr)->err, Errc::ok);
  ASSERT_FALSE(wr(*b, w, "parked", waiter(1)).has_value());
  ASSERT_EQ(b->set("capacity", "4"), Errc::ok);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::ok);
  auto& r = open(b, true, false);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "queued");
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "parked");
  // A rendezvous offer in flight blocks a resize.
  auto z = box(framed(F::datagram, 0));
  auto& zw = open(z, false, true);
  ASSERT_FALSE(wr(*z, zw, "offer", waiter(2)).has_value());
  EXPECT_EQ(z->set("capacity", "5"), Errc::busy);
  EXPECT_EQ(z->info().settings.capacity, 0u);
}

// The mount as a mailbox's host, except that thread 4242 is being killed.
class DyingHost final : public mbx::Host {
 public:
  explicit DyingHost(mbx::Mount& m) : m_(m) {}
  mbx::Timers& timers() override { return m_.timers(); }
  mbx::HeldQuota& held() override { return m_.held(); }
  bool dying(pid_t p) override { return p == 4242; }
  mbx::KernelCache* kernel() override { return nullptr; }

 private:
  mbx::Mount& m_;
};

TEST_F(MailboxWait, DyingReaderIsSkipped) {
  DyingHost host(*mount_);
  auto store = mount_->backend().create(999, framed(F::datagram));
  ASSERT_TRUE(store.ok());
  auto b = std::make_shared<mbx::Mailbox>(host, 999, framed(F::datagram), std::move(store.value()));
  struct Remove {  // before `host` goes
    std::shared_ptr<mbx::Mailbox> b;
    ~Remove() { b->remove(); }
  } remove{b};
  auto& r1 = open(b, true, false);
  auto& r2 = open(b, true, false);
  ASSERT_FALSE(rd(*b, r1, waiter(1, 4242)).has_value());
  ASSERT_FALSE(rd(*b, r2, waiter(2, 4343)).has_value());
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "for the living", nullptr)->err, Errc::ok);
  auto e1 = board_.wait(1);
  ASSERT_TRUE(e1);
  EXPECT_EQ(e1->out.err, Errc::interrupted);
  EXPECT_EQ(e1->out.data, "");
  auto e2 = board_.wait(2);
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->out.data, "for the living");
  EXPECT_EQ(b->info().seg.total_received, 1u);
}

TEST_F(MailboxWait, ThreadedSendersAndReceivers) {
  // Many parked readers in one thread, sends from several threads: every
  // message reaches exactly one reader.
  auto b = box(framed(F::datagram, 4));
  constexpr int kN = 200;
  for (int i = 0; i < kN; i++) {
    auto& r = open(b, true, false);
    ASSERT_FALSE(rd(*b, r, waiter(i)).has_value());
  }
  std::vector<mbx::Handle*> hs;
  for (int t = 0; t < 4; t++) hs.push_back(&open(b, false, true));
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      for (int i = t; i < kN; i += 4) {
        std::string m = std::to_string(i);
        auto o = b->write(*hs[t], m.data(), m.size(), true, Sender{}, nullptr);
        EXPECT_TRUE(o && o->err == Errc::ok);
      }
    });
  for (auto& t : ts) t.join();
  std::set<std::string> got;
  for (int i = 0; i < kN; i++) {
    auto e = board_.wait(i);
    ASSERT_TRUE(e) << i;
    got.insert(e->out.data);
  }
  EXPECT_EQ(got.size(), static_cast<size_t>(kN));
  EXPECT_EQ(board_.size(), static_cast<size_t>(kN));
}

}  // namespace
}  // namespace mbx

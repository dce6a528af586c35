// SPDX-License-Identifier: MIT
// Segment::after_push/after_pop: which wakes move the futex word. A sleeper
// is simulated by its shared words alone (count and word, as wait_change in
// client.cc writes them), so nothing here waits; a real sleeper's wake-up is
// covered by MailboxWait, DoorbellWake and the mount's Library suites.
#include <gtest/gtest.h>

#include "shm/segment.h"
#include "test_util.h"

namespace mbx {
namespace {

using ut::make_segment;
using ut::SharedControl;
using ut::TempDir;

// A segment of capacity 64 (`s`), in a directory of its own (`d`).
class SegmentWake : public ::testing::Test {
 protected:
  TempDir d;
  SharedControl ctl;
  Segment s = make_segment(d.file("s"), 64, 100, ctl);
};

// One receiver counted asleep and woken: until it has run, more messages
// move the word no more (each would be a FUTEX_WAKE system call).
TEST_F(SegmentWake, LoneSleeperAlreadyWokenIsNotWokenAgain) {
  auto* h = s.header();
  h->sleeping_receivers.fetch_add(1);
  h->pushed.fetch_add(1);  // the sleeper moves the word before it sleeps
  const uint32_t w0 = h->pushed.load();
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(s.push("m", 1, {}, 0).ok());
    s.after_push(false);
  }
  EXPECT_EQ(h->pushed.load(), w0 + 1);  // woken once
  // It went to sleep again (moving the word): the next message wakes it.
  h->pushed.fetch_add(1);
  ASSERT_TRUE(s.push("m", 1, {}, 0).ok());
  s.after_push(false);
  EXPECT_EQ(h->pushed.load(), w0 + 3);
}

// A sleeper that does not move the word (an older libmailbox) is woken again
// once it has run: it took a message, so head_pub moved.
TEST_F(SegmentWake, SleeperThatRanIsWokenAgainEvenWithoutMovingTheWord) {
  auto r = Segment::attach(d.file("s"));
  ASSERT_TRUE(r.ok());
  Segment& rx = *r;
  auto* h = s.header();
  h->sleeping_receivers.fetch_add(1);
  const uint32_t w0 = h->pushed.load();
  ASSERT_TRUE(s.push("a", 1, {}, 0).ok());
  s.after_push(false);
  EXPECT_EQ(h->pushed.load(), w0 + 1);
  std::string out;
  ASSERT_TRUE(rx.pop(out, 0).ok());  // it ran, and sleeps again on the same word
  ASSERT_TRUE(s.push("b", 1, {}, 0).ok());
  s.after_push(false);
  EXPECT_EQ(h->pushed.load(), w0 + 2);
}

// Two sleepers counted: one message, one wake, every message.
TEST_F(SegmentWake, SeveralSleepersAreWokenOnePerMessage) {
  auto* h = s.header();
  h->sleeping_receivers.fetch_add(2);
  const uint32_t w0 = h->pushed.load();
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(s.push("m", 1, {}, 0).ok());
    s.after_push(false);
  }
  EXPECT_EQ(h->pushed.load(), w0 + 3);
}

// The same for senders waiting for room, and rendezvous senders (waiting for
// their receipt) are all woken by every receive.
TEST_F(SegmentWake, SendersLikewiseAndRendezvousSendersAlways) {
  for (int i = 0; i < 4; i++) ASSERT_TRUE(s.push("m", 1, {}, 0).ok());
  auto* h = s.header();
  h->sleeping_senders.fetch_add(1);
  h->popped.fetch_add(1);
  const uint32_t w0 = h->popped.load();
  std::string out;
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(s.pop(out, 0).ok());
    s.after_pop(false);
  }
  EXPECT_EQ(h->popped.load(), w0 + 1);

  Segment z = make_segment(d.file("z"), 0, 100, ctl);
  auto* hz = z.header();
  hz->sleeping_senders.fetch_add(1);
  const uint32_t z0 = hz->popped.load();
  for (int i = 0; i < 2; i++) {
    ASSERT_TRUE(z.push("m", 1, {}, 0).ok());
    ASSERT_TRUE(z.pop(out, 0).ok());
    z.after_pop(false);
  }
  EXPECT_EQ(hz->popped.load(), z0 + 2);
}

}  // namespace
}  // namespace mbx

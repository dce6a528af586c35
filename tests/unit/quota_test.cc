// HeldQuota: what the daemon holds for writers is charged to the mount's
// quota (and given back), and each user is bounded by user_max_bytes.
#include "core/quota.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace {

using mbx::Errc;
using mbx::HeldQuota;
using ut::SharedControl;

TEST(HeldQuota, HeldBytesAreChargedToTheMountsQuota) {
  SharedControl ctl(1000);
  HeldQuota q(ctl.get(), 0);
  EXPECT_EQ(q.hold(1, 600), Errc::ok);
  EXPECT_EQ(ctl.used(), 600u);
  EXPECT_EQ(ctl.get()->daemon_held.load(), 600u);
  EXPECT_EQ(q.hold(2, 401), Errc::no_space);  // past quota_max: nothing charged
  EXPECT_EQ(ctl.used(), 600u);
  EXPECT_EQ(q.hold(2, 400), Errc::ok);
  q.unhold(1, 600);
  q.unhold(2, 400);
  EXPECT_EQ(ctl.used(), 0u);
  EXPECT_EQ(ctl.get()->daemon_held.load(), 0u);
  EXPECT_EQ(q.held(), 0u);
}

TEST(HeldQuota, LentForAPushAndTakenBackIfItFails) {
  SharedControl ctl(1000);
  HeldQuota q(ctl.get(), 0);
  ASSERT_EQ(q.hold(1, 700), Errc::ok);
  q.lend(700);  // the push charges its record itself
  EXPECT_EQ(ctl.used(), 0u);
  q.take_back(700);  // it failed: held again, even past the quota
  EXPECT_EQ(ctl.used(), 700u);
  q.lend(700);
  q.forget(1, 700);  // it succeeded: the user holds nothing any more
  EXPECT_EQ(q.held(), 0u);
  EXPECT_EQ(q.user_total(1), 0u);
}

TEST(HeldQuota, EachUserIsBoundedByUserMax) {
  SharedControl ctl(1 << 20);
  HeldQuota q(ctl.get(), 100);
  EXPECT_EQ(q.hold(1, 60), Errc::ok);
  EXPECT_EQ(q.hold(1, 41), Errc::quota);
  EXPECT_EQ(q.hold(2, 100), Errc::ok);  // another user has its own bound
  EXPECT_EQ(q.admit(1, 40), Errc::ok);
  q.dequeued(1, 0);
  EXPECT_EQ(q.user_total(1), 60u);
  q.unhold(1, 60);
  EXPECT_EQ(q.hold(1, 100), Errc::ok);
  EXPECT_EQ(ctl.used(), 200u);
}

}  // namespace

// SPDX-License-Identifier: MIT
// A mailbox's attributes in the kernel's cache: stat() says when they may be
// cached, and every change made after such an answer drops them once,
// before the changing call returns; a store others may change is never cached.
#include <gtest/gtest.h>

#include <vector>

#include "test_util.h"

namespace mbx {
namespace {

// Records what the mailboxes ask of the kernel.
class RecordingKernel final : public KernelCache {
 public:
  void raise_size(uint64_t, uint64_t) override {}
  void invalidate_attrs(uint64_t ino) override { dropped.push_back(ino); }
  std::vector<uint64_t> dropped;
};

class AttrCache : public ut::CoreTest {
 protected:
  void SetUp() override {
    ut::CoreTest::SetUp();
    mount_->set_kernel(&kernel_);
  }
  // What was dropped since the last call.
  std::vector<uint64_t> dropped() { return std::exchange(kernel_.dropped, {}); }
  RecordingKernel kernel_;
};

TEST_F(AttrCache, EachChangeAfterACacheableStatDropsTheAttributesOnce) {
  auto b = box(framed(Framing::datagram));
  const std::vector<uint64_t> once{b->id()};
  send(b, "abc");
  EXPECT_EQ(dropped(), std::vector<uint64_t>{});  // nobody looked: nothing cached to drop
  StatInfo st = b->stat();
  EXPECT_TRUE(st.cacheable);
  EXPECT_EQ(st.reported_size, 3u);
  b->stat();
  EXPECT_EQ(dropped(), std::vector<uint64_t>{});  // looks change nothing
  send(b, "de");
  EXPECT_EQ(dropped(), once);
  send(b, "f");
  EXPECT_EQ(dropped(), std::vector<uint64_t>{});  // dropped already, not looked at since
  EXPECT_EQ(b->stat().reported_size, 6u);
  ASSERT_TRUE(recv(b).has_value());
  EXPECT_EQ(dropped(), once);
  b->stat();
  auto& h = open(b, true, false, true);
  for (int i = 0; i < 2; i++) ASSERT_EQ(b->read(h, 100, true, nullptr)->err, Errc::ok);
  EXPECT_EQ(dropped(), once);
  b->stat();
  EXPECT_EQ(b->read(h, 100, true, nullptr)->err, Errc::again);  // empty: nothing changed
  EXPECT_EQ(dropped(), std::vector<uint64_t>{});
  // A setting may change st_size (a full datagram mailbox reports more).
  EXPECT_EQ(b->set("framing", "line"), Errc::ok);
  EXPECT_EQ(dropped(), once);
}

TEST_F(AttrCache, AnExposedStoreIsNeverCachedAgain) {
  auto b = box();
  EXPECT_TRUE(b->attrs_cacheable());
  ASSERT_TRUE(b->stat().cacheable);
  b->expose();  // a library asked where the segment is
  EXPECT_EQ(dropped(), std::vector<uint64_t>{b->id()});
  EXPECT_FALSE(b->attrs_cacheable());
  EXPECT_FALSE(b->stat().cacheable);
  send(b, "abc");
  ASSERT_TRUE(recv(b).has_value());
  EXPECT_EQ(dropped(), std::vector<uint64_t>{});  // nothing cached, nothing to drop
  auto c = box();
  c->expose();  // never looked at: nothing to drop
  EXPECT_EQ(dropped(), std::vector<uint64_t>{});
}

}  // namespace
}  // namespace mbx

// Line framing's read path: one line per read, so an early-stopping reader
// loses nothing; line_batch keeps the old many-lines read as an opt-in.
#include <gtest/gtest.h>

#include "core/settings.h"
#include "test_util.h"

namespace mbx {
namespace {

using LineRead = ut::CoreTest;

std::optional<Outcome> rd(Mailbox& b, Handle& h, size_t n = 65536) { return b.read(h, n, true, nullptr); }
std::optional<Outcome> wr(Mailbox& b, Handle& h, const std::string& s) {
  return b.write(h, s.data(), s.size(), true, Sender{1, 2, 3}, nullptr);
}

TEST_F(LineRead, OneLinePerReadWhateverTheBuffer) {
  auto b = box(framed(Framing::line));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "one\ntwo\nthree\n")->written, 14u);
  auto& r = open(b, true, false);
  EXPECT_EQ(rd(*b, r)->data, "one\n");
  EXPECT_EQ(b->info().seg.count, 2u);
  EXPECT_EQ(rd(*b, r, 2)->data, "tw");  // a short buffer: the rest stays with this open file
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(rd(*b, r)->data, "o\n");  // only the rest, not the next line
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(rd(*b, r)->data, "three\n");
  EXPECT_EQ(rd(*b, r)->err, Errc::again);
}

TEST_F(LineRead, AParkedReaderIsHandedOneLine) {
  auto b = box(framed(Framing::line));
  auto& r = open(b, true, false);
  EXPECT_FALSE(b->read(r, 65536, false, waiter(1)).has_value());  // parks
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "x\ny\nz\n")->written, 6u);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.data, "x\n");
  EXPECT_EQ(b->info().seg.count, 2u);
}

TEST_F(LineRead, LineBatchReturnsTheLinesThatFit) {
  auto b = box(framed(Framing::line_batch));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "one\ntwo\nthree\n")->written, 14u);
  auto& r = open(b, true, false);
  EXPECT_EQ(rd(*b, r, 9)->data, "one\ntwo\n");
  EXPECT_EQ(rd(*b, r)->data, "three\n");
}

TEST(LineSettings, LineBatchIsAFramingOfItsOwn) {
  EXPECT_EQ(*parse_framing("line_batch"), Framing::line_batch);
  EXPECT_STREQ(framing_name(Framing::line_batch), "line_batch");
  Settings s;
  EXPECT_EQ(apply_setting(s, "framing", "line_batch"), Errc::ok);
  EXPECT_EQ(s.framing, Framing::line_batch);
  EXPECT_EQ(parse_framing("lines").error(), Errc::invalid);
}

}  // namespace
}  // namespace mbx

// SPDX-License-Identifier: MIT
// Settings: the text forms shared by -o options and user.mailbox.* xattrs.
#include "core/settings.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace mbx {
namespace {

TEST(ParseCapacity, AcceptsNumbersAndUnbounded) {
  EXPECT_EQ(*parse_capacity("0"), 0u);
  EXPECT_EQ(*parse_capacity("64"), 64u);
  EXPECT_EQ(*parse_capacity("unbounded"), layout::kUnbounded);
  EXPECT_EQ(*parse_capacity("7\n"), 7u);  // setfattr/echo leave a newline
  EXPECT_EQ(*parse_capacity(" 7 "), 7u);
  EXPECT_EQ(*parse_capacity(std::string_view("9\0", 2)), 9u);
  EXPECT_EQ(*parse_capacity("18446744073709551614"), UINT64_MAX - 1);
}

TEST(ParseCapacity, RejectsGarbage) {
  for (const char* s : {"", " ", "-1", "+1", "abc", "12abc", "1.5", "0x10", "Unbounded", "unbounded2",
                        "18446744073709551615" /* == kUnbounded: spell it "unbounded" */,
                        "18446744073709551616" /* overflow */, "1e3", "--1"})
    EXPECT_EQ(parse_capacity(s).error(), Errc::invalid) << '"' << s << '"';
}

TEST(ParseSize, Suffixes) {
  EXPECT_EQ(*parse_size("0"), 0u);
  EXPECT_EQ(*parse_size("123"), 123u);
  EXPECT_EQ(*parse_size("4K"), 4096u);
  EXPECT_EQ(*parse_size("4k"), 4096u);
  EXPECT_EQ(*parse_size("3M"), 3u << 20);
  EXPECT_EQ(*parse_size("3m"), 3u << 20);
  EXPECT_EQ(*parse_size("2G"), 2ull << 30);
  EXPECT_EQ(*parse_size("2g"), 2ull << 30);
  EXPECT_EQ(*parse_size("1K\n"), 1024u);
  EXPECT_EQ(*parse_size("17179869183G"), 17179869183ull << 30);  // the largest that fits
}

TEST(ParseSize, RejectsGarbage) {
  for (const char* s : {"", "K", "M", "-1K", "1T", "1KB", "1.5M", "K1", "abc", "17179869184G" /* 2^64: overflow */,
                        "18014398509481984K"})
    EXPECT_EQ(parse_size(s).error(), Errc::invalid) << '"' << s << '"';
}

TEST(ParseFraming, Names) {
  EXPECT_EQ(*parse_framing("file"), Framing::file);
  EXPECT_EQ(*parse_framing("datagram"), Framing::datagram);
  EXPECT_EQ(*parse_framing("line\n"), Framing::line);
  for (const char* s : {"", "File", "lines", "stream", "dgram", "file line"})
    EXPECT_EQ(parse_framing(s).error(), Errc::invalid) << s;
  for (Framing f : {Framing::file, Framing::datagram, Framing::line}) EXPECT_EQ(*parse_framing(framing_name(f)), f);
}

TEST(FormatCapacity, RoundTrips) {
  EXPECT_EQ(format_capacity(layout::kUnbounded), "unbounded");
  EXPECT_EQ(format_capacity(0), "0");
  EXPECT_EQ(format_capacity(64), "64");
  for (uint64_t c : {uint64_t{0}, uint64_t{5}, layout::kUnbounded}) EXPECT_EQ(*parse_capacity(format_capacity(c)), c);
}

bool same(const Settings& a, const Settings& b) {
  return a.capacity == b.capacity && a.max_message == b.max_message && a.framing == b.framing &&
         a.timeout_ms == b.timeout_ms;
}

TEST(ApplySetting, ChangesOneField) {
  Settings s;
  EXPECT_EQ(apply_setting(s, "capacity", "unbounded"), Errc::ok);
  EXPECT_EQ(s.capacity, layout::kUnbounded);
  EXPECT_EQ(apply_setting(s, "capacity", "0"), Errc::ok);
  EXPECT_EQ(s.capacity, 0u);
  EXPECT_EQ(apply_setting(s, "max_message", "64K"), Errc::ok);
  EXPECT_EQ(s.max_message, 65536u);
  EXPECT_EQ(apply_setting(s, "framing", "line"), Errc::ok);
  EXPECT_EQ(s.framing, Framing::line);
  EXPECT_EQ(apply_setting(s, "timeout_ms", "250"), Errc::ok);
  EXPECT_EQ(s.timeout_ms, 250u);
  Settings d;
  EXPECT_EQ(s.capacity, 0u);
  EXPECT_NE(s.max_message, d.max_message);
}

TEST(ApplySetting, UnchangedOnError) {
  Settings s;
  s.capacity = 5;
  s.max_message = 1000;
  s.framing = Framing::datagram;
  s.timeout_ms = 42;
  const Settings before = s;
  struct Case {
    const char *name, *value;
    Errc err;
  } cases[] = {
      {"capacity", "-1", Errc::invalid},
      {"capacity", "lots", Errc::invalid},
      {"capacity", "", Errc::invalid},
      {"max_message", "0", Errc::invalid},
      {"max_message", "256M1", Errc::invalid},
      {"max_message", "257M", Errc::invalid},
      {"max_message", "1T", Errc::invalid},
      {"max_message", "x", Errc::invalid},
      {"framing", "stream", Errc::invalid},
      {"framing", "", Errc::invalid},
      {"timeout_ms", "-5", Errc::invalid},
      {"timeout_ms", "1s", Errc::invalid},
      {"timeout_ms", "31536000001", Errc::invalid},
      {"colour", "red", Errc::not_found},
      {"", "1", Errc::not_found},
      {"Capacity", "1", Errc::not_found},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(apply_setting(s, c.name, c.value), c.err) << c.name << "=" << c.value;
    EXPECT_TRUE(same(s, before)) << c.name << "=" << c.value;
  }
}

TEST(ApplySetting, Bounds) {
  Settings s;
  EXPECT_EQ(apply_setting(s, "max_message", "1"), Errc::ok);
  EXPECT_EQ(apply_setting(s, "max_message", "256M"), Errc::ok);
  EXPECT_EQ(s.max_message, kMaxMessageLimit);
  EXPECT_EQ(apply_setting(s, "max_message", std::to_string(kMaxMessageLimit + 1)), Errc::invalid);
  EXPECT_EQ(s.max_message, kMaxMessageLimit);
  // timeout_ms: 0 (forever) up to one year.
  EXPECT_EQ(apply_setting(s, "timeout_ms", "0"), Errc::ok);
  EXPECT_EQ(s.timeout_ms, 0u);
  EXPECT_EQ(apply_setting(s, "timeout_ms", "31536000000"), Errc::ok);
  EXPECT_EQ(s.timeout_ms, 31536000000u);
  EXPECT_EQ(apply_setting(s, "timeout_ms", "31536000001"), Errc::invalid);
  EXPECT_EQ(s.timeout_ms, 31536000000u);
  EXPECT_EQ(apply_setting(s, "timeout_ms", "18446744073709551616"), Errc::invalid);
}

TEST(ParseU64, Strict) {
  EXPECT_EQ(*parse_u64("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(parse_u64("18446744073709551616").error(), Errc::invalid);
  EXPECT_EQ(parse_u64("1 2").error(), Errc::invalid);
  EXPECT_EQ(parse_u64("\t1").error(), Errc::invalid);
}

}  // namespace
}  // namespace mbx

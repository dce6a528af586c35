// SPDX-License-Identifier: MIT
// The namespace records a restarted daemon reads back (lib/persist.h): what is
// saved loads back whole; anything damaged is reported, never half-trusted.
#include "core/persist.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "test_util.h"

namespace mbx {
namespace {

TEST(Persist, SavedRecordsLoadBack) {
  ut::TempDir d;
  NodeMeta box;
  box.ino = 7;
  box.parent = 3;
  box.mode = S_IFREG | 0640;
  box.uid = 1000;
  box.gid = 100;
  box.settings.capacity = layout::kUnbounded;
  box.settings.max_message = 4096;
  box.settings.framing = Framing::line;
  box.settings.timeout_ms = 250;
  box.name = "jobs = high ü";
  NodeMeta dir;
  dir.ino = 3;
  dir.parent = 1;
  dir.mode = S_IFDIR | 0755;
  dir.name = "d";
  ASSERT_EQ(save_meta(d.path(), box), Errc::ok);
  ASSERT_EQ(save_meta(d.path(), dir), Errc::ok);
  box.name = "renamed";
  ASSERT_EQ(save_meta(d.path(), box), Errc::ok);  // replaces the record
  std::vector<std::string> bad;
  auto all = load_meta(d.path(), &bad);
  EXPECT_TRUE(bad.empty());
  ASSERT_EQ(all.size(), 2u);
  const NodeMeta& b = all[0].ino == 7 ? all[0] : all[1];
  EXPECT_EQ(b.parent, 3u);
  EXPECT_EQ(b.mode, S_IFREG | 0640);
  EXPECT_EQ(b.uid, 1000u);
  EXPECT_EQ(b.gid, 100u);
  EXPECT_EQ(b.settings.capacity, layout::kUnbounded);
  EXPECT_EQ(b.settings.max_message, 4096u);
  EXPECT_EQ(b.settings.framing, Framing::line);
  EXPECT_EQ(b.settings.timeout_ms, 250u);
  EXPECT_EQ(b.name, "renamed");
  remove_meta(d.path(), 7);
  EXPECT_EQ(load_meta(d.path(), nullptr).size(), 1u);
}

TEST(Persist, DamagedRecordsAreReported) {
  ut::TempDir d;
  const char* cases[] = {
      "",                                             // empty
      "ino=9\nparent=1\nmode=33188\nuid=0\ngid=0\n",  // fields missing
      "ino=9\nparent=1\nmode=4096\nuid=0\ngid=0\ncapacity=1\nmax_message=1\nframing=file\ntimeout_ms=0\nname=x\n",  // a FIFO
      "ino=9\nparent=1\nmode=33188\nuid=0\ngid=0\ncapacity=1\nmax_message=1\nframing=smoke\ntimeout_ms=0\nname=x\n",
      "ino=8\nparent=1\nmode=33188\nuid=0\ngid=0\ncapacity=1\nmax_message=1\nframing=file\ntimeout_ms=0\nname=x\n",  // ino != file name
      "ino=9\nparent=1\nmode=33188\nuid=0\ngid=0\ncapacity=1\nmax_message=1\nframing=file\ntimeout_ms=0\nname=x",  // cut
                                                                                                                   // short
  };
  for (const char* c : cases) {
    std::ofstream(d.file("n9")) << c;
    std::vector<std::string> bad;
    EXPECT_TRUE(load_meta(d.path(), &bad).empty()) << c;
    EXPECT_EQ(bad, std::vector<std::string>{"n9"}) << c;
  }
  std::ofstream(d.file("n9.tmp")) << "half-written";  // an interrupted save is not a record
  std::ofstream(d.file("m9.0")) << "a segment";
  std::remove(d.file("n9").c_str());
  std::vector<std::string> bad;
  EXPECT_TRUE(load_meta(d.path(), &bad).empty());
  EXPECT_TRUE(bad.empty());
}

}  // namespace
}  // namespace mbx

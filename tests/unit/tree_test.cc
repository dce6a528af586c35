// SPDX-License-Identifier: MIT
// Tree: names, directories, mailbox files and the user.mailbox.* attributes.
#include "core/tree.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include "test_util.h"

namespace mbx {
namespace {

constexpr uid_t kOwner = 1000;
const Sender kAlice{100, kOwner, kOwner};
const Sender kBob{200, 2000, 2000};
const Sender kRoot{300, 0, 0};

std::string hex(std::string_view s) {
  std::string out;
  char buf[4];
  for (unsigned char c : s) {
    std::snprintf(buf, sizeof buf, "%02x ", c);
    out += buf;
  }
  return out;
}

TEST(CheckName, Lengths) {
  EXPECT_EQ(check_name(std::string(255, 'a')), Errc::ok);
  EXPECT_EQ(check_name(std::string(256, 'a')), Errc::name_too_long);
  EXPECT_EQ(check_name(std::string(4096, 'a')), Errc::name_too_long);
  std::string e;  // 127 two-byte characters and one byte: 255 bytes
  for (int i = 0; i < 127; i++) e += "\xc3\xa9";
  EXPECT_EQ(check_name(e + "a"), Errc::ok);
  EXPECT_EQ(check_name(e + "\xc3\xa9"), Errc::name_too_long);  // 256 bytes, 128 characters
}

TEST(CheckName, Rejects) {
  for (std::string_view n :
       {std::string_view(""), std::string_view("."), std::string_view(".."), std::string_view("a/b"),
        std::string_view("a\nb"), std::string_view("\t"), std::string_view("x\x1f"), std::string_view("del\x7f"),
        std::string_view("nul\0x", 5), std::string_view("\xff"), std::string_view("\xc3"), std::string_view("ab\xc3("),
        std::string_view("\xe2\x82"), std::string_view("\x80start")})
    EXPECT_EQ(check_name(n), Errc::invalid) << hex(n);
  for (const char* n :
       {"box", ".hidden", "...", "a b", "jobs-high_1", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x93\xac", "-"})
    EXPECT_EQ(check_name(n), Errc::ok) << n;
}

TEST(CheckName, RejectsMalformedUtf8) {
  // None of these is valid UTF-8 (RFC 3629).
  for (const char* n : {"\xc0\xaf" /* overlong '/' */, "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80" /* U+D800 */,
                        "\xf4\x90\x80\x80" /* U+110000 */, "\xf5\x80\x80\x80", "\xf7\xbf\xbf\xbf"})
    EXPECT_EQ(check_name(n), Errc::invalid) << hex(n);
}

class TreeTest : public ut::CoreTest {
 protected:
  void SetUp() override {
    ut::CoreTest::SetUp();
    tree_ = std::make_unique<Tree>(*mount_, 0755, kOwner, kOwner);
  }
  void TearDown() override {
    tree_.reset();  // deletes every mailbox
    ut::CoreTest::TearDown();
  }
  uint64_t mk(uint64_t parent, const char* name) {
    auto st = tree_->mkdir(parent, name, 0755, kAlice);
    EXPECT_TRUE(st.ok()) << name;
    return st.ok() ? st->st_ino : 0;
  }
  uint64_t touch(uint64_t parent, const char* name) {
    auto st = tree_->create(parent, name, 0644, kAlice);
    EXPECT_TRUE(st.ok()) << name;
    return st.ok() ? st->st_ino : 0;
  }
  nlink_t nlink(uint64_t ino) { return tree_->getattr(ino)->st_nlink; }
  std::vector<std::string> names(uint64_t dir) {
    std::vector<std::string> v;
    auto l = tree_->list(dir);
    if (l) {
      for (auto& e : *l) v.push_back(e.name);
    }
    return v;
  }
  // Files in the state directory other than "control" and "lock".
  int segments() {
    int n = 0;
    DIR* d = ::opendir(dir_.c_str());
    while (dirent* e = d ? ::readdir(d) : nullptr) n += e->d_name[0] == 'm';
    if (d) ::closedir(d);
    return n;
  }
  std::unique_ptr<Tree> tree_;
};

TEST_F(TreeTest, CreateLookupUnlink) {
  auto st = tree_->create(kRootIno, "box", 0640, kAlice);
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(S_ISREG(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0640u);
  EXPECT_EQ(st->st_uid, kOwner);
  EXPECT_EQ(st->st_nlink, 1u);
  EXPECT_EQ(st->st_size, 0);
  EXPECT_EQ(segments(), 1);
  EXPECT_EQ(tree_->create(kRootIno, "box", 0644, kAlice).error(), Errc::exists);
  EXPECT_EQ(tree_->mkdir(kRootIno, "box", 0755, kAlice).error(), Errc::exists);
  auto l = tree_->lookup(kRootIno, "box");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->st_ino, st->st_ino);
  EXPECT_EQ(tree_->lookup(kRootIno, "nope").error(), Errc::not_found);
  EXPECT_EQ(tree_->lookup(kRootIno, std::string(256, 'n')).error(), Errc::name_too_long);
  EXPECT_EQ(tree_->lookup(st->st_ino, "x").error(), Errc::not_dir);
  EXPECT_EQ(tree_->lookup(999999, "x").error(), Errc::not_found);
  EXPECT_EQ(names(kRootIno), (std::vector<std::string>{".", "..", "box"}));
  // A message shows in st_size; unlink frees the segment at once.
  auto box = tree_->mailbox(st->st_ino);
  ASSERT_TRUE(box);
  auto& h = open(box, false, true);
  ASSERT_EQ(box->write(h, "12345", 5, true, Sender{}, nullptr)->err, Errc::ok);
  ASSERT_EQ(box->flush(h, Sender{}, nullptr)->err, Errc::ok);
  EXPECT_EQ(tree_->getattr(st->st_ino)->st_size, 5);
  EXPECT_EQ(tree_->unlink(kRootIno, "box"), Errc::ok);
  EXPECT_EQ(segments(), 0);
  EXPECT_EQ(mount_->quota_used(), 0u);
  EXPECT_EQ(tree_->unlink(kRootIno, "box"), Errc::not_found);
  EXPECT_EQ(tree_->lookup(kRootIno, "box").error(), Errc::not_found);
  // Still referenced by the kernel (create + lookup): stat works, nlink 0.
  EXPECT_EQ(nlink(st->st_ino), 0u);
  tree_->forget(st->st_ino, 2);
  EXPECT_EQ(tree_->getattr(st->st_ino).error(), Errc::not_found);
}

TEST_F(TreeTest, BadNamesCreateNothing) {
  const uint64_t f = touch(kRootIno, "file");
  for (std::string n : {std::string(256, 'x'), std::string("a\x01"), std::string("\xff"), std::string("..")}) {
    Errc want = n.size() > 255 ? Errc::name_too_long : Errc::invalid;
    EXPECT_EQ(tree_->create(kRootIno, n, 0644, kAlice).error(), want);
    EXPECT_EQ(tree_->mkdir(kRootIno, n, 0755, kAlice).error(), want);
  }
  EXPECT_EQ(tree_->create(f, "in-a-file", 0644, kAlice).error(), Errc::not_dir);
  EXPECT_EQ(tree_->mkdir(f, "in-a-file", 0755, kAlice).error(), Errc::not_dir);
  EXPECT_EQ(tree_->create(424242, "orphan", 0644, kAlice).error(), Errc::not_found);
  EXPECT_EQ(names(kRootIno), (std::vector<std::string>{".", "..", "file"}));
  EXPECT_EQ(segments(), 1);  // no segment left by a failed create
  EXPECT_EQ(touch(kRootIno, "next") > f, true);
  EXPECT_EQ(segments(), 2);
}

TEST_F(TreeTest, DirectoriesAndNlink) {
  EXPECT_EQ(nlink(kRootIno), 2u);
  const uint64_t jobs = mk(kRootIno, "jobs");
  EXPECT_EQ(nlink(kRootIno), 3u);
  EXPECT_EQ(nlink(jobs), 2u);
  const uint64_t high = mk(jobs, "high");
  mk(jobs, "low");
  EXPECT_EQ(nlink(jobs), 4u);
  touch(high, "box");
  EXPECT_EQ(nlink(jobs), 4u);  // files do not count
  EXPECT_EQ(nlink(high), 2u);
  EXPECT_EQ(tree_->rmdir(jobs, "high"), Errc::not_empty);
  EXPECT_EQ(tree_->rmdir(high, "box"), Errc::not_dir);
  EXPECT_EQ(tree_->unlink(jobs, "high"), Errc::is_dir);
  EXPECT_EQ(tree_->rmdir(jobs, "none"), Errc::not_found);
  EXPECT_EQ(tree_->list(tree_->lookup(high, "box")->st_ino).error(), Errc::not_dir);
  EXPECT_EQ(tree_->unlink(high, "box"), Errc::ok);
  EXPECT_EQ(tree_->rmdir(jobs, "high"), Errc::ok);
  EXPECT_EQ(nlink(jobs), 3u);
  EXPECT_EQ(names(jobs), (std::vector<std::string>{".", "..", "low"}));
  // A removed directory takes no new entries.
  EXPECT_EQ(tree_->mkdir(high, "x", 0755, kAlice).error(), Errc::not_found);
  EXPECT_EQ(tree_->create(high, "x", 0644, kAlice).error(), Errc::not_found);
  EXPECT_EQ(segments(), 0);
}

TEST_F(TreeTest, RenameErrors) {
  const uint64_t a = mk(kRootIno, "a");
  const uint64_t b = mk(kRootIno, "b");
  const uint64_t sub = mk(a, "sub");
  touch(kRootIno, "f");
  touch(kRootIno, "g");
  touch(b, "inside");
  EXPECT_EQ(tree_->rename(kRootIno, "f", kRootIno, "a", false), Errc::is_dir);
  EXPECT_EQ(tree_->rename(kRootIno, "a", kRootIno, "f", false), Errc::not_dir);
  EXPECT_EQ(tree_->rename(kRootIno, "a", kRootIno, "b", false), Errc::not_empty);
  EXPECT_EQ(tree_->rename(kRootIno, "f", kRootIno, "g", true), Errc::exists);
  EXPECT_EQ(tree_->rename(kRootIno, "a", sub, "loop", false), Errc::invalid);
  EXPECT_EQ(tree_->rename(kRootIno, "a", a, "self", false), Errc::invalid);
  EXPECT_EQ(tree_->rename(kRootIno, "none", kRootIno, "x", false), Errc::not_found);
  EXPECT_EQ(tree_->rename(kRootIno, "f", 777777, "x", false), Errc::not_found);
  EXPECT_EQ(tree_->rename(kRootIno, "f", tree_->lookup(kRootIno, "g")->st_ino, "x", false), Errc::not_dir);
  EXPECT_EQ(tree_->rename(kRootIno, "f", kRootIno, "bad\n", false), Errc::invalid);
  EXPECT_EQ(tree_->rename(kRootIno, "f", kRootIno, std::string(256, 'r'), false), Errc::name_too_long);
  EXPECT_EQ(tree_->rename(kRootIno, "f", kRootIno, "f", false), Errc::ok);
  EXPECT_EQ(names(kRootIno), (std::vector<std::string>{".", "..", "a", "b", "f", "g"}));
  EXPECT_EQ(segments(), 3);
}

TEST_F(TreeTest, RenameMovesAndReplaces) {
  const uint64_t a = mk(kRootIno, "a");
  const uint64_t f = touch(kRootIno, "f");
  const uint64_t g = touch(kRootIno, "g");
  // A reader parked on g is told g is gone when f replaces it.
  auto gbox = tree_->mailbox(g);
  auto& h = open(gbox, true, false);
  ASSERT_FALSE(gbox->read(h, 10, false, waiter(1)).has_value());
  EXPECT_EQ(tree_->rename(kRootIno, "f", kRootIno, "g", false), Errc::ok);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::removed);
  EXPECT_EQ(tree_->lookup(kRootIno, "g")->st_ino, f);
  EXPECT_EQ(segments(), 1);
  // Into a directory; directories move with their nlink accounting.
  EXPECT_EQ(tree_->rename(kRootIno, "g", a, "moved", false), Errc::ok);
  EXPECT_EQ(names(a), (std::vector<std::string>{".", "..", "moved"}));
  const uint64_t d = mk(kRootIno, "d");
  EXPECT_EQ(nlink(kRootIno), 4u);
  EXPECT_EQ(tree_->rename(kRootIno, "d", a, "d2", false), Errc::ok);
  EXPECT_EQ(nlink(kRootIno), 3u);
  EXPECT_EQ(nlink(a), 3u);
  mk(kRootIno, "empty");
  EXPECT_EQ(nlink(kRootIno), 4u);
  EXPECT_EQ(tree_->rename(a, "d2", kRootIno, "empty", false), Errc::ok);  // replaces an empty dir
  EXPECT_EQ(nlink(kRootIno), 4u);
  EXPECT_EQ(nlink(a), 2u);
  EXPECT_EQ(tree_->lookup(kRootIno, "empty")->st_ino, d);
  auto entries = tree_->list(d);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->at(1).ino, kRootIno);  // ".." follows the move
}

// mq_unlink's removal: a rename to an unlink-at-last-close name removes the
// name at once, as unlink does, but the mailbox (its segment, its parked
// calls) lives on for its open files until the last is released.
TEST_F(TreeTest, RenameToUnlinkAtLastCloseKeepsTheMailboxForItsOpenFiles) {
  const uint64_t dir = mk(kRootIno, "dir");
  const std::string gone = std::string(mailbox::kUnlinkAtLastClose) + "1";
  EXPECT_EQ(tree_->rename(kRootIno, "none", kRootIno, gone, true), Errc::not_found);
  EXPECT_EQ(tree_->rename(kRootIno, "dir", kRootIno, gone, true), Errc::is_dir);
  const uint64_t q = touch(kRootIno, "q");
  auto box = tree_->mailbox(q);
  auto w = box->open(false, true, true), r = box->open(true, false, false);
  ASSERT_FALSE(box->read(*r, 10, false, waiter(1)).has_value());
  EXPECT_EQ(tree_->rename(kRootIno, "q", dir, gone, true), Errc::ok);
  EXPECT_EQ(tree_->lookup(kRootIno, "q").error(), Errc::not_found);
  EXPECT_EQ(tree_->lookup(dir, gone).error(), Errc::not_found);
  EXPECT_EQ(names(kRootIno), (std::vector<std::string>{".", "..", "dir"}));
  EXPECT_EQ(names(dir), (std::vector<std::string>{".", ".."}));
  EXPECT_EQ(nlink(q), 0u);
  EXPECT_EQ(segments(), 1);
  // The name makes a new mailbox with a segment of its own.
  const uint64_t q2 = touch(kRootIno, "q");
  EXPECT_NE(q2, q);
  EXPECT_EQ(segments(), 2);
  // The old one still works for its open files: the parked reader gets the message.
  ASSERT_EQ(box->write(*w, "old", 3, true, Sender{}, nullptr)->err, Errc::ok);
  ASSERT_EQ(box->flush(*w, Sender{}, nullptr)->err, Errc::ok);
  auto e = board_.wait(1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.data, "old");
  box->release(*w);
  EXPECT_EQ(segments(), 2);
  EXPECT_FALSE(box->info().removed);
  box->release(*r);  // the last close deletes it
  EXPECT_TRUE(box->info().removed);
  EXPECT_EQ(segments(), 1);
  EXPECT_EQ(mount_->quota_used(), 0u);
  // Without an open file, the mailbox goes at once.
  EXPECT_EQ(tree_->rename(kRootIno, "q", kRootIno, gone, false), Errc::ok);
  EXPECT_EQ(segments(), 0);
  tree_->forget(q, 1);
  EXPECT_EQ(tree_->getattr(q).error(), Errc::not_found);
}

TEST_F(TreeTest, Xattrs) {
  const uint64_t f = touch(kRootIno, "box");
  const uint64_t d = mk(kRootIno, "dir");
  auto list = tree_->listxattr(f);
  ASSERT_TRUE(list.ok());
  for (const char* n :
       {"user.mailbox.capacity", "user.mailbox.max_message", "user.mailbox.framing", "user.mailbox.timeout_ms",
        "user.mailbox.messages", "user.mailbox.bytes", "user.mailbox.blocked_receivers"})
    EXPECT_NE(list->find(std::string(n) + '\0'), std::string::npos) << n;
  EXPECT_EQ(*tree_->listxattr(d), "");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.capacity"), "64");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.framing"), "file");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.messages"), "0");
  EXPECT_EQ(tree_->getxattr(f, "user.mailbox.nope").error(), Errc::no_data);
  EXPECT_EQ(tree_->getxattr(f, "user.other").error(), Errc::no_data);
  EXPECT_EQ(tree_->getxattr(d, "user.mailbox.capacity").error(), Errc::no_data);

  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.capacity", "8\n", kAlice), Errc::ok);
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.capacity"), "8");
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.capacity", "eight", kAlice), Errc::invalid);
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.framing", "blob", kAlice), Errc::invalid);
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.timeout_ms", "-1", kAlice), Errc::invalid);
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.capacity"), "8");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.framing"), "file");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.timeout_ms"), "0");
  for (const char* ro :
       {"messages", "bytes", "sent", "received", "lost", "returned", "blocked_senders", "blocked_receivers", "segment"})
    EXPECT_EQ(tree_->setxattr(f, std::string("user.mailbox.") + ro, "1", kAlice), Errc::perm) << ro;
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.messages"), "0");
  // Settings belong to the owner (and root).
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.capacity", "3", kBob), Errc::perm);
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.capacity"), "8");
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.capacity", "unbounded", kRoot), Errc::ok);
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.capacity"), "unbounded");
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.colour", "1", kAlice), Errc::not_supported);
  EXPECT_EQ(tree_->setxattr(f, "user.other", "1", kAlice), Errc::not_supported);
  EXPECT_EQ(tree_->setxattr(d, "user.mailbox.capacity", "1", kAlice), Errc::not_supported);
  EXPECT_EQ(tree_->setxattr(999999, "user.mailbox.capacity", "1", kAlice), Errc::not_found);
  EXPECT_EQ(tree_->removexattr(f, "user.mailbox.capacity"), Errc::perm);
  EXPECT_EQ(tree_->removexattr(f, "user.other"), Errc::no_data);
  // The namespace's prefix alone is in it: a non-owner is refused first.
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.", "1", kBob), Errc::perm);
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.", "1", kAlice), Errc::not_supported);
  EXPECT_EQ(tree_->removexattr(f, "user.mailbox."), Errc::perm);
  // Counters and blocked pids.
  auto box = tree_->mailbox(f);
  auto& r = open(box, true, false);
  ASSERT_FALSE(box->read(r, 10, false, waiter(1, 4321)).has_value());
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.blocked_receivers"), "4321");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.blocked_senders"), "");
  EXPECT_EQ(*tree_->getxattr(f, "user.mailbox.segment"), box->info().locator.value());
}

TEST_F(TreeTest, SetattrAndStatfs) {
  const uint64_t f = touch(kRootIno, "box");
  struct stat in {};
  in.st_mode = 0600;
  in.st_uid = 5;
  in.st_size = 0;
  auto st = tree_->setattr(f, in, kSetMode | kSetUid | kSetSize, kAlice);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_mode, S_IFREG | 0600u);
  EXPECT_EQ(st->st_uid, 5u);
  // The new owner's settings: alice lost them.
  EXPECT_EQ(tree_->setxattr(f, "user.mailbox.capacity", "3", kAlice), Errc::perm);
  EXPECT_EQ(tree_->setattr(999999, in, kSetMode, kAlice).error(), Errc::not_found);
  struct statvfs sv = tree_->statfs();
  EXPECT_EQ(sv.f_namemax, 255u);
  EXPECT_EQ(sv.f_blocks * sv.f_frsize, mount_->config().max_bytes);
  EXPECT_EQ(sv.f_bfree, sv.f_blocks);
}

}  // namespace
}  // namespace mbx

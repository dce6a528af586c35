// SPDX-License-Identifier: MIT
// Mount tests of who may do what (mode bits, owners, settings), checked from
// an unprivileged user, and of names: validation, directories, rename, and
// deleting a mailbox that has blocked callers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using mt::q;

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
constexpr const char* kDaemonUser = "setpriv --reuid=1 --regid=1 --clear-groups ";  // another non-owner

// The harness's temporary directory is 0700: let other users reach the mount.
void open_up(const mt::Mount& m) {
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
}

// Runs `script` in the mount as the user `who` (a setpriv prefix).
mt::Run as(const mt::Mount& m, const char* who, const std::string& script, int ms = 5000) {
  return m.sh(std::string(who) + "bash -c " + q(script), ms);
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// ---- 6. permissions -------------------------------------------------------------

TEST(AccessPermissions, ModeBitsDecideWhoSendsAndReceives) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  ASSERT_EQ(m.sh("printf one > box && chmod 0620 box && printf two > box").status, 0);
  EXPECT_EQ(m.sh("stat -c %a:%U box").out, "620:root\n");

  // Not the owner, not in the group: neither r nor w.
  mt::Run r = as(m, kNobody, "cat box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Permission denied")) << r.err;
  r = as(m, kNobody, "printf x > box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Permission denied")) << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "2");  // nothing taken, nothing added
  EXPECT_EQ(m.xattr("box", "sent"), "2");

  ASSERT_EQ(m.sh("chmod 0666 box").status, 0);
  r = as(m, kNobody, "printf three > box && cat box && echo && cat box");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "one\ntwo");
  EXPECT_EQ(m.xattr("box", "messages"), "1");

  // Owned by nobody, 0620: the owner may send and receive, others may not.
  ASSERT_EQ(m.sh("chown nobody box && chmod 0620 box").status, 0);
  EXPECT_EQ(m.sh("stat -c %a:%u:%g box").out, "620:65534:0\n");
  r = as(m, kNobody, "printf four > box && cat box");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "three");
  r = as(m, kDaemonUser, "cat box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Permission denied")) << r.err;
  r = as(m, kDaemonUser, "printf x > box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Permission denied")) << r.err;

  // A group away: group 1 may send (w) but not receive.
  ASSERT_EQ(m.sh("chgrp 1 box").status, 0);
  r = as(m, kDaemonUser, "printf five > box");
  EXPECT_EQ(r.status, 0) << r.err;
  r = as(m, kDaemonUser, "cat box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Permission denied")) << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "2");
  r = m.sh("cat box; echo; cat box");  // root may do anything
  EXPECT_EQ(r.out, "four\nfive");
}

TEST(AccessPermissions, CreatorOwnsTheMailbox) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  mt::Run r = as(m, kNobody, "touch mine && mkdir ns && touch ns/inner && stat -c %u:%g mine ns ns/inner");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "65534:65534\n65534:65534\n65534:65534\n");
  // The owner changes its own mailbox's settings.
  r = as(m, kNobody, "setfattr -n user.mailbox.capacity -v 3 mine && setfattr -n user.mailbox.framing -v line mine");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.xattr("mine", "capacity"), "3");
  EXPECT_EQ(m.xattr("mine", "framing"), "line");
  // ...and may not touch root's files in the sticky root directory.
  ASSERT_EQ(m.sh("touch roots && chmod 0666 roots").status, 0);
  r = as(m, kNobody, "rm -f roots");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Operation not permitted")) << r.err;
  EXPECT_EQ(m.sh("LC_ALL=C ls").out, "mine\nns\nroots\n");
}

TEST(AccessPermissions, OnlyTheOwnerChangesSettingsAndBadValuesChangeNothing) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  // 0666: the kernel lets nobody write the file, so the daemon's owner check decides.
  ASSERT_EQ(m.sh("touch box && chmod 0666 box && setfattr -n user.mailbox.capacity -v 5 box").status, 0);
  ASSERT_EQ(m.xattr("box", "capacity"), "5");
  for (const char* key : {"capacity", "max_message", "framing", "timeout_ms"}) {
    const std::string v = std::string(key) == "framing" ? "line" : "7";
    mt::Run r = as(m, kNobody, "setfattr -n user.mailbox." + std::string(key) + " -v " + v + " box");
    EXPECT_NE(r.status, 0) << key;
    EXPECT_TRUE(has(r.err, "Operation not permitted") || has(r.err, "Permission denied")) << key << ": " << r.err;
  }
  // 0644: the kernel already refuses.
  ASSERT_EQ(m.sh("chmod 0644 box").status, 0);
  mt::Run r = as(m, kNobody, "setfattr -n user.mailbox.capacity -v 9 box");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Operation not permitted") || has(r.err, "Permission denied")) << r.err;
  EXPECT_EQ(m.xattr("box", "capacity"), "5");
  EXPECT_EQ(m.xattr("box", "max_message"), "1048576");
  EXPECT_EQ(m.xattr("box", "framing"), "file");
  EXPECT_EQ(m.xattr("box", "timeout_ms"), "0");

  // Bad values, even from root: EINVAL and the old value stays.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"capacity", "banana"}, {"capacity", "-1"},    {"capacity", ""},       {"max_message", "0"},
      {"max_message", "1X"},  {"framing", "stream"}, {"timeout_ms", "soon"}, {"timeout_ms", "-5"}};
  for (auto& [key, value] : bad) {
    r = m.sh("setfattr -n user.mailbox." + key + " -v " + q(value) + " box");
    EXPECT_NE(r.status, 0) << key << "=" << value;
    EXPECT_TRUE(has(r.err, "Invalid argument")) << key << "=" << value << ": " << r.err;
  }
  EXPECT_EQ(m.sh("getfattr -n user.mailbox.capacity box").out, "# file: box\nuser.mailbox.capacity=\"5\"\n\n");
  EXPECT_EQ(m.xattr("box", "max_message"), "1048576");
  EXPECT_EQ(m.xattr("box", "framing"), "file");
  EXPECT_EQ(m.xattr("box", "timeout_ms"), "0");

  // Counters are read-only, for everyone.
  r = m.sh("printf hi > box && setfattr -n user.mailbox.messages -v 0 box");
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(m.xattr("box", "messages"), "1");
}

TEST(AccessPermissions, WithoutAllowOtherOtherUsersAreShutOut) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  ASSERT_EQ(m.sh("printf hi > box && chmod 0666 box").status, 0);
  mt::Run r = as(m, kNobody, "cat " + q(m.path("box")));
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Permission denied")) << r.err;
  EXPECT_EQ(m.xattr("box", "messages"), "1");
}

// ---- 7. names, directories, rename, delete ---------------------------------------

TEST(AccessNames, TooLongOrControlCharactersAreRefusedAndNothingIsCreated) {
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string n256(256, 'a'), n255(255, 'b');
  for (const std::string cmd : {"touch ", "mkdir "}) {
    mt::Run r = m.sh(cmd + q(n256));
    EXPECT_NE(r.status, 0) << cmd;
    EXPECT_TRUE(has(r.err, "File name too long")) << cmd << ": " << r.err;
  }
  mt::Run r = m.sh("printf x > " + q(n256));
  EXPECT_TRUE(has(r.err, "File name too long")) << r.err;
  EXPECT_EQ(m.sh("LC_ALL=C ls -A").out, "");

  // Control characters (and DEL, newline, invalid UTF-8): EINVAL.
  for (const char* name : {"$'a\\x01b'", "$'a\\x7fb'", "$'a\\nb'", "$'a\\tb'", "$'\\xff\\xfe'"}) {
    r = m.sh(std::string("touch ") + name);
    EXPECT_NE(r.status, 0) << name;
    EXPECT_TRUE(has(r.err, "Invalid argument")) << name << ": " << r.err;
    r = m.sh(std::string("mkdir ") + name);
    EXPECT_TRUE(has(r.err, "Invalid argument")) << name << ": " << r.err;
  }
  EXPECT_EQ(m.sh("LC_ALL=C ls -A").out, "");

  // 255 bytes, and UTF-8, are fine.
  r = m.sh("touch " + q(n255) + " 'boîte' && LC_ALL=C ls");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, n255 + "\nboîte\n");
  // A rename to a bad name fails and leaves the mailbox where it was. (mv
  // words EINVAL from rename(2) as "subdirectory of itself": ask python.)
  r = m.sh(
      "printf kept > 'boîte' && python3 -c 'import os\n"
      "for new in (\"x\\x01y\", \"a\" * 256):\n"
      "    try:\n        os.rename(\"boîte\", new)\n    except OSError as e:\n        print(e.strerror)'");
  EXPECT_EQ(r.out, "Invalid argument\nFile name too long\n") << r.err;
  r = m.sh("mv 'boîte' " + q(n256));
  EXPECT_TRUE(has(r.err, "File name too long")) << r.err;
  EXPECT_EQ(m.sh("cat 'boîte' && LC_ALL=C ls").out, "kept" + n255 + "\nboîte\n");
}

TEST(AccessNames, DirectoriesAreNamespaces) {
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  mt::Run r =
      m.sh("mkdir jobs && touch jobs/high jobs/low && LC_ALL=C ls && LC_ALL=C ls jobs && stat -c %F jobs jobs/high");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "jobs\nhigh\nlow\ndirectory\nregular empty file\n");

  // mv keeps the queued messages.
  r = m.sh(
      "printf first > jobs/high && printf second > jobs/high && mv jobs/high jobs/urgent && ls jobs"
      " && cat jobs/urgent && echo && cat jobs/urgent");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "low\nurgent\nfirst\nsecond");
  EXPECT_NE(m.sh("test -e jobs/high").status, 0);
  // Across directories, and over an existing mailbox (which is deleted).
  r = m.sh(
      "mkdir done && mv jobs/low done/low && printf x > jobs/urgent && mv -f jobs/urgent done/low"
      " && LC_ALL=C ls jobs done && cat done/low");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "done:\nlow\n\njobs:\nx");

  // rmdir of a non-empty namespace fails and removes nothing.
  r = m.sh("rmdir done");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Directory not empty")) << r.err;
  EXPECT_EQ(m.sh("ls done").out, "low\n");
  r = m.sh("rm done/low && rmdir done jobs && ls -A");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  // A mailbox is not a directory and a directory is not a mailbox.
  r = m.sh("mkdir d && touch f && cat d");
  EXPECT_TRUE(has(r.err, "Is a directory")) << r.err;
  r = m.sh("touch f/x");
  EXPECT_TRUE(has(r.err, "Not a directory")) << r.err;
  r = m.sh("rm d");
  EXPECT_NE(r.status, 0);
}

TEST(AccessNames, RemovingAMailboxWakesItsBlockedReaderAtOnce) {
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box").status, 0);
  const std::string seg = m.xattr("box", "segment");
  ASSERT_FALSE(seg.empty());
  ASSERT_EQ(access(seg.c_str(), F_OK), 0) << seg;
  mt::Proc reader("cat box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));
  mt::Run rm = m.sh("rm box");
  ASSERT_FALSE(rm.timed_out);
  EXPECT_EQ(rm.status, 0) << rm.err;
  ASSERT_TRUE(reader.exits()) << "the blocked reader was not woken";
  mt::Run r = reader.finish(0);
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Identifier removed")) << r.err;
  EXPECT_EQ(m.sh("ls -A").out, "");
  EXPECT_NE(access(seg.c_str(), F_OK), 0) << "shared memory of a deleted mailbox remains: " << seg;
}

TEST(AccessNames, RenamingOverAMailboxWakesItsBlockedReader) {
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch old && printf fresh > new").status, 0);
  mt::Proc reader("cat old", m.dir());
  ASSERT_TRUE(m.wait_listed("old", "blocked_receivers", reader.pid()));
  mt::Run mv = m.sh("mv -f new old");
  ASSERT_FALSE(mv.timed_out);
  EXPECT_EQ(mv.status, 0) << mv.err;
  ASSERT_TRUE(reader.exits()) << "the reader of the replaced mailbox was not woken";
  mt::Run r = reader.finish(0);
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "Identifier removed")) << r.err;
  EXPECT_EQ(m.sh("ls && cat old").out, "old\nfresh");
}

class AccessRemoveWithBlockedSender : public ::testing::TestWithParam<const char*> {};

TEST_P(AccessRemoveWithBlockedSender, SenderIsWokenAtOnce) {
  const std::string framing = GetParam();
  mt::Mount m("capacity=1,framing=" + framing);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("printf first > box").status, 0);
  // datagram framing blocks in write(), file framing at close().
  mt::Proc sender("printf second > box; echo status=$?", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  mt::Run rm = m.sh("rm box");
  ASSERT_FALSE(rm.timed_out) << "rm hung behind a blocked sender";
  EXPECT_EQ(rm.status, 0) << rm.err;
  ASSERT_TRUE(sender.exits()) << "the blocked sender was not woken";
  mt::Run r = sender.finish(0);
  if (framing == "datagram") {
    EXPECT_EQ(r.out, "status=1\n");
    EXPECT_TRUE(has(r.err, "Identifier removed")) << r.err;
  }
  EXPECT_EQ(m.sh("ls -A").out, "");
}

// Only file framing: a datagram/line sender blocked inside write() holds the
// inode lock, and the kernel makes rm wait for it before the daemon ever sees
// the unlink (docs/design.md, "What remains"); the next test checks that case.
INSTANTIATE_TEST_SUITE_P(Framings, AccessRemoveWithBlockedSender, ::testing::Values("file"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// The datagram case: the rm waits in the kernel while the
// sender is parked, and both complete as soon as a receive releases the sender.
TEST(AccessNames, RemoveBehindBlockedDatagramSender) {
  mt::Mount m("capacity=1,framing=datagram");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("printf first > box").status, 0);
  mt::Proc sender("printf second > box; echo status=$?", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  mt::Proc rm(std::string(mt::kReadySh) + "exec rm box", m.dir());
  // Either rm returns, or it sleeps in the kernel (behind the inode lock).
  ASSERT_TRUE(rm.wait_ready());
  ASSERT_TRUE(mt::wait_until([&] { return !rm.running() || mt::wait_sleeping(rm.pid(), mt::Sleep::any, 0); }));
  std::cout << "[ note     ] rm of a mailbox with a sender blocked in write() "
            << (rm.running() ? "waits for the sender" : "returned at once") << "\n";
  // Reads take no inode lock: a receive gets through and releases the sender.
  mt::Run got = m.sh("dd bs=100 count=1 status=none if=box");
  EXPECT_FALSE(got.timed_out);
  EXPECT_EQ(got.out, "first");
  ASSERT_TRUE(sender.exits());
  ASSERT_TRUE(rm.exits()) << "rm still hangs after the sender was released";
  EXPECT_EQ(rm.finish(0).status, 0);
  mt::Run r = sender.finish(0);
  EXPECT_TRUE(r.out == "status=0\n" || has(r.err, "Identifier removed")) << r.out << r.err;
  EXPECT_EQ(m.sh("ls -A").out, "");
}

}  // namespace

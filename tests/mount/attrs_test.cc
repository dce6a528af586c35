// SPDX-License-Identifier: MIT
// The kernel may cache a mailbox's attributes (so that `ls -l` of many idle
// mailboxes costs no request per file), but never past a change: what stat
// shows right after a send or a receive returned is the new backlog, whether
// it went through the file or through libmailbox.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <mailbox/mailbox.hpp>

#include "harness.h"

namespace {

using mailbox::Mailbox;
using mt::Mount;

off_t size_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

TEST(Attrs, StatRightAfterEchoAndCatShowsTheNewBacklog) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  // Each stat right after a change, with the attributes looked at (and so
  // cacheable) just before it; `ls -l` of the directory answers from READDIRPLUS.
  auto r = m.sh(
      "mkdir d; : > d/box; stat -c %s d/box; ls -l d | awk '/box/{print $5}';"
      "printf 12345 > d/box; stat -c %s d/box; ls -l d | awk '/box/{print $5}';"
      "printf 678 > d/box; ls -l d | awk '/box/{print $5}'; stat -c %s d/box;"
      "cat d/box >/dev/null; stat -c %s d/box; ls -l d | awk '/box/{print $5}';"
      "cat d/box >/dev/null; ls -l d | awk '/box/{print $5}'");
  EXPECT_EQ(r.out, "0\n0\n5\n5\n8\n8\n3\n3\n0\n") << r.err;
  // Another process sees it too, once the writer's close returned.
  r = m.sh("stat -c %s d/box; (echo abc > d/box); stat -c %s d/box");
  EXPECT_EQ(r.out, "0\n4\n") << r.err;
  EXPECT_EQ(m.daemon_stderr(), "");
}

TEST(Attrs, StatRightAfterALibrarySendOrReceiveShowsTheNewBacklog) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string path = m.path("box");
  ASSERT_EQ(m.sh(": > box").status, 0);
  ASSERT_EQ(size_of(path), 0);  // looked at before any library process knew the mailbox
  ASSERT_EQ(size_of(path), 0);
  {
    auto box = Mailbox::open(path);
    ASSERT_TRUE(box);
    ASSERT_EQ(box->send("12345"), 0);  // no daemon involved
    EXPECT_EQ(size_of(path), 5);
    EXPECT_EQ(size_of(path), 5);
    ASSERT_EQ(box->send("678"), 0);
    EXPECT_EQ(size_of(path), 8);
    std::string msg;
    ASSERT_EQ(box->receive(msg), 0);
    EXPECT_EQ(size_of(path), 3);
  }
  // From another process, the mailbox already known to libmailbox.
  pid_t p = mt::child([&] {
    auto box = Mailbox::open(path);
    if (!box) return 10;
    std::string msg;
    if (box->receive(msg) != 0 || msg != "678") return 11;
    if (size_of(path) != 0) return 12;
    return box->send("abcdefg") == 0 ? 0 : 13;
  });
  ASSERT_EQ(mt::finish(p), 0);
  EXPECT_EQ(size_of(path), 7);
  auto r = m.sh("ls -l | awk '/box/{print $5}'");
  EXPECT_EQ(r.out, "7\n") << r.err;
  EXPECT_EQ(m.daemon_stderr(), "");
}

// READDIRPLUS hands the kernel one reference per entry (counted like a
// LOOKUP): an open mailbox listed many times, then removed, is still there
// for fstat of its open file.
TEST(Attrs, ListingCountsTheKernelsReferences) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  auto r = m.sh(
      "mkdir d; for i in 1 2 3; do : > d/m$i; done; echo queued > d/m2; exec 3<d/m2;"
      "for i in 1 2 3; do ls -l d >/dev/null; done; rm d/m2; ls d | tr '\\n' ' '; echo;"
      "python3 -c 'import os; s = os.fstat(3); print(s.st_nlink, s.st_size)'");
  EXPECT_EQ(r.out, "m1 m3 \n0 0\n") << r.err;  // rm discarded what was queued
  EXPECT_EQ(m.daemon_stderr(), "");
}

TEST(Attrs, ASettingThatChangesTheSizeShowsInStat) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  // A full datagram mailbox reports at least its largest message as its
  // size (writers then wait side by side); file framing reports the backlog.
  auto r = m.sh(
      ": > box; setfattr -n user.mailbox.capacity -v 1 box; setfattr -n user.mailbox.max_message -v 100 box;"
      "setfattr -n user.mailbox.framing -v datagram box; printf ab > box; stat -c %s box;"
      "setfattr -n user.mailbox.framing -v file box; stat -c %s box");
  EXPECT_EQ(r.out, "100\n2\n") << r.err;
}

}  // namespace

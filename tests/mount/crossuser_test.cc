// Mount tests across users: a write parked on a full datagram mailbox holds
// the mailbox's inode lock in the kernel, and rm, mv and chmod need it. When
// the owner (or root) does one of those, writes of other users parked there
// are freed first (EINTR, nothing sent), so the owner never waits on them in
// uninterruptible sleep. Root owns the mailbox, `nobody` writes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "harness.h"

namespace {

using mt::q;

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
constexpr int kHangGuardMs = 30000;  // far beyond any real rm; only stops a hung test

void open_up(const mt::Mount& m) {
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// A full datagram mailbox `name` of root's, mode 666, capacity 1.
void full_datagram_box(const mt::Mount& m, const std::string& name) {
  ASSERT_EQ(m.sh("touch " + name + " && setfattr -n user.mailbox.framing -v datagram " + name +
                 " && setfattr -n user.mailbox.capacity -v 1 " + name + " && chmod 666 " + name + " && echo a > " +
                 name)
                .status,
            0);
}

TEST(CrossUser, OwnersRmDoesNotWaitForAnotherUsersParkedWrite) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  full_datagram_box(m, "dg");

  // The shell case of the report: the write parks, holding the inode lock.
  mt::Proc writer(std::string(kNobody) + "bash -c 'exec 3>dg; echo b >&3; echo rc=$?'", m.dir());
  ASSERT_TRUE(m.wait_words("dg", "blocked_senders", 1, kHangGuardMs)) << "the write never parked";
  // Looking at it (stat, getfattr, ls) frees nobody.
  ASSERT_EQ(m.sh("stat dg >/dev/null && ls -l >/dev/null").status, 0);
  EXPECT_TRUE(m.wait_words("dg", "blocked_senders", 1, 0));

  mt::Run rm = m.sh("rm dg", kHangGuardMs);
  EXPECT_FALSE(rm.timed_out) << "rm waited for another user's parked write";
  EXPECT_EQ(rm.status, 0) << rm.err;
  mt::Run w = writer.finish(kHangGuardMs);
  EXPECT_FALSE(w.timed_out);
  EXPECT_TRUE(has(w.err, "Interrupted system call")) << w.err;  // the write failed whole
  EXPECT_EQ(w.out, "rc=1\n");
  EXPECT_EQ(m.sh("ls").out, "");
}

// A file-framed mailbox's name is cached by the kernel (no write can park
// there holding the inode lock). A datagram writer opened before the framing
// went back to file can still park: the name must then be looked up at each
// use again, or the owner's rm would wait for that write in the kernel.
TEST(CrossUser, OwnersRmDoesNotWaitForAWriterOpenedUnderAnotherFraming) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  full_datagram_box(m, "dg");
  ASSERT_EQ(m.sh("touch go && chmod 666 go").status, 0);  // file framing: the writer's go-ahead

  // Opened as datagram; writes (and parks) only once the framing is file again.
  mt::Proc writer(std::string(kNobody) + "bash -c 'exec 3>dg; " + mt::kReadySh +
                      "cat go >/dev/null; echo b >&3; echo rc=$?'",
                  m.dir());
  ASSERT_TRUE(writer.wait_ready()) << "the writer never opened";
  ASSERT_EQ(m.sh("setfattr -n user.mailbox.framing -v file dg && stat dg >/dev/null && echo go > go").status, 0);
  ASSERT_TRUE(m.wait_words("dg", "blocked_senders", 1, kHangGuardMs)) << "the write never parked";

  mt::Run rm = m.sh("rm dg", kHangGuardMs);
  EXPECT_FALSE(rm.timed_out) << "rm waited for another user's parked write";
  EXPECT_EQ(rm.status, 0) << rm.err;
  mt::Run w = writer.finish(kHangGuardMs);
  EXPECT_FALSE(w.timed_out);
  EXPECT_EQ(w.out, "rc=1\n") << w.err;
}

TEST(CrossUser, OwnersChmodAndMvDoNotWaitForARetryingWriter) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  full_datagram_box(m, "dg");

  // Python retries a write that fails with EINTR (PEP 475) at once: it must
  // not park again before the owner's call has taken the inode lock.
  mt::Proc writer(std::string(kNobody) +
                      "/usr/bin/python3 -c \"import os\nfd = os.open('dg', os.O_WRONLY)\n"
                      "try:\n    print(os.write(fd, b'b'))\nexcept OSError as e:\n    print(e.errno)\n\"",
                  m.dir());
  ASSERT_TRUE(m.wait_words("dg", "blocked_senders", 1, kHangGuardMs)) << "the write never parked";

  mt::Run r = m.sh("chmod 600 dg", kHangGuardMs);
  EXPECT_FALSE(r.timed_out) << "chmod waited for another user's parked write";
  EXPECT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(m.wait_words("dg", "blocked_senders", 1, kHangGuardMs)) << "the write did not park again";

  r = m.sh("mv dg dg2", kHangGuardMs);
  EXPECT_FALSE(r.timed_out) << "mv waited for another user's parked write";
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.sh("stat -c %a:%n dg2").out, "600:dg2\n");
  ASSERT_TRUE(m.wait_words("dg2", "blocked_senders", 1, kHangGuardMs)) << "the write did not park again";

  // Receiving makes room: the retried write is then sent, once.
  r = m.sh("python3 -c \"import os\nfd = os.open('dg2', os.O_RDONLY)\nprint(os.read(fd, 9), os.read(fd, 9))\n\"",
           kHangGuardMs);
  EXPECT_EQ(r.out, "b'a\\n' b'b'\n") << r.err;
  mt::Run w = writer.finish(kHangGuardMs);
  EXPECT_EQ(w.out, "1\n") << w.err;
  EXPECT_EQ(m.xattr("dg2", "messages"), "0");
  EXPECT_EQ(m.xattr("dg2", "sent"), "2");
}

}  // namespace

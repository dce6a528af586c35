// Smaller defects of the reliability review (issue 17, item 5), each checked
// from real programs on a real mount: set-user-ID and set-group-ID cleared by
// a non-owner's write, a state directory removed under the daemon, and
// send-only library use of a write-only mailbox.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

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
  mt::Run r = as_nobody(m,
                        "python3 -c \"import os; f = os.open('box', os.O_WRONLY); os.write(f, b'x');"
                        " print(oct(os.fstat(f).st_mode & 0o7777)[2:])\"");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::string(c.after) + "\n");
  EXPECT_EQ(m.sh("stat -c %a box").out, std::string(c.after) + "\n");
  EXPECT_EQ(m.xattr("box", "messages"), "1");  // and the write was sent
}

INSTANTIATE_TEST_SUITE_P(
    Modes, PrivsOnWrite,
    ::testing::Values(PrivCase{"4777", "0:0", "777"},            // pjdfstest chmod/12: suid, root's file
                      PrivCase{"4777", "65535:65535", "777"},    // suid
                      PrivCase{"2777", "65535:65535", "777"},    // sgid with group-execute
                      PrivCase{"6777", "65535:65535", "777"},    // both
                      PrivCase{"2767", "65535:65535", "767"},    // sgid, not in the group: cleared
                      PrivCase{"2767", "65535:65534", "2767"},   // sgid without group-execute, in the group: kept
                      PrivCase{"4766", "65534:65534", "766"}));  // the owner has no CAP_FSETID either

TEST(PrivsOnWriteByRoot, RootKeepsThem) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box && chown 65535:65535 box && chmod 6777 box && "
                 "python3 -c \"import os; os.write(os.open('box', os.O_WRONLY), b'x')\"")
                .status,
            0);
  EXPECT_EQ(m.sh("stat -c %a box").out, "6777\n");
}

}  // namespace

// ---- send-only library use of a mailbox the sender may not read ---------------

// Drops the capabilities that bypass mode bits, keeping uid 0: the owner
// class of the mode then decides, as for any user.
bool drop_dac_caps() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (::syscall(SYS_capget, &h, d) != 0) return false;
  for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER}) {
    d[cap / 32].effective &= ~(1u << (cap % 32));
    d[cap / 32].permitted &= ~(1u << (cap % 32));  // access(2) would use the permitted set
  }
  return ::syscall(SYS_capset, &h, d) == 0;
}

bool become_nobody() { return ::setgroups(0, nullptr) == 0 && ::setgid(65534) == 0 && ::setuid(65534) == 0; }

class SendOnly : public ::testing::TestWithParam<const char*> {};

// Fallback: nobody may write a 0622 mailbox but neither read it nor map its segment.
TEST_P(SendOnly, ThroughTheFileForAWriteOnlyMailbox) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  const std::string framing = GetParam();
  ASSERT_EQ(m.sh("touch box && chmod 0622 box && setfattr -n user.mailbox.framing -v " + framing + " box").status, 0);
  const std::string path = m.path("box");
  pid_t p = mt::child([&] {
    if (!become_nobody()) return 10;
    auto rx = mailbox::Mailbox::open(path, {.send = false, .receive = true, .fallback = true});
    if (rx || rx.error() != EACCES) return 11;  // receiving needs read permission
    auto fast = mailbox::Mailbox::open(path, {.send = true, .receive = false, .fallback = false});
    if (fast || fast.error() != EACCES) return 12;  // nobody may not map the segment
    auto tx = mailbox::Mailbox::open(path, {.send = true, .receive = false, .fallback = true});
    if (!tx) return 20 + (tx.error() & 63);
    if (!tx->via_file()) return 13;
    std::string msg;
    if (tx->receive(msg) != EBADF) return 14;
    if (int e = tx->send("hello")) return 100 + (e & 63);
    if (int e = tx->try_send("world")) return 150 + (e & 63);
    return 0;
  });
  EXPECT_EQ(mt::finish(p, 20000), 0);
  EXPECT_EQ(m.xattr("box", "messages"), "2");
  auto r =
      m.sh(framing == "file"
               ? "cat box; echo; cat box"
               : "python3 -c \"import os; f = os.open('box', os.O_RDONLY); print(os.read(f, 99), os.read(f, 99))\"");
  EXPECT_EQ(r.out, framing == "file"       ? "hello\nworld"
                   : framing == "datagram" ? "b'hello' b'world'\n"
                                           : "b'hello\\n' b'world\\n'\n")
      << r.err;
}

INSTANTIATE_TEST_SUITE_P(Framings, SendOnly, ::testing::Values("file", "datagram", "line"));

// Fast path: uid 0 without the capabilities that bypass mode bits owns the
// daemon's segments but may only write a 0200 mailbox.
TEST(SendOnlyFast, MapsTheSegmentOfAWriteOnlyMailbox) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box && chmod 0200 box").status, 0);
  const std::string path = m.path("box");
  pid_t p = mt::child([&] {
    if (!drop_dac_caps()) return 10;
    if (::access(path.c_str(), R_OK) == 0) return 11;  // the capability really is gone
    auto rx = mailbox::Mailbox::open(path, {.send = false, .receive = true});
    if (rx || rx.error() != EACCES) return 12;
    auto tx = mailbox::Mailbox::open(path, {.send = true, .receive = false});
    if (!tx) return 20 + (tx.error() & 63);
    if (tx->via_file()) return 13;
    if (int e = tx->send("fast")) return 100 + (e & 63);
    return 0;
  });
  EXPECT_EQ(mt::finish(p, 20000), 0);
  EXPECT_EQ(m.sh("cat box").out, "fast");
}

// ---- the state directory removed under the daemon ------------------------------

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) n++;
  return n;
}

TEST(StateDirRemoved, TheDaemonSaysSoAndMakesItAgain) {
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string sd = m.state_dir();
  ASSERT_EQ(m.sh("touch old orphan && printf kept > old && printf stays > orphan").status, 0);
  ASSERT_EQ(mt::sh("rm -rf " + q(sd)).status, 0);

  // A create and a resize work, and say nothing misleading (ENOENT, ENOTSUP).
  auto r = m.sh("touch new && printf hi > new && cat new");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "hi");
  r = m.sh("setfattr -n user.mailbox.capacity -v 10 old && cat old");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "kept");  // moved into the new directory with its message
  EXPECT_EQ(mt::sh("test -d " + q(sd) + " && test -f " + q(sd + "/control") + " && test -f " + q(sd + "/lock")).status,
            0);
  EXPECT_EQ(count(m.daemon_stderr(), "was removed"), 1u) << m.daemon_stderr();

  // A mailbox whose segment went with the directory works through the file;
  // libmailbox cannot map it (EIO) unless it takes the fallback.
  r = m.sh("getfattr -n user.mailbox.segment orphan");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  auto fast = mailbox::Mailbox::open(m.path("orphan"));
  ASSERT_FALSE(fast);
  EXPECT_EQ(fast.error(), EIO);
  auto slow = mailbox::Mailbox::open(m.path("orphan"), {.fallback = true});
  ASSERT_TRUE(slow) << slow.error();
  EXPECT_TRUE(slow->via_file());
  std::string got;
  EXPECT_EQ(slow->receive(got), 0);
  EXPECT_EQ(got, "stays");

  // The new control's doorbell is heard: a library send wakes a parked cat.
  mt::Proc cat("cat new", m.dir());
  ASSERT_TRUE(m.wait_words("new", "blocked_receivers", 1, 10000));
  auto lib = mailbox::Mailbox::open(m.path("new"));
  ASSERT_TRUE(lib) << lib.error();
  EXPECT_FALSE(lib->via_file());
  EXPECT_EQ(lib->send("from the library"), 0);
  EXPECT_EQ(cat.finish(10000).out, "from the library");

  // Records were written anew: the directory holds one per mailbox.
  EXPECT_EQ(mt::sh("ls " + q(sd) + " | grep -c '^n'").out, "3\n");  // old, orphan (only rewritten), new

  // Removed again: made again again, said again.
  ASSERT_EQ(mt::sh("rm -rf " + q(sd)).status, 0);
  r = m.sh("touch newer && printf x > newer && cat newer");
  EXPECT_EQ(r.out, "x") << r.err;
  EXPECT_EQ(count(m.daemon_stderr(), "was removed"), 2u) << m.daemon_stderr();
}

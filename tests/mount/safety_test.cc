// The daemon survives a segment that loses its memory: a state directory on a
// full filesystem fails sends with ENOSPC, and a segment file truncated
// under it marks that one mailbox corrupt. Either used to kill the daemon
// with SIGBUS, and the whole mount with it.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include "harness.h"

namespace {

using mt::q;

// A tmpfs of `size` on a fresh directory of its own, unmounted on destruction.
class SmallTmpfs {
 public:
  explicit SmallTmpfs(const std::string& size) {
    char tmpl[] = "/tmp/mbxtest-tmpfs.XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    ok_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, ("size=" + size + ",mode=0755").c_str()) == 0;
  }
  ~SmallTmpfs() {
    if (ok_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  bool ok() const { return ok_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool ok_ = false;
};

// Receives one datagram (cat would wait for the next one).
std::string one(const std::string& name) { return "dd if=" + name + " bs=64k count=1 status=none"; }

bool alive(const mt::Mount& m) { return ::kill(m.daemon_pid(), 0) == 0 && m.sh("ls").status == 0; }

// Issue 17 item 2: a 16 MiB tmpfs as the state directory, filled by another
// program; then one 50 KB datagram write.
TEST(Safety, FullStateDirFailsTheSendWithEnospcAndTheDaemonLives) {
  SmallTmpfs fs("16m");
  if (!fs.ok()) GTEST_SKIP() << "cannot mount a tmpfs (not root?)";
  mt::Mount m("state_dir=" + fs.dir() + "/state,framing=datagram");
  ASSERT_TRUE(m.ok());
  // b has a message through it before the filesystem fills: its first chunk is there.
  ASSERT_EQ(m.sh("touch a b && echo x > b && " + one("b")).out, "x\n");
  ASSERT_NE(m.sh("dd if=/dev/zero of=" + q(fs.dir() + "/filler") + " bs=1M 2>&1").status, 0);  // ENOSPC

  const std::string send = "dd if=/dev/zero of=a bs=50000 count=1 status=none";  // one datagram
  mt::Run w = m.sh(send);
  EXPECT_NE(w.status, 0);
  EXPECT_NE(w.err.find("No space left on device"), std::string::npos) << w.err;
  ASSERT_TRUE(alive(m)) << m.daemon_stderr();
  EXPECT_EQ(m.sh("echo y > b && " + one("b")).out, "y\n");  // other mailboxes work
  EXPECT_EQ(m.xattr("a", "messages"), "0");

  // Room again: the same send goes through.
  ASSERT_EQ(::unlink((fs.dir() + "/filler").c_str()), 0);
  EXPECT_EQ(m.sh(send).status, 0);
  EXPECT_EQ(m.xattr("a", "bytes"), "50000");
  EXPECT_EQ(m.daemon_stderr().find("Bus error"), std::string::npos) << m.daemon_stderr();
}

// The newest segment file in the state directory (the mailbox made last).
std::string newest_segment(const mt::Mount& m) {
  mt::Run r = mt::sh("ls -t " + q(m.state_dir()) + " | grep '^m[0-9]*\\.[0-9]*$' | head -1");
  std::string name = r.out.substr(0, r.out.find('\n'));
  return name.empty() ? "" : m.state_dir() + "/" + name;
}

// A segment truncated under the daemon (to nothing, or to its header):
// that mailbox fails with EBADMSG, the daemon and the other mailboxes go on.
TEST(Safety, TruncatedSegmentMarksOnlyItsMailboxCorrupt) {
  mt::Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  for (const char* size : {"0", "4096"}) {
    SCOPED_TRACE(std::string("truncated to ") + size);
    const std::string name = std::string("t") + size;
    ASSERT_EQ(m.sh("touch " + name + " && echo one > " + name + " && echo two > " + name).status, 0);
    const std::string seg = newest_segment(m);
    ASSERT_FALSE(seg.empty());
    ASSERT_EQ(::truncate(seg.c_str(), std::stoll(size)), 0);

    mt::Run r = m.sh(one(name));
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("Bad message"), std::string::npos) << r.err;
    ASSERT_TRUE(alive(m)) << m.daemon_stderr();
    EXPECT_NE(m.sh("echo three > " + name).status, 0);
    EXPECT_EQ(m.sh("touch other && echo fine > other && " + one("other")).out, "fine\n");
    EXPECT_EQ(m.sh("rm " + name + " && rm other").status, 0);
  }
  EXPECT_NE(m.daemon_stderr().find("marked corrupt"), std::string::npos) << m.daemon_stderr();
}

}  // namespace

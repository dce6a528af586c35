// SPDX-License-Identifier: MIT
// The daemon's command line and life cycle: options, help, version, clean
// shutdown on signals, recovery of a mountpoint left by a crashed daemon.
#include <gtest/gtest.h>
#include <signal.h>

#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;
using mt::q;

TEST(Daemon, HelpAndVersion) {
  auto h = mt::sh(q(mt::daemon_binary()) + " --help");
  EXPECT_EQ(h.status, 0);
  for (const char* opt : {"capacity=", "max_message=", "framing=", "timeout_ms=", "max_bytes=", "state_dir=",
                          "root_mode=", "allow_other", "-f", "-d"})
    EXPECT_NE(h.out.find(opt), std::string::npos) << opt;
  auto v = mt::sh(q(mt::daemon_binary()) + " -V");
  EXPECT_EQ(v.status, 0);
  EXPECT_NE(v.out.find("mailboxfs "), std::string::npos) << v.out;
}

TEST(Daemon, BadOptionsAreOneClearLineAndExitTwo) {
  for (const char* o : {"capacity=many", "framing=packet", "max_message=0", "max_bytes=1", "timeout_ms=-5",
                        "root_mode=999", "no_such_option"}) {
    auto r = mt::sh("d=$(mktemp -d); " + q(mt::daemon_binary()) + " -f -o " + o +
                    " \"$d\"; rc=$?; rmdir \"$d\"; exit $rc");
    EXPECT_EQ(r.status, 2) << o << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << o << ": " << r.err;
  }
  auto r = mt::sh(q(mt::daemon_binary()));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("no mountpoint"), std::string::npos) << r.err;
}

// SIGTERM and SIGINT stop the daemon, unmount, and remove its shared memory;
// callers blocked at that moment get an error instead of hanging.
TEST(Daemon, SignalsUnmountCleanly) {
  for (int sig : {SIGTERM, SIGINT}) {
    Mount m;
    ASSERT_TRUE(m.ok());
    m.sh("touch box");
    Proc reader("cat box", m.dir());
    ASSERT_TRUE(m.wait_words("box", "blocked_receivers", 1));
    ASSERT_TRUE(m.stop(sig));
    EXPECT_TRUE(reader.exits());
    EXPECT_NE(reader.finish().status, 0);
    auto r = mt::sh("grep -c ' " + m.dir() + " ' /proc/mounts; ls " + q(m.state_dir()) + " 2>&1 | wc -l");
    EXPECT_EQ(r.out, "0\n1\n") << "still mounted or state left: " << r.out;  // ls prints one error line
  }
}

TEST(Daemon, StartingOnADeadMountpointRecoversIt) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("echo lost > box");
  ASSERT_TRUE(m.stop(SIGKILL));
  auto dead = mt::sh("ls " + q(m.dir()));
  EXPECT_NE(dead.err.find("Transport endpoint is not connected"), std::string::npos) << dead.err;
  // A new daemon on the same mountpoint and state directory.
  const std::string state = m.state_dir() + "-2";
  Proc second(q(mt::daemon_binary()) + " -f -o state_dir=" + q(state) + " " + q(m.dir()));
  // The dead mount answers ENOTCONN until the new daemon has replaced it.
  const bool up = mt::wait_until([&] { return mt::sh("ls " + q(m.dir())).status == 0 || !second.running(); }) &&
                  second.running();
  ASSERT_TRUE(up) << second.finish(100).err;
  auto r = mt::sh("cd " + q(m.dir()) + " && ls | wc -l && echo new > box && cat box");
  EXPECT_EQ(r.out, "0\nnew\n") << r.err;
  mt::sh("fusermount3 -u " + q(m.dir()));
  EXPECT_TRUE(second.exits());
  EXPECT_NE(second.finish().err.find("left by a daemon that died"), std::string::npos);
  mt::sh("rm -rf " + q(state));
}

TEST(Daemon, SecondDaemonOnTheSameStateIsRefusedAndHarmless) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("echo kept > box");
  auto r = mt::sh("d=$(mktemp -d); " + q(mt::daemon_binary()) + " -f -o state_dir=" + q(m.state_dir()) +
                  " \"$d\"; rc=$?; rmdir \"$d\"; exit $rc");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("in use by another mailboxfs"), std::string::npos) << r.err;
  EXPECT_EQ(m.sh("cat box").out, "kept\n");
}

}  // namespace

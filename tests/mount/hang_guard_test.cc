// SPDX-License-Identifier: MIT
// The suite's hang guard (hang_guard.cc), tried on a test that wedges on
// purpose: run as a child of this binary with a short guard, it must fail,
// say why, and end (its daemon killed, its mount cleaned up).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "harness.h"

namespace {

// Never run by the suite itself (DISABLED_): only by the test below, in a
// child. Its daemon is stopped, so the open's lookup is never answered.
TEST(HangGuardTarget, DISABLED_AnOpenOnAStoppedDaemon) {
  mt::Mount m;
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(::kill(m.daemon_pid(), SIGSTOP), 0);
  // A stop is asynchronous: until every thread has stopped, one could still
  // answer the open's lookup (ENOENT), and the test would not wedge.
  ASSERT_TRUE(mt::wait_stopped(m.daemon_pid()));
  std::fprintf(stderr, "about to block\n");
  const int fd = ::open(m.path("box").c_str(), O_RDONLY);  // returns once the guard killed the daemon
  const int err = errno;
  std::fprintf(stderr, "open returned %d (%s)\n", fd, fd < 0 ? strerror(err) : "");
  if (fd >= 0) ::close(fd);
}

TEST(HangGuard, AWedgedTestFailsItsDaemonsAreKilledAndItEnds) {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  ASSERT_GT(n, 0);
  self[n] = '\0';
  // A 3 s guard: on a machine so loaded that the child's mount is not up by
  // then, the guard ends the test during its set-up instead, which it must
  // do just as well (the checks below hold either way).
  mt::Proc child("MBX_TEST_HANG_MS=3000 " + mt::q(self) +
                 " --gtest_also_run_disabled_tests --gtest_filter=HangGuardTarget.* 2>&1; echo rc=$?");
  ASSERT_TRUE(child.exits()) << "the guard did not end the wedged test";  // the harness's hang guard
  const mt::Run r = child.finish();
  EXPECT_NE(r.out.find("hang guard: HangGuardTarget.DISABLED_AnOpenOnAStoppedDaemon still running"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("killing its daemons (1)"), std::string::npos) << r.out;  // the Mount's, still running
  if (r.out.find("about to block") != std::string::npos) {
    EXPECT_NE(r.out.find("open returned -1"), std::string::npos) << r.out;  // the kill ended the call
  }
  EXPECT_NE(r.out.find("[  FAILED  ] HangGuardTarget.DISABLED_AnOpenOnAStoppedDaemon"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rc=1"), std::string::npos) << r.out;
}

}  // namespace

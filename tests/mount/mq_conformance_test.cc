// SPDX-License-Identifier: MIT
// POSIX message queues, kernel and mailboxfs side by side: out/mq_conformance
// (one test per rule, tests/mq/conformance.cc) and out/mq_prodcons (an
// unmodified producer/consumer, tests/mq/prodcons.c) are plain <mqueue.h>
// programs. On the kernel's queues they prove the tests right; under
// LD_PRELOAD=libmailbox-mq.so with MAILBOXFS_MQ_ROOT on a mount they check
// the preload, and the producer/consumer must print the same as on the kernel.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "harness.h"

namespace {

using mt::q;

constexpr int kSuiteGuardMs = 10 * mt::kHang;  // the suite's own waits each have a hang guard

// The directory of this binary, where `make build-tests` puts the mq programs.
std::string out_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "out";
  std::string self(buf, n);
  return self.substr(0, self.rfind('/'));
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

long proc_long(const std::string& path) {
  std::ifstream f(path);
  long v = -1;
  f >> v;
  return v;
}

// The kernel's limits bind an unprivileged caller (queues of up to 6 messages of 128 bytes here).
std::string kernel_limits_problem() {
  if (!exists("/proc/sys/fs/mqueue/msg_max")) return "no POSIX message queues in this kernel";
  if (geteuid() == 0) return "";
  if (proc_long("/proc/sys/fs/mqueue/msg_max") < 6 || proc_long("/proc/sys/fs/mqueue/msgsize_max") < 128)
    return "/proc/sys/fs/mqueue limits below 6 messages of 128 bytes";
  return "";
}

// The failed tests' names and failure text of a gtest run.
std::string failures(const std::string& out) {
  std::istringstream in(out);
  std::string line, r;
  bool block = false;
  while (std::getline(in, line)) {
    if (line.rfind("[       OK", 0) == 0 || line.rfind("[ RUN", 0) == 0) block = false;
    if (line.find(": Failure") != std::string::npos) block = true;
    if (block || line.rfind("[  FAILED", 0) == 0) r += line + "\n";
  }
  return r;
}

// Runs a program under the preload with the queue root `root`.
mt::Run preloaded(const std::string& lib, const std::string& root, const std::string& cmd) {
  return mt::sh("LD_PRELOAD=" + q(lib) + " MAILBOXFS_MQ_ROOT=" + q(root) + " exec " + cmd, kSuiteGuardMs);
}

// A mount every user may reach (the suite's EACCES tests run as nobody).
class MqConformancePreload : public ::testing::Test {
 protected:
  void SetUp() override {
    lib_ = out_dir() + "/libmailbox-mq.so";
    if (!exists(lib_)) GTEST_SKIP() << lib_ << " is not in this build directory (a sanitizer build makes none)";
    m_ = std::make_unique<mt::Mount>("allow_other,root_mode=1777");
    ASSERT_TRUE(m_->ok()) << m_->daemon_stderr();
    const std::string tmp = m_->dir().substr(0, m_->dir().rfind('/'));
    ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
  }
  std::string lib_;
  std::unique_ptr<mt::Mount> m_;
};

TEST(MqConformanceKernel, ConformanceSuitePasses) {
  std::string why = kernel_limits_problem();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string bin = out_dir() + "/mq_conformance";
  ASSERT_TRUE(exists(bin)) << bin << " missing: make build-tests";
  mt::Run r = mt::sh("exec " + q(bin), kSuiteGuardMs);
  if (r.status == 77) GTEST_SKIP() << r.err;
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.status, 0) << failures(r.out) << r.err;
}

TEST(MqConformanceKernel, ProducerConsumerRuns) {
  std::string why = kernel_limits_problem();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string bin = out_dir() + "/mq_prodcons";
  ASSERT_TRUE(exists(bin)) << bin << " missing: make build-tests";
  mt::Run r = mt::sh("exec " + q(bin), kSuiteGuardMs);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("  got job 1 (prio 9), priority 9\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("round 3: signal SI_MESGQ, value 103\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("round 4: thread ran, value 200\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("producer exited with status 0\n"), std::string::npos) << r.out;
}

// The rules where mailboxfs differs from Linux on purpose (mailbox_mq(3),
// DIFFERENCES FROM THE KERNEL'S QUEUES), as a negative gtest filter; none
// today. The kernel pass runs them all.
const char* const kPreloadDifferences = "";

TEST_F(MqConformancePreload, ConformanceSuitePassesOnMailboxfs) {
  mt::Run r = preloaded(lib_, m_->dir(),
                        q(out_dir() + "/mq_conformance") + " --gtest_filter=-" + q(kPreloadDifferences));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.status, 0) << failures(r.out) << r.err << m_->daemon_stderr();
  EXPECT_EQ(m_->sh("ls -A").out, "") << "a test left a queue behind";
}

// Another user's queues go through the file (the segments are the daemon's
// user's). There FUSE ends every interrupted wait with EINTR, whatever the
// handler's SA_RESTART; the library reports it when a caught signal's
// handler lacks SA_RESTART and resumes the call otherwise. These rules have
// one kind of handler each; a program mixing both is mailbox_mq(3)'s BUGS.
TEST_F(MqConformancePreload, SignalRulesHoldThroughTheFileForAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  const char* rules =
      "MqSend.BlockedSendInterruptedBySignalIsEINTR:MqReceive.BlockedReceiveInterruptedBySignalIsEINTR:"
      "MqSignal.Timedreceive*:MqSignal.Timedsend*";
  mt::Run r = mt::sh("exec setpriv --reuid=65534 --regid=65534 --clear-groups env LD_PRELOAD=" + q(lib_) +
                         " MAILBOXFS_MQ_ROOT=" + q(m_->dir()) + " " + q(out_dir() + "/mq_conformance") +
                         " --gtest_filter=" + q(rules),
                     kSuiteGuardMs);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.status, 0) << failures(r.out) << r.err << m_->daemon_stderr();
  EXPECT_NE(r.out.find("[  PASSED  ] 6 tests."), std::string::npos) << r.out;
  EXPECT_EQ(m_->sh("ls -A").out, "") << "a test left a queue behind";
}

TEST_F(MqConformancePreload, ProducerConsumerPrintsWhatItPrintsOnTheKernel) {
  std::string why = kernel_limits_problem();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string bin = q(out_dir() + "/mq_prodcons");
  mt::Run kernel = mt::sh("exec " + bin, kSuiteGuardMs);
  ASSERT_EQ(kernel.status, 0) << kernel.err;
  mt::Run mbx = preloaded(lib_, m_->dir(), bin);
  EXPECT_EQ(mbx.status, 0) << mbx.err << m_->daemon_stderr();
  EXPECT_EQ(mbx.out, kernel.out);
  EXPECT_EQ(m_->sh("ls -A").out, "") << "mq_unlink left a mailbox";
}

}  // namespace

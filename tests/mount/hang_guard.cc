// SPDX-License-Identifier: MIT
// The suite's last line of defence against a wedged mount: a test still
// running kTestHang ms after it started (every wait of the harness has its
// own, shorter, hang guard: only a call the test process made itself on a
// mount, a read() or close(), can get here) fails, and the daemons it
// started are killed. A FUSE request in flight then ends with ENOTCONN, so
// the test goes on to its end and cleans up (unmounts, stops what it
// started). If it still has not ended kTestHang / 5 ms later, the binary
// exits: tests/run.sh counts that as a failure, and unmounts what is left.
// Never a claim about speed: no test comes near it, on however loaded a
// machine (the slowest take about 20 s). Only the daemons mt::Mount starts
// are killed: one a test starts itself (through mt::Proc, to restart it)
// is ended by the exit. The listener comes after gtest's printer, so a
// test failed by the guard may show "[ OK ]" before the failure line; the
// totals count it failed.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "harness.h"

namespace mt {

namespace {

constexpr int kDefaultTestHang = 300000;
// MBX_TEST_HANG_MS: shorter, for the test of the guard itself (hang_guard_test.cc).
const int kTestHang = [] {
  const char* e = std::getenv("MBX_TEST_HANG_MS");
  const int ms = e ? std::atoi(e) : 0;
  return ms > 0 ? ms : kDefaultTestHang;
}();

class HangGuard {
 public:
  static HangGuard& get() {
    static HangGuard* g = new HangGuard;  // never destroyed: its thread runs to the process's end
    return *g;
  }

  void add(pid_t pid) {
    std::lock_guard<std::mutex> g(mu_);
    daemons_.insert(pid);
  }
  void remove(pid_t pid) {
    std::lock_guard<std::mutex> g(mu_);
    daemons_.erase(pid);
  }

  void start(const ::testing::TestInfo& t) {
    std::lock_guard<std::mutex> g(mu_);
    name_ = std::string(t.test_suite_name()) + "." + t.name();
    deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTestHang);
    armed_ = true;
    fired_ = false;
    if (!thread_started_) {
      thread_started_ = true;
      // With every signal blocked (the thread inherits the mask): a test
      // that blocks a signal to sigwait() for it, or to have it queued,
      // must not see it delivered (and kill the process) here.
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      std::thread([this] { watch(); }).detach();
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    cv_.notify_all();
  }
  void end() {
    std::lock_guard<std::mutex> g(mu_);
    armed_ = false;
    cv_.notify_all();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      cv_.wait(g, [&] { return armed_; });
      if (cv_.wait_until(g, deadline_, [&] { return !armed_; })) continue;
      if (!fired_) {
        fired_ = true;
        std::fprintf(stderr, "hang guard: %s still running after %d ms: killing its daemons (%zu)\n", name_.c_str(),
                     kTestHang, daemons_.size());
        for (pid_t p : daemons_) ::kill(p, SIGKILL);
        // gtest's assertions may be made from any thread (it uses pthreads here).
        ADD_FAILURE() << "hang guard: the test was still running after " << kTestHang
                      << " ms; its daemons were killed";
        deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTestHang / 5);
        continue;
      }
      std::fprintf(stderr, "hang guard: %s did not end after its daemons were killed: exiting\n", name_.c_str());
      std::fflush(stderr);
      ::_exit(1);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::set<pid_t> daemons_;
  std::string name_;
  std::chrono::steady_clock::time_point deadline_{};
  bool armed_ = false, fired_ = false, thread_started_ = false;
};

// Owned (and deleted at the end) by gtest; the guard itself never is.
class Listener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo& t) override { HangGuard::get().start(t); }
  void OnTestEnd(const ::testing::TestInfo&) override { HangGuard::get().end(); }
};

[[maybe_unused]] const bool installed = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new Listener);
  return true;
}();

}  // namespace

void guard_daemon(pid_t pid) { HangGuard::get().add(pid); }
void unguard_daemon(pid_t pid) { HangGuard::get().remove(pid); }

}  // namespace mt

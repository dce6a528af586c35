// SPDX-License-Identifier: MIT
// The per-mount pieces: state directory and control segment, Mount::open,
// the timer thread, and the /proc probes of dying threads.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "base/proc.h"
#include "core/mount.h"
#include "core/timers.h"
#include "shm/segment.h"
#include "shm/state_dir.h"
#include "test_util.h"

namespace mbx {
namespace {

using namespace std::chrono_literals;
using namespace mbx::proc;

TEST(StateDir, CreatesPrivateDirAndControl) {
  const std::string dir = ut::fresh_path();
  {
    auto s = StateDir::open(dir, 123456);
    ASSERT_TRUE(s.ok()) << to_errno(s.error());
    struct stat st;
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    layout::ControlHeader* c = s->control();
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->magic, layout::kControlMagic);
    EXPECT_EQ(c->version, layout::kVersion);
    EXPECT_EQ(c->daemon_pid, ::getpid());
    EXPECT_EQ(c->quota_max, 123456u);
    EXPECT_EQ(c->quota_used.load(), 0u);
    EXPECT_TRUE(ut::path_exists(dir + "/control"));
    EXPECT_EQ(s->segment_path(7, 2), dir + "/m7.2");
  }
  EXPECT_FALSE(ut::path_exists(dir));  // removed with everything in it
}

TEST(StateDir, TakesOverADeadDaemonsDirectory) {
  const std::string dir = ut::fresh_path();
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  std::ofstream(dir + "/m3.0") << "stale segment";
  std::ofstream(dir + "/control") << "stale control";
  {
    auto s = StateDir::open(dir, 4096);
    ASSERT_TRUE(s.ok()) << to_errno(s.error());
    EXPECT_FALSE(ut::path_exists(dir + "/m3.0"));
    EXPECT_EQ(s->control()->magic, layout::kControlMagic);
    struct stat st;
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);  // tightened
  }
  EXPECT_FALSE(ut::path_exists(dir));
}

TEST(StateDir, RefusesWhatIsNotADirectory) {
  ut::TempDir d;
  std::ofstream(d.file("file")) << "x";
  EXPECT_EQ(StateDir::open(d.file("file"), 4096).error(), Errc::perm);
  ASSERT_EQ(::symlink(d.path().c_str(), d.file("link").c_str()), 0);
  EXPECT_EQ(StateDir::open(d.file("link"), 4096).error(), Errc::perm);
  EXPECT_EQ(StateDir::open(d.file("no/such/dir"), 4096).error(), Errc::not_found);
  EXPECT_TRUE(ut::path_exists(d.file("file")));
}

TEST(StateDir, SecondOpenWhileHeldIsRefused) {
  const std::string dir = ut::fresh_path();
  auto first = StateDir::open(dir, 4096);
  ASSERT_TRUE(first.ok());
  std::ofstream(dir + "/m1.0") << "live segment";
  EXPECT_EQ(StateDir::open(dir, 4096).error(), Errc::exists);
  // Regression: the refused StateDir must not clear the live owner's files.
  EXPECT_TRUE(ut::path_exists(dir + "/control"));
  EXPECT_TRUE(ut::path_exists(dir + "/m1.0"));
  EXPECT_TRUE(ut::path_exists(dir + "/lock"));
}

TEST(StateDir, DefaultPath) {
  const std::string a = default_state_dir("/mnt/a"), b = default_state_dir("/mnt/b");
  const std::string prefix = "/dev/shm/mailboxfs-" + std::to_string(::getuid()) + "-";
  EXPECT_EQ(a.rfind(prefix, 0), 0u) << a;
  EXPECT_EQ(a.size(), prefix.size() + 16);
  EXPECT_NE(a, b);
  EXPECT_EQ(a, default_state_dir("/mnt/a"));
}

TEST(MountOpen, OpensStartsAndCleansUp) {
  MountConfig cfg;
  cfg.state_dir = ut::fresh_path();
  cfg.max_bytes = 1 << 20;
  auto m = Mount::open(cfg);
  ASSERT_TRUE(m.ok());
  (*m)->start();
  EXPECT_EQ((*m)->config().max_bytes, 1u << 20);
  EXPECT_EQ((*m)->quota_used(), 0u);
  EXPECT_EQ((*m)->state().control()->quota_max, 1u << 20);
  auto box = (*m)->create_mailbox(1, Settings{});
  ASSERT_TRUE(box.ok());
  const std::string seg = (*box)->info().locator.value();
  EXPECT_EQ(seg, cfg.state_dir + "/m1.0");
  EXPECT_EQ((*m)->create_mailbox(1, Settings{}).error(), Errc::exists);  // segment names are unique
  EXPECT_EQ(Mount::open(cfg).error(), Errc::exists);
  EXPECT_TRUE(ut::path_exists(seg));
  box.value().reset();
  EXPECT_FALSE(ut::path_exists(seg));  // the last reference frees the segment
  m.value().reset();
  EXPECT_FALSE(ut::path_exists(cfg.state_dir));
}

// Pages of a segment file's whole mapping in memory.
size_t resident_pages(const Segment& s) {
  const size_t len = layout::kHeaderSize + s.data_size();
  std::vector<unsigned char> v(len / 4096);
  if (::mincore(s.header(), len, v.data()) != 0) return SIZE_MAX;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

// The idle sweep gives an empty mailbox's memory back once nobody (the daemon
// or a library client) has sent or received since the sweep before; a
// mailbox with traffic between two sweeps, or with a message queued, keeps
// it; the client that had it mapped all along goes on working.
TEST(MountIdle, SweepTrimsOnlyEmptyMailboxesUntouchedSinceTheLastSweep) {
  MountConfig cfg;
  cfg.state_dir = ut::fresh_path();
  cfg.idle_sweep = 0ms;  // sweeps run by hand below
  auto m = Mount::open(cfg);
  ASSERT_TRUE(m.ok());
  (*m)->start();
  auto box = (*m)->create_mailbox(1, Settings{});  // a default mailbox: capacity 64, max_message 1 MiB
  ASSERT_TRUE(box.ok());
  auto client = Segment::attach((*box)->info().locator.value());
  ASSERT_TRUE(client.ok());
  client->set_control((*m)->backend().control(), /*batch_sends=*/true);
  uint32_t next = 0, got = 0;
  auto traffic = [&](int n) {  // the client sends and receives n checksummed messages
    for (int i = 0; i < n; i++) {
      const std::string msg = ut::make_msg(1, next, 4000);
      ASSERT_TRUE(client->push(msg.data(), msg.size(), {}, realtime_ns()).ok());
      next++;
      std::string out;
      ASSERT_TRUE(client->pop(out, realtime_ns()).ok());
      ASSERT_EQ(out, ut::make_msg(1, got++, 4000));
    }
  };
  traffic(100);
  const size_t used = resident_pages(*client);
  ASSERT_GT(used, 1u);
  (*m)->sweep_idle();  // the first look: nothing known of before
  EXPECT_EQ(resident_pages(*client), used);
  traffic(1);
  (*m)->sweep_idle();  // traffic since the last sweep
  EXPECT_GE(resident_pages(*client), used);
  (*m)->sweep_idle();  // none since: given back, the header's page stays
  EXPECT_EQ(resident_pages(*client), 1u);
  traffic(100);  // the client mapped during the trim goes on
  const std::string queued = ut::make_msg(2, 0);
  ASSERT_TRUE(client->push(queued.data(), queued.size(), {}, realtime_ns()).ok());
  (*m)->sweep_idle();
  (*m)->sweep_idle();  // untouched, but not empty
  EXPECT_GT(resident_pages(*client), 1u);
  std::string out;
  ASSERT_TRUE(client->pop(out, realtime_ns()).ok());
  EXPECT_EQ(out, queued);
  (*m)->sweep_idle();
  (*m)->sweep_idle();
  EXPECT_EQ(resident_pages(*client), 1u);
  const QueueStats st = (*box)->info().seg;
  EXPECT_EQ(st.total_sent, 202u);
  EXPECT_EQ(st.total_received, 202u);
  EXPECT_EQ(st.lost, 0u);
  EXPECT_EQ((*m)->quota_used(), 0u);
  client = Segment();
  box.value().reset();
  m.value().reset();
  EXPECT_FALSE(ut::path_exists(cfg.state_dir));
}

// The timer thread runs the sweep on its own (cfg.idle_sweep): an emptied
// mailbox's memory goes without anyone asking.
TEST(MountIdle, TimerSweepsByItself) {
  MountConfig cfg;
  cfg.state_dir = ut::fresh_path();
  cfg.idle_sweep = 10ms;
  auto m = Mount::open(cfg);
  ASSERT_TRUE(m.ok());
  (*m)->start();
  auto box = (*m)->create_mailbox(1, Settings{});
  ASSERT_TRUE(box.ok());
  auto client = Segment::attach((*box)->info().locator.value());
  ASSERT_TRUE(client.ok());
  const std::string msg(4000, 'x');
  std::string out;
  ASSERT_TRUE(client->push(msg.data(), msg.size(), {}, realtime_ns()).ok());
  ASSERT_TRUE(client->pop(out, realtime_ns()).ok());
  const auto give_up = ut::Clock::now() + 20s;  // hang guard only
  while (resident_pages(*client) > 1 && ut::Clock::now() < give_up) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(resident_pages(*client), 1u);
  client = Segment();
  box.value().reset();
  m.value().reset();
}

// The timer thread sweeps every millisecond while the daemon's own sends
// and receives go on in this thread: every message comes back whole and in
// order (and, under TSan, the sweep shares nothing unlocked with them).
TEST(MountIdle, SweepsBesideDaemonTraffic) {
  MountConfig cfg;
  cfg.state_dir = ut::fresh_path();
  cfg.idle_sweep = 1ms;
  auto m = Mount::open(cfg);
  ASSERT_TRUE(m.ok());
  (*m)->start();
  Settings s;
  s.framing = Framing::datagram;
  auto box = (*m)->create_mailbox(1, s);
  ASSERT_TRUE(box.ok());
  auto h = (*box)->open(true, true, true);
  for (uint32_t i = 0; i < 3000; i++) {
    const std::string msg = ut::make_msg(3, i);
    auto w = (*box)->write(*h, msg.data(), msg.size(), true, Sender{1, 2, 3}, nullptr);
    ASSERT_TRUE(w.has_value() && w->err == Errc::ok) << i;
    auto r = (*box)->read(*h, 4096, true, nullptr);
    ASSERT_TRUE(r.has_value() && r->err == Errc::ok) << i;
    ASSERT_EQ(r->data, msg) << i;
    if (i % 500 == 0) std::this_thread::sleep_for(5ms);  // idle spells the sweep may trim
  }
  (*box)->release(*h);
  h.reset();
  box.value().reset();
  m.value().reset();
  EXPECT_FALSE(ut::path_exists(cfg.state_dir));
}

TEST(Timers, RunInDeadlineOrderAndCancel) {
  Timers t;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> ran;
  auto note = [&](int i) {
    return [&, i] {
      std::lock_guard<std::mutex> g(mu);
      ran.push_back(i);
      cv.notify_all();
    };
  };
  const auto now = Timers::Clock::now();
  t.add(now + 60ms, note(3));
  const uint64_t gone = t.add(now + 40ms, note(99));
  t.add(now + 20ms, note(2));
  t.add(now, note(1));
  t.cancel(gone);
  t.cancel(123456);  // unknown: harmless
  // A callback may use the timers itself (no lock is held while it runs).
  t.add(now + 10ms, [&] { t.add(Timers::Clock::now() + 100ms, note(4)); });
  std::unique_lock<std::mutex> g(mu);
  ASSERT_TRUE(cv.wait_for(g, 2s, [&] { return ran.size() >= 4; }));
  g.unlock();
  std::this_thread::sleep_for(50ms);  // the cancelled one (40 ms) would have run by now
  g.lock();
  EXPECT_EQ(ran, (std::vector<int>{1, 2, 3, 4}));
}

TEST(Timers, DestroyWithPendingTimers) {
  std::atomic<int> n{0};
  {
    Timers t;
    t.add(Timers::Clock::now() + 1h, [&] { n++; });
  }
  EXPECT_EQ(n.load(), 0);
}

TEST(Timers, CancelTheTimerItWaitsFor) {
  // Regression: cancel() erases the entry run() is waiting for (a
  // use-after-free that only an ASAN=1 build shows).
  std::atomic<int> n{0};
  Timers t;
  const uint64_t id = t.add(Timers::Clock::now() + 50ms, [&] { n++; });
  std::this_thread::sleep_for(10ms);  // the timer thread now waits for it
  t.cancel(id);
  std::this_thread::sleep_for(80ms);  // it wakes at the old deadline
  EXPECT_EQ(n.load(), 0);
}

TEST(ProcProbes, DyingAndKilledBySignal) {
  EXPECT_FALSE(thread_dying(0));
  EXPECT_FALSE(thread_dying(-1));
  EXPECT_FALSE(thread_dying(::getpid()));
  EXPECT_FALSE(killed_by_signal(::getpid()));
  EXPECT_FALSE(killed_by_signal(0));
  // Zombies keep their exit code in /proc/<pid>/stat until reaped.
  auto zombie = [](int sig) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (sig == 0) ::_exit(3);
      ::pause();
      ::_exit(0);
    }
    if (sig) ::kill(pid, sig);
    const auto end = ut::Clock::now() + 2s;
    siginfo_t si{};
    while (ut::Clock::now() < end) {
      si.si_pid = 0;
      if (::waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) break;
      std::this_thread::sleep_for(1ms);
    }
    return pid;
  };
  pid_t killed = zombie(SIGTERM);
  EXPECT_TRUE(killed_by_signal(killed));
  EXPECT_TRUE(thread_dying(killed));  // exiting: a reply to it would be lost
  EXPECT_EQ(ut::wait_child(killed) & 0x7f, SIGTERM);
  pid_t exited = zombie(0);
  EXPECT_FALSE(killed_by_signal(exited));
  ut::wait_child(exited);
  EXPECT_FALSE(killed_by_signal(exited));  // gone
}

// The kept descriptor follows its thread: alive, then killed (a zombie), then
// reaped, the probe answers as a fresh read of /proc would.
TEST(ProcProbes, ThreadProbeKeepsTheAnswerOfAFreshRead) {
  ThreadProbe probe;
  EXPECT_FALSE(probe.dying(0));
  EXPECT_FALSE(probe.dying(-1));
  EXPECT_FALSE(probe.dying(::getpid()));
  EXPECT_FALSE(probe.dying(::getpid()));  // through the kept descriptor
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  EXPECT_FALSE(probe.dying(child));
  EXPECT_FALSE(probe.dying(child));
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  bool zombie = false;
  for (const auto end = ut::Clock::now() + 2s; !zombie && ut::Clock::now() < end;) {
    siginfo_t si{};
    zombie = ::waitid(P_PID, child, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == child;
    if (!zombie) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(zombie);
  EXPECT_TRUE(probe.dying(child));  // the same descriptor now reads an exiting thread
  EXPECT_EQ(thread_dying(child), probe.dying(child));
  ut::wait_child(child);
  EXPECT_FALSE(probe.dying(child));  // gone: its descriptor fails, and no thread has the number
  EXPECT_FALSE(thread_dying(child));
  // Many threads: the kept set stays bounded and every answer stays right.
  for (int i = 0; i < 200; i++) EXPECT_FALSE(probe.dying(::getpid()));
}

}  // namespace
}  // namespace mbx

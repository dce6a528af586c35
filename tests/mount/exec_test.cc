// SPDX-License-Identifier: MIT
// A file-framed message is committed at close (design.md §10 item 6): a
// writer killed by a signal sends nothing, every other close sends, and
// among them the close that execve(2) does of a close-on-exec descriptor.
// That close is flushed from inside execve with the process's exec locks
// held, so the daemon must not read anything of the writer that waits for
// them (design.md §2 "Killed writers"); these tests hang on a daemon that
// does, and then free the mount by aborting its FUSE connection.
// Real processes forked from the test; deadlines are hang guards only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "harness.h"

namespace {

using mt::Mount;

// /sys/fs/fuse/connections/<n>/abort of the mount at `dir` (n is the minor
// of its device), found before anything can wedge it; "" without fusectl.
std::string abort_file(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return "";
  return "/sys/fs/fuse/connections/" + std::to_string(minor(st.st_dev)) + "/abort";
}

// Waits for child `p` (hang guard). On a hang (a wedged flush), frees the
// child and the daemon's worker by aborting the connection (or, without
// fusectl mounted, by killing the daemon, which closes it), then reaps the
// child: -1. Otherwise its exit status (128 + signal if killed).
int reap_or_abort(pid_t p, Mount& m, const std::string& abort) {
  const int st = mt::reap(p, mt::kHang);
  if (st != -1) return st;
  const int fd = ::open(abort.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::write(fd, "1", 1) != 1) m.stop(SIGKILL);
  if (fd >= 0) ::close(fd);
  mt::finish(p);
  return -1;
}

// In a child: opens `path` close-on-exec and writes `msg` without closing.
int open_and_write(const std::string& path, const char* msg) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  return ::write(fd, msg, std::strlen(msg)) == static_cast<ssize_t>(std::strlen(msg)) ? fd : -1;
}

[[noreturn]] void exec_true() {
  ::execl("/bin/true", "true", static_cast<char*>(nullptr));
  ::_exit(127);
}

std::string messages(const Mount& m, const char* box) { return m.xattr(box, "messages"); }

class ExecWriter : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(m_.ok()) << m_.daemon_stderr();
    ASSERT_EQ(m_.sh("touch box").status, 0);
    abort_ = abort_file(m_.dir());
    box_ = m_.path("box");
  }
  Mount m_;
  std::string abort_, box_;
};

// The exec closes the descriptors like any close: each message is sent, whole.
TEST_F(ExecWriter, ExecWithUnsentCloseOnExecDescriptorsSendsTheirMessages) {
  const std::string box = box_;
  const pid_t p = mt::child([&] {
    const int a = open_and_write(box, "one");
    const int b = open_and_write(box, "two, ");
    if (a < 0 || b < 0 || ::write(b, "in two writes", 13) != 13) return 120;
    exec_true();
  });
  ASSERT_EQ(reap_or_abort(p, m_, abort_), 0) << "the exec never completed: its close-on-exec flush wedged";
  EXPECT_EQ(messages(m_, "box"), "2");
  const std::string got = m_.sh("cat box; echo; cat box").out;
  EXPECT_TRUE(got == "one\ntwo, in two writes" || got == "two, in two writes\none") << got;
}

struct Threads {
  std::string box;
  int fd = -1;
  int written[2] = {-1, -1};  // the writer says it has written
  int hold[2] = {-1, -1};     // never written: holds the other thread until the exec
};

// Another thread writes, the main thread execs (de_thread kills the writer).
TEST_F(ExecWriter, AnotherThreadWritesTheMainThreadExecs) {
  const std::string box = box_;
  const pid_t p = mt::child([&] {
    static Threads t;
    t.box = box;
    if (::pipe(t.written) != 0 || ::pipe(t.hold) != 0) return 120;
    pthread_t th;
    auto writer = +[](void*) -> void* {
      t.fd = open_and_write(t.box, "from a thread");
      char c = t.fd < 0 ? 'n' : 'y';
      (void)!::write(t.written[1], &c, 1);
      (void)!::read(t.hold[0], &c, 1);  // until killed by the exec
      return nullptr;
    };
    if (pthread_create(&th, nullptr, writer, nullptr) != 0) return 121;
    char c = 0;
    if (::read(t.written[0], &c, 1) != 1 || c != 'y') return 122;
    exec_true();
  });
  ASSERT_EQ(reap_or_abort(p, m_, abort_), 0) << "the exec never completed: its close-on-exec flush wedged";
  EXPECT_EQ(messages(m_, "box"), "1");
  EXPECT_EQ(m_.sh("cat box").out, "from a thread");
}

// The main thread writes, another thread execs (it takes over the process id).
TEST_F(ExecWriter, TheMainThreadWritesAnotherThreadExecs) {
  const std::string box = box_;
  const pid_t p = mt::child([&] {
    if (open_and_write(box, "from the main thread") < 0) return 120;
    pthread_t th;
    if (pthread_create(
            &th, nullptr, +[](void*) -> void* { exec_true(); }, nullptr) != 0)
      return 121;
    for (;;) ::pause();  // until killed by the exec
  });
  ASSERT_EQ(reap_or_abort(p, m_, abort_), 0) << "the exec never completed: its close-on-exec flush wedged";
  EXPECT_EQ(messages(m_, "box"), "1");
  EXPECT_EQ(m_.sh("cat box").out, "from the main thread");
}

// An exec whose close meets a full mailbox waits in the daemon like any
// close, then sends once a receiver makes room.
TEST(ExecWriterFull, TheExecsCloseWaitsForRoomThenSends) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("echo first > box").status, 0);
  const std::string abort = abort_file(m.dir());
  const std::string box = m.path("box");
  const pid_t p = mt::child([&] {
    if (open_and_write(box, "second") < 0) return 120;
    exec_true();
  });
  // Parked: listed by the daemon. Read with getxattr only: the writer holds
  // its exec locks while parked, and /proc/<pid>/stat (what the harness's
  // process-tree walk reads) waits for them.
  const std::string want = std::to_string(p);
  const bool parked = mt::wait_until([&] {
    char buf[4096];
    const ssize_t n = ::getxattr(box.c_str(), "user.mailbox.blocked_senders", buf, sizeof buf);
    return n > 0 && (" " + std::string(buf, size_t(n)) + " ").find(" " + want + " ") != std::string::npos;
  });
  EXPECT_TRUE(parked) << "the exec's close was never parked";
  EXPECT_EQ(m.sh("cat box").out, "first\n");
  ASSERT_EQ(reap_or_abort(p, m, abort), 0) << "the exec never completed";
  EXPECT_EQ(m.sh("cat box").out, "second");
}

// ---- the other closes, unchanged --------------------------------------------

// A writer killed by a signal, with unsent bytes: nothing is sent.
void killed_writer_sends_nothing(int sig, bool threaded) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box").status, 0);
  const std::string abort = abort_file(m.dir());
  const std::string box = m.path("box");
  mt::Ready ready;
  const pid_t p = mt::child([&] {
    static std::string path;
    static mt::Ready* r;
    path = box;
    r = &ready;
    auto write_then_wait = +[](void*) -> void* {
      if (open_and_write(path, "unfinished") < 0) ::_exit(120);
      r->say();
      for (;;) ::pause();
    };
    if (!threaded) write_then_wait(nullptr);
    pthread_t th;
    if (pthread_create(&th, nullptr, write_then_wait, nullptr) != 0) return 121;
    for (;;) ::pause();
  });
  ASSERT_TRUE(ready.wait()) << "the writer never wrote";
  ASSERT_EQ(::kill(p, sig), 0);
  EXPECT_EQ(reap_or_abort(p, m, abort), 128 + sig);
  EXPECT_EQ(messages(m, "box"), "0");
  EXPECT_EQ(m.xattr("box", "sent"), "0");
}

TEST(KilledWriter, SigkillSendsNothing) { killed_writer_sends_nothing(SIGKILL, false); }
TEST(KilledWriter, SigtermSendsNothing) { killed_writer_sends_nothing(SIGTERM, false); }
TEST(KilledWriter, SigkillOfAThreadedWriterSendsNothing) { killed_writer_sends_nothing(SIGKILL, true); }

// exit_group(2) without closing (_exit: no atexit handlers of the forked
// test), from the main thread or another one: a normal close, sent.
void exiting_writer_sends(bool from_thread) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box").status, 0);
  const std::string abort = abort_file(m.dir());
  const std::string box = m.path("box");
  const pid_t p = mt::child([&] {
    if (open_and_write(box, "finished") < 0) return 120;
    if (!from_thread) ::_exit(0);
    pthread_t th;
    if (pthread_create(
            &th, nullptr, +[](void*) -> void* { ::_exit(0); }, nullptr) != 0)
      return 121;
    for (;;) ::pause();
  });
  EXPECT_EQ(reap_or_abort(p, m, abort), 0);
  EXPECT_EQ(messages(m, "box"), "1");
  EXPECT_EQ(m.sh("cat box").out, "finished");
}

TEST(KilledWriter, ExitWithoutCloseSends) { exiting_writer_sends(false); }
TEST(KilledWriter, ExitFromAnotherThreadSends) { exiting_writer_sends(true); }

}  // namespace

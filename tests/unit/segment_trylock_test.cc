// Segment in no_wait mode (the daemon's): a lock another process holds is
// never waited for (contended, nothing changed), a lock whose word names no
// participant or a header that no longer matches is corrupt, and counters are
// still read while a lock is held.
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "shm/segment.h"
#include "test_util.h"

namespace ut {
inline std::string exe_of(pid_t p) {
  char buf[256] = {};
  ssize_t n = ::readlink(("/proc/" + std::to_string(p) + "/exe").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}
// Polls `pred` until it holds or 10 s pass (a hang guard).
template <class F>
bool wait_for(F pred) {
  for (auto end = Clock::now() + 10s; Clock::now() < end;) {
    if (pred()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return pred();
}
}  // namespace ut

namespace mbx {
namespace {

using ut::SharedControl;
using ut::TempDir;

// A child that attaches `path`, reserves a message (holding send_lock) and
// waits for the parent to close `go`, then commits. Returns its pid once the
// reservation is held.
pid_t hold_send_lock(const std::string& path, SharedControl& ctl, int* go_write) {
  int ready[2], go[2];
  if (::pipe(ready) != 0 || ::pipe(go) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    ::close(go[1]);
    auto seg = Segment::attach(path);
    if (!seg) ::_exit(10);
    seg->set_control(ctl.get());
    auto r = seg->reserve(3, Sender{}, 0);
    if (!r) ::_exit(11);
    std::memcpy(*r, "abc", 3);
    if (::write(ready[1], "r", 1) != 1) ::_exit(12);
    char c;
    (void)::read(go[0], &c, 1);  // EOF when the parent lets go
    seg->commit_reserved();
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(go[0]);
  char c;
  if (::read(ready[0], &c, 1) != 1) pid = -1;
  ::close(ready[0]);
  *go_write = go[1];
  return pid;
}

TEST(SegmentNoWait, ALockHeldByAnotherProcessIsContendedAndChangesNothing) {
  TempDir d;
  SharedControl ctl;
  const std::string path = d.file("s");
  Segment seg = ut::make_segment(path, 8, 64, ctl);
  ASSERT_TRUE(seg.push("one", 3, {}, 0).ok());
  seg.set_no_wait(true);
  int go = -1;
  const pid_t holder = hold_send_lock(path, ctl, &go);
  ASSERT_GT(holder, 0);
  EXPECT_EQ(seg.push("two", 3, {}, 0).error(), Errc::contended);
  EXPECT_FALSE(seg.corrupt());
  SegmentStats st = seg.stats();  // read without the locks
  EXPECT_EQ(st.count, 1u);
  EXPECT_FALSE(seg.full());
  EXPECT_EQ(seg.max_queued_len(), 3u);  // recv_lock is free
  EXPECT_EQ(seg.discard_all(), Errc::contended);
  std::vector<Segment::Taken> taken;
  EXPECT_EQ(seg.retire_and_take(taken).error(), Errc::contended);
  EXPECT_EQ(seg.header()->state.load(), layout::kLive);
  std::string out;
  EXPECT_TRUE(seg.pop(out, 0).ok());  // the receive half is independent
  EXPECT_EQ(out, "one");
  ::close(go);
  int status = 0;
  ASSERT_EQ(::waitpid(holder, &status, 0), holder);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(seg.push("two", 3, {}, 0).ok());  // let go: the lock is taken again
  EXPECT_EQ(seg.stats().count, 2u);
}

TEST(SegmentNoWait, ALockWordNamingNoThreadIsCorrupt) {
  TempDir d;
  SharedControl ctl;
  Segment seg = ut::make_segment(d.file("s"), 8, 64, ctl);
  seg.set_no_wait(true);
  // A scribble: the word names a thread id that no thread has (above pid_max).
  seg.header()->send_lock.__data.__lock = 0x3ffffff0;
  EXPECT_EQ(seg.push("x", 1, {}, 0).error(), Errc::bad_message);
  EXPECT_TRUE(seg.corrupt());
}

TEST(SegmentNoWait, ALockWordNamingAThreadThatDoesNotMapTheSegmentIsCorrupt) {
  TempDir d;
  SharedControl ctl;
  Segment seg = ut::make_segment(d.file("s"), 8, 64, ctl);
  seg.set_no_wait(true);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const pid_t other = ::fork();  // alive, and no participant: exec drops the mapping
  if (other == 0) {
    ::dup2(p[0], 0);
    ::close(p[1]);
    ::execlp("cat", "cat", static_cast<char*>(nullptr));  // until the parent closes the pipe
    ::_exit(127);
  }
  ::close(p[0]);
  ASSERT_TRUE(ut::wait_for([&] { return ut::exe_of(other).find("cat") != std::string::npos; }));
  seg.header()->recv_lock.__data.__lock = other;
  std::string out;
  EXPECT_EQ(seg.pop(out, 0).error(), Errc::bad_message);
  EXPECT_TRUE(seg.corrupt());
  ::close(p[1]);
  ::waitpid(other, nullptr, 0);
}

TEST(SegmentNoWait, AScribbledHeaderOrMutexKindIsCorrupt) {
  TempDir d;
  SharedControl ctl;
  for (int c = 0; c < 3; c++) {
    Segment seg = ut::make_segment(d.file("s" + std::to_string(c)), 8, 64, ctl);
    seg.set_no_wait(true);
    if (c == 0) seg.header()->data_size ^= 1ull << 20;
    if (c == 1) seg.header()->send_lock.__data.__kind ^= 1;  // another mutex type
    if (c == 2) seg.header()->state.store(77);
    EXPECT_EQ(seg.push("x", 1, {}, 0).error(), Errc::bad_message) << c;
    EXPECT_TRUE(seg.corrupt()) << c;
  }
}

}  // namespace
}  // namespace mbx

// A participant killed at any instruction of a receive or a send: a child
// process is single-stepped (ptrace) k instructions into the operation and
// SIGKILLed, for every k, and the segment is then attached afresh (recovering
// from the dead lock holder). It must never be corrupt, and at most the one
// message the child had in its hands may be missing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "shm/segment.h"
#include "test_util.h"

namespace mbx {
namespace {

using ut::SharedControl;
using ut::TempDir;

constexpr uint64_t kChunk = 256 * 1024;  // Segment::kReleaseChunk
constexpr size_t kBody = 72;             // messages of 16..88 bytes, as in issue 17

// wrap: a push that wraps early (layout version 5). take: a receive of a
// message of higher priority than the oldest, which leaves a tombstone;
// pass: a receive of the oldest that passes a tombstone (layout version 6).
enum class Op { pop, view, push, wrap, take, pass };

// {producer, index} of an intact make_msg(.., kBody) message, or nullopt.
std::optional<std::pair<uint32_t, uint32_t>> check(const std::string& m) {
  if (m.size() < 16) return std::nullopt;
  uint32_t prod, i;
  std::memcpy(&prod, &m[0], 4);
  std::memcpy(&i, &m[4], 4);
  if (m != ut::make_msg(prod, i, kBody)) return std::nullopt;
  return std::make_pair(prod, i);
}

// The segment's bytes as they were before the operation, put back before each trial.
struct Snapshot {
  std::string bytes;
  void take(const std::string& path, size_t n) {
    bytes.assign(n, '\0');
    UniqueFd fd(::open(path.c_str(), O_RDONLY));
    ASSERT_EQ(::pread(fd.get(), bytes.data(), n, 0), static_cast<ssize_t>(n));
  }
  void restore(const std::string& path) const {
    UniqueFd fd(::open(path.c_str(), O_WRONLY));
    ASSERT_EQ(::pwrite(fd.get(), bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
};

// The operation. Run once by the test process before it forks the children,
// so that they run it with every lazily bound library call already resolved
// (the same instructions each time).
bool operate(Segment& seg, Op op, bool stop) {
  const int64_t now = realtime_ns();
  const std::string m = ut::make_msg(1, 0, kBody);
  char buf[256];
  if (stop) ::raise(SIGSTOP);  // the tracer counts instructions from here
  bool ok = false;
  if (op == Op::pop || op == Op::take || op == Op::pass) {
    ok = seg.pop_into(buf, sizeof buf, now).ok();
  } else if (op == Op::view) {
    auto v = seg.view(now);
    if ((ok = v.ok())) seg.release_view();
  } else {
    ok = seg.push(m.data(), m.size(), Sender{1, 0, 0}, now).ok();
  }
  if (stop) ::raise(SIGSTOP);  // the end of the operation
  return ok;
}

// Child: attaches, stops for the tracer, performs the operation, stops again.
[[noreturn]] void child(const std::string& path, SharedControl& ctl, Op op) {
  if (::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != 0) ::_exit(20);
  auto seg = Segment::attach(path);
  if (!seg) ::_exit(21);
  seg->set_control(ctl.get());
  ::_exit(operate(*seg, op, true) ? 0 : 22);
}

// Single-steps the stopped child through the operation, recording the address
// of each instruction it is about to execute, up to its end-of-operation stop.
std::vector<uint64_t> trace(pid_t pid) {
  std::vector<uint64_t> rips;
  for (;;) {
    user_regs_struct regs;
    if (::ptrace(PTRACE_GETREGS, pid, nullptr, &regs) != 0) return {};
    if (::ptrace(PTRACE_SINGLESTEP, pid, nullptr, nullptr) != 0) return {};
    int st;
    if (::waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st)) return {};
    if (WSTOPSIG(st) == SIGSTOP) return rips;  // raise(SIGSTOP) after the operation
    rips.push_back(regs.rip);
  }
}

// Runs the stopped child to the point where it has executed exactly k
// instructions of the operation (rips from trace()): a breakpoint on
// rips[k], stepped over as many times as that address ran before. Single-
// stepping all k is quadratic over the trials.
bool run_to(pid_t pid, const std::vector<uint64_t>& rips, size_t k) {
  int st;
  if (k == rips.size()) {  // the whole operation
    if (::ptrace(PTRACE_CONT, pid, nullptr, nullptr) != 0) return false;
    return ::waitpid(pid, &st, 0) == pid && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP;
  }
  const uint64_t a = rips[k];
  size_t before = 0;
  for (size_t j = 0; j < k; j++) before += rips[j] == a;
  errno = 0;
  const long orig = ::ptrace(PTRACE_PEEKTEXT, pid, a, nullptr);
  if (errno) return false;
  const long trap = (orig & ~0xffL) | 0xcc;
  if (::ptrace(PTRACE_POKETEXT, pid, a, trap) != 0) return false;
  for (size_t hit = 0;; hit++) {
    if (::ptrace(PTRACE_CONT, pid, nullptr, nullptr) != 0) return false;
    if (::waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP) return false;
    user_regs_struct regs;
    if (::ptrace(PTRACE_GETREGS, pid, nullptr, &regs) != 0 || regs.rip != a + 1) return false;
    regs.rip = a;  // back onto the instruction the trap replaced
    if (::ptrace(PTRACE_SETREGS, pid, nullptr, &regs) != 0) return false;
    if (::ptrace(PTRACE_POKETEXT, pid, a, orig) != 0) return false;
    if (hit == before) return true;
    if (::ptrace(PTRACE_SINGLESTEP, pid, nullptr, nullptr) != 0) return false;
    if (::waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st)) return false;
    if (::ptrace(PTRACE_POKETEXT, pid, a, trap) != 0) return false;
  }
}

class SegmentKill : public ::testing::TestWithParam<Op> {};

// Fills a mailbox (capacity 30000, 88-byte messages, data area of several
// chunks, laps longer than the kept area) and receives until the next
// receive moves the head past the end of the first 256 KiB chunk beyond the
// kept area (the first one a receive releases); or, for a send, until the
// next send enters a new chunk. Then kills a participant at every
// instruction of that step. Wrap: a mailbox of capacity 64 with ten queued,
// whose next send wraps to offset 0 from 32 KiB into its area.
TEST_P(SegmentKill, AtEveryInstructionNothingCorruptAtMostOneLost) {
  const Op op = GetParam();
  const bool sends = op == Op::push || op == Op::wrap;
  const bool prio = op == Op::take || op == Op::pass;
  TempDir d;
  SharedControl ctl;
  const std::string path = d.file("s");
  Segment seg = ut::make_segment(path, op == Op::wrap || prio ? 64 : 30000, 1024, ctl);
  ASSERT_TRUE(seg.valid());
  if (op != Op::wrap && !prio) {
    ASSERT_GE(seg.data_size(), 8 * kChunk);  // chunks are released at all
  }
  const Sender me{1, 0, 0};
  uint32_t next = 0, first = 0;
  auto push_one = [&] {
    const std::string m = ut::make_msg(0, next, kBody);
    ASSERT_TRUE(seg.push(m.data(), m.size(), me, 1).ok());
    next++;
  };
  // What a receive after the kill must find: before (it never happened) or
  // after (committed, its message in the dead receiver's hands).
  std::vector<uint32_t> prio_before, prio_after;
  if (op == Op::take) {  // ten of priority 0, then one of 5: the receive takes it from the middle
    for (int i = 0; i < 10; i++) push_one();
    const std::string m = ut::make_msg(0, next, kBody);
    ASSERT_TRUE(seg.push(m.data(), m.size(), me, 1, false, 5).ok());
    prio_before = {10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    prio_after = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    next = 11;
  } else if (op == Op::pass) {  // 0 (prio 0), 1 (prio 5, taken: a tombstone), 2 and 3 (prio 0)
    for (uint32_t i = 0; i < 4; i++) {
      const std::string m = ut::make_msg(0, i, kBody);
      ASSERT_TRUE(seg.push(m.data(), m.size(), me, 1, false, i == 1 ? 5 : 0).ok());
    }
    std::string out;
    ASSERT_TRUE(seg.pop(out, 1).ok());
    ASSERT_EQ(check(out)->second, 1u);
    ASSERT_EQ(seg.header()->tombs, 1u);
    prio_before = {0, 2, 3};
    prio_after = {2, 3};
    next = 4;
  } else if (op == Op::wrap) {
    const uint64_t rec = layout::record_size(ut::make_msg(1, 0, kBody).size());  // operate()'s
    std::string out;
    while (seg.header()->send.tail + rec <= 32 * 1024) {
      push_one();
      if (next - first > 10) {
        ASSERT_TRUE(seg.pop(out, 1).ok());
        first++;
      }
    }
  } else if (op == Op::push) {
    // Until one more record would cross into the second chunk.
    const uint64_t rec = layout::record_size(ut::make_msg(1, 0, kBody).size());  // operate()'s
    while (seg.header()->send.tail + rec <= kChunk) push_one();
  } else {
    const uint64_t end = layout::kKeepResident + kChunk;
    while (seg.header()->send.tail < end + 64 * 1024) push_one();
    std::string out;
    for (;;) {
      auto len = seg.peek_len();
      ASSERT_TRUE(len.ok());
      if (seg.header()->recv.head + layout::record_size(*len) >= end) break;
      ASSERT_TRUE(seg.pop(out, 1).ok());
      first++;
    }
  }
  const uint64_t queued = next - first;
  const size_t used = std::min(layout::kHeaderSize + seg.header()->send.tail + 64 * 1024,
                               layout::kHeaderSize + seg.data_size());
  Snapshot snap;
  snap.take(path, used);
  ASSERT_FALSE(HasFatalFailure());
  {
    struct stat before, after;
    ASSERT_EQ(::stat(path.c_str(), &before), 0);
    auto warm = Segment::attach(path);
    ASSERT_TRUE(warm.ok());
    warm->set_control(ctl.get());
    ASSERT_TRUE(operate(*warm, op, false));
    ASSERT_EQ(::stat(path.c_str(), &after), 0);
    // The receive gave the passed chunk back; the send took the new one; the
    // wrap went to the start.
    if (op == Op::wrap) EXPECT_LT(warm->header()->send.tail % seg.data_size(), 1024u);
    else if (op == Op::push) EXPECT_GT(after.st_blocks, before.st_blocks);
    else if (op == Op::pass) EXPECT_EQ(warm->header()->tombs, 0u);  // passed
    else if (op == Op::take) EXPECT_EQ(warm->header()->tombs, 1u);  // made
    else EXPECT_LE(after.st_blocks * 512 + kChunk, uint64_t(before.st_blocks) * 512);
  }

  // Trial k: stopped k instructions into the operation, then killed.
  std::vector<uint64_t> rips;
  bool traced = false;
  int missing_after_commit = 0, untouched = 0;
  for (size_t k = 0; !traced || k <= rips.size(); k += traced) {
    snap.restore(path);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) child(path, ctl, op);
    int st;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFSTOPPED(st)) << "child exited " << st;
    if (!traced) {  // first run: which instructions the operation executes
      rips = trace(pid);
      traced = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      ASSERT_FALSE(rips.empty());
      continue;
    }
    ASSERT_TRUE(run_to(pid, rips, k)) << "at " << k;
    ::kill(pid, SIGKILL);
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);

    auto after = Segment::attach(path);  // recovers from the dead holder
    ASSERT_TRUE(after.ok()) << "killed at instruction " << k << " of " << rips.size() << ": "
                            << to_errno(after.error());
    after->set_control(ctl.get());
    ASSERT_EQ(after->header()->state.load(), layout::kLive) << "at " << k;
    const SegmentStats s = after->stats();
    // What is queued is exactly a run of consecutive messages, each intact.
    std::string out;
    std::vector<uint32_t> got;
    while (after->pop(out, 2).ok()) {
      auto id = check(out);
      ASSERT_TRUE(id.has_value()) << "damaged message after a kill at " << k;
      got.push_back(id->first == 0 ? id->second : UINT32_MAX);
      out.clear();
    }
    ASSERT_EQ(got.size(), s.count) << "at " << k;
    if (prio) {
      // In priority order, with or without the one message; every tombstone
      // passed once the ring is drained.
      ASSERT_TRUE(got == prio_before || got == prio_after) << "at " << k;
      (got == prio_before ? untouched : missing_after_commit)++;
      ASSERT_EQ(after->header()->recv.head, after->header()->send.tail) << "at " << k;
      ASSERT_EQ(after->header()->tombs, 0u) << "at " << k;
      ASSERT_EQ(after->header()->prio_popped, after->header()->prio_pushed) << "at " << k;
      ASSERT_EQ(after->header()->recv_take, 0u) << "at " << k;
    } else if (sends) {
      // The new message is either not there (counted lost if the sender
      // died holding the lock) or fully there, after all the others.
      ASSERT_GE(got.size(), queued);
      ASSERT_LE(got.size(), queued + 1);
      for (size_t i = 0; i < queued; i++) ASSERT_EQ(got[i], first + i) << "at " << k;
      if (got.size() == queued) {
        untouched++;
      } else {
        ASSERT_EQ(got.back(), UINT32_MAX);  // producer 1's message
        missing_after_commit++;
      }
      ASSERT_LE(s.lost, 1u);
    } else {
      // Either the receive never happened, or it was committed and the one
      // message is in the dead receiver's hands.
      ASSERT_TRUE(got.size() == queued || got.size() == queued - 1) << "at " << k;
      const uint32_t from = got.size() == queued ? first : first + 1;
      for (size_t i = 0; i < got.size(); i++) ASSERT_EQ(got[i], from + i) << "at " << k;
      (got.size() == queued ? untouched : missing_after_commit)++;
    }
    after = Errc::invalid;  // unmaps before the next restore
  }
  std::printf("killed at each of %zu instructions and after: %d left the mailbox as it was, %d after the commit\n",
              rips.size(), untouched, missing_after_commit);
  EXPECT_GT(untouched, 0);
  EXPECT_GT(missing_after_commit, 0);
}

INSTANTIATE_TEST_SUITE_P(Ops, SegmentKill, ::testing::Values(Op::pop, Op::view, Op::push, Op::wrap, Op::take, Op::pass),
                         [](const auto& info) {
                           return std::string(info.param == Op::pop    ? "Receive"
                                              : info.param == Op::view ? "View"
                                              : info.param == Op::push ? "Send"
                                              : info.param == Op::wrap ? "SendThatWrapsEarly"
                                              : info.param == Op::take ? "ReceiveOfAHigherPriority"
                                                                       : "ReceivePassingATombstone");
                         });

}  // namespace
}  // namespace mbx

// SPDX-License-Identifier: MIT
// Segment validation: everything read from shared memory is untrusted. A
// corrupted segment yields Errc::bad_message, never a crash.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <functional>
#include <random>
#include <vector>

#include "shm/segment.h"
#include "test_util.h"

namespace mbx {
namespace {

using layout::RecordHeader;
using layout::SegmentHeader;
using ut::SharedControl;
using ut::TempDir;

constexpr uint64_t kMax = 100;  // max_message of every segment here

// A segment with three queued messages, left on disk for attach().
struct Fixture {
  TempDir dir;
  SharedControl ctl;
  Segment seg;
  std::string path = dir.file("s");
  Fixture() {
    seg = ut::make_segment(path, 4, kMax, ctl);
    for (const char* m : {"aa", "bbbb", "cccccc"}) (void)seg.push(m, strlen(m), {}, 0);
  }
  SegmentHeader* h() { return seg.header(); }
  RecordHeader* rec_at(uint64_t off) {
    return reinterpret_cast<RecordHeader*>(reinterpret_cast<char*>(h()) + layout::kHeaderSize + off);
  }
  Errc attach() { return Segment::attach(path).error(); }
  // Positions are kept in two places each (the owner's state, the published
  // copy); these scribble both, as a consistent liar would.
  void set_head(uint64_t v) { h()->recv.head = v, h()->head_pub = v; }
  void set_tail(uint64_t v) { h()->send.tail = v, h()->tail_pub = v; }
  void set_popped(uint64_t v) { h()->recv.popped = v, h()->popped_pub = v; }
};

struct Case {
  const char* what;
  std::function<void(Fixture&)> scribble;
};

TEST(SegmentCorrupt, AttachRejectsBadHeaders) {
  const Case cases[] = {
      {"magic", [](Fixture& f) { f.h()->magic ^= 1; }},
      {"version", [](Fixture& f) { f.h()->version = layout::kVersion + 1; }},
      {"header_size", [](Fixture& f) { f.h()->header_size = 8192; }},
      {"data_size larger than the file", [](Fixture& f) { f.h()->data_size += 4096; }},
      {"data_size smaller than the file", [](Fixture& f) { f.h()->data_size -= 8; }},
      {"data_size 0", [](Fixture& f) { f.h()->data_size = 0; }},
      {"max_message huge", [](Fixture& f) { f.h()->max_message = UINT32_MAX; }},
      {"max_message above the area", [](Fixture& f) { f.h()->max_message = f.h()->data_size; }},
      {"head misplaced", [](Fixture& f) { f.set_head(f.h()->recv.head + 8); }},
      {"head beyond tail", [](Fixture& f) { f.set_head(f.h()->send.tail + 64); }},
      {"head_pub differs", [](Fixture& f) { f.h()->head_pub += 8; }},
      {"tail beyond", [](Fixture& f) { f.set_tail(f.h()->recv.head + f.h()->data_size + 1); }},
      {"tail misplaced", [](Fixture& f) { f.set_tail(f.h()->send.tail + 8); }},
      {"tail_pub differs", [](Fixture& f) { f.h()->tail_pub += 40; }},
      {"next_seq huge", [](Fixture& f) { f.h()->send.next_seq = UINT64_MAX; }},
      {"count one more", [](Fixture& f) { f.h()->send.next_seq++; }},
      {"count one less", [](Fixture& f) { f.set_popped(f.h()->recv.popped + 1); }},
      {"popped beyond pushed", [](Fixture& f) { f.set_popped(f.h()->send.next_seq + 1); }},
      {"popped_pub differs", [](Fixture& f) { f.h()->popped_pub++; }},
      {"bytes", [](Fixture& f) { f.h()->send.sent_bytes++; }},
      {"record_bytes", [](Fixture& f) { f.h()->send.sent_record_bytes += 8; }},
      {"popped bytes beyond sent", [](Fixture& f) { f.h()->recv.popped_bytes = f.h()->send.sent_bytes + 1; }},
      {"record len > max_message", [](Fixture& f) { f.rec_at(0)->len = kMax + 1; }},
      {"record len huge", [](Fixture& f) { f.rec_at(0)->len = 0x7fffffff; }},
      {"wrap marker at offset 0", [](Fixture& f) { f.rec_at(0)->len = layout::kWrapMarker; }},
      {"third record runs past the tail", [](Fixture& f) { f.rec_at(2 * layout::record_size(2))->len = kMax; }},
      {"second record len", [](Fixture& f) { f.rec_at(layout::record_size(2))->len = 3; }},
      {"state corrupt", [](Fixture& f) { f.h()->state = layout::kCorrupt; }},
      {"state unknown", [](Fixture& f) { f.h()->state = 77; }},
  };
  for (const auto& c : cases) {
    Fixture f;
    ASSERT_EQ(f.attach(), Errc::ok) << c.what;
    c.scribble(f);
    EXPECT_EQ(f.attach(), Errc::bad_message) << c.what;
  }
}

TEST(SegmentCorrupt, AttachRejectsBadFiles) {
  Fixture f;
  ASSERT_EQ(::truncate(f.path.c_str(), 4096), 0);  // header only
  EXPECT_EQ(f.attach(), Errc::bad_message);
  ASSERT_EQ(::truncate(f.path.c_str(), 100), 0);
  EXPECT_EQ(f.attach(), Errc::bad_message);
  ASSERT_EQ(::truncate(f.path.c_str(), 0), 0);
  EXPECT_EQ(f.attach(), Errc::bad_message);
  Fixture g;
  ASSERT_EQ(::truncate(g.path.c_str(), layout::kHeaderSize + g.seg.data_size() + 4096), 0);
  EXPECT_EQ(g.attach(), Errc::bad_message);
  EXPECT_EQ(Segment::attach(g.dir.path()).error(), Errc::is_dir);
  ASSERT_EQ(::symlink(g.path.c_str(), g.dir.file("link").c_str()), 0);
  EXPECT_NE(Segment::attach(g.dir.file("link")).error(), Errc::ok);  // O_NOFOLLOW
}

TEST(SegmentCorrupt, RingDamageFoundOnAttachMarksTheSegment) {
  Fixture f;
  f.set_head(f.h()->recv.head + 8);
  EXPECT_EQ(f.attach(), Errc::bad_message);
  EXPECT_EQ(f.h()->state.load(), layout::kCorrupt);  // other participants stop too
  std::string out;
  EXPECT_EQ(f.seg.pop(out, 0).error(), Errc::bad_message);
  EXPECT_EQ(f.seg.push("x", 1, {}, 0).error(), Errc::bad_message);
}

TEST(SegmentCorrupt, PopOfScribbledRecord) {
  const Case cases[] = {
      {"len > max_message", [](Fixture& f) { f.rec_at(0)->len = kMax + 1; }},
      {"len = wrap marker at 0", [](Fixture& f) { f.rec_at(0)->len = layout::kWrapMarker; }},
      {"head after tail", [](Fixture& f) { f.set_head(f.h()->send.tail + 64); }},
      {"tail a lap ahead", [](Fixture& f) { f.set_tail(f.h()->recv.head + f.h()->data_size + 64); }},
      {"record runs past the end",
       [](Fixture& f) {
         f.set_head(f.h()->data_size - 40);  // room for a header, not for 100 bytes
         f.set_tail(f.h()->data_size + 200);
         f.rec_at(f.h()->data_size - 40)->len = kMax;
       }},
      {"wrap marker with the tail inside its gap",
       [](Fixture& f) {
         f.set_head(f.h()->data_size - 64);
         f.set_tail(f.h()->data_size - 32);
         f.rec_at(f.h()->data_size - 64)->len = layout::kWrapMarker;
       }},
  };
  for (const auto& c : cases) {
    Fixture f;
    c.scribble(f);
    std::string out;
    EXPECT_EQ(f.seg.pop(out, 0).error(), Errc::bad_message) << c.what;
    EXPECT_TRUE(out.empty()) << c.what;
    EXPECT_EQ(f.h()->state.load(), layout::kCorrupt) << c.what;
    EXPECT_EQ(f.seg.push("x", 1, {}, 0).error(), Errc::bad_message) << c.what;
    EXPECT_EQ(f.seg.pop(out, 0).error(), Errc::bad_message) << c.what;
  }
  Fixture f;
  f.rec_at(0)->len = kMax + 1;
  EXPECT_EQ(f.seg.peek_len().error(), Errc::bad_message);
  EXPECT_EQ(f.seg.max_queued_len(), UINT64_MAX);
}

// Random bytes in every field a participant may write (all but the mutex),
// and in the record area; then attach and use the segment. Must not crash,
// and whatever it hands out must respect max_message.
TEST(SegmentCorrupt, FuzzNeverCrashes) {
  Fixture f;
  const size_t total = layout::kHeaderSize + f.seg.data_size();
  std::vector<char> clean(reinterpret_cast<char*>(f.h()), reinterpret_cast<char*>(f.h()) + total);
  auto offset_of = [&](void* p) { return size_t(static_cast<char*>(p) - reinterpret_cast<char*>(f.h())); };
  const size_t lock1 = offset_of(&f.h()->send_lock), lock2 = offset_of(&f.h()->recv_lock);
  auto in_lock = [&](size_t at) {
    return (at >= lock1 && at < lock1 + sizeof(pthread_mutex_t)) ||
           (at >= lock2 && at < lock2 + sizeof(pthread_mutex_t));
  };
  const size_t hdr_end = sizeof(SegmentHeader);
  std::mt19937 rng(12345);
  int attached = 0;
  for (int iter = 0; iter < 3000; iter++) {
    std::memcpy(static_cast<void*>(f.h()), clean.data(), total);
    const int n = 1 + rng() % 6;
    for (int k = 0; k < n; k++) {
      size_t at;
      if (rng() % 3 == 0) {
        at = layout::kHeaderSize + rng() % 256;  // the first records
      } else {
        do at = rng() % hdr_end;
        while (in_lock(at));
      }
      uint8_t v = rng() % 4 == 0 ? 0xff : static_cast<uint8_t>(rng());
      reinterpret_cast<uint8_t*>(f.h())[at] = v;
    }
    auto s = Segment::attach(f.path);
    if (!s) {
      Errc e = s.error();
      EXPECT_TRUE(e == Errc::bad_message || e == Errc::removed) << "iter " << iter << " " << to_errno(e);
      continue;
    }
    attached++;
    s->set_control(f.ctl.get());
    for (int op = 0; op < 8; op++) {
      std::string out;
      auto p = s->pop(out, 0);
      if (p) {
        EXPECT_LE(out.size(), s->max_message()) << "iter " << iter;
      }
      auto l = s->peek_len();
      if (l) {
        EXPECT_LE(*l, s->max_message());
      }
      (void)s->max_queued_len();
      (void)s->push("fuzz", 4, {}, 0);
    }
    (void)s->stats();
  }
  EXPECT_GT(attached, 100);  // the fuzz reached the ring code, not only the header checks
}

// A live participant scribbles `tail` (or `head`) after attach; push() must
// not trust them. The child reports how push() ended: 0 bad_message, 3 another
// error, 4 ok, 6 ok and its record is found past the end of the mapping
// (`probe` bytes after it, holding `seq`); or it dies by SIGSEGV.
int push_after_scribble(const std::function<void(Fixture&)>& scribble, size_t probe) {
  Fixture f;
  pid_t pid = ::fork();
  if (pid == 0) {
    char* end = reinterpret_cast<char*>(f.h()) + layout::kHeaderSize + f.seg.data_size();
    // A guard after the mapping, when the address is free, makes the overrun fault.
    ::mmap(end, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    const uint64_t seq = f.h()->send.next_seq;
    scribble(f);
    auto r = f.seg.push("x", 1, {}, 0);
    if (!r.ok()) ::_exit(r.error() == Errc::bad_message ? 0 : 3);
    uint64_t there;
    std::memcpy(&there, end + probe, 8);
    ::_exit(there == seq ? 6 : 4);
  }
  return ut::wait_child(pid);
}

std::string describe(int st) {
  if (st == -1) return "hung";
  if (WIFSIGNALED(st)) return std::string("killed by ") + strsignal(WTERMSIG(st));
  switch (WEXITSTATUS(st)) {
    case 0: return "bad_message";
    case 3: return "another error";
    case 4: return "ok";
    case 6: return "ok, and its record was written past the end of the mapping";
  }
  return "exit " + std::to_string(WEXITSTATUS(st));
}

TEST(SegmentCorrupt, PushRevalidatesTailAndHead) {
  // push() must re-check the positions read from shared memory: a tail more
  // than a lap ahead of the head, or a head ahead of the tail, would make the
  // free room look larger than the area.
  int st = push_after_scribble([](Fixture& f) { f.set_tail(f.h()->recv.head + f.h()->data_size + 4096); },
                               4096 + offsetof(RecordHeader, seq));
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "tail a lap ahead: push() " << describe(st);
  // A sender re-reads the head only when the one it last saw leaves no room:
  // the scribble may go unnoticed by this push (which writes only where room
  // was known free), never make it write out of bounds, and is caught once read.
  st = push_after_scribble([](Fixture& f) { f.h()->head_pub = f.h()->send.tail + 4096; },
                           offsetof(RecordHeader, seq) - 8);
  EXPECT_TRUE(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 4))
      << "head ahead of the tail: push() " << describe(st);
  {
    Fixture f;
    f.h()->head_pub = f.h()->send.tail + 4096;
    f.h()->popped_pub = f.h()->send.next_seq;  // looks empty: but the head is ahead of the tail
    for (int i = 0; i < 3; i++) (void)f.seg.push("x", 1, {}, 0);
    EXPECT_EQ(f.seg.push(std::string(kMax, 'y').data(), kMax, {}, 0).error(), Errc::bad_message);
  }
  // Positions are taken modulo the area: a huge but consistent tail stays inside it.
  st = push_after_scribble(
      [](Fixture& f) {
        f.set_tail(UINT64_MAX - 7);
        f.set_head(UINT64_MAX - 7);
        f.h()->recv.popped = f.h()->popped_pub = f.h()->send.next_seq;
      },
      0);
  EXPECT_TRUE(WIFEXITED(st) && (WEXITSTATUS(st) == 4 || WEXITSTATUS(st) == 0))
      << "huge positions: push() " << describe(st);
}

}  // namespace
}  // namespace mbx

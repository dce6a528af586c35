// libFuzzer target: Segment::attach() and every segment operation on a
// segment whose bytes were scribbled, before the attach and while attached
// (another participant may write anything into shared memory). Must never
// crash, touch memory outside the mapping, hang, or hand out a message longer
// than max_message; with no scribble, every message comes back intact and in
// order (a model queue).
//
// The two robust mutexes and the two bias words are left alone: a scribbled
// lock word makes pthread_mutex_lock() wait forever, and so does a bias word
// naming a live thread whose process cannot be inspected (/proc/<tid>/maps
// unreadable, say one of pid 1's threads) with its busy word set: it is
// taken for a participant stopped inside a biased operation, which a client
// waits for as for a held lock. The daemon never waits for either (it tries
// again later), and telling an impossible lock state apart is its quarantine
// (issue 11), tested by its own tests. The busy words are scribbled.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <string>

#include <fuzzer/FuzzedDataProvider.h>

#include "shm/segment.h"

namespace {

using mbx::Errc;
using mbx::Segment;
using mbx::layout::SegmentHeader;

const std::string& seg_path() {
  static const std::string p = "/dev/shm/mbxfuzz-" + std::to_string(::getpid()) + "-segment";
  return p;
}

// A stand-in for the mount's control segment (quota counter and doorbell).
mbx::layout::ControlHeader* control() {
  static auto* ctl = [] {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    auto* c = new (p) mbx::layout::ControlHeader{};
    c->magic = mbx::layout::kControlMagic;
    c->version = mbx::layout::kVersion;
    c->quota_max = 1u << 20;
    return c;
  }();
  return ctl;
}

bool in_lock_word(const SegmentHeader* h, uint64_t off) {
  auto inside = [&](const void* w, size_t size) {
    const auto start = static_cast<uint64_t>(static_cast<const char*>(w) - reinterpret_cast<const char*>(h));
    return off >= start && off < start + size;
  };
  return inside(&h->send_lock, sizeof h->send_lock) || inside(&h->recv_lock, sizeof h->recv_lock) ||
         inside(&h->send_bias, sizeof h->send_bias) || inside(&h->recv_bias, sizeof h->recv_bias);
}

// Message `i`: its number, then a body derived from it, so that a copy can be
// checked without the model.
std::string message(uint32_t i, size_t len) {
  std::string m(len, '\0');
  for (size_t k = 0; k < len; k++) m[k] = static_cast<char>((i * 131 + k * 7) & 0xff);
  if (len >= 4) std::memcpy(&m[0], &i, 4);
  return m;
}

// Writes `n` scribbles (offset, byte) into the mapping `base` of `size` bytes.
void scribble(FuzzedDataProvider& in, char* base, uint64_t size, int n) {
  for (int k = 0; k < n && in.remaining_bytes() > 0; k++) {
    // Mostly the header and the first record pages: that is where the checks are.
    uint64_t off = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 4095)
                                    : in.ConsumeIntegralInRange<uint64_t>(0, size - 1);
    if (in_lock_word(reinterpret_cast<SegmentHeader*>(base), off)) continue;
    const uint8_t v = in.ConsumeIntegral<uint8_t>();
    if (in.ConsumeBool()) base[off] = static_cast<char>(v);
    else base[off] ^= static_cast<char>(1u << (v & 7));
  }
}

struct Checker {
  bool scribbled = false;
  std::deque<std::string> model;  // what was pushed and not yet popped (exact while unscribbled)
  uint32_t next = 0;
  uint64_t max_message = 0;

  void popped(const char* p, size_t n) {
    if (n > max_message) abort();  // a length no sender could have written escaped validation
    if (scribbled) return;
    if (model.empty() || model.front() != std::string(p, n)) abort();  // lost, reordered or damaged
    model.pop_front();
  }
};

void run_ops(FuzzedDataProvider& in, Segment& s, Checker& c, uint64_t total) {
  std::string out;
  char buf[512];
  int64_t now = 1;
  for (int step = 0; step < 64 && in.remaining_bytes() > 0; step++) {
    now += 1000;
    switch (in.ConsumeIntegralInRange<int>(0, 12)) {
      case 0: {  // push
        const size_t len = in.ConsumeIntegralInRange<size_t>(0, c.max_message + 8);
        std::string m = message(c.next++, len);
        auto r = s.push(m.data(), m.size(), mbx::Sender{1, 2, 3}, now);
        if (r && len > c.max_message) abort();
        if (r) c.model.push_back(std::move(m));
        break;
      }
      case 1: {  // pop
        out.clear();
        auto r = s.pop(out, now);
        if (r) c.popped(out.data(), out.size());
        break;
      }
      case 2: {  // pop_into a buffer that may be too small
        const size_t cap = in.ConsumeIntegralInRange<size_t>(0, sizeof buf);
        auto r = s.pop_into(buf, cap, now);
        if (r) {
          if (r->len > cap) abort();
          c.popped(buf, r->len);
        }
        break;
      }
      case 3: {  // zero-copy receive
        auto v = s.view(now);
        if (!v) break;
        volatile char sink = 0;
        for (size_t k = 0; k < v->len; k++) sink = sink + v->data[k];  // every byte must be mapped
        if (in.ConsumeBool()) {
          c.popped(v->data, v->len);
          s.release_view();
        } else {
          if (v->len > c.max_message) abort();
          s.cancel_view();
        }
        break;
      }
      case 4: {  // zero-copy send
        const size_t len = in.ConsumeIntegralInRange<size_t>(0, c.max_message + 8);
        auto r = s.reserve(len, mbx::Sender{4, 5, 6}, now);
        if (!r) break;
        if (len > c.max_message) abort();
        std::string m = message(c.next++, len);
        std::memcpy(*r, m.data(), len);
        if (in.ConsumeBool()) {
          s.commit_reserved();
          c.model.push_back(std::move(m));
        } else {
          s.abort_reserved();
        }
        break;
      }
      case 5: {
        auto st = s.stats();
        if (!c.scribbled && st.count != c.model.size()) abort();
        break;
      }
      case 6:
        (void)s.max_queued_len();
        (void)s.peek_len();
        (void)s.full();
        (void)s.consumed_seq();
        break;
      case 7: {  // a resize that fails: everything goes back, in order
        std::vector<Segment::Taken> taken;
        auto st = s.retire_and_take(taken);
        if (!st) {  // a lock held or a scribble found: nothing was taken
          if (!taken.empty()) abort();
          c.scribbled = true;
          break;
        }
        if (!c.scribbled) {
          if (taken.size() != c.model.size()) abort();
          for (size_t k = 0; k < taken.size(); k++)
            if (taken[k].data != c.model[k]) abort();
        }
        for (auto& t : taken)
          if (t.data.size() > c.max_message) abort();
        s.unretire_and_put_back(taken, *st);
        break;
      }
      case 8:
        (void)s.withdraw(in.ConsumeIntegral<uint64_t>() % (c.next + 1));
        c.scribbled = true;  // it may take the last message back: the model stops being exact
        break;
      case 9: s.settle_quota(); break;
      case 10:  // another participant scribbles while we are attached
        scribble(in, reinterpret_cast<char*>(s.header()), total, in.ConsumeIntegralInRange<int>(1, 4));
        c.scribbled = true;
        break;
      case 11:
        s.after_push(false);
        s.after_pop(false);
        break;
      case 12:
        if (in.ConsumeBool()) {
          s.discard_all();
          c.model.clear();
        }
        break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  static const uint64_t kCaps[] = {0, 1, 3, 64, mbx::layout::kUnbounded};
  const uint64_t capacity = kCaps[in.ConsumeIntegralInRange<size_t>(0, 4)];
  const uint64_t max_message = in.ConsumeIntegralInRange<uint64_t>(1, 300);
  const uint64_t data_size = mbx::data_size_for(capacity, max_message, 1u << 14);
  ::unlink(seg_path().c_str());
  control()->quota_used.store(0);  // what a scribbled segment leaked stays out of the next input
  Checker c;
  c.max_message = max_message;
  uint64_t total = 0;
  {
    auto made = Segment::create(seg_path(), capacity, max_message, data_size, 0600);
    if (!made) abort();
    made->set_control(control(), in.ConsumeBool());
    total = mbx::layout::kHeaderSize + made->data_size();
    // A history: some sends and receives, so that the positions are anywhere.
    run_ops(in, *made, c, total);
    made->settle_quota();
  }
  // Scribbles on the file at rest, then a fresh attach must validate them.
  const int n = in.ConsumeIntegralInRange<int>(0, 8);
  if (n > 0) {
    int fd = ::open(seg_path().c_str(), O_RDWR);
    void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) abort();
    scribble(in, static_cast<char*>(p), total, n);
    ::munmap(p, total);
    c.scribbled = true;
  }
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {  // a truncated (or grown) file
    if (::truncate(seg_path().c_str(), static_cast<off_t>(in.ConsumeIntegralInRange<uint64_t>(0, total + 8192))) != 0)
      abort();
    c.scribbled = true;
  }
  auto s = Segment::attach(seg_path());
  if (s) {
    if (s->max_message() != max_message && !c.scribbled) abort();
    c.max_message = s->max_message();
    s->set_control(control(), in.ConsumeBool());
    run_ops(in, *s, c, total);
    if (!c.scribbled) {  // drain: the model must match to the last message
      std::string out;
      while (s->pop(out, 1)) {
        c.popped(out.data(), out.size());
        out.clear();
      }
      if (!c.model.empty()) abort();
    }
    s->discard_all();
    s->settle_quota();
  } else if (!c.scribbled) {
    abort();  // an intact segment must attach
  }
  ::unlink(seg_path().c_str());
  return 0;
}

#include "segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace mbx {

using layout::RecordHeader;
using layout::SegmentHeader;

namespace {
constexpr uint64_t kPage = 4096;
constexpr uint64_t kRecHdr = sizeof(RecordHeader);
uint64_t round_page(uint64_t n) { return (n + kPage - 1) & ~(kPage - 1); }
}  // namespace

int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const timespec* rel) {
  return static_cast<int>(
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, rel, nullptr, 0));
}

int futex_wake(std::atomic<uint32_t>* word, int n) {
  return static_cast<int>(
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, n, nullptr, nullptr, 0));
}

uint64_t data_size_for(uint64_t capacity, uint64_t max_message, uint64_t quota_max) {
  constexpr uint64_t kLimit = 1ull << 46;  // 64 TiB of address space: beyond any real quota
  const uint64_t rec = layout::record_size(std::min(max_message, kLimit));
  const uint64_t slots = capacity >= kLimit ? kLimit : std::max<uint64_t>(capacity, 1) + 1;
  const uint64_t by_capacity = slots > kLimit / rec ? kLimit : slots * rec;
  // The quota bounds the live bytes; two spare records absorb the wrap gap.
  const uint64_t by_quota = std::min(quota_max, kLimit) + 2 * rec;
  return round_page(std::min({by_capacity, by_quota, kLimit}));
}

// Holds the segment's robust mutex. A participant that died holding it is
// recovered from (recover_locked); if the ring is then still inconsistent
// (scribbled, not crashed), the segment is marked corrupt.
class Segment::Locked {
 public:
  explicit Locked(const Segment& s, bool any_state = false) : s_(s) {
    int rc = pthread_mutex_lock(&s.hdr_->lock);
    if (rc == EOWNERDEAD) {
      if (s.recover_locked()) {
        rc = 0;
      } else {
        s.hdr_->state.store(layout::kCorrupt, std::memory_order_release);
      }
      pthread_mutex_consistent(&s.hdr_->lock);
    }
    locked_ = rc == 0 || rc == EOWNERDEAD;
    ok_ = rc == 0 && (any_state || s.hdr_->state.load(std::memory_order_acquire) == layout::kLive);
    if (!ok_) {
      uint32_t st = s.hdr_->state.load(std::memory_order_acquire);
      err_ = st == layout::kDeleted ? Errc::removed : st == layout::kRetired ? Errc::stale : Errc::bad_message;
    }
  }
  ~Locked() {
    if (locked_) pthread_mutex_unlock(&s_.hdr_->lock);
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;
  bool ok() const { return ok_; }
  Errc error() const { return err_; }

 private:
  const Segment& s_;
  bool locked_ = false;
  bool ok_ = false;
  Errc err_ = Errc::ok;
};

Result<Segment> Segment::create(const std::string& path, uint64_t capacity, uint64_t max_message,
                                uint64_t data_size, mode_t mode) {
  if (max_message > UINT32_MAX - 64 || data_size < layout::record_size(max_message) * 2 ||
      data_size % kPage != 0)
    return Errc::invalid;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd.valid()) return from_errno(errno);
  const uint64_t total = layout::kHeaderSize + data_size;
  if (::ftruncate(fd.get(), static_cast<off_t>(total)) != 0) {
    int e = errno;
    ::unlink(path.c_str());
    return from_errno(e);
  }
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::unlink(path.c_str());
    return from_errno(e);
  }
  Segment s;
  s.path_ = path;
  s.map_ = Mapping(p, total);
  s.hdr_ = static_cast<SegmentHeader*>(p);
  s.data_ = static_cast<char*>(p) + layout::kHeaderSize;
  s.capacity_ = capacity;
  s.max_message_ = max_message;
  s.data_size_ = data_size;

  SegmentHeader* h = s.hdr_;  // fresh zero pages from ftruncate
  h->version = layout::kVersion;
  h->header_size = layout::kHeaderSize;
  h->data_size = data_size;
  h->max_message = max_message;
  h->capacity = capacity;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&h->lock, &a);
  pthread_mutexattr_destroy(&a);
  h->state.store(layout::kLive, std::memory_order_relaxed);
  // SYNC POINT: publishes the initialised header; pairs with the acquire load
  // of `magic` in attach().
  std::atomic_ref<uint64_t>(h->magic).store(layout::kMagic, std::memory_order_release);
  return s;
}

Result<Segment> Segment::attach(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return from_errno(errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return from_errno(errno);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < layout::kHeaderSize * 2)
    return Errc::bad_message;
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return from_errno(errno);
  Mapping map(p, total);
  auto* h = static_cast<SegmentHeader*>(p);
  // Validate everything the geometry depends on before trusting any offset.
  if (std::atomic_ref<uint64_t>(h->magic).load(std::memory_order_acquire) != layout::kMagic ||
      h->version != layout::kVersion || h->header_size != layout::kHeaderSize ||
      h->data_size != total - layout::kHeaderSize || h->data_size % kPage != 0 ||
      h->max_message > UINT32_MAX - 64 ||
      h->data_size < layout::record_size(h->max_message) * 2)
    return Errc::bad_message;
  Segment s;
  s.path_ = path;
  s.map_ = std::move(map);
  s.hdr_ = h;
  s.data_ = static_cast<char*>(p) + layout::kHeaderSize;
  s.capacity_ = h->capacity;
  s.max_message_ = h->max_message;
  s.data_size_ = h->data_size;
  {
    Locked l(s);
    if (!l.ok()) return l.error();
    if (!s.check_ring_locked()) {
      h->state.store(layout::kCorrupt, std::memory_order_release);
      return Errc::bad_message;
    }
  }
  return s;
}

// Walks every queued record from head, checking each offset and length
// against the private geometry. O(count): used on attach and owner death only.
bool Segment::check_ring_locked() const {
  const SegmentHeader* h = hdr_;
  if (h->ring.head >= data_size_ || h->ring.tail >= data_size_ || h->ring.count > data_size_ / kRecHdr)
    return false;
  uint64_t pos = h->ring.head, bytes = 0, rec_bytes = 0;
  for (uint64_t i = 0; i < h->ring.count; i++) {
    if (data_size_ - pos < kRecHdr) pos = 0;
    RecordHeader r;
    std::memcpy(&r, data_ + pos, kRecHdr);
    if (r.len == layout::kWrapMarker) {
      if (pos == 0) return false;
      pos = 0;
      std::memcpy(&r, data_ + pos, kRecHdr);
    }
    if (r.len > max_message_ || layout::record_size(r.len) > data_size_ - pos) return false;
    bytes += r.len;
    rec_bytes += layout::record_size(r.len);
    pos += layout::record_size(r.len);
    if (pos == data_size_) pos = 0;
  }
  return bytes == h->ring.bytes && rec_bytes == h->ring.record_bytes &&
         (h->ring.count == 0 || pos == h->ring.tail % data_size_);
}

uint64_t Segment::effective_capacity() const {
  return capacity_ == 0 ? 1 : capacity_;  // a rendezvous mailbox holds the one message on offer
}

bool Segment::full_locked() const {
  return capacity_ != layout::kUnbounded && hdr_->ring.count >= effective_capacity();
}

bool Segment::full() {
  Locked l(*this);
  return l.ok() && full_locked();
}

Result<uint64_t> Segment::push(const char* data, size_t len, const Sender& from, int64_t now_ns,
                               bool force) {
  if (len > max_message_) return Errc::msg_size;
  const uint64_t rec = layout::record_size(len);
  Locked l(*this);
  if (!l.ok()) return l.error();
  SegmentHeader* h = hdr_;
  layout::RingState n = h->ring;
  if (n.head >= data_size_ || n.tail >= data_size_) {  // another participant scribbled
    h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  if (!force && full_locked()) return Errc::again;
  if (n.count == 0) n.head = n.tail = 0;  // keep an idle ring's footprint to its first pages
  // Find room for `rec` contiguous bytes (see the layout comment).
  const bool wrapped = n.count > 0 && n.tail <= n.head;
  const Errc no_room = capacity_ == layout::kUnbounded ? Errc::no_space : Errc::again;
  uint64_t at;
  bool wrap = false;
  if (wrapped) {
    if (n.head - n.tail < rec) return no_room;
    at = n.tail;
  } else if (data_size_ - n.tail >= rec) {
    at = n.tail;
  } else if (n.count == 0 || n.head >= rec) {
    at = 0;
    wrap = true;
  } else {
    return no_room;
  }
  // These markers are read only by whoever recovers from our death: atomic
  // stores so that the compiler keeps them (commit_locked overwrites them).
  std::atomic_ref<uint32_t>(h->inflight).store(layout::kInflightSend, std::memory_order_release);
  if (ctl_) {
    h->inflight_quota = rec;
    // SYNC POINT: acq_rel on the mount-wide counter; pairs with the fetch_sub in
    // settle_quota_locked(). Dying between it and the next store leaks `rec`.
    uint64_t before = ctl_->quota_used.fetch_add(rec, std::memory_order_acq_rel);
    std::atomic_ref<uint32_t>(h->inflight_quota_added).store(1, std::memory_order_release);
    if (!force && before + rec > ctl_->quota_max) {
      ctl_->quota_used.fetch_sub(rec, std::memory_order_acq_rel);
      std::atomic_ref<uint32_t>(h->inflight_quota_added).store(0, std::memory_order_release);
      std::atomic_ref<uint32_t>(h->inflight).store(0, std::memory_order_release);
      return Errc::no_space;
    }
  }
  if (wrap && data_size_ - n.tail >= kRecHdr) {
    RecordHeader m{};
    m.len = layout::kWrapMarker;
    std::memcpy(data_ + n.tail, &m, kRecHdr);
  }
  RecordHeader r{};
  r.len = static_cast<uint32_t>(len);
  r.pid = from.pid;
  r.uid = from.uid;
  r.gid = from.gid;
  r.seq = n.next_seq;
  std::memcpy(data_ + at, &r, kRecHdr);
  if (len) std::memcpy(data_ + at + kRecHdr, data, len);
  n.tail = at + rec == data_size_ ? 0 : at + rec;
  n.count++;
  n.bytes += len;
  n.record_bytes += rec;
  n.next_seq++;
  n.total_sent++;
  n.last_send_ns = now_ns;
  commit_locked(n);  // the record is complete: publish it
  return r.seq;
}

Result<Segment::Popped> Segment::pop(std::string& out, int64_t now_ns, size_t max_len) {
  Locked l(*this);
  if (!l.ok()) return l.error();
  SegmentHeader* h = hdr_;
  layout::RingState n = h->ring;
  if (n.count == 0) return Errc::again;
  uint64_t pos = n.head;
  RecordHeader r;
  if (pos >= data_size_) goto corrupt;
  if (data_size_ - pos < kRecHdr) pos = 0;
  std::memcpy(&r, data_ + pos, kRecHdr);
  if (r.len == layout::kWrapMarker && pos != 0) {
    pos = 0;
    std::memcpy(&r, data_ + pos, kRecHdr);
  }
  if (r.len > max_message_ || layout::record_size(r.len) > data_size_ - pos ||
      n.record_bytes < layout::record_size(r.len) || n.bytes < r.len)
    goto corrupt;
  if (r.len > max_len) return Errc::msg_size;  // left queued for a larger buffer
  {
    const uint64_t rec = layout::record_size(r.len);
    out.append(data_ + pos + kRecHdr, r.len);
    n.head = pos + rec == data_size_ ? 0 : pos + rec;
    n.count--;
    n.bytes -= r.len;
    n.record_bytes -= rec;
    if (n.count == 0) n.head = n.tail = 0;
    n.consumed_seq = r.seq + 1;
    n.total_received++;
    n.last_recv_ns = now_ns;
    n.quota_owed = rec;
    commit_locked(n);
    settle_quota_locked();
    return Popped{r.seq, Sender{r.pid, r.uid, r.gid}};
  }
corrupt:
  h->state.store(layout::kCorrupt, std::memory_order_release);
  return Errc::bad_message;
}

Result<uint32_t> Segment::peek_len() {
  Locked l(*this);
  if (!l.ok()) return l.error();
  SegmentHeader* h = hdr_;
  if (h->ring.count == 0) return Errc::again;
  uint64_t pos = h->ring.head;
  if (pos >= data_size_) return Errc::bad_message;
  if (data_size_ - pos < kRecHdr) pos = 0;
  RecordHeader r;
  std::memcpy(&r, data_ + pos, kRecHdr);
  if (r.len == layout::kWrapMarker && pos != 0) std::memcpy(&r, data_, kRecHdr);
  if (r.len > max_message_) return Errc::bad_message;
  return r.len;
}

bool Segment::withdraw(uint64_t seq) {
  Locked l(*this);
  if (!l.ok()) return true;  // gone: nothing left to deliver
  layout::RingState n = hdr_->ring;
  if (n.count != 1) return false;
  uint64_t pos = n.head;
  if (pos >= data_size_) return false;
  if (data_size_ - pos < kRecHdr) pos = 0;
  RecordHeader r;
  std::memcpy(&r, data_ + pos, kRecHdr);
  if (r.len == layout::kWrapMarker && pos != 0) std::memcpy(&r, data_, kRecHdr);
  if (r.seq != seq || r.len > max_message_) return false;
  n.quota_owed = layout::record_size(r.len);
  n.count = n.bytes = n.record_bytes = 0;
  n.head = n.tail = 0;
  n.total_sent--;
  commit_locked(n);
  settle_quota_locked();
  return true;
}

SegmentStats Segment::stats() {
  SegmentStats s;
  Locked l(*this);
  const SegmentHeader* h = hdr_;
  s.count = h->ring.count;
  s.bytes = h->ring.bytes;
  s.record_bytes = h->ring.record_bytes;
  s.total_sent = h->ring.total_sent;
  s.total_received = h->ring.total_received;
  s.lost = h->lost;
  s.next_seq = h->ring.next_seq;
  s.consumed_seq = h->ring.consumed_seq;
  s.last_send_ns = h->ring.last_send_ns;
  s.last_recv_ns = h->ring.last_recv_ns;
  return s;
}

uint64_t Segment::consumed_seq() {
  Locked l(*this);
  return hdr_->ring.consumed_seq;
}

// Calls f(header, payload) for each queued record, oldest first, checking every
// offset and length. False if the ring is inconsistent (f saw a prefix).
template <class F>
bool Segment::walk_locked(F&& f) const {
  const layout::RingState& n = hdr_->ring;
  if (n.count > data_size_ / kRecHdr) return false;
  uint64_t pos = n.head;
  for (uint64_t i = 0; i < n.count; i++) {
    if (pos >= data_size_) return false;
    if (data_size_ - pos < kRecHdr) pos = 0;
    RecordHeader r;
    std::memcpy(&r, data_ + pos, kRecHdr);
    if (r.len == layout::kWrapMarker && pos != 0) {
      pos = 0;
      std::memcpy(&r, data_, kRecHdr);
    }
    if (r.len > max_message_ || layout::record_size(r.len) > data_size_ - pos) return false;
    f(r, data_ + pos + kRecHdr);
    pos += layout::record_size(r.len);
    if (pos == data_size_) pos = 0;
  }
  return true;
}

uint64_t Segment::max_queued_len() {
  Locked l(*this);
  if (!l.ok()) return 0;
  uint64_t longest = 0;
  const bool ok = walk_locked([&](const RecordHeader& r, const char*) { longest = std::max<uint64_t>(longest, r.len); });
  return ok ? longest : UINT64_MAX;
}

void Segment::adopt_counters(const SegmentStats& s) {
  Locked l(*this);
  layout::RingState n = hdr_->ring;
  n.total_sent = s.total_sent;
  n.total_received = s.total_received;
  n.last_send_ns = s.last_send_ns;
  n.last_recv_ns = s.last_recv_ns;
  commit_locked(n);
  hdr_->lost = s.lost;
}

SegmentStats Segment::retire_and_take(std::vector<Taken>& out) {
  {
    Locked l(*this);
    if (!l.ok()) return stats();
    SegmentHeader* h = hdr_;
    h->state.store(layout::kRetired, std::memory_order_release);
    layout::RingState n = h->ring;
    walk_locked([&](const RecordHeader& r, const char* payload) {
      out.push_back(Taken{std::string(payload, r.len), Sender{r.pid, r.uid, r.gid}});
    });
    n.quota_owed += n.record_bytes;  // the new segment charges them again
    n.count = n.bytes = n.record_bytes = 0;
    n.head = n.tail = 0;
    commit_locked(n);
    settle_quota_locked();
  }
  SegmentStats st;
  Locked l(*this, /*any_state=*/true);
  st.total_sent = hdr_->ring.total_sent;
  st.total_received = hdr_->ring.total_received;
  st.lost = hdr_->lost;
  st.last_send_ns = hdr_->ring.last_send_ns;
  st.last_recv_ns = hdr_->ring.last_recv_ns;
  return st;
}

void Segment::unretire_and_put_back(const std::vector<Taken>& queued, const SegmentStats& st) {
  {
    Locked l(*this, /*any_state=*/true);
    hdr_->state.store(layout::kLive, std::memory_order_release);
  }
  for (const auto& t : queued) (void)push(t.data.data(), t.data.size(), t.from, st.last_send_ns, true);
  adopt_counters(st);
}

void Segment::wake_all() {
  // SYNC POINT: seq_cst, as after_push/after_pop; every sleeper wakes and re-checks.
  hdr_->pushed.fetch_add(1, std::memory_order_seq_cst);
  hdr_->popped.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&hdr_->pushed, INT_MAX);
  futex_wake(&hdr_->popped, INT_MAX);
}

void Segment::set_state(uint32_t state) {
  Locked l(*this);
  hdr_->state.store(state, std::memory_order_release);
}

void Segment::discard_all() {
  Locked l(*this);
  layout::RingState n = hdr_->ring;
  n.quota_owed += n.record_bytes;
  n.count = n.bytes = n.record_bytes = 0;
  n.head = n.tail = 0;
  commit_locked(n);
  settle_quota_locked();
}

// Publishes the next ring state so that a death at any instant leaves either
// the old state or (rolled forward by recover_locked) the new one.
void Segment::commit_locked(const layout::RingState& n) {
  SegmentHeader* h = hdr_;
  // SYNC POINT: each release store orders what came before it for the next
  // lock holder, which may be recovering from our death (recover_locked).
  h->pending = n;
  std::atomic_ref<uint32_t>(h->pending_valid).store(1, std::memory_order_release);
  h->ring = n;
  std::atomic_ref<uint32_t>(h->inflight).store(0, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->inflight_quota_added).store(0, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->pending_valid).store(0, std::memory_order_release);
}

// Gives back to the mount's quota what a committed receive freed.
void Segment::settle_quota_locked() {
  // Taken before it is given back: dying in between leaks it rather than
  // giving it back twice.
  const uint64_t owed = std::atomic_ref<uint64_t>(hdr_->ring.quota_owed).exchange(0, std::memory_order_acq_rel);
  if (ctl_ && owed) {
    // SYNC POINT: pairs with the fetch_add in push().
    uint64_t cur = ctl_->quota_used.load(std::memory_order_acquire);
    while (!ctl_->quota_used.compare_exchange_weak(cur, cur - std::min(cur, owed), std::memory_order_acq_rel)) {
    }
  }
}

// After a participant died holding the lock: finish its commit if it had
// started one, or undo its unfinished send and count it lost; then check the ring.
bool Segment::recover_locked() const {
  SegmentHeader* h = hdr_;
  auto* self = const_cast<Segment*>(this);
  if (std::atomic_ref<uint32_t>(h->pending_valid).load(std::memory_order_acquire)) {
    self->commit_locked(h->pending);
  } else if (h->inflight == layout::kInflightSend) {
    if (h->inflight_quota_added && ctl_)
      ctl_->quota_used.fetch_sub(std::min(h->inflight_quota, ctl_->quota_used.load()),
                                 std::memory_order_acq_rel);
    h->lost++;
    layout::RingState n = h->ring;
    n.total_sent++;  // it was sent, and lost with its sender
    self->commit_locked(n);
  }
  h->inflight = 0;
  h->inflight_quota_added = 0;
  self->settle_quota_locked();
  return check_ring_locked();
}

void Segment::kick_daemon(uint32_t watch_bit) {
  // SYNC POINT: the fence orders our ring change (made under `lock`) before the
  // load of daemon_watch; pairs with the daemon's seq_cst store of daemon_watch
  // followed by its re-check of the ring (Mailbox::settle_locked).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!ctl_ || !(hdr_->daemon_watch.load(std::memory_order_seq_cst) & watch_bit)) return;
  hdr_->kick.store(1, std::memory_order_release);
  ctl_->doorbell.fetch_add(1, std::memory_order_release);
  futex_wake(&ctl_->doorbell, 1);
}

void Segment::after_push(bool by_daemon) {
  // SYNC POINT: seq_cst increment then seq_cst load of the sleeper count;
  // pairs with a sleeper's seq_cst increment of sleeping_receivers before its
  // FUTEX_WAIT on the value of `pushed` it read before trying (Client::wait).
  hdr_->pushed.fetch_add(1, std::memory_order_seq_cst);
  if (hdr_->sleeping_receivers.load(std::memory_order_seq_cst) > 0) futex_wake(&hdr_->pushed, INT_MAX);
  if (!by_daemon) kick_daemon(layout::kWatchReadable);
}

void Segment::after_pop(bool by_daemon) {
  // SYNC POINT: as in after_push, for senders sleeping on `popped`.
  hdr_->popped.fetch_add(1, std::memory_order_seq_cst);
  if (hdr_->sleeping_senders.load(std::memory_order_seq_cst) > 0) futex_wake(&hdr_->popped, INT_MAX);
  if (!by_daemon) kick_daemon(layout::kWatchWritable);
}

void Segment::unlink_file() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace mbx

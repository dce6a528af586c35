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

// Holds the segment's robust mutex. A participant that died holding it left
// the ring in an unknown state: re-validate, count its in-flight message as
// lost, and either mark the mutex consistent or the segment corrupt.
class Segment::Locked {
 public:
  explicit Locked(const Segment& s) : s_(s) {
    int rc = pthread_mutex_lock(&s.hdr_->lock);
    if (rc == EOWNERDEAD) {
      if (s.check_ring_locked()) {
        s.hdr_->lost++;
        pthread_mutex_consistent(&s.hdr_->lock);
        rc = 0;
      } else {
        s.hdr_->state.store(layout::kCorrupt, std::memory_order_release);
        pthread_mutex_consistent(&s.hdr_->lock);
      }
    }
    locked_ = rc == 0 || rc == EOWNERDEAD;
    ok_ = rc == 0 && s.hdr_->state.load(std::memory_order_acquire) == layout::kLive;
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
  if (h->head >= data_size_ || h->tail >= data_size_ || h->count > data_size_ / kRecHdr)
    return false;
  uint64_t pos = h->head, bytes = 0, rec_bytes = 0;
  for (uint64_t i = 0; i < h->count; i++) {
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
  return bytes == h->bytes && rec_bytes == h->record_bytes &&
         (h->count == 0 || pos == h->tail % data_size_);
}

uint64_t Segment::effective_capacity() const {
  return capacity_ == 0 ? 1 : capacity_;  // a rendezvous mailbox holds the one message on offer
}

bool Segment::full_locked() const {
  return capacity_ != layout::kUnbounded && hdr_->count >= effective_capacity();
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
  if (h->head >= data_size_ || h->tail >= data_size_) {  // another participant scribbled
    h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  if (!force && full_locked()) return Errc::again;
  if (h->count == 0) h->head = h->tail = 0;  // keep an idle ring's footprint to its first pages
  // Find room for `rec` contiguous bytes (see the layout comment).
  const bool wrapped = h->count > 0 && h->tail <= h->head;
  uint64_t at;
  bool wrap = false;
  if (wrapped) {
    if (h->head - h->tail < rec) return capacity_ == layout::kUnbounded ? Errc::no_space : Errc::again;
    at = h->tail;
  } else if (data_size_ - h->tail >= rec) {
    at = h->tail;
  } else if (h->count == 0 || h->head >= rec) {
    at = 0;
    wrap = true;
  } else {
    return capacity_ == layout::kUnbounded ? Errc::no_space : Errc::again;
  }
  if (ctl_) {
    // SYNC POINT: acq_rel on the mount-wide counter; pairs with the fetch_sub in pop().
    uint64_t before = ctl_->quota_used.fetch_add(rec, std::memory_order_acq_rel);
    if (!force && before + rec > ctl_->quota_max) {
      ctl_->quota_used.fetch_sub(rec, std::memory_order_acq_rel);
      return Errc::no_space;
    }
  }
  if (wrap && data_size_ - h->tail >= kRecHdr) {
    RecordHeader m{};
    m.len = layout::kWrapMarker;
    std::memcpy(data_ + h->tail, &m, kRecHdr);
  }
  RecordHeader r{};
  r.len = static_cast<uint32_t>(len);
  r.pid = from.pid;
  r.uid = from.uid;
  r.gid = from.gid;
  r.seq = h->next_seq;
  std::memcpy(data_ + at, &r, kRecHdr);
  if (len) std::memcpy(data_ + at + kRecHdr, data, len);
  // Commit: the ring fields change only after the record is complete.
  h->tail = at + rec == data_size_ ? 0 : at + rec;
  h->count++;
  h->bytes += len;
  h->record_bytes += rec;
  h->next_seq++;
  h->total_sent++;
  h->last_send_ns = now_ns;
  return r.seq;
}

Result<Segment::Popped> Segment::pop(std::string& out, int64_t now_ns, size_t max_len) {
  Locked l(*this);
  if (!l.ok()) return l.error();
  SegmentHeader* h = hdr_;
  if (h->count == 0) return Errc::again;
  uint64_t pos = h->head;
  if (pos >= data_size_) goto corrupt;
  if (data_size_ - pos < kRecHdr) pos = 0;
  RecordHeader r;
  std::memcpy(&r, data_ + pos, kRecHdr);
  if (r.len == layout::kWrapMarker && pos != 0) {
    pos = 0;
    std::memcpy(&r, data_ + pos, kRecHdr);
  }
  if (r.len > max_message_ || layout::record_size(r.len) > data_size_ - pos ||
      h->record_bytes < layout::record_size(r.len) || h->bytes < r.len)
    goto corrupt;
  if (r.len > max_len) return Errc::msg_size;  // left queued for a larger buffer
  {
    const uint64_t rec = layout::record_size(r.len);
    out.append(data_ + pos + kRecHdr, r.len);
    h->head = pos + rec == data_size_ ? 0 : pos + rec;
    h->count--;
    h->bytes -= r.len;
    h->record_bytes -= rec;
    if (h->count == 0) h->head = h->tail = 0;
    h->consumed_seq = r.seq + 1;
    h->total_received++;
    h->last_recv_ns = now_ns;
    // SYNC POINT: pairs with the fetch_add in push().
    if (ctl_) ctl_->quota_used.fetch_sub(rec, std::memory_order_acq_rel);
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
  if (h->count == 0) return Errc::again;
  uint64_t pos = h->head;
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
  SegmentHeader* h = hdr_;
  if (h->count != 1) return false;
  uint64_t pos = h->head;
  if (pos >= data_size_) return false;
  if (data_size_ - pos < kRecHdr) pos = 0;
  RecordHeader r;
  std::memcpy(&r, data_ + pos, kRecHdr);
  if (r.len == layout::kWrapMarker && pos != 0) std::memcpy(&r, data_, kRecHdr);
  if (r.seq != seq || r.len > max_message_) return false;
  const uint64_t rec = layout::record_size(r.len);
  h->count = 0;
  h->bytes = 0;
  h->record_bytes = 0;
  h->head = h->tail = 0;
  h->total_sent--;
  if (ctl_) ctl_->quota_used.fetch_sub(rec, std::memory_order_acq_rel);
  return true;
}

SegmentStats Segment::stats() {
  SegmentStats s;
  Locked l(*this);
  const SegmentHeader* h = hdr_;
  s.count = h->count;
  s.bytes = h->bytes;
  s.record_bytes = h->record_bytes;
  s.total_sent = h->total_sent;
  s.total_received = h->total_received;
  s.lost = h->lost;
  s.next_seq = h->next_seq;
  s.consumed_seq = h->consumed_seq;
  s.last_send_ns = h->last_send_ns;
  s.last_recv_ns = h->last_recv_ns;
  return s;
}

uint64_t Segment::consumed_seq() {
  Locked l(*this);
  return hdr_->consumed_seq;
}

uint64_t Segment::max_queued_len() {
  Locked l(*this);
  if (!l.ok()) return 0;
  uint64_t pos = hdr_->head, longest = 0;
  for (uint64_t i = 0; i < hdr_->count; i++) {
    if (pos >= data_size_) return UINT64_MAX;
    if (data_size_ - pos < kRecHdr) pos = 0;
    RecordHeader r;
    std::memcpy(&r, data_ + pos, kRecHdr);
    if (r.len == layout::kWrapMarker && pos != 0) {
      pos = 0;
      std::memcpy(&r, data_, kRecHdr);
    }
    if (r.len > max_message_ || layout::record_size(r.len) > data_size_ - pos) return UINT64_MAX;
    longest = std::max<uint64_t>(longest, r.len);
    pos += layout::record_size(r.len);
    if (pos == data_size_) pos = 0;
  }
  return longest;
}

void Segment::adopt_counters(const SegmentStats& s) {
  Locked l(*this);
  hdr_->total_sent = s.total_sent;
  hdr_->total_received = s.total_received;
  hdr_->lost = s.lost;
  hdr_->last_send_ns = s.last_send_ns;
  hdr_->last_recv_ns = s.last_recv_ns;
}

void Segment::set_state(uint32_t state) {
  Locked l(*this);
  hdr_->state.store(state, std::memory_order_release);
}

void Segment::discard_all() {
  Locked l(*this);
  SegmentHeader* h = hdr_;
  if (ctl_ && h->record_bytes <= ctl_->quota_max)
    ctl_->quota_used.fetch_sub(h->record_bytes, std::memory_order_acq_rel);
  h->count = h->bytes = h->record_bytes = 0;
  h->head = h->tail = 0;
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

// SPDX-License-Identifier: MIT
#include "shm/segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "base/log.h"

namespace mbx {

using layout::RecordHeader;
using layout::SegmentHeader;

namespace {
constexpr uint64_t kPage = 4096;
constexpr uint64_t kRecHdr = sizeof(RecordHeader);
uint64_t round_page(uint64_t n) { return (n + kPage - 1) & ~(kPage - 1); }

// Tries a no_wait lock this many times (a holder between two instructions of
// a short commit lets go within a few hundred cycles) before calling it held.
constexpr int kTrySpins = 100;

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// The `__kind` glibc gives a robust process-shared mutex, as create() makes
// them: any other value is a scribble (and could make the mutex another type).
int robust_kind() {
  static const int kind = [] {
    pthread_mutex_t m;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&m, &a);
    pthread_mutexattr_destroy(&a);
    const int k = m.__data.__kind;
    pthread_mutex_destroy(&m);
    return k;
  }();
  return kind;
}

int mutex_word(pthread_mutex_t* m) { return std::atomic_ref<int>(m->__data.__lock).load(std::memory_order_relaxed); }

// True unless `tid` is certainly not a participant of the segment at `path`:
// no such thread, or one whose process does not map that file.
bool may_participate(pid_t tid, const std::string& path) {
  if (tid <= 0) return false;
  if (::kill(tid, 0) != 0 && errno != EPERM) return false;  // kill(2) accepts any thread id
  if (path.empty()) return true;
  UniqueFd fd(::open(("/proc/" + std::to_string(tid) + "/maps").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno != ENOENT;  // cannot tell: assume it does
  std::string maps;
  char buf[16384];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0;) maps.append(buf, static_cast<size_t>(n));
  return maps.find(path) != std::string::npos;
}

// The calling thread's id, cached per thread; the cache is emptied in a
// fork's child (whose one thread has another id). The biased send half is
// the thread's, not the process's.
thread_local pid_t t_tid = 0;
// -1: not tried in this process; 0: the kernel cannot; 1: registered.
std::atomic<int> g_membarrier{-1};
void after_fork_in_child() {
  t_tid = 0;
  g_membarrier.store(-1, std::memory_order_relaxed);  // a new process: not registered
}
pid_t this_tid() {
  if (t_tid == 0) [[unlikely]] {
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(nullptr, nullptr, after_fork_in_child); });
    t_tid = static_cast<pid_t>(::syscall(SYS_gettid));
  }
  return t_tid;
}
// A biased sender's process must receive the barrier of a revoker
// (MEMBARRIER_CMD_GLOBAL_EXPEDITED reaches registered processes only).
bool membarrier_registered() {
  int m = g_membarrier.load(std::memory_order_relaxed);
  if (m < 0) {
    const long q = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    m = q > 0 && (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
        ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
    g_membarrier.store(m, std::memory_order_relaxed);
  }
  return m == 1;
}

template <class T>
T load_word(const T& v) {
  return std::atomic_ref<T>(const_cast<T&>(v)).load(std::memory_order_relaxed);
}

// Copies a state a word at a time. A plain struct copy is vectorised into
// 16-byte loads of a state just written field by field on the stack, which
// cannot be forwarded from the store buffer: each waits until every earlier
// store (the record's, to lines another core holds) has reached the cache,
// and the tail's publication only starts after that.
template <class T>
void store_words(T& dst, const T& src) {
  static_assert(sizeof(T) % 8 == 0 && alignof(T) >= 8);
  auto* d = reinterpret_cast<uint64_t*>(&dst);
  const auto* s = reinterpret_cast<const uint64_t*>(&src);
#pragma GCC unroll 8  // a load and a store per word: the loop's own instructions were half the commit
  for (size_t i = 0; i < sizeof(T) / 8; i++) std::atomic_ref<uint64_t>(d[i]).store(s[i], std::memory_order_relaxed);
}
}  // namespace

int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int64_t coarse_realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const timespec* rel) {
  return static_cast<int>(syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, rel, nullptr, 0));
}

int futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected, const timespec& abs_monotonic) {
#ifdef SYS_futex_waitv
  static std::atomic<bool> no_waitv{false};  // relaxed: a hint, set once by an ENOSYS
  if (!no_waitv.load(std::memory_order_relaxed)) {
    futex_waitv w{};
    w.val = expected;
    w.uaddr = reinterpret_cast<uintptr_t>(word);
    w.flags = FUTEX_32;  // shared: no FUTEX_PRIVATE_FLAG
    const long r = syscall(SYS_futex_waitv, &w, 1u, 0u, &abs_monotonic, CLOCK_MONOTONIC);
    if (r >= 0) return 0;
    if (errno != ENOSYS) return -1;
    no_waitv.store(true, std::memory_order_relaxed);
  }
#endif
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t left = (int64_t{abs_monotonic.tv_sec} - now.tv_sec) * 1000000000 + (abs_monotonic.tv_nsec - now.tv_nsec);
  if (left < 0) left = 0;
  const timespec rel{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
  return futex_wait(word, expected, &rel);
}

int futex_wake(std::atomic<uint32_t>* word, int n) {
  return static_cast<int>(syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, n, nullptr, nullptr, 0));
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

// pthread_mutex_lock(), but a wake-up lost to a killed waiter costs a tenth
// of a second, not forever: a robust mutex's unlock wakes one waiter, and
// one killed after that wake-up and before it took the lock passes it on to
// nobody, leaving the others asleep on a free lock.
static int wait_for_lock(pthread_mutex_t* m) {
  if (const int rc = pthread_mutex_trylock(m); rc != EBUSY) return rc;  // uncontended: no clock read
  for (;;) {
    // CLOCK_REALTIME and timedlock, not clocklock: TSan (GCC 12) does not
    // intercept pthread_mutex_clocklock, so it would see every unlock as bogus.
    // A clock step only makes one slice longer or shorter.
    timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 100 * 1000 * 1000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    const int rc = pthread_mutex_timedlock(m, &until);
    if (rc != ETIMEDOUT) return rc;
  }
}

// Takes one half's robust mutex. A participant that died holding it is
// recovered from (recover_*_locked); if the ring is then still inconsistent
// (scribbled, not crashed), the segment is marked corrupt. The uncontended
// lock of a live segment is inline: the rest (waiting, recovery, no_wait
// mode) is out of line, so the fast path saves no registers for it.
inline Errc Segment::lock(Side side, bool any_state) const {
  SegmentHeader* h = hdr_;
  pthread_mutex_t* m = side == Side::send ? &h->send_lock : &h->recv_lock;
  const int rc = no_wait_ ? EBUSY : pthread_mutex_trylock(m);
  if (rc == 0) [[likely]] {
    // SYNC POINT: acquire pairs with the release store of state (set_state, under both locks).
    const uint32_t st = h->state.load(std::memory_order_acquire);
    if (any_state || st == layout::kLive) [[likely]] {
      if (version_ >= 7 && bias_word(side).load(std::memory_order_relaxed) != 0) [[unlikely]]
        if (Errc e = revoke_bias_locked(side, /*may_give_up=*/true); e != Errc::ok) {
          pthread_mutex_unlock(m);
          return e;
        }
      return Errc::ok;
    }
    pthread_mutex_unlock(m);
    return st == layout::kDeleted ? Errc::removed : st == layout::kRetired ? Errc::stale : Errc::bad_message;
  }
  return lock_slow(side, any_state, rc);
}

// `tried`: what lock()'s trylock returned (EOWNERDEAD: it holds the lock).
Errc Segment::lock_slow(Side side, bool any_state, int tried) const {
  SegmentHeader* h = hdr_;
  pthread_mutex_t* m = side == Side::send ? &h->send_lock : &h->recv_lock;
  int rc = tried;
  if (no_wait_) {
    if (!header_intact()) {
      h->state.store(layout::kCorrupt, std::memory_order_release);
      return Errc::bad_message;
    }
    rc = try_acquire(m);
    if (rc == EBUSY) return held_elsewhere(m);
  } else if (rc == EBUSY) {
    rc = wait_for_lock(m);
  }
  if (rc == EOWNERDEAD) {
    // A biased thread may be inside an operation (the dead holder was
    // waiting for it): recovering under it would undo its work. So the half
    // is taken back first, waiting for it even in no_wait mode (a double
    // fault: the lock must be made consistent before it is let go).
    if (version_ >= 7 && bias_word(side).load(std::memory_order_relaxed) != 0)
      (void)revoke_bias_locked(side, /*may_give_up=*/false);
    const bool ok = side == Side::send ? recover_send_locked() : recover_recv_locked();
    if (!ok) h->state.store(layout::kCorrupt, std::memory_order_release);
    log(ok ? LogLevel::notice : LogLevel::error, "a process died holding a mailbox's %s lock: %s",
        side == Side::send ? "send" : "receive", ok ? "recovered" : "the mailbox is corrupt now");
    pthread_mutex_consistent(m);
    rc = 0;
  }
  if (rc != 0) {  // ENOTRECOVERABLE, or a scribbled mutex
    if (no_wait_) h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  const uint32_t st = h->state.load(std::memory_order_acquire);
  if (any_state || st == layout::kLive) {
    if (version_ >= 7 && bias_word(side).load(std::memory_order_relaxed) != 0)
      if (Errc e = revoke_bias_locked(side, /*may_give_up=*/true); e != Errc::ok) {
        pthread_mutex_unlock(m);
        return e;
      }
    return Errc::ok;
  }
  pthread_mutex_unlock(m);
  return st == layout::kDeleted ? Errc::removed : st == layout::kRetired ? Errc::stale : Errc::bad_message;
}

// Takes the other half's lock only if it is free (for best-effort work done
// while holding one lock). A holder that died is recovered from as lock()
// would, and the lock left free: the work waits for the next time.
bool Segment::try_lock(Side side) const {
  pthread_mutex_t* m = side == Side::send ? &hdr_->send_lock : &hdr_->recv_lock;
  if (no_wait_ && m->__data.__kind != robust_kind()) return false;  // lock() will say corrupt
  const int rc = pthread_mutex_trylock(m);
  if (rc == EOWNERDEAD) {
    if (version_ >= 7 && bias_word(side).load(std::memory_order_relaxed) != 0)  // as in lock_slow()
      (void)revoke_bias_locked(side, /*may_give_up=*/false);
    const bool ok = side == Side::send ? recover_send_locked() : recover_recv_locked();
    if (!ok) hdr_->state.store(layout::kCorrupt, std::memory_order_release);
    log(ok ? LogLevel::notice : LogLevel::error, "a process died holding a mailbox's %s lock: %s",
        side == Side::send ? "send" : "receive", ok ? "recovered" : "the mailbox is corrupt now");
    pthread_mutex_consistent(m);
    pthread_mutex_unlock(m);
    return false;
  }
  if (rc == 0 && version_ >= 7) {
    // Biased to another thread, or taken back from one still inside an
    // operation: waiting for it is not for a best-effort try.
    // One of ours with the busy word set was left by a dead thread with our
    // id: lock() recovers it.
    const uint32_t b = bias_word(side).load(std::memory_order_relaxed);
    const bool busy = busy_word(side).load(std::memory_order_acquire) != 0;
    if ((b & ~layout::kBiasFlags) == static_cast<uint32_t>(this_tid()) && !busy) {
      bias_word(side).store(0, std::memory_order_relaxed);  // ours, and we are not inside one
      biased_[static_cast<int>(side)] = false;
    } else if (b != 0 && (!(b & layout::kBiasFenced) || busy)) {
      pthread_mutex_unlock(m);
      return false;
    }
  }
  return rc == 0;
}

// no_wait mode: trylock, a bounded number of times.
int Segment::try_acquire(pthread_mutex_t* m) const {
  int rc = EBUSY;
  for (int i = 0; i < kTrySpins && rc == EBUSY; i++) {
    if (i) cpu_relax();
    rc = pthread_mutex_trylock(m);
  }
  return rc;
}

// A no_wait lock stayed busy. Its word holds the owner's thread id: a live
// thread of a process that maps the segment holds it (contended, try later),
// or the word names no such thread. A
// holder that lets go or dies changes the word (unlock, or the kernel's
// robust-list cleanup at its exit), so a word that still holds the same
// value after its owner was found missing was left by nobody: corrupt.
Errc Segment::held_elsewhere(pthread_mutex_t* m) const {
  const int word = mutex_word(m);
  // No owner: it was let go (or its owner's death recorded) after our last try.
  if ((word & FUTEX_TID_MASK) == 0) return Errc::contended;
  if (may_participate(word & FUTEX_TID_MASK, path_)) return Errc::contended;
  if (mutex_word(m) != word) return Errc::contended;  // it moved meanwhile: look again later
  hdr_->state.store(layout::kCorrupt, std::memory_order_release);
  return Errc::bad_message;
}

// What no participant ever rewrites still matches the private copies, and
// both mutexes are still robust process-shared ones (no_wait mode checks this
// before each lock: one line, read-mostly).
bool Segment::header_intact() const {
  const SegmentHeader* h = hdr_;
  return load_word(h->magic) == layout::kMagic && load_word(h->version) == version_ &&
         load_word(h->header_size) == layout::kHeaderSize && load_word(h->data_size) == data_size_ &&
         load_word(h->max_message) == max_message_ && h->state.load(std::memory_order_relaxed) <= layout::kCorrupt &&
         load_word(h->send_lock.__data.__kind) == robust_kind() &&
         load_word(h->recv_lock.__data.__kind) == robust_kind();
}

void Segment::mark_corrupt() {
  if (!hdr_) return;
  hdr_->state.store(layout::kCorrupt, std::memory_order_release);
  wake_all();
}

void Segment::unlock(Side side) const {
  if (pthread_mutex_unlock(side == Side::send ? &hdr_->send_lock : &hdr_->recv_lock) != 0) {
    poisoned_ = true;  // its word no longer names us: scribbled while held
    hdr_->state.store(layout::kCorrupt, std::memory_order_release);
  }
}

Segment::~Segment() {
  for (Side side : {Side::send, Side::recv})  // gives the biases back
    if (biased_[static_cast<int>(side)] && map_.get() && !poisoned_ && try_lock(side)) unlock(side);
  if (!poisoned_ || !map_.get()) return;
  // The mutex stays linked in this thread's robust list, which glibc updates
  // at later locks: private anonymous pages replace the segment at the same
  // addresses (its shared memory is let go) and are never unmapped.
  ::mmap(map_.get(), map_.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  (void)new Mapping(std::move(map_));  // deliberately leaked: the addresses stay reserved
}

// Holds one half's lock for a scope.
// Holds one half's lock for a scope. The lock may not be taken (contended,
// corrupt, or the state says stop): the caller checks ok() and touches
// nothing of that half otherwise (the checker assumes it held from the start).
class SCOPED_CAPABILITY Segment::SendLocked {
 public:
  explicit SendLocked(const Segment& s, bool any_state = false) ACQUIRE(s.send_lock_) NO_THREAD_SAFETY_ANALYSIS
      : s_(s) {
    err_ = s.lock(Side::send, any_state);
  }
  ~SendLocked() RELEASE() NO_THREAD_SAFETY_ANALYSIS {
    if (err_ == Errc::ok) s_.unlock(Side::send);
  }
  SendLocked(const SendLocked&) = delete;
  SendLocked& operator=(const SendLocked&) = delete;
  bool ok() const { return err_ == Errc::ok; }
  Errc error() const { return err_; }

 private:
  const Segment& s_;
  Errc err_;
};

class SCOPED_CAPABILITY Segment::RecvLocked {
 public:
  explicit RecvLocked(const Segment& s, bool any_state = false) ACQUIRE(s.recv_lock_) NO_THREAD_SAFETY_ANALYSIS
      : s_(s) {
    err_ = s.lock(Side::recv, any_state);
  }
  ~RecvLocked() RELEASE() NO_THREAD_SAFETY_ANALYSIS {
    if (err_ == Errc::ok) s_.unlock(Side::recv);
  }
  RecvLocked(const RecvLocked&) = delete;
  RecvLocked& operator=(const RecvLocked&) = delete;
  bool ok() const { return err_ == Errc::ok; }
  Errc error() const { return err_; }

 private:
  const Segment& s_;
  Errc err_;
};

// Holds both locks, in the documented order, but never waits for recv_lock
// while holding send_lock: a participant that holds recv_lock (a view) may
// take send_lock next (it sends while it looks at a message), and waiting
// for each other would deadlock. So recv_lock is only tried under send_lock;
// if it is busy, send_lock is given back, recv_lock waited for on its own
// (and given back), and the whole taken again.
class SCOPED_CAPABILITY Segment::Both {
 public:
  explicit Both(const Segment& s, bool any_state = false) ACQUIRE(s.send_lock_, s.recv_lock_) NO_THREAD_SAFETY_ANALYSIS
      : s_(s) {
    for (int round = 0;; round++) {
      err_ = s.lock(Side::send, any_state);  // checks the state too: stable while held
      if (err_ != Errc::ok) return;
      if (s.try_lock(Side::recv)) return;
      s.unlock(Side::send);
      // Waits for its holder (no_wait: tries it), recovers a dead one.
      err_ = s.lock(Side::recv, /*any_state=*/true);
      if (err_ != Errc::ok) return;
      s.unlock(Side::recv);
      if (s.no_wait_ && round == 3) {  // it keeps being taken: not worth spinning on
        err_ = Errc::contended;
        return;
      }
    }
  }
  ~Both() RELEASE() NO_THREAD_SAFETY_ANALYSIS {
    if (err_ != Errc::ok) return;
    s_.unlock(Side::recv);
    s_.unlock(Side::send);
  }
  Both(const Both&) = delete;
  Both& operator=(const Both&) = delete;
  bool ok() const { return err_ == Errc::ok; }
  Errc error() const { return err_; }

 private:
  const Segment& s_;
  Errc err_ = Errc::ok;
};

Result<Segment> Segment::create(const std::string& path, uint64_t capacity, uint64_t max_message, uint64_t data_size,
                                mode_t mode) {
  if (max_message > UINT32_MAX - 64 || data_size < layout::record_size(max_message) * 2 || data_size % kPage != 0)
    return Errc::invalid;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (!fd.valid()) return from_errno(errno);
  const uint64_t total = layout::kHeaderSize + data_size;
  // The header's page is allocated now (the record area a chunk at a time,
  // populate_locked()): a store into a page a full filesystem cannot provide
  // would raise SIGBUS.
  if (::ftruncate(fd.get(), static_cast<off_t>(total)) != 0 ||
      (::fallocate(fd.get(), 0, 0, layout::kHeaderSize) != 0 && errno != EOPNOTSUPP)) {
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
  s.version_ = layout::kVersion;
  s.keep_ = std::min(layout::kKeepResident, data_size);

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
  pthread_mutex_init(&h->send_lock, &a);
  pthread_mutex_init(&h->recv_lock, &a);
  pthread_mutexattr_destroy(&a);
  h->state.store(layout::kLive, std::memory_order_relaxed);
  // SYNC POINT: publishes the initialised header; pairs with the acquire load
  // of `magic` in attach().
  std::atomic_ref<uint64_t>(h->magic).store(layout::kMagic, std::memory_order_release);
  return s;
}

Result<Segment> Segment::attach(const std::string& path, bool no_wait) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return from_errno(errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return from_errno(errno);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < layout::kHeaderSize * 2) return Errc::bad_message;
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return from_errno(errno);
  Mapping map(p, total);
  auto* h = static_cast<SegmentHeader*>(p);
  // Validate everything the geometry depends on before trusting any offset.
  if (std::atomic_ref<uint64_t>(h->magic).load(std::memory_order_acquire) != layout::kMagic ||
      h->version < layout::kOldestVersion || h->version > layout::kVersion || h->header_size != layout::kHeaderSize ||
      h->data_size != total - layout::kHeaderSize || h->data_size % kPage != 0 || h->max_message > UINT32_MAX - 64 ||
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
  s.version_ = h->version;
  s.keep_ = s.version_ >= 5 ? std::min(layout::kKeepResident, s.data_size_) : 0;
  s.no_wait_ = no_wait;
  {
    Both l(s);
    if (!l.ok()) return l.error();
    if (!s.check_ring_locked()) {
      h->state.store(layout::kCorrupt, std::memory_order_release);
      return Errc::bad_message;
    }
  }
  return s;
}

// Positions as the other half published them: the ring never holds more than
// data_size bytes and the tail is never behind the head.
bool Segment::positions_sane() const {
  const uint64_t head = hdr_->head_pub.load(std::memory_order_acquire);
  const uint64_t tail = hdr_->tail_pub.load(std::memory_order_acquire);
  return tail - head <= data_size_;
}

// Calls f(position, header, payload) for each queued record, oldest first,
// checking every offset and length. False if the ring is inconsistent (f saw
// a prefix). Needs recv_lock (records between head and tail_pub are immutable
// until a receiver removes them).
template <class F>
bool Segment::walk_locked(F&& f) const {
  return walk_to_locked(hdr_->tail_pub.load(std::memory_order_acquire), false, f);
}

// A record's flags word: version 6, a priority and maybe kTaken (never on the
// head's record, never with priority 0: only a higher priority is taken out
// of order); before, 0. Anything else is a scribble.
bool Segment::flags_ok(const RecordHeader& r, bool first) const {
  if (version_ < 6) return r.flags == 0;
  if (r.flags & ~(layout::kPrioMask | layout::kTaken)) return false;
  return !(r.flags & layout::kTaken) || (!first && (r.flags & layout::kPrioMask));
}

// walk_locked() up to `tail` (published, read with acquire), visiting the
// tombstones too if asked.
template <class F>
bool Segment::walk_to_locked(uint64_t tail, bool tombstones, F&& f) const {
  uint64_t pos = hdr_->recv.head;
  if (tail - pos > data_size_) return false;
  bool first = true;
  while (pos != tail) {
    uint64_t off = pos % data_size_;
    RecordHeader r;
    if (data_size_ - off >= kRecHdr) std::memcpy(&r, data_ + off, kRecHdr);
    if (data_size_ - off < kRecHdr || r.len == layout::kWrapMarker) {
      if (off == 0 || tail - pos < data_size_ - off) return false;
      pos += data_size_ - off;  // the rest of this lap is a gap
      off = 0;
      if (pos == tail) break;  // a restart's gap (restart_if_empty_locked), nothing after it yet
      if (tail - pos < kRecHdr) return false;
      std::memcpy(&r, data_, kRecHdr);
    }
    const uint64_t rec = layout::record_size(r.len);
    if (r.len > max_message_ || rec > data_size_ - off || rec > tail - pos || !flags_ok(r, first)) return false;
    if (tombstones || !(r.flags & layout::kTaken)) f(pos, r, data_ + off + kRecHdr);
    first = false;
    pos += rec;
  }
  return true;
}

// Checks that the queued records add up to the counters. Needs both locks.
bool Segment::check_ring_locked() const {
  const SegmentHeader* h = hdr_;
  if (h->tail_pub.load(std::memory_order_relaxed) != h->send.tail ||
      h->head_pub.load(std::memory_order_relaxed) != h->recv.head ||
      h->popped_pub.load(std::memory_order_relaxed) != h->recv.popped || h->recv.popped > h->send.next_seq ||
      h->send.quota_credit > credit_bound() || !sizing_sane() || h->recv.popped_bytes > h->send.sent_bytes ||
      h->recv.popped_record_bytes > h->send.sent_record_bytes)
    return false;
  uint64_t count = 0, bytes = 0, rec_bytes = 0, prio = 0, tombs = 0;
  const bool ok = walk_to_locked(h->send.tail, true, [&](uint64_t, const RecordHeader& r, const char*) {
    if (r.flags & layout::kTaken) {
      tombs++;
      return;
    }
    count++;
    bytes += r.len;
    rec_bytes += layout::record_size(r.len);
    if (r.flags) prio++;
  });
  if (!ok || count != h->send.next_seq - h->recv.popped || bytes != h->send.sent_bytes - h->recv.popped_bytes ||
      rec_bytes != h->send.sent_record_bytes - h->recv.popped_record_bytes)
    return false;
  if (version_ < 6) return true;
  // The priority words err only one way (layout.h): the other way is a
  // scribble. Both locks are held: they are made exact here.
  const uint64_t pushed = h->prio_pushed.load(std::memory_order_relaxed), popped = load_word(h->prio_popped);
  if (h->recv_take != 0 || popped > pushed || pushed - popped < prio || load_word(h->tombs) < tombs) return false;
  std::atomic_ref<uint64_t>(hdr_->prio_popped).store(pushed - prio, std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(hdr_->tombs).store(tombs, std::memory_order_relaxed);
  return true;
}

// Version 5's sender policy words are in range (version 4 does not use them).
bool Segment::sizing_sane() const {
  if (version_ < 5) return true;
  const uint64_t lap_max = load_word(hdr_->lap_max), populated = load_word(hdr_->populated);
  return lap_max <= layout::record_size(max_message_) && lap_max % 8 == 0 && populated <= keep_ &&
         populated % kPage == 0;
}

uint64_t Segment::effective_capacity() const {
  return capacity_ == 0 ? 1 : capacity_;  // a rendezvous mailbox holds the one message on offer
}

// Messages queued, as a sender sees it (needs send_lock; a receive may
// already have taken more).
uint64_t Segment::queued_locked() const {
  return hdr_->send.next_seq - hdr_->popped_pub.load(std::memory_order_acquire);
}

bool Segment::full_locked() const { return capacity_ != layout::kUnbounded && queued_locked() >= effective_capacity(); }

bool Segment::full() {
  SendLocked l(*this);
  if (l.error() == Errc::contended)  // SYNC POINT: acquire as in queued_locked()
    return capacity_ != layout::kUnbounded &&
           load_word(hdr_->send.next_seq) -
                   std::min(load_word(hdr_->send.next_seq), hdr_->popped_pub.load(std::memory_order_acquire)) >=
               effective_capacity();
  return l.ok() && full_locked();
}

// An empty ring that has moved far into its area starts again at offset 0
// of the next lap, both positions moving together so that no gap counts as
// used: a ring that is usually drained (a ping-pong, a consumer keeping up)
// then works in a few hot pages instead of walking its whole area (p99 of a
// ping-pong through a default mailbox: 20 -> 2 us). Needs send_lock; takes
// recv_lock only if free (in the documented order), else leaves it for later.
void Segment::restart_if_empty_locked() {
  SegmentHeader* h = hdr_;
  const uint64_t tail = h->send.tail;
  const uint64_t off = tail % data_size_;
  if (off < std::min<uint64_t>(version_ >= 5 ? kSoftWrap : kRestartAt, data_size_ / 4)) return;
  if (h->head_pub.load(std::memory_order_acquire) != tail) return;                               // not empty
  if (data_size_ - off >= kRecHdr && populate_locked(tail, tail + kRecHdr) != Errc::ok) return;  // the marker's page
  if (!try_lock_recv()) return;
  if (h->recv.head == tail && h->state.load(std::memory_order_acquire) == layout::kLive) {
    const uint64_t next = tail + (data_size_ - off);
    if (data_size_ - off >= kRecHdr) {
      RecordHeader m{};
      m.len = layout::kWrapMarker;
      std::memcpy(data_ + off, &m, kRecHdr);
    }
    // The tail first: dying between the two commits leaves an empty ring
    // whose receivers skip the marker (oldest_locked), never a head past the tail.
    layout::SendState sn = h->send;
    sn.tail = next;
    commit_send_locked(sn);
    layout::RecvState rn = h->recv;
    rn.head = next;
    commit_recv_locked(rn);
    seen_head_ = next;
    // Nothing queued: the next lap's records are not known yet.
    if (version_ >= 5) std::atomic_ref<uint64_t>(h->lap_max).store(0, std::memory_order_relaxed);
  }
  unlock_recv();
}

// Version 5: whether a record of `rec` bytes that would go at offset `off`
// may go at offset 0 of the next lap instead. While the receivers are still
// in this lap, the senders have `off` bytes less what is queued, so the lap
// must be long enough for the capacity: capacity - 1 records as large as the
// largest of this lap and one of max_message (so that a large message after
// small ones never waits below the capacity), or where that would pass the
// kept area, the capacity in records of the lap's largest (design.md,
// section 4, "Early wrap"). Needs send_lock.
bool Segment::early_wrap_locked(uint64_t off, uint64_t rec) const {
  if (version_ < 5 || capacity_ == layout::kUnbounded || off == 0 || off + rec <= kSoftWrap) return false;
  const uint64_t est = std::max(load_word(hdr_->lap_max), rec);  // validated by room_locked()
  const uint64_t cap = effective_capacity(), big = layout::record_size(max_message_);
  // cap > data_size_ / est, without the division: never this long, no early wrap.
  if (uint64_t need; __builtin_mul_overflow(cap, est, &need) || need > data_size_) return false;
  const uint64_t with_big = (cap - 1) * est + std::max(big, est);
  return off >= (with_big <= keep_ ? with_big : cap * est);
}

// Finds room for `rec` contiguous bytes (see the layout comment). Needs send_lock.
Result<Segment::Room> Segment::room_locked(uint64_t rec, bool force) {
  SegmentHeader* h = hdr_;
  // Once per page the tail enters, not on every send: tail_pub sits on the
  // line waiting receivers spin on, and reading it took that line from them,
  // a cross-CPU transfer per message (design.md, section 6). Receivers
  // validate whatever they read, so a scribble is still caught, only later.
  if (h->send.tail / kPage != checked_page_) {
    checked_page_ = h->send.tail / kPage;
    if (h->tail_pub.load(std::memory_order_relaxed) != h->send.tail || !sizing_sane()) {
      h->state.store(layout::kCorrupt, std::memory_order_release);  // another participant scribbled
      return Errc::bad_message;
    }
    restart_if_empty_locked();
  }
  const uint64_t tail = h->send.tail;
  if (tail % 8 != 0) {  // every record starts 8-aligned (written in place): a scribbled tail
    h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  // First with the receivers' position as last seen (a line they write on
  // every message: re-read only when it does not leave room, as an SPSC ring
  // caches the other side's index), then as it is now.
  for (bool fresh : {false, true}) {
    if (fresh) {
      // SYNC POINT: acquire pairs with the release stores of head_pub and
      // popped_pub in commit_recv_locked(): the room they free is no longer
      // read. Both only grow, so older values are safe underestimates.
      seen_popped_ = h->popped_pub.load(std::memory_order_acquire);
      seen_head_ = h->head_pub.load(std::memory_order_acquire);
    }
    const uint64_t head = seen_head_;
    if (tail - head > data_size_ || seen_popped_ > h->send.next_seq) {
      if (!fresh) continue;
      h->state.store(layout::kCorrupt, std::memory_order_release);
      return Errc::bad_message;
    }
    if (!force && capacity_ != layout::kUnbounded && h->send.next_seq - seen_popped_ >= effective_capacity()) {
      if (!fresh) continue;
      return Errc::again;
    }
    const uint64_t off = offset_in(tail, send_lap_);
    Room room{tail, false};
    if (data_size_ - off < rec) {
      room = Room{tail + (data_size_ - off), true};
    } else if (early_wrap_locked(off, rec)) {
      // Offset 0 of the next lap, if the receivers have left room there: else
      // the lap grows (the record goes at the tail) and wraps later. The head
      // as last seen may be old: looked at afresh once per page.
      const Room wrap{tail + (data_size_ - off), true};
      if (wrap.at + rec - head <= data_size_) room = wrap;
      else if (!fresh && tail / kPage != wrap_checked_page_) {
        wrap_checked_page_ = tail / kPage;
        continue;
      }
    }
    if (room.at + rec - head <= data_size_) {
      if (room.wrap && data_size_ - off >= kRecHdr) {  // the marker's bytes
        if (Errc e = populate_locked(tail, tail + kRecHdr); e != Errc::ok) return e;
      }
      if (Errc e = populate_locked(room.at, room.at + rec); e != Errc::ok) return e;
      return room;
    }
    if (fresh) return capacity_ == layout::kUnbounded ? Errc::no_space : Errc::again;
  }
  return Errc::again;  // not reached
}

// Makes present the memory of positions [from, end) (one lap's, a record or
// a wrap marker) before they are written, so that a filesystem that cannot
// provide the pages (a full /dev/shm) fails the send with no_space instead of
// raising SIGBUS on the first store into one. Version 5: the kept area
// (offsets below keep_) is allocated once, as a prefix [0, populated) that
// only trim() lowers, so a ring that laps within it makes no call here.
// Beyond it (and everywhere in version 4): each chunk the tail enters for the
// first time in a lap; a chunk the tail is in was made present when the tail
// entered it, and release_passed_locked() never drops it while the tail is
// there. Needs send_lock.
// Inline, with the rest out of line: the common case is a ring lapping in
// its kept area, already allocated.
inline Errc Segment::populate_locked(uint64_t from, uint64_t end) const {
  if (const uint64_t have = load_word(hdr_->populated);
      offset_in(from, send_lap_) + (end - from) <= have && have <= keep_ && have % kPage == 0)
    return Errc::ok;
  return populate_chunks_locked(from, end);
}

Errc Segment::populate_chunks_locked(uint64_t from, uint64_t end) const {
  const uint64_t tail = hdr_->send.tail;
  auto populate = [this](uint64_t start, uint64_t stop) {
    int rc;
    do rc = ::madvise(data_ + start, stop - start, MADV_POPULATE_WRITE);
    while (rc != 0 && (errno == EINTR || errno == EAGAIN));
    // EINVAL: a kernel before 5.14, which faults the pages in as before.
    return rc != 0 && errno != EINVAL ? Errc::no_space : Errc::ok;  // EFAULT (SIGBUS averted), ENOMEM
  };
  for (uint64_t p = from; p < end;) {
    const uint64_t off = p % data_size_, base = p - off;
    if (off < keep_) {
      const uint64_t need = std::min(end - base, keep_);
      const uint64_t have = load_word(hdr_->populated);
      if (have > keep_ || have % kPage != 0) {  // scribbled
        hdr_->state.store(layout::kCorrupt, std::memory_order_release);
        return Errc::bad_message;
      }
      if (need > have) {
        const uint64_t to = std::min((need + kKeepChunk - 1) / kKeepChunk * kKeepChunk, keep_);
        if (Errc e = populate(have, to); e != Errc::ok) return e;
        // Raised only once the memory is there (dying before: populated again).
        std::atomic_ref<uint64_t>(hdr_->populated).store(to, std::memory_order_relaxed);
      }
      p = base + keep_;
      continue;
    }
    const uint64_t start = off - off % kPopulateChunk, stop = std::min(start + kPopulateChunk, data_size_);
    if (base + start >= tail) {  // not entered yet
      if (Errc e = populate(start, stop); e != Errc::ok) return e;
    }
    p = base + stop;
  }
  return Errc::ok;
}

// Charges `rec` record bytes to the mount's quota, marking the send in flight:
// from the segment's credit if it holds enough (nothing shared is touched),
// else from the mount's counter, a batch at a time when send_batch_ is set
// (the rest becomes credit when the record is committed), or exactly `rec`
// when a batch no longer fits.
Errc Segment::charge_quota_locked(uint64_t rec, bool force) {
  SegmentHeader* h = hdr_;
  charge_ = {};
  // These markers are read only by whoever recovers from our death: atomic
  // stores so that the compiler keeps them (commit_send_locked clears them).
  std::atomic_ref<uint32_t>(h->inflight).store(layout::kInflightSend, std::memory_order_release);
  if (!ctl_) return Errc::ok;
  const uint64_t credit = h->send.quota_credit;
  if (credit > credit_bound()) {  // scribbled: it would let sends past the quota
    std::atomic_ref<uint32_t>(h->inflight).store(0, std::memory_order_release);
    h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  if (credit >= rec) {
    charge_.from_credit = true;
    return Errc::ok;
  }
  const uint64_t batch = std::max(rec, send_batch_);
  for (uint64_t take : {batch, rec}) {
    h->inflight_quota = take;
    // SYNC POINT: acq_rel on the mount-wide counter; pairs with the fetch_sub
    // in release_quota(). Dying between it and the next store leaks `take`.
    const uint64_t before = ctl_->quota_used.fetch_add(take, std::memory_order_acq_rel);
    std::atomic_ref<uint32_t>(h->inflight_quota_added).store(1, std::memory_order_release);
    if (force || before + take <= ctl_->quota_max) {
      charge_.from_mount = take;
      return Errc::ok;
    }
    ctl_->quota_used.fetch_sub(take, std::memory_order_acq_rel);
    std::atomic_ref<uint32_t>(h->inflight_quota_added).store(0, std::memory_order_release);
    if (take == rec) break;
  }
  std::atomic_ref<uint32_t>(h->inflight).store(0, std::memory_order_release);
  return Errc::no_space;
}

// Writes the record header (the payload is already in place) and publishes it.
void Segment::write_record_locked(const Room& room, size_t len, const Sender& from, int64_t now_ns, unsigned prio) {
  SegmentHeader* h = hdr_;
  layout::SendState n = h->send;
  if (room.wrap) {
    const uint64_t off = offset_in(n.tail, send_lap_);
    if (data_size_ - off >= kRecHdr) {
      RecordHeader m{};
      m.len = layout::kWrapMarker;
      std::memcpy(data_ + off, &m, kRecHdr);
    }
  }
  // Written field by field in place: a header built on the stack and copied
  // was read back wider than it was written, a store-forwarding stall that
  // waited for every earlier store (the payload's) to reach the cache.
  auto* r = reinterpret_cast<RecordHeader*>(data_ + offset_in(room.at, send_lap_));  // 8-aligned
  r->len = static_cast<uint32_t>(len);
  r->flags = prio;  // push() checked it: 0 before version 6
  r->pid = from.pid;
  r->uid = from.uid;
  r->gid = from.gid;
  r->reserved = 0;
  r->seq = n.next_seq;
  const uint64_t rec = layout::record_size(len);
  n.tail = room.at + rec;
  n.next_seq++;
  n.total_sent++;
  n.sent_bytes += len;
  n.sent_record_bytes += rec;
  n.last_send_ns = now_ns;
  if (charge_.from_credit) n.quota_credit -= rec;
  else n.quota_credit += charge_.from_mount - std::min(charge_.from_mount, rec);
  charge_ = {};
  // lap_max only errs high across a death: raised before the record is
  // committed, started anew for the next lap after.
  std::atomic_ref<uint64_t> lap_max(h->lap_max);
  if (version_ >= 5 && rec > lap_max.load(std::memory_order_relaxed)) lap_max.store(rec, std::memory_order_relaxed);
  // Counted before it is published (the release of tail_pub in the commit
  // orders it for receivers): a death in between leaves it high, never low.
  // SYNC POINT: relaxed; the release of tail_pub in the commit orders it
  // before the record's publication, and receivers read it under recv_lock
  // (next_locked): one that saw the record sees it counted.
  if (prio) h->prio_pushed.store(h->prio_pushed.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  commit_send_locked(n);
  if (version_ >= 5 && room.wrap) lap_max.store(rec, std::memory_order_relaxed);
}

Result<uint64_t> Segment::push(const char* data, size_t len, const Sender& from, int64_t now_ns, bool force,
                               unsigned prio) {
  // Our own reservation holds send_lock; our own view holds recv_lock, and
  // waiting for send_lock while holding it could deadlock with a participant
  // that holds send_lock (a reservation) and waits for recv_lock.
  if (reserved_ || viewed_) return Errc::busy;
  if (prio > layout::kPrioMask) return Errc::invalid;
  if (prio && version_ < 6) return Errc::not_supported;
  if (len > max_message_) return Errc::msg_size;
  // The outcome in two scalars, not a Result: a biased send makes no locked
  // instruction, so a struct stored in two words and loaded back in one
  // 16-byte load (which the store buffer cannot forward) would wait there
  // for every store before it, the record's included.
  uint64_t seq = 0;
  Errc e = Errc::ok;
  if (biased_[0] && run_biased(Side::send, [&]() NO_THREAD_SAFETY_ANALYSIS {
        e = push_locked(data, len, from, now_ns, force, prio, &seq);
      })) {
    if (e != Errc::ok) return e;
    return seq;
  }
  SendLocked l(*this);
  if (!l.ok()) return l.error();
  e = push_locked(data, len, from, now_ns, force, prio, &seq);
  if (e != Errc::ok) return e;
  maybe_bias(Side::send, seq);
  return seq;
}

inline Errc Segment::push_locked(const char* data, size_t len, const Sender& from, int64_t now_ns, bool force,
                                 unsigned prio, uint64_t* seq) {
  const uint64_t rec = layout::record_size(len);
  auto room = room_locked(rec, force);
  if (!room) return room.error();
  if (Errc e = charge_quota_locked(rec, force); e != Errc::ok) return e;
  if (len) std::memcpy(data_ + offset_in(room->at, send_lap_) + kRecHdr, data, len);
  *seq = hdr_->send.next_seq;
  write_record_locked(*room, len, from, now_ns, prio);
  notify_after_push_locked(*seq, from);
  return Errc::ok;
}

// Biased halves (design.md section 4): the locked instructions of a mutex's
// lock and unlock each wait until every earlier store has reached the cache,
// including the record's, to lines the other side holds: a cross-CPU
// transfer per message that a lock-free ring does not wait for. The thread
// a half is biased to instead marks itself busy and checks the bias, both
// plain stores and loads; the revoker's side of this Dekker pair is a
// membarrier (revoke_bias_locked). Inline: the body is the operation.
template <class Body>
inline bool Segment::run_biased(Side side, Body&& body) {
  const int k = static_cast<int>(side);
  std::atomic<uint32_t>&bias = bias_word(side), &busy = busy_word(side);
  const auto me = static_cast<uint32_t>(this_tid());
  // Looked at before the busy word is touched: this object may think itself
  // biased while the half is another thread's (used from another thread, or
  // in a fork's child, or taken back and given to another): only the thread
  // the half is biased to, or was until it sees the mark, stores the word.
  uint32_t b = bias.load(std::memory_order_relaxed);
  if (b == me) {
    // SYNC POINT: relaxed store, then relaxed loads; the store-load order
    // the hardware may break is restored by the revoker's
    // MEMBARRIER_CMD_GLOBAL_EXPEDITED between its store of kBiasRevoked and
    // its load of the busy word: either it sees us busy and waits, or we see
    // the mark. The signal fence keeps the compiler from moving the loads
    // above the store.
    busy.store(1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    b = bias.load(std::memory_order_relaxed);
    if (b == me && hdr_->state.load(std::memory_order_acquire) == layout::kLive) [[likely]] {
      struct Done {  // also if the body throws (a pop's append)
        std::atomic<uint32_t>& busy;
        // SYNC POINT: release pairs with the revoker's acquire load of the
        // busy word: everything the operation wrote is seen by whoever takes
        // the half back.
        ~Done() { busy.store(0, std::memory_order_release); }
      } done{busy};
      body();
      return true;
    }
    busy.store(0, std::memory_order_release);  // the half stays ours until our next lock clears the mark
  }
  biased_[k] = false;
  // Taken back by another participant of this half: biased again only after
  // a run alone 16 times as long, so that several of them soon stop taking
  // turns (each take-back is a membarrier, and may wait). The daemon's looks
  // (stat, poll) are not such a participant.
  if ((b & ~layout::kBiasFlags) == me && (b & layout::kBiasRevoked) && !(b & layout::kBiasByDaemon)) {
    bias_after_[k] = std::min(bias_after_[k] * 16, kBiasAfterMax);
    taken_back_[k]++;
  }
  return false;
}

void Segment::maybe_bias(Side side, uint64_t n) {
  const int k = static_cast<int>(side);
  if (version_ < 7 || no_wait_) return;
  bias_streak_[k] = n == bias_last_[k] + 1 ? bias_streak_[k] + 1 : 0;
  bias_last_[k] = n;
  if (bias_streak_[k] < bias_after_[k]) return;
  bias_streak_[k] = 0;
  // Taken back from a thread that has not seen it yet: that thread's next
  // operation stores the busy word before it finds out, so nobody else may
  // be biased (and store it) until it did (its next lock() clears the
  // mark), or is gone.
  std::atomic<uint32_t>& bias = bias_word(side);
  if (const uint32_t b = bias.load(std::memory_order_relaxed); b != 0) {
    if (!(b & layout::kBiasFenced) || busy_word(side).load(std::memory_order_acquire) != 0 ||
        may_participate(static_cast<pid_t>(b & ~layout::kBiasFlags), path_))
      return;
    bias.store(0, std::memory_order_relaxed);
  }
  if (!membarrier_registered()) return;
  bias.store(static_cast<uint32_t>(this_tid()), std::memory_order_relaxed);  // under the half's lock
  biased_[k] = true;
  biases_[k]++;
}

bool Segment::biased(Side side) const {
  return biased_[static_cast<int>(side)] &&
         bias_word(side).load(std::memory_order_relaxed) == static_cast<uint32_t>(this_tid());
}

Errc Segment::revoke_bias_locked(Side side, bool may_give_up) const {
  SegmentHeader* h = hdr_;
  std::atomic<uint32_t>&bias = bias_word(side), &busy = busy_word(side);
  const uint32_t b = bias.load(std::memory_order_relaxed);
  const auto owner = static_cast<pid_t>(b & ~layout::kBiasFlags);
  auto recover_dead = [&]() NO_THREAD_SAFETY_ANALYSIS {  // it died inside an operation: as a death holding the lock
    const bool ok = side == Side::send ? recover_send_locked() : recover_recv_locked();
    busy.store(0, std::memory_order_relaxed);
    log(ok ? LogLevel::notice : LogLevel::error, "a process died inside a biased %s on a mailbox: %s",
        side == Side::send ? "send" : "receive", ok ? "recovered" : "the mailbox is corrupt now");
    if (!ok) {
      h->state.store(layout::kCorrupt, std::memory_order_release);
      return Errc::bad_message;
    }
    bias.store(0, std::memory_order_relaxed);  // gone: it stores nothing any more
    return Errc::ok;
  };
  if (owner == this_tid()) {  // ours (or taken back, now seen): not inside a biased operation while we lock
    biased_[static_cast<int>(side)] = false;
    // SYNC POINT: acquire, as below: a dead thread with our id left it busy.
    if (busy.load(std::memory_order_acquire) != 0) return recover_dead();
    bias.store(0, std::memory_order_relaxed);
    return Errc::ok;
  }
  if (!(b & layout::kBiasFenced)) {
    const uint32_t by = no_wait_ ? layout::kBiasByDaemon : 0;
    bias.store((b & ~layout::kBiasByDaemon) | layout::kBiasRevoked | by, std::memory_order_relaxed);
    // SYNC POINT: the heavy side of run_biased()'s Dekker pair: every
    // running thread of a registered process passes a full barrier, so the
    // owner either published busy = 1 before it (we see it below) or reads
    // kBiasRevoked after it. The owner registered before it was biased.
    // Marked fenced only once it returned: a taker that dies before leaves
    // the barrier to the next one.
    if (::syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0) {
      log(LogLevel::error, "membarrier failed (%s): a mailbox's biased participant cannot be stopped", strerror(errno));
      return Errc::io;
    }
    bias.store((b & ~layout::kBiasByDaemon) | layout::kBiasRevoked | layout::kBiasFenced | by,
               std::memory_order_relaxed);
  }
  for (int i = 0;; i++) {
    // SYNC POINT: acquire pairs with the release store of the busy word at
    // the end of the owner's biased operation.
    if (busy.load(std::memory_order_acquire) == 0) break;
    if (i < kTrySpins) {
      cpu_relax();
      continue;
    }
    if (no_wait_ && may_give_up) {                                // the daemon never waits for a participant
      if (may_participate(owner, path_)) return Errc::contended;  // tried again later
      return recover_dead();
    }
    // Most often preempted inside its operation: let it run (sched_yield),
    // and look whether it is gone only now and then (it reads /proc).
    if (i < kTrySpins + kBiasYields) {
      if ((i - kTrySpins) % 64 != 63 || may_participate(owner, path_)) {
        ::sched_yield();
        continue;
      }
    }
    if (!may_participate(owner, path_)) return recover_dead();
    // Stopped inside one, or on a busy machine: 50 us, doubling up to 10 ms.
    const long ns = std::min<long>(50'000L << std::min(i - kTrySpins - kBiasYields, 8), 10'000'000L);
    const timespec pause{0, ns};
    ::nanosleep(&pause, nullptr);
  }
  // Left taken back (kBiasRevoked): its thread clears it at its next lock,
  // having seen it; until then nobody else is biased (maybe_bias).
  return Errc::ok;
}

// Not checked: the send lock stays held after it returns, until commit_reserved()
// or abort_reserved() (reserved_ says so).
Result<char*> Segment::reserve(size_t len, const Sender& from, int64_t now_ns,
                               unsigned prio) NO_THREAD_SAFETY_ANALYSIS {
  if (reserved_ || viewed_) return Errc::busy;  // as push()
  if (prio > layout::kPrioMask) return Errc::invalid;
  if (prio && version_ < 6) return Errc::not_supported;
  if (len > max_message_) return Errc::msg_size;
  const uint64_t rec = layout::record_size(len);
  if (Errc e = lock(Side::send, false); e != Errc::ok) return e;
  auto room = room_locked(rec, false);
  Errc e = room ? charge_quota_locked(rec, false) : room.error();
  if (e != Errc::ok) {
    unlock(Side::send);
    return e;
  }
  reserved_ = Reserved{*room, len, from, now_ns, prio};
  return data_ + offset_in(room->at, send_lap_) + kRecHdr;
}

// Not checked: releases the send lock reserve() left held.
uint64_t Segment::commit_reserved() NO_THREAD_SAFETY_ANALYSIS {
  const uint64_t seq = hdr_->send.next_seq;
  write_record_locked(reserved_->room, reserved_->len, reserved_->from, reserved_->now_ns, reserved_->prio);
  notify_after_push_locked(seq, reserved_->from);
  reserved_.reset();
  unlock(Side::send);
  return seq;
}

void Segment::abort_reserved() {
  SegmentHeader* h = hdr_;
  if (ctl_ && h->inflight_quota_added) ctl_->quota_used.fetch_sub(h->inflight_quota, std::memory_order_acq_rel);
  std::atomic_ref<uint32_t>(h->inflight_quota_added).store(0, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->inflight).store(0, std::memory_order_release);
  reserved_.reset();
  unlock(Side::send);
}

// The oldest queued record, validated. Needs recv_lock. again: empty.
Result<Segment::Found> Segment::oldest_locked() {
  SegmentHeader* h = hdr_;
  // SYNC POINT: acquire pairs with the release store of tail_pub in
  // commit_send_locked(): every record before it is complete.
  uint64_t pos = h->recv.head;
  uint64_t tail = seen_tail_;  // as last seen: re-read (a line senders write) when used up
  if (tail == pos || tail - pos > data_size_) {
    tail = seen_tail_ = h->tail_pub.load(std::memory_order_acquire);
  }
  if (tail == pos) return Errc::again;
  if (tail - pos > data_size_) goto corrupt;
  // head_pub is checked once per page the head enters, as tail_pub by senders
  // (room_locked()): a sender waiting for room spins on its line.
  if (pos / kPage != recv_checked_page_) {
    recv_checked_page_ = pos / kPage;
    if (h->head_pub.load(std::memory_order_relaxed) != pos) goto corrupt;
  }
  {
    uint64_t off = offset_in(pos, recv_lap_);
    RecordHeader r;
    if (data_size_ - off >= kRecHdr) std::memcpy(&r, data_ + off, kRecHdr);
    if (data_size_ - off < kRecHdr || r.len == layout::kWrapMarker) {
      if (off == 0 || tail - pos < data_size_ - off) goto corrupt;
      if (tail - pos == data_size_ - off) {  // a restart's gap, nothing after it as far as we saw
        const uint64_t fresh = h->tail_pub.load(std::memory_order_acquire);
        if (fresh == tail) return Errc::again;
        seen_tail_ = fresh;
        return oldest_locked();  // a record came after it meanwhile
      }
      pos += data_size_ - off;
      off = 0;
      std::memcpy(&r, data_, kRecHdr);
    }
    const uint64_t rec = layout::record_size(r.len);
    if (r.len > max_message_ || rec > data_size_ - off || rec > tail - pos) goto corrupt;
    // Version 6, reached only while nothing of priority > 0 was counted:
    // sent since the count was read, or a scribble; pick_locked() tells them apart.
    if (version_ >= 6 && r.flags != 0) [[unlikely]]
      return pick_locked();
    return Found{pos, r};
  }
corrupt:
  h->state.store(layout::kCorrupt, std::memory_order_release);
  return Errc::bad_message;
}

// Removes the record `f` as received and publishes the new head.
// Gives back to the system (tmpfs) the memory of every whole chunk of the
// record area the head has just passed: positions only grow, so a ring that
// keeps moving would otherwise end up with all of data_size resident however
// little it holds. Needs recv_lock, after the new head is committed: a
// receiver that dies before the commit must leave every record it saw
// intact (recovery keeps the old head), one that dies after it leaves only
// a chunk resident until the next lap passes it. Best effort: skipped when a
// sender holds send_lock.
// Inline, with the rest out of line: most receives stay in the lap and the
// chunk they started in, or in the kept area, and no chunk ends behind them.
inline void Segment::release_passed_locked(uint64_t old_head, uint64_t new_head) {
  if (data_size_ < 8 * kReleaseChunk || data_size_ <= keep_) return;
  const uint64_t o = offset_in(old_head, recv_lap_), moved = new_head - old_head;
  if (moved < data_size_ - o && (o / kReleaseChunk == (o + moved) / kReleaseChunk || o + moved <= keep_)) return;
  release_chunks_locked(old_head, new_head);
}

void Segment::release_chunks_locked(uint64_t old_head, uint64_t new_head) {
  for (uint64_t lap = old_head / data_size_; lap * data_size_ < new_head; lap++) {
    const uint64_t base = lap * data_size_;
    const uint64_t a = std::max(old_head, base) - base;
    uint64_t b = std::min(new_head, base + data_size_) - base;
    // A lap the head left at a wrap marker: its records ended in the marker's
    // chunk; the rest of the lap (an early wrap leaves most of it) was not
    // written in this lap.
    if (new_head >= base + data_size_) b = std::min(data_size_, (a / kReleaseChunk + 1) * kReleaseChunk);
    // Chunks [k*C, min((k+1)*C, D)) whose end lies in (a, b]: wholly behind the new head.
    for (uint64_t end = (a / kReleaseChunk + 1) * kReleaseChunk;; end += kReleaseChunk) {
      const uint64_t e = std::min(end, data_size_);
      if (e > b) break;
      const uint64_t start = end - kReleaseChunk;
      if (start >= keep_) {  // version 5 keeps the start: a ring lapping there takes no fault
        // The chunk's next incarnation starts at base + start + D. The new head
        // is published, so senders may already be there: safe to drop only if
        // none has written there, i.e. the tail (stable while we hold
        // send_lock, which every write into the area holds) has not passed it.
        if (!try_lock(Side::send)) return;  // a sender is busy: next time
        if (hdr_->send.tail <= base + start + data_size_) ::madvise(data_ + start, e - start, MADV_REMOVE);
        unlock(Side::send);
      }
      if (e == data_size_) break;
    }
  }
}

// The position after the tombstones that start at `pos` (up to tail_pub),
// counting them in *passed and noting the last one's seq. Out of line: only
// rings with tombstones come here.
uint64_t Segment::pass_tombs_locked(uint64_t pos, uint64_t* last_seq, uint64_t* passed) const {
  const uint64_t tail = hdr_->tail_pub.load(std::memory_order_acquire);
  uint64_t head = pos;
  while (pos != tail && tail - pos <= data_size_) {
    uint64_t off = pos % data_size_;
    RecordHeader r;
    if (data_size_ - off >= kRecHdr) std::memcpy(&r, data_ + off, kRecHdr);
    if (data_size_ - off < kRecHdr || r.len == layout::kWrapMarker) {
      if (off == 0 || tail - pos <= data_size_ - off) break;  // nothing after the gap: the head stops at it
      pos += data_size_ - off;
      off = 0;
      if (tail - pos < kRecHdr) break;
      std::memcpy(&r, data_, kRecHdr);
    }
    const uint64_t rr = layout::record_size(r.len);
    // Anything odd is left for the next walk to judge.
    if (!(r.flags & layout::kTaken) || r.len > max_message_ || rr > data_size_ - off || rr > tail - pos) break;
    pos += rr;
    head = pos;
    *last_seq = r.seq;
    (*passed)++;
  }
  return head;
}

// Removes the record `f`, the first queued, and publishes the new head, past
// the tombstones right after it (received: false for a withdrawn offer).
Errc Segment::remove_oldest_locked(const Found& f, int64_t now_ns, bool received) {
  // A page of the segment lost under us while the record was read (the
  // daemon's SIGBUS handler, lib/fault.cc, put zeros there and marked the
  // segment corrupt, on this thread): what was read is not the message.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  SegmentHeader* h = hdr_;
  if (h->state.load(std::memory_order_relaxed) == layout::kCorrupt) return Errc::bad_message;
  layout::RecvState n = h->recv;
  const uint64_t rec = layout::record_size(f.r.len);
  const uint64_t old_head = n.head;
  n.head = f.pos + rec;
  uint64_t last_seq = f.r.seq, passed = 0;
  // Version 6: tombstones are passed in the same commit (the head's record
  // is never one). tombs is never below the truth: 0 means there are none.
  if (version_ >= 6 && load_word(h->tombs) != 0) [[unlikely]]
    n.head = pass_tombs_locked(n.head, &last_seq, &passed);
  n.popped++;
  n.popped_bytes += f.r.len;
  n.popped_record_bytes += rec;
  if (received) {
    n.consumed_seq = std::max(n.consumed_seq, last_seq + 1);
    n.total_received++;
    n.last_recv_ns = now_ns;
  }
  n.quota_owed += rec;
  commit_recv_locked(n);
  // After the commit: a death in between leaves either word high, never low.
  if (passed)
    std::atomic_ref<uint64_t>(h->tombs).store(h->tombs - std::min(h->tombs, passed), std::memory_order_relaxed);
  if (f.r.flags & layout::kPrioMask)
    std::atomic_ref<uint64_t>(h->prio_popped).store(h->prio_popped + 1, std::memory_order_relaxed);
  release_passed_locked(old_head, n.head);
  settle_quota_locked(/*force=*/false);
  return Errc::ok;
}

// Marks the record at `pos` taken (a tombstone), after checking that a
// record of priority > 0 is there (recovery trusts no position it did not
// check). False if not.
bool Segment::mark_taken_locked(uint64_t pos) const {
  const uint64_t head = hdr_->recv.head, tail = hdr_->tail_pub.load(std::memory_order_acquire);
  const uint64_t off = pos % data_size_;
  if (pos - head >= tail - head || tail - head > data_size_ || pos % 8 != 0 || data_size_ - off < kRecHdr) return false;
  auto* r = reinterpret_cast<RecordHeader*>(data_ + off);
  const RecordHeader c = *r;
  if (c.len == layout::kWrapMarker || c.len > max_message_ || layout::record_size(c.len) > data_size_ - off ||
      !(c.flags & layout::kPrioMask) || !flags_ok(c, false))
    return false;
  std::atomic_ref<uint32_t>(r->flags).store(c.flags | layout::kTaken, std::memory_order_relaxed);
  return true;
}

// Receives `f`, which is not the first queued record (a higher priority than
// the records before it): its room stays used, as a tombstone, until the
// head passes it. The mark is part of the commit: recv_take names it while
// recv_pending is valid, so a recovery that rolls the commit forward marks
// it too (design.md section 4, "Priorities").
Errc Segment::take_locked(const Found& f, int64_t now_ns) {
  std::atomic_signal_fence(std::memory_order_seq_cst);  // as remove_oldest_locked()
  SegmentHeader* h = hdr_;
  if (h->state.load(std::memory_order_relaxed) == layout::kCorrupt) return Errc::bad_message;
  layout::RecvState n = h->recv;
  const uint64_t rec = layout::record_size(f.r.len);
  n.popped++;
  n.popped_bytes += f.r.len;
  n.popped_record_bytes += rec;
  n.total_received++;
  n.last_recv_ns = now_ns;
  n.quota_owed += rec;
  // Counted before it exists: never below the truth.
  std::atomic_ref<uint64_t>(h->tombs).store(h->tombs + 1, std::memory_order_relaxed);
  store_words(h->recv_pending, n);
  std::atomic_ref<uint64_t>(h->recv_take).store(f.pos + 1, std::memory_order_relaxed);
  // SYNC POINT: as in commit_recv_locked(), for whoever recovers from our death.
  std::atomic_ref<uint32_t>(h->recv_pending_valid).store(1, std::memory_order_release);
  if (!mark_taken_locked(f.pos)) {  // pick_locked() checked it under this lock: a scribble since
    h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  store_words(h->recv, n);
  // SYNC POINT: pairs with the acquire loads in room_locked()/queued_locked().
  h->popped_pub.store(n.popped, std::memory_order_release);
  std::atomic_ref<uint64_t>(h->recv_take).store(0, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->recv_pending_valid).store(0, std::memory_order_release);
  std::atomic_ref<uint64_t>(h->prio_popped).store(h->prio_popped + 1, std::memory_order_relaxed);
  settle_quota_locked(/*force=*/false);
  return Errc::ok;
}

inline Errc Segment::remove_found_locked(const Found& f, int64_t now_ns, bool received) {
  return f.first ? remove_oldest_locked(f, now_ns, received) : take_locked(f, now_ns);
}

// Version 6. While no record of priority > 0 and no tombstone is queued
// (tombs == 0 and prio_popped has caught up with prio_pushed), the oldest
// record is the next one: exactly version 5's path, plus loads of two words
// of lines this side owns and one of the line after_pop() reads anyway.
// prio_pushed is read afresh, not with the cached tail: a message of higher
// priority sent after that tail was read must still come first.
inline Result<Segment::Found> Segment::next_locked() {
  if (version_ < 6) return oldest_locked();
  // SYNC POINT: relaxed; counted before its record was published, so a
  // record this receive can see was counted (write_record_locked()).
  const uint64_t pushed = hdr_->prio_pushed.load(std::memory_order_relaxed);
  const uint64_t popped = load_word(hdr_->prio_popped);
  if (pushed != popped || load_word(hdr_->tombs) != 0) return pick_locked();
  return oldest_locked();  // returned as it is: a copy of the result stalled on its stores
}

// Walks the queue for the oldest record of the highest priority; recounts
// the tombstones (exact: only receivers make them, and we hold recv_lock)
// and checks the priority words against what it saw.
Result<Segment::Found> Segment::pick_locked() {
  SegmentHeader* h = hdr_;
  // SYNC POINT: acquire pairs with the release store of tail_pub in
  // commit_send_locked(); prio_pushed read after it counts every record before it.
  const uint64_t tail = seen_tail_ = h->tail_pub.load(std::memory_order_acquire);
  const uint64_t pushed = h->prio_pushed.load(std::memory_order_relaxed), popped = load_word(h->prio_popped);
  Found best{};
  bool found = false;
  uint64_t prio = 0, tombs = 0;
  const bool ok = walk_to_locked(tail, true, [&](uint64_t pos, const RecordHeader& r, const char*) {
    if (r.flags & layout::kTaken) {
      tombs++;
      return;
    }
    const unsigned p = r.flags & layout::kPrioMask;
    if (p) prio++;
    if (!found || p > (best.r.flags & layout::kPrioMask)) best = Found{pos, r, !found};
    found = true;
  });
  // prio_pushed is never below the truth and prio_popped never above: else a scribble.
  if (!ok || popped > pushed || pushed - popped < prio || load_word(h->tombs) < tombs) {
    h->state.store(layout::kCorrupt, std::memory_order_release);
    return Errc::bad_message;
  }
  std::atomic_ref<uint64_t>(h->tombs).store(tombs, std::memory_order_relaxed);
  if (prio == 0 && pushed != popped) resync_prio_locked(tail);
  if (!found) return Errc::again;
  return best;
}

// No record of priority > 0 is queued up to `tail`, yet prio_popped is
// behind prio_pushed: a sender died between counting its record and
// publishing it. Catches up, so that receives take the fast path again; only
// with send_lock free (tried, in the documented order): then no send is
// under way and prio_pushed counts exactly what was published.
void Segment::resync_prio_locked(uint64_t tail) const {
  if (!try_lock(Side::send)) return;
  if (hdr_->tail_pub.load(std::memory_order_acquire) == tail)
    std::atomic_ref<uint64_t>(hdr_->prio_popped)
        .store(hdr_->prio_pushed.load(std::memory_order_relaxed), std::memory_order_relaxed);
  unlock(Side::send);
}

// A receive of the oldest record of the highest priority by `take`, which
// copies it out (given the record's header and payload; false: it does not
// fit, msg_size, the record stays queued): biased (no lock) when the receive
// half is biased to this thread, else under recv_lock.
template <class Take>
inline Result<layout::RecordHeader> Segment::receive_one(int64_t now_ns, Take&& take) {
  if (viewed_) return Errc::busy;  // our own view holds recv_lock
  Errc e = Errc::ok;
  layout::RecordHeader r{};
  auto body = [&]() NO_THREAD_SAFETY_ANALYSIS {
    auto f = next_locked();
    if (!f) {
      e = f.error();
      return;
    }
    if (!take(f->r, data_ + offset_in(f->pos, recv_lap_) + kRecHdr)) {
      e = Errc::msg_size;  // left queued for a larger buffer
      return;
    }
    e = remove_found_locked(*f, now_ns);
    r = f->r;
  };
  if (biased_[1] && run_biased(Side::recv, body)) {
    if (e != Errc::ok) return e;
    return r;
  }
  RecvLocked l(*this);
  if (!l.ok()) return l.error();
  body();
  if (e != Errc::ok) return e;
  maybe_bias(Side::recv, hdr_->recv.popped);
  return r;
}

Result<Segment::Popped> Segment::pop(std::string& out, int64_t now_ns, size_t max_len) {
  const size_t was = out.size();
  auto r = receive_one(now_ns, [&](const layout::RecordHeader& h, const char* payload) {
    if (h.len > max_len) return false;
    out.append(payload, h.len);
    return true;
  });
  if (!r) {
    out.resize(was);
    return r.error();
  }
  return Popped{r->seq, Sender{r->pid, r->uid, r->gid}, r->flags & layout::kPrioMask};
}

Result<Segment::PoppedInto> Segment::pop_into(void* buf, size_t cap, int64_t now_ns) {
  auto r = receive_one(now_ns, [&](const layout::RecordHeader& h, const char* payload) {
    if (h.len > cap) return false;
    std::memcpy(buf, payload, h.len);
    return true;
  });
  if (!r) return r.error();
  return PoppedInto{r->seq, Sender{r->pid, r->uid, r->gid}, r->len, r->flags & layout::kPrioMask};
}

// Not checked: the receive lock stays held after it returns, until
// release_view() or cancel_view() (viewed_ says so).
Result<Segment::View> Segment::view(int64_t now_ns) NO_THREAD_SAFETY_ANALYSIS {
  if (viewed_) return Errc::busy;
  if (Errc e = lock(Side::recv, false); e != Errc::ok) return e;
  auto f = next_locked();
  if (!f) {
    unlock(Side::recv);
    return f.error();
  }
  viewed_ = *f;
  view_now_ns_ = now_ns;
  return View{data_ + offset_in(f->pos, recv_lap_) + kRecHdr, f->r.len, f->r.seq, Sender{f->r.pid, f->r.uid, f->r.gid},
              f->r.flags & layout::kPrioMask};
}

// Not checked: releases the receive lock view() left held.
void Segment::release_view() NO_THREAD_SAFETY_ANALYSIS {
  (void)remove_found_locked(*viewed_, view_now_ns_);  // a library participant: never the handler's case
  viewed_.reset();
  unlock(Side::recv);
}

void Segment::cancel_view() {
  viewed_.reset();
  unlock(Side::recv);
}

Result<uint32_t> Segment::peek_len() {
  RecvLocked l(*this);
  if (!l.ok()) return l.error();
  auto f = next_locked();
  if (!f) return f.error();
  return f->r.len;
}

Result<std::vector<std::pair<unsigned, uint64_t>>> Segment::priority_counts() {
  if (viewed_) return Errc::busy;  // our own view holds recv_lock
  RecvLocked l(*this, /*any_state=*/true);
  if (!l.ok()) return l.error();
  std::vector<std::pair<unsigned, uint64_t>> out;  // few distinct priorities: a sorted vector
  const bool ok = walk_locked([&](uint64_t, const RecordHeader& r, const char*) {
    const unsigned p = r.flags & layout::kPrioMask;
    auto it = std::lower_bound(out.begin(), out.end(), p, [](const auto& e, unsigned v) { return e.first > v; });
    if (it != out.end() && it->first == p) it->second++;
    else out.insert(it, {p, 1});
  });
  if (!ok) return Errc::bad_message;
  return out;
}

bool Segment::withdraw(uint64_t seq) { return try_withdraw(seq) != Withdrawn::received; }

Segment::Withdrawn Segment::try_withdraw(uint64_t seq) {
  Both l(*this);
  if (l.error() == Errc::contended) return Withdrawn::contended;
  if (!l.ok()) return Withdrawn::taken_back;  // gone: nothing left to deliver
  if (hdr_->send.next_seq - hdr_->recv.popped != 1) return Withdrawn::received;
  auto f = next_locked();  // the one queued
  if (!f || f->r.seq != seq || !f->first) return Withdrawn::received;
  if (remove_oldest_locked(*f, 0, /*received=*/false) != Errc::ok) return Withdrawn::taken_back;  // corrupt: gone
  layout::SendState s = hdr_->send;
  s.total_sent--;  // taken back: it was never sent
  commit_send_locked(s);
  settle_quota_locked();
  return Withdrawn::taken_back;
}

// Not checked: both locks are taken only when no reservation or view holds one.
SegmentStats Segment::stats() NO_THREAD_SAFETY_ANALYSIS {
  // Our own reservation or view holds one lock, and taking both (send_lock
  // first) would wait on ourselves: then the counters are read as they are.
  std::optional<Both> l;
  if (!reserved_ && !viewed_) l.emplace(*this, /*any_state=*/true);
  if (l && l->ok()) {  // whoever looks sees the mount's quota exact for this mailbox
    settle_quota_locked();
    return_credit_locked();
  }
  return read_stats();
}

// The counters, each word loaded whole; without the locks (no_wait mode, a
// lock held elsewhere) a half may be mid-update, so differences are clamped.
SegmentStats Segment::read_stats() const {
  const SegmentHeader* h = hdr_;
  auto diff = [](uint64_t a, uint64_t b) { return a - std::min(a, b); };
  SegmentStats s;
  s.next_seq = load_word(h->send.next_seq);
  s.count = diff(s.next_seq, load_word(h->recv.popped));
  s.bytes = diff(load_word(h->send.sent_bytes), load_word(h->recv.popped_bytes));
  s.record_bytes = diff(load_word(h->send.sent_record_bytes), load_word(h->recv.popped_record_bytes));
  s.total_sent = load_word(h->send.total_sent);
  s.total_received = load_word(h->recv.total_received);
  s.lost = load_word(h->send.lost);
  s.consumed_seq = load_word(h->recv.consumed_seq);
  s.last_send_ns = load_word(h->send.last_send_ns);
  s.last_recv_ns = load_word(h->recv.last_recv_ns);
  return s;
}

uint64_t Segment::consumed_seq() {
  if (viewed_) return hdr_->recv.consumed_seq;  // our own view holds recv_lock
  RecvLocked l(*this, /*any_state=*/true);
  // Held elsewhere (no_wait): it only grows, so the last value stored is a safe underestimate.
  return load_word(hdr_->recv.consumed_seq);
}

uint64_t Segment::max_queued_len() {
  RecvLocked l(*this);
  if (!l.ok()) return l.error() == Errc::bad_message || l.error() == Errc::contended ? UINT64_MAX : 0;
  uint64_t longest = 0;
  const bool ok = walk_locked([&](uint64_t, const RecordHeader& r, const char*) {
    longest = std::max<uint64_t>(longest, r.len);
  });
  return ok ? longest : UINT64_MAX;
}

void Segment::adopt_counters(const SegmentStats& st) {
  Both l(*this);
  layout::SendState s = hdr_->send;
  s.total_sent = st.total_sent;
  s.last_send_ns = st.last_send_ns;
  s.lost = st.lost;
  commit_send_locked(s);
  layout::RecvState r = hdr_->recv;
  r.total_received = st.total_received;
  r.last_recv_ns = st.last_recv_ns;
  commit_recv_locked(r);
}

// Empties the ring: everything queued counts as removed and its quota is
// given back. Needs both locks.
void Segment::empty_both_locked() {
  layout::RecvState n = hdr_->recv;
  const layout::SendState& s = hdr_->send;
  n.quota_owed += s.sent_record_bytes - n.popped_record_bytes;
  n.head = s.tail;
  n.popped = s.next_seq;
  n.popped_bytes = s.sent_bytes;
  n.popped_record_bytes = s.sent_record_bytes;
  commit_recv_locked(n);
  if (version_ >= 6) {  // nothing queued, no tombstone: both locks held, so exact
    std::atomic_ref<uint64_t>(hdr_->tombs).store(0, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(hdr_->prio_popped)
        .store(hdr_->prio_pushed.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  settle_quota_locked();
  return_credit_locked();
}

Result<SegmentStats> Segment::retire_and_take(std::vector<Taken>& out) {
  {
    Both l(*this);
    if (!l.ok()) return l.error();
    hdr_->state.store(layout::kRetired, std::memory_order_release);
    walk_locked([&](uint64_t, const RecordHeader& r, const char* payload) {
      out.push_back(Taken{std::string(payload, r.len), Sender{r.pid, r.uid, r.gid}, r.flags & layout::kPrioMask});
    });
    empty_both_locked();  // the new segment charges them again
  }
  return stats();
}

void Segment::unretire_and_put_back(const std::vector<Taken>& queued, const SegmentStats& st) {
  {
    Both l(*this, /*any_state=*/true);
    hdr_->state.store(layout::kLive, std::memory_order_release);
  }
  for (const auto& t : queued) (void)push(t.data.data(), t.data.size(), t.from, st.last_send_ns, true, t.prio);
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
  Both l(*this, /*any_state=*/true);
  if (!l.ok() && !(no_wait_ && state != layout::kLive)) return;
  hdr_->state.store(state, std::memory_order_release);
}

void Segment::settle_quota() {
  Both l(*this, /*any_state=*/true);
  if (!l.ok()) return;
  settle_quota_locked();
  return_credit_locked();
}

Errc Segment::trim() {
  if (version_ < 5) return Errc::ok;
  if (reserved_ || viewed_) return Errc::busy;  // our own lock: Both would wait for ourselves
  Both l(*this);
  if (!l.ok()) return l.error();
  SegmentHeader* h = hdr_;
  const uint64_t tail = h->send.tail, off = tail % data_size_;
  if (h->recv.head != tail || h->recv.popped != h->send.next_seq) return Errc::busy;
  // Fresh, or trimmed with nothing sent since (every send raises populated
  // first): nothing to give back, no system call.
  if (off == 0 && load_word(h->populated) == 0) return Errc::ok;
  if (off != 0) {  // to offset 0 of the next lap, as restart_if_empty_locked()
    if (data_size_ - off >= kRecHdr) {
      if (Errc e = populate_locked(tail, tail + kRecHdr); e != Errc::ok) return e;
      RecordHeader m{};
      m.len = layout::kWrapMarker;
      std::memcpy(data_ + off, &m, kRecHdr);
    }
    const uint64_t next = tail + (data_size_ - off);
    layout::SendState sn = h->send;
    sn.tail = next;
    commit_send_locked(sn);
    layout::RecvState rn = h->recv;
    rn.head = next;
    commit_recv_locked(rn);
    seen_head_ = next;
  }
  // Lowered before the memory goes: dying in between only populates again.
  std::atomic_ref<uint64_t>(h->populated).store(0, std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(h->lap_max).store(0, std::memory_order_relaxed);
  ::madvise(data_, data_size_, MADV_REMOVE);
  return Errc::ok;
}

Errc Segment::discard_all(bool deleted_too) {
  Both l(*this, deleted_too);
  if (l.ok() && (!deleted_too || hdr_->state.load(std::memory_order_acquire) != layout::kCorrupt)) empty_both_locked();
  return l.error() == Errc::contended ? Errc::contended : Errc::ok;
}

// Publishes the next send state so that a death at any instant leaves either
// the old state or (rolled forward by recover_send_locked) the new one.
void Segment::commit_send_locked(const layout::SendState& n) const {
  SegmentHeader* h = hdr_;
  // SYNC POINT: each release store orders what came before it for the next
  // holder of send_lock, which may be recovering from our death.
  store_words(h->send_pending, n);
  std::atomic_ref<uint32_t>(h->send_pending_valid).store(1, std::memory_order_release);
  store_words(h->send, n);
  // SYNC POINT: publishes the records before n.tail; pairs with the acquire
  // load in oldest_locked()/walk_locked().
  h->tail_pub.store(n.tail, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->inflight).store(0, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->inflight_quota_added).store(0, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->send_pending_valid).store(0, std::memory_order_release);
}

// The same for the receive half.
void Segment::commit_recv_locked(const layout::RecvState& n) const {
  SegmentHeader* h = hdr_;
  store_words(h->recv_pending, n);
  std::atomic_ref<uint32_t>(h->recv_pending_valid).store(1, std::memory_order_release);
  store_words(h->recv, n);
  // SYNC POINT: the records before n.head are copied out and their room may
  // be reused; pairs with the acquire loads in room_locked()/queued_locked().
  h->popped_pub.store(n.popped, std::memory_order_release);
  h->head_pub.store(n.head, std::memory_order_release);
  std::atomic_ref<uint32_t>(h->recv_pending_valid).store(0, std::memory_order_release);
}

// Gives back to the mount's quota what committed receives freed (unless
// !force and it is less than a batch). Needs recv_lock.
void Segment::settle_quota_locked(bool force) const {
  if (!force && hdr_->recv.quota_owed < settle_batch_) return;
  // Taken before it is given back: dying in between leaks it rather than
  // giving it back twice.
  const uint64_t owed = std::atomic_ref<uint64_t>(hdr_->recv.quota_owed).exchange(0, std::memory_order_acq_rel);
  release_quota(owed);
}

// Gives the send half's credit back to the mount's quota. Needs send_lock.
// Recorded as given back before it is: dying in between leaks it rather than
// giving it back twice.
void Segment::return_credit_locked() const {
  const uint64_t credit = hdr_->send.quota_credit;
  if (!credit) return;
  layout::SendState n = hdr_->send;
  n.quota_credit = 0;
  commit_send_locked(n);
  release_quota(std::min(credit, credit_bound()));
}

void Segment::release_quota(uint64_t bytes) const {
  if (!ctl_ || !bytes) return;
  // SYNC POINT: pairs with the fetch_add in charge_quota_locked(). Never
  // below zero, whatever a scribbled segment claims.
  uint64_t cur = ctl_->quota_used.load(std::memory_order_acquire);
  while (!ctl_->quota_used.compare_exchange_weak(cur, cur - std::min(cur, bytes), std::memory_order_acq_rel)) {
  }
}

// After a sender died holding send_lock: finish its commit if it had started
// one, or undo its unfinished send and count it lost.
bool Segment::recover_send_locked() const {
  SegmentHeader* h = hdr_;
  if (std::atomic_ref<uint32_t>(h->send_pending_valid).load(std::memory_order_acquire)) {
    commit_send_locked(h->send_pending);
  } else if (h->inflight == layout::kInflightSend) {
    if (h->inflight_quota_added && ctl_)
      ctl_->quota_used.fetch_sub(std::min(h->inflight_quota, ctl_->quota_used.load()), std::memory_order_acq_rel);
    layout::SendState n = h->send;
    n.lost++;
    n.total_sent++;  // it was sent, and lost with its sender
    commit_send_locked(n);
  } else {
    commit_send_locked(h->send);  // republishes the tail, clears the markers
  }
  return positions_sane();
}

// After a receiver died holding recv_lock: finish its commit if it had
// started one; an unfinished receive changed nothing (the message stays).
bool Segment::recover_recv_locked() const {
  SegmentHeader* h = hdr_;
  if (std::atomic_ref<uint32_t>(h->recv_pending_valid).load(std::memory_order_acquire)) {
    // A take's mark is part of its commit (take_locked): made again, idempotent.
    const uint64_t take = version_ >= 6 ? load_word(h->recv_take) : 0;
    if (take && !mark_taken_locked(take - 1)) return false;
    commit_recv_locked(h->recv_pending);
  } else {
    commit_recv_locked(h->recv);
  }
  if (version_ >= 6) std::atomic_ref<uint64_t>(h->recv_take).store(0, std::memory_order_release);
  settle_quota_locked();
  return positions_sane();
}

// Needs the fence of after_push()/after_pop() before it.
namespace {
thread_local bool polled_kick = false;  // this thread kicked a daemon with polls armed
}

bool Segment::take_polled_kick() { return std::exchange(polled_kick, false); }

void Segment::kick_daemon(uint32_t watch_bit) {
  const uint32_t watch = ctl_ ? hdr_->daemon_watch.load(std::memory_order_relaxed) : 0;
  if (!(watch & watch_bit)) return;
  if (watch & layout::kWatchPolled) polled_kick = true;
  hdr_->kick.store(1, std::memory_order_release);
  ctl_->doorbell.fetch_add(1, std::memory_order_release);
  futex_wake(&ctl_->doorbell, 1);
}

// The futex word moves only when somebody sleeps on it: a word written on
// every message is a cache line taken from the other side's spinning waiter
// on every message.
void Segment::after_push(bool by_daemon) {
  // SYNC POINT: the fence orders our ring change (tail_pub, stored with
  // release in commit_send_locked) before the loads of sleeping_receivers and
  // daemon_watch. It pairs with a sleeper's seq_cst increment of
  // sleeping_receivers followed by its seq_cst re-load of tail_pub and
  // `pushed` before FUTEX_WAIT (wait_change in client.cc): either we see the
  // sleeper and move the word and wake it, or it sees our tail and does not
  // sleep. It pairs likewise with the daemon's seq_cst store of daemon_watch
  // followed by its re-check of the ring (Mailbox::settle_locked).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // One message, one sleeper: waking them all made 1,000 sleeping receivers
  // contend for each message. A woken receiver that finds nothing sleeps
  // again; one that cannot take the message passes the wake on (client.cc).
  if (const uint32_t n = hdr_->sleeping_receivers.load(std::memory_order_relaxed); n > 0)
    wake_one(hdr_->pushed, n, hdr_->head_pub, woke_pushed_);
  if (!by_daemon) kick_daemon(layout::kWatchReadable);
}

// Moves `word` and wakes one of the `n` sleepers counted on it, unless the
// only one counted is the one our last wake woke, not yet running again (a
// loaded machine leaves a woken process waiting for a CPU for milliseconds,
// and every message meanwhile made a futex system call: two per message,
// most of the CPU time of a producer and a consumer taking turns). `woke`
// holds the word and the sleepers' own position (`theirs`: head_pub for
// receivers, tail_pub for senders) as that wake left them. Every sleeper
// moves the word before it sleeps (wait_change in client.cc), so while it
// holds that value nobody went to sleep since: the one counted is the one
// woken. The position guards sleepers of an older libmailbox, which do not
// move the word: one that ran since has moved it (taken or sent a message).
void Segment::wake_one(std::atomic<uint32_t>& word, uint32_t n, const std::atomic<uint64_t>& theirs, Woke& woke) {
  // SYNC POINT: seq_cst, after the caller's fence; pairs with a sleeper's
  // seq_cst increments of its count and of the word, then its seq_cst re-load
  // of our position: if our load misses its increment of the word, its
  // re-load sees the position published before our fence, and it does not sleep.
  const uint64_t w = word.load(std::memory_order_seq_cst);
  // Relaxed: only compared; a stale value wakes once more.
  const uint64_t pos = theirs.load(std::memory_order_relaxed);
  if (n == 1 && w == woke.word && pos == woke.pos) return;
  woke.word = uint64_t{word.fetch_add(1, std::memory_order_seq_cst)} + 1;
  woke.pos = pos;
  futex_wake(&word, 1);
}

void Segment::after_pop(bool by_daemon) {
  // SYNC POINT: as in after_push, for senders sleeping on `popped` and
  // watching head_pub (stored with release in commit_recv_locked).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Room for one more message wakes one sender; but rendezvous senders also
  // sleep here for their receipt, and only the right one may go on.
  if (const uint32_t n = hdr_->sleeping_senders.load(std::memory_order_relaxed); n > 0) {
    if (capacity_ != 0) {
      wake_one(hdr_->popped, n, hdr_->tail_pub, woke_popped_);
    } else {
      hdr_->popped.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(&hdr_->popped, INT_MAX);
    }
  }
  if (!by_daemon) kick_daemon(layout::kWatchWritable);
}

void Segment::receiver_sleeping() {
  if (capacity_ != 0) return;
  // SYNC POINT: orders the caller's seq_cst increment of sleeping_receivers
  // before the load of daemon_watch; pairs with the daemon's seq_cst store of
  // daemon_watch followed by its seq_cst load of sleeping_receivers
  // (Mailbox::poll): either it sees us, or we see its watch bit and kick.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  kick_daemon(layout::kWatchWritable);
}

namespace {
// A registrant named by a notify_owner value that can still receive its
// notification: a pid in range that exists (kill(2) with signal 0).
bool notify_owner_alive(uint64_t owner) {
  const uint32_t pid = static_cast<uint32_t>(owner);
  if (pid == 0 || pid > layout::kMaxPid) return false;  // scribbled: nobody
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}
}  // namespace

Errc Segment::notify_arm(uint64_t token) {
  std::atomic<uint64_t>& w = hdr_->notify_owner;
  uint64_t cur = w.load(std::memory_order_acquire);
  for (;;) {
    if (cur == token) return Errc::ok;
    if (cur != 0 && notify_owner_alive(cur)) return Errc::busy;
    // SYNC POINT: seq_cst, then the caller re-checks the ring; pairs with the
    // fence in notify_after_push_locked() (a push either sees the registration
    // or is seen by the caller's later receive).
    if (w.compare_exchange_weak(cur, token, std::memory_order_seq_cst, std::memory_order_acquire)) return Errc::ok;
  }
}

bool Segment::notify_disarm(uint64_t token) {
  uint64_t cur = token;
  // SYNC POINT: acq_rel CAS; pairs with the pusher's CAS that fires it: only one wins.
  const bool took = hdr_->notify_owner.compare_exchange_strong(cur, 0, std::memory_order_acq_rel);
  hdr_->notify_seq.fetch_add(1, std::memory_order_release);
  futex_wake(&hdr_->notify_seq, INT_MAX);
  return took;
}

// Rare by design: the first load is of a word on the line after_push() reads
// anyway, and it is 0 unless an mq_notify registration is armed.
void Segment::notify_after_push_locked(uint64_t seq, const Sender& from) {
  SegmentHeader* h = hdr_;
  uint64_t owner = h->notify_owner.load(std::memory_order_relaxed);
  if (owner == 0) return;
  // SYNC POINT: orders our commit (tail_pub) before the loads below; pairs
  // with a sleeping receiver's seq_cst increment then re-load of tail_pub
  // (client.cc wait_change) and with notify_arm's seq_cst CAS.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Empty before this record: every earlier record is gone.
  if (h->popped_pub.load(std::memory_order_acquire) != seq) return;
  if (h->sleeping_receivers.load(std::memory_order_relaxed) > 0) return;
  if (h->daemon_watch.load(std::memory_order_relaxed) & layout::kWatchParkedReceivers) return;
  // SYNC POINT: acq_rel CAS; pairs with notify_disarm(): one of us takes it.
  if (!h->notify_owner.compare_exchange_strong(owner, 0, std::memory_order_acq_rel)) return;
  h->notify_pid.store(static_cast<uint32_t>(from.pid), std::memory_order_relaxed);
  h->notify_uid.store(from.uid, std::memory_order_relaxed);
  // SYNC POINT: release (after the pid and uid); the registrant's thread
  // loads notify_fired with acquire after it sees notify_seq move.
  h->notify_fired.store(owner, std::memory_order_release);
  h->notify_seq.fetch_add(1, std::memory_order_release);
  futex_wake(&h->notify_seq, INT_MAX);
}

void Segment::unlink_file() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace mbx

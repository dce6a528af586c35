// SPDX-License-Identifier: MIT
// libmailbox: a participant of a mailbox's segment beside the daemon.
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>

#include "client/access.h"
#include "client/file_path.h"
#include "mailbox/mailbox.hpp"
#include "shm/segment.h"

namespace mailbox {

namespace {
using mbx::Errc;
using mbx::layout::ControlHeader;
using mbx::layout::SegmentHeader;

constexpr int kSpins = 200;  // brief spin before sleeping: a partner is often just about to act
constexpr auto kForever = std::chrono::hours(24 * 365);  // a wait with no deadline

Result<std::string> get_xattr(const std::string& path, const char* name) {
  char buf[4096];
  ssize_t n = ::getxattr(path.c_str(), name, buf, sizeof buf);
  if (n < 0) {
    int e = errno;
    return Result<std::string>::failure(e == ENODATA || e == ENOTSUP ? ENOTSUP : e);
  }
  return std::string(buf, static_cast<size_t>(n));
}

// Sleeps until `word` moves from `seen` or the deadline passes; the caller
// re-checks the ring either way. Spins briefly first, also watching the other
// half's published position `pos` (moved from `pos_seen`): it changes before
// the word (inside the other side's commit, before its unlock and wake-up),
// which shortens a ping-pong's hand-off.
// `announce` (receivers only) is told once the caller counts as asleep.
// Returns EINTR if a signal handler ended the sleep, else 0.
int wait_change(std::atomic<uint32_t>& word, std::atomic<uint32_t>& sleepers, uint32_t seen,
                const std::atomic<uint64_t>& pos, uint64_t pos_seen, const std::optional<Clock::time_point>& deadline,
                mbx::Segment* announce = nullptr) {
  for (int i = 0; i < kSpins; i++) {
    if (word.load(std::memory_order_acquire) != seen) return 0;
    if (pos.load(std::memory_order_relaxed) != pos_seen) return 0;  // the caller re-checks under its lock
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  // SYNC POINT: seq_cst increments of the count and the word, then a seq_cst
  // re-load of the position, then FUTEX_WAIT on the word as we left it; pairs
  // with the fence in Segment::after_push/after_pop between publishing the
  // position and loading the sleeper count and the word: either they see us,
  // move the word and wake us (or FUTEX_WAIT finds it moved), or we see their
  // position and do not sleep.
  sleepers.fetch_add(1, std::memory_order_seq_cst);
  // Moves the word: a waker skips the wake of a lone sleeper it already woke
  // while the word holds what its wake left there (Segment::wake_one), so a
  // sleeper moves it to be woken again. Moved since `seen`: a wake came.
  const uint32_t before = word.fetch_add(1, std::memory_order_seq_cst);
  if (announce) announce->receiver_sleeping();
  // Sleeps until the deadline, with no periodic re-check: a re-check's
  // timeout returning to user space just as a signal arrived ran the handler
  // and slept again, so the call did not end with EINTR (LTP's mq tests,
  // whose alarms fell on the 500 ms re-checks). A lost wake-up (the waker
  // killed between publishing and waking, or the one sleeper woken killed
  // before acting) is the daemon's to repair: its idle sweep wakes every
  // sleeper of a ring that did not move (ShmStore::sweep). An absolute
  // time: a wait a handler with SA_RESTART interrupts is restarted by the
  // kernel (futex_wait_until), one without ends with EINTR.
  const auto until = deadline ? *deadline : Clock::now() + kForever;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(until.time_since_epoch()).count();
  const timespec abs{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  int r = 0;
  if (before == seen && pos.load(std::memory_order_seq_cst) == pos_seen)
    r = mbx::futex_wait_until(&word, before + 1, abs) < 0 && errno == EINTR ? EINTR : 0;
  sleepers.fetch_sub(1, std::memory_order_seq_cst);
  return r;
}

bool expired(const std::optional<Clock::time_point>& deadline) { return deadline && Clock::now() >= *deadline; }

// The identity written into every record, read once: getpid() and friends are
// system calls, and the fast path makes none. A forked child refreshes it.
std::atomic<bool> identity_stale{true};
mbx::Sender cached_identity;
std::once_flag atfork_once;

const mbx::Sender& identity() {
  // SYNC POINT: acquire pairs with the release store below (and the relaxed
  // store in the fork handler, which runs single-threaded in the child).
  if (identity_stale.load(std::memory_order_acquire)) {
    std::call_once(atfork_once, [] {
      pthread_atfork(nullptr, nullptr, [] { identity_stale.store(true, std::memory_order_relaxed); });
    });
    cached_identity = mbx::Sender{static_cast<int32_t>(::getpid()), ::geteuid(), ::getegid()};
    identity_stale.store(false, std::memory_order_release);
  }
  return cached_identity;
}
}  // namespace

struct detail::MailboxImpl {
  std::string path;
  bool can_send = false, can_receive = false;
  mbx::Segment seg;
  mbx::Mapping ctl;
  mbx::Sender last_from;         // of the last message received
  unsigned last_prio = 0;        // and its priority
  std::optional<FilePath> file;  // the fallback: no segment mapped
  mbx::UniqueFd base;            // a dup of the descriptor opened through (detail::Access::open_through)
  // The fallback's zero-copy buffers: a reservation is staged here until
  // commit(), a view is a private copy (see reserve(), view()).
  std::string staging, viewed;
  unsigned staging_prio = 0;
  bool staged = false, viewing = false;  // a reservation or view is open (fallback)
  bool interruptible = false;            // a wait ended by a signal handler fails with EINTR (detail::Access)

  SegmentHeader* h() const { return seg.header(); }

  // Finds the mailbox's current segment through the daemon's xattr and maps
  // it with the mount's control segment (quota counter, doorbell).
  int attach() {
    auto sp = get_xattr(path, mailbox::attr::kSegment);
    // Write-only for us, or a mode that denies what our descriptor allows: ask an open file.
    if (!sp && sp.error() == EACCES && (!can_receive || base.valid())) {
      mbx::layout::FileInfo fi;
      int e = can_receive ? EACCES : FilePath::info(path, &fi);
      if (e == EACCES && base.valid()) e = FilePath::info(base.get(), &fi);
      sp = e ? Result<std::string>::failure(e) : Result<std::string>(std::string(fi.segment));
    }
    if (!sp) return sp.error() == ENOENT ? EIDRM : sp.error();  // the mailbox file is gone
    auto s = mbx::Segment::attach(*sp);
    if (!s) return mbx::to_errno(s.error());
    const std::string cpath = sp->substr(0, sp->rfind('/')) + "/control";
    mbx::UniqueFd fd(::open(cpath.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) return errno;
    void* p = ::mmap(nullptr, kControlSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return errno;
    mbx::Mapping m(p, kControlSize);
    auto* c = static_cast<ControlHeader*>(p);
    if (std::atomic_ref<uint64_t>(c->magic).load(std::memory_order_acquire) != mbx::layout::kControlMagic)
      return EBADMSG;
    seg = std::move(s.value());
    ctl = std::move(m);
    seg.set_control(c, /*batch_sends=*/true);
    return 0;
  }

  // A segment replaced by a resize is looked up again (a few times: it may be
  // resized again meanwhile); a deleted one is gone.
  bool recover(Errc e, int* err) {
    if (e != Errc::stale) {
      *err = mbx::to_errno(e);
      return false;
    }
    *err = attach_current();
    return *err == 0;
  }

  // attach(), retried while a concurrent resize makes the segment named by
  // the xattr retired (ESTALE) or already unlinked (ENOENT) by the time it is
  // mapped: the next lookup names its replacement.
  int attach_current() {
    for (int i = 0; i < 16; i++) {
      const int a = attach();
      if (a != ESTALE && a != ENOENT) return a;
    }
    return EIDRM;
  }

  // What a waiter of one side sleeps on: the futex word the other side
  // increments, the sleeper count it reads, and the position it publishes.
  struct WaitOn {
    std::atomic<uint32_t> SegmentHeader::*word;
    std::atomic<uint32_t> SegmentHeader::*sleepers;
    std::atomic<uint64_t> SegmentHeader::*pos;
  };
  static constexpr WaitOn kForRoom{&SegmentHeader::popped, &SegmentHeader::sleeping_senders, &SegmentHeader::head_pub};
  static constexpr WaitOn kForMessage{&SegmentHeader::pushed, &SegmentHeader::sleeping_receivers,
                                      &SegmentHeader::tail_pub};

  // Runs `attempt` (which returns Errc::again while it would block) until it
  // succeeds, sleeping in between; follows resizes. The futex word is read
  // only once an attempt failed (it is a cache line the other side writes on
  // every message), then the attempt is repeated before sleeping on the value
  // read.
  // The first attempt is inline and the rest out of line: a message that
  // goes through at once pays for none of the waiting's state.
  template <class Attempt>
  int until(const WaitOn& w, Attempt&& attempt, bool nonblock, const std::optional<Clock::time_point>& deadline) {
    const Errc e = attempt();
    return e == Errc::ok ? 0 : until_slow(w, attempt, e, nonblock, deadline);
  }
  // `e`: what the first attempt returned.
  template <class Attempt>
  [[gnu::noinline]] int until_slow(const WaitOn& w, Attempt& attempt, Errc e, bool nonblock,
                                   const std::optional<Clock::time_point>& deadline) {
    uint32_t seen = 0;
    uint64_t pos_seen = 0;
    bool have_seen = false;
    for (bool first = true;; first = false) {
      if (!first) e = attempt();
      if (e == Errc::ok) return 0;
      int err;
      if (e == Errc::again) {
        if (nonblock) return EAGAIN;
        // Empty, and our own reservation holds send_lock: nobody can send, so
        // waiting would be for ever.
        if (&w == &kForMessage && seg.reserving()) return EBUSY;
        if (expired(deadline)) return ETIMEDOUT;
        if (have_seen &&
            wait_change(h()->*w.word, h()->*w.sleepers, seen, h()->*w.pos, pos_seen, deadline,
                        &w == &kForMessage ? &seg : nullptr) == EINTR &&
            interruptible)
          return EINTR;
        seen = (h()->*w.word).load(std::memory_order_acquire);
        pos_seen = (h()->*w.pos).load(std::memory_order_relaxed);
        have_seen = true;
      } else if (!recover(e, &err)) {
        return err;
      } else {
        have_seen = false;  // `seen` is a word of the old segment
      }
    }
  }

  int send(std::string_view msg, unsigned prio, bool nonblock, std::optional<Clock::time_point> deadline) {
    if (!can_send) return EBADF;
    if (prio > kMaxPriority) return EINVAL;
    if (file) return viewing || staged ? EBUSY : file->send(msg, prio, nonblock, deadline);  // as the segment's rules
    uint64_t seq = 0;
    int e = until(
        kForRoom,
        [&] {
          auto r = seg.push(msg.data(), msg.size(), identity(), mbx::coarse_realtime_ns(), false, prio);
          if (r) seq = *r;
          return r ? Errc::ok : r.error();
        },
        nonblock, deadline);
    if (e) return e;
    seg.after_push(false);
    return seg.capacity() == 0 ? await_receipt(seq, nonblock, deadline) : 0;
  }

  Result<char*> reserve(size_t len, unsigned prio, bool nonblock, std::optional<Clock::time_point> deadline) {
    if (!can_send) return Result<char*>::failure(EBADF);
    if (prio > kMaxPriority) return Result<char*>::failure(EINVAL);
    if (file) {                                                     // staged here, sent by commit()
      if (staged || viewing) return Result<char*>::failure(EBUSY);  // as the segment's rules
      if (len > file->max_message()) return Result<char*>::failure(EMSGSIZE);
      staging.assign(len, '\0');
      staging_prio = prio;
      staged = true;
      return staging.data();
    }
    char* p = nullptr;
    int e = until(
        kForRoom,
        [&] {
          auto r = seg.reserve(len, identity(), mbx::coarse_realtime_ns(), prio);
          if (r) p = *r;
          return r ? Errc::ok : r.error();
        },
        nonblock, deadline);
    if (e) return Result<char*>::failure(e);
    return p;
  }

  int commit() {
    if (file) {
      staged = false;
      return file->send(staging, staging_prio, false, std::nullopt);
    }
    const uint64_t seq = seg.commit_reserved();
    seg.after_push(false);
    return seg.capacity() == 0 ? await_receipt(seq, false, std::nullopt) : 0;
  }

  // Rendezvous: the send completes when a receiver has taken message `seq`;
  // one not taken in time is withdrawn (an unfinished send delivers nothing).
  // Out of line: GCC 12 warns falsely about the optional deadline when inlined.
  [[gnu::noinline]] int await_receipt(uint64_t seq, bool nonblock, std::optional<Clock::time_point> deadline) {
    if (nonblock) deadline = Clock::now() + std::chrono::milliseconds(1);
    for (;;) {
      const uint32_t seen = h()->popped.load(std::memory_order_acquire);
      const uint64_t pos_seen = h()->head_pub.load(std::memory_order_relaxed);
      if (seg.consumed_seq() > seq) return 0;
      // A resize carried the offer over to the new segment (it stays queued
      // there); a delete discarded it.
      const uint32_t state = h()->state.load(std::memory_order_acquire);
      if (state == mbx::layout::kRetired) return 0;
      if (state != mbx::layout::kLive) return EIDRM;
      if (expired(deadline)) {
        if (!seg.withdraw(seq)) return 0;  // taken meanwhile
        seg.after_pop(false);
        return nonblock ? EAGAIN : ETIMEDOUT;
      }
      wait_change(h()->popped, h()->sleeping_senders, seen, h()->head_pub, pos_seen, deadline);
    }
  }

  Result<size_t> receive(void* buf, size_t cap, bool nonblock, std::optional<Clock::time_point> deadline) {
    if (!can_receive) return Result<size_t>::failure(EBADF);
    if (file) {
      if (viewing) return Result<size_t>::failure(EBUSY);  // as the segment's rules
      auto r = file->receive(buf, cap, nonblock, deadline);
      if (r) note_file_sender();
      return r;
    }
    size_t len = 0;
    int e = until(
        kForMessage,
        [&] {
          auto r = seg.pop_into(buf, cap, mbx::coarse_realtime_ns());
          if (!r) return r.error();
          len = r->len;
          last_from = r->from;
          last_prio = r->prio;
          return Errc::ok;
        },
        nonblock, deadline);
    if (e == EMSGSIZE) seg.after_push(false);  // not taken: pass our wake on to another receiver
    if (e) return Result<size_t>::failure(e);
    seg.after_pop(false);
    return len;
  }

  // Receives one whole message into a byte container (std::string or
  // std::vector<char>), sized to the message: copied once, straight from the
  // ring while the receive half is held, as a view that is then released.
  template <class Bytes>
  int receive(Bytes& out, bool nonblock, std::optional<Clock::time_point> deadline) {
    if (!can_receive) return EBADF;
    if (file) {
      auto r = viewing ? Result<std::string>::failure(EBUSY) : file->receive(nonblock, deadline);
      if (!r) {
        out.clear();
        return r.error();
      }
      out.assign(r->begin(), r->end());
      note_file_sender();
      return 0;
    }
    int e = until(
        kForMessage,
        [&] {
          auto r = seg.view(mbx::coarse_realtime_ns());
          if (!r) return r.error();
          try {
            out.assign(r->data, r->data + r->len);
          } catch (...) {  // out of memory: the message stays queued, nothing stays locked
            seg.cancel_view();
            return Errc::no_memory;
          }
          last_from = r->from;
          last_prio = r->prio;
          seg.release_view();
          return Errc::ok;
        },
        nonblock, deadline);
    if (e) {
      out.clear();
      return e;
    }
    seg.after_pop(false);
    return 0;
  }

  Result<mbx::Segment::View> view(bool nonblock, std::optional<Clock::time_point> deadline) {
    if (!can_receive) return Result<mbx::Segment::View>::failure(EBADF);
    if (file) {
      if (viewing) return Result<mbx::Segment::View>::failure(EBUSY);  // as the segment refuses a second one
      auto r = file->receive(nonblock, deadline);
      if (!r) return Result<mbx::Segment::View>::failure(r.error());
      viewed = std::move(*r);
      viewing = true;
      note_file_sender();
      return mbx::Segment::View{viewed.data(), viewed.size(), 0, last_from, last_prio};
    }
    mbx::Segment::View v{};
    int e = until(
        kForMessage,
        [&] {
          auto r = seg.view(mbx::coarse_realtime_ns());
          if (r) v = *r;
          return r ? Errc::ok : r.error();
        },
        nonblock, deadline);
    if (e) return Result<mbx::Segment::View>::failure(e);
    last_from = v.from;
    last_prio = v.prio;
    return v;
  }

  void note_file_sender() {
    const Sender s = file->last_sender();
    last_from = mbx::Sender{s.pid, s.uid, s.gid};
    last_prio = file->last_priority();
  }

  void release() {
    if (file) {  // already taken from the mailbox
      viewing = false;
      return;
    }
    seg.release_view();
    seg.after_pop(false);
  }

  void put_back() {
    if (file) {
      viewing = false;
      return file->put_back(std::move(viewed));
    }
    seg.cancel_view();
    seg.after_push(false);  // still queued: pass our wake on to another receiver
  }

  void abort_reserved() {
    if (file) staged = false;
    else seg.abort_reserved();
  }
};

namespace {
// Mailbox::open, or (base >= 0) open_through: the descriptor's access mode
// decides, as the kernel checks an open file's mode only at its open.
Result<Mailbox> open_impl(const std::string& path, OpenOptions opts, int base,
                          std::unique_ptr<detail::MailboxImpl> impl) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Result<Mailbox>::failure(errno);
  if (S_ISDIR(st.st_mode)) return Result<Mailbox>::failure(EISDIR);
  if (base >= 0) {
    const int acc = ::fcntl(base, F_GETFL);
    if (acc < 0) return Result<Mailbox>::failure(errno);
    if ((opts.send && (acc & O_ACCMODE) == O_RDONLY) || (opts.receive && (acc & O_ACCMODE) == O_WRONLY))
      return Result<Mailbox>::failure(EBADF);
    impl->base.reset(::fcntl(base, F_DUPFD_CLOEXEC, 0));
    if (!impl->base.valid()) return Result<Mailbox>::failure(errno);
  } else {
    // The mode bits decide, as they do for open(2).
    if (opts.send && ::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0) return Result<Mailbox>::failure(errno);
    if (opts.receive && ::faccessat(AT_FDCWD, path.c_str(), R_OK, AT_EACCESS) != 0)
      return Result<Mailbox>::failure(errno);
  }
  impl->path = path;
  impl->can_send = opts.send;
  impl->can_receive = opts.receive;
  if (int e = impl->attach_current()) {
    // EIO: its segment went with a removed state directory (until a resize).
    // EREMOTE: the mailbox lives on a server (a Redis mount): always the file.
    if (e != EREMOTE && ((e != EACCES && e != EIO) || !opts.fallback)) return Result<Mailbox>::failure(e);
    FilePath f;
    if (int fe = FilePath::open(path, &f, impl->base.get())) return Result<Mailbox>::failure(fe);
    impl->file = std::move(f);
  }
  return detail::Access::make(std::move(impl));
}
}  // namespace

Result<Mailbox> Mailbox::open(const std::string& path, OpenOptions opts) {
  return open_impl(path, opts, -1, std::make_unique<Impl>());
}

Result<Mailbox> detail::Access::open_through(int fd, const std::string& path, OpenOptions opts) {
  if (fd < 0) return Result<Mailbox>::failure(EBADF);
  return open_impl(path, opts, fd, std::make_unique<MailboxImpl>());
}

Mailbox detail::Access::make(std::unique_ptr<MailboxImpl> impl) { return Mailbox(std::move(impl)); }

Result<Mailbox> Mailbox::create(const std::string& path, const CreateOptions& c, OpenOptions o) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, c.mode);
  if (fd < 0) return Result<Mailbox>::failure(errno);
  ::close(fd);
  const std::string cap = c.capacity == CreateOptions::kUnbounded ? "unbounded" : std::to_string(c.capacity);
  const std::string max = std::to_string(c.max_message);
  if (::setxattr(path.c_str(), attr::kMaxMessage, max.data(), max.size(), 0) != 0 ||
      ::setxattr(path.c_str(), attr::kCapacity, cap.data(), cap.size(), 0) != 0) {
    int e = errno;
    ::unlink(path.c_str());
    return Result<Mailbox>::failure(e);
  }
  return open(path, o);
}

Mailbox::Mailbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Mailbox::Mailbox(Mailbox&&) noexcept = default;
Mailbox& Mailbox::operator=(Mailbox&&) noexcept = default;
Mailbox::~Mailbox() = default;

int Mailbox::send(std::string_view m) { return impl_->send(m, 0, false, std::nullopt); }
int Mailbox::try_send(std::string_view m) { return impl_->send(m, 0, true, std::nullopt); }
int Mailbox::send_for(std::string_view m, Clock::duration t) { return impl_->send(m, 0, false, Clock::now() + t); }
int Mailbox::send_until(std::string_view m, Clock::time_point d) { return impl_->send(m, 0, false, d); }
int Mailbox::send(std::string_view m, unsigned p) { return impl_->send(m, p, false, std::nullopt); }
int Mailbox::try_send(std::string_view m, unsigned p) { return impl_->send(m, p, true, std::nullopt); }
int Mailbox::send_for(std::string_view m, unsigned p, Clock::duration t) {
  return impl_->send(m, p, false, Clock::now() + t);
}
int Mailbox::send_until(std::string_view m, unsigned p, Clock::time_point d) { return impl_->send(m, p, false, d); }

Result<size_t> Mailbox::receive(void* b, size_t n) { return impl_->receive(b, n, false, std::nullopt); }
Result<size_t> Mailbox::try_receive(void* b, size_t n) { return impl_->receive(b, n, true, std::nullopt); }
Result<size_t> Mailbox::receive_for(void* b, size_t n, Clock::duration t) {
  return impl_->receive(b, n, false, Clock::now() + t);
}
Result<size_t> Mailbox::receive_until(void* b, size_t n, Clock::time_point d) { return impl_->receive(b, n, false, d); }

namespace {
// The priority is read once the receive has returned.
Result<size_t> with_prio(Result<size_t> r, const detail::MailboxImpl& m, unsigned* prio) {
  if (r && prio) *prio = m.last_prio;
  return r;
}
}  // namespace

Result<size_t> Mailbox::receive(void* b, size_t n, unsigned* p) {
  return with_prio(impl_->receive(b, n, false, std::nullopt), *impl_, p);
}
Result<size_t> Mailbox::try_receive(void* b, size_t n, unsigned* p) {
  return with_prio(impl_->receive(b, n, true, std::nullopt), *impl_, p);
}
Result<size_t> Mailbox::receive_for(void* b, size_t n, unsigned* p, Clock::duration t) {
  return with_prio(impl_->receive(b, n, false, Clock::now() + t), *impl_, p);
}
Result<size_t> Mailbox::receive_until(void* b, size_t n, unsigned* p, Clock::time_point d) {
  return with_prio(impl_->receive(b, n, false, d), *impl_, p);
}
int Mailbox::receive(std::string& out) { return impl_->receive(out, false, std::nullopt); }
int Mailbox::try_receive(std::string& out) { return impl_->receive(out, true, std::nullopt); }
int Mailbox::receive_for(std::string& out, Clock::duration t) { return impl_->receive(out, false, Clock::now() + t); }
int Mailbox::receive_until(std::string& out, Clock::time_point d) { return impl_->receive(out, false, d); }
int Mailbox::receive(std::vector<char>& out) { return impl_->receive(out, false, std::nullopt); }
int Mailbox::try_receive(std::vector<char>& out) { return impl_->receive(out, true, std::nullopt); }
int Mailbox::receive_for(std::vector<char>& out, Clock::duration t) {
  return impl_->receive(out, false, Clock::now() + t);
}
int Mailbox::receive_until(std::vector<char>& out, Clock::time_point d) { return impl_->receive(out, false, d); }

Result<Reservation> Mailbox::reserve(size_t len) { return reserve_impl(len, 0, false, std::nullopt); }
Result<Reservation> Mailbox::try_reserve(size_t len) { return reserve_impl(len, 0, true, std::nullopt); }
Result<Reservation> Mailbox::reserve_until(size_t len, Clock::time_point d) { return reserve_impl(len, 0, false, d); }
Result<Reservation> Mailbox::reserve(size_t len, unsigned p) { return reserve_impl(len, p, false, std::nullopt); }
Result<Reservation> Mailbox::try_reserve(size_t len, unsigned p) { return reserve_impl(len, p, true, std::nullopt); }
Result<Reservation> Mailbox::reserve_until(size_t len, unsigned p, Clock::time_point d) {
  return reserve_impl(len, p, false, d);
}

Result<Reservation> Mailbox::reserve_impl(size_t len, unsigned prio, bool nonblock,
                                          std::optional<Clock::time_point> d) {
  auto r = impl_->reserve(len, prio, nonblock, d);
  if (!r) return Result<Reservation>::failure(r.error());
  return Reservation(impl_.get(), *r, len);
}

Reservation::~Reservation() {
  if (m_) m_->abort_reserved();
}

int Reservation::commit() {
  if (!m_) return EINVAL;
  return std::exchange(m_, nullptr)->commit();
}

Result<View> Mailbox::receive_view() { return view_impl(false, std::nullopt); }
Result<View> Mailbox::try_receive_view() { return view_impl(true, std::nullopt); }
Result<View> Mailbox::receive_view_until(Clock::time_point d) { return view_impl(false, d); }

Result<View> Mailbox::view_impl(bool nonblock, std::optional<Clock::time_point> d) {
  auto r = impl_->view(nonblock, d);
  if (!r) return Result<View>::failure(r.error());
  return View(impl_.get(), r->data, r->len, Sender{r->from.pid, r->from.uid, r->from.gid}, r->prio);
}

void View::release() {
  if (auto* m = std::exchange(m_, nullptr)) m->release();
}

void View::put_back() {
  if (auto* m = std::exchange(m_, nullptr)) m->put_back();
}

Sender Mailbox::last_sender() const { return Sender{impl_->last_from.pid, impl_->last_from.uid, impl_->last_from.gid}; }
unsigned Mailbox::last_priority() const { return impl_->last_prio; }

Stats Mailbox::stats() const {
  if (impl_->file) {  // the daemon's view, through the xattrs
    auto num = [&](const char* name) -> uint64_t {
      auto v = get_xattr(impl_->path, name);
      if (!v) return 0;
      return *v == "unbounded" ? CreateOptions::kUnbounded : std::strtoull(v->c_str(), nullptr, 10);
    };
    return Stats{num(attr::kMessages), num(attr::kBytes),    num(attr::kSent),      num(attr::kReceived),
                 num(attr::kLost),     num(attr::kCapacity), num(attr::kMaxMessage)};
  }
  mbx::SegmentStats s = impl_->seg.stats();
  return Stats{
      s.count, s.bytes, s.total_sent, s.total_received, s.lost, impl_->seg.capacity(), impl_->seg.max_message()};
}

const std::string& Mailbox::path() const { return impl_->path; }
bool Mailbox::via_file() const { return impl_->file.has_value(); }

mbx::Segment* detail::Access::segment(Mailbox& m) { return m.impl_->file ? nullptr : &m.impl_->seg; }
void detail::Access::set_interruptible(Mailbox& m, bool on) {
  m.impl_->interruptible = on;
  if (m.impl_->file) m.impl_->file->set_interruptible(on);
}

}  // namespace mailbox

// ---- C API ---------------------------------------------------------------------

#include "mailbox/mailbox.h"

struct mbx_mailbox {
  mailbox::Mailbox box;
  std::optional<mailbox::Reservation> reserved;
  std::optional<mailbox::View> viewed;
};

namespace {
constexpr unsigned kKnownFlags = MBX_SEND | MBX_RECEIVE | MBX_FALLBACK;

// Neither direction, or a bit this version does not know: a caller's mistake.
bool bad_flags(unsigned flags) { return (flags & ~kKnownFlags) || !(flags & (MBX_SEND | MBX_RECEIVE)); }

std::optional<mailbox::Clock::time_point> deadline_of(int timeout_ms) {
  if (timeout_ms < 0) return std::nullopt;
  return mailbox::Clock::now() + std::chrono::milliseconds(timeout_ms);
}
}  // namespace

extern "C" {

int mbx_open(const char* path, unsigned flags, mbx_t** out) {
  if (bad_flags(flags)) return -EINVAL;
  auto r = mailbox::Mailbox::open(path,
                                  {(flags & MBX_SEND) != 0, (flags & MBX_RECEIVE) != 0, (flags & MBX_FALLBACK) != 0});
  if (!r) return -r.error();
  *out = new mbx_mailbox{std::move(r.value()), std::nullopt, std::nullopt};
  return 0;
}

int mbx_create(const char* path, uint64_t capacity, uint64_t max_message, unsigned mode, unsigned flags, mbx_t** out) {
  if (bad_flags(flags)) return -EINVAL;
  mailbox::CreateOptions c;
  c.capacity = capacity;
  c.max_message = max_message;
  c.mode = mode;
  auto r = mailbox::Mailbox::create(path, c,
                                    {(flags & MBX_SEND) != 0, (flags & MBX_RECEIVE) != 0, (flags & MBX_FALLBACK) != 0});
  if (!r) return -r.error();
  *out = new mbx_mailbox{std::move(r.value()), std::nullopt, std::nullopt};
  return 0;
}

void mbx_close(mbx_t* m) { delete m; }

int mbx_send(mbx_t* m, const void* data, size_t len, int timeout_ms) {
  if (timeout_ms < -1) return -EINVAL;
  std::string_view v(static_cast<const char*>(data), len);
  if (timeout_ms == 0) return -m->box.try_send(v);
  auto d = deadline_of(timeout_ms);
  return -(d ? m->box.send_until(v, *d) : m->box.send(v));
}

ssize_t mbx_recv(mbx_t* m, void* buf, size_t cap, int timeout_ms) {
  if (timeout_ms < -1) return -EINVAL;
  auto r = timeout_ms == 0  ? m->box.try_receive(buf, cap)
           : timeout_ms < 0 ? m->box.receive(buf, cap)
                            : m->box.receive_until(buf, cap, *deadline_of(timeout_ms));
  return r ? static_cast<ssize_t>(*r) : -static_cast<ssize_t>(r.error());
}

int mbx_send_prio(mbx_t* m, const void* data, size_t len, unsigned prio, int timeout_ms) {
  if (timeout_ms < -1) return -EINVAL;
  std::string_view v(static_cast<const char*>(data), len);
  if (timeout_ms == 0) return -m->box.try_send(v, prio);
  auto d = deadline_of(timeout_ms);
  return -(d ? m->box.send_until(v, prio, *d) : m->box.send(v, prio));
}

ssize_t mbx_recv_prio(mbx_t* m, void* buf, size_t cap, unsigned* prio, int timeout_ms) {
  if (timeout_ms < -1) return -EINVAL;
  auto r = timeout_ms == 0  ? m->box.try_receive(buf, cap, prio)
           : timeout_ms < 0 ? m->box.receive(buf, cap, prio)
                            : m->box.receive_until(buf, cap, prio, *deadline_of(timeout_ms));
  return r ? static_cast<ssize_t>(*r) : -static_cast<ssize_t>(r.error());
}

unsigned mbx_last_priority(const mbx_t* m) { return m->box.last_priority(); }

void mbx_last_sender(const mbx_t* m, pid_t* pid, uid_t* uid, gid_t* gid) {
  const mailbox::Sender s = m->box.last_sender();
  if (pid) *pid = s.pid;
  if (uid) *uid = s.uid;
  if (gid) *gid = s.gid;
}

int mbx_reserve(mbx_t* m, size_t len, void** data, int timeout_ms) {
  if (timeout_ms < -1) return -EINVAL;
  if (m->reserved) return -EBUSY;
  auto r = timeout_ms == 0  ? m->box.try_reserve(len)
           : timeout_ms < 0 ? m->box.reserve(len)
                            : m->box.reserve_until(len, *deadline_of(timeout_ms));
  if (!r) return -r.error();
  *data = r->data();
  m->reserved.emplace(std::move(r.value()));
  return 0;
}

int mbx_commit(mbx_t* m) {
  if (!m->reserved) return -EINVAL;
  const int e = m->reserved->commit();
  m->reserved.reset();
  return -e;
}

void mbx_abort(mbx_t* m) { m->reserved.reset(); }

ssize_t mbx_recv_view(mbx_t* m, const void** data, int timeout_ms) {
  if (timeout_ms < -1) return -EINVAL;
  if (m->viewed) return -EBUSY;
  auto r = timeout_ms == 0  ? m->box.try_receive_view()
           : timeout_ms < 0 ? m->box.receive_view()
                            : m->box.receive_view_until(*deadline_of(timeout_ms));
  if (!r) return -static_cast<ssize_t>(r.error());
  *data = r->data();
  const size_t n = r->size();
  m->viewed.emplace(std::move(r.value()));
  return static_cast<ssize_t>(n);
}

void mbx_release(mbx_t* m) { m->viewed.reset(); }

void mbx_put_back(mbx_t* m) {
  if (m->viewed) m->viewed->put_back();
  m->viewed.reset();
}

}  // extern "C"

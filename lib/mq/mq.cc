// SPDX-License-Identifier: MIT
// POSIX message queues over mailboxes (mailbox_mq(3)): a queue "/name" is
// the mailbox <root>/name; its descriptor is a file descriptor open on that
// file (for poll); messages go through libmailbox Mailbox objects, one per
// thread using the descriptor at a time (a Mailbox is single-threaded).
#include "mq/mq.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/unique_fd.h"
#include "client/access.h"
#include "client/signal_hold.h"
#include "mailbox/mailbox.hpp"
#include "mailbox/mqueue.h"
#include "mailbox/protocol.h"
#include "shm/segment.h"

namespace mbx::mq {
namespace {

using mailbox::Clock;
using mailbox::Mailbox;

// Linux's defaults for a queue created without attributes
// (/proc/sys/fs/mqueue/msg_default, msgsize_default).
constexpr long kDefaultMaxMsg = 10;
constexpr long kDefaultMsgSize = 8192;
constexpr unsigned kPrioMax = 32768;  // MQ_PRIO_MAX on Linux: priorities 0..32767

// A registration of mq_notify: one thread waits on the segment's notify_seq
// until the registration fires or is cancelled (Segment::notify_arm).
struct Notifier {
  std::optional<Mailbox> box;  // its own: keeps the segment mapped for the thread
  Segment* seg = nullptr;
  uint64_t token = 0;
  sigevent ev{};
  size_t stack = 0;                   // SIGEV_THREAD: attributes read at registration
  std::atomic<bool> stop{false};      // cancelled (mq_notify(NULL), mq_close)
  std::atomic<bool> finished{false};  // the thread is done: the registration is gone
  // Who delivers a fired registration: its thread, or a sending thread of this
  // process (deliver_own); the exchange to true picks one.
  std::atomic<bool> claimed{false};
  std::thread th;
};

// This process's armed registrations by token, for deliver_own. A Notifier is
// in it from mq_notify until end_notifier, which removes it before freeing it.
struct Registry {
  Mutex mu;
  std::unordered_map<uint64_t, Notifier*> by_token GUARDED_BY(mu);
};
Registry& registry() {
  static Registry* r = new Registry;  // never destroyed, as table()
  return *r;
}
// Entries in the registry: with none, a send does not look. Relaxed: a send
// that misses a new registration leaves its delivery to the notifier thread.
std::atomic<int> registered{0};

struct Queue {
  int fd = -1;
  std::string path;
  int acc = O_RDWR;
  uint64_t capacity = 0, max_message = 0;
  Mutex mu;
  std::vector<Mailbox> pool GUARDED_BY(mu);  // idle Mailbox objects
  std::unique_ptr<Notifier> notifier GUARDED_BY(mu);
};

struct Table {
  Mutex mu;
  std::unordered_map<int, std::shared_ptr<Queue>> queues GUARDED_BY(mu);
};

// Never destroyed: other threads may still use a descriptor while the
// process exits.
Table& table() {
  static Table* t = new Table;
  return *t;
}

// Queues open: with none, find() answers without the lock (the preload asks
// on every close(2)). Relaxed: a descriptor is looked up by the thread that
// got it from mq_open, or one that got it through a synchronising handoff.
std::atomic<int> open_queues{0};

std::shared_ptr<Queue> find(int fd) {
  if (open_queues.load(std::memory_order_relaxed) == 0) return nullptr;
  Table& t = table();
  MutexLock l(t.mu);
  auto it = t.queues.find(fd);
  return it == t.queues.end() ? nullptr : it->second;
}

int fail(int e) {
  errno = e;
  return -1;
}

// Leaves errno as the caller had it unless the call fails (returns -1), as
// Linux's mq system calls do: the library's own probes (a segment the caller
// may not map, a name unlink drops) must not show through a success.
class KeepErrno {
 public:
  template <class T>
  T result(T r) {
    if (r != static_cast<T>(-1)) errno = saved_;
    return r;
  }

 private:
  int saved_ = errno;
};

// O_NONBLOCK is the descriptor's file status flag, as Linux's mq reads it:
// shared with a forked child and every dup, and set by fcntl(F_SETFL) as by
// mq_setattr. Asked only when a call would block (a system call).
bool nonblocking(const Queue& q) { return (::fcntl(q.fd, F_GETFL) & O_NONBLOCK) != 0; }

// Linux's rules for a queue name, in its order: a leading "/" (EINVAL,
// glibc); then the rest as the kernel copies it (ENAMETOOLONG from PATH_MAX
// bytes, ENOENT if empty), looks at its characters (EACCES for a "/", "." or
// ".."), and looks it up (ENAMETOOLONG over NAME_MAX).
int check_name(const char* name) {
  if (!name || name[0] != '/') return EINVAL;
  const char* n = name + 1;
  const size_t len = ::strnlen(n, PATH_MAX);
  if (len >= PATH_MAX) return ENAMETOOLONG;
  if (len == 0) return ENOENT;
  if (std::memchr(n, '/', len) || std::strcmp(n, ".") == 0 || std::strcmp(n, "..") == 0) return EACCES;
  if (len > NAME_MAX) return ENAMETOOLONG;
  return 0;
}

// The descriptor's file, whatever has become of its name since: the path
// libmailbox opens for another Mailbox of the same queue.
std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

OpenOptions open_options(int acc) { return OpenOptions{acc != O_RDONLY, acc != O_WRONLY, /*fallback=*/true}; }

// Another Mailbox of the queue, judged by the descriptor's access mode: the
// kernel checks a queue's mode only at mq_open (a creator's mode may deny it).
auto open_box(int fd, const std::string& path, int acc) {
  return mailbox::detail::Access::open_through(fd, path, open_options(acc));
}

// One Mailbox for the calling thread, handed back to the queue's pool when done.
class Lease {
 public:
  explicit Lease(Queue& q) : q_(q) {
    {
      MutexLock l(q.mu);
      if (!q.pool.empty()) {
        box_.emplace(std::move(q.pool.back()));
        q.pool.pop_back();
        return;
      }
    }
    // The open's requests may sleep (through the file, each waits for the
    // daemon's answer): a signal meanwhile is held, and remembered if its
    // handler ends a wait, for a call that then finds it must wait.
    mailbox::SignalHold hold(true);
    auto r = open_box(q.fd, q.path, q.acc);
    signalled_ = hold.open();
    if (!r) {
      err_ = r.error() == ENOENT ? EBADF : r.error();  // closed meanwhile by another thread
      return;
    }
    mailbox::detail::Access::set_interruptible(*r, true);
    box_.emplace(std::move(r.value()));
  }
  ~Lease() {
    if (!box_) return;
    MutexLock l(q_.mu);
    q_.pool.push_back(std::move(*box_));
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  int error() const { return err_; }
  // Whether a handler that ends a wait ran while the Mailbox was opened.
  bool signalled() const { return signalled_; }
  Mailbox& box() { return *box_; }

 private:
  Queue& q_;
  std::optional<Mailbox> box_;
  int err_ = 0;
  bool signalled_ = false;
};

// An absolute CLOCK_REALTIME timeout as a steady-clock deadline (EINVAL as
// Linux: checked whether or not the call would wait).
int deadline_of(const timespec* abs, std::optional<Clock::time_point>* out) {
  if (!abs) return 0;
  if (abs->tv_sec < 0 || abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000) return EINVAL;
  timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  const __int128 left = (static_cast<__int128>(abs->tv_sec) - now.tv_sec) * 1000000000 + (abs->tv_nsec - now.tv_nsec);
  const auto max = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::hours(24 * 365 * 100)).count();
  const int64_t ns = left < 0 ? 0 : left > max ? max : static_cast<int64_t>(left);
  *out = Clock::now() + std::chrono::nanoseconds(ns);
  return 0;
}

// libmailbox's errors as mq's: a deleted mailbox is a descriptor that no
// longer names a queue.
int mq_errno(int e) { return e == EIDRM ? EBADF : e; }

// After a send or receive that kicked a daemon with polls armed: a poll(2)
// probe of the file has the daemon fire them before this call returns, as
// Linux's queue wakes an epoll at once (Mailbox::poll takes the kick).
void probe_polls(const Queue& q) {
  if (!Segment::take_polled_kick()) return;
  pollfd p{q.fd, 0, 0};
  ::poll(&p, 1, 0);
}

void deliver_own(Mailbox& m);  // mq_notify's section

int send_impl(int fd, const char* msg, size_t len, unsigned prio, const timespec* abs, bool timed) {
  if (prio >= kPrioMax) return fail(EINVAL);
  std::optional<Clock::time_point> d;
  if (timed) {
    if (int e = deadline_of(abs, &d)) return fail(e);
  }
  auto q = find(fd);
  if (!q || q->acc == O_RDONLY) return fail(EBADF);
  if (len > q->max_message) return fail(EMSGSIZE);
  Lease l(*q);
  if (l.error()) return fail(l.error());
  const std::string_view v(msg, len);
  // A signal ends the wait with EINTR only when its handler lacks
  // SA_RESTART: the library sleeps in FUTEX_WAIT, which the kernel restarts
  // for such handlers (signal(7)), as it restarts mq_send. Through the file,
  // every request may sleep: signals are held from the first try to the
  // wait, which lets them through (mailbox::SignalHold).
  mailbox::SignalHold hold(l.box().via_file());
  (void)Segment::take_polled_kick();  // a stale one from an earlier call
  int e = prio_send(l.box(), v, prio, true, std::nullopt);
  if (e == EAGAIN && !nonblocking(*q)) e = l.signalled() ? EINTR : prio_send(l.box(), v, prio, false, d);
  probe_polls(*q);
  if (e) return fail(mq_errno(e));
  deliver_own(l.box());
  return 0;
}

ssize_t receive_impl(int fd, char* buf, size_t len, unsigned* prio, const timespec* abs, bool timed) {
  std::optional<Clock::time_point> d;
  if (timed) {
    if (int e = deadline_of(abs, &d)) return fail(e);
  }
  auto q = find(fd);
  if (!q || q->acc == O_WRONLY) return fail(EBADF);
  if (len < q->max_message) return fail(EMSGSIZE);
  Lease l(*q);
  if (l.error()) return fail(l.error());
  // As in send_impl: nothing is consumed unless a message is returned.
  mailbox::SignalHold hold(l.box().via_file());
  (void)Segment::take_polled_kick();
  auto r = prio_receive(l.box(), buf, len, prio, true, std::nullopt);
  if (!r && r.error() == EAGAIN && !nonblocking(*q))
    r = l.signalled() ? mailbox::Result<size_t>::failure(EINTR) : prio_receive(l.box(), buf, len, prio, false, d);
  probe_polls(*q);
  if (!r) return fail(mq_errno(r.error()));
  return static_cast<ssize_t>(*r);
}

// ---- mq_notify ----------------------------------------------------------------

std::atomic<uint32_t> notify_generation{0};

struct ThreadCall {
  void (*fn)(sigval);
  sigval value;
};

void* thread_trampoline(void* p) {
  std::unique_ptr<ThreadCall> c(static_cast<ThreadCall*>(p));
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);  // the notifier thread blocks all; the user's runs as a normal thread
  c->fn(c->value);
  return nullptr;
}

void deliver(const sigevent& ev, size_t stack, pid_t sender, uid_t uid) {
  if (ev.sigev_notify == SIGEV_SIGNAL && ev.sigev_signo != 0) {
    siginfo_t si;
    std::memset(&si, 0, sizeof si);
    si.si_signo = ev.sigev_signo;
    si.si_code = SI_MESGQ;
    si.si_value = ev.sigev_value;
    si.si_pid = sender;
    si.si_uid = uid;
    ::syscall(SYS_rt_sigqueueinfo, ::getpid(), ev.sigev_signo, &si);
  } else if (ev.sigev_notify == SIGEV_THREAD && ev.sigev_notify_function) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (stack) pthread_attr_setstacksize(&a, stack);
    auto* c = new ThreadCall{ev.sigev_notify_function, ev.sigev_value};
    pthread_t t;
    if (pthread_create(&t, &a, thread_trampoline, c) != 0) delete c;
    pthread_attr_destroy(&a);
  }
}

void notifier_run(Notifier* n) {
  layout::SegmentHeader* h = n->seg->header();
  for (;;) {
    // SYNC POINT: acquire; pairs with the release increments in
    // Segment::notify_after_push_locked() and notify_disarm().
    const uint32_t seen = h->notify_seq.load(std::memory_order_acquire);
    // Fired first: a fired registration is delivered even when mq_notify
    // ends it before this thread woke (end_notifier joins this thread).
    if (h->notify_fired.load(std::memory_order_acquire) == n->token) {
      if (!n->claimed.exchange(true, std::memory_order_acq_rel))
        deliver(n->ev, n->stack, static_cast<pid_t>(h->notify_pid.load(std::memory_order_relaxed)),
                h->notify_uid.load(std::memory_order_relaxed));
      break;
    }
    if (n->stop.load(std::memory_order_acquire)) break;
    // Not ours and not fired for us: a firing in progress moves notify_seq
    // next; a scribble waits for end_notifier's disarm.
    futex_wait(&h->notify_seq, seen, nullptr);
  }
  n->finished.store(true, std::memory_order_release);
}

// Ends a registration (cancelled first if still armed) and joins its thread.
void end_notifier(std::unique_ptr<Notifier> n) {
  if (!n) return;
  {
    Registry& r = registry();
    MutexLock l(r.mu);
    if (r.by_token.erase(n->token)) registered.fetch_sub(1, std::memory_order_relaxed);
  }
  n->stop.store(true, std::memory_order_release);
  n->seg->notify_disarm(n->token);  // moves notify_seq: the thread re-checks and leaves
  if (n->th.joinable()) n->th.join();
}

int notify_impl(int fd, const sigevent* ev) {
  auto q = find(fd);
  if (!q) return fail(EBADF);
  std::unique_ptr<Notifier> old;
  {
    MutexLock l(q->mu);
    // Gone once fired (the segment no longer names it), even if its thread
    // has not delivered yet: a handler may register again at once.
    if (q->notifier && (!ev || q->notifier->finished.load(std::memory_order_acquire) ||
                        q->notifier->seg->header()->notify_owner.load(std::memory_order_acquire) != q->notifier->token))
      old = std::move(q->notifier);
  }
  end_notifier(std::move(old));
  if (!ev) return 0;
  if (ev->sigev_notify != SIGEV_NONE && ev->sigev_notify != SIGEV_SIGNAL && ev->sigev_notify != SIGEV_THREAD)
    return fail(EINVAL);
  if (ev->sigev_notify == SIGEV_SIGNAL && (ev->sigev_signo < 0 || ev->sigev_signo >= NSIG)) return fail(EINVAL);
  auto n = std::make_unique<Notifier>();
  n->ev = *ev;
  if (ev->sigev_notify == SIGEV_THREAD && ev->sigev_notify_attributes)
    pthread_attr_getstacksize(ev->sigev_notify_attributes, &n->stack);
  auto b = open_box(q->fd, q->path, q->acc);
  if (!b) return fail(mq_errno(b.error() == ENOENT ? EIDRM : b.error()));
  n->box.emplace(std::move(b.value()));
  n->seg = mailbox::detail::Access::segment(*n->box);
  if (!n->seg) return fail(ENOSYS);  // through the file: no segment to register in
  const uint32_t gen = notify_generation.fetch_add(1, std::memory_order_relaxed) + 1;
  n->token = (static_cast<uint64_t>(gen) << 32) | static_cast<uint32_t>(::getpid());
  MutexLock l(q->mu);
  if (q->notifier) return fail(EBUSY);  // ours, still armed
  if (n->seg->notify_arm(n->token) != Errc::ok) return fail(EBUSY);
  // The thread blocks every signal, so a SIGEV_SIGNAL goes to the program's threads.
  sigset_t all, old_mask;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old_mask);
  try {
    n->th = std::thread(notifier_run, n.get());
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    n->seg->notify_disarm(n->token);
    return fail(EAGAIN);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  {
    Registry& r = registry();
    MutexLock rl(r.mu);
    r.by_token[n->token] = n.get();
    registered.fetch_add(1, std::memory_order_relaxed);
  }
  q->notifier = std::move(n);
  return 0;
}

// After a send by this process that fired one of its own SIGEV_SIGNAL
// registrations: queues the signal from the sending thread, which takes it
// before mq_send returns, as on Linux (the kernel queues it inside the call
// and the caller handles it on its way out) rather than later from the
// notifier thread.
void deliver_own(Mailbox& m) {
  if (registered.load(std::memory_order_relaxed) == 0) return;
  Segment* seg = mailbox::detail::Access::segment(m);
  if (!seg) return;
  layout::SegmentHeader* h = seg->header();
  // SYNC POINT: acquire; pairs with the release store of notify_fired in
  // Segment::notify_after_push_locked() (after notify_pid and notify_uid).
  const uint64_t fired = h->notify_fired.load(std::memory_order_acquire);
  if (static_cast<uint32_t>(fired) != static_cast<uint32_t>(::getpid())) return;
  sigevent ev;
  {
    Registry& r = registry();
    MutexLock l(r.mu);
    auto it = r.by_token.find(fired);
    if (it == r.by_token.end() || it->second->ev.sigev_notify != SIGEV_SIGNAL) return;
    if (it->second->claimed.exchange(true, std::memory_order_acq_rel)) return;
    ev = it->second->ev;
  }
  // Unlocked: the handler runs as this call returns and may call mq_notify.
  deliver(ev, 0, static_cast<pid_t>(h->notify_pid.load(std::memory_order_relaxed)),
          h->notify_uid.load(std::memory_order_relaxed));
}

// ---- open, close, unlink --------------------------------------------------------

// Sets a new mailbox's limits, as libmailbox's create does: max_message
// first. Through the descriptor: the name may name another queue by now.
int apply_attr(int fd, const mq_attr& a) {
  const std::string max = std::to_string(a.mq_msgsize), cap = std::to_string(a.mq_maxmsg);
  if (::fsetxattr(fd, mailbox::attr::kMaxMessage, max.data(), max.size(), 0) != 0 ||
      ::fsetxattr(fd, mailbox::attr::kCapacity, cap.data(), cap.size(), 0) != 0)
    return errno == ERANGE || errno == ENOSPC ? ENOMEM : errno == EPERM ? EACCES : EINVAL;
  return 0;
}

}  // namespace

namespace {
mqd_t open_queue_raw(const Place& where, int oflag, mode_t mode, const mq_attr* attr) {
  if (where.err) return fail(where.err);
  const int acc = oflag & O_ACCMODE;
  if (acc == O_ACCMODE) return fail(EINVAL);
  if (where.kernel) return fail(ENOENT);  // not a mailboxfs root: no queue can exist there
  const std::string& path = where.path;
  const int fl = acc | O_CLOEXEC | O_NOCTTY | (oflag & O_NONBLOCK);
  int fd = -1;
  // Owner bits a new queue gets until its creator has set its limits and
  // mapped it (a mode may deny the creator what POSIX lets it do), then loses.
  mode_t lent = 0;
  if (oflag & O_CREAT) {
    mq_attr a{};
    a.mq_maxmsg = attr ? attr->mq_maxmsg : kDefaultMaxMsg;
    a.mq_msgsize = attr ? attr->mq_msgsize : kDefaultMsgSize;
    const bool bad = a.mq_maxmsg <= 0 || a.mq_msgsize <= 0;
    lent = (S_IRUSR | S_IWUSR) & ~mode;
    fd = bad ? -1 : ::open(path.c_str(), fl | O_CREAT | O_EXCL, mode | lent);
    if (fd < 0) lent = 0;
    if (fd >= 0) {
      if (int e = apply_attr(fd, a)) {
        ::close(fd);
        ::unlink(path.c_str());
        return fail(e);
      }
    } else if (bad || errno == EEXIST) {
      // Linux checks the attributes only when it creates the queue.
      struct stat st;
      const bool exists = ::stat(path.c_str(), &st) == 0;
      if (exists && (oflag & O_EXCL)) return fail(EEXIST);
      if (!exists) return fail(bad ? EINVAL : ENOENT);
      fd = ::open(path.c_str(), fl);
    }
  } else {
    fd = ::open(path.c_str(), fl);
  }
  if (fd < 0) return fail(errno == EISDIR ? EACCES : errno);
  // Every Mailbox of the descriptor goes through it: after mq_unlink the
  // name is gone (or another queue's) while the descriptor keeps its queue.
  const std::string own = fd_path(fd);
  auto m = open_box(fd, own, acc);
  const mailbox::Stats s = m ? m->stats() : mailbox::Stats{};  // while the mode still lets the owner read them
  struct stat made;
  if (lent && ::fstat(fd, &made) == 0) ::fchmod(fd, made.st_mode & 07777 & ~lent);  // the umask stays applied
  if (!m) {
    ::close(fd);
    return fail(m.error() == EISDIR || m.error() == ENOTSUP ? EACCES : mq_errno(m.error()));
  }
  mailbox::detail::Access::set_interruptible(*m, true);
  auto q = std::make_shared<Queue>();
  q->fd = fd;
  q->path = own;
  q->acc = acc;
  q->capacity = s.capacity;
  q->max_message = s.max_message;
  {
    MutexLock l(q->mu);
    q->pool.push_back(std::move(m.value()));
  }
  Table& t = table();
  MutexLock l(t.mu);
  t.queues[fd] = std::move(q);
  open_queues.fetch_add(1, std::memory_order_relaxed);
  return fd;
}
}  // namespace

mqd_t open_queue(const Place& where, int oflag, mode_t mode, const mq_attr* attr) {
  KeepErrno k;
  return k.result(open_queue_raw(where, oflag, mode, attr));
}

// mq_unlink: a rename to an unlink-at-last-close name (protocol.h) removes
// the name now and leaves the queue to the daemon, which deletes it when its
// last descriptor closes, however its holders end. The rename checks what
// unlink(2) would (the directory's write permission, its sticky bit).
int unlink_queue(const Place& where) {
  if (where.err) return fail(where.err);
  if (where.kernel) return fail(ENOENT);
  KeepErrno k;
  static std::atomic<uint64_t> serial{0};  // relaxed: only uniqueness matters
  const std::string dir = where.path.substr(0, where.path.rfind('/') + 1);
  for (int i = 0; i < 16; i++) {
    const std::string to = dir + std::string(mailbox::kUnlinkAtLastClose) + std::to_string(::getpid()) + "." +
                           std::to_string(serial.fetch_add(1, std::memory_order_relaxed));
    if (::renameat2(AT_FDCWD, where.path.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
      // The kernel keeps the new name cached for the moved file; the daemon
      // has no such name: this unlink fails (ENOENT) and drops the entry.
      ::unlink(to.c_str());
      return k.result(0);
    }
    if (errno != EEXIST) return fail(errno == EPERM || errno == EISDIR ? EACCES : errno);
    // EEXIST: a stale cached entry of an earlier unlink by a reused pid; try the next name.
  }
  return fail(EBUSY);
}

Place place(const char* name) {
  Place p;
  if ((p.err = check_name(name))) return p;
  const int saved = errno;  // realpath's probes: the kernel's mq_open may follow and succeed
  const std::string r = root();
  if (!root_mounted(r)) p.kernel = true;
  else p.path = r + name;
  errno = saved;
  return p;
}

std::string root() {
  const char* e = std::getenv("MAILBOXFS_MQ_ROOT");
  std::string r = e && *e ? e : MBX_MQ_DEFAULT_ROOT;
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  return r;
}

namespace {
// A mount point as /proc/self/mountinfo spells it (\040 for a space, ...).
std::string unescape(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size() + 0 && s[i + 1] >= '0' && s[i + 1] <= '3') {
      o.push_back(static_cast<char>(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0')));
      i += 3;
    } else {
      o.push_back(s[i]);
    }
  }
  return o;
}
}  // namespace

bool root_mounted(const std::string& root) {
  char buf[PATH_MAX];
  if (!::realpath(root.c_str(), buf)) return false;
  const std::string rp = buf;
  std::ifstream in("/proc/self/mountinfo");
  std::string line, best_type;
  size_t best = 0;
  while (std::getline(in, line)) {
    // "id parent maj:min root mountpoint options [optional...] - fstype source super"
    std::vector<std::string> f;
    size_t p = 0;
    while (p < line.size()) {
      const size_t e = line.find(' ', p);
      f.push_back(line.substr(p, e == std::string::npos ? std::string::npos : e - p));
      if (e == std::string::npos) break;
      p = e + 1;
    }
    if (f.size() < 7) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") dash++;
    if (dash + 1 >= f.size()) continue;
    const std::string mp = unescape(f[4]);
    const bool inside = rp == mp || mp == "/" ||
                        (rp.size() > mp.size() && rp.compare(0, mp.size(), mp) == 0 && rp[mp.size()] == '/');
    if (inside && mp.size() >= best) {  // later lines are mounted over earlier ones
      best = mp.size();
      best_type = f[dash + 1];
    }
  }
  return best_type == "fuse.mailboxfs";
}

bool owns(int fd) { return find(fd) != nullptr; }

}  // namespace mbx::mq

// ---- the C API -------------------------------------------------------------------

using namespace mbx::mq;

extern "C" {

mqd_t mbx_mq_open(const char* name, int oflag, ...) {
  mode_t mode = 0;
  mq_attr* attr = nullptr;
  if (oflag & O_CREAT) {
    va_list ap;
    va_start(ap, oflag);
    mode = static_cast<mode_t>(va_arg(ap, unsigned));
    attr = va_arg(ap, mq_attr*);
    va_end(ap);
  }
  return open_queue(place(name), oflag, mode, attr);
}

int mbx_mq_close(mqd_t fd) {
  KeepErrno k;
  std::shared_ptr<Queue> q;
  {
    Table& t = table();
    mbx::MutexLock l(t.mu);
    auto it = t.queues.find(fd);
    if (it == t.queues.end()) return fail(EBADF);
    q = std::move(it->second);
    t.queues.erase(it);
    open_queues.fetch_sub(1, std::memory_order_relaxed);
  }
  std::unique_ptr<Notifier> n;
  {
    mbx::MutexLock l(q->mu);
    n = std::move(q->notifier);
  }
  end_notifier(std::move(n));  // mq_close removes the process's registration
  q.reset();                   // Mailbox objects a thread still leases go when it is done
  return k.result(::close(fd));
}

int mbx_mq_unlink(const char* name) { return unlink_queue(place(name)); }

int mbx_mq_send(mqd_t fd, const char* msg, size_t len, unsigned prio) {
  KeepErrno k;
  return k.result(send_impl(fd, msg, len, prio, nullptr, false));
}

int mbx_mq_timedsend(mqd_t fd, const char* msg, size_t len, unsigned prio, const struct timespec* abs) {
  KeepErrno k;
  return k.result(send_impl(fd, msg, len, prio, abs, true));
}

ssize_t mbx_mq_receive(mqd_t fd, char* buf, size_t len, unsigned* prio) {
  KeepErrno k;
  return k.result(receive_impl(fd, buf, len, prio, nullptr, false));
}

ssize_t mbx_mq_timedreceive(mqd_t fd, char* buf, size_t len, unsigned* prio, const struct timespec* abs) {
  KeepErrno k;
  return k.result(receive_impl(fd, buf, len, prio, abs, true));
}

int mbx_mq_getattr(mqd_t fd, struct mq_attr* a) {
  KeepErrno k;
  auto q = find(fd);
  if (!q) return fail(EBADF);
  Lease l(*q);
  if (l.error()) return fail(l.error());
  mailbox::Stats s = l.box().stats();
  if (s.max_message == 0) {  // through the file, with xattrs the mode hides: the limits seen at open
    s.capacity = q->capacity;
    s.max_message = q->max_message;
  }
  std::memset(a, 0, sizeof *a);
  a->mq_flags = nonblocking(*q) ? O_NONBLOCK : 0;
  a->mq_maxmsg = s.capacity > static_cast<uint64_t>(LONG_MAX) ? LONG_MAX : static_cast<long>(s.capacity);
  a->mq_msgsize = s.max_message > static_cast<uint64_t>(LONG_MAX) ? LONG_MAX : static_cast<long>(s.max_message);
  a->mq_curmsgs = static_cast<long>(s.messages);
  return k.result(0);
}

int mbx_mq_setattr(mqd_t fd, const struct mq_attr* n, struct mq_attr* old) {
  KeepErrno k;
  auto q = find(fd);
  if (!q) return fail(EBADF);
  if (n && (n->mq_flags & ~static_cast<long>(O_NONBLOCK))) return fail(EINVAL);
  if (old && mbx_mq_getattr(fd, old) != 0) return -1;
  if (n) {  // the file's status flag, which every call reads (nonblocking())
    const int fl = ::fcntl(q->fd, F_GETFL);
    if (fl < 0 || ::fcntl(q->fd, F_SETFL, (n->mq_flags & O_NONBLOCK) ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0)
      return -1;
  }
  return k.result(0);
}

int mbx_mq_notify(mqd_t fd, const struct sigevent* ev) {
  KeepErrno k;
  return k.result(notify_impl(fd, ev));
}

const char* mbx_mq_root(void) {
  static thread_local std::string r;
  r = root();
  return r.c_str();
}

int mbx_mq_root_mounted(void) { return root_mounted(root()) ? 1 : 0; }

int mbx_mq_owns(mqd_t fd) { return owns(fd) ? 1 : 0; }

}  // extern "C"

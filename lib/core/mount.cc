// SPDX-License-Identifier: MIT
#include "core/mount.h"

#include <fcntl.h>
#include <unistd.h>

#include <sys/syscall.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <thread>
#include <vector>

#include "core/direct.h"
#include "core/mailbox.h"
#include "base/unique_fd.h"

namespace mbx {

Result<std::unique_ptr<Mount>> Mount::open(const MountConfig& cfg) {
  auto sd = StateDir::open(cfg.state_dir, cfg.max_bytes);
  if (!sd) return sd.error();
  std::unique_ptr<Mount> m(new Mount());
  m->cfg_ = cfg;
  m->state_ = std::move(sd.value());
  m->held_ = std::make_unique<HeldQuota>(m->state_.control(), cfg.user_max_bytes);
  m->dying = [p = &m->probe_](pid_t tid) { return p->dying(tid); };
  m->direct_ = std::make_unique<Direct>(*m);
  return m;
}

void Mount::start() {
  timers_ = std::make_unique<Timers>();
  {
    std::lock_guard<std::mutex> g(state_mu_);  // restore_state_dir() may replace the control
    doorbell_ = std::make_unique<Doorbell>(state_.control(), [this] { ring(); });
  }
  direct_->start();
}

Mount::~Mount() {
  direct_.reset();
  doorbell_.reset();
  old_doorbells_.clear();
  timers_.reset();
}

layout::ControlHeader* Mount::control() const {
  std::lock_guard<std::mutex> g(state_mu_);
  return state_.control();
}

uint64_t Mount::quota_used() const {
  return control()->quota_used.load(std::memory_order_acquire);
}

bool Mount::restore_state_dir() {
  std::lock_guard<std::mutex> g(state_mu_);
  if (!state_.missing()) return true;  // another thread rebuilt it already
  const Errc e = state_.rebuild(cfg_.max_bytes);
  if (e != Errc::ok) {
    if (std::exchange(restore_failed_said_, true)) return false;
    std::fprintf(stderr, "mailboxfs: state directory %s was removed and cannot be made again (%s): new mailboxes fail with EIO\n",
                 state_.dir().c_str(), std::strerror(to_errno(e)));
    return false;
  }
  std::fprintf(stderr,
               "mailboxfs: state directory %s was removed (a /dev/shm cleaner?): made it again; mailboxes made "
               "before work through the file system, and libmailbox maps them again after a resize\n",
               state_.dir().c_str());
  restore_failed_said_ = false;
  rebuilds_.fetch_add(1, std::memory_order_release);
  if (doorbell_) {  // programs that mapped the old control still ring it
    old_doorbells_.push_back(std::move(doorbell_));
    doorbell_ = std::make_unique<Doorbell>(state_.control(), [this] { ring(); });
  }
  return true;
}

Result<Segment> Mount::make_segment(uint64_t id, uint64_t generation, const Settings& s) {
  const uint64_t size = data_size_for(s.capacity, s.max_message, cfg_.max_bytes);
  const std::string path = state_.segment_path(id, generation);
  auto seg = Segment::create(path, s.capacity, s.max_message, size, 0600);
  if (!seg && seg.error() == Errc::not_found && state_.missing() && restore_state_dir())
    seg = Segment::create(path, s.capacity, s.max_message, size, 0600);
  if (!seg) return seg.error() == Errc::not_found ? Errc::io : seg.error();  // not the caller's ENOENT
  seg->set_control(control());
  return seg;
}

Result<std::shared_ptr<Mailbox>> Mount::create_mailbox(uint64_t id, const Settings& s) {
  auto seg = make_segment(id, 0, s);
  if (!seg) return seg.error();
  return std::make_shared<Mailbox>(*this, id, s, std::move(seg.value()));
}

namespace {
// At restore (before the mount serves anything), a segment whose lock a
// library peer holds is tried for a while rather than waited for.
Result<Segment> attach_trying(const std::string& path) {
  auto delay = std::chrono::milliseconds(1);
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);;) {
    auto seg = Segment::attach(path, /*no_wait=*/true);
    if (seg.error() != Errc::contended || std::chrono::steady_clock::now() >= end) return seg;
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(100));
  }
}
}  // namespace

Result<std::shared_ptr<Mailbox>> Mount::adopt_mailbox(uint64_t id, Settings s) {
  uint64_t newest = 0;
  bool found = false;
  for (auto [sid, gen] : state_.segments())
    if (sid == id && (!found || gen > newest)) newest = gen, found = true;
  if (!found) return Errc::not_found;
  // A crash mid-resize can leave two generations; the newer is the live one
  // (the older was retired before the newer was published).
  auto seg = attach_trying(state_.segment_path(id, newest));
  if (!seg) return seg.error();
  for (auto [sid, gen] : state_.segments())
    if (sid == id && gen != newest) ::unlink(state_.segment_path(id, gen).c_str());
  if (newest != 0) {  // back to generation 0, which this daemon's resizes count from
    const std::string to = state_.segment_path(id, 0);
    if (::rename(state_.segment_path(id, newest).c_str(), to.c_str()) != 0) return from_errno(errno);
    seg = attach_trying(to);
    if (!seg) return seg.error();
  }
  seg->set_control(state_.control());
  s.capacity = seg->capacity();
  s.max_message = seg->max_message();
  return std::make_shared<Mailbox>(*this, id, s, std::move(seg.value()));
}

void Mount::remove_segments_except(const std::set<uint64_t>& keep) {
  for (auto [id, gen] : state_.segments()) {
    if (keep.count(id)) continue;
    // What it still holds goes back to the quota the dead daemon's peers kept.
    const std::string path = state_.segment_path(id, gen);
    if (auto seg = Segment::attach(path, /*no_wait=*/true)) {
      seg->set_control(state_.control());
      (void)seg->discard_all();  // a lock held: what it holds stays charged
      seg->set_state(layout::kDeleted);
      seg->wake_all();  // a peer still sleeping on it sees it deleted
    }
    ::unlink(path.c_str());
  }
}

void Mount::watch(uint64_t id, const std::shared_ptr<Mailbox>& box, bool on) {
  std::lock_guard<std::mutex> g(watch_mu_);
  if (on)
    watched_[id] = box;
  else
    watched_.erase(id);
}

void Mount::bury(Segment seg) {
  if (!timers_) return;  // shutting down: nothing to give the quota back to
  std::lock_guard<std::mutex> g(graves_mu_);
  graves_.push_back(std::move(seg));
  if (grave_delay_.count() != 0) return;  // a sweep is scheduled
  grave_delay_ = std::chrono::milliseconds(10);
  timers_->add(Timers::Clock::now() + grave_delay_, [this] { sweep_graves(); });
}

void Mount::sweep_graves() {
  std::lock_guard<std::mutex> g(graves_mu_);
  std::erase_if(graves_, [](Segment& s) { return s.discard_all(/*deleted_too=*/true) != Errc::contended; });
  if (graves_.empty()) {
    grave_delay_ = std::chrono::milliseconds(0);
    return;
  }
  grave_delay_ = std::min(grave_delay_ * 2, std::chrono::milliseconds(1000));
  timers_->add(Timers::Clock::now() + grave_delay_, [this] { sweep_graves(); });
}

void Mount::ring() {
  std::vector<std::shared_ptr<Mailbox>> boxes;
  {
    std::lock_guard<std::mutex> g(watch_mu_);
    for (auto& [id, w] : watched_)
      if (auto b = w.lock()) boxes.push_back(std::move(b));
  }
  for (auto& b : boxes) b->service();
}

namespace {
bool read_small_file(const char* path, char* buf, size_t cap, size_t* n) {
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  ssize_t r = ::read(fd.get(), buf, cap - 1);
  if (r < 0) return false;
  buf[r] = 0;
  *n = static_cast<size_t>(r);
  return true;
}

// /proc/<tid>/stat rather than status: it costs about half as much to render
// (2.5 against 4.3 us here), and this runs for every message handed to a
// parked reader. A fatal signal is added to every thread's private pending
// set (field 31); field 9 has PF_EXITING once the thread is past that.
bool stat_says_dying(const char* buf) {
  const char* p = std::strrchr(buf, ')');  // comm (field 2) may hold spaces and ')'
  if (!p) return false;
  constexpr unsigned long long kPfExiting = 0x4;
  unsigned long long flags = 0, pending = 0;
  int field = 2;
  for (const char* q = p + 1; *q; q++) {
    if (*q != ' ') continue;
    field++;
    if (field == 9) flags = std::strtoull(q + 1, nullptr, 10);
    if (field == 31) {
      pending = std::strtoull(q + 1, nullptr, 10);
      break;
    }
  }
  return (flags & kPfExiting) || (pending & (1ull << (SIGKILL - 1)));
}

std::string stat_path(pid_t tid) { return "/proc/" + std::to_string(tid) + "/stat"; }

// Reads the whole of a small /proc file from offset 0 (a fresh rendering).
bool pread_small(int fd, char* buf, size_t cap) {
  const ssize_t r = ::pread(fd, buf, cap - 1, 0);
  if (r <= 0) return false;
  buf[r] = 0;
  return true;
}
}  // namespace

bool thread_dying(pid_t tid) {
  if (tid <= 0) return false;
  char buf[1024];
  size_t n;
  return read_small_file(stat_path(tid).c_str(), buf, sizeof buf, &n) && stat_says_dying(buf);
}

bool ThreadProbe::dying(pid_t tid) {
  if (tid <= 0) return false;
  char buf[1024];
  std::shared_ptr<const UniqueFd> fd;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (auto it = fds_.find(tid); it != fds_.end()) fd = it->second;
  }
  // Read outside the lock: probes of different mailboxes run in parallel, and
  // the shared_ptr keeps the descriptor open if it is dropped meanwhile.
  if (fd && pread_small(fd->get(), buf, sizeof buf)) return stat_says_dying(buf);
  // Not kept yet, or its thread is gone (a later thread may have the number).
  auto fresh = std::make_shared<const UniqueFd>(::open(stat_path(tid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fresh->valid() || !pread_small(fresh->get(), buf, sizeof buf)) {
    std::lock_guard<std::mutex> g(mu_);
    fds_.erase(tid);
    return false;  // no such thread: nobody to lose a message to
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    if (fds_.size() >= kKept) fds_.clear();
    fds_[tid] = std::move(fresh);
  }
  return stat_says_dying(buf);
}

bool killed_by_signal(pid_t tid) {
  if (tid <= 0) return false;
  char path[64], buf[4096];
  size_t n;
  std::snprintf(path, sizeof path, "/proc/%d/stat", tid);
  if (!read_small_file(path, buf, sizeof buf, &n)) return false;
  // Field 52 is exit_code; fields after the ")" that closes comm (field 2).
  const char* p = std::strrchr(buf, ')');
  if (!p) return false;
  int field = 2;
  long long code = 0;
  for (const char* q = p + 1; *q; q++) {
    if (*q == ' ') {
      field++;
      if (field == 52) {
        code = std::strtoll(q + 1, nullptr, 10);
        break;
      }
    }
  }
  return field == 52 && (code & 0x7f) != 0;
}

std::optional<Syscall> current_syscall(pid_t tid) {
  if (tid <= 0) return std::nullopt;
  char path[64], buf[512];
  size_t n;
  std::snprintf(path, sizeof path, "/proc/%d/syscall", tid);
  if (!read_small_file(path, buf, sizeof buf, &n)) return std::nullopt;
  // "NR ARG1 ARG2 ... SP PC" (arguments in hex), "-1 SP PC" outside one, "running".
  Syscall sc;
  if (std::strncmp(buf, "running", 7) == 0) return Syscall{kSyscallRunning, {}};
  char* p = buf;
  char* end = nullptr;
  sc.nr = std::strtol(p, &end, 10);
  if (end == p) return std::nullopt;
  if (sc.nr < 0) return Syscall{};
  for (auto& a : sc.args) {
    p = end;
    a = std::strtoul(p, &end, 16);
    if (end == p) return std::nullopt;
  }
  return sc;
}

bool locks_inode_exclusively(const Syscall& sc) {
  switch (sc.nr) {
#ifdef SYS_unlink
    case SYS_unlink:
    case SYS_rename:
    case SYS_chmod:
    case SYS_chown:
    case SYS_lchown:
    case SYS_utime:
    case SYS_utimes:
    case SYS_futimesat:
#endif
#ifdef SYS_renameat
    case SYS_renameat:
#endif
    case SYS_unlinkat:
    case SYS_renameat2:
    case SYS_fchmodat:
#ifdef SYS_fchmodat2
    case SYS_fchmodat2:
#endif
    case SYS_fchownat:
    case SYS_utimensat:
    case SYS_setxattr:
    case SYS_lsetxattr:
    case SYS_removexattr:
    case SYS_lremovexattr:
#ifdef SYS_setxattrat
    case SYS_setxattrat:
    case SYS_removexattrat:
#endif
    case SYS_truncate:
      return true;
#ifdef SYS_open
    case SYS_open:
      return sc.args[1] & O_TRUNC;
#endif
    case SYS_openat:
      return sc.args[2] & O_TRUNC;
    default:
      return false;
  }
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
#include "shm/state_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/log.h"
#include "shm/segment.h"

namespace mbx {

namespace {
constexpr const char* kControlName = "control";
constexpr const char* kLockName = "lock";

// Removes every entry but the lock file: what a dead daemon left behind.
void clear_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..") || !std::strcmp(e->d_name, kLockName)) continue;
    ::unlinkat(::dirfd(d), e->d_name, 0);
  }
  ::closedir(d);
}
}  // namespace

std::string default_state_dir(const std::string& mountpoint) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : mountpoint) h = (h ^ c) * 1099511628211ull;
  char buf[96];
  std::snprintf(buf, sizeof buf, "/dev/shm/mailboxfs-%u-%016llx", static_cast<unsigned>(::getuid()),
                static_cast<unsigned long long>(h));
  return buf;
}

Errc StateDir::make_dir_and_lock() {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) return from_errno(errno);
  struct stat st;
  if (::lstat(dir_.c_str(), &st) != 0) return from_errno(errno);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) return Errc::perm;
  ::chmod(dir_.c_str(), 0700);
  lock_.reset(::open((dir_ + "/" + kLockName).c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock_.valid()) return from_errno(errno);
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) return errno == EWOULDBLOCK ? Errc::exists : from_errno(errno);
  return Errc::ok;
}

Result<StateDir> StateDir::open(const std::string& dir, uint64_t quota_max) {
  StateDir s;
  s.dir_ = dir;
  if (Errc e = s.make_dir_and_lock(); e != Errc::ok) return e;
  s.owner_ = true;
  const std::string cpath = dir + "/" + kControlName;
  // What a daemon that died left is kept for this one to re-attach (its
  // segments may still be in use by other participants), if its control
  // segment is intact and of this layout; anything else is cleared.
  if (s.take_over(cpath)) {
    auto* c = s.control();
    c->daemon_pid = ::getpid();
    c->quota_max = quota_max;
    // What the dead daemon held for writers died with it. SYNC POINT: acq_rel,
    // as every change of quota_used; no other daemon runs, library senders may.
    const uint64_t held = c->daemon_held.exchange(0, std::memory_order_acq_rel);
    uint64_t cur = c->quota_used.load(std::memory_order_acquire);
    while (!c->quota_used.compare_exchange_weak(cur, cur - std::min(cur, held), std::memory_order_acq_rel)) {
    }
    s.restored_ = true;
    return s;
  }
  if (::access(cpath.c_str(), F_OK) == 0)
    log(LogLevel::warning, "refused the state left in %s (corrupt or of another version): cleared", dir.c_str());
  clear_dir(dir);
  if (Errc e = s.make_control(quota_max); e != Errc::ok) return e;
  return s;
}

Errc StateDir::make_control(uint64_t quota_max) {
  const std::string cpath = dir_ + "/" + kControlName;
  UniqueFd fd(::open(cpath.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return from_errno(errno);
  // Allocated now: a store into a page a full filesystem cannot provide raises SIGBUS.
  if (::ftruncate(fd.get(), 4096) != 0 || (::fallocate(fd.get(), 0, 0, 4096) != 0 && errno != EOPNOTSUPP))
    return from_errno(errno);
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return from_errno(errno);
  ctl_ = Mapping(p, 4096);
  auto* c = static_cast<layout::ControlHeader*>(p);
  c->version = layout::kVersion;
  c->daemon_pid = ::getpid();
  c->quota_max = quota_max;
  // SYNC POINT: publishes the initialised control header; pairs with a
  // participant's acquire load of `magic`.
  std::atomic_ref<uint64_t>(c->magic).store(layout::kControlMagic, std::memory_order_release);
  return Errc::ok;
}

bool StateDir::missing() const {
  struct stat st;
  return ::lstat(dir_.c_str(), &st) != 0 && errno == ENOENT;
}

Errc StateDir::rebuild(uint64_t quota_max) {
  if (!owner_) return Errc::io;
  if (Errc e = make_dir_and_lock(); e != Errc::ok) return e;
  Mapping old = std::move(ctl_);
  if (Errc e = make_control(quota_max); e != Errc::ok) {
    ctl_ = std::move(old);  // still the one every segment uses
    return e;
  }
  old_ctls_.push_back(std::move(old));
  return Errc::ok;
}

bool StateDir::take_over(const std::string& cpath) {
  UniqueFd fd(::open(cpath.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  struct stat st;
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != 4096) return false;
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return false;
  Mapping m(p, 4096);
  auto* c = static_cast<layout::ControlHeader*>(p);
  // The control header is the same in versions 4 and 5; version 4 segments
  // are attached as they are (Segment::attach).
  if (std::atomic_ref<uint64_t>(c->magic).load(std::memory_order_acquire) != layout::kControlMagic ||
      c->version < layout::kOldestVersion || c->version > layout::kVersion)
    return false;
  c->version = layout::kVersion;
  ctl_ = std::move(m);
  return true;
}

std::vector<std::pair<uint64_t, uint64_t>> StateDir::segments() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    unsigned long long id, gen;
    char rest;
    if (std::sscanf(e->d_name, "m%llu.%llu%c", &id, &gen, &rest) == 2) out.emplace_back(id, gen);
  }
  ::closedir(d);
  return out;
}

std::string StateDir::segment_path(uint64_t id, uint64_t generation) const {
  return dir_ + "/m" + std::to_string(id) + "." + std::to_string(generation);
}

StateDir::~StateDir() {
  if (!owner_) return;
  ctl_.reset();
  clear_dir(dir_);
  ::unlink((dir_ + "/" + kLockName).c_str());
  ::rmdir(dir_.c_str());
}

Doorbell::Doorbell(layout::ControlHeader* ctl, std::function<void()> ring) : ctl_(ctl), ring_(std::move(ring)) {
  thread_ = std::thread([this] {
    // SYNC POINT: acquire pairs with a ringer's release fetch_add, after its
    // store to a segment's `kick`.
    uint32_t seen = ctl_->doorbell.load(std::memory_order_acquire);
    while (!stop_.load(std::memory_order_acquire)) {
      ring_();
      futex_wait(&ctl_->doorbell, seen, nullptr);
      seen = ctl_->doorbell.load(std::memory_order_acquire);
    }
  });
}

Doorbell::~Doorbell() {
  stop_.store(true, std::memory_order_release);
  ctl_->doorbell.fetch_add(1, std::memory_order_release);
  futex_wake(&ctl_->doorbell, 1);
  thread_.join();
}

}  // namespace mbx

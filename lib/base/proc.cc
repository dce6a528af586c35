// SPDX-License-Identifier: MIT
#include "base/proc.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace mbx::proc {

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

// /proc/<id>/<file> into buf, NUL-terminated; false for no such id.
bool read_proc(pid_t id, const char* file, char* buf, size_t cap, size_t* n) {
  if (id <= 0) return false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/%s", id, file);
  return read_small_file(path, buf, cap, n);
}

// Field `k` (1-based, k > 2) of a /proc/<id>/stat text, or null. Counted
// after the ")" that closes comm (field 2), which may hold spaces and ')'.
const char* stat_field(const char* stat, int k) {
  const char* q = std::strrchr(stat, ')');
  if (!q) return nullptr;
  for (int field = 2; *q; q++)
    if (*q == ' ' && ++field == k) return q + 1;
  return nullptr;
}

// /proc/<tid>/stat rather than status: it costs about half as much to render
// (2.5 against 4.3 us here), and this runs for every message handed to a
// parked reader. A fatal signal is added to every thread's private pending
// set (field 31); field 9 has PF_EXITING once the thread is past that.
bool stat_says_dying(const char* buf) {
  constexpr unsigned long long kPfExiting = 0x4;
  const char* flags = stat_field(buf, 9);
  const char* pending = stat_field(buf, 31);
  return (flags && (std::strtoull(flags, nullptr, 10) & kPfExiting)) ||
         (pending && (std::strtoull(pending, nullptr, 10) & (1ull << (SIGKILL - 1))));
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
  return read_proc(tid, "stat", buf, sizeof buf, &n) && stat_says_dying(buf);
}

bool ThreadProbe::dying(pid_t tid) {
  if (tid <= 0) return false;
  char buf[1024];
  std::shared_ptr<const UniqueFd> fd;
  {
    MutexLock g(mu_);
    if (auto it = fds_.find(tid); it != fds_.end()) fd = it->second;
  }
  // Read outside the lock: probes of different mailboxes run in parallel, and
  // the shared_ptr keeps the descriptor open if it is dropped meanwhile.
  if (fd && pread_small(fd->get(), buf, sizeof buf)) return stat_says_dying(buf);
  // Not kept yet, or its thread is gone (a later thread may have the number).
  auto fresh = std::make_shared<const UniqueFd>(::open(stat_path(tid).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fresh->valid() || !pread_small(fresh->get(), buf, sizeof buf)) {
    MutexLock g(mu_);
    fds_.erase(tid);
    return false;  // no such thread: nobody to lose a message to
  }
  {
    MutexLock g(mu_);
    if (fds_.size() >= kKept) fds_.clear();
    fds_[tid] = std::move(fresh);
  }
  return stat_says_dying(buf);
}

namespace {
// /proc/<tid>/statm, which takes no exec lock: all zeros for a thread
// without an mm (exiting, or gone); a live process's size is never 0.
bool has_memory(pid_t tid) {
  char buf[256];
  size_t n;
  return read_proc(tid, "statm", buf, sizeof buf, &n) && std::strtoull(buf, nullptr, 10) != 0;
}
}  // namespace

bool killed_by_signal(pid_t tid) {
  // stat waits for exec_update_lock, held by execve while it flushes its
  // close-on-exec files: ask it only of a thread that has let its memory go,
  // which is in do_exit, not in execve (design.md §2 "Killed writers").
  if (has_memory(tid)) return false;
  char buf[4096];
  size_t n;
  if (!read_proc(tid, "stat", buf, sizeof buf, &n)) return false;
  const char* code = stat_field(buf, 52);  // exit_code
  return code && (std::strtoll(code, nullptr, 10) & 0x7f) != 0;
}

std::optional<Syscall> current_syscall(pid_t tid) {
  char buf[512];
  size_t n;
  if (!read_proc(tid, "syscall", buf, sizeof buf, &n)) return std::nullopt;
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
    case SYS_truncate: return true;
#ifdef SYS_open
    case SYS_open: return sc.args[1] & O_TRUNC;
#endif
    case SYS_openat: return sc.args[2] & O_TRUNC;
    default: return false;
  }
}

namespace {
// The numbers after "Key:" in a /proc/<pid>/status text.
std::vector<unsigned long> status_field(const std::string& text, const char* key, int base = 10) {
  std::vector<unsigned long> v;
  auto at = text.find(key);
  if (at == std::string::npos) return v;
  const char* p = text.c_str() + at + std::strlen(key);
  for (;;) {
    char* end;
    unsigned long x = std::strtoul(p, &end, base);
    if (end == p) break;
    v.push_back(x);
    p = end;
    if (*p == '\n') break;
  }
  return v;
}
}  // namespace

std::optional<Status> status(pid_t tid) {
  char buf[4096];
  size_t n;
  if (!read_proc(tid, "status", buf, sizeof buf, &n)) return std::nullopt;
  const std::string s(buf, n);
  auto state = s.find("\nState:");
  if (state != std::string::npos) {
    const char* p = s.c_str() + state + 7;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == 'Z' || *p == 'X') return std::nullopt;  // exited, not yet reaped
  }
  auto tgid = status_field(s, "\nTgid:");
  auto uid = status_field(s, "\nUid:");
  auto gid = status_field(s, "\nGid:");
  auto cap = status_field(s, "\nCapEff:", 16);
  if (tgid.size() != 1 || uid.size() != 4 || gid.size() != 4) return std::nullopt;
  Status st;
  st.tgid = static_cast<pid_t>(tgid[0]);
  st.ruid = static_cast<uid_t>(uid[0]);
  st.suid = static_cast<uid_t>(uid[2]);
  st.rgid = static_cast<gid_t>(gid[0]);
  constexpr unsigned kCapFsetid = 4;
  st.cap_fsetid = !cap.empty() && ((cap[0] >> kCapFsetid) & 1);
  for (unsigned long g : status_field(s, "\nGroups:")) st.groups.push_back(static_cast<gid_t>(g));
  return st;
}

std::optional<uint64_t> start_time(pid_t pid) {
  char buf[1024];
  size_t n;
  if (!read_proc(pid, "stat", buf, sizeof buf, &n)) return std::nullopt;
  const char* start = stat_field(buf, 22);
  if (!start) return std::nullopt;
  return std::strtoull(start, nullptr, 10);
}

}  // namespace mbx::proc

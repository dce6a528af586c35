// SPDX-License-Identifier: MIT
// What the daemon reads of other processes in /proc, in one place: whether a
// thread is dying or was killed, the system call it is blocked in, its
// process's ids and credentials, and its start time. Each call renders the
// file afresh; nothing here caches except ThreadProbe.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/unique_fd.h"

namespace mbx::proc {

// /proc/<tid>/stat: true if SIGKILL is pending or the thread is exiting (a
// message handed to it now would be lost).
bool thread_dying(pid_t tid);

// thread_dying() through descriptors kept open per thread id: one pread(2)
// per check instead of an open, a read and a close (it runs for every message
// handed to a parked reader). A descriptor is bound to the thread it was
// opened for; once that thread is gone it fails (ESRCH) and is reopened by
// number. Thread-safe.
class ThreadProbe {
 public:
  bool dying(pid_t tid);

 private:
  static constexpr size_t kKept = 64;  // descriptors kept; all dropped when full
  Mutex mu_;                           // leaf lock: guards fds_ only, not the reads
  std::unordered_map<pid_t, std::shared_ptr<const UniqueFd>> fds_ GUARDED_BY(mu_);
};

// True if the thread is exiting because of a signal: it has let its memory
// go (/proc/<tid>/statm), and /proc/<tid>/stat's exit code has a signal.
// Never waits for a thread in execve.
bool killed_by_signal(pid_t tid);

// /proc/<tid>/syscall: the system call the thread is blocked in and its first
// three arguments; nr is -1 outside a system call and kSyscallRunning while
// the thread runs (then unknown). nullopt if unreadable: no such thread, or
// another user's and the daemon is not root.
inline constexpr long kSyscallRunning = -2;
struct Syscall {
  long nr = -1;
  unsigned long args[3] = {};
};
std::optional<Syscall> current_syscall(pid_t tid);

// True if `sc`, whose path lookup is under way, will then take that file's
// inode lock exclusively: removing, renaming, or changing its mode, owner,
// times, attributes or size (an open with O_TRUNC).
bool locks_inode_exclusively(const Syscall& sc);

// /proc/<tid>/status of a live (not zombie) thread.
struct Status {
  pid_t tgid = 0;            // its process
  uid_t ruid = 0, suid = 0;  // real and saved user ids
  gid_t rgid = 0;
  bool cap_fsetid = false;    // CAP_FSETID in the effective set
  std::vector<gid_t> groups;  // supplementary groups
};
std::optional<Status> status(pid_t tid);

// /proc/<pid>/stat field 22: clock ticks since boot when it started. With
// the pid it names a process for good (a pid is reused, the pair is not).
std::optional<uint64_t> start_time(pid_t pid);

}  // namespace mbx::proc

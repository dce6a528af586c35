// SPDX-License-Identifier: MIT
// Mount-wide core state: the state directory, default settings, the timer
// thread, and the doorbell that lets other participants wake parked calls.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/errc.h"
#include "core/quota.h"
#include "shm/segment.h"
#include "core/settings.h"
#include "shm/state_dir.h"
#include "core/timers.h"
#include "base/unique_fd.h"

namespace mbx {

class Mailbox;
class Direct;

struct MountConfig {
  std::string state_dir;
  uint64_t max_bytes = 1ull << 30;  // memory quota for everything queued
  uint64_t user_max_bytes = 0;      // per user: held + queued through the daemon; 0 = none
  Settings defaults;
};

// thread_dying() through descriptors kept open per thread id: one pread(2)
// per check instead of an open, a read and a close. It runs for every message
// handed to a parked reader, on the path that wakes the reader: the open and
// close of /proc were about a quarter of a datagram round trip through the
// daemon. A descriptor is bound to the thread it was opened for; once that
// thread is gone it fails (ESRCH) and is reopened by number. Thread-safe.
class ThreadProbe {
 public:
  bool dying(pid_t tid);

 private:
  static constexpr size_t kKept = 64;  // descriptors kept; all dropped when full
  std::mutex mu_;                      // leaf lock: guards fds_ only, not the reads
  std::unordered_map<pid_t, std::shared_ptr<const UniqueFd>> fds_;
};

class Mount {
 public:
  // Takes the state directory. No threads yet, so the daemon may still fork.
  static Result<std::unique_ptr<Mount>> open(const MountConfig& cfg);
  // Starts the timer and doorbell threads.
  void start();
  ~Mount();

  const MountConfig& config() const { return cfg_; }
  Timers& timers() { return *timers_; }
  const StateDir& state() const { return state_; }
  uint64_t quota_used() const;
  // Bytes the daemon holds for writers, charged to the quota (and per user).
  HeldQuota& held() { return *held_; }
  // Direct communication (pid/): the links between processes.
  Direct& direct() { return *direct_; }

  // A fresh mailbox with its own segment, using `s` for its settings.
  Result<std::shared_ptr<Mailbox>> create_mailbox(uint64_t id, const Settings& s);
  // A segment for mailbox `id` (a new generation when resizing).
  Result<Segment> make_segment(uint64_t id, uint64_t generation, const Settings& s);
  // Re-attaches the live segment a dead daemon left for mailbox `id` (its
  // newest generation, renamed to generation 0); `s` gives framing and
  // timeout, the segment its geometry.
  Result<std::shared_ptr<Mailbox>> adopt_mailbox(uint64_t id, Settings s);
  // Unlinks the segment files of every mailbox id not in `keep`.
  void remove_segments_except(const std::set<uint64_t>& keep);
  bool restored() const { return state_.restored(); }
  // The state directory was removed under the daemon (a /dev/shm cleaner, a
  // logout): makes it again, with a new control segment and doorbell, and
  // says so once on stderr. True if it exists now. Mailboxes made before
  // keep their (unlinked) segments until a resize moves them.
  bool restore_state_dir();
  // How many times restore_state_dir() made the directory again (the
  // records written before are gone: the tree writes them anew).
  uint64_t state_rebuilds() const { return rebuilds_.load(std::memory_order_acquire); }
  void keep_state() { state_.keep(); }

  // True if the thread is being killed: a message handed to it would be lost.
  // Replaceable for tests; by default probe_.dying().
  std::function<bool(pid_t)> dying;
  // Called when a datagram/line mailbox fills up, with the st_size the kernel
  // should cache so that further writers wait in the daemon, not on the inode lock.
  std::function<void(uint64_t id, uint64_t size)> raise_size;

  // Mailboxes with parked calls or armed polls, which the doorbell services.
  void watch(uint64_t id, const std::shared_ptr<Mailbox>& box, bool on);
  // Keeps a deleted segment whose lock another participant holds, and
  // empties it (giving its queue's quota back) once the lock is free, tried
  // by the timer thread (never waited for).
  void bury(Segment seg);

 private:
  Mount() = default;
  void ring();
  void sweep_graves();

  layout::ControlHeader* control() const;

  MountConfig cfg_;
  // Leaf lock: serialises restore_state_dir() with the uses of the control
  // segment it replaces (make_segment, quota_used).
  mutable std::mutex state_mu_;
  bool restore_failed_said_ = false;  // guarded by state_mu_: a failed rebuild is said once
  std::atomic<uint64_t> rebuilds_{0};  // release after the rebuild, acquire in state_rebuilds()
  StateDir state_;
  ThreadProbe probe_;
  std::unique_ptr<Timers> timers_;
  std::unique_ptr<HeldQuota> held_;
  std::mutex watch_mu_;  // leaf lock: guards watched_ only
  std::unordered_map<uint64_t, std::weak_ptr<Mailbox>> watched_;
  std::mutex graves_mu_;  // leaf lock: guards graves_ and grave_delay_
  std::vector<Segment> graves_;
  std::chrono::milliseconds grave_delay_{0};  // 0: no sweep scheduled
  std::unique_ptr<Doorbell> doorbell_;  // stopped second
  // Doorbells of controls replaced by restore_state_dir(): programs that
  // mapped one before still ring it. Stopped with doorbell_.
  std::vector<std::unique_ptr<Doorbell>> old_doorbells_;
  std::unique_ptr<Direct> direct_;      // last: stopped first (its links use the timers)
};

// Reads /proc/<tid>/stat: true if SIGKILL is pending or the thread is exiting.
bool thread_dying(pid_t tid);

// Reads /proc/<tid>/stat: true if the thread is exiting because of a signal.
bool killed_by_signal(pid_t tid);

// Reads /proc/<tid>/syscall: the system call the thread is blocked in and its
// first three arguments; nr is -1 outside a system call and kSyscallRunning
// while the thread runs (then unknown). nullopt if unreadable: no such
// thread, or another user's and the daemon is not root.
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

}  // namespace mbx

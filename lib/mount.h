// Mount-wide core state: the state directory, default settings, the timer
// thread, and the doorbell that lets other participants wake parked calls.
#pragma once
#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "errc.h"
#include "segment.h"
#include "settings.h"
#include "state_dir.h"
#include "timers.h"
#include "unique_fd.h"

namespace mbx {

class Mailbox;
class Direct;

struct MountConfig {
  std::string state_dir;
  uint64_t max_bytes = 1ull << 30;  // memory quota for everything queued
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

  MountConfig cfg_;
  StateDir state_;
  ThreadProbe probe_;
  std::unique_ptr<Timers> timers_;
  std::mutex watch_mu_;  // leaf lock: guards watched_ only
  std::unordered_map<uint64_t, std::weak_ptr<Mailbox>> watched_;
  std::mutex graves_mu_;  // leaf lock: guards graves_ and grave_delay_
  std::vector<Segment> graves_;
  std::chrono::milliseconds grave_delay_{0};  // 0: no sweep scheduled
  std::unique_ptr<Doorbell> doorbell_;  // stopped second
  std::unique_ptr<Direct> direct_;      // last: stopped first (its links use the timers)
};

// Reads /proc/<tid>/stat: true if SIGKILL is pending or the thread is exiting.
bool thread_dying(pid_t tid);

// Reads /proc/<tid>/stat: true if the thread is exiting because of a signal.
bool killed_by_signal(pid_t tid);

}  // namespace mbx

// The per-mount state directory (mode 0700) holding one segment file per
// mailbox and the control segment (quota counter, doorbell). Owned by one live
// daemon at a time through an flock on its "lock" file.
#pragma once
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "errc.h"
#include "mailbox/layout.h"
#include "unique_fd.h"

namespace mbx {

class StateDir {
 public:
  StateDir() = default;
  StateDir(StateDir&& o) noexcept { *this = std::move(o); }
  StateDir& operator=(StateDir&& o) noexcept {
    dir_ = std::move(o.dir_);
    lock_ = std::move(o.lock_);
    ctl_ = std::move(o.ctl_);
    owner_ = std::exchange(o.owner_, false);
    return *this;
  }
  ~StateDir();

  // Creates `dir` (or takes over one left by a dead daemon, clearing it) and
  // its control segment. exists: another live daemon holds it.
  static Result<StateDir> open(const std::string& dir, uint64_t quota_max);

  const std::string& dir() const { return dir_; }
  layout::ControlHeader* control() const { return static_cast<layout::ControlHeader*>(ctl_.get()); }
  std::string segment_path(uint64_t id, uint64_t generation) const;

 private:
  std::string dir_;
  UniqueFd lock_;
  bool owner_ = false;  // holds the flock: only then may the destructor clear the directory
  Mapping ctl_;
};

// Default state directory for a mountpoint: /dev/shm/mailboxfs-<uid>-<hash>.
std::string default_state_dir(const std::string& mountpoint_realpath);

// Waits on the control segment's doorbell futex and calls `ring` each time a
// non-daemon participant rings it.
class Doorbell {
 public:
  Doorbell(layout::ControlHeader* ctl, std::function<void()> ring);
  ~Doorbell();
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;

 private:
  layout::ControlHeader* ctl_;
  std::function<void()> ring_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace mbx

// SPDX-License-Identifier: MIT
// The per-mount state directory (mode 0700) holding one segment file per
// mailbox and the control segment (quota counter, doorbell). Owned by one live
// daemon at a time through an flock on its "lock" file.
#pragma once
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/errc.h"
#include "base/unique_fd.h"
#include "mailbox/layout.h"

namespace mbx {

class StateDir {
 public:
  StateDir() = default;
  StateDir(StateDir&& o) noexcept { *this = std::move(o); }
  StateDir& operator=(StateDir&& o) noexcept {
    dir_ = std::move(o.dir_);
    lock_ = std::move(o.lock_);
    ctl_ = std::move(o.ctl_);
    old_ctls_ = std::move(o.old_ctls_);
    owner_ = std::exchange(o.owner_, false);
    restored_ = o.restored_;
    return *this;
  }
  ~StateDir();

  // Creates `dir` and its control segment, or takes over one left by a dead
  // daemon (restored(): its segments and records are kept for Tree::restore).
  // exists: another live daemon holds it.
  static Result<StateDir> open(const std::string& dir, uint64_t quota_max);
  bool restored() const { return restored_; }
  // Leaves the directory as it is on destruction (a dead daemon's state that
  // this one could not mount to re-attach, kept for the next attempt).
  void keep() { owner_ = false; }
  // The segment files present, as (mailbox id, generation).
  std::vector<std::pair<uint64_t, uint64_t>> segments() const;

  // The directory is gone (removed by a /dev/shm cleaner or a logout).
  bool missing() const;
  // Makes a missing directory again, with a fresh lock and control segment
  // (quota counted anew). The old control stays mapped: the segments made
  // before point at it. Not thread-safe: the caller serialises it with
  // every use of control().
  Errc rebuild(uint64_t quota_max);

  const std::string& dir() const { return dir_; }
  layout::ControlHeader* control() const { return static_cast<layout::ControlHeader*>(ctl_.get()); }
  std::string segment_path(uint64_t id, uint64_t generation) const;

 private:
  bool take_over(const std::string& control_path);
  Errc make_dir_and_lock();
  Errc make_control(uint64_t quota_max);
  std::string dir_;
  UniqueFd lock_;
  bool restored_ = false;
  bool owner_ = false;  // holds the flock: only then may the destructor clear the directory
  Mapping ctl_;
  std::vector<Mapping> old_ctls_;  // controls of directories removed under us
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

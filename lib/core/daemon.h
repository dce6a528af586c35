// SPDX-License-Identifier: MIT
// The daemon's core, assembled: the mount (store backend, timers, quota),
// direct communication, the mailbox tree, the pid/ add-on and the router
// over them. Owns them all and stops them in order. Knows nothing of FUSE.
#pragma once
#include <memory>

#include "core/direct.h"
#include "core/mount.h"
#include "core/pid_dir.h"
#include "core/router.h"
#include "core/tree.h"

namespace mbx {

class Daemon {
 public:
  // Takes the state directory. No threads yet, so the daemon may still fork.
  static Result<std::unique_ptr<Daemon>> open(const MountConfig& cfg, mode_t root_mode, uid_t uid, gid_t gid);
  ~Daemon();

  // Re-attaches what a daemon that died left (when mount().restored()).
  Tree::Restored restore() { return tree_->restore(); }
  // Starts the timer, doorbell and direct-communication threads.
  void start();
  // Ends every parked call and deletes every mailbox (the daemon is stopping).
  void shutdown();

  Mount& mount() { return *mount_; }
  Router& router() { return *router_; }
  Tree& tree() { return *tree_; }
  Direct& direct() { return *direct_; }

 private:
  Daemon() = default;
  // Destroyed in reverse: the router and the parts before the mount whose
  // timers and stores they use.
  std::unique_ptr<Mount> mount_;
  std::unique_ptr<Direct> direct_;
  std::unique_ptr<Tree> tree_;
  std::unique_ptr<PidDir> pid_;
  std::unique_ptr<Router> router_;
};

}  // namespace mbx

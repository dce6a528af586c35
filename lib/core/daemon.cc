// SPDX-License-Identifier: MIT
#include "core/daemon.h"

namespace mbx {

Result<std::unique_ptr<Daemon>> Daemon::open(const MountConfig& cfg, mode_t root_mode, uid_t uid, gid_t gid) {
  auto mount = Mount::open(cfg);
  if (!mount) return mount.error();
  std::unique_ptr<Daemon> d(new Daemon());
  d->mount_ = std::move(mount.value());
  d->direct_ = std::make_unique<Direct>(*d->mount_);
  d->tree_ = std::make_unique<Tree>(*d->mount_, root_mode, uid, gid);
  d->pid_ = std::make_unique<PidDir>(*d->direct_);
  d->router_ = std::make_unique<Router>(*d->tree_, *d->pid_);
  return d;
}

void Daemon::start() {
  mount_->start();
  direct_->start();
}

void Daemon::shutdown() {
  tree_->shutdown();
  direct_->shutdown();
}

Daemon::~Daemon() {
  router_.reset();
  pid_.reset();
  tree_.reset();
  direct_.reset();  // its thread and links use the timers
  mount_.reset();
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
#include "core/mount.h"

namespace mbx {

Result<std::unique_ptr<Mount>> Mount::open(const MountConfig& cfg) {
  auto backend = ShmBackend::open(cfg.state_dir, cfg.max_bytes);
  if (!backend) return backend.error();
  std::unique_ptr<Mount> m(new Mount());
  m->cfg_ = cfg;
  m->backend_ = std::move(backend.value());
  m->held_ = std::make_unique<HeldQuota>(m->backend_->control(), cfg.user_max_bytes);
  return m;
}

void Mount::start() {
  timers_ = std::make_unique<Timers>();
  backend_->start(*timers_);
}

Mount::~Mount() {
  backend_.reset();
  timers_.reset();
}

Result<std::shared_ptr<Mailbox>> Mount::create_mailbox(uint64_t id, const Settings& s) {
  auto store = backend_->create(id, s);
  if (!store) return store.error();
  return std::make_shared<Mailbox>(*this, id, s, std::move(store.value()));
}

Result<std::shared_ptr<Mailbox>> Mount::adopt_mailbox(uint64_t id, Settings s) {
  auto store = backend_->adopt(id, &s);
  if (!store) return store.error();
  return std::make_shared<Mailbox>(*this, id, s, std::move(store.value()));
}

}  // namespace mbx

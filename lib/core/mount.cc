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
  if (cfg.redis) {
    auto r = RedisBackend::open(*cfg.redis);
    if (!r) return r.error();
    m->redis_ = std::move(r.value());
    m->catalog_ = std::make_unique<RedisCatalog>(*m->redis_);
  }
  return m;
}

void Mount::start() {
  timers_ = std::make_unique<Timers>();
  backend_->start(*timers_);
  if (redis_) redis_->start();
  MutexLock g(sweep_mu_);
  schedule_sweep();
}

Mount::~Mount() {
  {
    MutexLock g(sweep_mu_);  // a sweep under way ends (and drops its references) first
    stopped_ = true;
  }
  catalog_.reset();
  redis_.reset();
  backend_.reset();
  timers_.reset();
}

Result<std::shared_ptr<Mailbox>> Mount::create_mailbox(uint64_t id, const Settings& s) {
  auto store = backend_->create(id, s);
  if (!store) return store.error();
  return made(std::make_shared<Mailbox>(*this, id, s, std::move(store.value())));
}

Result<std::shared_ptr<Mailbox>> Mount::shared_mailbox(uint64_t id, const std::string& rid, Settings s) {
  if (!redis_) return Errc::not_supported;
  auto store = redis_->open_store(rid, &s);
  if (!store) return store.error();
  auto box = std::make_shared<Mailbox>(*this, id, s, std::move(store.value()));
  box->expose();  // other daemons change it
  return box;
}

Result<std::shared_ptr<Mailbox>> Mount::adopt_mailbox(uint64_t id, Settings s) {
  auto store = backend_->adopt(id, &s);
  if (!store) return store.error();
  auto box = std::make_shared<Mailbox>(*this, id, s, std::move(store.value()));
  box->expose();  // library peers of the dead daemon may have it mapped
  return made(std::move(box));
}

std::shared_ptr<Mailbox> Mount::made(std::shared_ptr<Mailbox> box) {
  MutexLock g(boxes_mu_);
  boxes_.push_back(box);
  return box;
}

void Mount::schedule_sweep() {
  if (stopped_ || cfg_.idle_sweep.count() <= 0 || !timers_) return;
  // The callback runs before ~Mount's timers_.reset() returns, so `this` is alive.
  timers_->add(Timers::Clock::now() + cfg_.idle_sweep, [this] { sweep_idle(); });
}

void Mount::sweep_idle() {
  MutexLock s(sweep_mu_);
  if (stopped_) return;
  std::vector<std::weak_ptr<Mailbox>> boxes;
  {
    MutexLock g(boxes_mu_);
    std::erase_if(boxes_, [](const std::weak_ptr<Mailbox>& w) { return w.expired(); });
    boxes = boxes_;
  }
  // One reference at a time: a mailbox removed meanwhile is freed here at the latest.
  for (const auto& w : boxes)
    if (auto box = w.lock()) box->sweep();
  schedule_sweep();
}

}  // namespace mbx

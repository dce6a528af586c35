#include "core/quota.h"

#include <algorithm>
#include <vector>

namespace mbx {

namespace {
using Guard = MutexLock;
}

Errc HeldQuota::hold(uid_t uid, uint64_t n) {
  if (n == 0) return Errc::ok;
  {
    Guard g(mu_);
    User& u = users_[uid];
    if (user_max_ && u.held + u.queued + n > user_max_) return Errc::quota;
    u.held += n;
    held_ += n;
  }
  if (ctl_) {
    // SYNC POINT: acq_rel, as a sender's charge in Segment::charge_quota_locked
    // (over the quota: undone, as there).
    const uint64_t before = ctl_->quota_used.fetch_add(n, std::memory_order_acq_rel);
    if (before + n > ctl_->quota_max) {
      ctl_->quota_used.fetch_sub(n, std::memory_order_acq_rel);
      Guard g(mu_);
      users_[uid].held -= n;
      held_ -= n;
      return Errc::no_space;
    }
    // After quota_used: a daemon dying in between leaks n rather than
    // having its successor give back more than it took.
    ctl_->daemon_held.fetch_add(n, std::memory_order_relaxed);
  }
  return Errc::ok;
}

void HeldQuota::unhold(uid_t uid, uint64_t n) {
  lend(n);
  forget(uid, n);
}

void HeldQuota::forget(uid_t uid, uint64_t n) {
  if (n == 0) return;
  Guard g(mu_);
  held_ -= std::min(held_, n);
  auto it = users_.find(uid);
  if (it == users_.end()) return;
  it->second.held -= std::min(it->second.held, n);
  if (it->second.held == 0 && it->second.queued == 0) users_.erase(it);
}

void HeldQuota::lend(uint64_t n) {
  if (!ctl_ || n == 0) return;
  ctl_->daemon_held.fetch_sub(n, std::memory_order_relaxed);  // first: see hold()
  // SYNC POINT: acq_rel, pairs with the fetch_add in hold(); never below 0
  // (a receiver's give-back races with us on the same counter).
  uint64_t cur = ctl_->quota_used.load(std::memory_order_acquire);
  while (!ctl_->quota_used.compare_exchange_weak(cur, cur - std::min(cur, n), std::memory_order_acq_rel)) {
  }
}

void HeldQuota::take_back(uint64_t n) {
  // SYNC POINT: acq_rel, as in hold(); past quota_max on purpose: the bytes are held.
  if (!ctl_ || n == 0) return;
  ctl_->quota_used.fetch_add(n, std::memory_order_acq_rel);
  ctl_->daemon_held.fetch_add(n, std::memory_order_relaxed);  // after: see hold()
}

Errc HeldQuota::admit(uid_t uid, uint64_t n) {
  if (!user_max_) return Errc::ok;
  Guard g(mu_);
  auto it = users_.find(uid);
  const uint64_t used = it == users_.end() ? 0 : it->second.held + it->second.queued;
  return used + n > user_max_ ? Errc::quota : Errc::ok;
}

void HeldQuota::queued(uid_t uid, uint64_t n, const std::shared_ptr<Reconciler>& box) {
  Guard g(mu_);
  users_[uid].queued += n;
  tracking_.insert_or_assign(box.get(), box);  // a stale entry may name a dead mailbox at the same address
}

void HeldQuota::dequeued(uid_t uid, uint64_t n) {
  Guard g(mu_);
  auto it = users_.find(uid);
  if (it == users_.end()) return;
  it->second.queued -= std::min(it->second.queued, n);
  if (it->second.held == 0 && it->second.queued == 0) users_.erase(it);
}

void HeldQuota::untrack(const Reconciler* box) {
  Guard g(mu_);
  tracking_.erase(box);
}

void HeldQuota::reconcile_all() {
  std::vector<std::shared_ptr<Reconciler>> boxes;
  {
    Guard g(mu_);
    for (auto it = tracking_.begin(); it != tracking_.end();) {
      if (auto b = it->second.lock()) {
        boxes.push_back(std::move(b));
        ++it;
      } else {
        it = tracking_.erase(it);
      }
    }
  }
  for (auto& b : boxes) b->reconcile();
}

uint64_t HeldQuota::held() const {
  Guard g(mu_);
  return held_;
}

uint64_t HeldQuota::user_total(uid_t uid) const {
  Guard g(mu_);
  auto it = users_.find(uid);
  return it == users_.end() ? 0 : it->second.held + it->second.queued;
}

}  // namespace mbx

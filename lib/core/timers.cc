// SPDX-License-Identifier: MIT
#include "core/timers.h"

namespace mbx {

Timers::Timers() : thread_([this] { run(); }) {}

Timers::~Timers() {
  {
    MutexLock g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t Timers::add(Clock::time_point when, std::function<void()> fn) {
  MutexLock g(mu_);
  uint64_t id = next_id_++;
  auto it = queue_.emplace(when, std::make_pair(id, std::move(fn)));
  by_id_.emplace(id, it);
  if (it == queue_.begin()) cv_.notify_all();
  return id;
}

void Timers::cancel(uint64_t id) {
  MutexLock g(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  queue_.erase(it->second);
  by_id_.erase(it);
}

void Timers::run() {
  MutexLock g(mu_);
  while (!stop_) {
    if (queue_.empty()) {
      cv_.wait(mu_);
      continue;
    }
    auto first = queue_.begin();
    const Clock::time_point when = first->first;  // cancel() may erase the entry while we wait
    if (when > Clock::now()) {
      cv_.wait_until(mu_, when);
      continue;
    }
    auto fn = std::move(first->second.second);
    by_id_.erase(first->second.first);
    queue_.erase(first);
    g.unlock();
    fn();
    g.lock();
  }
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
// One thread that runs callbacks at deadlines (blocked calls' timeout_ms).
// Callbacks run with no Timers lock held, so they may take other locks; a
// callback may still run after cancel() returns if it had already started, so
// callbacks must look their target up rather than hold raw pointers.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <thread>

#include "base/mutex.h"

namespace mbx {

class Timers {
 public:
  using Clock = std::chrono::steady_clock;
  Timers();
  ~Timers();
  Timers(const Timers&) = delete;
  Timers& operator=(const Timers&) = delete;

  uint64_t add(Clock::time_point when, std::function<void()> fn) EXCLUDES(mu_);
  void cancel(uint64_t id) EXCLUDES(mu_);

 private:
  void run() EXCLUDES(mu_);
  // Lock rule: mu_ is a leaf; never call out while holding it.
  Mutex mu_;
  std::condition_variable_any cv_;
  std::multimap<Clock::time_point, std::pair<uint64_t, std::function<void()>>> queue_ GUARDED_BY(mu_);
  std::map<uint64_t, decltype(queue_)::iterator> by_id_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace mbx

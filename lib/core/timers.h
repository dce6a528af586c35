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
#include <mutex>
#include <thread>

namespace mbx {

class Timers {
 public:
  using Clock = std::chrono::steady_clock;
  Timers();
  ~Timers();
  Timers(const Timers&) = delete;
  Timers& operator=(const Timers&) = delete;

  uint64_t add(Clock::time_point when, std::function<void()> fn);
  void cancel(uint64_t id);

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  // Lock rule: mu_ is a leaf; never call out while holding it.
  std::multimap<Clock::time_point, std::pair<uint64_t, std::function<void()>>> queue_;
  std::map<uint64_t, decltype(queue_)::iterator> by_id_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mbx

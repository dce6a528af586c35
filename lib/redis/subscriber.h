// SPDX-License-Identifier: MIT
// A thread with its own connection subscribed to one channel: each message
// published on it is handed to `on_message`, and `on_missed` is called each
// time the subscription is made (messages published before may have been
// missed) and every `period` (a notification lost in between is recovered
// by that re-check). Reconnects with backoff. Both callbacks run on the
// subscriber's thread with no lock of its own held.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "base/unique_fd.h"
#include "redis/conn.h"
#include "redis/url.h"

namespace mbx::redis {

class Subscriber {
 public:
  using OnMessage = std::function<void(std::string_view payload)>;
  using OnMissed = std::function<void()>;
  Subscriber(Endpoint ep, std::string channel, std::chrono::milliseconds period, OnMessage on_message,
             OnMissed on_missed);
  ~Subscriber();  // stops and joins the thread
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // True once the first SUBSCRIBE was confirmed and while it holds.
  bool subscribed() const { return subscribed_.load(std::memory_order_acquire); }

 private:
  void run();
  bool serve_once();  // one connection's life: false when told to stop

  Endpoint ep_;
  std::string channel_;
  OnMessage on_message_;
  std::chrono::milliseconds period_;
  OnMissed on_missed_;
  UniqueFd stop_r_, stop_w_;             // the destructor writes a byte: poll() returns
  std::atomic<bool> subscribed_{false};  // release in run(), acquire in subscribed()
  std::thread thread_;
};

}  // namespace mbx::redis

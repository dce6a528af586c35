// SPDX-License-Identifier: MIT
// A thread with its own connection subscribed to one channel: each message
// published on it is handed to `on_message`, and `on_missed` is called each
// time the subscription is made (`fresh`: messages published before may have
// been missed, and the server may have been away) and every `period` (a
// notification lost in between is recovered by that re-check). Reconnects
// with backoff, logging one line when the subscription is lost and one when
// it is back. Both callbacks run on the subscriber's thread with no lock of
// its own held. `others`, if given, names more nodes of the same deployment
// (a cluster's masters, as the command client learnt them): when the
// subscription breaks or cannot be made, the next try goes to the next of
// the URL's node and these, in turn, so that a cluster node that died does
// not leave the daemon without notifications (a cluster broadcasts PUBLISH
// to every node, so any node serves).
// A node that hangs (stopped, wedged) keeps its connection open, so nothing
// breaks: the keep-alive notices it. When nothing was heard on the
// connection for `keepalive`, the subscriber sends PING (allowed while
// subscribed; the reply is ["pong", ""]); when nothing is heard for
// `keepalive` more, the node counts as gone, as when the connection breaks.
// SELECT and SUBSCRIBE wait no longer than `keepalive` for their replies.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "redis/conn.h"
#include "redis/url.h"

namespace mbx::redis {

class Subscriber {
 public:
  using OnMessage = std::function<void(std::string_view payload)>;
  using OnMissed = std::function<void(bool fresh)>;
  using Others = std::function<std::vector<Endpoint>()>;
  Subscriber(Endpoint ep, std::string channel, std::chrono::milliseconds period, std::chrono::milliseconds keepalive,
             OnMessage on_message, OnMissed on_missed, Others others = {});
  ~Subscriber();  // stops and joins the thread
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // True once the first SUBSCRIBE was confirmed and while it holds.
  bool subscribed() const { return subscribed_.load(std::memory_order_acquire); }
  // How many times the subscription was made, each counted once its fresh
  // on_missed returned (the first is 1; 2 is the first after an outage).
  uint64_t subscriptions();
  // Waits until subscriptions() >= n; false at the hang guard `limit`.
  bool wait_subscriptions(uint64_t n, std::chrono::milliseconds limit);

 private:
  void run();
  // One connection's life: false when told to stop; `why` says what ended
  // it when nothing broke (the keep-alive's PING had no answer).
  bool serve_once(const Endpoint& ep, std::string* why);
  Endpoint next_endpoint(const Endpoint& after);  // the URL's node, then `others_`, in turn

  Endpoint ep_;
  Others others_;
  std::string channel_;
  OnMessage on_message_;
  std::chrono::milliseconds period_;
  std::chrono::milliseconds keepalive_;
  OnMissed on_missed_;
  UniqueFd stop_r_, stop_w_;             // the destructor writes a byte: poll() returns
  // Set (release) once a subscription is made, cleared by run() when its
  // connection ended (acq_rel); pairs with the acquire in subscribed().
  std::atomic<bool> subscribed_{false};
  std::mutex count_mu_;                  // leaf lock: guards count_ for the waiters
  std::condition_variable count_cv_;
  uint64_t count_ = 0;
  std::thread thread_;
};

}  // namespace mbx::redis

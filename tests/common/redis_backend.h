// SPDX-License-Identifier: MIT
// Unit-test helpers for the Redis store: RedisBackends (each a daemon's
// stand-in) and their stores on a test's private server or cluster, and a
// listener that counts service() calls. Header-only, unit suite only.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "core/redis_store.h"
#include "redis_server.h"

namespace testredis {

inline mbx::redis::Endpoint endpoint(const std::string& url) { return mbx::redis::parse_url(url).value(); }

inline mbx::RedisConfig config(const std::string& url, std::string ns = "t") {
  mbx::RedisConfig c;
  c.endpoint = endpoint(url);
  c.ns = std::move(ns);
  return c;
}

// A backend on `c` (a failure, and null, if it does not open).
inline std::unique_ptr<mbx::RedisBackend> backend(const mbx::RedisConfig& c) {
  auto b = mbx::RedisBackend::open(c);
  EXPECT_TRUE(b.ok());
  return b.ok() ? std::move(b.value()) : nullptr;
}
inline std::unique_ptr<mbx::RedisBackend> backend(const std::string& url, std::string ns = "t") {
  return backend(config(url, std::move(ns)));
}

// Mailbox `rid`'s store through `b`, made with `s` unless it exists (a failure, and null, if it does not open).
inline std::unique_ptr<mbx::Store> store(mbx::RedisBackend& b, const std::string& rid, mbx::Settings s) {
  auto st = b.open_store(rid, &s);
  EXPECT_TRUE(st.ok());
  return st.ok() ? std::move(st.value()) : nullptr;
}
inline std::unique_ptr<mbx::Store> store(mbx::RedisBackend& b, const std::string& rid, uint64_t capacity = 64,
                                         uint64_t max_message = 1024) {
  mbx::Settings s;
  s.capacity = capacity;
  s.max_message = max_message;
  return store(b, rid, s);
}

// Records service() calls.
struct Listener : mbx::StoreListener {
  std::mutex m;
  std::condition_variable cv;
  int calls = 0;
  void service() override {
    std::lock_guard g(m);
    calls++;
    cv.notify_all();
  }
  bool wait_for(int n) {
    std::unique_lock g(m);
    return cv.wait_for(g, std::chrono::seconds(20), [&] { return calls >= n; });  // hang guard only
  }
};

// A test with its private redis-server, up before the test body runs.
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ready()) << "redis-server did not start (scripts/deps.sh test)"; }
  // A backend (a daemon's stand-in) on the server.
  std::unique_ptr<mbx::RedisBackend> backend(std::string ns = "t") const {
    return testredis::backend(server_.url(), std::move(ns));
  }
  Server server_;
};

}  // namespace testredis

// SPDX-License-Identifier: MIT
// Mailbox core under concurrency: blocking senders and receivers in several
// threads, with signals (interrupt) and timeouts racing against deliveries.
// An interrupted or timed-out receive consumes nothing and such a send
// delivers nothing, so every message must arrive exactly once.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "test_util.h"

namespace mbx {
namespace {

using namespace std::chrono_literals;

// A waiter whose outcome one thread waits for.
class SlotWaiter : public Waiter {
 public:
  void finish(Outcome o, bool) override {
    std::lock_guard<std::mutex> g(mu_);
    out_ = std::move(o);
    cv_.notify_all();
  }
  std::optional<Outcome> wait(std::chrono::milliseconds t) {
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait_for(g, t, [&] { return out_.has_value(); });
    return out_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Outcome> out_;
};

// Waiters that may be parked, for the interrupting thread to pick from.
class Pool {
 public:
  void add(SlotWaiter* w) {
    std::lock_guard<std::mutex> g(mu_);
    live_.push_back(w);
  }
  void drop(SlotWaiter* w) {
    std::lock_guard<std::mutex> g(mu_);
    live_.erase(std::find(live_.begin(), live_.end(), w));
  }
  // Interrupts one at random; the pool lock keeps it alive meanwhile.
  void interrupt_one(Mailbox& b, std::mt19937& rng) {
    std::lock_guard<std::mutex> g(mu_);
    if (!live_.empty()) b.interrupt(live_[rng() % live_.size()]);
  }

 private:
  std::mutex mu_;
  std::vector<SlotWaiter*> live_;
};

// Runs one blocking call to completion with a fresh waiter; nullopt if it
// never finished (a hang: the test fails).
template <class Call>
std::optional<Outcome> blocking(Pool& pool, Call call) {
  auto w = std::make_unique<SlotWaiter>();
  pool.add(w.get());
  std::optional<Outcome> o = call(w.get());
  if (!o) o = w->wait(5000ms);
  pool.drop(w.get());
  if (!o) (void)w.release();  // still parked: leak it rather than leave a dangling pointer
  return o;
}

struct Params {
  uint64_t capacity;
  const char* timeout_ms;
};

class MailboxStress : public ut::CoreTest, public ::testing::WithParamInterface<Params> {};

TEST_P(MailboxStress, EveryMessageArrivesExactlyOnce) {
  auto b = box(framed(Framing::datagram, GetParam().capacity));
  ASSERT_EQ(b->set("timeout_ms", GetParam().timeout_ms), Errc::ok);
  constexpr int kWriters = 3, kReaders = 3, kPerWriter = 2000;
  Pool pool;
  std::mutex mu;
  std::multiset<std::string> got;
  std::atomic<int> interrupted{0}, timed_out{0}, hung{0}, bad{0};
  std::atomic<bool> stop{false};

  auto count = [&](const Outcome& o) {
    if (o.err == Errc::interrupted) interrupted++;
    else if (o.err == Errc::timed_out) timed_out++;
    else if (o.err != Errc::ok) bad++;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < kWriters; t++)
    ts.emplace_back([&, t] {
      auto h = b->open(false, true, false);
      for (int i = 0; i < kPerWriter;) {
        std::string m = "w" + std::to_string(t) + "-" + std::to_string(i);
        auto o = blocking(pool, [&](Waiter* w) { return b->write(*h, m.data(), m.size(), false, Sender{}, w); });
        if (!o) return void(hung++);
        count(*o);
        if (o->err == Errc::ok) i++;  // otherwise nothing went: send it again
      }
      b->release(*h);
    });
  for (int t = 0; t < kReaders; t++)
    ts.emplace_back([&] {
      auto h = b->open(true, false, false);
      for (;;) {
        auto o = blocking(pool, [&](Waiter* w) { return b->read(*h, 4096, false, w); });
        if (!o) return void(hung++);
        if (o->err == Errc::removed) break;
        count(*o);
        if (o->err == Errc::ok) {
          std::lock_guard<std::mutex> g(mu);
          got.insert(o->data);
        }
      }
    });
  std::thread signals([&] {
    std::mt19937 rng(7);
    while (!stop) {
      pool.interrupt_one(*b, rng);
      std::this_thread::sleep_for(std::chrono::microseconds(20 + rng() % 80));
    }
  });
  const auto deadline = ut::Clock::now() + 30s;
  for (;;) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (got.size() >= size_t{kWriters * kPerWriter}) break;
    }
    if (ut::Clock::now() > deadline || hung) break;
    std::this_thread::sleep_for(5ms);
  }
  for (int t = 0; t < kWriters; t++) ts[t].join();
  std::this_thread::sleep_for(20ms);  // late deliveries, if any were wrongly made
  stop = true;
  signals.join();
  b->remove();  // ends the readers still waiting
  for (size_t t = kWriters; t < ts.size(); t++) ts[t].join();

  EXPECT_EQ(hung.load(), 0);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(got.size(), size_t{kWriters * kPerWriter});
  for (int t = 0; t < kWriters; t++)
    for (int i = 0; i < kPerWriter; i++) {
      std::string m = "w" + std::to_string(t) + "-" + std::to_string(i);
      EXPECT_EQ(got.count(m), 1u) << m;
    }
  EXPECT_EQ(mount_->quota_used(), 0u);
  // The races really happened.
  EXPECT_GT(interrupted.load() + timed_out.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Capacities, MailboxStress,
    ::testing::Values(Params{0, "0"}, Params{1, "0"}, Params{4, "0"}, Params{0, "3"}, Params{2, "2"}),
    [](const auto& i) { return "cap" + std::to_string(i.param.capacity) + "_timeout" + i.param.timeout_ms; });

}  // namespace
}  // namespace mbx

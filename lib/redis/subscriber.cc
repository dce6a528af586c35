// SPDX-License-Identifier: MIT
#include "redis/subscriber.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string_view>

#include "base/log.h"

namespace mbx::redis {

namespace {
using Clock = std::chrono::steady_clock;
int ms_until(Clock::time_point t) {  // rounded up: poll() does not return before t
  auto d = std::chrono::ceil<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(d, 0, 60'000));
}
}  // namespace

Subscriber::Subscriber(Endpoint ep, std::string channel, std::chrono::milliseconds period,
                       std::chrono::milliseconds keepalive, OnMessage on_message, OnMissed on_missed, Others others)
    : ep_(std::move(ep)),
      others_(std::move(others)),
      channel_(std::move(channel)),
      on_message_(std::move(on_message)),
      period_(period),
      keepalive_(keepalive),
      on_missed_(std::move(on_missed)) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) stop_r_.reset(p[0]), stop_w_.reset(p[1]);
  thread_ = std::thread([this] { run(); });
}

uint64_t Subscriber::subscriptions() {
  std::lock_guard g(count_mu_);
  return count_;
}

bool Subscriber::wait_subscriptions(uint64_t n, std::chrono::milliseconds limit) {
  std::unique_lock g(count_mu_);
  return count_cv_.wait_for(g, limit, [&] { return count_ >= n; });
}

Subscriber::~Subscriber() {
  if (stop_w_.valid()) (void)!::write(stop_w_.get(), "x", 1);
  if (thread_.joinable()) thread_.join();
}

Endpoint Subscriber::next_endpoint(const Endpoint& after) {
  std::vector<Endpoint> all{ep_};
  if (others_)
    for (Endpoint& e : others_())
      if (e.text() != ep_.text()) all.push_back(std::move(e));
  for (size_t i = 0; i < all.size(); i++)
    if (all[i].text() == after.text()) return all[(i + 1) % all.size()];
  return ep_;  // `after` is no longer known: from the start
}

void Subscriber::run() {
  // hiredis writes with write(2): a node that closed the connection must be
  // EPIPE here, not SIGPIPE for a program that has not ignored it (the
  // tests). The thread is the subscriber's own, so it blocks the signal for
  // its life; one raised for it stays pending on it and goes with it.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  auto backoff = Conn::kBackoffFirst;
  bool said = false;
  Endpoint at = ep_;
  for (;;) {
    std::string why;
    if (!serve_once(at, &why)) return;
    // It had worked (subscribed_ is set until the connection broke): a new outage.
    if (subscribed_.exchange(false, std::memory_order_acq_rel)) backoff = Conn::kBackoffFirst, said = false;
    if (!said) log(LogLevel::warning, "redis %s: no subscription%s; trying again", at.text().c_str(), why.c_str());
    said = true;
    at = next_endpoint(at);  // "subscribed again" names the node that served
    pollfd pf{stop_r_.get(), POLLIN, 0};
    if (::poll(&pf, 1, static_cast<int>(backoff.count())) > 0) return;  // told to stop while backing off
    backoff = std::min(backoff * 2, Conn::kBackoffMax);
  }
}

bool Subscriber::serve_once(const Endpoint& ep, std::string* why) {
  std::string unused;
  auto c = open_context(ep, std::chrono::milliseconds(1000), &unused);
  if (!c) return true;
  // A hung node accepts the connection (the kernel does) and never answers.
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(keepalive_).count();
  redisSetTimeout(c.get(), timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)});
  if (ep.db != 0) {  // pub/sub channels are global, but keep the context's db as the URL says
    auto* r = static_cast<redisReply*>(redisCommand(c.get(), "SELECT %d", ep.db));
    if (!r) return true;
    freeReplyObject(r);
  }
  const char* argv[] = {"SUBSCRIBE", channel_.c_str()};
  const size_t len[] = {9, channel_.size()};
  auto* r = static_cast<redisReply*>(redisCommandArgv(c.get(), 2, argv, len));
  if (!r) return true;
  freeReplyObject(r);
  subscribed_.store(true, std::memory_order_release);  // pairs with the acquire in subscribed()
  on_missed_(true);  // what was published before the subscription held may have been missed
  bool again = false;
  {
    std::lock_guard g(count_mu_);
    again = count_++ > 0;
  }
  count_cv_.notify_all();
  if (again) log(LogLevel::warning, "redis %s: subscribed again", ep.text().c_str());
  auto next_tick = Clock::now() + period_;
  // The keep-alive: anything read counts as heard; a PING is sent once
  // nothing was heard for keepalive_, and the node is gone if nothing is
  // heard for keepalive_ after it.
  auto heard = Clock::now(), pinged = Clock::time_point::max();  // max: no PING waiting
  for (;;) {
    const auto alive_until = (pinged == Clock::time_point::max() ? heard : pinged) + keepalive_;
    pollfd pf[2] = {{c->fd, POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
    const int n = ::poll(pf, 2, ms_until(std::min(next_tick, alive_until)));
    if (n < 0 && errno != EINTR) break;
    if (pf[1].revents) return false;
    if (n > 0 && pf[0].revents) {
      if (redisBufferRead(c.get()) != REDIS_OK) break;
      heard = Clock::now(), pinged = Clock::time_point::max();
      bool broken = false;
      for (;;) {
        void* out = nullptr;
        if (redisGetReplyFromReader(c.get(), &out) != REDIS_OK) {
          broken = true;
          break;
        }
        if (!out) break;
        Reply m = copy_reply(static_cast<redisReply*>(out));
        freeReplyObject(out);
        // ["message", channel, payload]; the keep-alive's ["pong", ""] is only heard
        if (m.type == Reply::Type::array && m.elements.size() == 3 && m.elements[0].str == "message")
          on_message_(m.elements[2].str);
      }
      if (broken) break;
    } else if (n == 0 && Clock::now() >= alive_until) {
      // Judged only on a poll that found nothing to read: a reply that came
      // while this thread was busy (a long tick, a loaded host) is read first.
      if (pinged != Clock::time_point::max()) {
        *why = " (no answer to PING in " + std::to_string(keepalive_.count()) + " ms)";
        break;
      }
      // Written here, never waiting: a write that does not fit at once
      // means the node reads nothing, so it is gone too.
      constexpr std::string_view kPing = "*1\r\n$4\r\nPING\r\n";
      if (::send(c->fd, kPing.data(), kPing.size(), MSG_NOSIGNAL | MSG_DONTWAIT) != ssize_t(kPing.size())) break;
      pinged = Clock::now();
    }
    if (Clock::now() >= next_tick) {
      on_missed_(false);
      next_tick = Clock::now() + period_;
    }
  }
  return true;  // run() clears subscribed_ (it tells it whether this connection had worked)
}

}  // namespace mbx::redis

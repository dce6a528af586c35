// SPDX-License-Identifier: MIT
// The Redis store and its connection layer against a real redis-server that
// each test starts on a unix socket in its own temporary directory. Two
// RedisBackends on one namespace stand in for two daemons.
#include "core/redis_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "../common/redis_backend.h"
#include "core/redis_scripts.h"
#include "mailbox/layout.h"
#include "test_util.h"

namespace {
using namespace mbx;
using namespace std::chrono_literals;
using testredis::config;
using testredis::endpoint;
using testredis::Listener;
using testredis::store;

class RedisStoreTest : public testredis::ServerTest {};

TEST_F(RedisStoreTest, ConnectionFailsWithEioAndComesBack) {
  redis::Conn c(endpoint(server_.url()), redis::Options{});
  auto r = c.command({"PING"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->str, "PONG");
  server_.stop();
  EXPECT_EQ(c.command({"PING"}).error(), Errc::io);
  EXPECT_FALSE(c.connected());
  EXPECT_EQ(c.command({"PING"}).error(), Errc::io);  // backing off, or refused: at once either way
  ASSERT_TRUE(server_.start());
  // The caller that knows the server is back (the daemon's subscriber) need
  // not wait out the backoff.
  EXPECT_EQ(c.connect(/*now=*/true), Errc::ok);
  auto again = c.command({"PING"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->str, "PONG");
}

TEST_F(RedisStoreTest, ARestartBetweenTwoCallsCostsNoCall) {
  redis::Conn c(endpoint(server_.url()), redis::Options{});
  ASSERT_TRUE(c.command({"SET", "k", "v"}).ok());
  server_.stop();
  ASSERT_TRUE(server_.start());  // no call while it was away: the connection is stale, not known broken
  auto r = c.command({"PING"});  // nothing was sent on the closed one: replaced at once
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->str, "PONG");
  EXPECT_TRUE(c.connected());
}

TEST_F(RedisStoreTest, UnreachableServerIsEio) {
  RedisConfig c = config(server_.url());
  c.endpoint.path = server_.dir() + "/nothing-here";
  EXPECT_EQ(RedisBackend::open(c).error(), Errc::io);
  c.ns = "bad name";
  EXPECT_EQ(RedisBackend::open(c).error(), Errc::invalid);
}

TEST_F(RedisStoreTest, ScriptsAreLoadedAgainAfterAFlush) {
  redis::Conn c(endpoint(server_.url()), redis::Options{});
  const redis::Script s{"t", "return {'OK', ARGV[1]}"};
  auto a = c.eval(s, {}, {"x"});
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->elements.size(), 2u);
  EXPECT_EQ(a->elements[1].str, "x");
  ASSERT_TRUE(c.command({"SCRIPT", "FLUSH"}).ok());
  auto b = c.eval(s, {}, {"y"});  // NOSCRIPT: loaded again, run once
  ASSERT_TRUE(b.ok());
  ASSERT_FALSE(b->is_error()) << b->str;
  EXPECT_EQ(b->elements[1].str, "y");
}

TEST_F(RedisStoreTest, SentThroughOneReceivedThroughAnother) {
  auto a = backend(), b = backend();
  auto sa = store(*a, "7"), sb = store(*b, "7");
  const Sender from{42, 1000, 100};
  for (int i = 0; i < 3; i++) {
    auto seq = sa->push("msg" + std::to_string(i), from, false);
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, uint64_t(i));
  }
  EXPECT_EQ(sb->peek_len().value(), 4u);
  for (int i = 0; i < 3; i++) {
    std::string out;
    auto p = sb->pop(out);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(out, "msg" + std::to_string(i));
    EXPECT_EQ(p->seq, uint64_t(i));
    EXPECT_EQ(p->from, from);
    EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  }
  std::string out;
  EXPECT_EQ(sb->pop(out).error(), Errc::again);
  EXPECT_EQ(sa->peek_len().error(), Errc::again);
  const QueueStats st = sa->stats();
  EXPECT_EQ(st.total_sent, 3u);
  EXPECT_EQ(st.total_received, 3u);
  EXPECT_EQ(st.count, 0u);
  EXPECT_EQ(st.consumed_seq, 3u);
  EXPECT_EQ(st.next_seq, 3u);
  EXPECT_GT(st.last_recv_ns, 0);
}

TEST_F(RedisStoreTest, BinaryPayloadsAndSenderHost) {
  auto a = backend();
  auto s = store(*a, "bin");
  const std::string msg("a\0b\nc \xff", 7);
  ASSERT_TRUE(s->push(msg, Sender{1, 2, 3}, false).ok());
  auto raw = a->command({"LINDEX", "mbx:{t:bin}:q", "0"});
  ASSERT_TRUE(raw.ok());
  EXPECT_NE(raw->str.find("pid=1 uid=2 gid=3 host=" + a->host() + "\n"), std::string::npos) << raw->str;
  std::string out;
  ASSERT_TRUE(s->pop(out).ok());
  EXPECT_EQ(out, msg);
}

TEST_F(RedisStoreTest, CapacityAndSizeHoldAcrossDaemons) {
  auto a = backend(), b = backend();
  auto sa = store(*a, "c", 3, 8), sb = store(*b, "c", 99, 99);  // the first to make it sets the geometry
  EXPECT_EQ(sb->capacity(), 3u);
  EXPECT_EQ(sa->push("123456789", {}, false).error(), Errc::msg_size);
  ASSERT_TRUE(sa->push("1", {}, false).ok());
  ASSERT_TRUE(sb->push("2", {}, false).ok());
  ASSERT_TRUE(sa->push("3", {}, false).ok());
  EXPECT_TRUE(sb->full());
  EXPECT_EQ(sb->push("4", {}, false).error(), Errc::again);
  EXPECT_TRUE(sb->push("forced", {}, true).ok());  // counted elsewhere
  EXPECT_EQ(sa->stats().count, 4u);
  EXPECT_EQ(sa->max_queued_len(), 6u);
}

TEST_F(RedisStoreTest, ConcurrentSendersNeverOverfill) {
  constexpr int kThreads = 8, kTries = 50;
  constexpr uint64_t kCap = 37;
  std::vector<std::unique_ptr<RedisBackend>> bs;
  for (int i = 0; i < kThreads; i++) bs.push_back(backend());
  std::atomic<int> ok{0}, full{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < kThreads; i++)
    ts.emplace_back([&, i] {
      auto s = store(*bs[i], "race", kCap);
      for (int k = 0; k < kTries; k++) {
        auto r = s->push("m" + std::to_string(i * kTries + k), {}, false);
        (r.ok() ? ok : full)++;
        if (!r.ok()) {
          EXPECT_EQ(r.error(), Errc::again);
        }
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), int(kCap));
  EXPECT_EQ(full.load(), kThreads * kTries - int(kCap));
  auto s = store(*bs[0], "race");
  EXPECT_EQ(s->stats().count, kCap);
}

TEST_F(RedisStoreTest, InFlightUntilAckedAndUnpopPutsItBackFirst) {
  auto a = backend();
  auto s = store(*a, "f");
  ASSERT_TRUE(s->push("one", {}, false).ok());
  ASSERT_TRUE(s->push("two", {}, false).ok());
  const std::string inflight = "mbx:{t:f}:f:" + a->daemon_id();
  std::string out;
  auto p = s->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 1);
  EXPECT_EQ(s->unpop(p->seq), Errc::ok);  // the reply was not sent
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 0);
  EXPECT_EQ(s->stats().total_received, 0u);
  out.clear();
  p = s->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "one");  // back at the front
  EXPECT_EQ(s->ack(p->seq), Errc::ok);
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 0);
  EXPECT_EQ(s->unpop(p->seq), Errc::not_found);  // acknowledged: nothing to put back
  const QueueStats st = s->stats();
  EXPECT_EQ(st.total_sent, st.total_received + st.count + st.lost);
}

TEST_F(RedisStoreTest, WithdrawTakesBackOnlyTheUnreceivedOffer) {
  auto a = backend(), b = backend();
  auto sa = store(*a, "rv", 0), sb = store(*b, "rv", 0);
  auto seq = sa->push("offer", {}, false);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(sb->push("second", {}, false).error(), Errc::again);  // rendezvous: one on offer
  EXPECT_EQ(sa->try_withdraw(*seq), Store::Withdrawn::taken_back);
  EXPECT_EQ(sa->stats().total_sent, 0u);
  EXPECT_GT(sa->consumed_seq(), *seq);
  seq = sa->push("offer2", {}, false);
  std::string out;
  ASSERT_TRUE(sb->pop(out).ok());
  EXPECT_EQ(sa->try_withdraw(*seq), Store::Withdrawn::received);
  EXPECT_GT(sa->consumed_seq(), *seq);
}

TEST_F(RedisStoreTest, AnotherDaemonsChangesAreNotified) {
  auto a = backend();
  RedisConfig cb = config(server_.url());
  cb.recheck = std::chrono::hours(1);  // no periodic re-check: only the notification can wake it
  auto b = testredis::backend(cb);
  ASSERT_TRUE(a && b);
  b->start();
  auto sa = store(*a, "w"), sb = store(*b, "w");
  auto l = std::make_shared<Listener>();
  sb->watch(kWatchReadable, l);
  ASSERT_TRUE(b->wait_subscriptions(1, 20s));  // readiness: the subscription holds (hang guard only)
  ASSERT_TRUE(b->subscribed());
  {
    std::lock_guard g(l->m);
    l->calls = 0;
  }
  (void)sb->take_kick();
  ASSERT_TRUE(sa->push("x", {}, false).ok());
  ASSERT_TRUE(l->wait_for(1));
  EXPECT_TRUE(sb->take_kick());
  sa->destroy(true);  // rm elsewhere: the watcher looks and finds it gone
  ASSERT_TRUE(l->wait_for(2));
  std::string out;
  EXPECT_EQ(sb->pop(out).error(), Errc::removed);
  EXPECT_EQ(sb->push("y", {}, false).error(), Errc::removed);
  sb->watch(0, {});
}

TEST_F(RedisStoreTest, BackAfterAnOutageTheSubscriptionReconnectsAndKicks) {
  auto b = backend();
  b->start();
  ASSERT_TRUE(b->wait_subscriptions(1, 20s));  // hang guard only
  auto sb = store(*b, "o");
  auto l = std::make_shared<Listener>();
  sb->watch(kWatchReadable, l);
  server_.stop();
  EXPECT_EQ(sb->push("lost", {}, false).error(), Errc::io);  // noticed: the connection backs off
  {
    std::lock_guard g(l->m);
    l->calls = 0;
  }
  ASSERT_TRUE(server_.start());
  // The subscriber reaches it again: the command connection is tried at
  // once (not after the backoff) and every watched store is kicked.
  ASSERT_TRUE(b->wait_subscriptions(2, 20s));
  EXPECT_TRUE(l->wait_for(1));
  EXPECT_TRUE(b->command({"PING"}).ok());
  sb->watch(0, {});
}

TEST_F(RedisStoreTest, ReshapeKeepsTheQueue) {
  auto a = backend(), b = backend();
  auto sa = store(*a, "r", 2), sb = store(*b, "r");
  ASSERT_TRUE(sa->push("1", {}, false).ok());
  ASSERT_TRUE(sa->push("2", {}, false).ok());
  Settings n;
  n.capacity = layout::kUnbounded;
  n.max_message = 100;
  uint64_t first = 99;
  EXPECT_EQ(sa->reshape(n, &first), Errc::ok);
  EXPECT_EQ(first, 0u);
  (void)sb->stats();  // the other daemon reads the new capacity with the counters
  EXPECT_EQ(sb->capacity(), layout::kUnbounded);
  for (int i = 0; i < 10; i++) ASSERT_TRUE(sb->push("more", {}, false).ok());
  std::string out;
  ASSERT_TRUE(sb->pop(out).ok());
  EXPECT_EQ(out, "1");
}

TEST_F(RedisStoreTest, ServerAwayIsEioAndStatsAsLastRead) {
  auto a = backend();
  auto s = store(*a, "away");
  ASSERT_TRUE(s->push("1", {}, false).ok());
  const QueueStats before = s->stats();
  server_.stop();
  EXPECT_EQ(s->push("2", {}, false).error(), Errc::io);
  std::string out;
  EXPECT_EQ(s->pop(out).error(), Errc::io);
  EXPECT_EQ(s->stats().total_sent, before.total_sent);
  EXPECT_EQ(s->try_withdraw(0), Store::Withdrawn::contended);
}

// Every setting is the mailbox's: saved through one daemon, another daemon's
// open gets it and an opened store reads it back; a priority is refused.
TEST_F(RedisStoreTest, SettingsAreSharedByEveryDaemon) {
  auto a = backend(), b = backend();
  ASSERT_TRUE(a && b);
  Settings sa;
  sa.framing = Framing::datagram;
  sa.timeout_ms = 250;
  auto on_a = a->open_store("7", &sa);
  ASSERT_TRUE(on_a.ok());
  Settings sb;  // b's defaults lose to the mailbox's
  auto on_b = b->open_store("7", &sb);
  ASSERT_TRUE(on_b.ok());
  EXPECT_EQ(sb.framing, Framing::datagram);
  EXPECT_EQ(sb.timeout_ms, 250u);
  Settings n = sa;
  n.framing = Framing::line;
  n.timeout_ms = 9;
  ASSERT_EQ((*on_a)->save_settings(n), Errc::ok);
  n.capacity = 3;
  n.max_message = 77;
  uint64_t first = 0;
  ASSERT_EQ((*on_a)->reshape(n, &first), Errc::ok);
  (*on_b)->load_settings(&sb);
  EXPECT_EQ(sb.framing, Framing::line);
  EXPECT_EQ(sb.timeout_ms, 9u);
  EXPECT_EQ(sb.capacity, 3u);
  EXPECT_EQ(sb.max_message, 77u);
  n.send_priority = 2;
  EXPECT_EQ((*on_b)->save_settings(n), Errc::not_supported);
}

class RedisLeaseTest : public testredis::ServerTest {
 protected:
  std::unique_ptr<Store> store(RedisBackend& b) { return testredis::store(b, "l", Settings{}); }
  // Daemons x_ (its lease renewed) and y_ on one mailbox: `sent` sent through
  // y_, the first `taken` of them received through x_ and never acknowledged
  // (x_ dies, or is thought dead, before its replies went).
  void x_took(std::initializer_list<const char*> sent, int taken) {
    x_ = backend();
    y_ = backend();
    ASSERT_TRUE(x_ && y_);
    ASSERT_EQ(x_->renew_lease(), Errc::ok);
    sx_ = store(*x_);
    sy_ = store(*y_);
    for (const char* m : sent) ASSERT_TRUE(sy_->push(m, {}, false).ok());
    std::string out;
    for (int i = 0; i < taken; i++) ASSERT_TRUE(sx_->pop(out).ok());
  }
  std::unique_ptr<RedisBackend> x_, y_;
  std::unique_ptr<Store> sx_, sy_;
};

TEST_F(RedisLeaseTest, ADeadDaemonsInFlightMessagesReturnToTheFrontOnce) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one", "two", "three"}, 2));  // x dies before its replies went
  std::string out;
  EXPECT_EQ(y_->recover().value(), 0u);  // x's lease holds
  // x stops renewing: its lease is made to have ended (no waiting in a test).
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 2u);
  EXPECT_EQ(y_->recover().value(), 0u);  // claimed once
  for (const char* m : {"one", "two", "three"}) {
    out.clear();
    auto p = sy_->pop(out);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(out, m);  // in their order, before the rest
    EXPECT_EQ(sy_->ack(p->seq), Errc::ok);
  }
  const QueueStats st = sy_->stats();
  EXPECT_EQ(st.total_received, 3u);
  EXPECT_EQ(st.total_sent, st.total_received + st.count + st.lost);
  EXPECT_EQ(y_->command({"HGET", "mbx:{t:l}:m", "returned"})->str, "2");
  EXPECT_EQ(st.returned, 2u);  // user.mailbox.returned
}

TEST_F(RedisLeaseTest, AReturnNeverStepsTheConsumedSeqBack) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one", "two", "three"}, 2));
  std::string out;
  EXPECT_EQ(sy_->consumed_seq(), 2u);  // seqs 0 and 1 were taken
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 2u);
  EXPECT_EQ(sy_->consumed_seq(), 2u);  // returned, but they had been received: it never steps back
  EXPECT_EQ(sy_->stats().count, 3u);
  for (uint64_t want : {2u, 2u, 3u}) {  // taking the returned ones again does not move it either
    out.clear();
    auto p = sy_->pop(out);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(sy_->consumed_seq(), want);
    EXPECT_EQ(sy_->ack(p->seq), Errc::ok);
  }
  // An interrupted reply's unpop leaves it too: a rendezvous sender may already have seen it taken.
  ASSERT_TRUE(sy_->push("four", {}, false).ok());
  auto p = sy_->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(sy_->consumed_seq(), 4u);
  EXPECT_EQ(sy_->unpop(p->seq), Errc::ok);
  EXPECT_EQ(sy_->consumed_seq(), 4u);
  EXPECT_EQ(sy_->stats().returned, 2u);
}

TEST_F(RedisLeaseTest, ADaemonThoughtDeadThatRenewsIsStillCovered) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one", "two"}, 1));
  std::string out;
  // x was only slow: its lease ends, y returns what it had in flight...
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 1u);
  // ...and x renews, registering its mailboxes again, then receives once more.
  ASSERT_EQ(x_->renew_lease(), Errc::ok);
  out.clear();
  auto p = sx_->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "one");
  // Now x dies for good: that record too goes back.
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 1u);
  EXPECT_EQ(sy_->stats().count, 2u);
  EXPECT_EQ(sy_->stats().returned, 2u);
}

// A daemon claimed as dead leaves the viewers sets of the mailboxes it had
// open (nobody publishes to it any more); one that was only slow joins
// them again when it renews, with its set of mailboxes.
TEST_F(RedisLeaseTest, AClaimedDaemonLeavesTheViewersAndARenewalJoinsThemAgain) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one"}, 0));
  struct Quiet : StoreListener {
    void service() override {}
  };
  auto l = std::make_shared<Quiet>();
  sx_->watch(kWatchReadable, l);
  const std::string viewers = "mbx:{t:l}:v";
  ASSERT_EQ(y_->command({"SISMEMBER", viewers, x_->daemon_id()})->integer, 1);
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 0u);
  EXPECT_EQ(y_->command({"SISMEMBER", viewers, x_->daemon_id()})->integer, 0);
  ASSERT_EQ(x_->renew_lease(), Errc::ok);
  EXPECT_EQ(x_->command({"SISMEMBER", viewers, x_->daemon_id()})->integer, 1);  // on x's connection: after its SADD
  // A recovery that was already under way returns x's mailboxes after that
  // renewal (kReturn takes x out again): x's next renewals join once more.
  ASSERT_TRUE(y_->return_in_flight(x_->daemon_id(), /*drop=*/false).ok());
  EXPECT_EQ(y_->command({"SISMEMBER", viewers, x_->daemon_id()})->integer, 0);
  ASSERT_EQ(x_->renew_lease(), Errc::ok);
  EXPECT_EQ(x_->command({"SISMEMBER", viewers, x_->daemon_id()})->integer, 1);  // on x's connection: after its SADD
  sx_->watch(0, l);
}

TEST_F(RedisLeaseTest, ACleanStopGivesBackWhatItHadInFlight) {
  auto y = backend();
  auto sy = store(*y);
  ASSERT_TRUE(sy->push("kept", {}, false).ok());
  {
    auto z = backend();
    z->start();
    auto sz = store(*z);
    std::string out;
    ASSERT_TRUE(sz->pop(out).ok());
    sz.reset();
  }  // z stops without having acknowledged it
  std::string out;
  ASSERT_TRUE(sy->pop(out).ok());
  EXPECT_EQ(out, "kept");
}

// Claimed as dead while it was only slow, x takes one more record and then
// dies before its next renewal: the claim stays, so a later recovery still
// returns that record; two leases after the claim, a recovery that finds
// nothing more drops the claim and x's set of mailboxes.
TEST_F(RedisLeaseTest, ADaemonThatTakesAfterItsClaimAndDiesIsStillRecovered) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one", "two", "three"}, 1));
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 1u);  // "one"
  std::string out;
  auto p = sx_->pop(out);  // x, slow and not renewed, takes "one" again, then dies
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "one");
  EXPECT_EQ(y_->recover().value(), 1u);
  EXPECT_EQ(y_->recover().value(), 0u);
  const std::string set = "mbx:{t}:inflight:" + x_->daemon_id();
  EXPECT_EQ(y_->command({"HEXISTS", "mbx:{t}:claimed", x_->daemon_id()})->integer, 1);  // under two leases
  EXPECT_EQ(y_->command({"EXISTS", set})->integer, 1);
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:claimed", x_->daemon_id(), "0"}).ok());  // claimed long ago
  EXPECT_EQ(y_->recover().value(), 0u);
  EXPECT_EQ(y_->command({"HEXISTS", "mbx:{t}:claimed", x_->daemon_id()})->integer, 0);
  EXPECT_EQ(y_->command({"EXISTS", set})->integer, 0);
  for (const char* m : {"one", "two", "three"}) {
    out.clear();
    auto q = sy_->pop(out);
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(out, m);
    EXPECT_EQ(sy_->ack(q->seq), Errc::ok);
  }
  EXPECT_EQ(sy_->stats().returned, 2u);
}

// A daemon claimed while it was stalled takes nothing more before it has
// renewed (its own clock says its lease ran out): so what it takes after is
// its own again, and no recovery returns it.
TEST_F(RedisLeaseTest, AStalledDaemonRenewsBeforeItTakesAgain) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one", "two"}, 1));
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 1u);  // "one", claimed while x was stalled
  x_->age_lease(std::chrono::seconds(10));
  std::string out;
  auto p = sx_->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "one");
  EXPECT_EQ(y_->command({"HEXISTS", "mbx:{t}:daemons", x_->daemon_id()})->integer, 1);  // renewed first
  EXPECT_EQ(y_->recover().value(), 0u);
  EXPECT_EQ(y_->command({"HEXISTS", "mbx:{t}:claimed", x_->daemon_id()})->integer, 0);
  EXPECT_EQ(sx_->ack(p->seq), Errc::ok);
  EXPECT_EQ(sy_->stats().returned, 1u);
}

// A daemon claimed while slow that renews leaves the claimed hash: nothing
// of its is returned any more, and its set stays.
TEST_F(RedisLeaseTest, AClaimedDaemonThatRenewsIsNoLongerRecovered) {
  ASSERT_NO_FATAL_FAILURE(x_took({"one", "two"}, 1));
  ASSERT_TRUE(y_->command({"HSET", "mbx:{t}:daemons", x_->daemon_id(), "0"}).ok());
  EXPECT_EQ(y_->recover().value(), 1u);
  ASSERT_EQ(x_->renew_lease(), Errc::ok);
  std::string out;
  auto p = sx_->pop(out);  // held by a live x: not to be returned
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(y_->recover().value(), 0u);
  EXPECT_EQ(y_->command({"HEXISTS", "mbx:{t}:claimed", x_->daemon_id()})->integer, 0);
  EXPECT_EQ(y_->command({"EXISTS", "mbx:{t}:inflight:" + x_->daemon_id()})->integer, 1);
  EXPECT_EQ(sx_->ack(p->seq), Errc::ok);
}
}  // namespace

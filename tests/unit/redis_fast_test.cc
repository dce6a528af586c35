// SPDX-License-Identifier: MIT
// Round trips per message on the Redis store (issue 16's bench target),
// counted with the server's own INFO commandstats, and the guarantees the
// shortcuts keep: a push that takes a record for waiting receives (of its
// own daemon, or handed to another daemon's), the counters every push/pop
// reply carries, the acknowledgement sent without waiting, and what a daemon
// that dies before its acknowledgements leaves. Each test starts its own
// redis-server on a unix socket in a temporary directory; a subscriber runs
// only where a test starts one (its re-check and lease renewal made once,
// before the counting), so nothing but the calls made here reaches it.
#include <gtest/gtest.h>

#include <charconv>
#include <condition_variable>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "../common/redis_server.h"
#include "core/redis_scripts.h"
#include "core/redis_store.h"
#include "redis/subscriber.h"
#include "mailbox/layout.h"

namespace {

namespace rs = mbx::redis_scripts;
using namespace mbx;

class RedisFast : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ready()) << "redis-server did not start (scripts/deps.sh test)"; }
  // `started`: with its subscriber, which re-checks and renews its lease
  // only once in the test's time (so that the counts are the calls' own).
  std::unique_ptr<RedisBackend> open(bool started = false) {
    RedisConfig c;
    if (started) c.recheck = c.lease = std::chrono::minutes(10);
    c.endpoint = redis::parse_url(server_.url()).value();
    c.ns = "t";
    auto b = RedisBackend::open(c);
    EXPECT_TRUE(b.ok());
    if (!b.ok()) return nullptr;
    if (started) {
      b.value()->start();
      EXPECT_TRUE(b.value()->wait_subscriptions(1, std::chrono::seconds(30)));
    }
    return std::move(b.value());
  }
  std::unique_ptr<Store> store(RedisBackend& b, uint64_t capacity = 64) {
    Settings s;
    s.capacity = capacity;
    auto st = b.open_store("m", &s);
    EXPECT_TRUE(st.ok());
    return st.ok() ? std::move(st.value()) : nullptr;
  }
  // Scripts loaded and connection made, before any counting: one message
  // sent, received and acknowledged through `s`.
  static void warm(Store& s) {
    ASSERT_TRUE(s.push("warm", {}, false).ok());
    std::string out;
    auto w = s.pop(out);
    ASSERT_TRUE(w.ok());
    ASSERT_EQ(s.ack(w->seq), Errc::ok);
  }
  // Calls of each command so far, by the server's count (a connection of its own).
  std::map<std::string, long> calls() {
    redis::Conn c(redis::parse_url(server_.url()).value(), redis::Options{});
    auto r = c.command({"INFO", "commandstats"});
    std::map<std::string, long> m;
    if (!r) return m;
    std::istringstream in(r->str);
    for (std::string l; std::getline(in, l);) {
      // cmdstat_evalsha:calls=3,usec=...
      if (!l.starts_with("cmdstat_")) continue;
      const size_t colon = l.find(':'), eq = l.find('=', colon), comma = l.find(',', eq);
      long n = 0;
      std::from_chars(l.data() + eq + 1, l.data() + comma, n);
      m[l.substr(8, colon - 8)] = n;
    }
    return m;
  }
  // Commands made since `before`, INFO and SCRIPT loads left out.
  std::map<std::string, long> since(const std::map<std::string, long>& before) {
    std::map<std::string, long> d;
    for (auto& [k, v] : calls())
      if (k != "info" && k != "script|load" && k != "script" && v != (before.count(k) ? before.at(k) : 0))
        d[k] = v - (before.count(k) ? before.at(k) : 0);
    return d;
  }
  testredis::Server server_;
};

using Counts = std::map<std::string, long>;

TEST_F(RedisFast, ASendIsOneScriptAndTellsWhetherItFilledTheMailbox) {
  auto a = open();
  auto s = store(*a, 2);
  ASSERT_TRUE(s->push("warm", {}, false).ok());  // scripts loaded, connection made
  std::string out;
  ASSERT_TRUE(s->pop(out).ok());
  const Counts before = calls();
  ASSERT_TRUE(s->push("one", {}, false).ok());
  EXPECT_FALSE(s->full_after_push());
  ASSERT_TRUE(s->push("two", {}, false).ok());
  EXPECT_TRUE(s->full_after_push());  // from the push's own reply
  const Counts d = since(before);
  EXPECT_EQ(d.at("evalsha"), 2);  // no stats script after either
  EXPECT_EQ(d.count("hdel") + d.count("lpop"), 0u);
}

TEST_F(RedisFast, AReceiveIsOneScriptAndItsAcknowledgementOneHdelNotWaitedFor) {
  auto a = open();
  auto s = store(*a);
  ASSERT_NO_FATAL_FAILURE(warm(*s));
  std::string out;
  ASSERT_TRUE(s->push("m", {}, false).ok());
  const Counts before = calls();
  out.clear();
  auto p = s->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "m");
  EXPECT_EQ(s->ack(p->seq), Errc::ok);
  // The next command on the connection reads the HDEL's reply first: the
  // record is gone by the time it answers.
  const std::string inflight = "mbx:{t:m}:f:" + a->daemon_id();
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 0);
  const Counts d = since(before);
  EXPECT_EQ(d.at("evalsha"), 1);
  EXPECT_EQ(d.at("hdel"), 1);
  const QueueStats st = s->stats();
  EXPECT_EQ(st.total_sent, 2u);
  EXPECT_EQ(st.total_received, 2u);
  EXPECT_EQ(st.count, 0u);
}

TEST_F(RedisFast, ASendToWaitingReceivesHandsTheOldestOverInTheSameScript) {
  auto a = open(), b = open();
  auto sa = store(*a), sb = store(*b);
  ASSERT_NO_FATAL_FAILURE(warm(*sa));
  std::string out;
  ASSERT_TRUE(sb->push("older", {}, false).ok());  // queued by another daemon first: FIFO holds
  const Counts before = calls();
  sa->receivers_waiting(true);
  ASSERT_TRUE(sa->push("newer", {}, false).ok());
  EXPECT_EQ(since(before).at("evalsha"), 1);
  // Already in this daemon's in-flight hash, counted received: the other
  // daemon cannot take it, and the pop needs no round trip.
  const std::string inflight = "mbx:{t:m}:f:" + a->daemon_id();
  EXPECT_EQ(b->command({"HLEN", inflight})->integer, 1);
  EXPECT_EQ(sb->stats().count, 1u);
  out.clear();
  const Counts mid = calls();
  auto p = sa->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "older");
  EXPECT_EQ(p->host.empty(), false);
  EXPECT_TRUE(since(mid).empty());
  EXPECT_EQ(sa->ack(p->seq), Errc::ok);
  sa->after_change(true, true);  // the hold ends: nothing to give back
  out.clear();
  ASSERT_TRUE(sb->pop(out).ok());
  EXPECT_EQ(out, "newer");
  const QueueStats st = sb->stats();
  EXPECT_EQ(st.total_sent, 3u);
  EXPECT_EQ(st.total_received, 3u);
  EXPECT_EQ(st.consumed_seq, 3u);
}

TEST_F(RedisFast, ARecordTakenForAReceiveThatLeftGoesBackToTheFront) {
  auto a = open();
  auto s = store(*a);
  ASSERT_TRUE(s->push("first", {}, false).ok());
  s->receivers_waiting(true);
  ASSERT_TRUE(s->push("second", {}, false).ok());  // takes "first" for the receive
  EXPECT_EQ(s->stats().count, 1u);
  s->after_change(true, false);  // no receive took it (it was interrupted meanwhile)
  const QueueStats st = s->stats();
  EXPECT_EQ(st.count, 2u);
  EXPECT_EQ(st.total_received, 0u);
  EXPECT_EQ(a->command({"HLEN", "mbx:{t:m}:f:" + a->daemon_id()})->integer, 0);
  std::string out;
  ASSERT_TRUE(s->pop(out).ok());
  EXPECT_EQ(out, "first");  // in order
}

// A receive on its way to the mailbox lock (Mailbox::read counts it) is
// waited for too: the push takes the oldest record for it, and the end of
// the sender's hold keeps that record while receives are still coming
// (reads_arriving said again before after_change); the receive then
// answers it without a round trip. A hold that ends with none coming puts
// it back.
TEST_F(RedisFast, ARecordTakenForAReceiveOnItsWayStaysUntilItComes) {
  auto a = open();
  auto s = store(*a);
  ASSERT_NO_FATAL_FAILURE(warm(*s));
  std::string out;
  ASSERT_TRUE(s->push("first", {}, false).ok());
  EXPECT_FALSE(s->answers_here());
  s->reads_arriving(true);                         // a receive is on its way
  ASSERT_TRUE(s->push("second", {}, false).ok());  // takes "first" for it
  EXPECT_TRUE(s->answers_here());
  s->reads_arriving(true);  // still on its way as the sender's hold ends
  s->after_change(true, false);
  const std::string inflight = "mbx:{t:m}:f:" + a->daemon_id();
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 1);  // kept for it
  const Counts before = calls();
  out.clear();
  auto p = s->pop(out);  // the receive's hold
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "first");
  EXPECT_TRUE(since(before).empty());  // no round trip
  EXPECT_FALSE(s->answers_here());
  EXPECT_EQ(s->ack(p->seq), Errc::ok);
  s->after_change(false, true);
  // Taken for a receive that never came: the next hold with none coming puts it back.
  s->reads_arriving(true);
  ASSERT_TRUE(s->push("third", {}, false).ok());  // takes "second"
  s->reads_arriving(true);
  s->after_change(true, false);
  s->after_change(false, false);  // another hold, none coming
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 0);
  const QueueStats st = s->stats();
  EXPECT_EQ(st.count, 2u);
  out.clear();
  ASSERT_TRUE(s->pop(out).ok());
  EXPECT_EQ(out, "second");  // in order
}

// In a rendezvous mailbox a take counts as received and would end the
// sender's wait, so a push takes nothing for a read that is only on its way,
// even when this daemon still knows the mailbox as a buffered one (another
// daemon made it capacity 0 since): the script checks the capacity.
TEST_F(RedisFast, ARendezvousMailboxTakesNothingForAReadOnItsWay) {
  auto a = open(), b = open();
  auto sa = store(*a, 4), sb = store(*b, 4);
  ASSERT_NO_FATAL_FAILURE(warm(*sa));
  std::string out;
  Settings zero;
  zero.capacity = 0;
  uint64_t first = 0;
  ASSERT_EQ(sb->reshape(zero, &first), Errc::ok);
  EXPECT_EQ(sa->capacity(), 4u);  // as a last knew it
  sa->reads_arriving(true);
  auto r = sa->push("offered", {}, false);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(sa->answers_here());
  EXPECT_EQ(a->command({"HLEN", "mbx:{t:m}:f:" + a->daemon_id()})->integer, 0);
  EXPECT_EQ(sa->consumed_seq(), *r);  // not received: the sender still waits
  EXPECT_EQ(sa->stats().count, 1u);
}

// A store let go (the mailbox renamed away through another daemon, say)
// while it held a record taken for a read on its way puts it back: it is
// not left in this daemon's in-flight hash, where no reader would get it.
TEST_F(RedisFast, AStoreLetGoGivesBackWhatItTookForAReadOnItsWay) {
  auto a = open(), b = open();
  auto sb = store(*b);
  ASSERT_TRUE(sb->push("one", {}, false).ok());
  {
    auto sa = store(*a);
    sa->reads_arriving(true);
    ASSERT_TRUE(sa->push("two", {}, false).ok());  // takes "one"
    ASSERT_TRUE(sa->answers_here());
    EXPECT_EQ(sb->stats().count, 1u);
  }  // let go
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:f:" + a->daemon_id()})->integer, 0);
  EXPECT_EQ(sb->stats().count, 2u);
  std::string out;
  ASSERT_TRUE(sb->pop(out).ok());
  EXPECT_EQ(out, "one");  // back at the front
}

TEST_F(RedisFast, ADaemonThatDiesBeforeItsAcknowledgementIsCountedAsAReturn) {
  auto y = open();
  auto sy = store(*y);
  for (const char* m : {"acked", "unacked"}) ASSERT_TRUE(sy->push(m, {}, false).ok());
  {
    auto x = open();  // never started: destroying it is a death, not a clean stop
    ASSERT_EQ(x->renew_lease(), Errc::ok);
    auto sx = store(*x);
    std::string out;
    auto p1 = sx->pop(out);
    auto p2 = sx->pop(out);
    ASSERT_TRUE(p1.ok() && p2.ok());
    EXPECT_EQ(sx->ack(p1->seq), Errc::ok);  // written, its reply never read: x dies now
    ASSERT_TRUE(y->command({"HSET", "mbx:{t}:daemons", x->daemon_id(), "0"}).ok());  // its lease ended
  }
  EXPECT_EQ(y->recover().value(), 1u);  // the acknowledged one stays received
  std::string out;
  auto p = sy->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "unacked");
  EXPECT_EQ(sy->ack(p->seq), Errc::ok);
  const QueueStats st = sy->stats();
  EXPECT_EQ(st.returned, 1u);  // duplicates <= returned
  EXPECT_EQ(st.total_received, 2u);
  EXPECT_EQ(st.total_sent, st.total_received + st.count + st.lost);
  EXPECT_EQ(sy->pop(out).error(), Errc::again);
}

// Counts the services a store's notifications ask for.
struct Serviced : StoreListener {
  void service() override {
    std::lock_guard g(mu);
    n++;
    cv.notify_all();
  }
  bool wait(int k) {  // hang guard only
    std::unique_lock g(mu);
    return cv.wait_for(g, std::chrono::seconds(30), [&] { return n >= k; });
  }
  // Until `ready` holds, checked after each service (events heard of before
  // the one awaited service too); false after 30 s without a service.
  template <class F>
  bool wait_until(F ready) {
    for (int k = 1; !ready(); k++)
      if (!wait(k)) return false;
    return true;
  }
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;
};

// Events are for other daemons: a push or pop that no other daemon watches
// publishes nothing (the one-daemon path wakes no subscriber thread per
// message). Once a store of daemon b watches the mailbox, b is among its
// viewers and a's pushes and pops publish, and b hears them; when b's last
// store of it closes, b leaves and a publishes nothing again.
TEST_F(RedisFast, ASendOrReceiveNoOtherDaemonWatchesPublishesNothing) {
  auto a = open(), b = open(/*started=*/true);
  auto sa = store(*a);
  ASSERT_NO_FATAL_FAILURE(warm(*sa));
  std::string out;
  auto round = [&] {
    ASSERT_TRUE(sa->push("m", {}, false).ok());
    std::string o;
    auto p = sa->pop(o);
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(sa->ack(p->seq), Errc::ok);
  };
  Counts before = calls();
  for (int i = 0; i < 10; i++) ASSERT_NO_FATAL_FAILURE(round());
  EXPECT_EQ(since(before).count("publish"), 0u);
  // A watch of its own daemon does not count either.
  auto own = std::make_shared<Serviced>();
  sa->watch(kWatchReadable, own);
  before = calls();
  ASSERT_NO_FATAL_FAILURE(round());
  EXPECT_EQ(since(before).count("publish"), 0u);
  sa->watch(0, own);
  // b watches: it joins the viewers in that call (before its re-check).
  auto sb = store(*b);
  auto l = std::make_shared<Serviced>();
  sb->watch(kWatchReadable | kWatchWritable, l);
  EXPECT_EQ(a->command({"SISMEMBER", "mbx:{t:m}:v", b->daemon_id()})->integer, 1);
  before = calls();
  ASSERT_NO_FATAL_FAILURE(round());
  EXPECT_EQ(since(before).at("publish"), 2);  // the push's and the pop's
  ASSERT_TRUE(l->wait(1)) << "b was not told";
  // It stays a viewer while its store is open, watching or not (a round
  // trip once per store, not per park).
  sb->watch(0, l);
  sb->watch(kWatchReadable, l);
  before = calls();
  sb->watch(kWatchWritable, l);
  EXPECT_TRUE(since(before).empty());
  sb.reset();  // b's last store of m closes: b leaves (an SREM not waited for)
  EXPECT_EQ(b->command({"SISMEMBER", "mbx:{t:m}:v", b->daemon_id()})->integer, 0);
  before = calls();
  ASSERT_NO_FATAL_FAILURE(round());
  EXPECT_EQ(since(before).count("publish"), 0u);
}

// A receive parked on daemon b, a send through daemon a: the push moves the
// record into b's hand-offs and its event carries it, so b answers the
// receive without another script: two scripts and one HDEL per message (the
// pop that found the mailbox empty, the push), not three and one.
TEST_F(RedisFast, ASendThroughAnotherDaemonHandsTheRecordToItsParkedReceive) {
  auto a = open(), b = open(/*started=*/true);
  auto sa = store(*a), sb = store(*b);
  ASSERT_TRUE(sa->push("warm", {}, false).ok());  // scripts loaded, connections made
  std::string out;
  auto w = sb->pop(out);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(sb->ack(w->seq), Errc::ok);
  auto l = std::make_shared<Serviced>();
  sb->watch(kWatchReadable | kWatchParkedReceivers, l);
  const Counts before = calls();
  sb->receivers_parked(1);  // a receive about to park if this look finds nothing
  out.clear();
  EXPECT_EQ(sb->pop(out).error(), Errc::again);
  sb->after_change(false, false);  // the hold ends: its entry is already there
  EXPECT_EQ(a->command({"HGET", "mbx:{t:m}:w", b->daemon_id()})->str, "1");
  ASSERT_TRUE(sa->push("handed", {}, false).ok());
  EXPECT_EQ(a->command({"HEXISTS", "mbx:{t:m}:w", b->daemon_id()})->integer, 0);  // used
  // b heard of it (services for the warm-up's events may come first)
  ASSERT_TRUE(l->wait_until([&] { return static_cast<RedisStore&>(*sb).handed_held() > 0; }));
  ASSERT_TRUE(sb->take_kick());
  const Counts mid = calls();
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "handed");
  EXPECT_FALSE(p->host.empty());
  EXPECT_TRUE(since(mid).empty());  // answered from the event
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  sb->receivers_parked(0);
  sb->after_change(false, true);                               // nothing left to tell the server
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:x"})->integer, 0);  // acknowledged (read after the HDEL)
  const Counts d = since(before);
  EXPECT_EQ(d.at("evalsha"), 2);
  EXPECT_GE(d.at("hdel"), 1);
  const QueueStats st = sa->stats();
  EXPECT_EQ(st.total_sent, 2u);
  EXPECT_EQ(st.total_received, 2u);
  EXPECT_EQ(st.consumed_seq, 2u);
  EXPECT_EQ(st.count, 0u);
}

// A record too long for its event to carry: the event only wakes the
// parked receive, whose pop fetches the hand-off (one script, no message lost).
TEST_F(RedisFast, AHandOffTooLongForItsEventIsFetchedByThePop) {
  auto a = open(), b = open(/*started=*/true);
  auto sa = store(*a), sb = store(*b);
  auto l = std::make_shared<Serviced>();
  sb->watch(kWatchReadable | kWatchParkedReceivers, l);
  sb->receivers_parked(1);
  std::string out;
  EXPECT_EQ(sb->pop(out).error(), Errc::again);
  const std::string big(20000, 'x');
  ASSERT_TRUE(sa->push(big, {}, false).ok());
  ASSERT_TRUE(l->wait(1));
  const Counts mid = calls();
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, big);
  EXPECT_EQ(since(mid).at("evalsha"), 1);
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  sb->receivers_parked(0);
  sb->after_change(false, true);
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:x"})->integer, 0);
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:w"})->integer, 0);
  EXPECT_EQ(sa->stats().total_received, 1u);
}

// Two hand-offs to daemon b, the first one's event lost (b was not
// listening yet) and the second's heard: b's pops answer both, the second
// from its event and the first fetched from the hand-offs hash, which a
// watermark of the highest hid heard would have skipped (it stayed there
// until b's receives all left).
TEST_F(RedisFast, AHandOffWhoseEventWasLostIsFetchedAfterALaterOneWasHeard) {
  auto a = open(), b = open();  // b starts listening only after both hand-offs
  auto sa = store(*a), sb = store(*b);
  sb->receivers_parked(2);
  std::string out;
  EXPECT_EQ(sb->pop(out).error(), Errc::again);  // registers both receives about to park
  sb->after_change(false, false);
  ASSERT_TRUE(sa->push("first", {}, false).ok());
  ASSERT_TRUE(sa->push("second", {}, false).ok());
  auto x = a->command({"HGETALL", "mbx:{t:m}:x"});
  ASSERT_TRUE(x.ok());
  ASSERT_EQ(x->elements.size(), 4u);  // both handed to b
  b->start();
  ASSERT_TRUE(b->wait_subscriptions(1, std::chrono::seconds(30)));
  auto l = std::make_shared<Serviced>();
  sb->watch(kWatchReadable | kWatchParkedReceivers, l);
  // The second hand-off's event, as the push published it.
  for (size_t i = 0; i < x->elements.size(); i += 2) {
    const std::string& field = x->elements[i].str;  // <daemon>|<seq>
    const std::string& v = x->elements[i + 1].str;  // <hid> <record>
    if (!v.starts_with("2 ")) continue;
    const std::string ev = "h " + a->daemon_id() + " m " + b->daemon_id() + " 2 " + field.substr(field.find('|') + 1) +
                           "\n" + v.substr(2);
    ASSERT_TRUE(a->command({"PUBLISH", a->channel(), ev}).ok());
  }
  ASSERT_TRUE(l->wait_until([&] { return static_cast<RedisStore&>(*sb).handed_held() > 0; }));
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "second");  // from its event
  out.clear();
  auto q = sb->pop(out);
  ASSERT_TRUE(q.ok()) << "the hand-off whose event was lost was left in the hand-offs hash";
  EXPECT_EQ(out, "first");
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  EXPECT_EQ(sb->ack(q->seq), Errc::ok);
  sb->receivers_parked(0);
  sb->after_change(false, true);
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:x"})->integer, 0);
  const QueueStats st = sa->stats();
  EXPECT_EQ(st.total_received, 2u);
  EXPECT_EQ(st.count, 0u);
}

// A capacity-0 mailbox takes a message at once when a receive is parked on
// another daemon; a receive that leaves before its daemon heard of the
// hand-off puts the record back at the front (as an interrupted reply does).
TEST_F(RedisFast, ARendezvousPushHandsOffAndAReceiveThatLeftGivesItBack) {
  auto a = open(), b = open();  // b hears no events: its pop fetches what was handed to it
  auto sa = store(*a, 0), sb = store(*b, 0);
  std::string out;
  EXPECT_EQ(sa->push("nobody", {}, false).ok(), true);  // the one offer a rendezvous mailbox holds
  EXPECT_EQ(sa->push("full", {}, false).error(), Errc::again);
  ASSERT_EQ(sa->try_withdraw(0), Store::Withdrawn::taken_back);
  sb->receivers_parked(1);
  EXPECT_EQ(sb->pop(out).error(), Errc::again);
  auto s1 = sa->push("first", {}, false);
  ASSERT_TRUE(s1.ok());
  EXPECT_GT(sa->consumed_seq(), *s1);                   // received as it was sent
  EXPECT_EQ(sa->push("second", {}, false).ok(), true);  // no receive waits: the offer
  EXPECT_EQ(sa->try_withdraw(*s1 + 1), Store::Withdrawn::taken_back);
  // b's receive is still parked: its next look answers the hand-off.
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "first");
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  // Parked again, then gone before it heard of the next hand-off.
  sb->receivers_parked(1);
  out.clear();
  EXPECT_EQ(sb->pop(out).error(), Errc::again);
  auto s3 = sa->push("third", {}, false);
  ASSERT_TRUE(s3.ok());
  EXPECT_GT(sa->consumed_seq(), *s3);
  sb->receivers_parked(0);
  sb->after_change(false, false);
  EXPECT_EQ(a->command({"HLEN", "mbx:{t:m}:x"})->integer, 0);
  EXPECT_EQ(a->command({"HLEN", "mbx:{t:m}:w"})->integer, 0);
  EXPECT_EQ(sa->stats().count, 1u);  // at the front, for the next receive
  out.clear();
  auto q = sa->pop(out);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(out, "third");
  EXPECT_EQ(sa->ack(q->seq), Errc::ok);
  const QueueStats st = sa->stats();
  EXPECT_EQ(st.total_received, 2u);
  EXPECT_EQ(st.total_sent, 2u);
}

// A daemon that dies with a record handed to its parked receive: the lease
// recovery returns it to the front, counted, and drops the daemon's entry.
TEST_F(RedisFast, ARecordHandedToADaemonThatDiesIsReturned) {
  auto y = open();
  auto sy = store(*y, 0);
  {
    auto x = open();  // never started: destroying it is a death, not a clean stop
    ASSERT_EQ(x->renew_lease(), Errc::ok);
    auto sx = store(*x, 0);
    sx->receivers_parked(1);
    std::string out;
    EXPECT_EQ(sx->pop(out).error(), Errc::again);
    auto s = sy->push("handed", {}, false);
    ASSERT_TRUE(s.ok());
    EXPECT_GT(sy->consumed_seq(), *s);
    EXPECT_EQ(y->command({"HLEN", "mbx:{t:m}:x"})->integer, 1);
    ASSERT_TRUE(y->command({"HSET", "mbx:{t}:daemons", x->daemon_id(), "0"}).ok());  // its lease ended
  }
  EXPECT_EQ(y->recover().value(), 1u);
  EXPECT_EQ(y->command({"HLEN", "mbx:{t:m}:x"})->integer, 0);
  EXPECT_EQ(y->command({"HLEN", "mbx:{t:m}:w"})->integer, 0);
  std::string out;
  auto p = sy->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "handed");
  EXPECT_EQ(sy->ack(p->seq), Errc::ok);
  const QueueStats st = sy->stats();
  EXPECT_EQ(st.returned, 1u);
  EXPECT_EQ(st.total_received, 1u);
  EXPECT_EQ(st.total_sent, 1u);
}

// The namespace's events as published, heard through a subscriber of the
// test's own: a test waits for the event a step publishes (its readiness
// signal), with a hang guard only.
class Events {
 public:
  explicit Events(const std::string& url)
      // No keep-alive in the test's time: the tests stop the server, and
      // a subscription made again would miss the events they wait for.
      : sub_(
            redis::parse_url(url).value(), "mbx:t:ev", std::chrono::minutes(10), std::chrono::minutes(10),
            [this](std::string_view ev) {
              std::lock_guard g(mu_);
              seen_.emplace_back(ev);
              cv_.notify_all();
            },
            [](bool) {}) {}
  bool subscribed() { return sub_.wait_subscriptions(1, std::chrono::seconds(30)); }
  // Joins mailbox `rid`'s viewers, as another daemon watching it would: the
  // pushes and pops of the daemons then publish their events (announce).
  static bool view(RedisBackend& b, const std::string& rid) {
    auto r = b.command({"SADD", "mbx:{t:" + rid + "}:v", "events-listener"});
    return r.ok() && r->integer == 1;
  }
  // Waits for an event equal to `ev` heard after the last one waited for.
  bool wait_for(const std::string& ev) {
    std::unique_lock g(mu_);
    return cv_.wait_for(g, std::chrono::seconds(30), [&] {
      for (; next_ < seen_.size(); next_++)
        if (seen_[next_] == ev) return ++next_, true;
      return false;
    });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> seen_;
  size_t next_ = 0;
  redis::Subscriber sub_;  // last: stopped first
};

// A receive whose reply never came (here: the server stopped past the
// command timeout) may still have run once the server went on: the record
// it took waits in this daemon's in-flight hash for no reader. The next
// receive puts it back first and gets it (kLost), so it is not held until
// the daemon stops.
TEST_F(RedisFast, AReceiveWhoseReplyNeverCameLeavesItsMessageForTheNextOne) {
  auto a = open();
  auto s = store(*a);
  Events events(server_.url());
  ASSERT_TRUE(events.subscribed());
  ASSERT_TRUE(Events::view(*a, "m"));
  std::string out;
  ASSERT_EQ(s->pop(out).error(), Errc::again);  // the pop script loaded: what is lost is the pop itself
  ASSERT_TRUE(s->push("kept", {}, false).ok());
  ASSERT_EQ(::kill(server_.pid(), SIGSTOP), 0);
  auto lost = s->pop(out);  // the command timeout (1 s): no reply
  ASSERT_EQ(::kill(server_.pid(), SIGCONT), 0);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error(), Errc::io);
  // The server runs the pop it had read (it publishes): the record is in flight here.
  ASSERT_TRUE(events.wait_for("r " + a->daemon_id() + " m")) << "the server never ran the lost pop";
  const std::string inflight = "mbx:{t:m}:f:" + a->daemon_id();
  ASSERT_EQ(a->reconnect(), Errc::ok);  // not waiting out the backoff after the timeout
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 1);
  auto p = s->pop(out);
  ASSERT_TRUE(p.ok()) << "the message stayed in flight";
  EXPECT_EQ(out, "kept");
  EXPECT_EQ(s->ack(p->seq), Errc::ok);
  EXPECT_EQ(a->command({"HLEN", inflight})->integer, 0);  // on the ack's connection: read after it
  out.clear();
  EXPECT_EQ(s->pop(out).error(), Errc::again);  // once, not twice
  const QueueStats st = s->stats();
  EXPECT_EQ(st.total_received, 1u);
  EXPECT_EQ(st.returned, 0u);
}

// The same, with no receive after it: the daemon's periodic tick puts the
// record back (its event says so), and a receive through another daemon gets it.
TEST_F(RedisFast, AReceiveWhoseReplyNeverCameIsPutBackByItsDaemonWithNoReceiveAfter) {
  RedisConfig cfg;
  cfg.endpoint = redis::parse_url(server_.url()).value();
  cfg.ns = "t";
  auto a = RedisBackend::open(cfg);
  ASSERT_TRUE(a.ok());
  (*a)->start();  // the re-check every 200 ms runs the reclaim
  ASSERT_TRUE((*a)->wait_subscriptions(1, std::chrono::seconds(30)));
  auto s = store(**a);
  auto b = open();
  auto sb = store(*b);
  Events events(server_.url());
  ASSERT_TRUE(events.subscribed());
  ASSERT_TRUE(Events::view(*b, "m"));
  std::string out;
  ASSERT_EQ(s->pop(out).error(), Errc::again);  // the pop script loaded
  ASSERT_TRUE(sb->push("kept", {}, false).ok());
  ASSERT_EQ(::kill(server_.pid(), SIGSTOP), 0);
  auto lost = s->pop(out);  // the command timeout (1 s): no reply
  ASSERT_EQ(::kill(server_.pid(), SIGCONT), 0);
  ASSERT_FALSE(lost.ok());
  const std::string me = (*a)->daemon_id();
  ASSERT_TRUE(events.wait_for("r " + me + " m")) << "the server never ran the lost pop";
  ASSERT_TRUE(events.wait_for("p " + me + " m")) << "the message stayed in flight on the first daemon";
  out.clear();
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "kept");
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:f:" + me})->integer, 0);
  EXPECT_EQ(b->command({"HLEN", "mbx:{t:m}:t:" + me})->integer, 0);  // its token went with it
  out.clear();
  EXPECT_EQ(sb->pop(out).error(), Errc::again);
  EXPECT_EQ(sb->stats().total_received, 1u);
}


// The other order: the put-back (kLost) runs before the server has run the
// call whose reply never came (it may still wait in the server's input, from
// the connection the client dropped). That call is then marked given up:
// when the server runs it, it takes nothing, so no record is left in flight
// for a reader that is gone. Here the late calls are the scripts themselves,
// run with the lost call's field and token, as the server would run them.
TEST_F(RedisFast, ACallGivenUpBeforeTheServerRanItTakesNothingWhenItRuns) {
  auto a = open();
  auto s = store(*a);
  ASSERT_TRUE(s->push("kept", {}, false).ok());
  const std::string tag = "mbx:{t:m}:", me = a->daemon_id(), ev = a->event('r', "m"), now = "1";
  const std::vector<std::string> names{tag + "m",      tag + "q",      tag + "f:" + me, tag + "x",
                                       tag + "w",      tag + "t:" + me, tag + "v"};
  const std::vector<std::string_view> keys(names.begin(), names.end());
  const std::string chan = a->channel(), pev = a->event('p', "m"), hev = a->event('h', "m");
  // A pop (field "late", token 7) and a push taking for a receive (token 8), both given up.
  ASSERT_EQ(a->reclaim("m", "late", 7), Errc::ok);
  ASSERT_EQ(a->reclaim("m", "late", 8), Errc::ok);
  auto pop = a->eval(rs::kPop, keys, {now, chan, ev, me, "0", "late", "7"});
  ASSERT_TRUE(pop.ok());
  ASSERT_FALSE(pop->elements.empty());
  EXPECT_EQ(pop->elements[0].str, "LOST");
  auto push = a->eval(rs::kPush, keys,
                      {"late push", "pid=1 uid=0 gid=0 host=h", now, "0", chan, pev, "1", me, "16384", hev, "late", "8"});
  ASSERT_TRUE(push.ok());
  ASSERT_FALSE(push->elements.empty());
  EXPECT_EQ(push->elements[0].str, "LOST");
  EXPECT_EQ(a->command({"HLEN", tag + "f:" + me})->integer, 0);  // nothing in flight
  EXPECT_EQ(a->command({"HLEN", tag + "t:" + me})->integer, 0);  // the marks went with their calls
  // A later call of the same field, with its own token, takes as usual.
  auto again = a->eval(rs::kPop, keys, {now, chan, ev, me, "0", "late", "9"});
  ASSERT_TRUE(again.ok());
  ASSERT_FALSE(again->elements.empty());
  EXPECT_EQ(again->elements[0].str, "OK");
  EXPECT_EQ(a->command({"HLEN", tag + "f:" + me})->integer, 1);
  ASSERT_EQ(a->reclaim("m", "late", 9), Errc::ok);  // and the put-back of one that ran returns its record
  std::string out;
  auto p = s->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "kept");
  EXPECT_EQ(s->ack(p->seq), Errc::ok);
  EXPECT_EQ(s->stats().count, 0u);  // the given-up push sent nothing
}

}  // namespace

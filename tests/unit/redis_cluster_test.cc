// SPDX-License-Identifier: MIT
// Redis Cluster support: the slot function against the values Redis
// documents, the key layout and scripts staying in one slot, and the client
// (routing, MOVED, ASK) and the store against a real three-master cluster
// on 127.0.0.1 that the suite's tests share, each getting it emptied
// (tests/common/redis_cluster.h).
#include "../common/redis_cluster.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <thread>

#include "../common/redis_backend.h"
#include "core/redis_scripts.h"
#include "core/redis_store.h"
#include "redis/client.h"
#include "redis/slot.h"
#include "test_util.h"

namespace {
using namespace mbx;
using namespace std::chrono_literals;

TEST(RedisSlot, Crc16IsTheOneRedisDocuments) {
  EXPECT_EQ(redis::crc16("123456789"), 0x31C3);  // the cluster spec's check value
  EXPECT_EQ(redis::crc16(""), 0);
}

TEST(RedisSlot, HashTagRules) {
  // The cluster spec's examples.
  EXPECT_EQ(redis::hash_tag("{user1000}.following"), "user1000");
  EXPECT_EQ(redis::key_slot("{user1000}.following"), redis::key_slot("{user1000}.followers"));
  EXPECT_EQ(redis::hash_tag("foo{}{bar}"), "foo{}{bar}");  // an empty tag: the whole key
  EXPECT_EQ(redis::hash_tag("foo{{bar}}zap"), "{bar");
  EXPECT_EQ(redis::hash_tag("foo{bar}{zap}"), "bar");
  EXPECT_EQ(redis::hash_tag("foo{bar"), "foo{bar");  // no '}'
  EXPECT_EQ(redis::hash_tag("plain"), "plain");
  EXPECT_EQ(redis::key_slot("{bar}x"), redis::key_slot("bar"));
  // Slots redis-cli -c names when redirecting.
  EXPECT_EQ(redis::key_slot("foo"), 12182);
  EXPECT_EQ(redis::key_slot("bar"), 5061);
  EXPECT_EQ(redis::key_slot("hello"), 866);
  for (const char* k : {"a", "mbx:{t:1}:m", "\xff\xfe", "{", "}{"}) {
    EXPECT_GE(redis::key_slot(k), 0);
    EXPECT_LT(redis::key_slot(k), redis::kSlots);
  }
}

TEST(RedisSlot, EachMailboxsKeysShareOneSlotAndTheCatalogsAnother) {
  // The layout of docs/design.md §14 (core/redis_store.cc, redis_catalog.cc).
  const int box = redis::key_slot("mbx:{ns:17}:m");
  EXPECT_EQ(redis::key_slot("mbx:{ns:17}:q"), box);
  EXPECT_EQ(redis::key_slot("mbx:{ns:17}:f:host:123:456"), box);
  const int names = redis::key_slot("mbx:{ns}:tree");
  for (const char* k : {"mbx:{ns}:rid", "mbx:{ns}:daemons", "mbx:{ns}:inflight:host:1:2"})
    EXPECT_EQ(redis::key_slot(k), names) << k;
  std::set<int> slots;  // mailboxes spread: 64 ids fall in many slots
  for (int rid = 1; rid <= 64; rid++) slots.insert(redis::key_slot("mbx:{ns:" + std::to_string(rid) + "}:m"));
  EXPECT_GT(slots.size(), 60u);
}

// A script may touch only the keys it is given (KEYS, one slot by the
// client's check): a key named from ARGV would escape the check.
TEST(RedisScripts, TouchOnlyTheKeysTheyAreGiven) {
  namespace rs = redis_scripts;
  const std::regex call(R"(redis\.call\('(\w+)'(?:,\s*([^,)]+))?)");
  for (const redis::Script* s :
       {&rs::kInit, &rs::kPush, &rs::kPop, &rs::kUnpop, &rs::kWithdraw, &rs::kPeek, &rs::kStats, &rs::kMaxLen,
        &rs::kReshape, &rs::kDestroy, &rs::kRenew, &rs::kClaimDead, &rs::kReturn, &rs::kLost, &rs::kWaiters,
        &rs::kClaimed, &rs::kDropSet}) {
    const std::string text(s->text);
    int calls = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), call); it != std::sregex_iterator(); ++it) {
      calls++;
      const std::string cmd = (*it)[1], first = (*it)[2];
      if (cmd == "PUBLISH" || cmd == "TIME") continue;  // no key
      EXPECT_TRUE(first.starts_with("KEYS[")) << s->name << ": " << it->str();
    }
    EXPECT_GT(calls, 0) << s->name;
  }
}

TEST(RedisClient, ScriptKeysOfTwoSlotsAreRefusedOnASingleServerToo) {
  testredis::Server server;
  ASSERT_TRUE(server.ready()) << "redis-server did not start (scripts/deps.sh test)";
  redis::Client c(testredis::endpoint(server.url()), redis::Options{});
  const redis::Script s{"t", "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[2]) or 'none'"};
  auto same = c.eval(s, {"a{1}", "b{1}"}, {"x"});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->str, "none");
  EXPECT_FALSE(c.cluster());
  auto cross = c.eval(s, {"a{1}", "b{2}"}, {"x"});
  ASSERT_TRUE(cross.ok());
  EXPECT_TRUE(cross->is_error());
  EXPECT_TRUE(cross->str.starts_with("CROSSSLOT")) << cross->str;
  EXPECT_EQ(c.command({"EXISTS", "b{2}"})->integer, 0);  // nothing ran
}

class RedisCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { testredis::Cluster::share(true); }
  static void TearDownTestSuite() { testredis::Cluster::share(false); }
  void SetUp() override {
    if (!cluster_.skip_reason().empty()) GTEST_SKIP() << cluster_.skip_reason();
    ASSERT_TRUE(cluster_.ready()) << cluster_.error();
  }
  redis::Endpoint endpoint(size_t i) const { return testredis::endpoint(cluster_.url(i)); }
  // The index of the node whose port is in `addr` ("host:port").
  size_t index_of(const std::string& addr) const {
    for (size_t i = 0; i < cluster_.size(); i++)
      if (addr.ends_with(":" + std::to_string(cluster_.port(i)))) return i;
    ADD_FAILURE() << "not a node of the cluster: " << addr;
    return 0;
  }
  void subscription_moves_when_node0_gets(int sig);
  testredis::Cluster cluster_;
};

TEST_F(RedisCluster, SlotsAgreeWithTheServers) {
  redis::Client c(endpoint(0), redis::Options{});
  std::vector<std::string> keys{"foo",        "bar",           "hello",       "123456789",   "{user1000}.following",
                                "foo{}{bar}", "foo{{bar}}zap", "mbx:{t:1}:m", "mbx:{t}:tree"};
  for (int i = 0; i < 40; i++) keys.push_back("k" + std::to_string(i * 7919));
  for (const auto& k : keys) {
    auto r = c.command({"CLUSTER", "KEYSLOT", k});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->integer, redis::key_slot(k)) << k;
  }
  EXPECT_TRUE(c.cluster());
}

TEST_F(RedisCluster, CommandsAndScriptsGoToTheMasterOfTheirSlot) {
  redis::Client c(endpoint(1), redis::Options{});
  const redis::Script s{"t", "redis.call('INCR', KEYS[2]) return redis.call('GET', KEYS[1])"};
  constexpr int kKeys = 60;
  for (int i = 0; i < kKeys; i++) {
    const std::string k = "k" + std::to_string(i), n = "{k" + std::to_string(i) + "}:n";
    auto set = c.command({"SET", "{" + k + "}", "v" + std::to_string(i)});
    ASSERT_TRUE(set.ok());
    ASSERT_FALSE(set->is_error()) << set->str;
    auto r = c.eval(s, {"{" + k + "}", n}, {});
    ASSERT_TRUE(r.ok());
    ASSERT_FALSE(r->is_error()) << r->str;
    EXPECT_EQ(r->str, "v" + std::to_string(i));
  }
  // Each key is on the master the map names, and every master holds some.
  long total = 0;
  for (size_t i = 0; i < cluster_.size(); i++) {
    const long n = std::stol(cluster_.cli(i, "DBSIZE"));
    EXPECT_GT(n, 0) << "node " << i;
    total += n;
  }
  EXPECT_EQ(total, 2 * kKeys);
  std::map<size_t, std::vector<std::string>> exists;  // node -> EXISTS of each key the client's map puts there
  for (int i = 0; i < kKeys; i++) {
    const std::string k = "{k" + std::to_string(i) + "}";
    exists[index_of(c.node_of(redis::key_slot(k)))].push_back("EXISTS " + k);
  }
  for (const auto& [at, commands] : exists) {  // one redis-cli per node, not one per key
    std::string ones = "1";
    for (size_t j = 1; j < commands.size(); j++) ones += "\n1";
    EXPECT_EQ(cluster_.cli_batch(at, commands), ones) << "node " << at;
  }
}

TEST_F(RedisCluster, FollowsAskDuringAMigrationAndMovedAfterIt) {
  redis::Client c(endpoint(0), redis::Options{});
  const std::string key = "{migrating}";
  const int slot = redis::key_slot(key);
  ASSERT_TRUE(c.command({"SET", key, "v"}).ok());
  const size_t src = index_of(c.node_of(slot)), dst = (src + 1) % cluster_.size();
  const std::string p = std::to_string(slot);
  ASSERT_EQ(cluster_.cli(dst, "CLUSTER SETSLOT " + p + " IMPORTING " + cluster_.id(src)), "OK");
  ASSERT_EQ(cluster_.cli(src, "CLUSTER SETSLOT " + p + " MIGRATING " + cluster_.id(dst)), "OK");
  ASSERT_EQ(cluster_.cli(src, "MIGRATE 127.0.0.1 " + std::to_string(cluster_.port(dst)) + " '" + key + "' 0 5000"),
            "OK");
  // Mid-migration: the source answers ASK; the value is only on the target.
  auto got = c.command({"GET", key});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->str, "v");
  const redis::Script s{"t", "return redis.call('GET', KEYS[1])"};  // not yet loaded on the target
  auto ran = c.eval(s, {key}, {});
  ASSERT_TRUE(ran.ok());
  EXPECT_EQ(ran->str, "v");
  EXPECT_EQ(index_of(c.node_of(slot)), src);  // ASK changes no map
  // The slot moves for good: the old owner answers MOVED, the map follows.
  const std::string node = "CLUSTER SETSLOT " + p + " NODE " + cluster_.id(dst);
  for (size_t i : {dst, src, (dst + 1) % cluster_.size()}) ASSERT_EQ(cluster_.cli(i, node), "OK");
  auto set = c.command({"SET", key, "w"});
  ASSERT_TRUE(set.ok());
  EXPECT_FALSE(set->is_error()) << set->str;
  EXPECT_EQ(index_of(c.node_of(slot)), dst);
  EXPECT_EQ(cluster_.cli(dst, "GET '" + key + "'"), "w");
  ran = c.eval(s, {key}, {});
  ASSERT_TRUE(ran.ok());
  EXPECT_EQ(ran->str, "w");
}

TEST_F(RedisCluster, StoresOnEveryMasterAcrossTwoDaemons) {
  RedisConfig cb = testredis::config(cluster_.url(2));  // another seed node: the same cluster
  cb.recheck = std::chrono::hours(1);                   // no periodic re-check: only notifications wake b
  auto a = testredis::backend(cluster_.url(0)), b = testredis::backend(cb);
  ASSERT_TRUE(a && b);
  a->start();
  b->start();
  redis::Client probe(endpoint(0), redis::Options{});
  ASSERT_EQ(probe.refresh(), Errc::ok);
  std::set<std::string> masters;
  constexpr int kBoxes = 12;
  std::vector<std::unique_ptr<Store>> sa, sb;
  for (int i = 1; i <= kBoxes; i++) {
    const std::string rid = std::to_string(i);
    masters.insert(probe.node_of(redis::key_slot("mbx:{t:" + rid + "}:m")));
    sa.push_back(testredis::store(*a, rid, 4));
    sb.push_back(testredis::store(*b, rid, 4));
    ASSERT_TRUE(sa.back() && sb.back());
  }
  EXPECT_EQ(masters.size(), cluster_.size());  // the mailboxes are spread over every master
  ASSERT_TRUE(b->wait_subscriptions(1, 20s));  // readiness: the subscription holds (hang guard only)
  for (int i = 0; i < kBoxes; i++) {
    auto l = std::make_shared<testredis::Listener>();
    sb[i]->watch(kWatchReadable, l);
    (void)sb[i]->take_kick();
    for (int k = 0; k < 4; k++)
      ASSERT_TRUE(sa[i]->push("m" + std::to_string(i) + "." + std::to_string(k), {}, false).ok());
    EXPECT_EQ(sa[i]->push("over", {}, false).error(), Errc::again);  // capacity, on the master of its slot
    ASSERT_TRUE(l->wait_for(1)) << "mailbox " << i + 1;              // PUBLISH on its master reached b's node
    EXPECT_TRUE(sb[i]->take_kick());
    sb[i]->watch(0, {});
    for (int k = 0; k < 4; k++) {
      std::string out;
      auto p = sb[i]->pop(out);
      ASSERT_TRUE(p.ok());
      EXPECT_EQ(out, "m" + std::to_string(i) + "." + std::to_string(k));
      EXPECT_EQ(sb[i]->ack(p->seq), Errc::ok);
    }
    std::string out;
    EXPECT_EQ(sb[i]->pop(out).error(), Errc::again);
    EXPECT_EQ(sa[i]->stats().total_received, 4u);
  }
}

// The subscription is made through the URL's node. When that node goes away,
// the daemon subscribes through another node of the cluster (which
// broadcasts every PUBLISH), so notifications keep waking its waiters: b has
// no periodic re-check, so nothing but a notification wakes it. Node 0 goes
// by `sig` (a SIGSTOP is undone with SIGCONT before a and b stop); everything
// a and b use but b's subscription is on the others.
void RedisCluster::subscription_moves_when_node0_gets(int sig) {
  redis::Client probe(endpoint(1), redis::Options{});
  ASSERT_EQ(probe.refresh(), Errc::ok);
  auto on_node0 = [&](const std::string& key) { return index_of(probe.node_of(redis::key_slot(key))) == 0; };
  // A namespace whose daemons' keys (the leases) and a mailbox whose keys are
  // served by a node that stays.
  std::string ns, rid;
  for (int i = 0; i < 1000 && ns.empty(); i++)
    if (!on_node0("mbx:{n" + std::to_string(i) + "}:daemons")) ns = "n" + std::to_string(i);
  ASSERT_FALSE(ns.empty());
  for (int i = 1; i < 1000 && rid.empty(); i++)
    if (!on_node0("mbx:{" + ns + ":" + std::to_string(i) + "}:m")) rid = std::to_string(i);
  ASSERT_FALSE(rid.empty());
  RedisConfig cb = testredis::config(cluster_.url(0), ns);
  cb.recheck = std::chrono::hours(1);
  auto a = testredis::backend(cluster_.url(1), ns), b = testredis::backend(cb);
  ASSERT_TRUE(a && b);
  a->start();
  b->start();
  auto sa = testredis::store(*a, rid, 4), sb = testredis::store(*b, rid, 4);  // b learns the nodes here
  ASSERT_TRUE(sa && sb);
  ASSERT_TRUE(b->wait_subscriptions(1, 20s));  // readiness (hang guard only)
  // The others carry on serving their slots without node 0's.
  for (size_t i = 1; i < cluster_.size(); i++)
    ASSERT_EQ(cluster_.cli(i, "CONFIG SET cluster-require-full-coverage no"), "OK");
  struct Resume {  // declared after a and b: runs before they stop, whatever the outcome
    pid_t pid;
    ~Resume() {
      if (pid > 0) {
        EXPECT_EQ(::kill(pid, SIGCONT), 0);
      }
    }
  } resume{sig == SIGSTOP ? cluster_.pid(0) : -1};
  ASSERT_EQ(::kill(cluster_.pid(0), sig), 0);
  ASSERT_TRUE(b->wait_subscriptions(2, 20s)) << "the subscription stayed with node 0";
  auto l = std::make_shared<testredis::Listener>();
  sb->watch(kWatchReadable, l);
  (void)sb->take_kick();
  ASSERT_TRUE(sa->push("after", {}, false).ok());
  ASSERT_TRUE(l->wait_for(1)) << "no notification reached b";
  EXPECT_TRUE(sb->take_kick());
  sb->watch(0, {});
  std::string out;
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "after");
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
}

TEST_F(RedisCluster, TheSubscriptionMovesToAnotherNodeWhenItsNodeDies) { subscription_moves_when_node0_gets(SIGKILL); }

// The node hangs (SIGSTOP) with its connections open: nothing breaks, so
// only the subscriber's keep-alive (a PING that gets no answer) notices it.
TEST_F(RedisCluster, TheSubscriptionMovesToAnotherNodeWhenItsNodeHangs) {
  subscription_moves_when_node0_gets(SIGSTOP);
  for (size_t i = 1; i < cluster_.size(); i++)
    EXPECT_EQ(cluster_.cli(i, "CONFIG SET cluster-require-full-coverage yes"), "OK");
}

// A clean stop returns what the daemon still had in flight. When that
// return fails (here the mailbox's node is stopped), the daemon leaves its
// lease to run out instead of ending it, so the others' recovery returns
// the message: nothing is stranded in a daemon no one will ever claim.
TEST_F(RedisCluster, AStopThatCannotReturnItsMessagesLeavesThemToTheOthers) {
  redis::Client probe(endpoint(0), redis::Options{});
  ASSERT_EQ(probe.refresh(), Errc::ok);
  auto node = [&](const std::string& key) { return index_of(probe.node_of(redis::key_slot(key))); };
  const size_t leases = node("mbx:{t}:daemons");
  std::string rid;
  for (int i = 1; i < 1000 && rid.empty(); i++)
    if (node("mbx:{t:" + std::to_string(i) + "}:m") != leases) rid = std::to_string(i);
  ASSERT_FALSE(rid.empty());
  const size_t mailbox = node("mbx:{t:" + rid + "}:m");
  auto a = testredis::backend(cluster_.url(leases)), b = testredis::backend(cluster_.url(leases));
  ASSERT_TRUE(a && b);
  a->start();  // started: its destructor is a clean stop
  const std::string a_id = a->daemon_id();
  auto sa = testredis::store(*a, rid, 4), sb = testredis::store(*b, rid, 4);
  ASSERT_TRUE(sa && sb);
  ASSERT_TRUE(sb->push("kept", {}, false).ok());
  std::string out;
  ASSERT_TRUE(sa->pop(out).ok());  // in flight at a, never acknowledged
  EXPECT_EQ(out, "kept");
  // The others serve their slots while the mailbox's node is stopped.
  for (size_t i = 0; i < cluster_.size(); i++) {
    if (i != mailbox) {
      ASSERT_EQ(cluster_.cli(i, "CONFIG SET cluster-require-full-coverage no"), "OK");
    }
  }
  ASSERT_EQ(::kill(cluster_.pid(mailbox), SIGSTOP), 0);
  sa.reset();
  a.reset();  // its return times out on the stopped node
  ASSERT_EQ(::kill(cluster_.pid(mailbox), SIGCONT), 0);
  // Its lease was left: it ends (made to have ended: no waiting in a test),
  // and the recovery returns the message.
  EXPECT_EQ(b->command({"HEXISTS", "mbx:{t}:daemons", a_id})->integer, 1);
  ASSERT_TRUE(b->command({"HSET", "mbx:{t}:daemons", a_id, "0"}).ok());
  auto n = b->recover();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  out.clear();
  auto p = sb->pop(out);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(out, "kept");
  EXPECT_EQ(sb->ack(p->seq), Errc::ok);
  for (size_t i = 0; i < cluster_.size(); i++) {
    if (i != mailbox) {
      EXPECT_EQ(cluster_.cli(i, "CONFIG SET cluster-require-full-coverage yes"), "OK");
    }
  }
}

}  // namespace

// SPDX-License-Identifier: MIT
// Redis Cluster mounts: a three-master cluster on 127.0.0.1 that the suite's
// tests share, each getting it emptied (tests/common/redis_cluster.h), and two daemons mounted on it through
// different nodes. The mailboxes' slots land on all three masters; sends
// through one daemon are received through the other. Skipped, with the
// reason, where the machine cannot run a cluster.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../common/redis_mounts.h"
#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;
using testredis::lines;

std::string box(int i) { return "box" + std::string(i < 10 ? "0" : "") + std::to_string(i); }

// two(): a_ through node 0, b_ through node 1.
class RedisCluster : public testredis::ClusterDaemons {
 protected:
  static void SetUpTestSuite() { testredis::Cluster::share(true); }
  static void TearDownTestSuite() { testredis::Cluster::share(false); }
  void TearDown() override {
    for (auto* m : {&a_, &b_})
      if (*m) {
        const std::string err = (*m)->daemon_stderr();  // no script refused (CROSSSLOT), no redirection left over
        EXPECT_EQ(err.find("CROSSSLOT"), std::string::npos) << err;
        EXPECT_EQ(err.find("MOVED"), std::string::npos) << err;
        EXPECT_EQ(err.find("script"), std::string::npos) << err;
      }
    ClusterDaemons::TearDown();
  }
  // Which master holds each mailbox (name -> node index), read from the
  // nodes themselves: the catalog names each mailbox's store id, and each
  // node's SCAN lists only the keys it holds.
  std::map<std::string, size_t> masters() const {
    std::map<std::string, size_t> rid_node;
    for (size_t i = 0; i < cluster_.size(); i++)
      for (auto& k : lines(cluster_.cli(i, "--scan --pattern 'mbx:{t:*}:m'")))
        rid_node[k.substr(7, k.find('}') - 7)] = i;  // mbx:{t:RID}:m
    std::map<std::string, size_t> out;
    const auto tree = lines(cluster_.cli(0, "-c HGETALL 'mbx:{t}:tree'"));
    for (size_t i = 0; i + 1 < tree.size(); i += 2) {
      std::istringstream v(tree[i + 1]);
      std::string kind, rid;
      v >> kind >> rid;
      const std::string& path = tree[i];  // "/name"
      if (kind == "f" && rid_node.count(rid)) out[path.substr(path.find_first_not_of('/'))] = rid_node[rid];
    }
    return out;
  }
  // One mailbox on each master (names made by `a_` beforehand).
  std::vector<std::string> one_per_master() const {
    std::map<size_t, std::string> pick;
    for (auto& [name, node] : masters()) pick.emplace(node, name);
    std::vector<std::string> out;
    for (auto& [node, name] : pick) out.push_back(name);
    return out;
  }
};

TEST_F(RedisCluster, ManyMailboxesOnEveryMasterSentThroughOneReceivedThroughTheOther) {
  constexpr int kBoxes = 24, kWriters = 4, kEach = 5;
  two("capacity=unbounded");
  std::string all;
  for (int i = 1; i <= kBoxes; i++) all += " " + box(i);
  ASSERT_EQ(a_->sh("touch" + all).status, 0);
  const auto where = masters();
  ASSERT_EQ(where.size(), static_cast<size_t>(kBoxes));
  std::set<size_t> used;
  for (auto& [name, node] : where) used.insert(node);
  EXPECT_EQ(used.size(), cluster_.size());  // spread over all three masters
  // Every name on both daemons.
  std::string expect;
  for (int i = 1; i <= kBoxes; i++) expect += box(i) + "\n";
  EXPECT_EQ(a_->sh("ls").out, expect);
  EXPECT_EQ(b_->sh("ls").out, expect);
  // Writers through a, each sending kEach to every mailbox; readers through b, one per mailbox.
  std::vector<std::unique_ptr<Proc>> writers, readers;
  for (int w = 0; w < kWriters; w++)
    writers.push_back(std::make_unique<Proc>("for k in $(seq " + std::to_string(kEach) + "); do for b in" + all +
                                                 "; do echo w" + std::to_string(w) +
                                                 "-$b-$k > $b || exit 1; done; done",
                                             a_->dir()));
  for (int i = 1; i <= kBoxes; i++)
    readers.push_back(std::make_unique<Proc>(
        "for k in $(seq " + std::to_string(kWriters * kEach) + "); do cat " + box(i) + " || exit 1; done", b_->dir()));
  for (auto& p : writers) EXPECT_EQ(p->finish().status, 0);
  for (int i = 1; i <= kBoxes; i++) {
    const mt::Run r = readers[i - 1]->finish();
    ASSERT_EQ(r.status, 0) << r.err;
    std::vector<std::string> got = lines(r.out), sent;
    std::map<std::string, int> last;  // per writer, its messages in its order
    for (auto& l : got) {
      const std::string w = l.substr(0, l.find('-'));
      const int k = std::stoi(l.substr(l.rfind('-') + 1));
      EXPECT_GT(k, last[w]) << box(i) << ": " << l;
      last[w] = k;
    }
    for (int w = 0; w < kWriters; w++)
      for (int k = 1; k <= kEach; k++) sent.push_back("w" + std::to_string(w) + "-" + box(i) + "-" + std::to_string(k));
    std::sort(sent.begin(), sent.end());
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, sent) << box(i);  // each exactly once
    EXPECT_EQ(a_->xattr(box(i), "received"), std::to_string(kWriters * kEach));
    EXPECT_EQ(b_->xattr(box(i), "messages"), "0");
  }
  // Checksums of a larger payload through every master.
  for (const std::string& name : one_per_master()) {
    const mt::Run s = a_->sh("head -c 60000 /dev/urandom | tee /tmp/x.$$ | md5sum; cat /tmp/x.$$ > " + name +
                             "; rm -f /tmp/x.$$");
    ASSERT_EQ(s.status, 0) << s.err;
    EXPECT_EQ(b_->sh("cat " + name + " | md5sum").out, s.out) << name;
  }
}

TEST_F(RedisCluster, ABlockedReceiveIsReleasedByASendOnTheOtherDaemon) {
  two();
  std::string all;
  for (int i = 1; i <= 12; i++) all += " " + box(i);
  ASSERT_EQ(a_->sh("touch" + all).status, 0);
  const auto boxes = one_per_master();
  ASSERT_EQ(boxes.size(), cluster_.size());
  std::vector<std::unique_ptr<Proc>> readers;
  for (auto& name : boxes) {
    readers.push_back(std::make_unique<Proc>("cat " + name, b_->dir()));
    ASSERT_TRUE(b_->wait_listed(name, "blocked_receivers", readers.back()->pid())) << name;  // parked in b
  }
  for (size_t i = 0; i < boxes.size(); i++) {
    ASSERT_EQ(a_->sh("echo wake-" + boxes[i] + " > " + boxes[i]).status, 0);
    EXPECT_TRUE(readers[i]->exits());
    EXPECT_EQ(readers[i]->finish().out, "wake-" + boxes[i] + "\n");
  }
}

TEST_F(RedisCluster, CapacityHoldsAcrossDaemons) {
  constexpr int kCap = 2, kWriters = 4, kEach = 10;
  two("capacity=" + std::to_string(kCap));
  std::string all;
  for (int i = 1; i <= 12; i++) all += " " + box(i);
  ASSERT_EQ(a_->sh("touch" + all).status, 0);
  const auto boxes = one_per_master();
  ASSERT_EQ(boxes.size(), cluster_.size());
  for (auto& name : boxes) {
    // Full through a: a non-blocking send through b is refused.
    ASSERT_EQ(a_->sh("echo one > " + name + " && echo two > " + name).status, 0);
    const mt::Run r = b_->sh(
        "python3 -c \"\n"
        "import os\n"
        "w = os.open('" +
        name +
        "', os.O_WRONLY | os.O_NONBLOCK)\n"
        "try:\n"
        "  os.write(w, b'three')\n"
        "  os.close(w)  # file framing: the message is sent at close\n"
        "  print('sent')\n"
        "except BlockingIOError: print('EAGAIN')\n\"");
    EXPECT_EQ(r.out, "EAGAIN\n") << name << r.err;
    EXPECT_EQ(b_->sh("cat " + name + "; cat " + name).out, "one\ntwo\n");
    // Many writers on both daemons, readers on both, watchers on both for as
    // long as the traffic lasts: never past the capacity.
    const std::string watch = mt::until_usr1("getfattr --only-values -n user.mailbox.messages " + name + "; echo");
    Proc watch_a(watch, a_->dir()), watch_b(watch, b_->dir());
    ASSERT_TRUE(watch_a.wait_ready() && watch_b.wait_ready());
    std::vector<std::unique_ptr<Proc>> writers, readers;
    for (int w = 0; w < kWriters; w++)
      writers.push_back(std::make_unique<Proc>("for k in $(seq " + std::to_string(kEach) + "); do echo w" +
                                                   std::to_string(w) + "-$k > " + name + " || exit 1; done",
                                               (w % 2 ? a_ : b_)->dir()));
    for (int r = 0; r < 2; r++)
      readers.push_back(std::make_unique<Proc>("for k in $(seq " + std::to_string(kWriters * kEach / 2) + "); do cat " +
                                                   name + " || exit 1; done",
                                               (r ? a_ : b_)->dir()));
    std::vector<std::string> got, sent;
    for (auto& p : readers) {
      const mt::Run r = p->finish();
      EXPECT_EQ(r.status, 0) << r.err;
      for (auto& l : lines(r.out)) got.push_back(l);
    }
    for (auto& p : writers) EXPECT_EQ(p->finish().status, 0);
    for (int w = 0; w < kWriters; w++)
      for (int k = 1; k <= kEach; k++) sent.push_back("w" + std::to_string(w) + "-" + std::to_string(k));
    std::sort(sent.begin(), sent.end());
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, sent) << name;
    for (Proc* p : {&watch_a, &watch_b}) {
      p->signal(SIGUSR1);
      for (auto& l : lines(p->finish().out)) {
        if (!l.empty()) {
          EXPECT_LE(std::stoi(l), kCap) << name;
        }
      }
    }
  }
}

TEST_F(RedisCluster, NamesAreTheSameOnBothDaemons) {
  two();
  ASSERT_EQ(a_->sh("mkdir d && touch d/x one two && mv one d/one").status, 0);
  auto names = [](Mount& m) { return m.sh("find . -mindepth 1 | sort").out; };
  EXPECT_EQ(names(*b_), "./d\n./d/one\n./d/x\n./two\n");
  ASSERT_EQ(b_->sh("echo kept > d/one && mv d other && rm two").status, 0);
  EXPECT_EQ(names(*a_), "./other\n./other/one\n./other/x\n");
  EXPECT_EQ(a_->sh("cat other/one").out, "kept\n");
}

}  // namespace

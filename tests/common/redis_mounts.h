// SPDX-License-Identifier: MIT
// Mount-test fixtures for Redis mounts (-o backend=redis...): daemons on
// separate mount points stand in for hosts, sharing one backend and
// namespace: a private redis-server (redis_server.h) or a private cluster
// (redis_cluster.h). Each mt::Mount unmounts itself (fusermount3 -u, then
// -z) and kills only its own daemon; the fixture drops a_ and b_ in
// TearDown, before the backend they use goes. Header-only, mount suite only.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../mount/harness.h"
#include "redis_cluster.h"
#include "redis_server.h"

namespace testredis {

// Daemons on one backend and namespace; the derived fixture owns the backend.
class Daemons : public ::testing::Test {
 protected:
  explicit Daemons(std::string ns) : ns_(std::move(ns)) {}
  // The backend URL of the i-th daemon mounted (from 0).
  virtual std::string url(size_t i) const = 0;

  // Two daemons, a_ and b_; `extra`: more -o options for both.
  void two(const std::string& extra = "") {
    a_ = mount(extra);
    b_ = mount(extra);
    ASSERT_TRUE(a_->ok()) << a_->daemon_stderr();
    ASSERT_TRUE(b_->ok()) << b_->daemon_stderr();
  }
  // One more daemon, the test's to keep (a failure if it did not mount).
  std::unique_ptr<mt::Mount> daemon(const std::string& extra = "") {
    auto m = mount(extra);
    EXPECT_TRUE(m->ok()) << m->daemon_stderr();
    return m;
  }
  void TearDown() override {  // the daemons go before the backend they use
    a_.reset();
    b_.reset();
  }

  std::unique_ptr<mt::Mount> a_, b_;

 private:
  std::unique_ptr<mt::Mount> mount(const std::string& extra) {
    return std::make_unique<mt::Mount>("backend=" + url(mounted_++) + ",namespace=" + ns_ +
                                       (extra.empty() ? "" : "," + extra));
  }
  std::string ns_;
  size_t mounted_ = 0;
};

// Daemons on a private redis-server (`server_args`: more redis-server arguments).
class ServerDaemons : public Daemons {
 protected:
  explicit ServerDaemons(std::string ns = "t", std::vector<std::string> server_args = {})
      : Daemons(std::move(ns)), server_(std::move(server_args)) {}
  void SetUp() override {
    ASSERT_TRUE(server_.ready()) << "redis-server did not start (scripts/deps.sh test installs it)";
  }
  std::string url(size_t) const override { return server_.url(); }
  Server server_;
};

// Daemons on a private three-master cluster, each through the next node.
// Skipped, with the reason, where the machine cannot run a cluster.
class ClusterDaemons : public Daemons {
 protected:
  ClusterDaemons() : Daemons("t") {}
  void SetUp() override {
    if (!cluster_.skip_reason().empty()) GTEST_SKIP() << cluster_.skip_reason();
    ASSERT_TRUE(cluster_.ready()) << cluster_.error();
  }
  std::string url(size_t i) const override { return cluster_.size() ? cluster_.url(i % cluster_.size()) : ""; }
  Cluster cluster_;
};

// The lines of `s`.
inline std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The value of a redis-cli command on server `s`, without trailing newlines.
inline std::string cli(const Server& s, const std::string& args) {
  std::string out = mt::sh("redis-cli -s " + mt::q(s.socket()) + " " + args).out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// The proof that a caller is blocked, for released().
using Blocked = std::function<bool(mt::Proc&)>;
// Its daemon `m` lists it in user.mailbox.<list> (blocked_receivers or blocked_senders) of `file`.
inline Blocked listed(const mt::Mount& m, const std::string& file, const std::string& list) {
  return [&m, file, list](mt::Proc& p) { return m.wait_listed(file, list, p.pid()); };
}
// It printed its readiness line, then sleeps on `on` (/proc/<pid>/wchan).
inline Blocked asleep(mt::Sleep on) {
  return [on](mt::Proc& p) { return p.wait_blocked(on); };
}

// A blocked caller released: once `blocked` shows `p` blocked, runs `act`,
// then waits until `p` has returned (each wait with a hang guard only).
// What it printed; nullopt, a failure, if it was never seen blocked (then
// `act` is not run).
inline std::optional<mt::Run> released(mt::Proc& p, const Blocked& blocked, const std::function<void()>& act) {
  if (!blocked(p)) {
    ADD_FAILURE() << "never seen blocked; its stderr: " << p.finish(0).err;
    return std::nullopt;
  }
  act();
  EXPECT_TRUE(p.exits());
  return p.finish();
}

}  // namespace testredis

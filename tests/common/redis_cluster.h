// SPDX-License-Identifier: MIT
// A private Redis Cluster for a test: `masters` redis-server processes on
// 127.0.0.1, on free TCP ports chosen now (each with its bus port, +10000),
// each in its own temporary directory, joined by `redis-cli --cluster create
// --cluster-replicas 0`. A node is up once it said READY=1 (start_ready(),
// redis_server.h); the cluster is ready once every node's CLUSTER INFO says
// cluster_state:ok (a readiness poll with a hang guard: the cluster gives no
// other signal). Every node it started is stopped by its pid at the end.
// When the machine cannot run one (no cluster support, no TCP on 127.0.0.1)
// skip_reason() says why.
// A suite may share one cluster among its tests (share()): starting one takes
// over 2 s, as a new master waits 2 s before it calls the cluster ok.
// Header-only, for the unit and mount suites alike (gtest).
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.h"

namespace testredis {

class Cluster {
 public:
  explicit Cluster(int masters = 3) {
    if (adopt(masters)) return;
    char tmpl[] = "/tmp/mbxtest.rediscluster.XXXXXX";
    if (!::mkdtemp(tmpl)) {
      error_ = "mkdtemp failed";
      return;
    }
    dir_ = tmpl;
    start(masters);
  }
  ~Cluster() {
    Kept& k = kept();
    if (k.on && ready_ && !::testing::Test::HasFailure() && ::getpid() == k.owner) {
      k.drop();  // (none: a second Cluster at once was not adopted)
      k.dir = std::move(dir_);
      k.nodes = std::move(nodes_);
      return;
    }
    drop(dir_, nodes_);
  }

  // Sharing, for a suite's SetUpTestSuite (true) and TearDownTestSuite (false,
  // which stops the kept cluster). While on, a Cluster whose test passed is
  // kept when it goes, and the next one made gets it back emptied (FLUSHALL
  // and SCRIPT FLUSH on every master) if every node still reports the cluster
  // ok, every slot served and none migrating; else it starts a fresh one.
  static void share(bool on) {
    Kept& k = kept();
    k.on = on;
    k.owner = ::getpid();
    if (!on) k.drop();
  }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Up and every node agrees the cluster is ok.
  bool ready() const { return ready_; }
  // Why the machine cannot run a cluster (the test skips); empty otherwise.
  const std::string& skip_reason() const { return skip_; }
  // Why it failed to start although it could (the test fails); empty otherwise.
  const std::string& error() const { return error_; }
  size_t size() const { return nodes_.size(); }
  int port(size_t i) const { return nodes_[i].port; }
  std::string url(size_t i = 0) const { return "redis://127.0.0.1:" + std::to_string(nodes_[i].port); }
  pid_t pid(size_t i) const { return nodes_[i].pid; }
  // redis-cli on node i (arguments as for the shell); its output without the last newline.
  std::string cli(size_t i, const std::string& args) const {
    return run("redis-cli -h 127.0.0.1 -p " + std::to_string(nodes_[i].port) + " " + args + " 2>&1");
  }
  // redis-cli on node i once for all `commands` (one per line on its input): the replies, a line each.
  std::string cli_batch(size_t i, const std::vector<std::string>& commands) const {
    std::string args;
    for (const std::string& c : commands) {
      args += " '";
      for (char ch : c) args += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      args += "'";
    }
    return run("printf '%s\\n'" + args + " | redis-cli -h 127.0.0.1 -p " + std::to_string(nodes_[i].port) + " 2>&1");
  }
  // Node i's cluster id.
  std::string id(size_t i) const { return cli(i, "CLUSTER MYID"); }

  // The output of a shell command, without trailing newlines; `*status` its exit status.
  static std::string run(const std::string& cmd, int* status = nullptr) {
    std::string out;
    FILE* f = ::popen(cmd.c_str(), "r");
    if (!f) return out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
    const int st = ::pclose(f);
    if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

 private:
  struct Node {
    int port = 0;
    pid_t pid = -1;
    std::string dir;
  };
  using Clock = std::chrono::steady_clock;

  static void drop(std::string& dir, std::vector<Node>& nodes) {
    for (Node& n : nodes) stop(n);
    nodes.clear();
    if (!dir.empty()) std::filesystem::remove_all(dir);
    dir.clear();
  }
  // The cluster kept between the tests of a sharing suite; stopped at exit at the latest.
  struct Kept {
    bool on = false;
    pid_t owner = -1;  // a forked child's exit leaves it alone
    std::string dir;
    std::vector<Node> nodes;
    void drop() { Cluster::drop(dir, nodes); }
    ~Kept() {
      if (::getpid() == owner) drop();
    }
  };
  static Kept& kept() {
    static Kept k;
    return k;
  }

  // Takes the kept cluster if it has `masters` nodes and is clean once emptied.
  bool adopt(int masters) {
    Kept& k = kept();
    if (!k.on || k.nodes.size() != static_cast<size_t>(masters) || ::getpid() != k.owner) return false;
    dir_ = std::move(k.dir);
    nodes_ = std::move(k.nodes);
    k.dir.clear();
    k.nodes.clear();
    const std::string known = "cluster_known_nodes:" + std::to_string(masters);
    bool clean = true;
    for (size_t i = 0; clean && i < nodes_.size(); i++) {
      const std::string out =
          run("printf 'FLUSHALL\\nSCRIPT FLUSH\\nCLUSTER INFO\\nCLUSTER NODES\\n' | redis-cli -h 127.0.0.1 -p " +
              std::to_string(nodes_[i].port) + " 2>&1");
      clean = out.starts_with("OK\nOK\n") && out.find("cluster_state:ok") != std::string::npos &&
              out.find("cluster_slots_ok:16384") != std::string::npos && out.find(known) != std::string::npos &&
              out.find("->-") == std::string::npos && out.find("-<-") == std::string::npos;  // [slot->-id], [slot-<-id]
    }
    if (clean) return ready_ = true;
    drop(dir_, nodes_);
    return false;
  }

  // A port p of 127.0.0.1 free now with p + 10000 free too (the cluster bus); 0 if none; errno-style reason in `why`.
  static int free_port(std::string* why) {
    for (int attempt = 0; attempt < 100; attempt++) {
      int a = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (a < 0) {
        *why = std::string("socket(AF_INET): ") + std::strerror(errno);
        return 0;
      }
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof sa;
      if (::bind(a, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(a, 1) != 0 ||
          ::getsockname(a, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
        *why = std::string("bind/listen on 127.0.0.1: ") + std::strerror(errno);
        ::close(a);
        return 0;
      }
      const int p = ntohs(sa.sin_port);
      bool bus_free = false;
      if (p + 10000 <= 65535) {
        int b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sb = sa;
        sb.sin_port = htons(static_cast<uint16_t>(p + 10000));
        bus_free = b >= 0 && ::bind(b, reinterpret_cast<sockaddr*>(&sb), sizeof sb) == 0;
        if (b >= 0) ::close(b);
      }
      ::close(a);
      if (bus_free) return p;
    }
    *why = "no free pair of ports (p, p + 10000) on 127.0.0.1";
    return 0;
  }

  static int server_major() {
    const std::string v = run("redis-server --version 2>/dev/null");
    const size_t at = v.find("v=");
    return at == std::string::npos ? -1 : std::atoi(v.c_str() + at + 2);
  }

  std::string log_of(const Node& n) const {
    std::ifstream in(n.dir + "/log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Starts node n on a fresh free port: true once it said READY=1.
  bool start_node(Node& n) {
    std::string why;
    n.port = free_port(&why);
    if (n.port == 0) {
      skip_ = "TCP on 127.0.0.1 is unusable here: " + why;
      return false;
    }
    const bool up = start_ready(n.dir,
                                {"--bind",
                                 "127.0.0.1",
                                 "--port",
                                 std::to_string(n.port),
                                 "--cluster-enabled",
                                 "yes",
                                 "--cluster-config-file",
                                 n.dir + "/nodes.conf",
                                 "--cluster-node-timeout",
                                 "5000",
                                 "--dir",
                                 n.dir,
                                 "--save",
                                 "",
                                 "--appendonly",
                                 "no",
                                 "--daemonize",
                                 "no",
                                 "--logfile",
                                 n.dir + "/log"},
                                &n.pid);
    if (!up && n.pid > 0) error_ = "redis-server on port " + std::to_string(n.port) + " did not say READY=1";
    return up;  // if it exited (n.pid -1), its log says why
  }

  void start(int masters) {
    const int major = server_major();
    if (major < 0) {
      error_ = "redis-server is not installed (scripts/deps.sh test installs it)";
      return;
    }
    if (major < 5) {
      skip_ = "redis-server " + std::to_string(major) + ".x: `redis-cli --cluster create` needs 5 or later";
      return;
    }
    for (int i = 0; i < masters; i++) {
      Node n;
      n.dir = dir_ + "/n" + std::to_string(i);
      std::filesystem::create_directories(n.dir);
      bool up = false;
      for (int attempt = 0; attempt < 3 && !up && skip_.empty() && error_.empty(); attempt++) {
        up = start_node(n);
        if (up) break;
        const std::string log = log_of(n);
        if (log.find("Address already in use") != std::string::npos) continue;  // taken meanwhile: other ports
        if (log.find("cluster") != std::string::npos && log.find("Bad directive") != std::string::npos)
          skip_ = "redis-server has no cluster support: " + log.substr(0, 200);
        else if (error_.empty() && skip_.empty()) error_ = "redis-server (cluster node) exited: " + log.substr(0, 400);
      }
      nodes_.push_back(n);
      if (!up) {
        if (skip_.empty() && error_.empty()) error_ = "redis-server (cluster node) did not start";
        return;
      }
    }
    std::string create = "redis-cli --cluster create";
    for (auto& n : nodes_) create += " 127.0.0.1:" + std::to_string(n.port);
    int st = 0;
    const std::string out = run(create + " --cluster-replicas 0 --cluster-yes 2>&1", &st);
    if (st != 0) {
      error_ = "redis-cli --cluster create failed: " + out;
      return;
    }
    // Readiness: every node sees every slot served (a hang guard only).
    for (auto end = Clock::now() + std::chrono::seconds(60); Clock::now() < end;) {
      bool ok = true;
      for (size_t i = 0; ok && i < nodes_.size(); i++)
        ok = cli(i, "CLUSTER INFO").find("cluster_state:ok") != std::string::npos;
      if (ok) {
        ready_ = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // readiness poll, not ordering
    }
    error_ = "the cluster never reported cluster_state:ok on every node";
  }

  static void stop(Node& n) {
    if (n.pid <= 0) return;
    ::kill(n.pid, SIGTERM);
    int st;
    ::waitpid(n.pid, &st, 0);
    n.pid = -1;
  }

  std::string dir_;
  std::vector<Node> nodes_;
  bool ready_ = false;
  std::string skip_, error_;
};

}  // namespace testredis

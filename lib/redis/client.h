// SPDX-License-Identifier: MIT
// A Redis deployment behind one interface: a single server, or a Redis
// Cluster reached through any of its nodes (the URL's). On first use it
// asks CLUSTER SLOTS: a server without cluster support is used as it is; a
// cluster's slot map is learnt, and each command or script goes to the
// master owning its key's slot (redis/slot.h), over one connection per
// node. MOVED updates the map and reloads it, ASK is followed once with
// ASKING, and a node that does not answer makes the map reload before one
// more try (a failover). Scripts are loaded on each node on first use and
// again on NOSCRIPT (Conn). Every script's keys must share one slot, and are
// checked on a single server too (a CROSSSLOT error reply, as a cluster
// gives), so code that runs here runs on a cluster. Pub/sub needs nothing:
// a cluster broadcasts PUBLISH to every node. Not thread-safe: its owner
// serialises the calls.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/errc.h"
#include "redis/conn.h"
#include "redis/url.h"

namespace mbx::redis {

class Client {
 public:
  Client(Endpoint seed, Options opt);
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // One command. Its key is argv[1]; PING, INFO, TIME, ECHO, PUBLISH,
  // CLUSTER, SCRIPT and CONFIG have none and go to the URL's node.
  Result<Reply> command(const std::vector<std::string_view>& argv);
  // One command sent without waiting for its reply (Conn::send), to the
  // node of its key's slot as last learnt; a redirection it meets is only
  // logged: for commands whose loss costs no more than a retry elsewhere.
  Errc send(const std::vector<std::string_view>& argv);
  // EVALSHA on the node of `keys` (all in one slot), loading the script there when it lacks it.
  Result<Reply> eval(const Script& s, const std::vector<std::string_view>& keys,
                     const std::vector<std::string_view>& args);
  // Connects every known node at once (`now`: without waiting out a
  // backoff, e.g. the subscriber just reached the server); the URL node's result.
  Errc connect(bool now = false);
  // Every node known: the URL's first, then those the cluster named.
  std::vector<Endpoint> endpoints() const;
  // Learns the deployment now (CLUSTER SLOTS on the known nodes): ok or io.
  Errc refresh();
  bool cluster() const { return mode_ == Mode::cluster; }
  // The node serving `slot` as "host:port" by the map as last learnt; empty
  // if none (or on a single server).
  std::string node_of(int slot) const;
  static constexpr int kMaxRedirects = 5;

 private:
  enum class Mode { unknown, single, cluster };
  struct Node {
    std::string addr;  // "host:port" as the cluster names it
    Conn conn;
  };
  using Call = std::function<Result<Reply>(Conn&)>;
  // Runs `call` on the node of `slot` (-1: the URL's node), following
  // redirections; `s` is the script `call` runs, loaded before an ASKING.
  Result<Reply> route(int slot, const Call& call, const Script* s);
  Result<Reply> on_cluster(int slot, const Call& call, const Script* s);
  int node(const std::string& host, int port);  // its index in nodes_, made if new
  bool read_map(const Reply& slots, const std::string& asked_host);

  Options opt_;
  Mode mode_ = Mode::unknown;
  std::vector<Node> nodes_;     // [0] the URL's node; never shrinks
  std::vector<int16_t> owner_;  // slot -> index in nodes_, -1 unserved; empty on a single server
  bool said_crossslot_ = false;
};

}  // namespace mbx::redis

// SPDX-License-Identifier: MIT
#include "redis/client.h"

#include <algorithm>
#include <charconv>

#include "base/log.h"
#include "redis/slot.h"

namespace mbx::redis {

namespace {
Reply error_reply(std::string text) {
  Reply r;
  r.type = Reply::Type::error;
  r.str = std::move(text);
  return r;
}

// "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (host may be
// empty: the replying node's; an IPv6 host keeps its colons).
struct Redirect {
  bool ask = false;
  std::string host;
  int port = 0;
};
bool parse_redirect(std::string_view e, Redirect* out) {
  if (e.starts_with("MOVED ")) {
    out->ask = false;
  } else if (e.starts_with("ASK ")) {
    out->ask = true;
  } else {
    return false;
  }
  const size_t sp = e.find(' ', e.find(' ') + 1), colon = e.rfind(':');
  if (sp == std::string_view::npos || colon == std::string_view::npos || colon < sp) return false;
  std::string_view port = e.substr(colon + 1);
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), out->port);
  if (ec != std::errc() || end != port.data() + port.size()) return false;
  out->host = e.substr(sp + 1, colon - sp - 1);
  return true;
}

bool keyless(std::string_view cmd) {
  for (std::string_view k : {"PING", "INFO", "TIME", "ECHO", "PUBLISH", "CLUSTER", "SCRIPT", "CONFIG"})
    if (cmd.size() == k.size() && std::equal(cmd.begin(), cmd.end(), k.begin(),
                                             [](char a, char b) { return (a >= 'a' && a <= 'z' ? a - 32 : a) == b; }))
      return true;
  return false;
}

std::string addr_of(const std::string& host, int port) { return host + ":" + std::to_string(port); }
}  // namespace

Client::Client(Endpoint seed, Options opt) : opt_(opt) {
  std::string addr = seed.unix_socket ? "unix:" + seed.path : addr_of(seed.host, seed.port);
  nodes_.push_back(Node{std::move(addr), Conn(std::move(seed), opt)});
}
Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

int Client::node(const std::string& host, int port) {
  const std::string addr = addr_of(host, port);
  for (size_t i = 0; i < nodes_.size(); i++)
    if (nodes_[i].addr == addr) return static_cast<int>(i);
  Endpoint ep;
  ep.host = host;
  ep.port = port;  // db 0: a cluster has no other
  nodes_.push_back(Node{addr, Conn(std::move(ep), opt_)});
  return static_cast<int>(nodes_.size() - 1);
}

bool Client::read_map(const Reply& slots, const std::string& asked_host) {
  // [[start, end, [host, port, id, ...], replicas...], ...]
  std::vector<int16_t> owner(kSlots, -1);
  for (const Reply& range : slots.elements) {
    if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) return false;
    const long long lo = range.elements[0].integer, hi = range.elements[1].integer;
    const Reply& master = range.elements[2];
    std::string host = master.elements[0].str;
    if (host == "?") continue;  // no known endpoint: its slots stay unserved for us
    if (host.empty()) host = asked_host;
    const int n = node(host, static_cast<int>(master.elements[1].integer));
    for (long long s = std::max(lo, 0LL); s <= hi && s < kSlots; s++)
      owner[static_cast<size_t>(s)] = static_cast<int16_t>(n);
  }
  owner_ = std::move(owner);
  return true;
}

Errc Client::connect(bool now) {
  for (size_t i = 1; i < nodes_.size(); i++) (void)nodes_[i].conn.connect(now);
  return nodes_[0].conn.connect(now);
}

Errc Client::refresh() {
  for (size_t i = 0; i < nodes_.size(); i++) {
    auto r = nodes_[i].conn.command({"CLUSTER", "SLOTS"});
    if (!r) continue;  // that node is away: ask the next one
    if (r->is_error()) {
      if (i == 0 && mode_ != Mode::cluster) {  // no cluster support (or not enabled): a single server
        mode_ = Mode::single;
        owner_.clear();
        return Errc::ok;
      }
      continue;
    }
    if (r->type != Reply::Type::array) continue;
    const std::string asked = nodes_[i].conn.endpoint().host;
    if (!read_map(*r, asked)) {
      log(LogLevel::error, "redis %s: a CLUSTER SLOTS reply this client cannot read", nodes_[i].addr.c_str());
      continue;
    }
    if (mode_ != Mode::cluster) {
      size_t masters = 0;
      for (size_t n = 0; n < nodes_.size(); n++)
        for (int16_t o : owner_)
          if (o == static_cast<int16_t>(n)) {
            masters++;
            break;
          }
      log(LogLevel::notice, "redis %s: a cluster, %zu masters serving its slots", nodes_[0].addr.c_str(), masters);
    }
    mode_ = Mode::cluster;
    return Errc::ok;
  }
  return Errc::io;
}

std::vector<Endpoint> Client::endpoints() const {
  std::vector<Endpoint> out;
  for (const Node& n : nodes_) out.push_back(n.conn.endpoint());
  return out;
}

std::string Client::node_of(int slot) const {
  if (slot < 0 || static_cast<size_t>(slot) >= owner_.size() || owner_[static_cast<size_t>(slot)] < 0) return {};
  return nodes_[static_cast<size_t>(owner_[static_cast<size_t>(slot)])].addr;
}

Result<Reply> Client::route(int slot, const Call& call, const Script* s) {
  if (mode_ == Mode::unknown)
    if (Errc e = refresh(); e != Errc::ok) return e;
  if (mode_ == Mode::single || slot < 0) {
    auto r = call(nodes_[0].conn);
    // A redirection from a "single" server: it is a cluster after all (or became one).
    if (mode_ == Mode::cluster || slot < 0 || !r || !r->is_error() ||
        !(r->str.starts_with("MOVED ") || r->str.starts_with("ASK ")))
      return r;
    mode_ = Mode::unknown;
    if (Errc e = refresh(); e != Errc::ok) return e;
    if (mode_ != Mode::cluster) return r;
  }
  return on_cluster(slot, call, s);
}

Result<Reply> Client::on_cluster(int slot, const Call& call, const Script* s) {
  int n = owner_[static_cast<size_t>(slot)];
  bool asking = false, reloaded = false;
  for (int hop = 0;; hop++) {
    if (n < 0) {  // unserved by the map as learnt: learn it again, once
      if (!reloaded && refresh() == Errc::ok) {
        reloaded = true;
        n = owner_.empty() ? -1 : owner_[static_cast<size_t>(slot)];
        if (n >= 0) continue;
      }
      return error_reply("CLUSTERDOWN Hash slot not served");
    }
    Conn& c = nodes_[static_cast<size_t>(n)].conn;
    if (asking) {  // the slot is moving and the key is at the target: ASKING holds for the next command only
      if (s)
        if (auto sha = c.load(*s); !sha) return sha.error();
      auto a = c.command({"ASKING"});
      if (!a) return a.error();
    }
    auto r = call(c);
    if (!r) {  // the node does not answer: a failover may have moved its slots
      if (reloaded || refresh() != Errc::ok) return r;
      reloaded = true;
      const int now = owner_.empty() ? -1 : owner_[static_cast<size_t>(slot)];
      if (now == n) return r;
      n = now;
      asking = false;
      continue;
    }
    Redirect d;
    if (!r->is_error() || hop >= kMaxRedirects || !parse_redirect(r->str, &d)) return r;
    if (d.host.empty()) d.host = c.endpoint().host;
    const int to = node(d.host, d.port);
    asking = d.ask;
    if (!d.ask) {  // the slot moved for good: the map is stale, learn it again (this slot as MOVED says)
      (void)refresh();
      if (!owner_.empty()) owner_[static_cast<size_t>(slot)] = static_cast<int16_t>(to);
    }
    n = to;
  }
}

Result<Reply> Client::command(const std::vector<std::string_view>& argv) {
  const int slot = argv.size() < 2 || keyless(argv[0]) ? -1 : key_slot(argv[1]);
  return route(
      slot, [&](Conn& c) { return c.command(argv); }, nullptr);
}

Errc Client::send(const std::vector<std::string_view>& argv) {
  if (mode_ == Mode::unknown)
    if (Errc e = refresh(); e != Errc::ok) return e;
  const int slot = argv.size() < 2 || keyless(argv[0]) ? -1 : key_slot(argv[1]);
  int n = 0;
  if (mode_ == Mode::cluster && slot >= 0) n = owner_[static_cast<size_t>(slot)];
  if (n < 0) return Errc::io;  // unserved as last learnt
  return nodes_[static_cast<size_t>(n)].conn.send(argv);
}

Result<Reply> Client::eval(const Script& s, const std::vector<std::string_view>& keys,
                           const std::vector<std::string_view>& args) {
  const int slot = keys.empty() ? -1 : key_slot(keys[0]);
  for (auto k : keys)
    if (key_slot(k) != slot) {
      if (!said_crossslot_)
        log(LogLevel::error, "redis: script %.*s given keys of different slots (%.*s, %.*s)",
            static_cast<int>(s.name.size()), s.name.data(), static_cast<int>(keys[0].size()), keys[0].data(),
            static_cast<int>(k.size()), k.data());
      said_crossslot_ = true;
      return error_reply("CROSSSLOT Keys in request don't hash to the same slot");
    }
  return route(
      slot, [&](Conn& c) { return c.eval(s, keys, args); }, &s);
}

}  // namespace mbx::redis

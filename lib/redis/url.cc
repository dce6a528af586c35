// SPDX-License-Identifier: MIT
#include "redis/url.h"

#include <charconv>

namespace mbx::redis {

namespace {
// A decimal number in [lo, hi], the whole of `s`.
bool number(std::string_view s, int lo, int hi, int* out) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}
bool has_control(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}
}  // namespace

std::string Endpoint::text() const {
  if (unix_socket) return "redis+unix://" + path + (db ? "?db=" + std::to_string(db) : "");
  const bool v6 = host.find(':') != std::string::npos;
  return "redis://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port) + "/" + std::to_string(db);
}

Result<Endpoint> parse_url(std::string_view url) {
  Endpoint e;
  if (has_control(url)) return Errc::invalid;
  constexpr std::string_view kUnix = "redis+unix://", kTcp = "redis://";
  if (url.starts_with(kUnix)) {
    std::string_view rest = url.substr(kUnix.size());
    if (auto q = rest.find('?'); q != std::string_view::npos) {
      std::string_view query = rest.substr(q + 1);
      rest = rest.substr(0, q);
      if (!query.starts_with("db=") || !number(query.substr(3), 0, 65535, &e.db)) return Errc::invalid;
    }
    if (rest.size() < 2 || rest[0] != '/' || rest.back() == '/') return Errc::invalid;  // an absolute file path
    e.unix_socket = true;
    e.path = rest;
    return e;
  }
  if (!url.starts_with(kTcp)) return Errc::invalid;
  std::string_view rest = url.substr(kTcp.size());
  std::string_view hostport = rest.substr(0, rest.find('/'));
  if (hostport.size() < rest.size()) {
    std::string_view db = rest.substr(hostport.size() + 1);
    if (!db.empty() && !number(db, 0, 65535, &e.db)) return Errc::invalid;
  }
  std::string_view port;
  if (hostport.starts_with("[")) {  // [IPv6]:port
    auto close = hostport.find(']');
    if (close == std::string_view::npos) return Errc::invalid;
    e.host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Errc::invalid;
      port = after.substr(1);
      if (port.empty()) return Errc::invalid;
    }
  } else {
    auto colon = hostport.find(':');
    e.host = hostport.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = hostport.substr(colon + 1);
      if (port.empty()) return Errc::invalid;
    }
  }
  if (e.host.empty() || e.host.find_first_of("@/?# ") != std::string::npos) return Errc::invalid;
  if (!port.empty() && !number(port, 1, 65535, &e.port)) return Errc::invalid;
  return e;
}

}  // namespace mbx::redis

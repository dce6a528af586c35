// SPDX-License-Identifier: MIT
// Where a Redis server is: -o backend=redis://HOST[:PORT][/DB] or
// redis+unix:///path/to/socket[?db=N], parsed in one place.
#pragma once
#include <string>
#include <string_view>

#include "base/errc.h"

namespace mbx::redis {

struct Endpoint {
  bool unix_socket = false;
  std::string host;  // TCP: a name or address (an IPv6 one without brackets)
  int port = 6379;
  std::string path;  // unix socket
  int db = 0;
  // The URL again, normalised (for log lines).
  std::string text() const;
};

// invalid for anything but the two forms above (ports 1..65535, db 0..65535).
Result<Endpoint> parse_url(std::string_view url);

}  // namespace mbx::redis

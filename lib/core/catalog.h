// SPDX-License-Identifier: MIT
// The names of a mount whose mailboxes several daemons share (the Redis
// backend): what the tree asks before it trusts its own nodes. Paths are
// absolute within the mount ("/a/b"). Each call is one atomic step on the
// shared catalog, so two daemons cannot both create a name, and rmdir sees
// every daemon's entries.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/errc.h"

namespace mbx {

struct CatalogEntry {
  bool dir = false;
  std::string rid;  // a mailbox's store (RedisBackend::open_store); empty for a directory
  mode_t mode = 0;  // permission bits only
  uid_t uid = 0;
  gid_t gid = 0;
  bool operator==(const CatalogEntry&) const = default;
};

class Catalog {
 public:
  virtual ~Catalog() = default;
  // nullopt: no such name.
  virtual Result<std::optional<CatalogEntry>> get(const std::string& path) = 0;
  // The names directly under directory `dir` ("" for the root).
  virtual Result<std::vector<std::pair<std::string, CatalogEntry>>> list(const std::string& dir) = 0;
  // exists; not_found / not_dir: the parent is not a directory there.
  virtual Errc add(const std::string& path, const CatalogEntry& e) = 0;
  // Removes a name (a directory only when empty: not_empty); returns its entry.
  virtual Result<CatalogEntry> remove(const std::string& path, bool dir) = 0;
  // Moves a name (a directory with everything under it); returns the entry
  // it replaced, if any. The errors of rename(2).
  virtual Result<std::optional<CatalogEntry>> rename(const std::string& from, const std::string& to,
                                                     bool noreplace) = 0;
  // New mode, uid, gid of an existing name.
  virtual Errc update(const std::string& path, const CatalogEntry& e) = 0;
  // A store id no other daemon will use.
  virtual Result<std::string> new_rid() = 0;
};

}  // namespace mbx

// SPDX-License-Identifier: MIT
// The shared catalog of names on Redis: one hash per namespace,
// mbx:{NS}:tree, field = path, value = "f <rid> <mode> <uid> <gid>" or
// "d - <mode> <uid> <gid>"; each change is one Lua script on that key
// (core/redis_catalog.cc). Store ids come from INCR mbx:{NS}:rid.
#pragma once
#include "core/catalog.h"
#include "core/redis_store.h"

namespace mbx {

class RedisCatalog final : public Catalog {
 public:
  explicit RedisCatalog(RedisBackend& b);
  Result<std::optional<CatalogEntry>> get(const std::string& path) override;
  Result<std::vector<std::pair<std::string, CatalogEntry>>> list(const std::string& dir) override;
  Errc add(const std::string& path, const CatalogEntry& e) override;
  Result<CatalogEntry> remove(const std::string& path, bool dir) override;
  Result<std::optional<CatalogEntry>> rename(const std::string& from, const std::string& to, bool noreplace) override;
  Errc update(const std::string& path, const CatalogEntry& e) override;
  Result<std::string> new_rid() override;

 private:
  RedisBackend& b_;
  const std::string tree_, rid_;  // the keys
};

}  // namespace mbx

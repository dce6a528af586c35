// SPDX-License-Identifier: MIT
#include "core/redis_catalog.h"

#include <cstdio>

namespace mbx {

namespace {
using redis::Reply;

std::string encode(const CatalogEntry& e) {
  return std::string(e.dir ? "d " : "f ") + (e.dir || e.rid.empty() ? "-" : e.rid) + " " +
         std::to_string(e.mode & 07777) + " " + std::to_string(e.uid) + " " + std::to_string(e.gid);
}

std::optional<CatalogEntry> decode(const std::string& v) {
  char kind = 0;
  char rid[128] = {};
  unsigned mode = 0, uid = 0, gid = 0;
  if (std::sscanf(v.c_str(), "%c %127s %u %u %u", &kind, rid, &mode, &uid, &gid) != 5) return std::nullopt;
  if (kind != 'd' && kind != 'f') return std::nullopt;
  CatalogEntry e;
  e.dir = kind == 'd';
  if (!e.dir) e.rid = rid;
  e.mode = static_cast<mode_t>(mode & 07777);
  e.uid = uid;
  e.gid = gid;
  return e;
}

std::string parent_of(const std::string& path) { return path.substr(0, path.rfind('/')); }

Errc status_errc(const std::string& s) {
  if (s == "OK") return Errc::ok;
  if (s == "NOENT") return Errc::not_found;
  if (s == "EXIST") return Errc::exists;
  if (s == "NOTDIR") return Errc::not_dir;
  if (s == "ISDIR") return Errc::is_dir;
  if (s == "NOTEMPTY") return Errc::not_empty;
  if (s == "INVAL") return Errc::invalid;
  return Errc::io;
}

// KEYS[1] the tree hash. A parent "" is the root, which always exists.
constexpr std::string_view kParentCheck = R"lua(
local function parent_ok(p)
  if p == '' then return nil end
  local v = redis.call('HGET', KEYS[1], p)
  if not v then return 'NOENT' end
  if string.sub(v, 1, 1) ~= 'd' then return 'NOTDIR' end
  return nil
end
local function has_children(dir)
  local pre = dir .. '/'
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(k, 1, #pre) == pre then return true end
  end
  return false
end
)lua";

// ARGV: path, value, parent.
constexpr std::string_view kAddBody = R"lua(
local bad = parent_ok(ARGV[3])
if bad then return {bad} end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return {'EXIST'} end
return {'OK'}
)lua";

// ARGV: path, '1' for a directory.
constexpr std::string_view kRemoveBody = R"lua(
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'NOENT'} end
local isdir = string.sub(v, 1, 1) == 'd'
if ARGV[2] == '1' and not isdir then return {'NOTDIR'} end
if ARGV[2] ~= '1' and isdir then return {'ISDIR'} end
if isdir and has_children(ARGV[1]) then return {'NOTEMPTY'} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {'OK', v}
)lua";

// ARGV: from, to, noreplace ('1'), parent of to.
constexpr std::string_view kRenameBody = R"lua(
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'NOENT'} end
local bad = parent_ok(ARGV[4])
if bad then return {bad} end
if ARGV[1] == ARGV[2] then return {'OK'} end
local isdir = string.sub(v, 1, 1) == 'd'
local from_pre = ARGV[1] .. '/'
if isdir and string.sub(ARGV[2], 1, #from_pre) == from_pre then return {'INVAL'} end
local d = redis.call('HGET', KEYS[1], ARGV[2])
if d then
  if ARGV[3] == '1' then return {'EXIST'} end
  local ddir = string.sub(d, 1, 1) == 'd'
  if isdir and not ddir then return {'NOTDIR'} end
  if ddir and not isdir then return {'ISDIR'} end
  if ddir and has_children(ARGV[2]) then return {'NOTEMPTY'} end
end
redis.call('HSET', KEYS[1], ARGV[2], v)
redis.call('HDEL', KEYS[1], ARGV[1])
if isdir then
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(k, 1, #from_pre) == from_pre then
      redis.call('HSET', KEYS[1], ARGV[2] .. string.sub(k, #ARGV[1] + 1), redis.call('HGET', KEYS[1], k))
      redis.call('HDEL', KEYS[1], k)
    end
  end
end
if d then return {'OK', d} end
return {'OK'}
)lua";

// ARGV: path, value.
constexpr std::string_view kUpdateBody = R"lua(
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {'NOENT'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'OK'}
)lua";

// ARGV: directory ("" the root). {name, value, name, value, ...} of its children.
constexpr std::string_view kListBody = R"lua(
local pre = ARGV[1] .. '/'
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local k = all[i]
  if string.sub(k, 1, #pre) == pre and not string.find(k, '/', #pre + 1, true) then
    out[#out + 1] = string.sub(k, #pre + 1)
    out[#out + 1] = all[i + 1]
  end
end
return out
)lua";

const std::string& script_text(std::string_view body) {
  static const std::string add = std::string(kParentCheck) + std::string(kAddBody),
                           rm = std::string(kParentCheck) + std::string(kRemoveBody),
                           mv = std::string(kParentCheck) + std::string(kRenameBody), up = std::string(kUpdateBody),
                           ls = std::string(kListBody);
  if (body == kAddBody) return add;
  if (body == kRemoveBody) return rm;
  if (body == kRenameBody) return mv;
  if (body == kUpdateBody) return up;
  return ls;
}
redis::Script script(std::string_view name, std::string_view body) { return {name, script_text(body)}; }
}  // namespace

RedisCatalog::RedisCatalog(RedisBackend& b)
    : b_(b), tree_("mbx:{" + b.config().ns + "}:tree"), rid_("mbx:{" + b.config().ns + "}:rid") {}

Result<std::optional<CatalogEntry>> RedisCatalog::get(const std::string& path) {
  auto r = b_.command({"HGET", tree_, path});
  if (!r) return r.error();
  if (r->type == Reply::Type::nil) return std::optional<CatalogEntry>();
  if (r->type != Reply::Type::string) return Errc::io;
  auto e = decode(r->str);
  if (!e) return Errc::io;
  return e;
}

Result<std::vector<std::pair<std::string, CatalogEntry>>> RedisCatalog::list(const std::string& dir) {
  auto r = b_.eval(script("list", kListBody), {tree_}, {dir});
  if (!r) return r.error();
  if (r->type != Reply::Type::array) return Errc::io;
  std::vector<std::pair<std::string, CatalogEntry>> out;
  for (size_t i = 0; i + 1 < r->elements.size(); i += 2)
    if (auto e = decode(r->elements[i + 1].str)) out.emplace_back(r->elements[i].str, *e);
  return out;
}

Errc RedisCatalog::add(const std::string& path, const CatalogEntry& e) {
  auto r = b_.eval(script("tree_add", kAddBody), {tree_}, {path, encode(e), parent_of(path)});
  if (!r) return r.error();
  return r->type == Reply::Type::array && !r->elements.empty() ? status_errc(r->elements[0].str) : Errc::io;
}

Result<CatalogEntry> RedisCatalog::remove(const std::string& path, bool dir) {
  auto r = b_.eval(script("tree_remove", kRemoveBody), {tree_}, {path, dir ? "1" : "0"});
  if (!r) return r.error();
  if (r->type != Reply::Type::array || r->elements.empty()) return Errc::io;
  if (Errc e = status_errc(r->elements[0].str); e != Errc::ok) return e;
  auto e = r->elements.size() == 2 ? decode(r->elements[1].str) : std::nullopt;
  if (!e) return Errc::io;
  return *e;
}

Result<std::optional<CatalogEntry>> RedisCatalog::rename(const std::string& from, const std::string& to,
                                                         bool noreplace) {
  auto r = b_.eval(script("tree_rename", kRenameBody), {tree_}, {from, to, noreplace ? "1" : "0", parent_of(to)});
  if (!r) return r.error();
  if (r->type != Reply::Type::array || r->elements.empty()) return Errc::io;
  if (Errc e = status_errc(r->elements[0].str); e != Errc::ok) return e;
  if (r->elements.size() == 2) return decode(r->elements[1].str);
  return std::optional<CatalogEntry>();
}

Errc RedisCatalog::update(const std::string& path, const CatalogEntry& e) {
  auto r = b_.eval(script("tree_update", kUpdateBody), {tree_}, {path, encode(e)});
  if (!r) return r.error();
  return r->type == Reply::Type::array && !r->elements.empty() ? status_errc(r->elements[0].str) : Errc::io;
}

Result<std::string> RedisCatalog::new_rid() {
  auto r = b_.command({"INCR", rid_});
  if (!r) return r.error();
  if (r->type != Reply::Type::integer) return Errc::io;
  return std::to_string(r->integer);
}

}  // namespace mbx

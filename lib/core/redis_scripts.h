// SPDX-License-Identifier: MIT
// The Lua scripts of the Redis store (core/redis_store.h): each send,
// receive and settings change is one of them, run on the server as one
// atomic step (an acknowledgement is one HDEL of the in-flight record). Every
// key a script touches is one mailbox's (KEYS, all under the mailbox's hash
// tag), so they run on Redis Cluster too.
//
// KEYS[1] meta hash, KEYS[2] queue list, KEYS[3] this daemon's in-flight hash.
// A queued record is "<seq> <len> <sender>\n<payload>". Replies are arrays
// whose first element says what happened: OK, FULL, EMPTY, GONE, TOOBIG,
// TAKEN, RECEIVED. capacity -1 is unbounded; 0 (rendezvous) holds the one
// message on offer. The scripts that publish take the channel and the
// event to publish in ARGV.
#pragma once
#include "redis/conn.h"

namespace mbx::redis_scripts {

// ARGV: capacity, max_message, framing, timeout_ms. Makes the mailbox unless
// it exists; answers {created (0/1), capacity, max_message, framing,
// timeout_ms} as they are now (the last two nil in a mailbox made before
// they were shared).
inline constexpr redis::Script kInit{"init", R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'capacity', ARGV[1], 'max_message', ARGV[2], 'next_seq', 0, 'popped', 0,
    'consumed', 0, 'returned', 0, 'total_sent', 0, 'total_received', 0, 'bytes', 0, 'lost', 0, 'last_send', 0,
    'last_recv', 0, 'framing', ARGV[3], 'timeout_ms', ARGV[4])
  return {1, ARGV[1], ARGV[2], ARGV[3], ARGV[4]}
end
local g = redis.call('HMGET', KEYS[1], 'capacity', 'max_message', 'framing', 'timeout_ms')
return {0, g[1], g[2], g[3], g[4]}
)lua"};

// The counters and the shared settings as a script leaves them, appended
// to its reply by push, pop and stats (a send or receive needs no second
// round trip to learn them): count, capacity, next_seq, consumed,
// total_sent, total_received, bytes, lost, last_send, last_recv, returned,
// max_message, framing, timeout_ms. `consumed` falls back to `popped` in a
// mailbox made before it was kept; nil if the mailbox is gone.
// take(now) moves the oldest record to this daemon's in-flight hash (a
// receive) and answers it, or nil; `consumed` (one past the highest seq ever
// taken) only grows.
#define MBX_REDIS_COMMON_LUA                                                                                                \
  "local function counters(r)\n"                                                                                            \
  "  local g = redis.call('HMGET', KEYS[1], 'capacity', 'next_seq', 'consumed', 'total_sent', 'total_received', 'bytes',\n" \
  "    'lost', 'last_send', 'last_recv', 'returned', 'popped', 'max_message', 'framing', 'timeout_ms')\n"                   \
  "  if not g[1] then return nil end\n"                                                                                     \
  "  r[#r + 1] = redis.call('LLEN', KEYS[2])\n"                                                                             \
  "  g[3] = g[3] or g[11]\n"                                                                                                \
  "  g[10] = g[10] or 0\n"                                                                                                  \
  "  for i = 1, 10 do r[#r + 1] = g[i] end\n"                                                                               \
  "  for i = 12, 14 do r[#r + 1] = g[i] end\n"                                                                              \
  "  return r\n"                                                                                                            \
  "end\n"                                                                                                                   \
  "local function take(now)\n"                                                                                              \
  "  local rec = redis.call('LPOP', KEYS[2])\n"                                                                             \
  "  if not rec then return nil end\n"                                                                                      \
  "  local seq, len = string.match(rec, '^(%d+) (%d+) ')\n"                                                                 \
  "  redis.call('HSET', KEYS[3], seq, rec)\n"                                                                               \
  "  if tonumber(seq) >= tonumber(redis.call('HGET', KEYS[1], 'consumed') or 0) then\n"                                     \
  "    redis.call('HSET', KEYS[1], 'consumed', tonumber(seq) + 1)\n"                                                        \
  "  end\n"                                                                                                                 \
  "  redis.call('HINCRBY', KEYS[1], 'popped', 1)\n"                                                                         \
  "  redis.call('HINCRBY', KEYS[1], 'total_received', 1)\n"                                                                 \
  "  redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(len))\n"                                                             \
  "  redis.call('HSET', KEYS[1], 'last_recv', now)\n"                                                                       \
  "  return rec\n"                                                                                                          \
  "end\n"
inline constexpr size_t kCounters = 14;  // elements counters() appends

// ARGV: payload, sender text, now (ns), force (1: ignore capacity), channel,
// event, take (1: a receive of this daemon is parked: the oldest record
// moves to its in-flight hash in the same step, as kPop would move it).
// {OK, seq, taken record or nil, counters...}.
inline constexpr redis::Script kPush{"push", MBX_REDIS_COMMON_LUA R"lua(
local g = redis.call('HMGET', KEYS[1], 'capacity', 'max_message')
if not g[1] then return {'GONE'} end
local len = string.len(ARGV[1])
if ARGV[4] ~= '1' then
  if len > tonumber(g[2]) then return {'TOOBIG'} end
  local cap = tonumber(g[1])
  if cap >= 0 and redis.call('LLEN', KEYS[2]) >= math.max(cap, 1) then return {'FULL'} end
end
local seq = redis.call('HINCRBY', KEYS[1], 'next_seq', 1) - 1
redis.call('RPUSH', KEYS[2], seq .. ' ' .. len .. ' ' .. ARGV[2] .. '\n' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'total_sent', 1)
redis.call('HINCRBY', KEYS[1], 'bytes', len)
redis.call('HSET', KEYS[1], 'last_send', ARGV[3])
local rec = false
if ARGV[7] == '1' then rec = take(ARGV[3]) or false end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return counters({'OK', seq, rec})
)lua"};

// ARGV: now (ns), channel, event. Takes the oldest record (take() above).
// {OK, record, counters...}.
inline constexpr redis::Script kPop{"pop", MBX_REDIS_COMMON_LUA R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
local rec = take(ARGV[1])
if not rec then return {'EMPTY'} end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return counters({'OK', rec})
)lua"};

// ARGV: seq, channel, event. The reply was not sent (an interrupt): the
// in-flight message goes back to the front, as if never received (but
// `consumed` stays: a rendezvous sender may have seen it taken).
inline constexpr redis::Script kUnpop{"unpop", R"lua(
local rec = redis.call('HGET', KEYS[3], ARGV[1])
if not rec then return {'RECEIVED'} end
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
local seq, len = string.match(rec, '^(%d+) (%d+) ')
redis.call('LPUSH', KEYS[2], rec)
redis.call('HINCRBY', KEYS[1], 'popped', -1)
redis.call('HINCRBY', KEYS[1], 'total_received', -1)
redis.call('HINCRBY', KEYS[1], 'bytes', tonumber(len))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'OK'}
)lua"};

// ARGV: seq. Takes back the one queued message if it is `seq` (an
// interrupted rendezvous send), counted as removed and never sent.
inline constexpr redis::Script kWithdraw{"withdraw", R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {'TAKEN'} end
if redis.call('LLEN', KEYS[2]) ~= 1 then return {'RECEIVED'} end
local rec = redis.call('LINDEX', KEYS[2], 0)
local seq, len = string.match(rec, '^(%d+) (%d+) ')
if seq ~= ARGV[1] then return {'RECEIVED'} end
redis.call('LPOP', KEYS[2])
if tonumber(seq) >= tonumber(redis.call('HGET', KEYS[1], 'consumed') or 0) then
  redis.call('HSET', KEYS[1], 'consumed', tonumber(seq) + 1)
end
redis.call('HINCRBY', KEYS[1], 'popped', 1)
redis.call('HINCRBY', KEYS[1], 'total_sent', -1)
redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(len))
return {'TAKEN'}
)lua"};

// Payload length of the oldest message.
inline constexpr redis::Script kPeek{"peek", R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
local rec = redis.call('LINDEX', KEYS[2], 0)
if not rec then return {'EMPTY'} end
local seq, len = string.match(rec, '^(%d+) (%d+) ')
return {'OK', tonumber(len)}
)lua"};

// {OK, counters...} (counters() above).
inline constexpr redis::Script kStats{"stats", MBX_REDIS_COMMON_LUA R"lua(
return counters({'OK'}) or {'GONE'}
)lua"};

// The largest queued payload.
inline constexpr redis::Script kMaxLen{"max_len", R"lua(
local m = 0
for _, rec in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local seq, len = string.match(rec, '^(%d+) (%d+) ')
  m = math.max(m, tonumber(len))
end
return {'OK', m}
)lua"};

// ARGV: capacity, max_message, channel, event. Queued messages stay as they
// are; the other daemons look again (a larger capacity frees their senders).
inline constexpr redis::Script kReshape{"reshape", R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
redis.call('HSET', KEYS[1], 'capacity', ARGV[1], 'max_message', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'OK'}
)lua"};

// ARGV: framing, timeout_ms, channel, event. The settings every daemon's
// open files of the mailbox take from now on.
inline constexpr redis::Script kSettings{"settings", R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
redis.call('HSET', KEYS[1], 'framing', ARGV[1], 'timeout_ms', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'OK'}
)lua"};

// ARGV: channel, event. Deletes the mailbox and tells every daemon.
inline constexpr redis::Script kDestroy{"destroy", R"lua(
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {'OK'}
)lua"};

// ---- leases (KEYS[1] the namespace's daemons hash: daemon id -> lease end, server ms) ----

// ARGV: daemon id, lease (ms). Renews this daemon's lease; answers the
// server's time and 1 if the lease was not there (first, or claimed as dead).
inline constexpr redis::Script kRenew{"renew", R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new = redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
return {'OK', now, new}
)lua"};

// KEYS: the daemons hash, daemon ARGV[1]'s set of mailboxes. Deletes the
// set once its records were returned, unless the daemon renewed meanwhile
// (it was slow, not dead): then the set still covers what it receives next.
inline constexpr redis::Script kDropSet{"drop_set", R"lua(
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'OK', 0} end
redis.call('DEL', KEYS[2])
return {'OK', 1}
)lua"};

// ARGV: this daemon's id. Claims every other daemon whose lease ended (they
// leave the hash, so one claimer each) and answers their ids.
inline constexpr redis::Script kClaimDead{"claim_dead", R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local dead = {'OK'}
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and tonumber(all[i + 1]) < now then
    redis.call('HDEL', KEYS[1], all[i])
    dead[#dead + 1] = all[i]
  end
end
return dead
)lua"};

// KEYS: meta, queue, the dead daemon's in-flight hash of this mailbox.
// ARGV: channel, event. Returns its in-flight records to the front of the
// queue in seq order, as if never received; counts them in `returned`.
// `consumed` stays where it is: it never steps back.
inline constexpr redis::Script kReturn{"return", R"lua(
local all = redis.call('HGETALL', KEYS[3])
redis.call('DEL', KEYS[3])
if #all == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return {'OK', 0} end
local recs = {}
for i = 2, #all, 2 do recs[#recs + 1] = all[i] end
local function seq(r) return tonumber(string.match(r, '^(%d+) ')) end
table.sort(recs, function(a, b) return seq(a) > seq(b) end)
for _, rec in ipairs(recs) do
  local s, len = string.match(rec, '^(%d+) (%d+) ')
  redis.call('LPUSH', KEYS[2], rec)
  redis.call('HINCRBY', KEYS[1], 'bytes', tonumber(len))
end
redis.call('HINCRBY', KEYS[1], 'popped', -#recs)
redis.call('HINCRBY', KEYS[1], 'total_received', -#recs)
redis.call('HINCRBY', KEYS[1], 'returned', #recs)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {'OK', #recs}
)lua"};

}  // namespace mbx::redis_scripts

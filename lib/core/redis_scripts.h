// SPDX-License-Identifier: MIT
// The Lua scripts of the Redis store (core/redis_store.h): each send,
// receive and settings change is one of them, run on the server as one
// atomic step (an acknowledgement is one HDEL of the in-flight record). Every
// key a script touches is one mailbox's (KEYS, all under the mailbox's hash
// tag), so they run on Redis Cluster too.
//
// KEYS[1] meta hash, KEYS[2] queue list, KEYS[3] this daemon's in-flight hash,
// KEYS[4] the hand-offs hash ("<daemon>|<seq>" -> "<hid> <record>": records a
// push moved to a receive parked on that daemon), KEYS[5] the waiters hash
// (daemon -> receives parked there that no push has served yet), KEYS[6]
// this daemon's tokens hash (a store's field -> "<token> <seq>": the record
// its last pop, or push taking for a receive, moved to the in-flight hash;
// and "c:<field>:<token>" -> 1: a call given up before the server ran it,
// which must not take when it runs; kLost), KEYS[7] the viewers set (the
// daemons that watch the mailbox: a push or pop publishes its event only
// when a daemon other than its own is there; announce()).
// A queued record is "<seq> <len> <sender>\n<payload>". Replies are arrays
// whose first element says what happened: OK, FULL, EMPTY, GONE, TOOBIG,
// TAKEN, RECEIVED, HANDED. capacity -1 is unbounded; 0 (rendezvous) holds the one
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
// max_message, framing, timeout_ms, receives parked on every daemon (the
// waiters hash's sum). `consumed` falls back to `popped` in a
// mailbox made before it was kept; nil if the mailbox is gone.
// take_rec(now) removes the oldest record as a receive does and answers it,
// or nil; take(now) also keeps it in this daemon's in-flight hash; `consumed`
// (one past the highest seq ever taken) only grows. untick(d) uses one of
// daemon d's waiter entries (1) if it has one (else 0).
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
  "  local n = 0\n"                                                                                                         \
  "  for _, v in ipairs(redis.call('HVALS', KEYS[5])) do n = n + tonumber(v) end\n"                                         \
  "  r[#r + 1] = n\n"                                                                                                       \
  "  return r\n"                                                                                                            \
  "end\n"                                                                                                                   \
  "local function take_rec(now)\n"                                                                                          \
  "  local rec = redis.call('LPOP', KEYS[2])\n"                                                                             \
  "  if not rec then return nil end\n"                                                                                      \
  "  local seq, len = string.match(rec, '^(%d+) (%d+) ')\n"                                                                 \
  "  if tonumber(seq) >= tonumber(redis.call('HGET', KEYS[1], 'consumed') or 0) then\n"                                     \
  "    redis.call('HSET', KEYS[1], 'consumed', tonumber(seq) + 1)\n"                                                        \
  "  end\n"                                                                                                                 \
  "  redis.call('HINCRBY', KEYS[1], 'popped', 1)\n"                                                                         \
  "  redis.call('HINCRBY', KEYS[1], 'total_received', 1)\n"                                                                 \
  "  redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(len))\n"                                                             \
  "  redis.call('HSET', KEYS[1], 'last_recv', now)\n"                                                                       \
  "  return rec\n"                                                                                                          \
  "end\n"                                                                                                                   \
  "local function take(now)\n"                                                                                              \
  "  local rec = take_rec(now)\n"                                                                                           \
  "  if rec then redis.call('HSET', KEYS[3], string.match(rec, '^(%d+) '), rec) end\n"                                      \
  "  return rec\n"                                                                                                          \
  "end\n"                                                                                                                   \
  "local function announce(me, ch, ev)\n"                                                                                    \
  "  local n = redis.call('SCARD', KEYS[7])\n"                                                                              \
  "  if n == 0 or (n == 1 and redis.call('SISMEMBER', KEYS[7], me) == 1) then return end\n"                                \
  "  redis.call('PUBLISH', ch, ev)\n"                                                                                       \
  "end\n"                                                                                                                   \
  "local function untick(d)\n"                                                                                              \
  "  local n = tonumber(redis.call('HGET', KEYS[5], d) or 0)\n"                                                             \
  "  if n <= 0 then return 0 end\n"                                                                                         \
  "  if n == 1 then redis.call('HDEL', KEYS[5], d) else redis.call('HINCRBY', KEYS[5], d, -1) end\n"                        \
  "  return 1\n"                                                                                                            \
  "end\n"
inline constexpr size_t kCounters = 15;  // elements counters() appends

// requeue(recs): records taken out of the queue (in flight, or handed to a
// daemon) go back to its front in seq order, as if never received (but
// `consumed` stays: a rendezvous sender may have seen them taken).
#define MBX_REDIS_REQUEUE_LUA                                                 \
  "local function requeue(recs)\n"                                            \
  "  local function seq(r) return tonumber(string.match(r, '^(%d+) ')) end\n" \
  "  table.sort(recs, function(a, b) return seq(a) > seq(b) end)\n"           \
  "  for _, rec in ipairs(recs) do\n"                                         \
  "    local s, len = string.match(rec, '^(%d+) (%d+) ')\n"                   \
  "    redis.call('LPUSH', KEYS[2], rec)\n"                                   \
  "    redis.call('HINCRBY', KEYS[1], 'bytes', tonumber(len))\n"              \
  "  end\n"                                                                   \
  "  redis.call('HINCRBY', KEYS[1], 'popped', -#recs)\n"                      \
  "  redis.call('HINCRBY', KEYS[1], 'total_received', -#recs)\n"              \
  "end\n"

// ARGV: payload, sender text, now (ns), force (1: ignore capacity), channel,
// event, take (1: a receive of this daemon is parked: the oldest record
// moves to its in-flight hash in the same step, as kPop would move it; 2:
// one is on its way: the same, unless the mailbox is a rendezvous one, where
// a take would count as received; 0: none), this
// daemon's id, the longest record a hand-off event carries, the hand-off
// event's head ("h <daemon> <rid>"). Without take, a receive parked on
// another daemon (an entry in the waiters hash, the first registered) gets
// the oldest record: it moves to the hand-offs hash under that daemon, the
// entry is used, and the event "<head> <to> <hid> <seq>[\n<record>]" tells
// that daemon (hid: the mailbox's count of hand-offs). A capacity-0 mailbox
// takes a message then as a receive takes it at once. Then the store's
// field in the tokens hash and this call's token: a record taken is noted there.
// The event goes out only if another daemon views the mailbox (announce);
// a hand-off's always does. {OK, seq, taken record or nil, waiter entry
// used (0/1), counters...}.
inline constexpr redis::Script kPush{"push", MBX_REDIS_COMMON_LUA R"lua(
local g = redis.call('HMGET', KEYS[1], 'capacity', 'max_message')
if not g[1] then return {'GONE'} end
if ARGV[7] ~= '0' and redis.call('HEXISTS', KEYS[6], 'c:' .. ARGV[11] .. ':' .. ARGV[12]) == 1 then
  redis.call('HDEL', KEYS[6], 'c:' .. ARGV[11] .. ':' .. ARGV[12])
  return {'LOST'}
end
local len = string.len(ARGV[1])
local to = false
if ARGV[7] == '1' or (ARGV[7] == '2' and g[1] ~= '0') then
  to = ARGV[8]
else
  local w = redis.call('HGETALL', KEYS[5])
  for i = 1, #w, 2 do
    if w[i] ~= ARGV[8] and tonumber(w[i + 1]) > 0 then
      to = w[i]
      break
    end
  end
end
if ARGV[4] ~= '1' then
  if len > tonumber(g[2]) then return {'TOOBIG'} end
  local cap = tonumber(g[1])
  local room = math.max(cap, 1) + ((to and to ~= ARGV[8]) and 1 or 0)
  if cap >= 0 and redis.call('LLEN', KEYS[2]) >= room then return {'FULL'} end
end
local seq = redis.call('HINCRBY', KEYS[1], 'next_seq', 1) - 1
redis.call('RPUSH', KEYS[2], seq .. ' ' .. len .. ' ' .. ARGV[2] .. '\n' .. ARGV[1])
redis.call('HINCRBY', KEYS[1], 'total_sent', 1)
redis.call('HINCRBY', KEYS[1], 'bytes', len)
redis.call('HSET', KEYS[1], 'last_send', ARGV[3])
local rec, used, ev = false, 0, ARGV[6]
if to == ARGV[8] then
  rec = take(ARGV[3]) or false
  if rec then
    used = untick(ARGV[8])
    redis.call('HSET', KEYS[6], ARGV[11], ARGV[12] .. ' ' .. string.match(rec, '^(%d+) '))
  end
elseif to then
  local r = take_rec(ARGV[3])
  untick(to)
  local hid = redis.call('HINCRBY', KEYS[1], 'handoffs', 1)
  local s = string.match(r, '^(%d+) ')
  redis.call('HSET', KEYS[4], to .. '|' .. s, hid .. ' ' .. r)
  ev = ARGV[10] .. ' ' .. to .. ' ' .. hid .. ' ' .. s
  if string.len(r) <= tonumber(ARGV[9]) then ev = ev .. '\n' .. r end
end
if ev == ARGV[6] then announce(ARGV[8], ARGV[5], ev) else redis.call('PUBLISH', ARGV[5], ev) end
return counters({'OK', seq, rec, used})
)lua"};

// ARGV: now (ns), channel, event, this daemon's id, grant, the store's
// field in the tokens hash, this call's token, then the seqs of
// the hand-offs it holds (heard of with their record) or gave to receives
// and has not acked. A record handed to this daemon that is none of those
// (its notification is lost or still on its way, or was too long to carry
// the record) comes first, the oldest hand-off first: {HANDED, record, hid,
// counters...} (it was counted as received when handed). Else takes the
// oldest record (take() above), telling the viewers (announce): {OK,
// record, counters...}; or, empty, adds `grant` to this daemon's waiter entry (its
// receives about to park; in a capacity-0 mailbox that makes it writable:
// PUBLISH) and answers {EMPTY}.
inline constexpr redis::Script kPop{"pop", MBX_REDIS_COMMON_LUA R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
local cancelled = 'c:' .. ARGV[6] .. ':' .. ARGV[7]
if redis.call('HEXISTS', KEYS[6], cancelled) == 1 then
  redis.call('HDEL', KEYS[6], cancelled)
  return {'LOST'}
end
local mine, best, brec, known = ARGV[4] .. '|', nil, nil, {}
for i = 8, #ARGV do known[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #mine) == mine and not known[string.sub(all[i], #mine + 1)] then
    local hid, rec = string.match(all[i + 1], '^(%d+) (.*)$')
    hid = tonumber(hid)
    if not best or hid < best then best, brec = hid, rec end
  end
end
if best then return counters({'HANDED', brec, best}) end
local rec = take(ARGV[1])
if not rec then
  if tonumber(ARGV[5]) > 0 then
    redis.call('HINCRBY', KEYS[5], ARGV[4], ARGV[5])
    if redis.call('HGET', KEYS[1], 'capacity') == '0' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
  end
  return {'EMPTY'}
end
redis.call('HSET', KEYS[6], ARGV[6], ARGV[7] .. ' ' .. string.match(rec, '^(%d+) '))
announce(ARGV[4], ARGV[2], ARGV[3])
return counters({'OK', rec})
)lua"};

// ARGV: the store's field in the tokens hash, the token of a call whose
// reply never came, channel, event. If that call ran and took a record
// (the field still holds its token) and the record is still in flight here,
// it goes back to the front, as kUnpop puts one back: {OK, 1}; else {OK, 0}.
// If the field holds no such token, the call has not run yet (it may still
// wait in the server's input, from the connection the client dropped) or
// ran and took nothing: it is marked given up, and if it runs later it does
// nothing and answers {LOST} (kPop, kPush taking), to no one. A mark whose
// call never comes stays until the tokens hash goes (a return).
inline constexpr redis::Script kLost{"lost", MBX_REDIS_REQUEUE_LUA R"lua(
local v = redis.call('HGET', KEYS[6], ARGV[1])
local t, s = nil, nil
if v then t, s = string.match(v, '^(%d+) (%d+)$') end
if t ~= ARGV[2] then
  redis.call('HSET', KEYS[6], 'c:' .. ARGV[1] .. ':' .. ARGV[2], '1')
  return {'OK', 0}
end
redis.call('HDEL', KEYS[6], ARGV[1])
local rec = redis.call('HGET', KEYS[3], s)
if not rec then return {'OK', 0} end
redis.call('HDEL', KEYS[3], s)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'OK', 0} end
requeue({rec})
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'OK', 1}
)lua"};

// ARGV: this daemon's id, delta, receives parked here now, channel, event,
// then the seqs of the hand-offs it gave to receives and has not acked.
// delta > 0: more receives parked (added to the waiter entry). Else some
// left: up to -delta of the entry is taken back ({OK, taken back, entry
// now}); with none parked the entry goes and every other record handed here
// (not heard of, or heard of and not given to a receive) goes back to the
// front, as kUnpop puts one back ({OK, n, 0, highest hid put back}).
inline constexpr redis::Script kWaiters{"waiters", MBX_REDIS_REQUEUE_LUA R"lua(
local d = tonumber(ARGV[2])
if d > 0 then return {'OK', 0, redis.call('HINCRBY', KEYS[5], ARGV[1], d), 0} end
if ARGV[3] ~= '0' then
  local n = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or 0)
  local k = math.min(n, -d)
  if n - k <= 0 then redis.call('HDEL', KEYS[5], ARGV[1]) else redis.call('HINCRBY', KEYS[5], ARGV[1], -k) end
  return {'OK', k, n - k, 0}
end
redis.call('HDEL', KEYS[5], ARGV[1])
local mine, recs, top, held = ARGV[1] .. '|', {}, 0, {}
for i = 6, #ARGV do held[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #mine) == mine then
    local hid, rec = string.match(all[i + 1], '^(%d+) (.*)$')
    if not held[string.sub(all[i], #mine + 1)] then
      redis.call('HDEL', KEYS[4], all[i])
      recs[#recs + 1] = rec
      top = math.max(top, tonumber(hid))
    end
  end
end
if #recs == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return {'OK', #recs, 0, top} end
requeue(recs)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {'OK', #recs, 0, top}
)lua"};

// ARGV: seq, channel, event, this daemon's id. The reply was not sent (an
// interrupt): the in-flight message (popped, or handed to this daemon) goes
// back to the front, as if never received (but `consumed` stays: a
// rendezvous sender may have seen it taken).
inline constexpr redis::Script kUnpop{"unpop", MBX_REDIS_REQUEUE_LUA R"lua(
local rec = redis.call('HGET', KEYS[3], ARGV[1])
if rec then
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  local v = redis.call('HGET', KEYS[4], ARGV[4] .. '|' .. ARGV[1])
  if not v then return {'RECEIVED'} end
  redis.call('HDEL', KEYS[4], ARGV[4] .. '|' .. ARGV[1])
  rec = string.match(v, '^%d+ (.*)$')
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'GONE'} end
requeue({rec})
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
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {'OK'}
)lua"};

// `now`: the server's clock in milliseconds (the leases' time base).
#define MBX_REDIS_NOW_LUA                 \
  "local t = redis.call('TIME')\n"        \
  "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

// ---- leases (KEYS[1] the namespace's daemons hash: daemon id -> lease end, server ms) ----

// ARGV: daemon id, lease (ms). Renews this daemon's lease; answers the
// server's time and 1 if the lease was not there (first, or claimed as dead).
inline constexpr redis::Script kRenew{"renew", MBX_REDIS_NOW_LUA R"lua(
local new = redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
return {'OK', now, new}
)lua"};

// KEYS: the daemons hash, daemon ARGV[1]'s set of mailboxes, the claimed
// hash. Deletes the set and the daemon's claim once its records were
// returned, unless the daemon renewed meanwhile (it was slow, not dead):
// then the set still covers what it receives next, and only the claim goes.
inline constexpr redis::Script kDropSet{"drop_set", R"lua(
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'OK', 0} end
redis.call('DEL', KEYS[2])
return {'OK', 1}
)lua"};

// KEYS: the daemons hash, the claimed hash (daemon id -> when it was
// claimed, server ms). ARGV: this daemon's id. Claims every other daemon
// whose lease ended: it leaves the daemons hash for the claimed hash, so it
// is claimed once; answers their ids.
inline constexpr redis::Script kClaimDead{"claim_dead", MBX_REDIS_NOW_LUA R"lua(
local all = redis.call('HGETALL', KEYS[1])
local dead = {'OK'}
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] and tonumber(all[i + 1]) < now then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('HSET', KEYS[2], all[i], now)
    dead[#dead + 1] = all[i]
  end
end
return dead
)lua"};

// KEYS: the daemons hash, the claimed hash. The daemons claimed as dead
// whose records are still returned at each recovery: one that renewed since
// leaves the claimed hash (its own renewal covers it again); answers
// {OK, id, ms since its claim, ...} for the others.
inline constexpr redis::Script kClaimed{"claimed", MBX_REDIS_NOW_LUA R"lua(
local all = redis.call('HGETALL', KEYS[2])
local r = {'OK'}
for i = 1, #all, 2 do
  if redis.call('HEXISTS', KEYS[1], all[i]) == 1 then
    redis.call('HDEL', KEYS[2], all[i])
  else
    r[#r + 1] = all[i]
    r[#r + 1] = now - tonumber(all[i + 1])
  end
end
return r
)lua"};

// KEYS: meta, queue, the dead daemon's in-flight hash of this mailbox, the
// hand-offs hash, the waiters hash, its tokens hash, the viewers set. ARGV:
// channel, event, the dead daemon's id. Returns its in-flight records and
// those handed to it to the front of the queue in seq order, as if never
// received, and drops its waiter entry and its place among the viewers;
// counts them in `returned`. `consumed` stays where it is: it never steps back.
inline constexpr redis::Script kReturn{"return", MBX_REDIS_REQUEUE_LUA R"lua(
local all = redis.call('HGETALL', KEYS[3])
redis.call('DEL', KEYS[3], KEYS[6])
redis.call('HDEL', KEYS[5], ARGV[3])
redis.call('SREM', KEYS[7], ARGV[3])
local recs = {}
for i = 2, #all, 2 do recs[#recs + 1] = all[i] end
local mine, xs = ARGV[3] .. '|', redis.call('HGETALL', KEYS[4])
for i = 1, #xs, 2 do
  if string.sub(xs[i], 1, #mine) == mine then
    redis.call('HDEL', KEYS[4], xs[i])
    recs[#recs + 1] = string.match(xs[i + 1], '^%d+ (.*)$')
  end
end
if #recs == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return {'OK', 0} end
requeue(recs)
redis.call('HINCRBY', KEYS[1], 'returned', #recs)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {'OK', #recs}
)lua"};

}  // namespace mbx::redis_scripts

// SPDX-License-Identifier: MIT
#include "core/redis_store.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "base/log.h"
#include "core/redis_scripts.h"
#include "shm/segment.h"

namespace mbx {

namespace rs = redis_scripts;
using redis::Reply;

// The longest record a hand-off event carries: a longer one the receiving
// daemon fetches with its next pop (every daemon hears every event).
constexpr size_t kHandoffInline = 16384;

namespace {
std::string capacity_text(uint64_t c) { return c == layout::kUnbounded ? "-1" : std::to_string(c); }
uint64_t capacity_of(std::string_view t) {
  if (t == "-1") return layout::kUnbounded;
  uint64_t v = 0;
  std::from_chars(t.data(), t.data() + t.size(), v);
  return v;
}
// A reply element as a number: an integer, or a string of digits (HMGET).
int64_t num(const Reply& r) {
  if (r.type == Reply::Type::integer) return r.integer;
  int64_t v = 0;
  std::from_chars(r.str.data(), r.str.data() + r.str.size(), v);
  return v;
}
std::string hostname() {
  char h[256] = {};
  if (::gethostname(h, sizeof h - 1) != 0 || !h[0]) return "localhost";
  std::string s(h);
  for (char& c : s)
    if (c == ' ' || c == '{' || c == '}') c = '_';
  return s;
}
// A queued record: "<seq> <len> <sender>\n<payload>". False if malformed.
bool parse_record(std::string_view rec, uint64_t* seq, Sender* from, std::string* host, std::string& out) {
  const size_t nl = rec.find('\n');
  if (nl == std::string_view::npos) return false;
  std::string head(rec.substr(0, nl));
  unsigned long long s = 0, len = 0;
  int used = 0;
  if (std::sscanf(head.c_str(), "%llu %llu %n", &s, &len, &used) != 2) return false;
  if (len != rec.size() - nl - 1 || !parse_sender(std::string_view(head).substr(used), from)) return false;
  if (const size_t h = head.find(" host="); h != std::string::npos) *host = head.substr(h + 6);
  *seq = s;
  out.append(rec.substr(nl + 1));
  return true;
}
}  // namespace

// ---- the backend -------------------------------------------------------------

RedisBackend::RedisBackend(const RedisConfig& cfg) : cfg_(cfg), conn_(cfg.endpoint, cfg.options) {
  host_ = hostname();
  daemon_id_ = host_ + ":" + std::to_string(::getpid()) + ":" + std::to_string(realtime_ns());
  channel_ = "mbx:" + cfg.ns + ":ev";
  daemons_ = "mbx:{" + cfg.ns + "}:daemons";
  claimed_ = "mbx:{" + cfg.ns + "}:claimed";
}

std::string RedisBackend::inflight_set(const std::string& daemon) const {
  return "mbx:{" + cfg_.ns + "}:inflight:" + daemon;
}

std::string RedisBackend::viewers_key(const std::string& rid) const { return "mbx:{" + cfg_.ns + ":" + rid + "}:v"; }

void RedisBackend::view(const std::string& rid) {
  MutexLock v(view_mu_);
  {
    MutexLock g(watch_mu_);
    if (viewed_.count(rid)) return;
  }
  auto r = command({"SADD", viewers_key(rid), daemon_id_});
  const Errc e = !r ? r.error() : r->is_error() ? Errc::io : Errc::ok;
  // Failed: kept as viewed all the same, and the next renewal tries again
  // (meanwhile the periodic re-check finds what this daemon is not told of).
  // Relaxed: a flag read alone.
  if (e != Errc::ok) view_retry_.store(true, std::memory_order_relaxed);
  MutexLock g(watch_mu_);
  if (open_.count(rid)) viewed_.insert(rid);  // else its last store closed meanwhile: nothing to keep
}

void RedisBackend::view_again() {
  MutexLock v(view_mu_);
  std::vector<std::string> rids;
  {
    MutexLock g(watch_mu_);
    rids.assign(viewed_.begin(), viewed_.end());
  }
  // Written without waiting (in order with the SREMs, under view_mu_); a
  // write that fails is tried again at the next renewal. Relaxed: a flag.
  for (const std::string& rid : rids)
    if (send({"SADD", viewers_key(rid), daemon_id_}) != Errc::ok) view_retry_.store(true, std::memory_order_relaxed);
}

Errc RedisBackend::renew_lease() {
  MutexLock lease(renew_mu_);
  return renew_locked();
}

// Lease/2 old or more by this daemon's clock (0: never renewed).
bool RedisBackend::lease_stale() const {
  const int64_t at = renewed_at_.load(std::memory_order_relaxed);
  const int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return at == 0 || now - at >= std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.lease).count() / 2;
}

Errc RedisBackend::renew_locked() {
  const auto sent = std::chrono::steady_clock::now();  // the lease runs from before the request
  auto r = eval(rs::kRenew, {daemons_}, {daemon_id_, std::to_string(cfg_.lease.count())});
  if (!r) return r.error();
  if (r->is_error() || r->elements.size() != 3) return Errc::io;
  if (num(r->elements[2]) == 1 && renewed_) {
    // Thought dead and claimed: the set of our mailboxes may be gone (a
    // recovery two leases after the claim drops it), so what we receive
    // from now on needs it again. Until that is done, the lease is not
    // counted as renewed (fresh_lease() lets no take through), and each
    // renewal tries it again: the server reports the claim only once.
    log(LogLevel::warning, "redis: this daemon's lease had ended; the messages it was delivering were returned");
    reregister_ = true;
  }
  renewed_ = true;
  if (reregister_) {
    std::vector<std::string> rids;
    {
      MutexLock g(watch_mu_);
      for (auto& [rid, n] : open_) rids.push_back(rid);
    }
    const std::string set = inflight_set(daemon_id_);
    std::vector<std::string_view> argv{"SADD", set};
    for (auto& rid : rids) argv.push_back(rid);
    if (!rids.empty())
      if (auto a = command(argv); !a || a->is_error()) return a ? Errc::io : a.error();
    reregister_ = false;
    view_renewals_ = 7;  // this one and the next six: two leases at lease/3 (view_again)
  }
  // Relaxed: a flag read alone.
  if (view_renewals_ > 0 || view_retry_.exchange(false, std::memory_order_relaxed)) {
    if (view_renewals_ > 0) view_renewals_--;
    view_again();
  }
  renewed_at_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(sent.time_since_epoch()).count(),
                    std::memory_order_relaxed);
  return Errc::ok;
}

Result<uint64_t> RedisBackend::return_in_flight(const std::string& id, bool drop) {
  auto set = command({"SMEMBERS", inflight_set(id)});
  if (!set) return set.error();
  uint64_t n = 0;
  for (const Reply& rid : set->elements) {
    const std::string tag = "mbx:{" + cfg_.ns + ":" + rid.str + "}:", ev = event('p', rid.str);
    auto r = eval(rs::kReturn,
                  {tag + "m", tag + "q", tag + "f:" + id, tag + "x", tag + "w", tag + "t:" + id, tag + "v"},
                  {channel_, ev, id});
    if (!r) return r.error();
    if (r->type == Reply::Type::array && r->elements.size() == 2) n += static_cast<uint64_t>(num(r->elements[1]));
  }
  if (drop)
    if (auto d = eval(rs::kDropSet, {daemons_, inflight_set(id), claimed_}, {id}); !d) return d.error();
  return n;
}

Result<uint64_t> RedisBackend::recover() {
  // The newly dead join the claimed hash; every claimed daemon is handled below.
  if (auto r = eval(rs::kClaimDead, {daemons_, claimed_}, {daemon_id_}); !r) return r.error();
  auto c = eval(rs::kClaimed, {daemons_, claimed_}, {});
  if (!c) return c.error();
  if (c->type != Reply::Type::array || c->elements.empty() || c->elements.size() % 2 != 1) return Errc::io;
  uint64_t n = 0;
  for (size_t i = 1; i + 1 < c->elements.size(); i += 2) {
    const std::string& dead = c->elements[i].str;
    const int64_t age_ms = num(c->elements[i + 1]);
    // A daemon that was only slow at its claim may still have taken records
    // before it died (or it renews, and leaves the claimed hash): its records
    // are returned at each recovery until one finds none two leases on.
    auto k = return_in_flight(dead, /*drop=*/false);
    if (!k) return k.error();  // its records wait for the next try (this daemon's or another's)
    if (*k)
      log(LogLevel::warning,
          "redis: daemon %s stopped renewing its lease: %llu messages it was delivering "
          "returned to their mailboxes",
          dead.c_str(), static_cast<unsigned long long>(*k));
    n += *k;
    if (*k == 0 && age_ms >= 2 * cfg_.lease.count())
      if (auto d = eval(rs::kDropSet, {daemons_, inflight_set(dead), claimed_}, {dead}); !d) return d.error();
  }
  return n;
}

Errc RedisBackend::fresh_lease() {
  // Not in the lease protocol: a backend never started (tests). A started
  // one whose first renewal failed renews here, before it takes anything.
  if (!started_.load(std::memory_order_relaxed) && renewed_at_.load(std::memory_order_relaxed) == 0)
    return Errc::ok;
  if (!lease_stale()) return Errc::ok;
  MutexLock lease(renew_mu_);
  if (!lease_stale()) return Errc::ok;  // another thread renewed while this one waited
  return renew_locked();
}

void RedisBackend::note_lost(const std::string& rid, const std::string& field, uint64_t token) {
  MutexLock g(lost_mu_);
  lost_.push_back(Lost{rid, field, token});
}

Errc RedisBackend::reclaim(const std::string& rid, const std::string& field, uint64_t token) {
  const std::string tag = "mbx:{" + cfg_.ns + ":" + rid + "}:", ev = event('p', rid), t = std::to_string(token);
  auto r = eval(rs::kLost,
                {tag + "m", tag + "q", tag + "f:" + daemon_id_, tag + "x", tag + "w", tag + "t:" + daemon_id_},
                {field, t, channel_, ev});
  if (!r) return r.error();
  if (r->type != Reply::Type::array || r->elements.size() != 2) return Errc::io;
  if (num(r->elements[1]) == 1)
    log(LogLevel::warning, "redis: mailbox %s: a receive's reply was lost; the message it took was put back",
        rid.c_str());
  MutexLock g(lost_mu_);
  std::erase_if(lost_, [&](const Lost& l) { return l.rid == rid && l.field == field && l.token == token; });
  return Errc::ok;
}

Errc RedisBackend::reconnect() {
  MutexLock g(conn_mu_);
  return conn_.connect(/*now=*/true);
}

void RedisBackend::tick(bool fresh) {
  if (fresh) (void)reconnect();  // no waiting out the backoff: the subscriber reached the server
  const auto now = std::chrono::steady_clock::now();
  if (fresh) next_renew_ = now;  // the lease may have run low while the server was away
  if (fresh) view_again();       // a server back without its data has no viewers sets
  // First: the puts-back below may each wait out the command timeout.
  if (now >= next_renew_ && renew_lease() == Errc::ok) next_renew_ = now + cfg_.lease / 3;
  std::vector<Lost> lost;
  {
    MutexLock g(lost_mu_);
    lost = lost_;
  }
  for (const Lost& l : lost) (void)reclaim(l.rid, l.field, l.token);  // kept in lost_ until it ran
  kick_all();  // parked calls that met the outage try again, and find what was put back (its event is ours)
  if (now >= next_recover_ && recover().ok()) next_recover_ = now + cfg_.lease / 2;
}

Result<std::unique_ptr<RedisBackend>> RedisBackend::open(const RedisConfig& cfg) {
  if (cfg.ns.empty() || cfg.ns.find_first_of(" {}:") != std::string::npos) return Errc::invalid;
  std::unique_ptr<RedisBackend> b(new RedisBackend(cfg));
  {
    MutexLock g(b->conn_mu_);
    auto r = b->conn_.command({"PING"});
    if (!r || r->is_error()) return Errc::io;
  }
  return b;
}

void RedisBackend::start() {
  started_.store(true, std::memory_order_relaxed);
  (void)renew_lease();  // registered before any receive: a death is noticed
  // The subscription's keep-alive (design.md §14): a hung node is noticed within
  // half a lease; 2 s at least, far above what a loaded host delays a reply by.
  const auto keepalive = std::max<std::chrono::milliseconds>(cfg_.lease / 4, std::chrono::seconds(2));
  sub_ = std::make_unique<redis::Subscriber>(
      cfg_.endpoint, channel_, cfg_.recheck, keepalive, [this](std::string_view ev) { on_event(ev); },
      [this](bool fresh) { tick(fresh); }, [this] { return endpoints(); });
}

RedisBackend::~RedisBackend() {
  sub_.reset();
  if (!started_.load(std::memory_order_relaxed)) return;
  // A clean stop: what it still had in flight goes back, then its lease ends
  // and its set goes (kDropSet drops the set only once the lease is gone).
  // If a return fails (the server, or a cluster node, away), the lease is
  // left to run out: the other daemons' recovery returns the rest.
  if (auto k = return_in_flight(daemon_id_, /*drop=*/false); !k) {
    log(LogLevel::warning,
        "redis: stopping without returning every message this daemon was delivering; its lease is left to run "
        "out, and the other daemons return them");
    return;
  }
  (void)command({"HDEL", daemons_, daemon_id_});
  (void)eval(rs::kDropSet, {daemons_, inflight_set(daemon_id_), claimed_}, {daemon_id_});
}

Result<Reply> RedisBackend::eval(const redis::Script& s, const std::vector<std::string_view>& keys,
                                 const std::vector<std::string_view>& args) {
  MutexLock g(conn_mu_);
  return conn_.eval(s, keys, args);
}

std::vector<redis::Endpoint> RedisBackend::endpoints() {
  MutexLock g(conn_mu_);
  return conn_.endpoints();
}

Result<Reply> RedisBackend::command(const std::vector<std::string_view>& argv) {
  MutexLock g(conn_mu_);
  return conn_.command(argv);
}

Errc RedisBackend::send(const std::vector<std::string_view>& argv) {
  MutexLock g(conn_mu_);
  return conn_.send(argv);
}

std::string RedisBackend::event(char op, const std::string& rid) const {
  return std::string(1, op) + " " + daemon_id_ + " " + rid;
}

Result<std::unique_ptr<Store>> RedisBackend::open_store(const std::string& rid, Settings* s) {
  if (rid.empty() || rid.find_first_of(" {}") != std::string::npos) return Errc::invalid;
  auto store = std::make_unique<RedisStore>(*this, rid, *s);
  {
    MutexLock g(watch_mu_);
    open_[rid]++;  // forgotten by ~RedisStore
    stores_.emplace(rid, store.get());
  }
  // Recorded before any receive can leave records in flight here.
  if (auto a = command({"SADD", inflight_set(daemon_id_), rid}); !a) return a.error();
  const std::string cap = capacity_text(s->capacity), maxm = std::to_string(s->max_message),
                    tmo = std::to_string(s->timeout_ms);
  auto r = eval(rs::kInit, {store->meta_, store->queue_, store->inflight_, store->handoffs_, store->waiters_},
                {cap, maxm, framing_name(s->framing), tmo});
  if (!r) return r.error();
  if (r->type != Reply::Type::array || r->elements.size() != 5) return Errc::io;
  s->capacity = capacity_of(r->elements[1].str);
  s->max_message = static_cast<uint64_t>(num(r->elements[2]));
  store->capacity_ = s->capacity;
  store->max_message_ = s->max_message;
  if (auto f = parse_framing(r->elements[3].str)) store->framing_ = *f;
  if (r->elements[4].type != Reply::Type::nil) store->timeout_ms_ = static_cast<uint64_t>(num(r->elements[4]));
  if (store->framing_) s->framing = *store->framing_;
  if (store->timeout_ms_) s->timeout_ms = *store->timeout_ms_;
  return std::unique_ptr<Store>(std::move(store));
}

void RedisBackend::watch(RedisStore* s, const std::weak_ptr<StoreListener>& l, bool on) {
  MutexLock g(watch_mu_);
  auto [first, last] = watched_.equal_range(s->rid());
  for (auto it = first; it != last; ++it)
    if (it->second.first == s) {
      watched_.erase(it);
      break;
    }
  if (on) watched_.emplace(s->rid(), std::make_pair(s, Watched{l, &s->kick_}));
}

void RedisBackend::on_event(std::string_view ev) {
  // "<op> <daemon> <rid>", a hand-off "h <daemon> <rid> <to> <hid> <seq>[\n<record>]":
  // this daemon's own changes were settled where they were made.
  const size_t nl = ev.find('\n');
  const std::string_view head = ev.substr(0, nl);
  std::vector<std::string_view> w;
  for (size_t at = 0; at <= head.size();) {
    const size_t sp = std::min(head.find(' ', at), head.size());
    w.push_back(head.substr(at, sp - at));
    at = sp + 1;
  }
  if (w.size() < 3 || w[1] == daemon_id_) return;
  const std::string rid(w[2]);
  const bool to_me = w[0] == "h" && w.size() == 6 && w[3] == daemon_id_;
  uint64_t hid = 0, seq = 0;
  if (to_me) {
    std::from_chars(w[4].data(), w[4].data() + w[4].size(), hid);
    std::from_chars(w[5].data(), w[5].data() + w[5].size(), seq);
  }
  std::vector<std::shared_ptr<StoreListener>> ls;
  bool orphan = false;
  {
    MutexLock g(watch_mu_);
    if (to_me) {
      // The record rides on the event: the next pop of its store answers it
      // (a longer one is fetched by that pop). No store: nobody here waits.
      auto it = stores_.find(rid);
      if (it == stores_.end()) orphan = true;
      else if (nl != std::string_view::npos)
        if (auto l = it->second->on_handed(hid, seq, std::string(ev.substr(nl + 1)))) ls.push_back(std::move(l));
    }
    auto [first, last] = watched_.equal_range(rid);
    for (auto it = first; it != last; ++it) {
      // SYNC POINT: release, pairs with the acq_rel exchange in take_kick().
      it->second.second.kick->store(true, std::memory_order_release);
      if (auto l = it->second.second.listener.lock()) ls.push_back(std::move(l));
    }
  }
  if (orphan) {  // back to the front for a receive of another daemon
    const std::string tag = "mbx:{" + cfg_.ns + ":" + rid + "}:", ev2 = event('p', rid);
    (void)eval(rs::kUnpop, {tag + "m", tag + "q", tag + "f:" + daemon_id_, tag + "x", tag + "w"},
               {std::to_string(seq), channel_, ev2, daemon_id_});
  }
  for (auto& l : ls) l->service();
}

void RedisBackend::kick_all() {
  std::vector<std::shared_ptr<StoreListener>> ls;
  {
    MutexLock g(watch_mu_);
    for (auto& [rid, w] : watched_) {
      // SYNC POINT: release, pairs with the acq_rel exchange in take_kick().
      w.second.kick->store(true, std::memory_order_release);
      if (auto l = w.second.listener.lock()) ls.push_back(std::move(l));
    }
  }
  for (auto& l : ls) l->service();
}

// ---- one mailbox -------------------------------------------------------------------

RedisStore::RedisStore(RedisBackend& b, std::string rid, const Settings& s)
    : b_(b),
      rid_(std::move(rid)),
      meta_("mbx:{" + b.config().ns + ":" + rid_ + "}:m"),
      queue_("mbx:{" + b.config().ns + ":" + rid_ + "}:q"),
      inflight_("mbx:{" + b.config().ns + ":" + rid_ + "}:f:" + b.daemon_id()),
      handoffs_("mbx:{" + b.config().ns + ":" + rid_ + "}:x"),
      waiters_("mbx:{" + b.config().ns + ":" + rid_ + "}:w"),
      viewers_(b.viewers_key(rid_)),
      capacity_(s.capacity),
      max_message_(s.max_message),
      tokens_("mbx:{" + b.config().ns + ":" + rid_ + "}:t:" + b.daemon_id()),
      // Relaxed: a name that only has to be unique; it orders nothing.
      field_(std::to_string(b.next_store_.fetch_add(1, std::memory_order_relaxed))) {}

RedisStore::~RedisStore() {
  if (lost_) (void)reclaim_lost();  // else left to the backend's tick, with the field it needs
  if (tokened_ && !lost_) (void)b_.send({"HDEL", tokens_, field_});
  if (watching_) b_.watch(this, {}, false);
  bool last = false;
  {
    MutexLock g(b_.watch_mu_);
    if (auto it = b_.open_.find(rid_); it != b_.open_.end() && --it->second == 0) {
      b_.open_.erase(it);
      last = true;
    }
    auto [first, last_store] = b_.stores_.equal_range(rid_);
    for (auto it = first; it != last_store; ++it)
      if (it->second == this) {
        b_.stores_.erase(it);
        break;
      }
  }
  // A record taken for receives that never came (a mailbox let go while
  // one was on its way): back to the front, not left in flight here.
  give_back_taken();
  if (!last) return;
  // The last store of rid here: this daemon leaves its viewers set, unless
  // another store of rid opened meanwhile (the SREM ordered after any SADD
  // of rid by view_mu_, written without waiting).
  MutexLock v(b_.view_mu_);
  bool unview = false;
  {
    MutexLock g(b_.watch_mu_);
    unview = !b_.open_.count(rid_) && b_.viewed_.erase(rid_) > 0;
  }
  if (unview) (void)b_.send({"SREM", viewers_, b_.daemon_id()});
}

Result<Reply> RedisStore::run(const redis::Script& s, std::vector<std::string_view> args, std::string* status) {
  auto r = b_.eval(s, {meta_, queue_, inflight_, handoffs_, waiters_, tokens_, viewers_}, args);
  if (!r) return r.error();
  if (r->type != Reply::Type::array || r->elements.empty()) return Errc::io;  // logged by Conn
  *status = r->elements[0].str;
  return r;
}

bool RedisStore::read_counters(const std::vector<Reply>& e, size_t at) {
  if (e.size() != at + rs::kCounters) return false;
  const Reply* c = &e[at];
  QueueStats q;
  q.count = static_cast<uint64_t>(num(c[0]));
  capacity_ = capacity_of(c[1].str);  // another daemon may have changed it
  q.next_seq = static_cast<uint64_t>(num(c[2]));
  q.consumed_seq = static_cast<uint64_t>(num(c[3]));
  q.total_sent = static_cast<uint64_t>(num(c[4]));
  q.total_received = static_cast<uint64_t>(num(c[5]));
  q.bytes = q.record_bytes = static_cast<uint64_t>(num(c[6]));
  q.lost = static_cast<uint64_t>(num(c[7]));
  q.last_send_ns = num(c[8]);
  q.last_recv_ns = num(c[9]);
  q.returned = static_cast<uint64_t>(num(c[10]));
  max_message_ = static_cast<uint64_t>(num(c[11]));  // settings other daemons may have changed
  if (auto f = parse_framing(c[12].str)) framing_ = *f;
  if (c[13].type != Reply::Type::nil) timeout_ms_ = static_cast<uint64_t>(num(c[13]));
  waiting_ = static_cast<uint64_t>(std::max<int64_t>(0, num(c[14])));
  last_ = q;
  return true;
}

Result<uint64_t> RedisStore::push(std::string_view msg, const Sender& from, bool force, unsigned prio) {
  // A Redis mailbox is one list in send order: no priorities yet (mailboxfs.8).
  if (prio != 0) return Errc::not_supported;
  const std::string sender = format_sender(from) + " host=" + b_.host(), now = std::to_string(realtime_ns()),
                    ev = b_.event('p', rid_), handoff = b_.event('h', rid_), limit = std::to_string(kHandoffInline);
  // A receive of this daemon waits: the same step takes it the oldest
  // record, which the pop that follows answers (one round trip, not two).
  // Not while this daemon's lease may have ended (RedisBackend::fresh_lease):
  // then the send goes without taking, and the receive pops it.
  const bool parked = std::exchange(receivers_waiting_, false), arriving = std::exchange(reads_arriving_, false);
  const bool take = (parked || arriving) && !taken_ && b_.fresh_lease() == Errc::ok;
  if (take && lost_)
    if (Errc e = reclaim_lost(); e != Errc::ok) return e;
  const std::string token = std::to_string(++token_);
  std::string st;
  auto r = run(rs::kPush,
               {msg, sender, now, force ? "1" : "0", b_.channel(), ev, !take ? "0" : parked ? "1" : "2", b_.daemon_id(),
                limit, handoff, field_, token},
               &st);
  tokened_ |= take;
  if (!r) {
    if (take) {  // it may have run, and taken a record no pop will answer
      lost_ = token_;
      b_.note_lost(rid_, field_, token_);
    }
    return r.error();
  }
  if (st == "OK" && r->elements.size() == 4 + rs::kCounters) {
    if (r->elements[2].type == Reply::Type::string) taken_ = std::move(r->elements[2].str);
    if (num(r->elements[3]) == 1) {  // the parked receive it took for used this daemon's waiter entry
      MutexLock g(hand_mu_);
      registered_ = std::max<int64_t>(0, registered_ - 1);
    }
    if (read_counters(r->elements, 4)) pushed_count_ = last_.count;
    return static_cast<uint64_t>(num(r->elements[1]));
  }
  if (st == "FULL") return Errc::again;
  if (st == "TOOBIG") return Errc::msg_size;
  if (st == "GONE") return Errc::removed;
  return Errc::io;
}

Result<Store::Popped> RedisStore::pop(std::string& out) {
  std::string rec;
  std::optional<Handed> h;
  auto from_handed = [&]() REQUIRES(hand_mu_) {
    if (handed_.empty()) return false;
    h = std::move(handed_.front());
    handed_.pop_front();
    return true;
  };
  if (taken_) {  // taken by the push just made
    rec = std::move(*taken_);
    taken_.reset();
  } else {
    int64_t grant = 0;
    std::vector<std::string> known;  // hand-offs the script must leave: held here, or given to receives
    {
      MutexLock g(hand_mu_);
      if (!from_handed()) {
        grant = std::max<int64_t>(0, int64_t{parked_} - (registered_ - in_transit_));
        for (const Handed& k : handed_) known.push_back(std::to_string(k.seq));
      }
    }
    if (!h) {
      if (Errc e = b_.fresh_lease(); e != Errc::ok) return e;
      if (lost_)
        if (Errc e = reclaim_lost(); e != Errc::ok) return e;
      for (uint64_t seq : handed_seqs_) known.push_back(std::to_string(seq));
      const std::string now = std::to_string(realtime_ns()), ev = b_.event('r', rid_), gr = std::to_string(grant),
                        token = std::to_string(++token_);
      std::vector<std::string_view> args{now, b_.channel(), ev, b_.daemon_id(), gr, field_, token};
      for (const auto& k : known) args.push_back(k);
      std::string st;
      auto r = run(rs::kPop, args, &st);
      tokened_ = true;
      if (!r) {
        lost_ = token_;  // it may have run: the record it took waits in flight for no reader
        b_.note_lost(rid_, field_, token_);
        return r.error();
      }
      if (st == "EMPTY") {
        MutexLock g(hand_mu_);
        registered_ += grant;  // the entry grew by it
        return Errc::again;
      }
      if (st == "GONE") return Errc::removed;
      if (st == "HANDED" && r->elements.size() == 3 + rs::kCounters) {
        (void)read_counters(r->elements, 3);
        const auto hid = static_cast<uint64_t>(num(r->elements[2]));
        MutexLock g(hand_mu_);
        // Its event may have come while the script ran: then it is held
        // here, and the bookkeeping of its arrival is done.
        auto held = std::find_if(handed_.begin(), handed_.end(), [&](const Handed& k) { return k.hid == hid; });
        if (held != handed_.end()) {
          handed_.erase(held);
        } else {  // not heard of: its event was lost, is on its way, or could not carry it
          registered_ = std::max<int64_t>(0, registered_ - 1);
          in_transit_ = std::max<int64_t>(0, in_transit_ - 1);
        }
        last_hid_ = std::max(last_hid_, hid);  // its event, if it comes later, is old news
        h = Handed{hid, 0, std::move(r->elements[1].str)};
      } else {
        if (st != "OK" || r->elements.size() != 2 + rs::kCounters) return Errc::io;
        rec = std::move(r->elements[1].str);
        (void)read_counters(r->elements, 2);  // what stats() answers while the server is away
      }
    }
  }
  if (h) rec = std::move(h->rec);
  Popped p{};
  if (!parse_record(rec, &p.seq, &p.from, &p.host, out)) {
    log(LogLevel::error, "redis: mailbox %s holds a malformed record", rid_.c_str());
    corrupt_ = true;
    return Errc::bad_message;
  }
  if (h) handed_seqs_.insert(p.seq);  // in the hand-offs hash: acked there
  return p;
}

std::shared_ptr<StoreListener> RedisStore::on_handed(uint64_t hid, uint64_t seq, std::string rec) {
  MutexLock g(hand_mu_);
  if (hid <= last_hid_) return nullptr;  // a pop answered it already
  last_hid_ = hid;
  registered_ = std::max<int64_t>(0, registered_ - 1);
  in_transit_ = std::max<int64_t>(0, in_transit_ - 1);
  handed_.push_back(Handed{hid, seq, std::move(rec)});
  // SYNC POINT: release, pairs with the acq_rel exchange in take_kick().
  kick_.store(true, std::memory_order_release);
  return listener_.lock();  // serviced even unwatched: a hand-off nobody takes goes back
}

void RedisStore::sync_waiters() {
  int64_t free = 0, held = 0;
  bool any = false;
  {
    MutexLock g(hand_mu_);
    free = registered_ - in_transit_;
    held = static_cast<int64_t>(handed_.size());
    any = registered_ > 0 || in_transit_ > 0 || !handed_.empty();
  }
  const int64_t want = int64_t{parked_} - held;  // the records held here go to the first parked
  if (parked_ == 0 ? !any : want == free) return;
  const int64_t delta = parked_ == 0 ? -free : want - free;
  // More waiters here let other daemons' pushes hand records to this one: a take.
  if (delta > 0 && b_.fresh_lease() != Errc::ok) return;  // tried again at the next hold
  const std::string ev = b_.event('p', rid_);
  std::string st;
  const std::string d = std::to_string(delta), n = std::to_string(parked_);
  std::vector<std::string> kept;  // given to receives, not acked: they stay
  for (uint64_t seq : handed_seqs_) kept.push_back(std::to_string(seq));
  std::vector<std::string_view> args{b_.daemon_id(), d, n, b_.channel(), ev};
  for (auto& k : kept) args.push_back(k);
  auto r = run(rs::kWaiters, args, &st);
  if (!r || st != "OK" || r->elements.size() != 4) return;  // tried again at the next hold
  const auto k = num(r->elements[1]), now = num(r->elements[2]);
  const auto top = static_cast<uint64_t>(num(r->elements[3]));
  MutexLock g(hand_mu_);
  if (parked_ == 0) {  // entry gone; what was handed here and not received is queued again
    handed_.clear();   // each was in the hand-offs hash, not held: put back
    last_hid_ = std::max(last_hid_, top);
    registered_ = in_transit_ = 0;
  } else if (delta > 0) {
    registered_ += delta;
  } else {
    registered_ -= k;
    in_transit_ = std::max<int64_t>(0, registered_ - now);  // used by pushes not heard of yet
  }
}

Errc RedisStore::reclaim_lost() {
  if (Errc e = b_.reclaim(rid_, field_, *lost_); e != Errc::ok) return e;
  lost_.reset();
  return Errc::ok;
}

Errc RedisStore::ack(uint64_t seq) {
  // Not waited for: the reader has its message, and a failed HDEL leaves the
  // record for the lease recovery (a duplicate, counted), as a failed
  // synchronous one would. One command on one key: atomic, one slot.
  if (handed_seqs_.erase(seq)) return b_.send({"HDEL", handoffs_, b_.daemon_id() + "|" + std::to_string(seq)});
  return b_.send({"HDEL", inflight_, std::to_string(seq)});
}

Errc RedisStore::unpop(uint64_t seq) {
  const std::string ev = b_.event('p', rid_);
  std::string st;
  handed_seqs_.erase(seq);
  auto r = run(rs::kUnpop, {std::to_string(seq), b_.channel(), ev, b_.daemon_id()}, &st);
  if (!r) return r.error();
  return st == "OK" ? Errc::ok : st == "GONE" ? Errc::removed : Errc::not_found;
}

Result<std::vector<std::pair<unsigned, uint64_t>>> RedisStore::priority_counts() {
  std::vector<std::pair<unsigned, uint64_t>> v;
  if (const uint64_t n = stats().count; n != 0) v.emplace_back(0u, n);  // every message is at priority 0
  return v;
}

Result<uint32_t> RedisStore::peek_len() {
  std::string first;
  if (taken_) {
    first = *taken_;  // the oldest, taken for this daemon's parked receivers
  } else {
    MutexLock g(hand_mu_);
    if (!handed_.empty()) first = handed_.front().rec;  // older than anything queued
  }
  if (!first.empty()) {
    unsigned long long seq = 0, len = 0;
    if (std::sscanf(first.c_str(), "%llu %llu ", &seq, &len) == 2) return static_cast<uint32_t>(len);
  }
  std::string st;
  auto r = run(rs::kPeek, {}, &st);
  if (!r) return r.error();
  if (st == "EMPTY") return Errc::again;
  if (st == "GONE") return Errc::removed;
  if (st != "OK" || r->elements.size() != 2) return Errc::io;
  return static_cast<uint32_t>(num(r->elements[1]));
}

Store::Withdrawn RedisStore::try_withdraw(uint64_t seq) {
  std::string st;
  auto r = run(rs::kWithdraw, {std::to_string(seq)}, &st);
  if (!r) return Withdrawn::contended;  // the server is away: the mailbox tries again
  return st == "RECEIVED" ? Withdrawn::received : Withdrawn::taken_back;
}

uint64_t RedisStore::consumed_seq() {
  // `consumed`: one past the highest seq a pop or withdrawal ever took;
  // messages leave in seq order, so those below it were received (at least
  // once). A return or unpop leaves it: it never steps back.
  return stats().consumed_seq;
}

bool RedisStore::full() {
  const QueueStats st = stats();
  return capacity_ != layout::kUnbounded && st.count >= std::max<uint64_t>(capacity_, 1);
}

bool RedisStore::full_after_push() {
  // The push script counted the queue (after what it took for a parked receive).
  return capacity_ != layout::kUnbounded && pushed_count_ >= std::max<uint64_t>(capacity_, 1);
}

uint64_t RedisStore::max_queued_len() {
  std::string st;
  auto r = run(rs::kMaxLen, {}, &st);
  if (!r || st != "OK" || r->elements.size() != 2) return UINT64_MAX;  // cannot tell now
  return static_cast<uint64_t>(num(r->elements[1]));
}

QueueStats RedisStore::stats() {
  std::string st;
  auto r = run(rs::kStats, {}, &st);
  if (!r || st != "OK" || !read_counters(r->elements, 1)) return last_;  // away or deleted: as last read
  return last_;
}

void RedisStore::watch(uint32_t bits, const std::weak_ptr<StoreListener>& listener) {
  // The backend's map is updated before the caller re-checks the server, so
  // an event published after the re-check's round trip finds this store.
  watching_ = bits != 0;
  {
    MutexLock g(hand_mu_);
    listener_ = listener;
  }
  b_.watch(this, listener, watching_);
  // Then (once per store) into the viewers set, also before the re-check: a
  // push or pop of another daemon made after it publishes its event here.
  // If that round trip fails, the next renewal tries again (view()).
  if (watching_ && !viewing_) {
    b_.view(rid_);
    viewing_ = true;
  }
}

bool RedisStore::take_kick() {
  // SYNC POINT: acq_rel, pairs with the release stores in RedisBackend::on_event/kick_all.
  return kick_.exchange(false, std::memory_order_acq_rel);
}

Errc RedisStore::reshape(const Settings& s, uint64_t* first) {
  const std::string ev = b_.event('s', rid_);
  std::string st;
  auto r = run(rs::kReshape, {capacity_text(s.capacity), std::to_string(s.max_message), b_.channel(), ev}, &st);
  if (!r) return r.error();
  if (st == "GONE") return Errc::removed;
  capacity_ = s.capacity;
  max_message_ = s.max_message;
  *first = 0;  // the queued messages keep their place and numbers
  return Errc::ok;
}

Errc RedisStore::save_settings(const Settings& s) {
  // One list in send order: a priority could not be kept (mailboxfs.8).
  if (s.send_priority != 0) return Errc::not_supported;
  const std::string ev = b_.event('s', rid_), tmo = std::to_string(s.timeout_ms);
  std::string st;
  auto r = run(rs::kSettings, {framing_name(s.framing), tmo, b_.channel(), ev}, &st);
  if (!r) return r.error();
  if (st == "GONE") return Errc::removed;
  framing_ = s.framing;
  timeout_ms_ = s.timeout_ms;
  return Errc::ok;
}

bool RedisStore::answers_here() {
  if (taken_) return true;
  MutexLock g(hand_mu_);
  return !handed_.empty();
}

void RedisStore::after_change(bool, bool) {
  const bool coming = std::exchange(reads_arriving_, false);  // receives on their way: kept for them
  receivers_waiting_ = false;
  sync_waiters();
  // Taken for a parked receive that ended meanwhile (no reader came for it):
  // back to the front, as an interrupted reply's message goes.
  if (!coming) give_back_taken();
}

void RedisStore::give_back_taken() {
  if (!taken_) return;
  uint64_t seq = 0;
  Sender from;
  std::string host, payload;
  const std::string rec = std::move(*taken_);
  taken_.reset();
  if (parse_record(rec, &seq, &from, &host, payload)) (void)unpop(seq);  // failed: left to the lease recovery
}

uint32_t RedisStore::sleeping_receivers() {
  int64_t own = 0;
  {
    MutexLock g(hand_mu_);
    own = registered_ - in_transit_;
  }
  const auto others = static_cast<int64_t>(waiting_) - std::max<int64_t>(0, own);
  return others > 0 ? static_cast<uint32_t>(others) : 0;
}

void RedisStore::load_settings(Settings* s) {
  (void)stats();  // the server away: the settings as last read
  s->capacity = capacity_;
  s->max_message = max_message_;
  if (framing_) s->framing = *framing_;
  if (timeout_ms_) s->timeout_ms = *timeout_ms_;
}

void RedisStore::destroy(bool) {
  taken_.reset();  // in this daemon's in-flight hash, deleted with the rest
  if (watching_) b_.watch(this, {}, false);
  watching_ = false;
  const std::string ev = b_.event('d', rid_);
  std::string st;
  if (auto r = run(rs::kDestroy, {b_.channel(), ev}, &st); !r)
    log(LogLevel::error, "redis: mailbox %s not deleted (server away)", rid_.c_str());
}

}  // namespace mbx

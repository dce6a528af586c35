// SPDX-License-Identifier: MIT
// The Redis store: each mailbox's messages on a Redis server that several
// daemons share (-o backend=redis://...), so a message sent through one
// daemon is received through another. Key layout, scripts and guarantees:
// docs/design.md, "The Redis backend".
//
// Round trips are made synchronously, under the mailbox's lock, on one
// connection per daemon (RedisBackend::conn_mu_, a leaf lock). The
// connection has short connect and command timeouts, so "every call returns
// at once" holds as "within one round trip, or EIO within the timeout" when
// the server is away; the connection then backs off before trying again, and
// calls meanwhile fail with EIO at once (a take may first renew the lease
// or put back a lost take: a round trip more each). Wake-ups come from a subscriber
// thread (one channel per namespace) and a periodic re-check.
#pragma once
#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "base/mutex.h"
#include "core/store.h"
#include "redis/client.h"
#include "redis/conn.h"
#include "redis/subscriber.h"
#include "redis/url.h"

namespace mbx {

struct RedisConfig {
  redis::Endpoint endpoint;
  std::string ns = "default";  // -o namespace: daemons with the same one share their mailboxes
  redis::Options options;
  std::chrono::milliseconds recheck{200};  // the periodic re-check of watched mailboxes
  // A daemon that has not renewed its lease for this long is dead: another
  // returns its in-flight messages to their mailboxes. Renewed every third.
  std::chrono::milliseconds lease{10000};
};

class RedisStore;

class RedisBackend {
 public:
  // Connects (io if the server does not answer). No threads yet.
  static Result<std::unique_ptr<RedisBackend>> open(const RedisConfig& cfg);
  // Starts the subscriber thread (notifications and the periodic re-check).
  void start();
  ~RedisBackend();

  // The store of mailbox `rid` (a name unique in the namespace, without
  // spaces or braces), made with `s`'s geometry unless it exists; `*s` gets
  // the geometry it has.
  Result<std::unique_ptr<Store>> open_store(const std::string& rid, Settings* s);
  const std::string& daemon_id() const { return daemon_id_; }
  const std::string& host() const { return host_; }
  const RedisConfig& config() const { return cfg_; }
  // Runs a script on the shared connection.
  Result<redis::Reply> eval(const redis::Script& s, const std::vector<std::string_view>& keys,
                            const std::vector<std::string_view>& args) EXCLUDES(conn_mu_);
  Result<redis::Reply> command(const std::vector<std::string_view>& argv) EXCLUDES(conn_mu_);
  // A command whose reply is not waited for (redis::Conn::send).
  Errc send(const std::vector<std::string_view>& argv) EXCLUDES(conn_mu_);
  // The channel of the namespace, and the event that tells of `op` on `rid`.
  const std::string& channel() const { return channel_; }
  std::string event(char op, const std::string& rid) const;
  // Connects now, without waiting out the backoff after a failure (the
  // subscriber's tick when it reached the server again; tests).
  Errc reconnect() EXCLUDES(conn_mu_);
  // The deployment's nodes as the connection knows them (the subscriber
  // moves to the next when its node goes away).
  std::vector<redis::Endpoint> endpoints() EXCLUDES(conn_mu_);
  // Renews this daemon's lease (the subscriber thread does it every lease/3).
  // A lease found claimed (the daemon was thought dead) registers its open
  // mailboxes again, so later in-flight records are still recovered.
  Errc renew_lease() EXCLUDES(renew_mu_, conn_mu_, watch_mu_, view_mu_);
  // Before a take (a pop, a push that takes for parked receives, more
  // waiters registered here): a started daemon whose last renewal is lease/2
  // old or more (or never made) renews first, and takes nothing if it
  // cannot. So a daemon starts a take only while its lease holds by its own
  // clock: once claimed as dead it starts none before it has renewed. A take
  // already under way (it may wait behind other round trips, up to the
  // command timeout each) can still reach the server after the claim; a
  // recovery may then return that record as well: a counted duplicate.
  Errc fresh_lease() EXCLUDES(renew_mu_, conn_mu_, watch_mu_, view_mu_);
  // Makes the last renewal look `by` older, as after a stall that long (tests).
  void age_lease(std::chrono::milliseconds by) {
    renewed_at_.fetch_sub(std::chrono::duration_cast<std::chrono::nanoseconds>(by).count(), std::memory_order_relaxed);
  }
  // Returns the in-flight messages of every daemon whose lease ended to the
  // front of their mailboxes (the subscriber thread does it every lease/2);
  // how many. Each dead daemon is claimed once, and its records are
  // returned again at every recovery (by whichever daemon runs it) until
  // one finds none two leases after the claim: what it took between the
  // claim and its death comes back too.
  Result<uint64_t> recover() EXCLUDES(conn_mu_);
  // Returns daemon `id`'s in-flight messages (this daemon's own at a clean
  // stop); `drop`: then its set of mailboxes (and its claim) goes.
  Result<uint64_t> return_in_flight(const std::string& id, bool drop = true) EXCLUDES(conn_mu_);
  // A take (pop, or a push taking for parked receives) of mailbox `rid`'s
  // store `field` whose reply never came: kept until reclaim() ran for it
  // (the subscriber's tick tries every one; the store before its next take).
  void note_lost(const std::string& rid, const std::string& field, uint64_t token) EXCLUDES(lost_mu_);
  // Runs kLost: the record that take moved in flight goes back to the
  // front if it is still there. ok once the server answered.
  Errc reclaim(const std::string& rid, const std::string& field, uint64_t token) EXCLUDES(conn_mu_, lost_mu_);
  // True once the subscription holds (tests wait for it before counting on wake-ups).
  bool subscribed() const { return sub_ && sub_->subscribed(); }
  // Waits until the subscription was made `n` times (1: started; 2: back
  // after the first outage, with the command connection tried again and
  // every watched store kicked); false at the hang guard `limit`.
  bool wait_subscriptions(uint64_t n, std::chrono::milliseconds limit) {
    return sub_ && sub_->wait_subscriptions(n, limit);
  }

 private:
  friend class RedisStore;
  explicit RedisBackend(const RedisConfig& cfg);
  void watch(RedisStore* s, const std::weak_ptr<StoreListener>& l, bool on) EXCLUDES(watch_mu_);
  // A published event: the watched stores of that mailbox are kicked; a
  // hand-off to this daemon goes to the store of its mailbox.
  void on_event(std::string_view ev) EXCLUDES(watch_mu_, conn_mu_);
  // Every watched store is kicked (a re-check: notifications may be lost).
  void kick_all() EXCLUDES(watch_mu_);
  // The subscriber's tick: kick_all, and the lease's renewal and recovery
  // when due. `fresh`: the subscription was just made (again): the server is
  // back, so the command connection is tried now, before the kick.
  void tick(bool fresh) EXCLUDES(conn_mu_, view_mu_);
  std::string inflight_set(const std::string& daemon) const;  // the mailboxes a daemon may hold records of
  std::string viewers_key(const std::string& rid) const;      // the daemons that watch mailbox rid
  // Adds this daemon to mailbox rid's viewers set (a round trip the first
  // time a store of rid watches; sticky while one is open here), so that
  // the pushes and pops of other daemons publish their events to it. A
  // failed SADD is made again at the next renewal (view_retry_).
  void view(const std::string& rid) EXCLUDES(view_mu_, watch_mu_, conn_mu_);
  // Adds this daemon to every viewers set it should be in again (SADDs not
  // waited for): after its lease was claimed (a recovery takes it out, and
  // one already under way may do so after this daemon's renewal, so the
  // renewals of the next two leases do it again), after an SADD failed, and
  // at a fresh subscription (a server restarted without its data lost them).
  void view_again() EXCLUDES(view_mu_, watch_mu_, conn_mu_);

  const RedisConfig cfg_;
  std::string daemon_id_, host_, channel_, daemons_, claimed_;
  std::chrono::steady_clock::time_point next_renew_{}, next_recover_{};  // the subscriber thread's only
  Mutex conn_mu_;                            // leaf lock: one round trip at a time on the shared connection
  redis::Client conn_ GUARDED_BY(conn_mu_);  // one server, or a cluster (a connection per node)
  struct Watched {
    std::weak_ptr<StoreListener> listener;
    std::atomic<bool>* kick;
  };
  Mutex watch_mu_;  // leaf lock: guards watched_ and open_; listeners are called after release
  std::unordered_multimap<std::string, std::pair<RedisStore*, Watched>> watched_ GUARDED_BY(watch_mu_);
  // rid -> stores open on it: what a renewal after a lease claimed as dead registers again.
  std::unordered_map<std::string, int> open_ GUARDED_BY(watch_mu_);
  // rid -> the stores open on it, watched or not (a hand-off finds its store here).
  std::unordered_multimap<std::string, RedisStore*> stores_ GUARDED_BY(watch_mu_);
  // The rids this daemon is a viewer of (view()); each leaves the set, and
  // the server's viewers set, when the last store open on it here closes.
  std::set<std::string> viewed_ GUARDED_BY(watch_mu_);
  // Orders one rid's SADD (a view) and SREM (its last close) on the
  // connection; taken before watch_mu_ and conn_mu_.
  Mutex view_mu_;
  // One renewal at a time (the subscriber's tick, fresh_lease() on the FUSE
  // threads, under a mailbox lock); taken before conn_mu_ and watch_mu_.
  Mutex renew_mu_;
  Errc renew_locked() REQUIRES(renew_mu_) EXCLUDES(conn_mu_, watch_mu_, view_mu_);
  bool lease_stale() const;
  bool renewed_ GUARDED_BY(renew_mu_) = false;
  bool reregister_ GUARDED_BY(renew_mu_) = false;  // claimed: the set of our mailboxes is to be made again
  int view_renewals_ GUARDED_BY(renew_mu_) = 0;     // renewals still to join the viewers sets again (claimed)
  // An SADD of view() or view_again() failed: the next renewal tries them
  // all again. Relaxed: a flag read alone.
  std::atomic<bool> view_retry_{false};
  std::atomic<bool> started_{false};  // start() ran: in the lease protocol (relaxed: a flag read alone)
  // steady_clock nanoseconds of the last successful renewal; 0: never.
  // Relaxed: a time only; it publishes nothing.
  std::atomic<int64_t> renewed_at_{0};
  std::atomic<uint64_t> next_store_{0};  // names each store's field in the tokens hashes
  struct Lost {
    std::string rid, field;
    uint64_t token;
  };
  Mutex lost_mu_;  // leaf lock
  std::vector<Lost> lost_ GUARDED_BY(lost_mu_);  // note_lost()'s, not reclaimed yet
  std::unique_ptr<redis::Subscriber> sub_;  // last member: stopped first
};

class RedisStore final : public Store {
 public:
  RedisStore(RedisBackend& b, std::string rid, const Settings& s);
  // Detaches (the mailbox stays on the server for the other daemons).
  ~RedisStore() override;

  Result<uint64_t> push(std::string_view msg, const Sender& from, bool force, unsigned prio) override;
  Result<Popped> pop(std::string& out) override;
  Result<std::vector<std::pair<unsigned, uint64_t>>> priority_counts() override;
  Errc ack(uint64_t seq) override;
  Errc unpop(uint64_t seq) override;
  bool keeps_in_flight() const override { return true; }
  bool has_priorities() const override { return false; }
  bool looks_are_round_trips() const override { return true; }
  bool answers_here() override EXCLUDES(hand_mu_);
  void receivers_waiting(bool w) override { receivers_waiting_ = w; }
  void reads_arriving(bool a) override { reads_arriving_ = a; }
  // Receives of this daemon parked here: kept in the mailbox's waiters hash
  // (a push through another daemon hands them records), by the next pop
  // that finds the mailbox empty or by after_change().
  void receivers_parked(uint32_t n) override { parked_ = n; }
  Result<uint32_t> peek_len() override;
  Withdrawn try_withdraw(uint64_t seq) override;
  uint64_t consumed_seq() override;
  uint64_t removed_count() override { return consumed_seq(); }
  bool full() override;
  bool full_after_push() override;  // from the push's reply: no round trip
  uint64_t capacity() const override { return capacity_; }
  uint64_t max_queued_len() override;
  QueueStats stats() override;
  bool corrupt() override { return corrupt_; }
  void mark_corrupt() override { corrupt_ = true; }
  void watch(uint32_t bits, const std::weak_ptr<StoreListener>& listener) override;
  bool take_kick() override;
  // The end of every mailbox-lock hold that may push or pop (the scripts
  // publish): puts back a record a push took for parked receives that did
  // not take it (Mailbox::settle_locked calls it at the end of every hold
  // that settles, and every push is made in one).
  void after_change(bool, bool) override;
  // Receives parked on other daemons, as last read: a rendezvous send
  // reaches them (hand-offs), so poll reports the mailbox writable.
  uint32_t sleeping_receivers() override EXCLUDES(hand_mu_);
  Errc reshape(const Settings& s, uint64_t* first) override;
  Errc save_settings(const Settings& s) override;
  void load_settings(Settings* s) override;
  void destroy(bool trust_counters) override;
  // No segment to map: libmailbox uses the file (user.mailbox.segment fails with EREMOTE).
  Result<std::string> locator() const override { return Errc::remote; }

  const std::string& rid() const { return rid_; }
  // Hand-offs heard of with their record and not yet popped (tests wait on it).
  size_t handed_held() EXCLUDES(hand_mu_) {
    MutexLock g(hand_mu_);
    return handed_.size();
  }

 private:
  friend class RedisBackend;
  // Runs a script on this mailbox's keys; the reply's status word in `*status`.
  Result<redis::Reply> run(const redis::Script& s, std::vector<std::string_view> args, std::string* status);
  // A hand-off event for this daemon, from the subscriber thread: the record
  // is kept for the next pop (ignored if a pop already answered it). The
  // listener to service, if any.
  std::shared_ptr<StoreListener> on_handed(uint64_t hid, uint64_t seq, std::string rec) EXCLUDES(hand_mu_);
  // Brings the waiters hash's entry of this daemon in line with parked_
  // (after_change): more, fewer, or none (then the records handed here that
  // no receive took go back to the front).
  void sync_waiters() EXCLUDES(hand_mu_);
  // Reads the counters a script appended to its reply from element `at` on
  // (redis_scripts.h, counters()) into last_ and the shared settings.
  bool read_counters(const std::vector<redis::Reply>& e, size_t at);

  RedisBackend& b_;
  const std::string rid_;
  const std::string meta_, queue_, inflight_, handoffs_, waiters_, viewers_;  // the keys (core/redis_scripts.h)
  uint64_t capacity_;
  // The other shared settings as last read (stats(), open_store); unset:
  // not on the server (a mailbox made before they were shared).
  uint64_t max_message_;
  std::optional<Framing> framing_;
  std::optional<uint64_t> timeout_ms_;
  bool corrupt_ = false;
  bool watching_ = false;
  bool viewing_ = false;  // view() was asked for this store's mailbox (RedisBackend::view)
  QueueStats last_{};          // as last read: what stats() answers while the server is away
  uint64_t pushed_count_ = 0;  // messages queued right after the last push (its reply)
  // Receive calls of this daemon are parked here (receivers_waiting_), or
  // on their way to the mailbox lock (reads_arriving_), as said before the
  // push: the push takes the oldest record for them in the same script (for
  // arriving ones, not in a rendezvous mailbox: the script checks the
  // capacity). after_change() keeps it while reads still arrive.
  bool receivers_waiting_ = false;
  bool reads_arriving_ = false;
  // A pop, or a push that takes for parked receives, moves a record to this
  // daemon's in-flight hash and notes "<token> <seq>" under field_ of the
  // tokens hash (tokens_). A reply that never came (a command timeout, the
  // connection lost) may still have run: lost_ is its token, and the next
  // call (or the store's end) puts that record back to the front (kLost),
  // so it does not wait in flight until this daemon stops.
  uint64_t token_ = 0;
  std::optional<uint64_t> lost_;  // also in the backend's list, for its tick
  bool tokened_ = false;          // a field was written: ~RedisStore deletes it
  const std::string tokens_, field_;
  // Puts back the record of a reply that never came (lost_), if it was taken.
  Errc reclaim_lost();
  // Puts the record taken for receives that did not take it (taken_) back
  // at the front of the queue.
  void give_back_taken();
  // The record that push took for them (in this daemon's in-flight hash):
  // the next pop() answers it without a round trip; after_change() puts it
  // back if none did.
  std::optional<std::string> taken_;
  // Hand-offs: records a push through another daemon moved to this daemon's
  // parked receives (the hand-offs hash). The members without a lock are the
  // mailbox lock's, as the rest of the store.
  uint32_t parked_ = 0;             // receives parked (receivers_parked)
  uint64_t waiting_ = 0;            // the waiters hash's sum, as last read (counters)
  std::set<uint64_t> handed_seqs_;  // answered from a hand-off, not yet acked: ack/unpop find them there
  struct Handed {
    uint64_t hid, seq;
    std::string rec;
  };
  Mutex hand_mu_;  // leaf lock (taken under the backend's watch_mu_): the subscriber thread's hand-offs
  std::deque<Handed> handed_ GUARDED_BY(hand_mu_);  // heard of with their record, not yet popped
  uint64_t last_hid_ GUARDED_BY(hand_mu_) = 0;      // the highest hid heard of (event or pop)
  // This daemon's waiter entry as it last set it, less the hand-offs heard
  // of since; in_transit_: hand-offs known made (a take-back found fewer)
  // but not heard of yet.
  int64_t registered_ GUARDED_BY(hand_mu_) = 0;
  int64_t in_transit_ GUARDED_BY(hand_mu_) = 0;
  std::weak_ptr<StoreListener> listener_ GUARDED_BY(hand_mu_);  // the last watch()'s
  // Set by the backend's subscriber thread under watch_mu_ (release), taken
  // by take_kick() (acq_rel exchange): a change was published.
  std::atomic<bool> kick_{false};
};

}  // namespace mbx

// SPDX-License-Identifier: MIT
// The daemon's view of one mailbox: its segment plus the calls parked on it.
//
// A call that cannot complete now is not a sleeping thread but a Waiter, kept
// on a FIFO list and finished by whichever thread makes it ready (a send, a
// receive, the doorbell, a timer, an interrupt or a delete). Knows nothing of
// FUSE: the front end subclasses Waiter and PollToken.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/errc.h"
#include "base/mutex.h"
#include "core/host.h"
#include "core/quota.h"
#include "core/settings.h"
#include "core/store.h"

namespace mbx {

class Mailbox;

// What a finished call returns: an error, or received bytes, or a count of
// bytes accepted by a write.
struct Outcome {
  Outcome() = default;
  explicit Outcome(Errc e, std::string d = {}, size_t w = 0) : err(e), data(std::move(d)), written(w) {}
  Errc err = Errc::ok;
  std::string data;
  size_t written = 0;
  bool has_from = false;  // a message was taken from the ring: `from` is its sender
  Sender from;
  std::string from_host;  // and its host, from a store shared across hosts
  unsigned prio = 0;      // and its priority
  // Messages the store keeps in flight until the reply was sent (their seqs):
  // the front end calls Mailbox::settle_in_flight once it knows.
  std::vector<uint64_t> in_flight;
};

// Feeds a mailbox on demand from elsewhere (direct communication's receive
// from any sender: messages are moved in from the receiver's links only when
// someone asks). Both calls are made with no core lock held.
class Feeder {
 public:
  virtual ~Feeder() = default;
  // Before a receive or poll looks at the ring.
  virtual void feed(Mailbox& box) = 0;
  // After a receiver parked or a poll was armed.
  virtual void waiting(Mailbox& box, bool poll) = 0;
};

// A readiness notification the front end armed through poll().
class PollToken {
 public:
  virtual ~PollToken() = default;
  virtual void notify() = 0;  // called once, with no core lock held
};

// One open file of a mailbox. All fields are guarded by its mailbox's mutex.
struct Handle {
  std::shared_ptr<Mailbox> box;
  Framing framing = Framing::file;  // fixed at open
  unsigned prio = 0;                // the priority of what it sends: fixed at open (send_priority)
  bool can_read = false, can_write = false;
  bool nonblock = false;  // last O_NONBLOCK seen (open, read, write)
  std::string rbuf;       // unread rest of a received message
  size_t roff = 0;
  // rbuf holds a rest: the next read takes it, not a message, so it does
  // not count among the reads arriving (Mailbox::arriving_reads_). The one
  // field read without the mutex; relaxed: a hint, set and cleared under it.
  std::atomic<bool> rest_held{false};
  bool got_message = false;  // file framing: this open has had its one message
  std::string wbuf;          // file framing: message being written; line: partial line
  // Bytes of wbuf charged to the quota (Mount::held()), for held_uid; at
  // least wbuf.size() between calls (line framing may hold a few more).
  uint64_t held = 0;
  uid_t held_uid = 0;
  // File framing: a write made the message longer than max_message
  // (EMSGSIZE) or found no quota for it (ENOSPC, EDQUOT). The message is
  // refused whole: what was buffered is dropped, later writes fail too, and
  // the close()/fsync() that would send it reports the same error.
  Errc wrefused = Errc::ok;
  std::unique_ptr<PollToken> poll;  // armed poll notification, if any
  // Direct communication: the sender recorded for every message this open file
  // sends (the opening process, not the writing thread). Fixed at open.
  std::optional<Sender> as;
  // Priorities through the file (layout.h, kSendPriorityIoctl and
  // kReceivedIoctl), keyed by the calling thread's id, so that threads and
  // processes sharing the open file never use each other's. Freed with it.
  std::unordered_map<pid_t, unsigned> next_prio;  // a thread's next send, until used
  struct Received {
    unsigned prio = 0;
    Sender from;
  };
  std::unordered_map<pid_t, Received> received;  // a thread's last message taken here
};

// A call parked on a mailbox. Subclassed by the front end.
class Waiter {
 public:
  virtual ~Waiter() = default;
  // Called exactly once for a parked waiter, with no core lock held.
  // `from_interrupt` is true when called from within Mailbox::interrupt().
  virtual void finish(Outcome o, bool from_interrupt) = 0;

  pid_t pid = 0;  // the caller's thread id, as the kernel reported it

 private:
  friend class Mailbox;
  enum class State { fresh, parked, done } state_ = State::fresh;
  bool interrupted_ = false;
  enum class Kind { recv, send } kind_ = Kind::recv;
  enum class Where { none, readers, writers, acks } where_ = Where::none;
  std::list<Waiter*>::iterator pos_;
  uint64_t id_ = 0;
  uint64_t timer_ = 0;
  bool grace_ = false;  // a non-blocking rendezvous send given kRendezvousGrace (EAGAIN when it ends)
  Handle* handle_ = nullptr;
  size_t want_ = 0;  // recv: request size
  struct SendJob {
    enum class Kind { datagram, line, flush } kind = Kind::datagram;
    std::vector<std::string> msgs;
    size_t next = 0;        // msgs[next] is the next to push (or the one awaiting its ack)
    size_t done_bytes = 0;  // bytes of msgs[0..next) delivered
    bool awaiting_ack = false;
    uint64_t seq = 0;
    size_t pre = 0;    // line: partial-line bytes of earlier writes in msgs[0]
    size_t chunk = 0;  // line/datagram: bytes of this write
    std::string tail;  // line: trailing partial line to keep on success
    Sender from;
    unsigned prio = 0;
    Errc err = Errc::ok;  // why it failed
    uint64_t held = 0;    // bytes of unsent msgs charged to the quota, for held_uid
    uid_t held_uid = 0;
  } job_;
};

struct MailboxInfo {
  QueueStats seg;
  Settings settings;
  uint64_t reported_size = 0;  // st_size to report (see Mailbox::reported_size)
  std::vector<pid_t> blocked_senders, blocked_receivers;
  Result<std::string> locator = Errc::io;  // where other participants find its store
  bool removed = false;
  size_t armed_polls = 0;  // open files waiting for a poll notification
};

// What stat(2) shows of a mailbox (Mailbox::stat): the counters alone, and
// whether the kernel may cache them.
struct StatInfo {
  QueueStats seg;
  uint64_t reported_size = 0;
  bool cacheable = false;
};

class Mailbox final : public std::enable_shared_from_this<Mailbox>, public StoreListener, public Reconciler {
 public:
  Mailbox(Host& host, uint64_t id, Settings s, std::unique_ptr<Store> store);
  ~Mailbox() override;
  uint64_t id() const { return id_; }

  std::unique_ptr<Handle> open(bool can_read, bool can_write, bool nonblock);
  // Last close of an open file: drops its poll token and any unsent partial message.
  void release(Handle& h);
  // True while no write can park inside write(2), where the kernel holds the
  // inode lock (clear_for): file framing, and no open file of another framing
  // may write. The front end lets the kernel cache the name only then.
  bool name_cacheable();

  // Each call either completes now (returns the outcome) or, when it would
  // block: with w == nullptr returns nullopt and changes nothing (the caller
  // arms its interrupt callback and calls again with a waiter); with a waiter,
  // parks it and returns nullopt (w->finish() comes later).
  // `reader` (the calling thread) is remembered as the receiver of the
  // message's sender (last_sender); a parked call uses w->pid.
  std::optional<Outcome> read(Handle& h, size_t size, bool nonblock, Waiter* w, pid_t reader = 0);
  std::optional<Outcome> write(Handle& h, const char* p, size_t n, bool nonblock, const Sender& from, Waiter* w);
  // close()/fsync(): commits file framing's message or line framing's partial
  // line; blocks unless the open file's last known O_NONBLOCK was set. At a
  // close (`closing`) by a writer a signal killed, what it wrote is an
  // unfinished message: dropped, not sent.
  std::optional<Outcome> flush(Handle& h, const Sender& from, Waiter* w, bool closing = false);
  // Drops an uncommitted message (a writer that died by a signal).
  void discard_unsent(Handle& h);
  // The handle holds bytes written but not yet sent (file or line framing).
  bool has_unsent(Handle& h);
  // Per-user quota: forgets what receivers took of the messages that users
  // queued through the daemon (a library receiver does not tell the daemon).
  void reconcile() override;

  // The reply carrying Outcome::in_flight was sent (`delivered`: the store
  // drops them) or not (an interrupt: they go back to the front, in order).
  // Called with no core lock held.
  void settle_in_flight(const std::vector<uint64_t>& seqs, bool delivered);

  // Readiness as poll(2) bits; arms `token` (replacing the handle's old one).
  unsigned poll(Handle& h, std::unique_ptr<PollToken> token);

  // A signal reached a parked call: it ends with EINTR, having consumed or
  // delivered nothing (a line write that delivered some lines returns their count).
  void interrupt(Waiter* w);
  // The owner or root (`uid`) is about to remove, rename or change this
  // mailbox in thread `tid`, blocked in system call `nr` (a path lookup); the
  // kernel will then wait for every write in progress, whose inode lock it
  // needs. Writes (not closes) of other users parked here end as if
  // interrupted (EINTR, nothing of them sent), and none parks again until
  // that call returned.
  void clear_for(uid_t uid, pid_t tid, long nr);
  // The doorbell rang: another participant may have changed the ring.
  void service() override;
  // Fires every armed poll handle, so that their pollers look again.
  void notify_polls();
  // The mount's idle sweep (Store::sweep): a store nobody changed since the
  // last sweep wakes its sleepers, and gives its memory back if it is empty
  // and nobody waits here.
  void sweep();
  // Deletes the mailbox: parked calls end with `why` (EIDRM), messages are
  // discarded, the segment file is removed. discard = false: this daemon
  // lets go of a store others share (it stops, or another daemon removed or
  // moved the name): parked calls end the same, the store is left as it is.
  void remove(Errc why = Errc::removed, bool discard = true);
  // remove() once the last open file is released, now if none is open
  // (mq_unlink: open descriptors keep the mailbox until they close).
  void remove_at_last_close();

  // Direct communication. The only sender is gone: receivers that would wait
  // (parked now or later) fail with `why` instead; queued messages stay.
  void hang_up(Errc why);
  // Takes the oldest whole message unless receivers are parked (they come
  // first) or none is queued; nullopt then.
  std::optional<Outcome> take_message();
  // Appends a message with its original sender, ignoring capacity and quota
  // (it was counted where it came from), and hands it to parked receivers.
  Errc inject(std::string_view msg, const Sender& from);
  // Installs the feeder (before the mailbox is shared; never changed after).
  void set_feeder(std::shared_ptr<Feeder> f) { feeder_ = std::move(f); }
  // ioctl(kSendPriorityIoctl) by thread `tid`: the priority of its next
  // send through `h` (see Handle::next_prio). invalid above kMaxPriority;
  // not_supported > 0 on a store without priorities (Redis).
  Errc set_send_priority(Handle& h, pid_t tid, unsigned prio);
  // ioctl(kReceivedIoctl): what thread `tid` last received through `h`; no_data if nothing.
  Result<Handle::Received> received(Handle& h, pid_t tid);
  // Sender of the last message thread `reader` received here, if any.
  std::optional<Sender> last_sender(pid_t reader);
  // The same as user.mailbox.sender shows it: "pid=P uid=U gid=G", and
  // " host=H" when the store is shared across hosts.
  std::optional<std::string> last_sender_text(pid_t reader);

  MailboxInfo info();
  // What stat(2) shows, without the rest of info() (no /proc or file system
  // call, no lists). `cacheable`: only the daemon changes this store (no
  // library was told where it is, see expose()), so the front end may let
  // the kernel cache the attributes; every later change through the daemon
  // then drops them (KernelCache::invalidate_attrs) before its reply.
  StatInfo stat();
  // A participant outside the daemon may change the store from now on: its
  // locator was asked for (user.mailbox.segment), it was left by an earlier
  // daemon, or other daemons share it. Attributes the kernel cached are
  // dropped before this returns, and none are cached again.
  void expose();
  // Whether stat() answers cacheable (a hint for the front end: expose()
  // drops what was cached after the answer anyway).
  bool attrs_cacheable() const { return !exposed_.load(std::memory_order_acquire); }  // pairs with expose()
  // Queued messages per priority, highest first (user.mailbox.priorities):
  // walks the queue, so not part of info(). busy: a receive lock held
  // elsewhere (a library view) kept it from looking.
  Result<std::vector<std::pair<unsigned, uint64_t>>> priorities();
  // The settings alone: takes no segment lock (a library process may hold
  // one for as long as it likes), so callers holding Tree::mu_ may use it.
  Settings settings();
  // Changes a setting by name; resizes the segment when capacity or
  // max_message change (busy if queued messages would not fit).
  Errc set(std::string_view name, std::string_view value);
  Errc set_once(std::string_view name, std::string_view value);  // contended: try again

 private:
  struct Batch {
    std::vector<std::pair<Waiter*, Outcome>> done;
    std::vector<std::unique_ptr<PollToken>> polls;
    bool changed = false;  // the ring changed: wake pollers
    bool pushed = false, popped = false;
    bool raise = false;  // became full: ask the front end to raise st_size
    uint64_t raise_to = 0;
    bool contended = false;  // a segment lock was held by another participant
    // A look at a store whose looks are round trips found it empty, and this
    // hold has added nothing since: parked receives need not look again.
    bool found_empty = false;
    bool attrs = false;        // what stat shows changed without a ring change (a setting)
    bool inval_attrs = false;  // drop the kernel's cached attributes (before any reply)
  };
  enum class Step { done, need_space, need_ack, failed };
  // One operation on the mailbox, the only way a public call that may finish
  // a waiter takes mu_: it holds mu_ for its scope, and at the end settles
  // (finishes what became ready, updates the watch bits), releases mu_, and
  // only then commits the batch (waiters finish, polls fire, the kernel's
  // size is raised). So nothing is finished with mu_ held, by structure.
  class SCOPED_CAPABILITY Op {
   public:
    // settle = false: an operation that changes no ring or waiter list
    // (info, a close without a poll) commits only what it collected.
    explicit Op(Mailbox& m, bool settle = true) ACQUIRE(m.mu_);
    ~Op() RELEASE();
    // Settles now, for a call that looks at the result before its scope ends.
    void settle();
    Batch b;
    Waiter* interrupted = nullptr;  // the waiter whose interrupt callback is running

   private:
    Mailbox& m_;
    bool settled_ = false;
  };

  std::optional<Outcome> take_locked(Handle& h, size_t want, Batch& b) REQUIRES(mu_);
  std::optional<Outcome> send_locked(Handle& h, Waiter::SendJob job, bool nonblock, Waiter* w, Batch& b) REQUIRES(mu_);
  Step run_send_locked(Waiter::SendJob& j, bool may_push, Batch& b) REQUIRES(mu_);
  Outcome send_outcome_locked(Handle& h, Waiter::SendJob& j, Errc err) REQUIRES(mu_);
  void deliver_locked(Batch& b) REQUIRES(mu_);
  void note_sender_locked(Handle& h, pid_t reader, const Outcome& o) REQUIRES(mu_);
  // The priority thread `tid` set for its next send through `h`, else the open file's.
  static unsigned send_prio_locked(const Handle& h, pid_t tid);
  // Sets the watch bits of a parked receive before it looks (Store::looks_are_round_trips).
  void watch_first_locked() REQUIRES(mu_);
  bool wants_feed(Handle& h);
  void drain_locked(Batch& b) REQUIRES(mu_);
  void settle_locked(Batch& b) REQUIRES(mu_);
  // Parks `w`; its timer is the mailbox's timeout_ms, or `grace` if set.
  void park_locked(Waiter* w, Waiter::Where where, std::optional<std::chrono::milliseconds> grace = std::nullopt)
      REQUIRES(mu_);
  // A non-blocking rendezvous send waits this long for a receiver that sleeps
  // in libmailbox (it cannot be handed the message at once, as one parked here
  // is); then it is withdrawn (EAGAIN). Longer than a library try_send waits:
  // a woken thread beside busy CPUs (or under ASan) often needs more than 1 ms.
  static constexpr std::chrono::milliseconds kRendezvousGrace{50};
  bool library_receiver_sleeping() REQUIRES(mu_);
  void list_locked(Waiter* w, Waiter::Where where, bool front) REQUIRES(mu_);
  void unlist_locked(Waiter* w) REQUIRES(mu_);
  void unpark_locked(Waiter* w) REQUIRES(mu_);
  void end_locked(Waiter* w, Errc err, Batch& b) REQUIRES(mu_);
  uint64_t reported_size_locked(const QueueStats& st) const REQUIRES(mu_);
  // Held bytes (see Handle::held, SendJob::held).
  void drop_wbuf_locked(Handle& h) REQUIRES(mu_);
  void trim_held_locked(Handle& h) REQUIRES(mu_);
  // Per-user quota: a message `uid` queued through the daemon, at `seq`.
  void track_locked(uint64_t seq, uid_t uid, uint64_t bytes) REQUIRES(mu_);
  void reconcile_locked() REQUIRES(mu_);
  // A write of `writer` would park while clear_for()'s call is under way.
  bool clearing_locked(uid_t writer) REQUIRES(mu_);
  void commit(Batch& b, Waiter* interrupted) EXCLUDES(mu_);
  void expire(uint64_t waiter_id);
  // Parked calls that met a segment lock held elsewhere are tried again by a
  // timer, kRetryFirst doubling up to kRetryMax, and whenever the holder's
  // next change rings the doorbell (both watch bits stay set meanwhile).
  void retry_later_locked() REQUIRES(mu_);
  void retry();
  static constexpr std::chrono::milliseconds kRetryFirst{1}, kRetryMax{50};
  // The segment is corrupt: every parked call and later call fails with
  // EBADMSG, polls see POLLERR, the segment is never touched again.
  void quarantine_locked(Batch& b) REQUIRES(mu_);

  Host& host_;
  const uint64_t id_;
  // Lock rule: mu_ is taken before the segment's robust mutex, and is never
  // held while calling Waiter::finish, PollToken::notify or Mount hooks.
  // The segment is in no_wait mode: with mu_ held, a segment lock is only
  // ever tried, never waited for (another process controls it).
  Mutex mu_;
  Settings settings_ GUARDED_BY(mu_);
  std::unique_ptr<Store> store_ GUARDED_BY(mu_);  // null once removed
  bool removed_ GUARDED_BY(mu_) = false;
  Errc removed_why_ GUARDED_BY(mu_) = Errc::removed;  // what later calls get: EIDRM, or ESRCH for a direct link
  std::list<Waiter*> readers_ GUARDED_BY(mu_);
  std::list<Waiter*> writers_ GUARDED_BY(mu_);
  std::list<Waiter*> acks_ GUARDED_BY(mu_);
  std::unordered_map<uint64_t, Waiter*> parked_ GUARDED_BY(mu_);
  std::list<Handle*> handles_ GUARDED_BY(mu_);     // open files with an armed poll token
  uint32_t parkable_writers_ GUARDED_BY(mu_) = 0;  // open files that may write and are not file framing
  uint64_t open_files_ GUARDED_BY(mu_) = 0;        // Handles open() made and release() has not ended
  bool remove_at_last_close_ GUARDED_BY(mu_) = false;
  uint64_t next_waiter_id_ GUARDED_BY(mu_) = 1;
  uint32_t unresponsive_sleepers_ GUARDED_BY(mu_) = 0;  // see library_receiver_sleeping()
  uint32_t watch_ GUARDED_BY(mu_) = 0;
  Errc hangup_ GUARDED_BY(mu_) = Errc::ok;  // direct link whose sender exited: no more waiting
  bool contended_ GUARDED_BY(mu_) = false;  // parked calls wait for a lock another participant holds
  uint64_t retry_timer_ GUARDED_BY(mu_) = 0;
  std::chrono::milliseconds retry_delay_ GUARDED_BY(mu_) = kRetryFirst;
  bool quarantined_ GUARDED_BY(mu_) = false;
  // The kernel may hold attributes stat() answered as cacheable: the next
  // change (Batch::changed or attrs) clears it and drops them.
  bool attrs_cached_ GUARDED_BY(mu_) = false;
  // Set once by expose(), never cleared; written under mu_ too, so stat()'s
  // read under mu_ is exact and attrs_cacheable()'s is a hint.
  std::atomic<bool> exposed_{false};
  // Receives through a datagram or line open file with no rest of a
  // message to return, waiting for mu_ (each pass of Mailbox::read counts
  // itself until it holds mu_): a push may take a message for them
  // (Store::reads_arriving). Relaxed: a hint read under mu_; one missed
  // costs a look, one counted in vain a put-back.
  std::atomic<uint32_t> arriving_reads_{0};
  // Only a store whose looks are round trips takes for arriving reads: the
  // others' reads do not count them (fixed with store_ at construction).
  const bool counts_arrivals_;
  // Receives are on their way to mu_, in a mailbox that is neither gone nor
  // quarantined (nobody would take the message) nor, as last known, a
  // rendezvous one (there a take counts as received: it acks the sender).
  bool reads_arriving_locked() REQUIRES(mu_);
  QueueStats last_stats_ GUARDED_BY(mu_);  // as last read: what a quarantined mailbox reports
  struct From {
    Sender s;
    std::string host;  // empty unless the store is shared across hosts
  };
  std::unordered_map<pid_t, From> last_from_ GUARDED_BY(mu_);  // reading thread -> sender of its last message
  std::shared_ptr<Feeder> feeder_;                             // immutable once shared
  // Per-user quota: messages users queued through the daemon, oldest first,
  // until receivers take them (seq below the segment's popped count).
  struct Queued {
    uint64_t seq;
    uid_t uid;
    uint64_t bytes;
  };
  std::deque<Queued> queued_ GUARDED_BY(mu_);
  // clear_for()'s call, until it has returned or kClearingLimit has passed.
  struct Clearing {
    pid_t tid = 0;  // 0: none under way
    uid_t uid = 0;
    long nr = -1;
    std::chrono::steady_clock::time_point until;
  } clearing_ GUARDED_BY(mu_);
  // The lock is taken microseconds after the lookup; a thread seen running
  // for longer may be past its call, and writers would retry for nothing.
  static constexpr std::chrono::seconds kClearingLimit{1};
};

// Makes mailboxes: what direct communication and the tree need of the mount.
class MailboxFactory {
 public:
  virtual ~MailboxFactory() = default;
  virtual Result<std::shared_ptr<Mailbox>> create_mailbox(uint64_t id, const Settings& s) = 0;
  virtual const Settings& defaults() const = 0;  // the mount's -o settings
};

}  // namespace mbx

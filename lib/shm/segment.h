// SPDX-License-Identifier: MIT
// One mailbox's shared-memory segment: a ring of variable-size records split in
// a send half and a receive half, each guarded by its own robust
// process-shared mutex, with futex words for sleepers. The daemon is one
// participant; any process that maps the file is another. Knows nothing of
// FUSE or of the daemon's parked requests. A Segment object is used by one
// thread at a time.
#pragma once
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/errc.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "mailbox/layout.h"

namespace mbx {

struct SegmentStats {
  uint64_t count = 0, bytes = 0, record_bytes = 0;
  uint64_t total_sent = 0, total_received = 0, lost = 0;
  uint64_t next_seq = 0, consumed_seq = 0;
  int64_t last_send_ns = 0, last_recv_ns = 0;
};

// Record-area size that always fits `capacity` messages of `max_message`
// bytes (one spare record absorbs the gap a wrap leaves), bounded by what the
// quota could ever let in.
uint64_t data_size_for(uint64_t capacity, uint64_t max_message, uint64_t quota_max);

class Segment {
 public:
  Segment() = default;
  Segment(Segment&&) noexcept = default;
  Segment& operator=(Segment&&) noexcept = default;
  ~Segment();

  // Creates `path` (O_EXCL) and initialises a live, empty ring.
  static Result<Segment> create(const std::string& path, uint64_t capacity, uint64_t max_message, uint64_t data_size,
                                mode_t mode);
  // Maps an existing segment and validates it (bad_message if it is not one).
  // no_wait: as set_no_wait(), from the start (contended: a lock is held).
  static Result<Segment> attach(const std::string& path, bool no_wait = false);

  // The daemon's mode: no call waits for a lock another process controls.
  // Each lock is tried (a bounded spin); one held by a live participant makes
  // the call fail with Errc::contended having changed nothing, and one whose
  // state no live participant can have left (its owner is no thread, a mutex
  // kind nobody writes) or a header that no longer matches the geometry marks
  // the segment corrupt (bad_message). Counters are then read without locks.
  void set_no_wait(bool on) { no_wait_ = on; }
  bool corrupt() const { return hdr_ && hdr_->state.load(std::memory_order_acquire) == layout::kCorrupt; }
  // Marks the segment corrupt without taking a lock, and wakes every sleeper
  // so that other participants see it (quarantine).
  void mark_corrupt();

  // Where the mount's quota counter and doorbell live (the control segment).
  // A receive gives quota back in batches of settle_batch_ bytes (whatever an
  // emptied mailbox still owes stays charged until the next receive, delete or
  // resize): the mount-wide counter is a cache line every sender and receiver
  // would otherwise bounce on every message.
  // With batch_sends, a send takes quota from the mount in batches of the
  // same size too, kept in the segment as credit for the next sends (library
  // participants: the counter is shared by every mailbox of the mount, so two
  // processes that each send to one ping-pong it otherwise).
  // Whoever reads the counters (stats()), empties or deletes the mailbox gives
  // the credit back.
  void set_control(layout::ControlHeader* ctl, bool batch_sends = false) {
    ctl_ = ctl;
    settle_batch_ = ctl ? std::min<uint64_t>(kBatchMax, ctl->quota_max >> 16) : 0;
    send_batch_ = batch_sends ? settle_batch_ : 0;
  }

  bool valid() const { return hdr_ != nullptr; }
  const std::string& path() const { return path_; }
  layout::SegmentHeader* header() const { return hdr_; }
  uint64_t capacity() const { return capacity_; }
  uint64_t max_message() const { return max_message_; }
  uint64_t data_size() const { return data_size_; }
  // Changes the capacity limit (not the geometry); used when resizing.
  void set_capacity(uint64_t c) {
    capacity_ = c;
    hdr_->capacity = c;
  }

  // Appends one message at priority `prio` (0..kMaxPriority, else invalid;
  // > 0 in a segment older than version 6: not_supported); returns its seq.
  // again: full (by count, or ring space of a bounded mailbox); no_space:
  // quota exhausted; msg_size: too large. force: ignore capacity and quota
  // limits (moving queued messages on resize).
  Result<uint64_t> push(const char* data, size_t len, const Sender& from, int64_t now_ns, bool force = false,
                        unsigned prio = 0);
  // Version 7: whether this object holds the send (receive) half biased to
  // the calling thread (its sends, or pops, take no lock; design.md section
  // 4, "Biased halves").
  bool biased() const { return biased(Side::send); }
  bool receive_biased() const { return biased(Side::recv); }
  // How often this object biased its send (receive) half to its thread, and
  // how often another participant of that half (not the daemon) took it back.
  struct BiasCounts {
    uint32_t biased, taken_back;
  };
  BiasCounts bias_counts(bool receive) const {
    const int k = receive ? 1 : 0;
    return {biases_[k], taken_back_[k]};
  }
  struct Popped {
    uint64_t seq;
    Sender from;
    unsigned prio;
  };
  // Removes the next message (the oldest of the highest priority), appending
  // its payload to `out`. again: empty; msg_size: it is longer than max_len
  // (and stays queued).
  Result<Popped> pop(std::string& out, int64_t now_ns, size_t max_len = SIZE_MAX);
  struct PoppedInto {
    uint64_t seq;
    Sender from;
    size_t len;
    unsigned prio;
  };
  // As pop(), copying the payload into buf[0..cap).
  Result<PoppedInto> pop_into(void* buf, size_t cap, int64_t now_ns);

  // Zero-copy send: reserve() takes the send lock and returns where `len`
  // payload bytes go (errors as push()); commit_reserved() publishes them and
  // returns the seq, abort_reserved() gives the room back. Other senders wait
  // in between; a participant that dies in between loses (and counts) it.
  Result<char*> reserve(size_t len, const Sender& from, int64_t now_ns, unsigned prio = 0);
  uint64_t commit_reserved();
  bool reserving() const { return reserved_.has_value(); }
  void abort_reserved();
  // Zero-copy receive: view() takes the receive lock and returns the next
  // message in place (errors as pop()); release_view() removes it,
  // cancel_view() leaves it queued. Other receivers wait in between.
  struct View {
    const char* data;
    size_t len;
    uint64_t seq;
    Sender from;
    unsigned prio;
  };
  Result<View> view(int64_t now_ns);
  void release_view();
  void cancel_view();
  // Payload length of the next message. again: empty.
  Result<uint32_t> peek_len();
  // Queued messages per priority, highest first (contended in no_wait mode,
  // bad_message if the ring is damaged).
  Result<std::vector<std::pair<unsigned, uint64_t>>> priority_counts();
  // Takes back message `seq` if it is the only one queued and still unreceived
  // (an interrupted rendezvous send). Returns false if it was received.
  bool withdraw(uint64_t seq);
  // As withdraw(), telling a held lock apart (no_wait mode).
  enum class Withdrawn { taken_back, received, contended };
  Withdrawn try_withdraw(uint64_t seq);
  // True if a push of one message would not find the mailbox full by count.
  // (With a lock held elsewhere in no_wait mode: from the published counters.)
  bool full();
  // Under both locks; in no_wait mode with a lock held elsewhere, the
  // counters as the halves last wrote them (each word whole, maybe mid-update).
  SegmentStats stats();
  uint64_t consumed_seq();
  // Largest payload queued (walks the ring); UINT64_MAX if it cannot tell
  // (corrupt, or a lock held elsewhere in no_wait mode).
  uint64_t max_queued_len();
  // Carries the lifetime counters over to a replacement segment.
  void adopt_counters(const SegmentStats& s);

  // A queued message taken out of a retired segment.
  struct Taken {
    std::string data;
    Sender from;
    unsigned prio = 0;
  };
  // Resizing: marks the segment retired (other participants stop and look
  // the mailbox up again), then takes every queued message out, in order.
  // Returns the counters as they are at that moment, or the error that kept
  // it from taking both locks (nothing changed then).
  Result<SegmentStats> retire_and_take(std::vector<Taken>& out);
  // Undoes retire_and_take() when the replacement could not be made.
  void unretire_and_put_back(const std::vector<Taken>& queued, const SegmentStats& st);
  // Moves both futex words and wakes every sleeper, so that they re-check
  // (after a retire or a delete).
  void wake_all();
  // Marks the segment retired/deleted so other participants stop using it.
  // In no_wait mode a terminal state (deleted, corrupt) is stored even when
  // a lock is held elsewhere: its holder sees it at its next lock.
  void set_state(uint32_t state);
  // Releases the quota held by everything queued and empties the ring
  // (contended in no_wait mode: nothing done, try again later). deleted_too:
  // also once it is marked deleted (not when corrupt).
  Errc discard_all(bool deleted_too = false);
  // Gives back the quota that receives freed but still hold and the credit
  // sends took ahead (each less than a batch, see set_control()).
  void settle_quota();
  // For an idle mailbox: if the ring is empty, moves it to the start of the
  // next lap and gives all of its record area's memory back (what stays
  // resident is the header's page). Costs a few page faults at the next send;
  // meant for mailboxes nobody has used for a while. busy: something is
  // queued (nothing done); contended in no_wait mode; version 4: nothing done.
  Errc trim();

  // Futex protocol: wakes non-daemon sleepers, and kicks the daemon's doorbell
  // when a non-daemon participant (by_daemon=false) changed a watched ring.
  void after_push(bool by_daemon);
  void after_pop(bool by_daemon);
  // A non-daemon receiver has counted itself in sleeping_receivers: in a
  // rendezvous mailbox that makes it writable for the daemon's non-blocking
  // senders and pollers, so the daemon is kicked if it watches for that.
  void receiver_sleeping();
  // True once after this thread kicked a daemon that has polls armed
  // (kWatchPolled): lib/mq then probes the file so the polls fire now.
  static bool take_polled_kick();

  // mq_notify's registration (layout.h, notify_owner). notify_arm: arms
  // `token` ((generation << 32) | pid of the caller); busy if another live
  // process holds it (a dead one's is taken over). notify_disarm: takes
  // `token` back if still armed (false: it fired, or is not ours), and moves
  // notify_seq so that a thread waiting for it re-checks.
  Errc notify_arm(uint64_t token);
  bool notify_disarm(uint64_t token);

  // Removes the file (the mapping stays valid until destruction).
  void unlink_file();

  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

 private:
  enum class Side { send, recv };
  // The header's two robust process-shared mutexes, as clang's lock checker
  // sees them: `send_lock_` stands for hdr_->send_lock, `recv_lock_` for
  // hdr_->recv_lock. Taken only through the scoped guards SendLocked,
  // RecvLocked and Both (or a reservation or view, which holds one across
  // calls), and the functions below say which they need held.
  class CAPABILITY("robust mutex") RobustMutex {};
  mutable RobustMutex send_lock_, recv_lock_;
  class SendLocked;
  class RecvLocked;
  class Both;
  struct Found {  // where the next record is
    uint64_t pos;
    layout::RecordHeader r;
    bool first = true;  // no queued record before it: removing it moves the head
  };
  struct Room {  // where a new record goes
    uint64_t at;
    bool wrap;
  };
  // The primitives behind the guards (not checked: which lock is a runtime value).
  Errc lock(Side side, bool any_state) const NO_THREAD_SAFETY_ANALYSIS;
  [[gnu::noinline]] Errc lock_slow(Side side, bool any_state, int tried) const NO_THREAD_SAFETY_ANALYSIS;
  void unlock(Side side) const NO_THREAD_SAFETY_ANALYSIS;
  bool try_lock(Side side) const NO_THREAD_SAFETY_ANALYSIS;
  bool try_lock_recv() const TRY_ACQUIRE(true, recv_lock_) NO_THREAD_SAFETY_ANALYSIS { return try_lock(Side::recv); }
  void unlock_recv() const RELEASE(recv_lock_) NO_THREAD_SAFETY_ANALYSIS { unlock(Side::recv); }
  int try_acquire(pthread_mutex_t* m) const;
  Errc held_elsewhere(pthread_mutex_t* m) const;
  bool header_intact() const;
  SegmentStats read_stats() const;
  bool check_ring_locked() const REQUIRES(send_lock_, recv_lock_);
  bool recover_send_locked() const REQUIRES(send_lock_);
  bool recover_recv_locked() const REQUIRES(recv_lock_);
  bool positions_sane() const;
  template <class F>
  bool walk_locked(F&& f) const REQUIRES(recv_lock_);
  template <class F>
  bool walk_to_locked(uint64_t tail, bool tombstones, F&& f) const REQUIRES(recv_lock_);
  bool flags_ok(const layout::RecordHeader& r, bool first) const;
  Result<Found> oldest_locked() REQUIRES(recv_lock_);
  // The record a receive takes: the oldest (oldest_locked) while no record
  // of priority > 0 nor a tombstone is queued, else pick_locked() walks.
  // Inline, and what only rings with priorities need out of line: the
  // fast path stays version 5's code.
  inline Result<Found> next_locked() REQUIRES(recv_lock_);
  [[gnu::noinline, gnu::cold]] Result<Found> pick_locked() REQUIRES(recv_lock_);
  void resync_prio_locked(uint64_t tail) const REQUIRES(recv_lock_);
  inline Errc remove_found_locked(const Found& f, int64_t now_ns, bool received = true) REQUIRES(recv_lock_);
  [[gnu::noinline, gnu::cold]] Errc take_locked(const Found& f, int64_t now_ns) REQUIRES(recv_lock_);
  [[gnu::noinline, gnu::cold]] uint64_t pass_tombs_locked(uint64_t pos, uint64_t* last_seq, uint64_t* passed) const
      REQUIRES(recv_lock_);
  bool mark_taken_locked(uint64_t pos) const REQUIRES(recv_lock_);
  Result<Room> room_locked(uint64_t rec, bool force) REQUIRES(send_lock_);
  // A push once the send half is ours (send_lock held, or biased to us);
  // the record's seq in *seq.
  inline Errc push_locked(const char* data, size_t len, const Sender& from, int64_t now_ns, bool force, unsigned prio,
                          uint64_t* seq) REQUIRES(send_lock_);
  // Version 7, biased halves (design.md section 4, "Biased halves"): runs
  // `body` (which does what the side's lock allows) for the thread the half
  // is biased to, without the lock, and returns true; false if it is not
  // (any more): then the caller takes the lock.
  template <class Body>
  bool run_biased(Side side, Body&& body);
  // pop() and pop_into(): see segment.cc.
  template <class Take>
  Result<layout::RecordHeader> receive_one(int64_t now_ns, Take&& take);
  // After an operation under a half's lock: biases the half to this thread
  // once `n` (the half's count of operations: records pushed or removed)
  // moved by one each time for kBiasAfter operations in a row.
  void maybe_bias(Side side, uint64_t n) NO_THREAD_SAFETY_ANALYSIS;
  bool biased(Side side) const;
  // With a half's lock just taken and its bias word set: takes the half back
  // from the thread it is biased to (waits until it is out of its operation,
  // recovers from its death in one); contended in no_wait mode while it
  // stays in one.
  // `may_give_up`: in no_wait mode, contended rather than wait for a live
  // thread inside one (false: after EOWNERDEAD, which must not be let go).
  [[gnu::noinline]] Errc revoke_bias_locked(Side side, bool may_give_up) const NO_THREAD_SAFETY_ANALYSIS;
  std::atomic<uint32_t>& bias_word(Side side) const { return side == Side::send ? hdr_->send_bias : hdr_->recv_bias; }
  std::atomic<uint32_t>& busy_word(Side side) const { return side == Side::send ? hdr_->bias_busy : hdr_->recv_busy; }
  // Operations in a row alone before a bias (times 16 for this object each time
  // its bias was taken back, up to the max); sched_yield()s a revoker makes
  // while the biased sender is inside a send, before it sleeps.
  static constexpr uint32_t kBiasAfter = 64, kBiasAfterMax = 1u << 20;
  static constexpr int kBiasYields = 1024;
  Errc charge_quota_locked(uint64_t rec, bool force) REQUIRES(send_lock_);
  void write_record_locked(const Room& room, size_t len, const Sender& from, int64_t now_ns, unsigned prio)
      REQUIRES(send_lock_);
  Errc remove_oldest_locked(const Found& f, int64_t now_ns, bool received) REQUIRES(recv_lock_);
  void release_passed_locked(uint64_t old_head, uint64_t new_head) REQUIRES(recv_lock_);
  [[gnu::noinline]] void release_chunks_locked(uint64_t old_head, uint64_t new_head) REQUIRES(recv_lock_);
  void restart_if_empty_locked() REQUIRES(send_lock_);
  static constexpr uint64_t kRestartAt = 64 * 1024;
  static constexpr uint64_t kReleaseChunk = 256 * 1024;
  // Sends allocate the record area's memory this much at a time (a divisor
  // of kReleaseChunk): bounds what a mailbox holding one message keeps.
  static constexpr uint64_t kPopulateChunk = 64 * 1024;
  static_assert(kReleaseChunk % kPopulateChunk == 0);
  Errc populate_locked(uint64_t from, uint64_t end) const REQUIRES(send_lock_);
  [[gnu::noinline]] Errc populate_chunks_locked(uint64_t from, uint64_t end) const REQUIRES(send_lock_);
  // Version 5: the ring may wrap before the end of its area (room_locked()).
  bool early_wrap_locked(uint64_t off, uint64_t rec) const REQUIRES(send_lock_);
  bool sizing_sane() const;
  // pos % data_size_, `lap` caching the start of pos's lap (any value: a
  // position outside that lap recomputes it).
  uint64_t offset_in(uint64_t pos, uint64_t& lap) const {
    if (pos - lap >= data_size_) lap = pos - pos % data_size_;
    return pos - lap;
  }
  // Version 5: the lap an early wrap starts at least kSoftWrap into, and the
  // empty ring restarts from there; the kept area is allocated this much at a time.
  static constexpr uint64_t kSoftWrap = 32 * 1024;
  static constexpr uint64_t kKeepChunk = 16 * 1024;
  static_assert(layout::kKeepResident % kReleaseChunk == 0 && layout::kKeepResident % kKeepChunk == 0);
  void commit_send_locked(const layout::SendState& n) const REQUIRES(send_lock_);
  void commit_recv_locked(const layout::RecvState& n) const REQUIRES(recv_lock_);
  void empty_both_locked() REQUIRES(send_lock_, recv_lock_);
  void settle_quota_locked(bool force = true) const REQUIRES(recv_lock_);
  void return_credit_locked() const REQUIRES(send_lock_);
  void release_quota(uint64_t bytes) const;
  uint64_t credit_bound() const { return kBatchMax + layout::record_size(max_message_); }
  static constexpr uint64_t kBatchMax = 64 * 1024;
  uint64_t queued_locked() const REQUIRES(send_lock_);
  bool full_locked() const REQUIRES(send_lock_);
  uint64_t effective_capacity() const;
  void kick_daemon(uint32_t watch_bit);
  // The futex word and the woken side's position as this object's last wake
  // on the word left them (wake_one()); word UINT64_MAX (no u32 value) before any.
  struct Woke {
    uint64_t word = UINT64_MAX, pos = 0;
  };
  void wake_one(std::atomic<uint32_t>& word, uint32_t n, const std::atomic<uint64_t>& theirs, Woke& woke);
  // After a push committed record `seq`: fires an armed mq_notify
  // registration if the ring was empty before it and no receiver waits.
  void notify_after_push_locked(uint64_t seq, const Sender& from) REQUIRES(send_lock_);

  std::string path_;
  Mapping map_;
  layout::SegmentHeader* hdr_ = nullptr;
  char* data_ = nullptr;
  // Private copies of the geometry: never re-read from shared memory.
  uint64_t capacity_ = 0, max_message_ = 0, data_size_ = 0;
  uint32_t version_ = 0;
  // The part of the area kept resident (layout::kKeepResident, or all of a
  // smaller area): 0 for a version 4 segment, whose every chunk is released.
  uint64_t keep_ = 0;
  layout::ControlHeader* ctl_ = nullptr;
  uint64_t settle_batch_ = 0, send_batch_ = 0;
  bool no_wait_ = false;  // see set_no_wait()
  // An unlock failed (the lock word was scribbled while we held it): glibc
  // left the mutex on this thread's robust list, and will write into it, so
  // the addresses must stay mapped for good (see ~Segment).
  mutable bool poisoned_ = false;
  // Version 7, per half (indexed by Side): this object biased the half to
  // the thread that used it (checked against the bias word, which another
  // participant may clear); the half's count after its last operation under
  // the lock, how many of those came in a row, and how many it takes.
  mutable bool biased_[2] = {false, false};
  uint64_t bias_last_[2] = {UINT64_MAX, UINT64_MAX};
  uint32_t bias_streak_[2] = {0, 0}, bias_after_[2] = {kBiasAfter, kBiasAfter};
  uint32_t biases_[2] = {0, 0}, taken_back_[2] = {0, 0};  // counted for bias_counts()
  // How the send in progress paid its quota: from the segment's credit, or
  // `from_mount` bytes added to the mount's counter (see charge_quota_locked).
  struct Charge {
    bool from_credit = false;
    uint64_t from_mount = 0;
  } charge_;
  // The other half's positions as this object last read them (each only
  // grows): re-read only when they do not let the operation through.
  uint64_t seen_head_ = 0, seen_popped_ = 0, seen_tail_ = 0;
  // The page of the record area (by position) in which this object's sends
  // last checked tail_pub and looked whether the ring could restart at
  // offset 0 (see room_locked()).
  uint64_t checked_page_ = UINT64_MAX;
  // The start of the lap the send half's (send_lap_) and the receive half's
  // (recv_lap_) positions were last in: offset_in() takes a position's offset
  // without a 64-bit division (10 to 40 cycles; the fast path made about ten
  // per message) while it stays in that lap.
  mutable uint64_t send_lap_ = 0, recv_lap_ = 0;
  uint64_t wrap_checked_page_ = UINT64_MAX;  // the same for an early wrap's fresh look at head_pub
  uint64_t recv_checked_page_ = UINT64_MAX;  // the same for head_pub (oldest_locked())
  // An open reservation or view holds its side's lock (see reserve(), view()).
  struct Reserved {
    Room room;
    size_t len;
    Sender from;
    int64_t now_ns;
    unsigned prio;
  };
  std::optional<Reserved> reserved_;
  Woke woke_pushed_, woke_popped_;  // see wake_one()
  std::optional<Found> viewed_;
  int64_t view_now_ns_ = 0;
};

// futex(2) on a 32-bit word in shared memory (not FUTEX_PRIVATE: other
// processes map the same page).
int futex_wait(std::atomic<uint32_t>* word, uint32_t expected, const struct timespec* rel);
// The same until an absolute CLOCK_MONOTONIC time, through futex_waitv(2):
// a signal whose handler has SA_RESTART restarts the wait in the kernel
// (-ERESTARTSYS), one without fails it with EINTR, as signal(7) has it for
// mq_receive; a timed FUTEX_WAIT fails with EINTR after any handler.
// Kernels before 5.16: FUTEX_WAIT with the time left.
int futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected, const struct timespec& abs_monotonic);
int futex_wake(std::atomic<uint32_t>* word, int n);

int64_t realtime_ns();
// The same at tick resolution (a few ms), for the fast path's timestamps.
int64_t coarse_realtime_ns();

}  // namespace mbx

// SPDX-License-Identifier: MIT
// The shared-memory store: each mailbox's messages in a segment file of the
// mount's state directory (shm/segment.h), which libmailbox maps too. The
// backend owns the state directory, its control segment (quota counter and
// doorbell), the doorbell thread that tells watched mailboxes of other
// participants' changes, and the graves of deleted segments whose lock a
// participant still held.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "core/store.h"
#include "core/timers.h"
#include "shm/segment.h"
#include "shm/state_dir.h"

namespace mbx {

class ShmBackend {
 public:
  // Takes the state directory (no threads yet: the daemon may still fork).
  static Result<std::unique_ptr<ShmBackend>> open(const std::string& dir, uint64_t max_bytes);
  // Starts the doorbell thread; graves are swept on `timers`.
  void start(Timers& timers);
  ~ShmBackend();

  // A fresh store for mailbox `id`.
  Result<std::unique_ptr<Store>> create(uint64_t id, const Settings& s);
  // Re-attaches the segment a dead daemon left for mailbox `id` (its newest
  // generation, renamed to generation 0); `s` gets its geometry.
  Result<std::unique_ptr<Store>> adopt(uint64_t id, Settings* s);
  // Unlinks the segment files of every mailbox id not in `keep`.
  void remove_except(const std::set<uint64_t>& keep);

  bool restored() const { return state_.restored(); }
  void keep_state() { state_.keep(); }
  const StateDir& state() const { return state_; }
  uint64_t quota_used() const;
  layout::ControlHeader* control() const;
  // The state directory was removed under the daemon (a /dev/shm cleaner):
  // makes it again, with a new control segment and doorbell, and says so
  // once. True if it exists now.
  bool restore_state_dir();
  // How many times restore_state_dir() made the directory again.
  uint64_t state_rebuilds() const { return rebuilds_.load(std::memory_order_acquire); }

 private:
  friend class ShmStore;
  ShmBackend() = default;
  Result<Segment> make_segment(uint64_t id, uint64_t generation, const Settings& s);
  void watch(const void* key, const std::weak_ptr<StoreListener>& l, bool on);
  void bury(Segment seg) EXCLUDES(graves_mu_);
  void sweep_graves() EXCLUDES(graves_mu_);
  void ring() EXCLUDES(watch_mu_);

  uint64_t max_bytes_ = 0;
  // Leaf lock: serialises restore_state_dir() with the uses of the control
  // segment it replaces (make_segment, quota_used).
  mutable Mutex state_mu_;
  bool restore_failed_said_ GUARDED_BY(state_mu_) = false;
  std::atomic<uint64_t> rebuilds_{0};  // release after the rebuild, acquire in state_rebuilds()
  StateDir state_;                     // its control segment is replaced under state_mu_ (restore_state_dir)
  Timers* timers_ = nullptr;           // set by start()
  Mutex watch_mu_;                     // leaf lock: guards watched_ only
  std::unordered_map<const void*, std::weak_ptr<StoreListener>> watched_ GUARDED_BY(watch_mu_);
  Mutex graves_mu_;  // leaf lock: guards graves_ and grave_delay_
  std::vector<Segment> graves_ GUARDED_BY(graves_mu_);
  std::chrono::milliseconds grave_delay_ GUARDED_BY(graves_mu_){0};  // 0: no sweep scheduled
  std::unique_ptr<Doorbell> doorbell_ GUARDED_BY(state_mu_);
  // Doorbells of controls replaced by restore_state_dir(): programs that
  // mapped one before still ring it.
  std::vector<std::unique_ptr<Doorbell>> old_doorbells_ GUARDED_BY(state_mu_);
};

class ShmStore final : public Store {
 public:
  ShmStore(ShmBackend& backend, uint64_t id, Segment seg);
  ~ShmStore() override;

  Result<uint64_t> push(std::string_view msg, const Sender& from, bool force, unsigned prio) override;
  Result<Popped> pop(std::string& out) override;
  Result<std::vector<std::pair<unsigned, uint64_t>>> priority_counts() override { return seg_.priority_counts(); }
  Errc ack(uint64_t) override { return Errc::ok; }  // pop handed it over
  Errc unpop(uint64_t) override { return Errc::not_supported; }
  bool keeps_in_flight() const override { return false; }
  Result<uint32_t> peek_len() override { return seg_.peek_len(); }
  Withdrawn try_withdraw(uint64_t seq) override;
  uint64_t consumed_seq() override { return seg_.consumed_seq(); }
  uint64_t removed_count() override;
  bool full() override { return seg_.full(); }
  uint64_t capacity() const override { return seg_.capacity(); }
  uint64_t max_queued_len() override { return seg_.max_queued_len(); }
  QueueStats stats() override;
  bool corrupt() override { return seg_.corrupt(); }
  void mark_corrupt() override { seg_.mark_corrupt(); }
  void watch(uint32_t bits, const std::weak_ptr<StoreListener>& listener) override;
  bool take_kick() override;
  void after_change(bool pushed, bool popped) override;
  uint32_t sleeping_receivers() override;
  Errc reshape(const Settings& s, uint64_t* first) override;
  void destroy(bool trust_counters) override;
  Result<std::string> locator() const override;
  void sweep(bool may_trim) override;

 private:
  ShmBackend& backend_;
  const uint64_t id_;
  Segment seg_;
  uint64_t generation_ = 0;  // bumped by each reshape: a new file
  uint32_t watch_ = 0;       // the daemon_watch bits last stored
  // The published positions at the last sweep(): unchanged at the
  // next means no participant sent or received in between.
  uint64_t idle_tail_ = UINT64_MAX, idle_head_ = UINT64_MAX;
  bool trimmed_ = false;  // trimmed at those positions: nothing more to give back
};

}  // namespace mbx

// SPDX-License-Identifier: MIT
// Mount-wide core state: the store backend (today the shared-memory one and
// its state directory), the default settings, the timer thread and the
// quota held for writers. It is the mailboxes' Host and their factory.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/errc.h"
#include "base/proc.h"
#include "core/host.h"
#include "core/mailbox.h"
#include "core/quota.h"
#include "core/redis_catalog.h"
#include "core/redis_store.h"
#include "core/settings.h"
#include "core/shm_store.h"
#include "core/timers.h"

namespace mbx {

struct MountConfig {
  std::string state_dir;
  uint64_t max_bytes = 1ull << 30;  // memory quota for everything queued
  uint64_t user_max_bytes = 0;      // per user: held + queued through the daemon; 0 = none
  Settings defaults;
  // -o backend=redis://...: the tree's mailboxes and names live there, shared
  // with every daemon of the same namespace; pid/ stays in shared memory.
  std::optional<RedisConfig> redis;
  // Every this often, each mailbox that stayed empty and untouched since the
  // previous sweep gives its memory back (Mailbox::sweep); 0: never.
  std::chrono::milliseconds idle_sweep{1000};
};

class Mount final : public Host, public MailboxFactory {
 public:
  // Takes the state directory. No threads yet, so the daemon may still fork.
  static Result<std::unique_ptr<Mount>> open(const MountConfig& cfg);
  // Starts the timer and doorbell threads.
  void start();
  ~Mount() override;

  const MountConfig& config() const { return cfg_; }
  // Host
  Timers& timers() override { return *timers_; }
  HeldQuota& held() override { return *held_; }
  bool dying(pid_t tid) override { return probe_.dying(tid); }
  KernelCache* kernel() override { return kernel_; }
  // The front end's cache of file sizes (set before serving, never changed after).
  void set_kernel(KernelCache* k) { kernel_ = k; }

  // MailboxFactory: a fresh mailbox with its own store.
  Result<std::shared_ptr<Mailbox>> create_mailbox(uint64_t id, const Settings& s) override;
  const Settings& defaults() const override { return cfg_.defaults; }
  // Re-attaches the store a dead daemon left for mailbox `id`; `s` gives
  // framing and timeout, the store its geometry.
  Result<std::shared_ptr<Mailbox>> adopt_mailbox(uint64_t id, Settings s);
  // Removes the stores of every mailbox id not in `keep`.
  void remove_stores_except(const std::set<uint64_t>& keep) { backend_->remove_except(keep); }

  // Redis mounts: the shared names (null otherwise), and the mailbox of store
  // `rid` (made with `s`'s geometry unless it exists; it keeps its own).
  Catalog* catalog() { return catalog_.get(); }
  Result<std::shared_ptr<Mailbox>> shared_mailbox(uint64_t id, const std::string& rid, Settings s);
  RedisBackend* redis() { return redis_.get(); }

  ShmBackend& backend() { return *backend_; }
  // The state directory (shm backend).
  const StateDir& state() const { return backend_->state(); }
  bool restored() const { return backend_->restored(); }
  void keep_state() { backend_->keep_state(); }
  uint64_t quota_used() const { return backend_->quota_used(); }
  bool restore_state_dir() { return backend_->restore_state_dir(); }
  uint64_t state_rebuilds() const { return backend_->state_rebuilds(); }

  // One idle sweep now (the timer thread runs it every cfg.idle_sweep):
  // Mailbox::sweep on every mailbox this mount made.
  void sweep_idle() EXCLUDES(sweep_mu_, boxes_mu_);

 private:
  Mount() = default;
  std::shared_ptr<Mailbox> made(std::shared_ptr<Mailbox> box) EXCLUDES(boxes_mu_);
  void schedule_sweep() REQUIRES(sweep_mu_);

  MountConfig cfg_;
  proc::ThreadProbe probe_;
  KernelCache* kernel_ = nullptr;
  std::unique_ptr<Timers> timers_;
  std::unique_ptr<HeldQuota> held_;
  std::unique_ptr<ShmBackend> backend_;  // stopped before the timers its graves use
  std::unique_ptr<RedisBackend> redis_;  // -o backend=redis://...
  std::unique_ptr<RedisCatalog> catalog_;
  // Held for a whole sweep, taken before any Mailbox::mu_: ~Mount takes it
  // to stop the sweeps before the stores' backend goes (a sweep may hold a
  // mailbox's last reference).
  Mutex sweep_mu_;
  bool stopped_ GUARDED_BY(sweep_mu_) = false;
  // Leaf lock: every mailbox made, for the sweep (expired ones dropped by it).
  Mutex boxes_mu_;
  std::vector<std::weak_ptr<Mailbox>> boxes_ GUARDED_BY(boxes_mu_);
};

}  // namespace mbx

// What the daemon holds for writers: bytes written but not yet in any
// segment (file framing's message until close, line framing's partial line,
// a parked write's message), and, per user, what that user queued through
// the daemon. Held bytes are charged to the mount's quota (`quota_used` in
// the control segment), so `df` shows them and every sender, library ones
// included, sees them; each user's held plus queued bytes are bounded by
// -o user_max_bytes. Thread-safe; mu_ is a leaf lock.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "base/errc.h"
#include "base/mutex.h"
#include "mailbox/layout.h"

namespace mbx {

// A mailbox that tracks bytes users queued through it (see HeldQuota::queued).
class Reconciler {
 public:
  virtual ~Reconciler() = default;
  // Forgets what receivers took since it last looked. Takes its own locks.
  virtual void reconcile() = 0;
};

class HeldQuota {
 public:
  HeldQuota(layout::ControlHeader* ctl, uint64_t user_max) : ctl_(ctl), user_max_(user_max) {}
  bool per_user() const { return user_max_ != 0; }
  uint64_t user_max() const { return user_max_; }

  // Holds `n` more bytes for `uid`: no_space past the mount's quota, quota
  // past the user's bound; nothing is charged then.
  Errc hold(uid_t uid, uint64_t n);
  // Gives held bytes back (dropped, or sent after all).
  void unhold(uid_t uid, uint64_t n);
  // The user's part of unhold() alone: the mount's part was lent to a push.
  void forget(uid_t uid, uint64_t n);
  // The mount's part alone, around a push that charges the record itself:
  // lend() before it, take_back() (never refused) if it failed.
  void lend(uint64_t n);
  void take_back(uint64_t n);

  // Per user: bytes `uid` queued through the daemon (a push's payload) that
  // are still in mailbox `box`. Tracked only with a per-user bound.
  Errc admit(uid_t uid, uint64_t n);  // room for n more bytes of uid? (charges nothing)
  void queued(uid_t uid, uint64_t n, const std::shared_ptr<Reconciler>& box);
  void dequeued(uid_t uid, uint64_t n);
  void untrack(const Reconciler* box);  // box tracks nothing any more
  // Asks every mailbox with tracked bytes to drop what receivers took (a
  // library receiver does not tell the daemon). Call with no mailbox lock held.
  void reconcile_all();

  uint64_t held() const;
  uint64_t user_total(uid_t uid) const;  // held + queued

 private:
  struct User {
    uint64_t held = 0, queued = 0;
  };
  layout::ControlHeader* const ctl_;
  const uint64_t user_max_;  // 0: no per-user bound
  mutable Mutex mu_;         // leaf lock: guards the fields below
  uint64_t held_ GUARDED_BY(mu_) = 0;
  std::unordered_map<uid_t, User> users_ GUARDED_BY(mu_);
  std::unordered_map<const Reconciler*, std::weak_ptr<Reconciler>> tracking_ GUARDED_BY(
      mu_);  // mailboxes with queued bytes
};

}  // namespace mbx

// SPDX-License-Identifier: MIT
// Direct communication: send(P, message) and receive(Q, message) between
// processes named by pid, under the reserved directory pid/ at the mount root.
//
// One link per (sender, receiver) pair, made on first use; each link is an
// ordinary Mailbox (same framing, blocking, timeouts, poll and interrupts,
// segment-backed so libmailbox maps it). Processes are identified by pid plus
// start time and watched with a pidfd, so a reused pid never reaches a dead
// process's links. Knows nothing of FUSE.
#pragma once
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/errc.h"
#include "base/mutex.h"
#include "base/unique_fd.h"
#include "core/mailbox.h"

namespace mbx {

// ESRCH: the named process does not exist (or exited while waited for).
inline constexpr Errc kNoProcess = static_cast<Errc>(ESRCH);

// A process, as long as it lives: a pid is reused, a (pid, start time) is not.
struct ProcId {
  pid_t pid = 0;
  uint64_t start = 0;  // /proc/<pid>/stat field 22, clock ticks since boot
  bool operator==(const ProcId&) const = default;
};

class Direct {
 public:
  explicit Direct(MailboxFactory& factory);
  ~Direct();
  Direct(const Direct&) = delete;
  Direct& operator=(const Direct&) = delete;
  // Starts the thread that watches pidfds and feeds receivers from any.
  void start();
  // The daemon is stopping: every link ends (parked calls get EIDRM).
  void shutdown();

  // The core operations (pid/ in core/pid_dir.h shows them as files).
  Result<std::shared_ptr<Mailbox>> send_link(const Sender& caller, pid_t to);
  Result<std::shared_ptr<Mailbox>> recv_link(pid_t from, const Sender& caller);
  Result<std::shared_ptr<Mailbox>> any_box(const Sender& caller);
  uint64_t links();
  uint64_t discarded() const { return discarded_.load(std::memory_order_relaxed); }
  // Registers the calling thread's process (a writer is recorded as its process).
  Result<ProcId> enroll_caller(const Sender& caller);

  // What pid/ shows of the links: a snapshot.
  struct LinkInfo {
    pid_t from, to;
    uid_t to_uid;  // the receiver's real uid: its user may inspect the link
    Sender as;     // the sending process
    bool orphan;   // its sender exited; kept until drained
    std::shared_ptr<Mailbox> box;
  };
  std::vector<LinkInfo> link_infos();
  // Process `self`'s receive-from-any queue, if it was made.
  std::shared_ptr<Mailbox> any_queue(pid_t self);

 private:
  struct Proc;
  struct Link;
  class Feed;
  class LinkToken;

  Result<ProcId> enroll(pid_t pid, Sender* who = nullptr, uid_t* suid = nullptr);
  Result<std::shared_ptr<Mailbox>> link_locked(const ProcId& from, const ProcId& to, const Sender& as, uid_t to_uid,
                                               bool* made) REQUIRES(mu_);
  std::vector<std::shared_ptr<Link>> incoming_locked(const ProcId& to) REQUIRES(mu_);
  void exited(const ProcId& p);
  void sweep();
  bool move_one(const ProcId& me, Mailbox& any);
  void feed(const ProcId& me, Mailbox& any);
  void pull(const ProcId& me);
  void schedule(pid_t receiver);
  void run();

  MailboxFactory& factory_;
  // Lock rule: mu_ is taken before a Mailbox's mutex; Mailbox calls that may
  // finish waiters or notify polls (remove, hang_up, take_message, inject,
  // poll, read) are made with mu_ released, since a poll notification comes
  // back here.
  Mutex mu_;
  std::map<pid_t, std::unique_ptr<Proc>> procs_ GUARDED_BY(mu_);  // live processes with links, by pid
  std::vector<std::shared_ptr<Link>> links_ GUARDED_BY(mu_);      // every link, live and orphaned
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  // Leaf lock: receivers whose links changed, for the thread to feed.
  Mutex pending_mu_;
  std::set<pid_t> pending_ GUARDED_BY(pending_mu_);
  // Counted when a receiver exits; read for user.mailbox.discarded only.
  std::atomic<uint64_t> discarded_{0};
  std::atomic<bool> stop_{false};  // set by ~Direct, then the eventfd wakes the thread
  UniqueFd wake_;                  // eventfd: pending_ grew, a pidfd was added, or stop
  std::thread thread_;
};

}  // namespace mbx

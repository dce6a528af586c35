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
#include "core/mailbox.h"
#include "base/unique_fd.h"

namespace mbx {

class Mount;

// The pid/ directory and its entries live in an inode range of their own,
// far above the tree's counter:
//   kPidDirIno            pid/
//   kPidDirIno + 1        pid/any
//   kPidDirIno + 16 + 4n  pid/<n>       (+1: pid/to.<n>, +2: pid/from.<n>)
//   kPidDirIno + 2^50 + (s << 22 | r)   pid/<s>-to-<r> (the link s->r, seen by
//                                       root and by the receiver's user)
inline constexpr uint64_t kPidDirIno = 1ull << 62;
inline constexpr std::string_view kPidDirName = "pid";
// ESRCH: the named process does not exist (or exited while waited for).
inline constexpr Errc kNoProcess = static_cast<Errc>(ESRCH);

// A process, as long as it lives: a pid is reused, a (pid, start time) is not.
struct ProcId {
  pid_t pid = 0;
  uint64_t start = 0;  // /proc/<pid>/stat field 22, clock ticks since boot
  bool operator==(const ProcId&) const = default;
};

struct DirectEntry {
  std::string name;
  uint64_t ino;
  mode_t mode;
};

class Direct {
 public:
  explicit Direct(Mount& mount);
  ~Direct();
  Direct(const Direct&) = delete;
  Direct& operator=(const Direct&) = delete;
  // Starts the thread that watches pidfds and feeds receivers from any.
  void start();
  // The daemon is stopping: every link ends (parked calls get EIDRM).
  void shutdown();

  static bool owns(uint64_t ino) { return ino >= kPidDirIno; }

  // Namespace. `caller` is the requesting thread as the kernel reported it.
  Result<struct stat> lookup(std::string_view name, const Sender& caller);
  Result<struct stat> getattr(uint64_t ino, const Sender& caller);
  Result<std::vector<DirectEntry>> list(const Sender& caller);
  // An open file of pid/<n> (read: link n->caller; write: caller->n),
  // pid/to.<n>, pid/from.<n> or pid/any. Writes record the opening process.
  Result<std::unique_ptr<Handle>> open(uint64_t ino, bool can_read, bool can_write, bool nonblock,
                                       const Sender& caller);
  // The mailbox whose attributes an entry shows (made on first use, with
  // the same checks as open): to.<n> the caller's link to n, pid/<n> and
  // from.<n> the link from n, any the caller's receive-from-any queue.
  Result<std::shared_ptr<Mailbox>> xattr_box(uint64_t ino, const Sender& caller);
  // user.mailbox.links / user.mailbox.discarded of pid/ itself.
  Result<std::string> dir_xattr(std::string_view name);

  // The core operations behind those (also used by the unit tests).
  Result<std::shared_ptr<Mailbox>> send_link(const Sender& caller, pid_t to);
  Result<std::shared_ptr<Mailbox>> recv_link(pid_t from, const Sender& caller);
  Result<std::shared_ptr<Mailbox>> any_box(const Sender& caller);
  uint64_t links();
  uint64_t discarded() const { return discarded_.load(std::memory_order_relaxed); }

 private:
  struct Proc;
  struct Link;
  class Feed;
  class LinkToken;

  Result<ProcId> enroll(pid_t pid, Sender* who = nullptr, uid_t* suid = nullptr);
  Result<ProcId> enroll_caller(const Sender& caller);
  Result<std::shared_ptr<Mailbox>> link_locked(const ProcId& from, const ProcId& to, const Sender& as,
                                               uid_t to_uid, bool* made);
  bool may_view(pid_t s, pid_t r, const Sender& caller);
  std::vector<std::shared_ptr<Link>> incoming_locked(const ProcId& to);
  void exited(const ProcId& p);
  void sweep();
  bool move_one(const ProcId& me, Mailbox& any);
  void feed(const ProcId& me, Mailbox& any);
  void pull(const ProcId& me);
  void schedule(pid_t receiver);
  void run();
  struct stat stat_entry(uint64_t ino, const Sender& caller);

  Mount& mount_;
  // Lock rule: mu_ is taken before a Mailbox's mutex; Mailbox calls that may
  // finish waiters or notify polls (remove, hang_up, take_message, inject,
  // poll, read) are made with mu_ released, since a poll notification comes
  // back here.
  std::mutex mu_;
  std::map<pid_t, std::unique_ptr<Proc>> procs_;  // live processes with links, by pid
  std::vector<std::shared_ptr<Link>> links_;      // every link, live and orphaned
  uint64_t next_id_ = 1;
  // Leaf lock: receivers whose links changed, for the thread to feed.
  std::mutex pending_mu_;
  std::set<pid_t> pending_;
  // Counted when a receiver exits; read for user.mailbox.discarded only.
  std::atomic<uint64_t> discarded_{0};
  std::atomic<bool> stop_{false};  // set by ~Direct, then the eventfd wakes the thread
  UniqueFd wake_;                  // eventfd: pending_ grew, a pidfd was added, or stop
  std::thread thread_;
};

}  // namespace mbx

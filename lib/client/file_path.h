// SPDX-License-Identifier: MIT
// libmailbox's fallback path: the same sends and receives made through the
// mailbox file (write/read/poll), for a process that may not map the segment
// (OpenOptions::fallback). Knows the three framings; see docs/design.md §12.
#pragma once
#include <signal.h>

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "base/unique_fd.h"
#include "mailbox/layout.h"
#include "mailbox/mailbox.hpp"

namespace mailbox {

class FilePath {
 public:
  using Deadline = std::optional<Clock::time_point>;
  // Reads the mailbox's framing and max_message; errno on failure.
  // `base`, if not -1, is an open descriptor of the file (see open_file()).
  static int open(const std::string& path, FilePath* out, int base = -1);
  // What the daemon answers through an open file (ioctl kInfoIoctl), for a
  // caller that may write but not read the mailbox, so not read its xattrs.
  static int info(const std::string& path, mbx::layout::FileInfo* out);
  static int info(int fd, mbx::layout::FileInfo* out);

  // At a priority > 0, each write is preceded by ioctl(kSendPriorityIoctl)
  // on the same descriptor (layout.h); at 0 it is a plain write, which takes
  // the open file's send_priority (0 unless the mailbox's setting says).
  int send(std::string_view msg, unsigned prio, bool nonblock, Deadline deadline);
  // A message longer than `cap` is kept here (EMSGSIZE), as the fast path
  // keeps it queued, and returned by the next call with a larger buffer.
  Result<size_t> receive(void* buf, size_t cap, bool nonblock, Deadline deadline);
  Result<std::string> receive(bool nonblock, Deadline deadline);
  // Makes `msg` the next message this object returns (a view put back).
  void put_back(std::string msg);
  size_t max_message() const { return max_message_; }
  // Who sent the message this object returned last, and its priority: from
  // ioctl(kReceivedIoctl) after each read; from a daemon without it, the
  // sender from user.mailbox.sender and priority 0.
  Sender last_sender() const;
  unsigned last_priority() const { return last_ ? last_->priority : 0; }
  // A wait a signal handler ends fails with EINTR (the mq calls), instead of
  // being resumed as libmailbox's own calls are (detail::Access).
  void set_interruptible(bool on) { interruptible_ = on; }

 private:
  enum class Framing { file, datagram, line };
  int send_file(std::string_view msg, unsigned prio, bool nonblock, Deadline deadline);
  // Holds `n` bytes read through `fd`, with what the daemon says of them.
  void hold(int fd, std::string_view got);
  int next_message(bool nonblock, Deadline deadline);
  int read_file_message(bool nonblock, Deadline deadline);
  // Sleeps under `mask` (SignalHold::wait_mask()), atomically.
  int wait_fd(int fd, short events, Deadline deadline, const sigset_t* mask);
  int open_once(mbx::UniqueFd& fd, int flags);
  // open(path_) or, where the mode refuses it (EACCES) and base_'s access
  // mode allows `flags`, a dup of base_: then the descriptor's own O_NONBLOCK
  // holds (a deadline may be overrun by a blocking one).
  int open_file(int flags);
  // Whether a wait that ended with EINTR (or ETIMEDOUT: the mailbox's
  // timeout_ms, not ours to keep) is resumed rather than reported.
  bool resumable(int err) const;

  std::string path_;
  mbx::UniqueFd base_;  // a dup of the descriptor the caller opened through, if any
  Framing framing_ = Framing::file;
  size_t max_message_ = 0;
  // datagram/line: opened once each. A call without a deadline blocks in
  // the daemon (wb_, rb_), where it counts as a waiting sender or receiver:
  // a rendezvous needs one side committed, and a caller waiting in poll() is
  // not. A call with a deadline uses the non-blocking ones and poll().
  mbx::UniqueFd w_, r_, wb_, rb_;
  struct Held {
    std::string msg;
    std::optional<mbx::layout::ReceivedInfo> info;  // none from a daemon without kReceivedIoctl
  };
  std::deque<Held> held_;                          // received, not yet returned (a line read can bring several)
  std::optional<mbx::layout::ReceivedInfo> last_;  // of the message returned last
  bool interruptible_ = false;
};

}  // namespace mailbox

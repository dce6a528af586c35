// SPDX-License-Identifier: MIT
// What libmailbox's own add-ons (lib/mq) may reach inside a Mailbox beyond
// the public API. Not installed; not exported from libmailbox.so.
#pragma once
#include "mailbox/mailbox.hpp"
#include "shm/segment.h"

namespace mailbox::detail {

struct Access {
  // The mapped segment, or nullptr when the mailbox is used through its file.
  static mbx::Segment* segment(Mailbox& m);
  // With `on`, a blocking call whose sleep a signal handler ends fails with
  // EINTR (as mq_send and mq_receive do) instead of sleeping again.
  static void set_interruptible(Mailbox& m, bool on);
  // Mailbox::open through `fd`, an open descriptor of path's file: judged by
  // the descriptor's access mode, as the kernel judges an open file, not by
  // the file's mode now; the file path uses dups of it where the mode
  // refuses a reopen (dup() is not checked, open() of /proc/self/fd/N is).
  static Result<Mailbox> open_through(int fd, const std::string& path, OpenOptions opts);
  static Mailbox make(std::unique_ptr<MailboxImpl> impl);  // for the library's own open
};

}  // namespace mailbox::detail

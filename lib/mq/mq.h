// SPDX-License-Identifier: MIT
// lib/mq's internals: the name mapping, descriptor ownership (for the
// preload library) and the priority seam over libmailbox.
#pragma once
#include <mqueue.h>

#include <optional>
#include <string>
#include <string_view>

#include "mailbox/mailbox.hpp"

namespace mbx::mq {

// $MAILBOXFS_MQ_ROOT, else MBX_MQ_DEFAULT_ROOT, without a trailing slash.
std::string root();
// `root` resolves to a directory whose mount (the longest mount point
// containing it in /proc/self/mountinfo) is fuse.mailboxfs.
bool root_mounted(const std::string& root);

// Where queue `name` is: the one place the name and the root are checked.
struct Place {
  int err = 0;          // the name breaks Linux's rules: this errno
  bool kernel = false;  // the root is not a mounted mailboxfs: the kernel's queues
  std::string path;     // else the mailbox file <root>/<name>
};
Place place(const char* name);
// mq_open and mq_unlink on a place (-1 and errno on failure; ENOENT on the kernel's).
mqd_t open_queue(const Place& where, int oflag, mode_t mode, const mq_attr* attr);
int unlink_queue(const Place& where);
// The descriptor was opened by mbx_mq_open and is not closed.
bool owns(int fd);

using mailbox::OpenOptions;

// Sends and receives at a priority (libmailbox's priority API).
int prio_send(mailbox::Mailbox& m, std::string_view msg, unsigned prio, bool nonblock,
              const std::optional<mailbox::Clock::time_point>& deadline);
mailbox::Result<size_t> prio_receive(mailbox::Mailbox& m, char* buf, size_t cap, unsigned* prio, bool nonblock,
                                     const std::optional<mailbox::Clock::time_point>& deadline);

}  // namespace mbx::mq

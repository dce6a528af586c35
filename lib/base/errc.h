// SPDX-License-Identifier: MIT
// Errors as values inside the core; errno only at the FUSE boundary.
#pragma once
#include <cerrno>
#include <utility>

#include "mailbox/protocol.h"

namespace mbx {

// Each value is the errno the boundary reports, so the mapping is one cast.
enum class Errc : int {
  ok = 0,
  again = EAGAIN,         // would block and the caller asked not to
  interrupted = EINTR,    // a signal interrupted a parked call
  timed_out = ETIMEDOUT,  // the mailbox's timeout_ms expired
  removed = EIDRM,        // the mailbox was deleted while in use
  msg_size = EMSGSIZE,    // message larger than max_message or FUSE's request limit
  no_space = ENOSPC,      // the mount's memory quota is exhausted
  quota = EDQUOT,         // the writing user's bound (-o user_max_bytes) is reached
  invalid = EINVAL,
  not_found = ENOENT,
  exists = EEXIST,
  not_dir = ENOTDIR,
  is_dir = EISDIR,
  not_empty = ENOTEMPTY,
  name_too_long = ENAMETOOLONG,
  no_data = ENODATA,
  not_supported = ENOTSUP,
  perm = EPERM,
  access = EACCES,
  bad_message = EBADMSG,  // the shared-memory segment failed validation
  io = EIO,
  no_memory = ENOMEM,
  bad_fd = EBADF,
  range = ERANGE,
  busy = EBUSY,
  stale = ESTALE,      // the segment was replaced (resized): look it up again
  remote = EREMOTE,    // the mailbox lives on a server (Redis mount): no segment to map, use the file
  contended = ENOLCK,  // a segment lock another participant holds: the daemon parks, never reported
};

inline int to_errno(Errc e) { return static_cast<int>(e); }
inline Errc from_errno(int e) { return static_cast<Errc>(e); }

// A value or an Errc: the one Result type of the public API (protocol.h),
// with the core's error enum.
template <class T>
using Result = mailbox::Result<T, Errc>;
using Sender = mailbox::Sender;

}  // namespace mbx

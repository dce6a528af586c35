// SPDX-License-Identifier: MIT
// What a mailbox needs from the daemon around it, and nothing more: the
// timer thread, the quota of bytes held for writers, whether a thread is
// being killed, and the kernel's cached file size. Implemented by Mount; a
// test may implement it itself.
#pragma once
#include <sys/types.h>

#include <cstdint>

#include "core/quota.h"
#include "core/timers.h"

namespace mbx {

// The front end's side of the kernel: what it caches of an inode's attributes.
class KernelCache {
 public:
  virtual ~KernelCache() = default;
  // A datagram/line mailbox filled up: writers beyond `size` would take the
  // inode lock exclusively in the kernel, so the cached size is raised.
  virtual void raise_size(uint64_t ino, uint64_t size) = 0;
  // What stat shows of `ino` changed: the attributes the kernel cached are
  // dropped. Called with no core lock held, before the reply to the change.
  virtual void invalidate_attrs(uint64_t ino) = 0;
};

class Host {
 public:
  virtual ~Host() = default;
  virtual Timers& timers() = 0;
  // Bytes the daemon holds for writers, charged to the quota (and per user).
  virtual HeldQuota& held() = 0;
  // True if thread `tid` is being killed: a message handed to it would be lost.
  virtual bool dying(pid_t tid) = 0;
  // Where raise_size goes; null until the front end serves.
  virtual KernelCache* kernel() = 0;
};

}  // namespace mbx

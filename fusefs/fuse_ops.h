// SPDX-License-Identifier: MIT
// The FUSE glue: one function returning the low-level operations table.
#pragma once
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>

#include "core/router.h"

namespace mbx {

// What every callback reaches through fuse_req_userdata().
struct Fs {
  Router* router = nullptr;
  fuse_session* se = nullptr;  // set once the session exists: for notifications
  // Whether the kernel can be told to drop every cached name at once
  // (FUSE_NOTIFY_INC_EPOCH, Linux 6.16): 0 not yet known, 1 yes, -1 no.
  // Mailbox names are cached only if it can (op_lookup).
  std::atomic<int> epoch{0};
  // Names and modes live on a server other daemons change (-o backend=redis):
  // the kernel caches no name and no attribute, so every path is looked up here.
  bool shared_names = false;
};

const fuse_lowlevel_ops& fuse_operations();

// Raises the kernel's cached st_size of a mailbox, or drops its cached
// attributes (see KernelCache).
class FuseKernelCache final : public KernelCache {
 public:
  explicit FuseKernelCache(fuse_session* se) : se_(se) {}
  void raise_size(uint64_t ino, uint64_t size) override;
  void invalidate_attrs(uint64_t ino) override;

 private:
  fuse_session* se_;
};

}  // namespace mbx

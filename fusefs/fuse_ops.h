// SPDX-License-Identifier: MIT
// The FUSE glue: one function returning the low-level operations table.
#pragma once
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "core/router.h"

namespace mbx {

// What every callback reaches through fuse_req_userdata().
struct Fs {
  Router* router = nullptr;
};

const fuse_lowlevel_ops& fuse_operations();

// Raises the kernel's cached st_size of a mailbox (see KernelCache).
class FuseKernelCache final : public KernelCache {
 public:
  explicit FuseKernelCache(fuse_session* se) : se_(se) {}
  void raise_size(uint64_t ino, uint64_t size) override;

 private:
  fuse_session* se_;
};

}  // namespace mbx

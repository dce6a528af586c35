// SPDX-License-Identifier: MIT
// The FUSE glue: one function returning the low-level operations table.
#pragma once
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "core/mount.h"
#include "core/tree.h"

namespace mbx {

// What every callback reaches through fuse_req_userdata().
struct Fs {
  Mount* mount = nullptr;
  Tree* tree = nullptr;
};

const fuse_lowlevel_ops& fuse_operations();

}  // namespace mbx

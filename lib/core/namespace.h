// SPDX-License-Identifier: MIT
// One part of the file tree the mount shows: the mailbox tree, or an add-on
// such as pid/ (direct communication). The router (core/router.h) sends each
// request to the part that owns the inode, by inode range.
#pragma once
#include <sys/stat.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/errc.h"
#include "core/mailbox.h"

namespace mbx {

inline constexpr uint64_t kRootIno = 1;

struct DirEntry {
  std::string name;
  uint64_t ino;
  mode_t mode;
};

class Namespace {
 public:
  virtual ~Namespace() = default;
  // `c` is the calling thread as the kernel reported it; an add-on may show
  // each process its own entries.
  virtual Result<struct stat> lookup(uint64_t parent, std::string_view name, const Sender& c) = 0;
  virtual Result<struct stat> getattr(uint64_t ino, const Sender& c) = 0;
  // An open file of a mailbox (EISDIR for a directory).
  virtual Result<std::unique_ptr<Handle>> open(uint64_t ino, bool can_read, bool can_write, bool nonblock,
                                               const Sender& c) = 0;
  virtual Result<std::vector<DirEntry>> list(uint64_t ino, const Sender& c) = 0;
  // user.mailbox.* (protocol.h).
  virtual Result<std::string> getxattr(uint64_t ino, std::string_view name, const Sender& c) = 0;
  virtual Result<std::string> listxattr(uint64_t ino) = 0;  // NUL-separated names
  virtual Errc setxattr(uint64_t ino, std::string_view name, std::string_view value, const Sender& c) = 0;
  virtual Errc removexattr(uint64_t ino, std::string_view name) = 0;
};

}  // namespace mbx

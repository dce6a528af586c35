// SPDX-License-Identifier: MIT
// The whole file tree the mount shows: the mailbox tree with the pid/ add-on
// at its root. Every request goes to the part that owns its inode (by
// range, here and nowhere else); the add-on's name is reserved in the tree.
#pragma once
#include <sys/statvfs.h>

#include "core/pid_dir.h"
#include "core/tree.h"
#include "mailbox/layout.h"

namespace mbx {

class Router {
 public:
  Router(Tree& tree, PidDir& pid);

  Result<struct stat> lookup(uint64_t parent, std::string_view name, const Sender& c);
  void forget(uint64_t ino, uint64_t n);
  Result<struct stat> getattr(uint64_t ino, const Sender& c);
  Result<struct stat> setattr(uint64_t ino, const struct stat& in, unsigned what, const Sender& c);
  Result<struct stat> create(uint64_t parent, std::string_view name, mode_t mode, const Sender& c);
  Result<struct stat> mkdir(uint64_t parent, std::string_view name, mode_t mode, const Sender& c);
  Errc unlink(uint64_t parent, std::string_view name);
  Errc rmdir(uint64_t parent, std::string_view name);
  Errc rename(uint64_t parent, std::string_view name, uint64_t newparent, std::string_view newname, bool noreplace);
  Result<std::vector<DirEntry>> list(uint64_t ino, const Sender& c);
  Result<std::unique_ptr<Handle>> open(uint64_t ino, bool can_read, bool can_write, bool nonblock, const Sender& c);
  // The mailbox tree's mailbox of `ino` (null for a directory or an add-on's entry).
  std::shared_ptr<Mailbox> mailbox(uint64_t ino);
  struct statvfs statfs() {
    return tree_.statfs();
  }
  void clear_privs_on_write(uint64_t ino, const Sender& c);

  Result<std::string> getxattr(uint64_t ino, std::string_view name, const Sender& c);
  Result<std::string> listxattr(uint64_t ino);
  Errc setxattr(uint64_t ino, std::string_view name, std::string_view value, const Sender& c);
  Errc removexattr(uint64_t ino, std::string_view name);
  // What ioctl(kInfoIoctl) on an open file of `ino` answers (layout.h).
  Result<layout::FileInfo> file_info(uint64_t ino, const Sender& c);

 private:
  // The part that owns `ino`.
  Namespace& part(uint64_t ino);
  bool is_addon(uint64_t parent, std::string_view name) const { return parent == kRootIno && name == kPidDirName; }

  Tree& tree_;
  PidDir& pid_;
};

}  // namespace mbx

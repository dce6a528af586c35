// SPDX-License-Identifier: MIT
// pid/: direct communication shown as files, an add-on to the mailbox tree.
// pid/<n> is the link from or to process n (by the open's direction),
// pid/to.<n> and pid/from.<n> one direction each, pid/any receives from any
// sender, and pid/<s>-to-<r> lets root and the receiver's user inspect a
// link. Each process sees its own entries. The links are Direct's.
#pragma once
#include "core/direct.h"
#include "core/namespace.h"

namespace mbx {

// pid/ and its entries live in an inode range of their own, far above the
// tree's counter:
//   kPidDirIno            pid/
//   kPidDirIno + 1        pid/any
//   kPidDirIno + 16 + 4n  pid/<n>       (+1: pid/to.<n>, +2: pid/from.<n>)
//   kPidDirIno + 2^50 + (s << 22 | r)   pid/<s>-to-<r>
inline constexpr uint64_t kPidDirIno = 1ull << 62;
inline constexpr std::string_view kPidDirName = "pid";

class PidDir final : public Namespace {
 public:
  explicit PidDir(Direct& direct) : direct_(direct) {}
  static bool owns(uint64_t ino) { return ino >= kPidDirIno; }

  // Under pid/ (the parent is pid/ itself).
  Result<struct stat> lookup(uint64_t parent, std::string_view name, const Sender& c) override;
  Result<struct stat> getattr(uint64_t ino, const Sender& c) override;
  // pid/<n> read: the link n->caller; write: caller->n. Writes record the
  // opening process.
  Result<std::unique_ptr<Handle>> open(uint64_t ino, bool can_read, bool can_write, bool nonblock,
                                       const Sender& c) override;
  Result<std::vector<DirEntry>> list(uint64_t ino, const Sender& c) override;
  // An entry shows the attributes of its mailbox (made on first use, with
  // the same checks as open): to.<n> the caller's link to n, pid/<n> and
  // from.<n> the link from n, any the caller's receive-from-any queue.
  // pid/ itself shows user.mailbox.links and user.mailbox.discarded.
  Result<std::string> getxattr(uint64_t ino, std::string_view name, const Sender& c) override;
  Result<std::string> listxattr(uint64_t ino) override;
  // Links take the mount's defaults: nothing is settable.
  Errc setxattr(uint64_t ino, std::string_view name, std::string_view value, const Sender& c) override;
  Errc removexattr(uint64_t ino, std::string_view name) override;

 private:
  struct stat stat_entry(uint64_t ino, const Sender& caller);
  bool may_view(pid_t s, pid_t r, const Sender& caller);
  Result<std::shared_ptr<Mailbox>> box_of(uint64_t ino, const Sender& caller);

  Direct& direct_;
};

}  // namespace mbx

// SPDX-License-Identifier: MIT
#include "core/router.h"

#include <cstdlib>
#include <cstring>

namespace mbx {

namespace attr = mailbox::attr;

Router::Router(Tree& tree, PidDir& pid) : tree_(tree), pid_(pid) { tree_.reserve(std::string(kPidDirName)); }

Namespace& Router::part(uint64_t ino) {
  if (PidDir::owns(ino)) return pid_;
  return tree_;
}

Result<struct stat> Router::lookup(uint64_t parent, std::string_view name, const Sender& c) {
  if (is_addon(parent, name)) return pid_.getattr(kPidDirIno, c);
  return part(parent).lookup(parent, name, c);
}

void Router::forget(uint64_t ino, uint64_t n) {
  if (!PidDir::owns(ino)) tree_.forget(ino, n);  // pid/ entries are not counted: they always exist
}

Result<struct stat> Router::getattr(uint64_t ino, const Sender& c) { return part(ino).getattr(ino, c); }

Result<struct stat> Router::setattr(uint64_t ino, const struct stat& in, unsigned what, const Sender& c) {
  // pid/ has no settable attributes; a shell's O_TRUNC (a size-0 setattr) must still work.
  if (PidDir::owns(ino)) return pid_.getattr(ino, c);
  return tree_.setattr(ino, in, what, c);
}

Result<struct stat> Router::create(uint64_t parent, std::string_view name, mode_t mode, const Sender& c) {
  if (PidDir::owns(parent)) {
    if (Errc e = check_name(name); e != Errc::ok) return e;
    // Reached only for a name the lookup did not find: not a process id
    // (every pid resolves). It does not exist, and cannot be made to.
    return Errc::not_found;
  }
  return tree_.create(parent, name, mode, c);
}

Result<struct stat> Router::mkdir(uint64_t parent, std::string_view name, mode_t mode, const Sender& c) {
  if (PidDir::owns(parent)) {
    if (Errc e = check_name(name); e != Errc::ok) return e;
    return Errc::perm;  // its entries are processes
  }
  return tree_.mkdir(parent, name, mode, c);
}

Errc Router::unlink(uint64_t parent, std::string_view name) {
  return PidDir::owns(parent) ? Errc::perm : tree_.unlink(parent, name);
}

Errc Router::rmdir(uint64_t parent, std::string_view name) {
  return PidDir::owns(parent) ? Errc::perm : tree_.rmdir(parent, name);
}

Errc Router::rename(uint64_t parent, std::string_view name, uint64_t newparent, std::string_view newname,
                    bool noreplace) {
  if (is_addon(parent, name)) return Errc::busy;
  if (is_addon(newparent, newname)) return Errc::exists;
  if (PidDir::owns(parent) || PidDir::owns(newparent)) return Errc::perm;
  return tree_.rename(parent, name, newparent, newname, noreplace);
}

Result<std::vector<DirEntry>> Router::list(uint64_t ino, const Sender& c) {
  // pid/ is not listed at the root: `ls` shows the mailboxes, `ls pid` the links.
  return part(ino).list(ino, c);
}

Result<std::unique_ptr<Handle>> Router::open(uint64_t ino, bool can_read, bool can_write, bool nonblock,
                                             const Sender& c) {
  return part(ino).open(ino, can_read, can_write, nonblock, c);
}

std::shared_ptr<Mailbox> Router::mailbox(uint64_t ino) { return PidDir::owns(ino) ? nullptr : tree_.mailbox(ino); }

void Router::clear_privs_on_write(uint64_t ino, const Sender& c) {
  if (!PidDir::owns(ino)) tree_.clear_privs_on_write(ino, c);
}

namespace {
// Only the user.* namespace exists here. security.*, system.* and trusted.* answer EOPNOTSUPP,
// which ls caches per device: ENODATA would cost every `ls -l` entry two more round trips.
bool foreign_namespace(std::string_view name) { return !name.starts_with("user."); }
}  // namespace

Result<std::string> Router::getxattr(uint64_t ino, std::string_view name, const Sender& c) {
  if (foreign_namespace(name)) return Errc::not_supported;
  return part(ino).getxattr(ino, name, c);
}

Result<std::string> Router::listxattr(uint64_t ino) { return part(ino).listxattr(ino); }

Errc Router::setxattr(uint64_t ino, std::string_view name, std::string_view value, const Sender& c) {
  if (foreign_namespace(name)) return Errc::not_supported;
  return part(ino).setxattr(ino, name, value, c);
}

Errc Router::removexattr(uint64_t ino, std::string_view name) {
  if (foreign_namespace(name)) return Errc::not_supported;
  return part(ino).removexattr(ino, name);
}

Result<layout::FileInfo> Router::file_info(uint64_t ino, const Sender& c) {
  layout::FileInfo fi{};
  auto seg = getxattr(ino, attr::kSegment, c);
  auto fr = getxattr(ino, attr::kFraming, c);
  auto max = getxattr(ino, attr::kMaxMessage, c);
  if (!seg || !fr || !max) return !seg ? seg.error() : !fr ? fr.error() : max.error();
  if (seg->size() >= sizeof fi.segment || fr->size() >= sizeof fi.framing) return Errc::name_too_long;
  std::memcpy(fi.segment, seg->data(), seg->size());
  std::memcpy(fi.framing, fr->data(), fr->size());
  fi.max_message = std::strtoull(max->c_str(), nullptr, 10);
  return fi;
}

}  // namespace mbx

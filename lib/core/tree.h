// SPDX-License-Identifier: MIT
// The namespace: directories and mailbox files, inode numbers and lookup
// counts, ownership and mode bits, and the user.mailbox.* attributes.
// Permission checks on paths are the kernel's (default_permissions); the
// tree enforces only what the kernel cannot know (names, settings ownership).
#pragma once
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/errc.h"
#include "base/mutex.h"
#include "core/catalog.h"
#include "core/mailbox.h"
#include "core/mount.h"
#include "core/namespace.h"

namespace mbx {

// What setattr() changes (the core's own bits; the front end maps FUSE's).
enum SetAttr : unsigned {
  kSetMode = 1,
  kSetUid = 2,
  kSetGid = 4,
  kSetAtime = 8,
  kSetMtime = 16,
  kSetAtimeNow = 32,
  kSetMtimeNow = 64,
  kSetSize = 128,
};

// Rejects what cannot be a mailbox or directory name: empty, ".", "..",
// longer than 255 bytes, control characters, or invalid UTF-8.
Errc check_name(std::string_view name);

class Tree final : public Namespace {
 public:
  Tree(Mount& mount, mode_t root_mode, uid_t uid, gid_t gid);
  ~Tree();

  // A name at the root that belongs to another part of the tree (an add-on):
  // it cannot be made, removed or renamed here, nor restored. Before serving.
  void reserve(std::string name) { reserved_.insert(std::move(name)); }

  // Each successful lookup/create/mkdir counts one kernel reference (forget()).
  Result<struct stat> lookup(uint64_t parent, std::string_view name, const Sender& c = {}) override;
  void forget(uint64_t ino, uint64_t n);
  Result<struct stat> getattr(uint64_t ino, const Sender& c = {}) override;
  Result<struct stat> setattr(uint64_t ino, const struct stat& in, unsigned what, const Sender& c);
  Result<struct stat> create(uint64_t parent, std::string_view name, mode_t mode, const Sender& c);
  Result<struct stat> mkdir(uint64_t parent, std::string_view name, mode_t mode, const Sender& c);
  // Removes the name and deletes the mailbox at once: its parked calls end (EIDRM).
  Errc unlink(uint64_t parent, std::string_view name);
  Errc rmdir(uint64_t parent, std::string_view name);
  // A new name that is_unlink_at_last_close() (protocol.h) is not a rename:
  // the name goes as with unlink, the mailbox at its last close (mq_unlink).
  Errc rename(uint64_t parent, std::string_view name, uint64_t newparent, std::string_view newname, bool noreplace);
  Result<std::vector<DirEntry>> list(uint64_t ino, const Sender& c = {}) override;
  std::shared_ptr<Mailbox> mailbox(uint64_t ino);
  Result<std::unique_ptr<Handle>> open(uint64_t ino, bool can_read, bool can_write, bool nonblock,
                                       const Sender& c) override;
  struct statvfs statfs();

  // user.mailbox.sender answers for the calling thread: the sender of the
  // last message it received from this file.
  // A write(2) by `c` reached mailbox `ino`: as on every Linux file system,
  // a writer without CAP_FSETID clears set-user-ID, and set-group-ID when
  // group-execute is set or the writer is not in the file's group.
  void clear_privs_on_write(uint64_t ino, const Sender& c);

  Result<std::string> getxattr(uint64_t ino, std::string_view name, const Sender& c = {}) override;
  Result<std::string> listxattr(uint64_t ino) override;
  Errc setxattr(uint64_t ino, std::string_view name, std::string_view value, const Sender& c) override;
  Errc removexattr(uint64_t ino, std::string_view name) override;

  // Deletes every mailbox (the daemon is stopping): parked calls end now.
  void shutdown();

  // Rebuilds the namespace a daemon that died left in the state directory
  // (when Mount::restored()), re-attaching its mailboxes' segments with the
  // messages they hold. Called before serving.
  struct Restored {
    uint64_t directories = 0, mailboxes = 0, messages = 0, dropped = 0;
  };
  Restored restore();

 private:
  struct Node {
    uint64_t ino = 0;
    uint64_t parent = 0;
    std::string name;
    mode_t mode = 0;  // includes S_IFDIR / S_IFREG
    uid_t uid = 0;
    gid_t gid = 0;
    timespec atime{}, mtime{}, ctime{};
    uint64_t nlookup = 0;
    bool linked = true;
    uint64_t subdirs = 0;
    std::map<std::string, uint64_t, std::less<>> children;
    std::shared_ptr<Mailbox> box;
    std::string rid;  // Redis mounts: the store's id in the catalog
  };
  // Shared mailboxes this daemon lets go of (another daemon removed or moved
  // their names): their parked calls end, after the tree lock is released.
  // Declare one before the Guard so that it runs after the Guard's release.
  struct LetGo {
    std::vector<std::shared_ptr<Mailbox>> boxes;
    ~LetGo();
  };
  // ---- Redis mounts: the names are the catalog's; local nodes follow it ----
  std::string path_locked(const Node& n) REQUIRES(mu_);
  // Makes the local child `name` of `dir` agree with catalog entry `e` (nullopt: none).
  void reconcile_locked(Node& dir, const std::string& name, const std::optional<CatalogEntry>& e, LetGo& lg)
      REQUIRES(mu_);
  Errc sync_child_locked(uint64_t parent, std::string_view name, LetGo& lg) REQUIRES(mu_);
  Errc sync_dir_locked(Node& dir, LetGo& lg) REQUIRES(mu_);
  void detach_subtree_locked(Node& n, LetGo& lg) REQUIRES(mu_);
  // A store the catalog no longer names (a replaced or raced entry): deleted.
  void discard_store(const std::string& rid);
  // unlink, or (at_last_close) mq_unlink's removal through rename.
  Errc remove_name(uint64_t parent, std::string_view name, bool at_last_close);
  Node* find_locked(uint64_t ino) REQUIRES(mu_);
  Result<Node*> child_locked(uint64_t parent, std::string_view name) REQUIRES(mu_);
  Result<Node*> add_locked(uint64_t parent, std::string_view name, mode_t mode, const Sender& c) REQUIRES(mu_);
  void detach_locked(Node& n) REQUIRES(mu_);
  void maybe_drop_locked(Node& n) REQUIRES(mu_);
  struct stat stat_of(const Node& n, const StatInfo* info) const;
  Result<struct stat> stat_ino(uint64_t ino);
  void persist_locked(const Node& n) REQUIRES(mu_);
  void persist_node_locked(const Node& n) REQUIRES(mu_);

  Mount& mount_;
  Catalog* const catalog_;  // Redis mounts only; each call a round trip under mu_
  // Lock rule: mu_ is taken before any Mailbox's mutex; Mailbox calls that
  // may finish waiters (remove, set) are made after mu_ is released.
  Mutex mu_;
  std::unordered_map<uint64_t, std::unique_ptr<Node>> nodes_ GUARDED_BY(mu_);
  uint64_t next_ino_ GUARDED_BY(mu_) = kRootIno + 1;
  bool persist_warned_ GUARDED_BY(mu_) = false;
  uint64_t rebuilds_seen_ GUARDED_BY(mu_) = 0;  // Mount::state_rebuilds() when every node was last recorded
  // Set once any node got S_ISUID or S_ISGID: until then a write need not
  // look (relaxed: a hint; a stale false only misses a write racing the chmod).
  std::atomic<bool> privs_seen_{false};
  std::set<std::string, std::less<>> reserved_;  // fixed before serving
};

}  // namespace mbx

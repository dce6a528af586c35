// SPDX-License-Identifier: MIT
#include "core/tree.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>

#include "base/log.h"
#include "base/proc.h"
#include "core/attributes.h"
#include "core/persist.h"
#include "mailbox/protocol.h"

namespace mbx {

namespace {
using Guard = MutexLock;

timespec now_ts() {
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

timespec ns_ts(int64_t ns) { return timespec{ns / 1000000000, ns % 1000000000}; }

bool later(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec > b.tv_nsec;
}

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = byte(i);
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c == 0xe0) {
      n = 3;
      lo = 0xa0;
    } else if (c == 0xed) {
      n = 3;
      hi = 0x9f;
    } else if (c >= 0xe1 && c <= 0xef) n = 3;
    else if (c == 0xf0) {
      n = 4;
      lo = 0x90;
    } else if (c == 0xf4) {
      n = 4;
      hi = 0x8f;
    } else if (c >= 0xf1 && c <= 0xf3) n = 4;
    else return false;
    if (i + n > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return false;
    for (size_t k = 2; k < n; k++)
      if ((byte(i + k) & 0xc0) != 0x80) return false;
    i += n;
  }
  return true;
}

}  // namespace

Errc check_name(std::string_view name) {
  if (name.size() > 255) return Errc::name_too_long;
  if (name.empty() || name == "." || name == "..") return Errc::invalid;
  for (char ch : name) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || c == '/') return Errc::invalid;
  }
  return valid_utf8(name) ? Errc::ok : Errc::invalid;
}

Tree::Tree(Mount& mount, mode_t root_mode, uid_t uid, gid_t gid) : mount_(mount), catalog_(mount.catalog()) {
  auto root = std::make_unique<Node>();
  root->ino = kRootIno;
  root->parent = kRootIno;
  root->mode = S_IFDIR | (root_mode & 07777);
  root->uid = uid;
  root->gid = gid;
  root->atime = root->mtime = root->ctime = now_ts();
  root->nlookup = 1;  // the kernel's reference, never forgotten
  nodes_.emplace(kRootIno, std::move(root));
}

Tree::~Tree() { shutdown(); }

void Tree::shutdown() {
  std::vector<std::shared_ptr<Mailbox>> boxes;
  {
    Guard g(mu_);
    for (auto& [ino, n] : nodes_)
      if (n->box) boxes.push_back(n->box);
  }
  for (auto& b : boxes) b->remove(Errc::removed, /*discard=*/!catalog_);  // shared ones stay for the others
}

// ---- Redis mounts: the shared catalog ------------------------------------------

Tree::LetGo::~LetGo() {
  for (auto& b : boxes) b->remove(Errc::removed, /*discard=*/false);
}

std::string Tree::path_locked(const Node& n) {
  std::string path;
  for (const Node* a = &n; a && a->ino != kRootIno; a = find_locked(a->parent)) path.insert(0, "/" + a->name);
  return path;
}

void Tree::detach_subtree_locked(Node& n, LetGo& lg) {
  std::vector<uint64_t> kids;
  for (auto& [name, ino] : n.children) kids.push_back(ino);
  for (uint64_t k : kids)
    if (Node* c = find_locked(k)) detach_subtree_locked(*c, lg);
  if (n.box) lg.boxes.push_back(n.box);
  detach_locked(n);
  maybe_drop_locked(n);
}

void Tree::reconcile_locked(Node& dir, const std::string& name, const std::optional<CatalogEntry>& e, LetGo& lg) {
  auto it = dir.children.find(name);
  Node* cur = it == dir.children.end() ? nullptr : find_locked(it->second);
  if (cur && e && S_ISDIR(cur->mode) == e->dir && cur->rid == e->rid) {  // the same one: take its owner and mode
    cur->mode = (cur->mode & S_IFMT) | (e->mode & 07777);
    cur->uid = e->uid;
    cur->gid = e->gid;
    return;
  }
  if (cur) detach_subtree_locked(*cur, lg);  // removed, moved or replaced by another daemon
  if (!e || check_name(name) != Errc::ok || (dir.ino == kRootIno && reserved_.count(name))) return;
  auto n = std::make_unique<Node>();
  n->ino = next_ino_;
  if (!e->dir) {
    auto box = mount_.shared_mailbox(n->ino, e->rid, mount_.defaults());
    if (!box) return;  // the server is away: the name shows up at the next look
    n->box = std::move(box.value());
    n->rid = e->rid;
  }
  next_ino_++;
  n->parent = dir.ino;
  n->name = name;
  n->mode = (e->dir ? S_IFDIR : S_IFREG) | (e->mode & 07777);
  n->uid = e->uid;
  n->gid = e->gid;
  n->atime = n->mtime = n->ctime = now_ts();
  if (n->mode & (S_ISUID | S_ISGID)) privs_seen_.store(true, std::memory_order_relaxed);
  dir.children.emplace(n->name, n->ino);
  if (e->dir) dir.subdirs++;
  nodes_.emplace(n->ino, std::move(n));
}

Errc Tree::sync_child_locked(uint64_t parent, std::string_view name, LetGo& lg) {
  Node* p = find_locked(parent);
  if (!catalog_ || !p || !S_ISDIR(p->mode) || !p->linked || check_name(name) != Errc::ok) return Errc::ok;
  auto e = catalog_->get(path_locked(*p) + "/" + std::string(name));
  if (!e) return e.error();
  reconcile_locked(*p, std::string(name), *e, lg);
  return Errc::ok;
}

Errc Tree::sync_dir_locked(Node& dir, LetGo& lg) {
  if (!catalog_ || !dir.linked) return Errc::ok;
  auto l = catalog_->list(path_locked(dir));
  if (!l) return l.error();
  std::set<std::string> seen;
  for (auto& [name, e] : *l) {
    seen.insert(name);
    reconcile_locked(dir, name, e, lg);
  }
  std::vector<std::string> gone;
  for (auto& [name, ino] : dir.children)
    if (!seen.count(name)) gone.push_back(name);
  for (auto& name : gone) reconcile_locked(dir, name, std::nullopt, lg);
  return Errc::ok;
}

void Tree::discard_store(const std::string& rid) {
  if (rid.empty()) return;
  if (auto box = mount_.shared_mailbox(0, rid, mount_.defaults())) (*box)->remove();  // wakes its callers elsewhere
}

Tree::Node* Tree::find_locked(uint64_t ino) {
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? nullptr : it->second.get();
}

Result<Tree::Node*> Tree::child_locked(uint64_t parent, std::string_view name) {
  Node* p = find_locked(parent);
  if (!p) return Errc::not_found;
  if (!S_ISDIR(p->mode)) return Errc::not_dir;
  if (name.size() > 255) return Errc::name_too_long;
  auto it = p->children.find(name);
  if (it == p->children.end()) return Errc::not_found;
  Node* c = find_locked(it->second);
  if (!c) return Errc::io;
  return c;
}

struct stat Tree::stat_of(const Node& n, const StatInfo* info) const {
  struct stat st {};
  st.st_ino = n.ino;
  st.st_mode = n.mode;
  st.st_uid = n.uid;
  st.st_gid = n.gid;
  st.st_blksize = 4096;
  st.st_atim = n.atime;
  st.st_mtim = n.mtime;
  st.st_ctim = n.ctime;
  if (S_ISDIR(n.mode)) {
    st.st_nlink = 2 + n.subdirs;
    st.st_size = static_cast<off_t>(n.children.size());
  } else {
    st.st_nlink = n.linked ? 1 : 0;
    if (info) {
      st.st_size = static_cast<off_t>(info->reported_size);
      st.st_blocks = static_cast<blkcnt_t>((info->seg.record_bytes + 511) / 512);
      timespec sent = ns_ts(info->seg.last_send_ns), recv = ns_ts(info->seg.last_recv_ns);
      if (later(sent, st.st_mtim)) st.st_mtim = sent;
      if (later(recv, st.st_atim)) st.st_atim = recv;
    }
  }
  return st;
}

Result<struct stat> Tree::stat_ino(uint64_t ino) {
  std::shared_ptr<Mailbox> box;
  Node copy;
  {
    Guard g(mu_);
    Node* n = find_locked(ino);
    if (!n) return Errc::not_found;
    box = n->box;
    copy.ino = n->ino;
    copy.mode = n->mode;
    copy.uid = n->uid;
    copy.gid = n->gid;
    copy.atime = n->atime;
    copy.mtime = n->mtime;
    copy.ctime = n->ctime;
    copy.linked = n->linked;
    copy.subdirs = n->subdirs;
    if (S_ISDIR(n->mode)) return stat_of(*n, nullptr);
  }
  StatInfo info = box->stat();  // outside the tree lock: mailboxes are independent
  return stat_of(copy, &info);
}

Result<struct stat> Tree::lookup(uint64_t parent, std::string_view name, const Sender&) {
  uint64_t ino;
  {
    LetGo lg;
    Guard g(mu_);
    if (Errc e = sync_child_locked(parent, name, lg); e != Errc::ok) return e;
    auto c = child_locked(parent, name);
    if (!c) return c.error();
    (*c)->nlookup++;
    ino = (*c)->ino;
  }
  auto st = stat_ino(ino);
  if (!st) forget(ino, 1);
  return st;
}

void Tree::forget(uint64_t ino, uint64_t n) {
  Guard g(mu_);
  Node* node = find_locked(ino);
  if (!node || ino == kRootIno) return;
  node->nlookup -= std::min(node->nlookup, n);
  maybe_drop_locked(*node);
}

// An unlinked node the kernel no longer references is gone for good.
void Tree::maybe_drop_locked(Node& n) {
  if (n.linked || n.nlookup > 0) return;
  nodes_.erase(n.ino);
}

Result<struct stat> Tree::getattr(uint64_t ino, const Sender&) { return stat_ino(ino); }

Result<struct stat> Tree::setattr(uint64_t ino, const struct stat& in, unsigned what, const Sender&) {
  {
    Guard g(mu_);
    Node* n = find_locked(ino);
    if (!n) return Errc::not_found;
    // The kernel (default_permissions) has checked who may do what. Size
    // changes are ignored: an open with O_TRUNC never destroys queued messages.
    if (what & kSetMode) n->mode = (n->mode & S_IFMT) | (in.st_mode & 07777);
    if (n->mode & (S_ISUID | S_ISGID)) privs_seen_.store(true, std::memory_order_relaxed);
    if (what & kSetUid) n->uid = in.st_uid;
    if (what & kSetGid) n->gid = in.st_gid;
    if (what & kSetAtimeNow) n->atime = now_ts();
    else if (what & kSetAtime) n->atime = in.st_atim;
    if (what & kSetMtimeNow) n->mtime = now_ts();
    else if (what & kSetMtime) n->mtime = in.st_mtim;
    if (what & (kSetMode | kSetUid | kSetGid | kSetAtime | kSetMtime | kSetAtimeNow | kSetMtimeNow))
      n->ctime = now_ts();
    if (what & (kSetMode | kSetUid | kSetGid)) persist_locked(*n);
    if (catalog_ && (what & (kSetMode | kSetUid | kSetGid)) && n->linked) {
      CatalogEntry e{S_ISDIR(n->mode), n->rid, n->mode & 07777, n->uid, n->gid};
      if (Errc err = catalog_->update(path_locked(*n), e); err != Errc::ok && err != Errc::not_found) return err;
    }
  }
  return stat_ino(ino);
}

Result<Tree::Node*> Tree::add_locked(uint64_t parent, std::string_view name, mode_t mode, const Sender& c) {
  if (Errc e = check_name(name); e != Errc::ok) return e;
  if (parent == kRootIno && reserved_.count(name)) return Errc::exists;  // an add-on's: always there
  Node* p = find_locked(parent);
  if (!p) return Errc::not_found;
  if (!S_ISDIR(p->mode)) return Errc::not_dir;
  if (!p->linked) return Errc::not_found;
  if (p->children.count(name)) return Errc::exists;
  auto n = std::make_unique<Node>();
  n->ino = next_ino_++;
  n->parent = parent;
  n->name = std::string(name);
  n->mode = mode;
  n->uid = c.uid;
  n->gid = c.gid;
  n->atime = n->mtime = n->ctime = now_ts();
  n->nlookup = 1;
  if (mode & (S_ISUID | S_ISGID)) privs_seen_.store(true, std::memory_order_relaxed);
  p->children.emplace(n->name, n->ino);
  p->mtime = p->ctime = n->ctime;
  if (S_ISDIR(mode)) p->subdirs++;
  Node* raw = n.get();
  nodes_.emplace(n->ino, std::move(n));
  return raw;
}

Result<struct stat> Tree::create(uint64_t parent, std::string_view name, mode_t mode, const Sender& c) {
  uint64_t ino;
  {
    LetGo lg;
    Guard g(mu_);
    if (Errc e = check_name(name); e != Errc::ok) return e;
    if (parent == kRootIno && reserved_.count(name)) return Errc::exists;
    if (Errc e = sync_child_locked(parent, name, lg); e != Errc::ok) return e;
    Node* p = find_locked(parent);
    if (p && p->children.count(name)) return Errc::exists;
    std::string rid;
    Result<std::shared_ptr<Mailbox>> box = Errc::io;
    if (catalog_ && p) {  // the store first, then the name: no daemon sees a name without its store
      auto r = catalog_->new_rid();
      if (!r) return r.error();
      rid = *r;
      box = mount_.shared_mailbox(next_ino_, rid, mount_.defaults());
      if (!box) return box.error();
      const CatalogEntry e{false, rid, mode & 07777, c.uid, c.gid};
      if (Errc err = catalog_->add(path_locked(*p) + "/" + std::string(name), e); err != Errc::ok) {
        if (err == Errc::exists) (void)sync_child_locked(parent, name, lg);
        return err;  // `box` is dropped: its store goes with it
      }
    } else {
      box = mount_.create_mailbox(next_ino_, mount_.defaults());
    }
    if (!box) return box.error();
    auto n = add_locked(parent, name, S_IFREG | (mode & 07777), c);
    if (!n) return n.error();  // `box` is dropped: its segment goes with it
    (*n)->box = std::move(box.value());
    (*n)->rid = rid;
    ino = (*n)->ino;
    persist_locked(**n);
  }
  return stat_ino(ino);
}

Result<struct stat> Tree::mkdir(uint64_t parent, std::string_view name, mode_t mode, const Sender& c) {
  LetGo lg;
  Guard g(mu_);
  if (catalog_) {
    if (Errc e = check_name(name); e != Errc::ok) return e;
    if (parent == kRootIno && reserved_.count(name)) return Errc::exists;
    if (Errc e = sync_child_locked(parent, name, lg); e != Errc::ok) return e;
    Node* p = find_locked(parent);
    if (!p) return Errc::not_found;
    if (!S_ISDIR(p->mode)) return Errc::not_dir;
    if (p->children.count(name)) return Errc::exists;
    const CatalogEntry e{true, "", mode & 07777, c.uid, c.gid};
    if (Errc err = catalog_->add(path_locked(*p) + "/" + std::string(name), e); err != Errc::ok) {
      if (err == Errc::exists) (void)sync_child_locked(parent, name, lg);
      return err;
    }
  }
  auto n = add_locked(parent, name, S_IFDIR | (mode & 07777), c);
  if (!n) return n.error();
  persist_locked(**n);
  return stat_of(**n, nullptr);
}

void Tree::detach_locked(Node& n) {
  Node* p = find_locked(n.parent);
  if (p) {
    p->children.erase(n.name);
    p->mtime = p->ctime = now_ts();
    if (S_ISDIR(n.mode)) p->subdirs--;
  }
  n.linked = false;
  n.ctime = now_ts();
  remove_meta(mount_.state().dir(), n.ino);
}

Errc Tree::unlink(uint64_t parent, std::string_view name) { return remove_name(parent, name, false); }

Errc Tree::remove_name(uint64_t parent, std::string_view name, bool at_last_close) {
  if (parent == kRootIno && reserved_.count(name)) return Errc::is_dir;
  std::shared_ptr<Mailbox> box;
  std::string other;  // the store the catalog named, if not this daemon's node's
  {
    LetGo lg;
    Guard g(mu_);
    if (Errc e = sync_child_locked(parent, name, lg); e != Errc::ok) return e;
    auto c = child_locked(parent, name);
    if (!c) return c.error();
    Node* n = *c;
    if (S_ISDIR(n->mode)) return Errc::is_dir;
    if (catalog_) {
      auto r = catalog_->remove(path_locked(*n), /*dir=*/false);
      if (!r) return r.error();
      if (r->rid != n->rid) other = r->rid;
    }
    box = n->box;
    detach_locked(*n);
    maybe_drop_locked(*n);
  }
  // remove() wakes its parked calls with EIDRM (on every daemon) and frees its segment.
  if (at_last_close) box->remove_at_last_close();
  else box->remove();
  discard_store(other);
  return Errc::ok;
}

Errc Tree::rmdir(uint64_t parent, std::string_view name) {
  if (parent == kRootIno && reserved_.count(name)) return Errc::busy;
  LetGo lg;
  Guard g(mu_);
  if (Errc e = sync_child_locked(parent, name, lg); e != Errc::ok) return e;
  auto c = child_locked(parent, name);
  if (!c) return c.error();
  Node* n = *c;
  if (!S_ISDIR(n->mode)) return Errc::not_dir;
  if (catalog_) {  // the catalog knows every daemon's names
    auto r = catalog_->remove(path_locked(*n), /*dir=*/true);
    if (!r) return r.error();
    detach_subtree_locked(*n, lg);
    return Errc::ok;
  }
  if (!n->children.empty()) return Errc::not_empty;
  detach_locked(*n);
  maybe_drop_locked(*n);
  return Errc::ok;
}

Errc Tree::rename(uint64_t parent, std::string_view name, uint64_t newparent, std::string_view newname,
                  bool noreplace) {
  if (mailbox::is_unlink_at_last_close(newname)) return remove_name(parent, name, true);  // mq_unlink
  std::shared_ptr<Mailbox> replaced;
  if (parent == kRootIno && reserved_.count(name)) return Errc::busy;
  if (newparent == kRootIno && reserved_.count(newname)) return Errc::exists;
  std::string other;  // a replaced store the catalog named, if not this daemon's node's
  {
    LetGo lg;
    Guard g(mu_);
    if (Errc e = check_name(newname); e != Errc::ok) return e;
    if (Errc e = sync_child_locked(parent, name, lg); e != Errc::ok) return e;
    if (Errc e = sync_child_locked(newparent, newname, lg); e != Errc::ok) return e;
    auto src = child_locked(parent, name);
    if (!src) return src.error();
    Node* s = *src;
    Node* np = find_locked(newparent);
    if (!np) return Errc::not_found;
    if (!S_ISDIR(np->mode)) return Errc::not_dir;
    // Moving a directory under itself (the kernel checks this too).
    for (Node* a = np; S_ISDIR(s->mode); a = find_locked(a->parent)) {
      if (a == s) return Errc::invalid;
      if (!a || a->ino == kRootIno) break;
    }
    if (catalog_) {
      const std::string to = path_locked(*np) + "/" + std::string(newname);
      auto r = catalog_->rename(path_locked(*s), to, noreplace);
      if (!r) return r.error();
      auto d = child_locked(newparent, newname);
      if (*r && !(*r)->dir && (!d || (*d)->rid != (*r)->rid)) other = (*r)->rid;
    }
    auto dst = child_locked(newparent, newname);
    if (dst) {
      Node* d = *dst;
      if (d == s) return Errc::ok;
      if (noreplace) return Errc::exists;
      if (S_ISDIR(s->mode) && !S_ISDIR(d->mode)) return Errc::not_dir;
      if (!S_ISDIR(s->mode) && S_ISDIR(d->mode)) return Errc::is_dir;
      if (S_ISDIR(d->mode) && !d->children.empty()) return Errc::not_empty;
      replaced = d->box;
      detach_locked(*d);
      maybe_drop_locked(*d);
    }
    Node* op = find_locked(s->parent);
    if (op) {
      op->children.erase(s->name);
      op->mtime = op->ctime = now_ts();
      if (S_ISDIR(s->mode)) op->subdirs--;
    }
    s->parent = newparent;
    s->name = std::string(newname);
    np->children.emplace(s->name, s->ino);
    np->mtime = np->ctime = now_ts();
    if (S_ISDIR(s->mode)) np->subdirs++;
    s->ctime = now_ts();
    persist_locked(*s);
  }
  if (replaced) replaced->remove();
  discard_store(other);
  return Errc::ok;
}

Result<std::vector<DirEntry>> Tree::list(uint64_t ino, const Sender&) {
  // Reserved names are not listed: `ls` shows the mailboxes.
  LetGo lg;
  Guard g(mu_);
  Node* n = find_locked(ino);
  if (!n) return Errc::not_found;
  if (!S_ISDIR(n->mode)) return Errc::not_dir;
  if (Errc e = sync_dir_locked(*n, lg); e != Errc::ok) return e;
  std::vector<DirEntry> out;
  out.push_back({".", n->ino, S_IFDIR});
  out.push_back({"..", n->parent, S_IFDIR});
  for (auto& [name, cino] : n->children)
    if (Node* c = find_locked(cino)) out.push_back({name, cino, c->mode});
  return out;
}

std::shared_ptr<Mailbox> Tree::mailbox(uint64_t ino) {
  Guard g(mu_);
  Node* n = find_locked(ino);
  return n ? n->box : nullptr;
}

Result<std::unique_ptr<Handle>> Tree::open(uint64_t ino, bool can_read, bool can_write, bool nonblock, const Sender&) {
  auto box = mailbox(ino);
  if (!box) return Errc::is_dir;
  return box->open(can_read, can_write, nonblock);
}

struct statvfs Tree::statfs() {
  struct statvfs s {};
  const uint64_t bs = 4096, max = mount_.config().max_bytes;
  const uint64_t used = std::min(mount_.quota_used(), max);
  s.f_bsize = s.f_frsize = bs;
  s.f_blocks = max / bs;
  s.f_bfree = s.f_bavail = (max - used) / bs;
  Guard g(mu_);
  s.f_files = nodes_.size() + 1000000;
  s.f_ffree = s.f_favail = 1000000;
  s.f_namemax = 255;
  return s;
}

void Tree::clear_privs_on_write(uint64_t ino, const Sender& c) {
  if (!privs_seen_.load(std::memory_order_relaxed)) return;
  mode_t mode;
  gid_t gid;
  {
    Guard g(mu_);
    Node* n = find_locked(ino);
    if (!n || !S_ISREG(n->mode) || !(n->mode & (S_ISUID | S_ISGID))) return;
    mode = n->mode;
    gid = n->gid;
  }
  // /proc is read without the tree lock; a writer already gone is judged by
  // its uid alone (root keeps the bits, as with CAP_FSETID).
  auto creds = proc::status(c.pid);
  if (creds ? creds->cap_fsetid : c.uid == 0) return;
  const bool in_group = c.gid == gid ||
                        (creds && std::find(creds->groups.begin(), creds->groups.end(), gid) != creds->groups.end());
  mode_t kill = mode & S_ISUID;
  if ((mode & S_ISGID) && ((mode & S_IXGRP) || !in_group)) kill |= S_ISGID;
  if (!kill) return;
  Guard g(mu_);
  Node* n = find_locked(ino);
  if (!n || !(n->mode & kill)) return;
  n->mode &= ~kill;
  n->ctime = now_ts();
  persist_locked(*n);
  g.unlock();
  // The kernel keeps the mode it cached across a direct write: drop it.
  if (KernelCache* k = mount_.kernel()) k->invalidate_attrs(ino);
}

// ---- user.mailbox.* ----------------------------------------------------------

Result<std::string> Tree::getxattr(uint64_t ino, std::string_view name, const Sender& c) {
  if (!mailbox::attr::in_namespace(name)) return Errc::no_data;
  auto box = mailbox(ino);
  if (!box) return Errc::no_data;
  return mailbox_xattr(*box, name, c.pid);
}

Result<std::string> Tree::listxattr(uint64_t ino) {
  auto box = mailbox(ino);
  return box ? mailbox_xattr_names() : std::string();
}

Errc Tree::setxattr(uint64_t ino, std::string_view name, std::string_view value, const Sender& c) {
  std::shared_ptr<Mailbox> box;
  {
    Guard g(mu_);
    Node* n = find_locked(ino);
    if (!n) return Errc::not_found;
    if (!n->box) return Errc::not_supported;
    if (!mailbox::attr::in_namespace(name)) return Errc::not_supported;
    if (c.uid != 0 && c.uid != n->uid) return Errc::perm;  // settings belong to the owner
    box = n->box;
  }
  Errc e = set_mailbox_xattr(*box, name, value);
  if (e == Errc::ok) {
    Guard g(mu_);
    if (Node* n = find_locked(ino)) {
      n->ctime = now_ts();
      persist_locked(*n);
    }
  }
  return e;
}

Errc Tree::removexattr(uint64_t ino, std::string_view name) {
  auto box = mailbox(ino);
  if (!box || !mailbox::attr::in_namespace(name)) return Errc::no_data;
  return Errc::perm;  // the attributes are the mailbox's settings and counters
}

// Records `n` for a daemon restarted after a crash (lib/persist.h). A
// failure (the state directory's file system full) costs only that.
void Tree::persist_locked(const Node& n) {
  if (catalog_) return;  // Redis mounts: the catalog and the stores are on the server
  // A state directory removed and made again has lost every record: all
  // nodes are written anew (the one asked for among them).
  if (rebuilds_seen_ == mount_.state_rebuilds() && !mount_.state().missing()) return persist_node_locked(n);
  if (!mount_.restore_state_dir()) return persist_node_locked(n);  // warns once
  rebuilds_seen_ = mount_.state_rebuilds();
  for (auto& [ino, node] : nodes_)
    if (ino != kRootIno && node->linked) persist_node_locked(*node);
  if (n.ino == kRootIno || !n.linked) persist_node_locked(n);
}

void Tree::persist_node_locked(const Node& n) {
  NodeMeta m;
  m.ino = n.ino;
  m.parent = n.parent;
  m.mode = n.mode;
  m.uid = n.uid;
  m.gid = n.gid;
  m.name = n.name;
  if (n.box) m.settings = n.box->settings();
  if (save_meta(mount_.state().dir(), m) != Errc::ok && !persist_warned_) {
    persist_warned_ = true;
    log(LogLevel::warning, "cannot record %s in the state directory (%s): it would not survive a crash", n.name.c_str(),
        std::strerror(errno));
  }
}

Tree::Restored Tree::restore() {
  Restored r;
  if (catalog_) return r;  // the names are the catalog's
  std::vector<std::string> bad;
  std::vector<NodeMeta> metas = load_meta(mount_.state().dir(), &bad);
  r.dropped += bad.size();
  for (const auto& name : bad) ::unlinkat(AT_FDCWD, (mount_.state().dir() + "/" + name).c_str(), 0);
  std::map<uint64_t, std::vector<const NodeMeta*>> by_parent;
  for (const auto& m : metas) by_parent[m.parent].push_back(&m);
  std::set<uint64_t> kept;
  {
    Guard g(mu_);
    // From the root down: a record whose parent is gone (or not a directory),
    // or whose name is taken or invalid, is dropped with everything under it.
    std::vector<uint64_t> todo{kRootIno};
    while (!todo.empty()) {
      const uint64_t pino = todo.back();
      todo.pop_back();
      for (const NodeMeta* m : by_parent[pino]) {
        Node* p = find_locked(pino);
        if (!p || !S_ISDIR(p->mode) || nodes_.count(m->ino) || check_name(m->name) != Errc::ok ||
            p->children.count(m->name) || (pino == kRootIno && reserved_.count(m->name)))
          continue;
        auto n = std::make_unique<Node>();
        if (S_ISREG(m->mode)) {
          auto box = mount_.adopt_mailbox(m->ino, m->settings);
          if (!box) continue;
          n->box = std::move(box.value());
          r.mailboxes++;
          r.messages += n->box->info().seg.count;
        } else {
          r.directories++;
          todo.push_back(m->ino);
        }
        n->ino = m->ino;
        n->parent = pino;
        n->name = m->name;
        n->mode = m->mode;
        n->uid = m->uid;
        n->gid = m->gid;
        if (n->mode & (S_ISUID | S_ISGID)) privs_seen_.store(true, std::memory_order_relaxed);
        n->atime = n->mtime = n->ctime = now_ts();
        p->children.emplace(n->name, n->ino);
        if (S_ISDIR(n->mode)) p->subdirs++;
        next_ino_ = std::max(next_ino_, n->ino + 1);
        kept.insert(n->ino);
        nodes_.emplace(n->ino, std::move(n));
      }
    }
  }
  for (const auto& m : metas)
    if (!kept.count(m.ino)) {
      remove_meta(mount_.state().dir(), m.ino);
      r.dropped++;
    }
  mount_.remove_stores_except(kept);  // of mailboxes that were never recorded, or dropped
  return r;
}

}  // namespace mbx

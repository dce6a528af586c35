// SPDX-License-Identifier: MIT
// Thin callbacks: each translates one request into one core call and sends
// exactly one reply, now or, for a call that blocks, from whichever thread
// finishes its Waiter. No core lock is held while replying.
#include "fuse_ops.h"

#include <fcntl.h>
#include <linux/fuse.h>  // fuse_open_out / fuse_entry_out: FOPEN_STREAM needs a raw reply
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "base/proc.h"

namespace mbx {
namespace {

// Directories' names are cached for a second, and so is a mailbox's while
// no write can park in it inside write(2) (Mailbox::name_cacheable: file
// framing, no open file of another framing). Otherwise its name is looked up
// again at every use: the lookup that precedes rm, mv or chmod is then how
// the daemon learns of it in time to free the inode lock (clear_for_owner).
// A framing change that ends the caching drops every cached name at once
// (forget_cached_names) before it is answered. On a mount whose names other
// daemons change (Fs::shared_names) nothing is cached: an rm or mv made
// elsewhere must be seen at the next open here.
constexpr double kEntryTimeout = 1.0;
constexpr double kMailboxEntryTimeout = 1.0;
// FOPEN_STREAM: no file position, so a read parked here does not hold the
// position lock against a write through the same open file (fork, threads).
// FOPEN_PARALLEL_DIRECT_WRITES: writers within the cached size wait here
// side by side instead of on the inode lock.
// FOPEN_NOFLUSH, for a read-only open: its close has nothing to commit,
// so the kernel need not send FLUSH and wait for the reply.
constexpr uint32_t kOpenFlags = FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_STREAM | FOPEN_PARALLEL_DIRECT_WRITES;

Fs& fs(fuse_req_t req) { return *static_cast<Fs*>(fuse_req_userdata(req)); }

Sender caller(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return Sender{c->pid, c->uid, c->gid};
}

Handle* handle(fuse_file_info* fi) { return reinterpret_cast<Handle*>(fi->fh); }

// A directory's attributes are cached, unless another daemon may chmod it.
// A mailbox's st_size and times change with every send and receive: they
// are cached only while the daemon alone changes its store (Mailbox::stat:
// no library was told where it is), and every change through the daemon
// drops them before its reply (KernelCache::invalidate_attrs). Under pid/
// (no Mailbox here) and on a shared mount, never.
constexpr double kAttrTimeout = 1.0;

double attr_timeout(fuse_req_t req, const struct stat& st) {
  if (fs(req).shared_names) return 0.0;
  if (S_ISDIR(st.st_mode)) return kAttrTimeout;
  auto box = fs(req).router->mailbox(st.st_ino);
  return box && box->attrs_cacheable() ? kAttrTimeout : 0.0;
}

void reply_err(fuse_req_t req, Errc e) { fuse_reply_err(req, to_errno(e)); }

// FUSE_NOTIFY_INC_EPOCH (not in libfuse 3.14's headers): every name the
// kernel cached before it must be looked up again. It takes no lock in the
// kernel, so it may be sent while a request holds one (op_setxattr), and a
// lookup answered meanwhile is remembered with the old epoch.
constexpr int32_t kNotifyIncEpoch = 8;

bool notify_inc_epoch(fuse_session* se) {
  fuse_out_header h{};
  h.len = sizeof h;
  h.error = kNotifyIncEpoch;
  return ::write(fuse_session_fd(se), &h, sizeof h) == static_cast<ssize_t>(sizeof h);
}

// Mailbox names may be cached only if the kernel can be told to drop them:
// the first call asks it to once (harmless) and remembers whether it could.
bool epoch_supported(Fs& f) {
  int known = f.epoch.load(std::memory_order_relaxed);  // a hint: a race only probes twice
  if (known == 0) {
    known = f.se && notify_inc_epoch(f.se) ? 1 : -1;
    f.epoch.store(known, std::memory_order_relaxed);
  }
  return known > 0;
}

// Drops every name the kernel cached (a mailbox stopped being cacheable).
void forget_cached_names(Fs& f) {
  if (epoch_supported(f) && !notify_inc_epoch(f.se)) f.epoch.store(-1, std::memory_order_relaxed);
}

double entry_timeout(fuse_req_t req, const struct stat& st) {
  if (fs(req).shared_names) return 0.0;
  if (S_ISDIR(st.st_mode)) return kEntryTimeout;
  auto box = fs(req).router->mailbox(st.st_ino);  // null under pid/: names the caller's own link
  return box && epoch_supported(fs(req)) && box->name_cacheable() ? kMailboxEntryTimeout : 0.0;
}

void reply_entry(fuse_req_t req, const Result<struct stat>& st) {
  if (!st) return reply_err(req, st.error());
  fuse_entry_param e{};
  e.ino = st->st_ino;
  e.attr = *st;
  e.attr_timeout = attr_timeout(req, *st);
  e.entry_timeout = entry_timeout(req, *st);
  fuse_reply_entry(req, &e);
}

void fill_attr(fuse_attr& a, const struct stat& st) {
  a.ino = st.st_ino;
  a.size = static_cast<uint64_t>(st.st_size);
  a.blocks = static_cast<uint64_t>(st.st_blocks);
  a.atime = static_cast<uint64_t>(st.st_atim.tv_sec);
  a.mtime = static_cast<uint64_t>(st.st_mtim.tv_sec);
  a.ctime = static_cast<uint64_t>(st.st_ctim.tv_sec);
  a.atimensec = static_cast<uint32_t>(st.st_atim.tv_nsec);
  a.mtimensec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  a.ctimensec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  a.mode = st.st_mode;
  a.nlink = static_cast<uint32_t>(st.st_nlink);
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.blksize = static_cast<uint32_t>(st.st_blksize);
}

fuse_open_out open_out(Handle* h, int flags) {
  fuse_open_out o{};
  o.fh = reinterpret_cast<uintptr_t>(h);
  o.open_flags = kOpenFlags | ((flags & O_ACCMODE) == O_RDONLY ? FOPEN_NOFLUSH : 0);
  return o;
}

void drop_handle(Handle* h) {
  h->box->release(*h);
  delete h;
}

// ---- blocking calls ----------------------------------------------------------

enum class ReplyKind { data, write, status };

// `box`: where messages the store keeps in flight are settled once the reply went (or not).
void reply_outcome(fuse_req_t req, ReplyKind k, const Outcome& o, Mailbox* box) {
  if (o.err != Errc::ok) return reply_err(req, o.err);
  switch (k) {
    case ReplyKind::data: {
      const int rc = fuse_reply_buf(req, o.data.data(), o.data.size());  // -ENOENT: interrupted, not delivered
      if (!o.in_flight.empty() && box) box->settle_in_flight(o.in_flight, rc == 0);
      break;
    }
    case ReplyKind::write: fuse_reply_write(req, o.written); break;
    case ReplyKind::status: fuse_reply_err(req, 0); break;
  }
}

class FuseWaiter final : public Waiter {
 public:
  FuseWaiter(fuse_req_t req, ReplyKind kind, std::shared_ptr<Mailbox> box)
      : req_(req), kind_(kind), box_(std::move(box)) {
    pid = fuse_req_ctx(req)->pid;
  }
  void finish(Outcome o, bool from_interrupt) override {
    // Unregistering waits for an interrupt callback running on another
    // thread; inside our own callback libfuse already holds that lock.
    if (!from_interrupt) fuse_req_interrupt_func(req_, nullptr, nullptr);
    reply_outcome(req_, kind_, o, box_.get());
    delete this;
  }
  Mailbox& box() { return *box_; }

 private:
  fuse_req_t req_;
  ReplyKind kind_;
  std::shared_ptr<Mailbox> box_;
};

void on_interrupt(fuse_req_t, void* data) {
  auto* w = static_cast<FuseWaiter*>(data);
  w->box().interrupt(w);
}

// Runs `op` without a waiter; if it would block, arms the interrupt callback
// first and runs it again with one, which then parks (or completes at once).
template <class Op>
void run(fuse_req_t req, ReplyKind kind, const std::shared_ptr<Mailbox>& box, Op op) {
  if (auto o = op(nullptr)) return reply_outcome(req, kind, *o, box.get());
  auto* w = new FuseWaiter(req, kind, box);
  fuse_req_interrupt_func(req, on_interrupt, w);
  if (auto o = op(w)) {
    fuse_req_interrupt_func(req, nullptr, nullptr);
    delete w;
    reply_outcome(req, kind, *o, box.get());
  }
}

class FusePollToken final : public PollToken {
 public:
  explicit FusePollToken(fuse_pollhandle* ph) : ph_(ph) {}
  ~FusePollToken() override { fuse_pollhandle_destroy(ph_); }
  void notify() override { fuse_lowlevel_notify_poll(ph_); }

 private:
  fuse_pollhandle* ph_;
};

// ---- callbacks -----------------------------------------------------------------

void op_init(void* userdata, fuse_conn_info* conn) {
  // READDIRPLUS looks every entry up (and counts the kernel's reference); on
  // a shared mount each look would be a server round trip, for attributes
  // the kernel may not cache anyway.
  if (static_cast<Fs*>(userdata)->shared_names) conn->want &= ~FUSE_CAP_READDIRPLUS;
  // No atomic_o_trunc: with it the kernel zeroes its cached size at an
  // O_TRUNC open, undoing the size raised for a full datagram/line mailbox, and
  // the next write takes the inode lock exclusively. Without it, O_TRUNC
  // arrives as a size-0 setattr that we ignore, answered with the real attributes.
  conn->want &= ~(FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

// A write parked on a full datagram/line mailbox holds its inode lock (shared)
// in the kernel, and rm, mv, chmod... of it wait for that lock in
// uninterruptible sleep. When the owner or root looks the mailbox up for
// such a call, writes of other users parked there are freed first.
void clear_for_owner(fuse_req_t req, const struct stat& st) {
  const Sender c = caller(req);
  if (!S_ISREG(st.st_mode) || (c.uid != 0 && c.uid != st.st_uid)) return;
  auto sc = proc::current_syscall(c.pid);
  if (!sc || !proc::locks_inode_exclusively(*sc)) return;
  if (auto box = fs(req).router->mailbox(st.st_ino)) box->clear_for(c.uid, c.pid, sc->nr);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto st = fs(req).router->lookup(parent, name, caller(req));
  if (st) clear_for_owner(req, *st);
  reply_entry(req, st);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  fs(req).router->forget(ino, n);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* list) {
  for (size_t i = 0; i < count; i++) fs(req).router->forget(list[i].ino, list[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto st = fs(req).router->getattr(ino, caller(req));
  if (!st) return reply_err(req, st.error());
  fuse_reply_attr(req, &*st, attr_timeout(req, *st));
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* in, int to_set, fuse_file_info*) {
  unsigned what = 0;
  if (to_set & FUSE_SET_ATTR_MODE) what |= kSetMode;
  if (to_set & FUSE_SET_ATTR_UID) what |= kSetUid;
  if (to_set & FUSE_SET_ATTR_GID) what |= kSetGid;
  if (to_set & FUSE_SET_ATTR_ATIME) what |= kSetAtime;
  if (to_set & FUSE_SET_ATTR_MTIME) what |= kSetMtime;
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) what |= kSetAtimeNow;
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) what |= kSetMtimeNow;
  if (to_set & FUSE_SET_ATTR_SIZE) what |= kSetSize;
  auto st = fs(req).router->setattr(ino, *in, what, caller(req));
  if (!st) return reply_err(req, st.error());
  fuse_reply_attr(req, &*st, attr_timeout(req, *st));
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
  if ((mode & S_IFMT) != S_IFREG && (mode & S_IFMT) != 0) return reply_err(req, Errc::perm);
  reply_entry(req, fs(req).router->create(parent, name, mode, caller(req)));
}

// Mailboxes have one name each: no hard or symbolic links.
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { reply_err(req, Errc::perm); }

void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { reply_err(req, Errc::perm); }

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  reply_entry(req, fs(req).router->mkdir(parent, name, mode, caller(req)));
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply_err(req, fs(req).router->unlink(parent, name));
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply_err(req, fs(req).router->rmdir(parent, name));
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  if (flags & ~RENAME_NOREPLACE) return reply_err(req, Errc::invalid);  // RENAME_EXCHANGE, WHITEOUT
  reply_err(req, fs(req).router->rename(parent, name, newparent, newname, flags & RENAME_NOREPLACE));
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  const int acc = fi->flags & O_ACCMODE;
  // Under pid/ the opener decides which link the file is (the kernel gives the opener's pid here).
  auto opened = fs(req).router->open(ino, acc != O_WRONLY, acc != O_RDONLY, fi->flags & O_NONBLOCK, caller(req));
  if (!opened) return reply_err(req, opened.error());
  Handle* h = opened->release();
  fuse_open_out o = open_out(h, fi->flags);
  iovec iov{&o, sizeof o};
  if (fuse_reply_iov(req, &iov, 1) != 0) drop_handle(h);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  Router& router = *fs(req).router;
  auto st = router.create(parent, name, mode, caller(req));
  if (!st) return reply_err(req, st.error());
  auto box = router.mailbox(st->st_ino);
  if (!box) return reply_err(req, Errc::io);
  const int acc = fi->flags & O_ACCMODE;
  Handle* h = box->open(acc != O_WRONLY, acc != O_RDONLY, fi->flags & O_NONBLOCK).release();
  fuse_entry_out e{};
  e.nodeid = st->st_ino;
  e.entry_valid = static_cast<uint64_t>(entry_timeout(req, *st));
  fill_attr(e.attr, *st);
  fuse_open_out o = open_out(h, fi->flags);
  iovec iov[2] = {{&e, sizeof e}, {&o, sizeof o}};
  if (fuse_reply_iov(req, iov, 2) != 0) {
    drop_handle(h);
    router.forget(st->st_ino, 1);
  }
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t, fuse_file_info* fi) {
  Handle* h = handle(fi);
  const bool nb = fi->flags & O_NONBLOCK;
  const pid_t reader = fuse_req_ctx(req)->pid;  // remembered for user.mailbox.sender
  run(req, ReplyKind::data, h->box, [&](Waiter* w) { return h->box->read(*h, size, nb, w, reader); });
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t, fuse_file_info* fi) {
  Handle* h = handle(fi);
  const bool nb = fi->flags & O_NONBLOCK;
  const Sender from = caller(req);
  fs(req).router->clear_privs_on_write(ino, from);  // the kernel leaves it to us for direct I/O
  run(req, ReplyKind::write, h->box, [&](Waiter* w) { return h->box->write(*h, buf, size, nb, from, w); });
}

// close() and fsync(): commit what the open file wrote (the mailbox decides
// what a killed writer's close sends).
void commit_unsent(fuse_req_t req, Handle* h, bool on_close) {
  const Sender from = caller(req);
  run(req, ReplyKind::status, h->box, [&](Waiter* w) { return h->box->flush(*h, from, w, on_close); });
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) { commit_unsent(req, handle(fi), true); }

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) { commit_unsent(req, handle(fi), false); }

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  drop_handle(handle(fi));
  fuse_reply_err(req, 0);
}

void op_poll(fuse_req_t req, fuse_ino_t, fuse_file_info* fi, fuse_pollhandle* ph) {
  std::unique_ptr<PollToken> token;
  if (ph) token = std::make_unique<FusePollToken>(ph);
  Handle* h = handle(fi);
  fuse_reply_poll(req, h->box->poll(*h, std::move(token)));
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto list = fs(req).router->list(ino, caller(req));
  if (!list) return reply_err(req, list.error());
  auto* snap = new std::vector<DirEntry>(std::move(list.value()));
  fi->fh = reinterpret_cast<uintptr_t>(snap);
  if (fuse_reply_open(req, fi) != 0) delete snap;
}

void op_readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  auto* snap = reinterpret_cast<std::vector<DirEntry>*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < snap->size(); i++) {
    struct stat st {};
    st.st_ino = (*snap)[i].ino;
    st.st_mode = (*snap)[i].mode;
    size_t n = fuse_add_direntry(req, buf.data() + used, size - used, (*snap)[i].name.c_str(), &st,
                                 static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

// READDIRPLUS: each entry with its attributes, so that `ls -l` needs no
// LOOKUP (and, for a cacheable mailbox, no GETATTR) per file. Each entry
// given with an inode is a lookup the kernel will forget; "." and ".." are
// given without (the kernel ignores their attributes). A name gone since
// OPENDIR is skipped.
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  auto* snap = reinterpret_cast<std::vector<DirEntry>*>(fi->fh);
  Router& router = *fs(req).router;
  std::vector<char> buf(size);
  std::vector<uint64_t> looked_up;
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < snap->size(); i++) {
    const DirEntry& d = (*snap)[i];
    const off_t next = static_cast<off_t>(i + 1);
    fuse_entry_param e{};
    if (fuse_add_direntry_plus(req, nullptr, 0, d.name.c_str(), nullptr, 0) > size - used) break;
    if (d.name != "." && d.name != "..") {
      auto st = router.lookup(ino, d.name, caller(req));
      if (!st) continue;  // removed since OPENDIR
      e.ino = st->st_ino;
      e.attr = *st;
      e.attr_timeout = attr_timeout(req, *st);
      e.entry_timeout = entry_timeout(req, *st);
      looked_up.push_back(e.ino);
    } else {
      e.attr.st_ino = d.ino;
      e.attr.st_mode = d.mode;
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, size - used, d.name.c_str(), &e, next);
  }
  if (fuse_reply_buf(req, buf.data(), used) != 0)  // not delivered: the kernel took no reference
    for (uint64_t n : looked_up) router.forget(n, 1);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<std::vector<DirEntry>*>(fi->fh);
  fuse_reply_err(req, 0);
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs s = fs(req).router->statfs();
  fuse_reply_statfs(req, &s);
}

void reply_xattr(fuse_req_t req, const Result<std::string>& v, size_t size) {
  if (!v) return reply_err(req, v.error());
  if (size == 0) return (void)fuse_reply_xattr(req, v->size());
  if (size < v->size()) return reply_err(req, Errc::range);
  fuse_reply_buf(req, v->data(), v->size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  reply_xattr(req, fs(req).router->getxattr(ino, name, caller(req)), size);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  reply_xattr(req, fs(req).router->listxattr(ino), size);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int) {
  const Errc e = fs(req).router->setxattr(ino, name, std::string_view(value, size), caller(req));
  // A framing that parks writers in write(2) needs every later rm, mv or chmod of
  // the mailbox to be looked up first; do it before the caller can open it.
  if (e == Errc::ok && std::string_view(name) == mailbox::attr::kFraming) forget_cached_names(fs(req));
  reply_err(req, e);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  reply_err(req, fs(req).router->removexattr(ino, name));
}

// Restricted ioctls (layout.h), sized by their numbers: kInfoIoctl, a
// write-only opener's way to what the xattrs say; kSendPriorityIoctl and
// kReceivedIoctl, priorities through the file, per open file and thread;
// kDiscardIoctl, a written message taken back before its close.
void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, void*, fuse_file_info* fi, unsigned flags, const void* in,
              size_t in_size, size_t out_size) {
  if (flags & FUSE_IOCTL_COMPAT) return (void)fuse_reply_err(req, ENOTTY);
  const pid_t tid = fuse_req_ctx(req)->pid;
  switch (cmd) {
    case layout::kInfoIoctl: {
      if (out_size < sizeof(layout::FileInfo)) break;
      auto info = fs(req).router->file_info(ino, caller(req));
      if (!info) return reply_err(req, info.error());
      return (void)fuse_reply_ioctl(req, 0, &*info, sizeof *info);
    }
    case layout::kSendPriorityIoctl: {
      if (in_size < sizeof(uint32_t) || (flags & FUSE_IOCTL_DIR)) break;  // a directory's fh is no Handle
      uint32_t prio;
      std::memcpy(&prio, in, sizeof prio);
      Handle* h = handle(fi);
      if (Errc e = h->box->set_send_priority(*h, tid, prio); e != Errc::ok) return reply_err(req, e);
      return (void)fuse_reply_ioctl(req, 0, nullptr, 0);
    }
    case layout::kDiscardIoctl: {
      if (flags & FUSE_IOCTL_DIR) break;
      Handle* h = handle(fi);
      h->box->discard_unsent(*h);
      return (void)fuse_reply_ioctl(req, 0, nullptr, 0);
    }
    case layout::kReceivedIoctl: {
      if (out_size < sizeof(layout::ReceivedInfo) || (flags & FUSE_IOCTL_DIR)) break;
      Handle* h = handle(fi);
      auto r = h->box->received(*h, tid);
      if (!r) return reply_err(req, r.error());
      layout::ReceivedInfo out{r->prio, r->from.pid, r->from.uid, r->from.gid};
      return (void)fuse_reply_ioctl(req, 0, &out, sizeof out);
    }
    default: break;
  }
  fuse_reply_err(req, ENOTTY);
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops o{};
  o.init = op_init;
  o.lookup = op_lookup;
  o.forget = op_forget;
  o.forget_multi = op_forget_multi;
  o.getattr = op_getattr;
  o.setattr = op_setattr;
  o.mknod = op_mknod;
  o.mkdir = op_mkdir;
  o.symlink = op_symlink;
  o.link = op_link;
  o.unlink = op_unlink;
  o.rmdir = op_rmdir;
  o.rename = op_rename;
  o.open = op_open;
  o.create = op_create;
  o.read = op_read;
  o.write = op_write;
  o.flush = op_flush;
  o.fsync = op_fsync;
  o.release = op_release;
  o.poll = op_poll;
  o.opendir = op_opendir;
  o.readdir = op_readdir;
  o.readdirplus = op_readdirplus;
  o.releasedir = op_releasedir;
  o.statfs = op_statfs;
  o.getxattr = op_getxattr;
  o.listxattr = op_listxattr;
  o.setxattr = op_setxattr;
  o.removexattr = op_removexattr;
  o.ioctl = op_ioctl;
  return o;
}

}  // namespace

void FuseKernelCache::raise_size(uint64_t ino, uint64_t size) {
  fuse_bufvec empty = FUSE_BUFVEC_INIT(0);
  fuse_lowlevel_notify_store(se_, ino, static_cast<off_t>(size), &empty, FUSE_BUF_NO_SPLICE);
}

void FuseKernelCache::invalidate_attrs(uint64_t ino) {
  // Offset -1: the attributes only, no page cache (direct I/O keeps none);
  // takes no inode lock in the kernel, so a request handler may send it.
  fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
}

const fuse_lowlevel_ops& fuse_operations() {
  static const fuse_lowlevel_ops ops = make_ops();
  return ops;
}

}  // namespace mbx

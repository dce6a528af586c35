// SPDX-License-Identifier: MIT
#include "core/pid_dir.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "base/proc.h"
#include "core/attributes.h"

namespace mbx {

namespace attr = mailbox::attr;

namespace {
constexpr uint64_t kAnyIno = kPidDirIno + 1;
constexpr uint64_t kEntryBase = kPidDirIno + 16;
constexpr uint64_t kViewBase = kPidDirIno + (1ull << 50);
constexpr pid_t kPidLimit = 1 << 22;  // PID_MAX_LIMIT on 64-bit Linux
enum Kind : uint64_t { kBoth = 0, kTo = 1, kFrom = 2 };

uint64_t entry_ino(pid_t n, Kind k) { return kEntryBase + static_cast<uint64_t>(n) * 4 + k; }
uint64_t view_ino(pid_t s, pid_t r) { return kViewBase + (static_cast<uint64_t>(s) << 22 | static_cast<uint64_t>(r)); }

// What an inode of pid/ names.
struct Name {
  enum { dir, any, entry, view, none } what = none;
  pid_t n = 0, r = 0;
  Kind kind = kBoth;
};

Name decode(uint64_t ino) {
  Name d;
  if (ino == kPidDirIno) d.what = Name::dir;
  else if (ino == kAnyIno) d.what = Name::any;
  else if (ino >= kViewBase) {
    d.what = Name::view;
    d.n = static_cast<pid_t>((ino - kViewBase) >> 22);
    d.r = static_cast<pid_t>((ino - kViewBase) & (kPidLimit - 1));
  } else if (ino >= kEntryBase) {
    d.what = Name::entry;
    d.n = static_cast<pid_t>((ino - kEntryBase) / 4);
    d.kind = static_cast<Kind>((ino - kEntryBase) % 4);
  }
  return d;
}

// A decimal pid, 1 to PID_MAX_LIMIT - 1, without sign or leading zeros.
bool parse_pid(std::string_view s, pid_t* out) {
  if (s.empty() || s.size() > 7 || s[0] == '0') return false;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v <= 0 || v >= kPidLimit) return false;
  *out = v;
  return true;
}

Name parse(std::string_view name) {
  Name d;
  if (name == "any") {
    d.what = Name::any;
  } else if (parse_pid(name, &d.n)) {
    d.what = Name::entry;
  } else if (name.substr(0, 3) == "to." && parse_pid(name.substr(3), &d.n)) {
    d.what = Name::entry;
    d.kind = kTo;
  } else if (name.substr(0, 5) == "from." && parse_pid(name.substr(5), &d.n)) {
    d.what = Name::entry;
    d.kind = kFrom;
  } else if (auto at = name.find("-to-"); at != std::string_view::npos && parse_pid(name.substr(0, at), &d.n) &&
                                          parse_pid(name.substr(at + 4), &d.r)) {
    d.what = Name::view;
  }
  return d;
}

// The process thread `tid` belongs to; 0 if it is gone.
pid_t process_of(pid_t tid) {
  auto st = proc::status(tid);
  return st ? st->tgid : 0;
}
}  // namespace

struct stat PidDir::stat_entry(uint64_t ino, const Sender& caller) {
  struct stat st {};
  st.st_ino = ino;
  st.st_nlink = 1;
  st.st_blksize = 4096;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  st.st_atim = st.st_mtim = st.st_ctim = now;
  const Name d = decode(ino);
  if (d.what == Name::dir) {
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2;
    return st;
  }
  // Messages queued on the links it stands for: st_size counts messages.
  std::vector<std::shared_ptr<Mailbox>> boxes;
  const pid_t self = process_of(caller.pid);
  for (auto& l : direct_.link_infos()) {
    const bool mine = l.to == self;
    if ((d.what == Name::entry && d.kind != kTo && mine && l.from == d.n) ||
        (d.what == Name::entry && d.kind == kTo && l.from == self && l.to == d.n && !l.orphan) ||
        (d.what == Name::any && mine) || (d.what == Name::view && l.from == d.n && l.to == d.r)) {
      boxes.push_back(l.box);
      if (d.what != Name::any) st.st_uid = l.as.uid, st.st_gid = l.as.gid;
    }
  }
  if (d.what == Name::any)
    if (auto any = direct_.any_queue(self)) boxes.push_back(std::move(any));
  st.st_mode = S_IFREG | (d.what == Name::view  ? 0
                          : d.what == Name::any ? 0444
                          : d.kind == kTo       ? 0222
                          : d.kind == kFrom     ? 0444
                                                : 0666);
  int64_t sent = 0, recv = 0;
  for (auto& b : boxes) {
    MailboxInfo i = b->info();
    st.st_size += static_cast<off_t>(i.seg.count);
    st.st_blocks += static_cast<blkcnt_t>((i.seg.record_bytes + 511) / 512);
    sent = std::max(sent, i.seg.last_send_ns);
    recv = std::max(recv, i.seg.last_recv_ns);
  }
  if (sent) st.st_mtim = timespec{sent / 1000000000, sent % 1000000000};
  if (recv) st.st_atim = timespec{recv / 1000000000, recv % 1000000000};
  return st;
}

// The link s->r may be inspected by root and by its receiver's user.
bool PidDir::may_view(pid_t s, pid_t r, const Sender& caller) {
  if (caller.uid == 0) return true;
  for (auto& l : direct_.link_infos())
    if (l.from == s && l.to == r && l.to_uid == caller.uid) return true;
  return false;
}

Result<struct stat> PidDir::lookup(uint64_t parent, std::string_view name, const Sender& caller) {
  if (parent != kPidDirIno) return Errc::not_dir;
  const Name d = parse(name);
  switch (d.what) {
    case Name::any: return stat_entry(kAnyIno, caller);
    case Name::entry: return stat_entry(entry_ino(d.n, d.kind), caller);
    case Name::view:
      if (!may_view(d.n, d.r, caller)) return Errc::not_found;
      return stat_entry(view_ino(d.n, d.r), caller);
    default: return Errc::not_found;
  }
}

Result<struct stat> PidDir::getattr(uint64_t ino, const Sender& caller) {
  const Name d = decode(ino);
  if (d.what == Name::none) return Errc::not_found;
  if (d.what == Name::view && !may_view(d.n, d.r, caller)) return Errc::not_found;
  return stat_entry(ino, caller);
}

Result<std::vector<DirEntry>> PidDir::list(uint64_t ino, const Sender& caller) {
  if (ino != kPidDirIno) return Errc::not_dir;
  std::vector<DirEntry> out{{".", kPidDirIno, S_IFDIR}, {"..", kRootIno, S_IFDIR}, {"any", kAnyIno, S_IFREG}};
  const pid_t self = process_of(caller.pid);
  std::set<pid_t> from;
  std::set<std::pair<pid_t, pid_t>> all;
  for (auto& l : direct_.link_infos()) {
    if (l.box->info().seg.count == 0) continue;  // only links holding messages
    if (l.to == self) from.insert(l.from);
    if (caller.uid == 0 || l.to_uid == caller.uid) all.insert({l.from, l.to});
  }
  for (pid_t p : from) out.push_back({std::to_string(p), entry_ino(p, kBoth), S_IFREG});
  for (auto [s, r] : all) out.push_back({std::to_string(s) + "-to-" + std::to_string(r), view_ino(s, r), S_IFREG});
  return out;
}

Result<std::unique_ptr<Handle>> PidDir::open(uint64_t ino, bool can_read, bool can_write, bool nonblock,
                                             const Sender& caller) {
  const Name d = decode(ino);
  Result<std::shared_ptr<Mailbox>> box = Errc::perm;
  switch (d.what) {
    case Name::dir: return Errc::is_dir;
    case Name::none: return Errc::not_found;
    case Name::view: return Errc::perm;  // inspection only: messages go to their addressee
    case Name::any:
      if (can_write) return Errc::perm;
      box = direct_.any_box(caller);
      break;
    case Name::entry:
      if (can_read && can_write) return Errc::invalid;  // two links, one open file: pick a direction
      if ((d.kind == kTo && can_read) || (d.kind == kFrom && can_write)) return Errc::perm;
      box = can_write ? direct_.send_link(caller, d.n) : direct_.recv_link(d.n, caller);
      break;
  }
  if (!box) return box.error();
  auto h = (*box)->open(can_read, can_write, nonblock);
  if (can_write) {
    auto me = direct_.enroll_caller(caller);
    if (!me) return me.error();
    h->as = Sender{me->pid, caller.uid, caller.gid};
  }
  return h;
}

Result<std::shared_ptr<Mailbox>> PidDir::box_of(uint64_t ino, const Sender& caller) {
  const Name d = decode(ino);
  switch (d.what) {
    case Name::any: return direct_.any_box(caller);
    case Name::entry: return d.kind == kTo ? direct_.send_link(caller, d.n) : direct_.recv_link(d.n, caller);
    case Name::view: {
      if (!may_view(d.n, d.r, caller)) return Errc::not_found;
      for (auto& l : direct_.link_infos())
        if (l.from == d.n && l.to == d.r) return l.box;
      return Errc::no_data;
    }
    default: return Errc::no_data;
  }
}

Result<std::string> PidDir::getxattr(uint64_t ino, std::string_view name, const Sender& c) {
  if (!attr::in_namespace(name)) return Errc::no_data;
  if (ino == kPidDirIno) {
    if (name == attr::kLinks) return std::to_string(direct_.links());
    if (name == attr::kDiscarded) return std::to_string(direct_.discarded());
    return Errc::no_data;
  }
  auto box = box_of(ino, c);
  if (!box) return box.error();
  return mailbox_xattr(**box, name, c.pid);
}

Result<std::string> PidDir::listxattr(uint64_t ino) {
  if (ino != kPidDirIno) return mailbox_xattr_names();
  std::string out;
  for (const char* k : attr::kDirectory) out.append(k).push_back('\0');
  return out;
}

Errc PidDir::setxattr(uint64_t ino, std::string_view, std::string_view, const Sender&) {
  return ino == kPidDirIno ? Errc::not_supported : Errc::perm;  // links take the mount's defaults
}

Errc PidDir::removexattr(uint64_t, std::string_view name) {
  return !attr::in_namespace(name) ? Errc::no_data : Errc::perm;
}

}  // namespace mbx

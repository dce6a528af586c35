// SPDX-License-Identifier: MIT
#include "core/persist.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "base/unique_fd.h"

namespace mbx {

namespace {

std::string meta_path(const std::string& dir, uint64_t ino) { return dir + "/n" + std::to_string(ino); }

namespace attr = mailbox::attr;
// NUL-terminated: each key is the tail of its attribute's name.
const std::string_view kCapacity = attr::key(attr::kCapacity), kMaxMessage = attr::key(attr::kMaxMessage),
                       kFraming = attr::key(attr::kFraming), kTimeoutMs = attr::key(attr::kTimeoutMs),
                       kSendPriority = attr::key(attr::kSendPriority);

std::string format(const NodeMeta& m) {
  std::string s;
  auto line = [&](const char* k, const std::string& v) { s += std::string(k) + "=" + v + "\n"; };
  line("ino", std::to_string(m.ino));
  line("parent", std::to_string(m.parent));
  line("mode", std::to_string(m.mode));
  line("uid", std::to_string(m.uid));
  line("gid", std::to_string(m.gid));
  // The settings under their attributes' keys.
  line(kCapacity.data(), format_capacity(m.settings.capacity));
  line(kMaxMessage.data(), std::to_string(m.settings.max_message));
  line(kFraming.data(), framing_name(m.settings.framing));
  line(kTimeoutMs.data(), std::to_string(m.settings.timeout_ms));
  // Only when set: a record without it reads as before (and an older daemon skips it).
  if (m.settings.send_priority) line(kSendPriority.data(), std::to_string(m.settings.send_priority));
  line("name", m.name);  // names hold no control characters (check_name)
  return s;
}

// Parses format()'s output; false if anything is missing or malformed.
bool parse(std::string_view text, NodeMeta* m) {
  unsigned seen = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return false;
    std::string_view l = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    const size_t eq = l.find('=');
    if (eq == std::string_view::npos) return false;
    std::string_view k = l.substr(0, eq), v = l.substr(eq + 1);
    auto num = [&](auto* out, unsigned bit) {
      auto r = parse_u64(v);
      if (!r) return false;
      *out = static_cast<std::remove_pointer_t<decltype(out)>>(*r);
      seen |= bit;
      return true;
    };
    bool ok = true;
    if (k == "ino") ok = num(&m->ino, 1);
    else if (k == "parent") ok = num(&m->parent, 2);
    else if (k == "mode") ok = num(&m->mode, 4);
    else if (k == "uid") ok = num(&m->uid, 8);
    else if (k == "gid") ok = num(&m->gid, 16);
    else if (k == kMaxMessage) ok = num(&m->settings.max_message, 32);
    else if (k == kTimeoutMs) ok = num(&m->settings.timeout_ms, 64);
    else if (k == kCapacity || k == kFraming || k == kSendPriority) ok = apply_setting(m->settings, k, v) == Errc::ok;
    else if (k == "name") m->name = std::string(v), seen |= 128;
    if (!ok) return false;
  }
  return seen == 255 && (S_ISDIR(m->mode) || S_ISREG(m->mode)) && m->ino > 1 && !m->name.empty();
}

}  // namespace

Errc save_meta(const std::string& dir, const NodeMeta& m) {
  const std::string path = meta_path(dir, m.ino), tmp = path + ".tmp";
  const std::string text = format(m);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return from_errno(errno);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    const int e = errno ? errno : ENOSPC;
    ::unlink(tmp.c_str());
    return from_errno(e);
  }
  fd.reset();
  // The rename is atomic: a crash leaves the old record or the new one.
  if (::rename(tmp.c_str(), path.c_str()) != 0) return from_errno(errno);
  return Errc::ok;
}

void remove_meta(const std::string& dir, uint64_t ino) { ::unlink(meta_path(dir, ino).c_str()); }

std::vector<NodeMeta> load_meta(const std::string& dir, std::vector<std::string>* bad) {
  std::vector<NodeMeta> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 2 || name[0] != 'n' || name.find_first_not_of("0123456789", 1) != std::string::npos) continue;
    UniqueFd fd(::openat(::dirfd(d), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    char buf[4096];
    const ssize_t n = fd.valid() ? ::read(fd.get(), buf, sizeof buf) : -1;
    NodeMeta m;
    if (n > 0 && n < static_cast<ssize_t>(sizeof buf) && parse(std::string_view(buf, size_t(n)), &m) &&
        "n" + std::to_string(m.ino) == name)
      out.push_back(std::move(m));
    else if (bad) bad->push_back(name);
  }
  ::closedir(d);
  return out;
}

}  // namespace mbx

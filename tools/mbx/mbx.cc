// SPDX-License-Identifier: MIT
// mbx: send, receive, inspect and tidy mailboxfs mailboxes from the shell.
// Sends and receives go through libmailbox (the shared-memory fast path);
// settings and counters are the mailbox's user.mailbox.* attributes.
// Exit status: 0, or the errno of the failure (EINVAL for a usage error).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mailbox/mailbox.hpp"

namespace {

namespace attr = mailbox::attr;
constexpr std::string_view kPrefix = attr::kPrefix;
constexpr const char* kStateGlob = "mailboxfs-";  // state directories under /dev/shm

const char* usage_text =
    "usage: mbx send BOX [MSG|-] [--timeout T] [--nonblock] [--prio P]\n"
    "       mbx recv BOX [-n N] [--timeout T] [--nonblock] [--json]\n"
    "       mbx stat BOX... [--json]\n"
    "       mbx ls DIR [--json]\n"
    "       mbx set BOX KEY=VALUE...\n"
    "       mbx gc [--remove] [--json] [STATE_DIR...]\n"
    "T is seconds (0.5, 2) or milliseconds with 'ms' (500ms). See mbx(1).\n";

int fail(const std::string& what, int err) {
  std::fprintf(stderr, "mbx: %s: %s\n", what.c_str(), std::strerror(err));
  return err;
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "mbx: %s\n%s", why.c_str(), usage_text);
  return EINVAL;
}

// JSON string literal; bytes that are not printable ASCII become \u00XX.
std::string json_str(std::string_view s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c == '\n') {
      o += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

bool is_number(const std::string& v) {
  return !v.empty() && v.find_first_not_of("0123456789") == std::string::npos && v.size() < 20;
}

// An attribute value as JSON: numbers stay numbers, pid lists become arrays.
std::string json_value(const std::string& key, const std::string& v) {
  if (key == attr::key(attr::kBlockedSenders) || key == attr::key(attr::kBlockedReceivers)) {
    std::string o = "[";
    size_t i = 0;
    bool first = true;
    while (i < v.size()) {
      size_t j = v.find(' ', i);
      if (j == std::string::npos) j = v.size();
      if (j > i) {
        o += (first ? "" : ",") + v.substr(i, j - i);
        first = false;
      }
      i = j + 1;
    }
    return o + "]";
  }
  return is_number(v) ? v : json_str(v);
}

// The user.mailbox.* attributes of a path, in listxattr order (plus sender when this thread has one).
int read_attrs(const std::string& path, std::vector<std::pair<std::string, std::string>>& out) {
  ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
  if (n < 0) return errno;
  std::string names(static_cast<size_t>(n), '\0');
  n = ::listxattr(path.c_str(), names.data(), names.size());
  if (n < 0) return errno;
  names.resize(static_cast<size_t>(n));
  for (size_t i = 0; i < names.size();) {
    std::string name = names.c_str() + i;
    i += name.size() + 1;
    if (name.rfind(kPrefix, 0) != 0) continue;
    char buf[4096];
    ssize_t v = ::getxattr(path.c_str(), name.c_str(), buf, sizeof buf);
    if (v < 0) continue;  // vanished meanwhile
    out.emplace_back(name.substr(kPrefix.size()), std::string(buf, static_cast<size_t>(v)));
  }
  if (out.empty()) return ENOTSUP;  // not on a mailboxfs mount
  return 0;
}

// "2", "0.5" (seconds) or "500ms".
std::optional<std::chrono::milliseconds> parse_timeout(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || v < 0) return std::nullopt;
  std::string unit = end;
  if (unit == "ms") return std::chrono::milliseconds(static_cast<long long>(v));
  if (unit.empty() || unit == "s") return std::chrono::milliseconds(static_cast<long long>(v * 1000));
  return std::nullopt;
}

struct Args {
  std::vector<std::string> pos;
  std::optional<std::chrono::milliseconds> timeout;
  bool nonblock = false, json = false, remove = false;
  long long count = 1;
  unsigned prio = 0;  // send: 0..32767
};

int parse(int argc, char** argv, Args& a) {
  for (int i = 2; i < argc; i++) {
    std::string s = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (s == "--nonblock") {
      a.nonblock = true;
    } else if (s == "--json") {
      a.json = true;
    } else if (s == "--remove" || s == "-f") {
      a.remove = true;
    } else if (s == "--timeout" || s == "-t") {
      const char* v = value();
      if (!v || !(a.timeout = parse_timeout(v))) return usage_error("--timeout needs seconds or Nms");
    } else if (s == "--prio" || s == "-p") {
      const char* v = value();
      char* end = nullptr;
      const long long p = v ? std::strtoll(v, &end, 10) : -1;
      if (!v || *end || p < 0 || p > mailbox::kMaxPriority) return usage_error("--prio needs 0 to 32767");
      a.prio = static_cast<unsigned>(p);
    } else if (s == "-n") {
      const char* v = value();
      char* end = nullptr;
      if (!v || (a.count = std::strtoll(v, &end, 10)) < 0 || *end) return usage_error("-n needs a count");
    } else if (s == "--") {
      for (i++; i < argc; i++) a.pos.push_back(argv[i]);
    } else if (s.size() > 1 && s[0] == '-') {
      return usage_error("unknown option " + s);
    } else {
      a.pos.push_back(s);
    }
  }
  return 0;
}

int cmd_send(const Args& a) {
  if (a.pos.empty() || a.pos.size() > 2) return usage_error("send needs BOX and at most one MSG");
  std::string msg;
  if (a.pos.size() == 2 && a.pos[1] != "-") {
    msg = a.pos[1];
  } else {
    msg.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto m = mailbox::Mailbox::open(a.pos[0], {true, false, true});
  if (!m) return fail(a.pos[0], m.error());
  int e = a.nonblock  ? m->try_send(msg, a.prio)
          : a.timeout ? m->send_for(msg, a.prio, *a.timeout)
                      : m->send(msg, a.prio);
  return e ? fail(a.pos[0], e) : 0;
}

int cmd_recv(const Args& a) {
  if (a.pos.size() != 1) return usage_error("recv needs one BOX");
  auto m = mailbox::Mailbox::open(a.pos[0], {false, true, true});
  if (!m) return fail(a.pos[0], m.error());
  std::string msg;
  // -n 0: until an error (EAGAIN with --nonblock, ETIMEDOUT with --timeout).
  for (long long i = 0; a.count == 0 || i < a.count; i++) {
    int e = a.nonblock ? m->try_receive(msg) : a.timeout ? m->receive_for(msg, *a.timeout) : m->receive(msg);
    if (e) {
      if (a.count == 0 && (e == EAGAIN || e == ETIMEDOUT)) return 0;  // drained
      return fail(a.pos[0], e);
    }
    if (a.json) {
      const mailbox::Sender s = m->last_sender();
      std::printf("{\"message\":%s,\"pid\":%d,\"uid\":%u,\"gid\":%u,\"prio\":%u}\n", json_str(msg).c_str(), s.pid,
                  s.uid, s.gid, m->last_priority());
    } else {
      std::fwrite(msg.data(), 1, msg.size(), stdout);
    }
    std::fflush(stdout);
  }
  return 0;
}

int cmd_stat(const Args& a) {
  if (a.pos.empty()) return usage_error("stat needs at least one BOX");
  int status = 0;
  bool first = true;
  if (a.json) std::printf("{");
  for (const std::string& path : a.pos) {
    std::vector<std::pair<std::string, std::string>> attrs;
    if (int e = read_attrs(path, attrs)) {
      status = fail(path, e);
      continue;
    }
    if (a.json) {
      std::printf("%s%s:{", first ? "" : ",", json_str(path).c_str());
      for (size_t i = 0; i < attrs.size(); i++)
        std::printf("%s%s:%s", i ? "," : "", json_str(attrs[i].first).c_str(),
                    json_value(attrs[i].first, attrs[i].second).c_str());
      std::printf("}");
    } else {
      std::printf("%s%s:\n", first ? "" : "\n", path.c_str());
      for (auto& [k, v] : attrs) std::printf("  %-18s %s\n", k.c_str(), v.c_str());
    }
    first = false;
  }
  if (a.json) std::printf("}\n");
  return status;
}

int cmd_ls(const Args& a) {
  if (a.pos.size() > 1) return usage_error("ls takes one DIR");
  const std::string dir = a.pos.empty() ? "." : a.pos[0];
  DIR* d = ::opendir(dir.c_str());
  if (!d) return fail(dir, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  if (a.json) std::printf("[");
  else std::printf("%-24s %8s %10s %-9s %8s %8s\n", "NAME", "MESSAGES", "CAPACITY", "FRAMING", "BLK_SEND", "BLK_RECV");
  bool first = true;
  for (const std::string& n : names) {
    const std::string path = dir + "/" + n;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    std::vector<std::pair<std::string, std::string>> attrs;
    const bool is_dir = S_ISDIR(st.st_mode);
    if (!is_dir) read_attrs(path, attrs);
    auto get = [&](std::string_view k) -> std::string {
      for (auto& [key, v] : attrs)
        if (key == k) return v;
      return "";
    };
    auto words = [](const std::string& v) {
      size_t n = 0;
      for (size_t i = 0; i < v.size(); i++) n += v[i] != ' ' && (i == 0 || v[i - 1] == ' ');
      return n;
    };
    if (a.json) {
      std::printf("%s{\"name\":%s,\"type\":\"%s\"", first ? "" : ",", json_str(n).c_str(),
                  is_dir ? "directory" : "mailbox");
      for (auto& [k, v] : attrs) std::printf(",%s:%s", json_str(k).c_str(), json_value(k, v).c_str());
      std::printf("}");
    } else if (is_dir) {
      std::printf("%s/\n", n.c_str());
    } else {
      std::printf("%-24s %8s %10s %-9s %8zu %8zu\n", n.c_str(), get(attr::key(attr::kMessages)).c_str(),
                  get(attr::key(attr::kCapacity)).c_str(), get(attr::key(attr::kFraming)).c_str(),
                  words(get(attr::key(attr::kBlockedSenders))), words(get(attr::key(attr::kBlockedReceivers))));
    }
    first = false;
  }
  if (a.json) std::printf("]\n");
  return 0;
}

int cmd_set(const Args& a) {
  if (a.pos.size() < 2) return usage_error("set needs BOX and KEY=VALUE");
  for (size_t i = 1; i < a.pos.size(); i++) {
    const std::string& kv = a.pos[i];
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return usage_error("not KEY=VALUE: " + kv);
    const std::string name = std::string(kPrefix) + kv.substr(0, eq), value = kv.substr(eq + 1);
    if (::setxattr(a.pos[0].c_str(), name.c_str(), value.data(), value.size(), 0) != 0)
      return fail(a.pos[0] + ": " + kv.substr(0, eq), errno);
  }
  return 0;
}

// Bytes held by the files of a directory (one level: a state directory is flat).
unsigned long long dir_bytes(const std::string& dir) {
  unsigned long long sum = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      struct stat st;
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
        sum += static_cast<unsigned long long>(st.st_blocks) * 512;
    }
    ::closedir(d);
  }
  return sum;
}

// Removes a flat state directory (its files, then itself).
int remove_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return errno;
  int err = 0;
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    if (::unlinkat(::dirfd(d), e->d_name, 0) != 0 && !err) err = errno;
  }
  ::closedir(d);
  if (::rmdir(dir.c_str()) != 0 && !err) err = errno;
  return err;
}

// A live daemon holds an exclusive flock on its state directory's lock file
// for its whole life; whoever gets the lock knows none does.
int cmd_gc(const Args& a) {
  std::vector<std::string> dirs = a.pos;
  if (dirs.empty()) {
    DIR* d = ::opendir("/dev/shm");
    if (!d) return fail("/dev/shm", errno);
    while (dirent* e = ::readdir(d))
      if (std::strncmp(e->d_name, kStateGlob, std::strlen(kStateGlob)) == 0)
        dirs.push_back(std::string("/dev/shm/") + e->d_name);
    ::closedir(d);
    std::sort(dirs.begin(), dirs.end());
  }
  int status = 0;
  bool first = true;
  if (a.json) std::printf("[");
  for (const std::string& dir : dirs) {
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      status = fail(dir, ::lstat(dir.c_str(), &st) != 0 ? errno : ENOTDIR);
      continue;
    }
    int lock = ::open((dir + "/lock").c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    bool live = false;
    if (lock >= 0) {
      live = ::flock(lock, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    } else if (errno == EACCES) {
      status = fail(dir, EACCES);  // another user's: not ours to judge
      continue;
    }
    const unsigned long long bytes = dir_bytes(dir);
    const char* state = live ? "live" : a.remove ? "removed" : "stale";
    int err = 0;
    if (!live && a.remove) err = remove_dir(dir);  // still holding the lock: no daemon starts on it meanwhile
    if (lock >= 0) ::close(lock);
    if (err) {
      status = fail(dir, err);
      state = "stale";
    }
    if (a.json)
      std::printf("%s{\"dir\":%s,\"state\":\"%s\",\"uid\":%u,\"bytes\":%llu}", first ? "" : ",", json_str(dir).c_str(),
                  state, static_cast<unsigned>(st.st_uid), bytes);
    else std::printf("%-8s %10llu  %s\n", state, bytes, dir.c_str());
    first = false;
  }
  if (a.json) std::printf("]\n");
  if (!a.json && !a.remove && !dirs.empty())
    std::fprintf(stderr, "mbx: dry run; 'mbx gc --remove' removes the stale ones\n");
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage_error("no command");
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(usage_text, stdout);
    return 0;
  }
  Args a;
  if (int e = parse(argc, argv, a)) return e;
  if (cmd == "send") return cmd_send(a);
  if (cmd == "recv") return cmd_recv(a);
  if (cmd == "stat") return cmd_stat(a);
  if (cmd == "ls") return cmd_ls(a);
  if (cmd == "set") return cmd_set(a);
  if (cmd == "gc") return cmd_gc(a);
  return usage_error("unknown command " + cmd);
}

// SPDX-License-Identifier: MIT
#include "options.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "base/errc.h"
#include "core/settings.h"
#include "version.h"

namespace mbx {

namespace {

// Each of our -o options, by its fuse_opt key (its index here).
enum Key : int {
  kCapacity,
  kMaxMessage,
  kFraming,
  kTimeoutMs,
  kSendPriority,
  kMaxBytes,
  kUserMaxBytes,
  kStateDir,
  kRootMode,
  kBackend,
  kNamespace,
  kLeaseMs,
  kKeys
};
constexpr const char* kNames[kKeys] = {"capacity",      "max_message", "framing",        "timeout_ms",
                                       "send_priority", "max_bytes",   "user_max_bytes", "state_dir",
                                       "root_mode",     "backend",     "namespace",      "lease_ms"};

// Keys rather than offsets: the value is copied into a std::string, and a
// repeated option replaces the earlier value instead of leaking its strdup().
const fuse_opt kSpecs[] = {
    FUSE_OPT_KEY("capacity=", kCapacity),
    FUSE_OPT_KEY("max_message=", kMaxMessage),
    FUSE_OPT_KEY("framing=", kFraming),
    FUSE_OPT_KEY("timeout_ms=", kTimeoutMs),
    FUSE_OPT_KEY("send_priority=", kSendPriority),
    FUSE_OPT_KEY("max_bytes=", kMaxBytes),
    FUSE_OPT_KEY("user_max_bytes=", kUserMaxBytes),
    FUSE_OPT_KEY("state_dir=", kStateDir),
    FUSE_OPT_KEY("root_mode=", kRootMode),
    FUSE_OPT_KEY("backend=", kBackend),
    FUSE_OPT_KEY("namespace=", kNamespace),
    FUSE_OPT_KEY("lease_ms=", kLeaseMs),
    FUSE_OPT_END,
};

// What the command line says, before any value is checked.
struct Raw {
  std::optional<std::string> value[kKeys];
  std::optional<std::string> first_arg;  // mount(8) passes "SOURCE MOUNTPOINT": a source is ignored
  int positional = 0;
};

// Takes our options; holds back the first positional argument: with a second one it was the source.
int collect(void* data, const char* arg, int key, fuse_args*) {
  auto* raw = static_cast<Raw*>(data);
  if (key >= 0 && key < kKeys) {
    raw->value[key] = std::strchr(arg, '=') + 1;  // the template ends in '='
    return 0;
  }
  if (key != FUSE_OPT_KEY_NONOPT || raw->positional++ > 0) return 1;
  raw->first_arg = arg;
  return 0;
}

uint64_t default_max_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
  uint64_t quarter = pages > 0 && psize > 0 ? uint64_t(pages) * uint64_t(psize) / 4 : 1ull << 30;
  return std::min<uint64_t>(1ull << 30, quarter);
}

OptionError bad_option(Key k, const std::string& value, const char* expected) {
  return {std::string("mailboxfs: invalid value '") + value + "' for -o " + kNames[k] + " (expected " + expected + ")"};
}

// The per-mailbox defaults, each parsed as its user.mailbox.* xattr is.
struct SettingOption {
  Key key;
  const char* expected;
};
constexpr SettingOption kSettings[] = {
    {kCapacity, "a number of messages or 'unbounded'"}, {kMaxMessage, "a size from 1 to 256M"},
    {kFraming, "file, datagram, line or line_batch"},   {kTimeoutMs, "milliseconds, 0 for none"},
    {kSendPriority, "a priority from 0 to 32767"},
};

// Checks the values in the order the options are documented; the first bad one is reported.
std::optional<OptionError> check(const Raw& raw, DaemonOptions& d) {
  for (const SettingOption& s : kSettings) {
    const auto& v = raw.value[s.key];
    if (v && apply_setting(d.defaults, kNames[s.key], *v) != Errc::ok) return bad_option(s.key, *v, s.expected);
  }
  d.max_bytes = default_max_bytes();
  if (const auto& v = raw.value[kMaxBytes]) {
    auto n = parse_size(*v);
    if (!n || *n < 4096) return bad_option(kMaxBytes, *v, "a size of at least 4K");
    d.max_bytes = *n;
    d.max_bytes_given = true;
  }
  if (const auto& v = raw.value[kUserMaxBytes]) {
    auto n = parse_size(*v);
    if (!n || *n == 0) return bad_option(kUserMaxBytes, *v, "a size of at least 1");
    d.user_max_bytes = *n;
  }
  if (const auto& v = raw.value[kRootMode]) {
    char* end = nullptr;
    unsigned long m = std::strtoul(v->c_str(), &end, 8);
    if (v->empty() || *end || m > 07777) return bad_option(kRootMode, *v, "an octal mode");
    d.root_mode = static_cast<mode_t>(m);
  }
  d.state_dir = raw.value[kStateDir];
  if (const auto& v = raw.value[kBackend]) {
    auto ep = redis::parse_url(*v);
    if (!ep) return bad_option(kBackend, *v, "redis://HOST[:PORT][/DB] or redis+unix:///PATH[?db=N]");
    d.backend = *ep;
  }
  if (const auto& v = raw.value[kNamespace]) {
    if (v->empty() || v->size() > 64 || v->find_first_of(" {}:/") != std::string::npos)
      return bad_option(kNamespace, *v, "a name of 1 to 64 bytes without spaces, braces, ':' or '/'");
    if (!d.backend) return OptionError{"mailboxfs: -o namespace needs -o backend=redis://..."};
    d.ns = *v;
  }
  if (const auto& v = raw.value[kLeaseMs]) {
    // At least 1 s: a renewal is made on the re-check tick and may take the 1 s command timeout.
    char* end = nullptr;
    errno = 0;
    const unsigned long long ms = std::strtoull(v->c_str(), &end, 10);
    if (v->empty() || !std::isdigit(static_cast<unsigned char>((*v)[0])) || *end || errno || ms < 1000 || ms > 3600000)
      return bad_option(kLeaseMs, *v, "milliseconds from 1000 to 3600000");
    if (!d.backend) return OptionError{"mailboxfs: -o lease_ms needs -o backend=redis://..."};
    d.lease_ms = ms;
  }
  // A per-user total spans mailboxes in different hash slots: no one
  // server-side step can check and charge it, so a Redis mount refuses it.
  if (d.backend && d.user_max_bytes)
    return OptionError{
        "mailboxfs: -o user_max_bytes cannot be enforced across the daemons of a Redis mount "
        "(-o backend=...): not supported"};
  // One list per mailbox in send order: a Redis mailbox keeps no priorities
  // (its setxattr is refused with EOPNOTSUPP), so neither may the default.
  if (d.backend && d.defaults.send_priority > 0)
    return OptionError{
        "mailboxfs: -o send_priority above 0 cannot be kept by a Redis mount (-o backend=...): not supported"};
  if (raw.value[kMaxMessage] && d.defaults.max_message > d.max_bytes) {
    return OptionError{"mailboxfs: max_message (" + std::to_string(d.defaults.max_message) + ") exceeds max_bytes (" +
                       std::to_string(d.max_bytes) + ")"};
  }
  return std::nullopt;
}

}  // namespace

std::variant<DaemonOptions, OptionError> parse_options(fuse_args& args) {
  Raw raw;
  if (fuse_opt_parse(&args, &raw, kSpecs, collect) != 0) return OptionError{};  // libfuse said why
  if (raw.positional == 1 && fuse_opt_add_arg(&args, raw.first_arg->c_str()) != 0) return OptionError{};
  DaemonOptions d;
  if (auto e = check(raw, d)) return *e;

  fuse_cmdline_opts cmd{};
  const int rc = fuse_parse_cmdline(&args, &cmd);
  if (cmd.mountpoint) d.mountpoint = cmd.mountpoint;
  free(cmd.mountpoint);
  if (rc != 0) return OptionError{};  // libfuse said why
  d.show_help = cmd.show_help;
  d.show_version = cmd.show_version;
  d.foreground = cmd.foreground;
  d.singlethread = cmd.singlethread;
  d.clone_fd = cmd.clone_fd;
  d.max_threads = cmd.max_threads;
  d.max_idle_threads = cmd.max_idle_threads;
  if (!d.show_help && !d.show_version && d.mountpoint.empty())
    return OptionError{"mailboxfs: no mountpoint given (see mailboxfs --help)"};
  return d;
}

void print_help(const char* prog) {
  std::printf(
      "usage: %s [options] [SOURCE] MOUNTPOINT\n"
      "\n"
      "Mounts a filesystem where every regular file is a mailbox (a message port):\n"
      "write sends a message, read receives one and blocks while the mailbox is empty.\n"
      "Unmount with 'fusermount3 -u MOUNTPOINT' (or umount, as root). SOURCE, as\n"
      "mount(8) passes it ('mount -t fuse.mailboxfs mailboxfs MOUNTPOINT'), is ignored.\n"
      "\n"
      "mailboxfs options (-o name=value; mount-wide defaults for new mailboxes,\n"
      "each changeable per mailbox through the user.mailbox.* xattr of that name):\n"
      "    -o capacity=N|unbounded  messages a mailbox holds; 0 = rendezvous (default 64)\n"
      "    -o max_message=SIZE      largest message in bytes, K/M/G suffixes (default 1M)\n"
      "    -o framing=MODE          file | datagram | line | line_batch (default file)\n"
      "    -o timeout_ms=MS         blocked calls fail with ETIMEDOUT after MS; 0 = never\n"
      "    -o send_priority=N       priority of what each open file sends, 0..32767\n"
      "                             (default 0; refused above 0 with -o backend=)\n"
      "mount-wide options:\n"
      "    -o max_bytes=SIZE        memory quota for all queued messages (default 1G or\n"
      "                             a quarter of RAM, whichever is smaller)\n"
      "    -o user_max_bytes=SIZE   most one user may have queued and unsent through\n"
      "                             the filesystem (EDQUOT past it; default no limit)\n"
      "    -o state_dir=DIR         where the shared-memory segments live\n"
      "                             (default /dev/shm/mailboxfs-UID-HASH, mode 0700)\n"
      "    -o root_mode=OCTAL       mode of the mount's root directory (default 0755;\n"
      "                             1777 lets every user create mailboxes)\n"
      "    -o backend=URL           keep the mailboxes on a Redis server, shared by every\n"
      "                             daemon with the same URL and namespace:\n"
      "                             redis://HOST[:PORT][/DB] or redis+unix:///PATH\n"
      "    -o namespace=NAME        which tree of mailboxes on that server (default\n"
      "                             'default')\n"
      "    -o lease_ms=MS           a daemon silent for MS is dead: the others put back\n"
      "                             the messages it was delivering (default 10000)\n"
      "    -o allow_other           let other users use the mount (their access is\n"
      "                             decided by mode bits: default_permissions is always on)\n"
      "\n"
      "See mailboxfs(8).\n"
      "\n",
      prog);
  std::printf("FUSE options:\n");
  fuse_cmdline_help();
  fuse_lowlevel_help();
}

void print_version() {
  std::printf("mailboxfs %s\n", MAILBOXFS_VERSION);
  fuse_lowlevel_version();
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
// The daemon's command line: mailboxfs's own -o options and libfuse's
// (-f, -s, -d, --help, -V, max_threads, the mountpoint) as plain values.
#pragma once
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "core/settings.h"
#include "redis/url.h"

namespace mbx {

struct DaemonOptions {
  Settings defaults;             // for new mailboxes: capacity, max_message, framing, timeout_ms, send_priority
  uint64_t max_bytes = 0;        // -o max_bytes, else min(1G, a quarter of RAM)
  bool max_bytes_given = false;  // only a default quota is cut down to the state directory's free space
  uint64_t user_max_bytes = 0;   // 0 = no per-user bound
  mode_t root_mode = 0755;
  std::optional<std::string> state_dir;    // unset: the default for the mountpoint
  std::optional<redis::Endpoint> backend;  // -o backend=redis://...; unset: shared memory
  std::string ns = "default";              // -o namespace (Redis mounts)
  uint64_t lease_ms = 10000;               // -o lease_ms (Redis mounts): RedisConfig::lease
  // From libfuse's fuse_parse_cmdline().
  std::string mountpoint;  // absolute (libfuse resolved it); empty only with help or version
  bool show_help = false;
  bool show_version = false;
  bool foreground = false;
  bool singlethread = false;
  bool clone_fd = false;
  unsigned max_threads = 10;
  unsigned max_idle_threads = UINT_MAX;  // UINT_MAX: libfuse's default
};

// A command line the daemon refuses: exit with status 2.
struct OptionError {
  std::string message;  // one line for stderr, without '\n'; empty when libfuse printed its own
};

// Takes the options above out of `args`; what is left (allow_other, -o
// options mailboxfs does not know) is for fuse_session_new(). Values for
// per-mailbox settings go through apply_setting(), as their xattrs do.
std::variant<DaemonOptions, OptionError> parse_options(fuse_args& args);

// --help: the usage text, then libfuse's options.
void print_help(const char* prog);
// -V, --version: ours, then libfuse's.
void print_version();

}  // namespace mbx

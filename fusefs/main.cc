// SPDX-License-Identifier: MIT
// mailboxfs: mount a directory where every file is a mailbox.
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/fault.h"
#include "core/daemon.h"
#include "fuse_ops.h"
#include "base/log.h"
#include "version.h"

namespace {

// During teardown: the first SIGTERM/SIGINT/SIGHUP is absorbed, the next one
// takes its default action (async-signal-safe: an atomic, signal(), raise()).
volatile std::sig_atomic_t late_signals = 0;
void absorb_first_signal(int sig) {
  late_signals = late_signals + 1;  // only this handler writes it; signals are not nested here
  if (late_signals < 2) return;
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// Filled by fuse_opt_parse, which strdup()s each value.
struct Options {
  char* capacity = nullptr;
  char* max_message = nullptr;
  char* framing = nullptr;
  char* timeout_ms = nullptr;
  char* max_bytes = nullptr;
  char* state_dir = nullptr;
  char* root_mode = nullptr;
  char* user_max_bytes = nullptr;
  char* first_arg = nullptr;  // mount(8) passes "SOURCE MOUNTPOINT": a source is ignored
  int positional = 0;
  ~Options() {
    for (char* p : {capacity, max_message, framing, timeout_ms, max_bytes, state_dir, root_mode, user_max_bytes,
                    first_arg})
      free(p);
  }
};

#define MBX_OPT(t, f) {t, offsetof(Options, f), 0}
const fuse_opt kSpecs[] = {
    MBX_OPT("capacity=%s", capacity),     MBX_OPT("max_message=%s", max_message),
    MBX_OPT("framing=%s", framing),       MBX_OPT("timeout_ms=%s", timeout_ms),
    MBX_OPT("max_bytes=%s", max_bytes),   MBX_OPT("state_dir=%s", state_dir),
    MBX_OPT("root_mode=%s", root_mode),   MBX_OPT("user_max_bytes=%s", user_max_bytes),
    FUSE_OPT_END,
};

// Holds back the first positional argument: with a second one it was the source.
int keep_arg(void* data, const char* arg, int key, fuse_args*) {
  auto* o = static_cast<Options*>(data);
  if (key != FUSE_OPT_KEY_NONOPT || o->positional++ > 0) return 1;
  o->first_arg = strdup(arg);
  return 0;
}

void usage(const char* prog) {
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
      "mount-wide options:\n"
      "    -o max_bytes=SIZE        memory quota for all queued messages (default 1G or\n"
      "                             a quarter of RAM, whichever is smaller)\n"
      "    -o user_max_bytes=SIZE   most one user may have queued and unsent through\n"
      "                             the filesystem (EDQUOT past it; default no limit)\n"
      "    -o state_dir=DIR         where the shared-memory segments live\n"
      "                             (default /dev/shm/mailboxfs-UID-HASH, mode 0700)\n"
      "    -o root_mode=OCTAL       mode of the mount's root directory (default 0755;\n"
      "                             1777 lets every user create mailboxes)\n"
      "    -o allow_other           let other users use the mount (their access is\n"
      "                             decided by mode bits: default_permissions is always on)\n"
      "\n"
      "See mailboxfs(8).\n"
      "\n",
      prog);
}

uint64_t default_max_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
  uint64_t quarter = pages > 0 && psize > 0 ? uint64_t(pages) * uint64_t(psize) / 4 : 1ull << 30;
  return std::min<uint64_t>(1ull << 30, quarter);
}

[[noreturn]] void bad_option(const char* name, const char* value, const char* expected) {
  std::fprintf(stderr, "mailboxfs: invalid value '%s' for -o %s (expected %s)\n", value, name, expected);
  std::exit(2);
}

// A mountpoint whose daemon died answers ENOTCONN: detach it so we can mount again.
bool recover_dead_mount(const char* mp) {
  struct stat st;
  struct statvfs sv;
  // statfs always reaches the file system; stat may be answered from the
  // kernel's attribute cache of the root, dead daemon or not.
  if (::statvfs(mp, &sv) == 0 || errno != ENOTCONN) return true;
  mbx::log(mbx::LogLevel::warning, "%s was left by a daemon that died; unmounting it", mp);
  if (::umount2(mp, MNT_DETACH) == 0) return true;
  pid_t pid = fork();
  if (pid == 0) {
    execlp("fusermount3", "fusermount3", "-u", "-z", mp, static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return false;
  return ::stat(mp, &st) == 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  fuse_cmdline_opts cmd{};
  // libfuse's allocations are given back whichever way main() returns.
  struct Release {
    fuse_args& args;
    fuse_cmdline_opts& cmd;
    ~Release() {
      free(cmd.mountpoint);
      fuse_opt_free_args(&args);
    }
  } release{args, cmd};
  Options o;
  if (fuse_opt_parse(&args, &o, kSpecs, keep_arg) != 0) return 2;
  if (o.positional == 1 && fuse_opt_add_arg(&args, o.first_arg) != 0) return 2;
  mbx::log_to_stderr();  // until daemonized

  mbx::MountConfig cfg;
  cfg.max_bytes = default_max_bytes();
  if (o.capacity) {
    auto v = mbx::parse_capacity(o.capacity);
    if (!v) bad_option("capacity", o.capacity, "a number of messages or 'unbounded'");
    cfg.defaults.capacity = *v;
  }
  if (o.max_message) {
    auto v = mbx::parse_size(o.max_message);
    if (!v || *v == 0 || *v > mbx::kMaxMessageLimit)
      bad_option("max_message", o.max_message, "a size from 1 to 256M");
    cfg.defaults.max_message = *v;
  }
  if (o.framing) {
    auto v = mbx::parse_framing(o.framing);
    if (!v) bad_option("framing", o.framing, "file, datagram, line or line_batch");
    cfg.defaults.framing = *v;
  }
  if (o.timeout_ms) {
    mbx::Settings s;
    if (mbx::apply_setting(s, "timeout_ms", o.timeout_ms) != mbx::Errc::ok)
      bad_option("timeout_ms", o.timeout_ms, "milliseconds, 0 for none");
    cfg.defaults.timeout_ms = s.timeout_ms;
  }
  if (o.max_bytes) {
    auto v = mbx::parse_size(o.max_bytes);
    if (!v || *v < 4096) bad_option("max_bytes", o.max_bytes, "a size of at least 4K");
    cfg.max_bytes = *v;
  }
  if (o.user_max_bytes) {
    auto v = mbx::parse_size(o.user_max_bytes);
    if (!v || *v == 0) bad_option("user_max_bytes", o.user_max_bytes, "a size of at least 1");
    cfg.user_max_bytes = *v;
  }
  mode_t root_mode = 0755;
  if (o.root_mode) {
    char* end = nullptr;
    unsigned long m = std::strtoul(o.root_mode, &end, 8);
    if (!*o.root_mode || *end || m > 07777) bad_option("root_mode", o.root_mode, "an octal mode");
    root_mode = static_cast<mode_t>(m);
  }
  if (o.max_message && cfg.defaults.max_message > cfg.max_bytes) {
    std::fprintf(stderr, "mailboxfs: max_message (%llu) exceeds max_bytes (%llu)\n",
                 static_cast<unsigned long long>(cfg.defaults.max_message),
                 static_cast<unsigned long long>(cfg.max_bytes));
    return 2;
  }

  if (fuse_parse_cmdline(&args, &cmd) != 0) return 2;
  if (cmd.show_help) {
    usage(argv[0]);
    std::printf("FUSE options:\n");
    fuse_cmdline_help();
    fuse_lowlevel_help();
    return 0;
  }
  if (cmd.show_version) {
    std::printf("mailboxfs %s\n", MAILBOXFS_VERSION);
    fuse_lowlevel_version();
    return 0;
  }
  if (!cmd.mountpoint) {
    std::fprintf(stderr, "mailboxfs: no mountpoint given (see mailboxfs --help)\n");
    return 2;
  }
  if (!recover_dead_mount(cmd.mountpoint)) {
    std::fprintf(stderr, "mailboxfs: cannot recover dead mount %s; try 'fusermount3 -u -z %s'\n",
                 cmd.mountpoint, cmd.mountpoint);
    return 1;
  }
  char real[PATH_MAX];
  if (!realpath(cmd.mountpoint, real)) {
    std::fprintf(stderr, "mailboxfs: %s: %s\n", cmd.mountpoint, std::strerror(errno));
    return 1;
  }
  cfg.state_dir = o.state_dir ? o.state_dir : mbx::default_state_dir(real);
  if (cfg.state_dir[0] != '/') {  // the daemon changes to / when it detaches
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd)) cfg.state_dir = std::string(cwd) + "/" + cfg.state_dir;
  }
  // Segments are sparse: a store into a page the state directory's filesystem
  // cannot provide kills the daemon with SIGBUS. Keep the quota within reach.
  const std::string parent = cfg.state_dir.substr(0, cfg.state_dir.rfind('/') + 1);
  struct statvfs fsinfo;
  if (statvfs(parent.c_str(), &fsinfo) == 0) {
    const uint64_t avail = uint64_t(fsinfo.f_bavail) * fsinfo.f_frsize;
    if (!o.max_bytes) {
      cfg.max_bytes = std::min(cfg.max_bytes, std::max<uint64_t>(avail / 2, 1u << 20));
    } else if (cfg.max_bytes > avail) {
      mbx::log(mbx::LogLevel::warning, "warning: max_bytes (%llu) exceeds the free space of %s (%llu)",
                   static_cast<unsigned long long>(cfg.max_bytes), parent.c_str(),
                   static_cast<unsigned long long>(avail));
    }
  }
  if (cfg.defaults.max_message > cfg.max_bytes) cfg.defaults.max_message = cfg.max_bytes;

  auto daemon = mbx::Daemon::open(cfg, root_mode, getuid(), getgid());
  if (!daemon) {
    if (daemon.error() == mbx::Errc::exists)
      mbx::log(mbx::LogLevel::error, "state directory %s is in use by another mailboxfs",
                   cfg.state_dir.c_str());
    else
      mbx::log(mbx::LogLevel::error, "state directory %s: %s", cfg.state_dir.c_str(),
                   std::strerror(mbx::to_errno(daemon.error())));
    return 1;
  }
  mbx::install_segment_fault_handler(cfg.state_dir);  // a truncated or unbacked segment page
  mbx::Mount& mount = (*daemon)->mount();
  mbx::Fs fs{&(*daemon)->router()};

  fuse_opt_add_arg(&args, "-odefault_permissions,fsname=mailboxfs,subtype=mailboxfs");
  const fuse_lowlevel_ops& ops = mbx::fuse_operations();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &fs);
  if (!se) {  // libfuse printed which option it did not know
    if (mount.restored()) mount.keep_state();
    return 2;
  }
  mbx::FuseKernelCache kernel(se);
  mount.set_kernel(&kernel);
  int status = 1;  // until mounted
  bool mounted = false;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, real) == 0) {
      mounted = true;
      int rc;
      fuse_daemonize(cmd.foreground);
      if (!cmd.foreground) mbx::log_to_syslog();  // stderr is /dev/null now
      // Re-attached only once mounted: a failed mount must not consume them.
      if (mount.restored()) {
        const auto r = (*daemon)->restore();
        mbx::log(mbx::LogLevel::notice,
                 "re-attached %llu mailboxes (%llu messages) and %llu directories left in %s"
                 " by a daemon that died%s",
                 static_cast<unsigned long long>(r.mailboxes), static_cast<unsigned long long>(r.messages),
                 static_cast<unsigned long long>(r.directories), cfg.state_dir.c_str(),
                 r.dropped ? "; dropped some records that no longer fit" : "");
      }
      (*daemon)->start();
      if (cmd.singlethread) {
        rc = fuse_session_loop(se);
      } else {
        fuse_loop_config* lc = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(lc, cmd.clone_fd);
        fuse_loop_cfg_set_max_threads(lc, cmd.max_threads);
        if (cmd.max_idle_threads != UINT_MAX) fuse_loop_cfg_set_idle_threads(lc, cmd.max_idle_threads);
        rc = fuse_session_loop_mt(se, lc);
        fuse_loop_cfg_destroy(lc);
      }
      // Tearing down (parked calls ended, segments and the state directory
      // removed by the destructors below) takes a moment; one SIGTERM or
      // Ctrl-C then (a script that unmounts and then kills) must not cut it
      // short and leave the state directory behind, but a second one stops
      // a teardown that hangs (a library process stopped while it holds a
      // segment lock). Replacing libfuse's handlers leaves no moment with
      // the default action.
      for (int sig : {SIGTERM, SIGINT, SIGHUP}) std::signal(sig, absorb_first_signal);
      (*daemon)->shutdown();  // parked calls end before the connection goes
      fuse_session_unmount(se);
      status = rc < 0 ? 1 : 0;  // a signal (SIGTERM, SIGINT) ending the loop is a clean stop
    }
    fuse_remove_signal_handlers(se);  // leaves alone the ones set above
  }
  // A dead daemon's state this one never mounted to re-attach stays for the next attempt.
  if (!mounted && mount.restored()) mount.keep_state();
  fuse_session_destroy(se);
  return status;
}

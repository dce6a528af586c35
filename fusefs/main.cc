// SPDX-License-Identifier: MIT
// mailboxfs: mount a directory where every file is a mailbox.
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <variant>

#include "base/fault.h"
#include "base/log.h"
#include "core/daemon.h"
#include "fuse_ops.h"
#include "options.h"

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
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return false;
  return ::stat(mp, &st) == 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  // libfuse's allocations are given back whichever way main() returns.
  struct Release {
    fuse_args& args;
    ~Release() { fuse_opt_free_args(&args); }
  } release{args};
  mbx::log_to_stderr();  // until daemonized
  auto parsed = mbx::parse_options(args);
  if (const auto* e = std::get_if<mbx::OptionError>(&parsed)) {
    if (!e->message.empty()) std::fprintf(stderr, "%s\n", e->message.c_str());
    return 2;
  }
  const mbx::DaemonOptions& opt = std::get<mbx::DaemonOptions>(parsed);
  if (opt.show_help) {
    mbx::print_help(argv[0]);
    return 0;
  }
  if (opt.show_version) {
    mbx::print_version();
    return 0;
  }

  mbx::MountConfig cfg;
  cfg.max_bytes = opt.max_bytes;
  cfg.user_max_bytes = opt.user_max_bytes;
  cfg.defaults = opt.defaults;
  if (opt.backend) {
    cfg.redis.emplace();
    cfg.redis->endpoint = *opt.backend;
    cfg.redis->ns = opt.ns;
    cfg.redis->lease = std::chrono::milliseconds(opt.lease_ms);
  }
  const char* mountpoint = opt.mountpoint.c_str();
  if (!recover_dead_mount(mountpoint)) {
    std::fprintf(stderr, "mailboxfs: cannot recover dead mount %s; try 'fusermount3 -u -z %s'\n", mountpoint,
                 mountpoint);
    return 1;
  }
  char real[PATH_MAX];
  if (!realpath(mountpoint, real)) {
    std::fprintf(stderr, "mailboxfs: %s: %s\n", mountpoint, std::strerror(errno));
    return 1;
  }
  cfg.state_dir = opt.state_dir ? *opt.state_dir : mbx::default_state_dir(real);
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
    if (!opt.max_bytes_given) {
      cfg.max_bytes = std::min(cfg.max_bytes, std::max<uint64_t>(avail / 2, 1u << 20));
    } else if (cfg.max_bytes > avail) {
      mbx::log(mbx::LogLevel::warning, "warning: max_bytes (%llu) exceeds the free space of %s (%llu)",
               static_cast<unsigned long long>(cfg.max_bytes), parent.c_str(), static_cast<unsigned long long>(avail));
    }
  }
  if (cfg.defaults.max_message > cfg.max_bytes) cfg.defaults.max_message = cfg.max_bytes;

  auto daemon = mbx::Daemon::open(cfg, opt.root_mode, getuid(), getgid());
  if (!daemon) {
    if (cfg.redis && daemon.error() == mbx::Errc::io)
      mbx::log(mbx::LogLevel::error, "redis %s does not answer", cfg.redis->endpoint.text().c_str());
    else if (daemon.error() == mbx::Errc::exists)
      mbx::log(mbx::LogLevel::error, "state directory %s is in use by another mailboxfs", cfg.state_dir.c_str());
    else
      mbx::log(mbx::LogLevel::error, "state directory %s: %s", cfg.state_dir.c_str(),
               std::strerror(mbx::to_errno(daemon.error())));
    return 1;
  }
  mbx::install_segment_fault_handler(cfg.state_dir);  // a truncated or unbacked segment page
  mbx::Mount& mount = (*daemon)->mount();
  mbx::Fs fs{&(*daemon)->router()};
  fs.shared_names = cfg.redis.has_value();

  fuse_opt_add_arg(&args, "-odefault_permissions,fsname=mailboxfs,subtype=mailboxfs");
  const fuse_lowlevel_ops& ops = mbx::fuse_operations();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &fs);
  if (!se) {  // libfuse printed which option it did not know
    if (mount.restored()) mount.keep_state();
    return 2;
  }
  fs.se = se;
  mbx::FuseKernelCache kernel(se);
  mount.set_kernel(&kernel);
  int status = 1;  // until mounted
  bool mounted = false;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, real) == 0) {
      mounted = true;
      int rc;
      fuse_daemonize(opt.foreground);
      if (!opt.foreground) mbx::log_to_syslog();  // stderr is /dev/null now
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
      if (opt.singlethread) {
        rc = fuse_session_loop(se);
      } else {
        fuse_loop_config* lc = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(lc, opt.clone_fd);
        fuse_loop_cfg_set_max_threads(lc, opt.max_threads);
        if (opt.max_idle_threads != UINT_MAX) fuse_loop_cfg_set_idle_threads(lc, opt.max_idle_threads);
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
    // It put SIGPIPE back to its default: a Redis connection still in use
    // by the teardown (lib/redis/conn.cc counts on SIGPIPE being ignored)
    // must not kill the daemon.
    std::signal(SIGPIPE, SIG_IGN);
  }
  // A dead daemon's state this one never mounted to re-attach stays for the next attempt.
  if (!mounted && mount.restored()) mount.keep_state();
  fuse_session_destroy(se);
  return status;
}

// SPDX-License-Identifier: MIT
// Mount-test harness: a real daemon on a temporary directory, and real
// programs (bash, coreutils, python3) run as separate processes with deadlines.
//
// No test may depend on timing. A "still blocked" check waits for proof that
// the call is blocked (the child's readiness line, then the kernel's wchan or
// the mailbox's blocked_* list), and every deadline is a hang guard (kHang),
// never a claim about speed. `python3` is $MBX_PYTHON when that is set.
#pragma once
#include <sys/types.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

namespace mt {

// Hang guard for every wait: only a hang reaches it, on however loaded a machine.
constexpr int kHang = 20000;

// The line a child prints on stderr just before the call that blocks:
// `echo @ready >&2` in bash, print('@ready', file=sys.stderr, flush=True) in
// python. Proc counts these lines and drops them from the captured stderr.
constexpr const char* kReadyLine = "@ready";
constexpr const char* kReadySh = "echo @ready >&2; ";

// Where a blocked call sleeps in the kernel (/proc/<tid>/wchan).
enum class Sleep {
  fuse,   // a FUSE request the daemon has not answered (request_wait_answer)
  futex,  // libmailbox waiting on a segment's futex
  poll,   // poll(), select(), epoll_wait()
  any,    // anything but running (e.g. a lock inside the kernel)
};

// Waits until `pid`, one of its threads or one of its descendants sleeps on
// `on`. False if none is left alive, or at the hang guard.
bool wait_sleeping(pid_t pid, Sleep on, int ms = kHang);

// Waits until the one thread `tid` (of any process) sleeps on `on`; for a
// call made by the test process itself, watched from another thread or process.
bool wait_task_sleeping(pid_t tid, Sleep on, int ms = kHang);

// `pid`, its threads and its descendants' (their thread ids).
std::vector<pid_t> process_tree(pid_t pid);

// Result of a finished child process.
struct Run {
  int status = -1;         // exit status, or 128+signal
  bool timed_out = false;  // killed at the deadline
  std::string out, err;
};

// A bash script running in its own process group, its output captured.
class Proc {
 public:
  // `env` entries are "NAME=value" added to the environment.
  explicit Proc(const std::string& script, const std::string& cwd = "", const std::vector<std::string>& env = {});
  ~Proc();  // kills the whole group if still running
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  pid_t pid() const { return pid_; }
  // True once the process has exited (it is then reaped); false at the hang guard.
  bool exits(int ms = kHang) { return exits_within(ms); }
  // Same, with an explicit guard: only for a guard, never to show a call blocks.
  bool exits_within(int ms);
  // Waits until the child has printed its `n`th readiness line (false if it
  // exited first, or at the hang guard).
  bool wait_ready(int n = 1, int ms = kHang);
  // The proof that a call blocks: the `n`th readiness line, then the process
  // (or a thread or descendant) asleep on `on`.
  bool wait_blocked(Sleep on = Sleep::fuse, int n = 1, int ms = kHang);
  // Waits up to `ms`, then kills the group; returns what it printed.
  Run finish(int ms = kHang);
  void signal(int sig);        // to the bash process itself
  void signal_group(int sig);  // to its whole process group
  bool running();

 private:
  void drain(int ms);
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  bool reaped_ = false;
  int status_ = -1;
  int ready_ = 0;  // readiness lines seen
  std::string out_, err_;
};

// Runs a bash script to completion (or its deadline).
Run sh(const std::string& script, int timeout_ms = kHang, const std::string& cwd = "");

// A bash script that prints its readiness line, then runs `body` round after
// round until SIGUSR1 and ends with the round under way: a watcher or
// background traffic for exactly as long as a test's own traffic lasts, where
// a fixed count of rounds ends too soon on a loaded machine and runs on for
// nothing on an idle one. Proc::wait_ready() before, signal(SIGUSR1) and finish() after.
std::string until_usr1(const std::string& body);

// One mounted mailboxfs on a fresh temporary directory. Unmounts, kills only
// its own daemon, and removes its state on destruction, whatever happened.
class Mount {
 public:
  explicit Mount(const std::string& options = "");
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  bool ok() const { return ok_; }
  const std::string& dir() const { return mnt_; }
  std::string path(const std::string& name) const { return mnt_ + "/" + name; }
  const std::string& state_dir() const { return state_; }
  pid_t daemon_pid() const { return pid_; }
  // Runs a script with the mount as working directory.
  Run sh(const std::string& script, int timeout_ms = kHang) const;
  std::string daemon_stderr() const;
  // Value of user.mailbox.<name> of mailbox `file` ("" if unreadable).
  std::string xattr(const std::string& file, const std::string& name) const;
  // Waits until user.mailbox.<name> of `file` has `words` words
  // (e.g. blocked_receivers listing that many pids).
  bool wait_words(const std::string& file, const std::string& name, int words, int ms = kHang) const;
  // Waits until user.mailbox.<name> of `file` (blocked_receivers or
  // blocked_senders) lists `pid` or one of its threads or descendants: the
  // daemon has parked its call. False if it exited first or at the hang guard.
  bool wait_listed(const std::string& file, const std::string& name, pid_t pid, int ms = kHang) const;
  // Stops the daemon with a signal and waits for it (for restart tests).
  bool stop(int sig, int timeout_ms = kHang);

 private:
  std::string tmp_, mnt_, state_, log_;
  pid_t pid_ = -1;
  bool ok_ = false;
};

// The daemons the current test started, killed by the suite's hang guard
// (hang_guard.cc) if the test is still running long after any test ends.
void guard_daemon(pid_t pid);
void unguard_daemon(pid_t pid);

// Polls `pred` every 10 ms until it holds (true) or `ms` pass (false).
bool wait_until(const std::function<bool()>& pred, int ms = kHang);

// A readiness signal from a forked child: it calls say() just before the call
// that blocks, the test wait()s for it (then wait_sleeping()).
class Ready {
 public:
  Ready();
  ~Ready();
  Ready(const Ready&) = delete;
  Ready& operator=(const Ready&) = delete;
  void say();                 // in the child
  bool wait(int ms = kHang);  // in the test: false if not said by the hang guard

 private:
  int fd_[2] = {-1, -1};
};

// Runs `fn` in a forked child (for library calls from another process); the
// child's exit status is fn's return value.
template <class Fn>
pid_t child(Fn fn) {
  pid_t p = ::fork();
  if (p == 0) ::_exit(fn());
  return p;
}
// Waits up to `ms` (at least one look) for a child: its exit status (128 +
// signal if killed), or -1 if it is still running.
int reap(pid_t p, int ms);
// Like reap(), but a child still running at the deadline is killed and
// reaped (-1).
int finish(pid_t p, int ms = kHang);
// Waits (hang guard `ms`) until every thread of `pid` is stopped (SIGSTOP
// is delivered asynchronously: a kill() that returned has not stopped it yet).
bool wait_stopped(pid_t pid, int ms = kHang);

// Path of the daemon binary under test (MAILBOXFS_BIN, or out/mailboxfs).
std::string daemon_binary();
// Shell-quotes a string.
std::string q(const std::string& s);
// Milliseconds on the monotonic clock.
long long now_ms();

}  // namespace mt

// SPDX-License-Identifier: MIT
// Mount-test harness: a real daemon on a temporary directory, and real
// programs (bash, coreutils, python3) run as separate processes with deadlines.
#pragma once
#include <sys/types.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

namespace mt {

// Result of a finished child process.
struct Run {
  int status = -1;          // exit status, or 128+signal
  bool timed_out = false;   // killed at the deadline
  std::string out, err;
};

// A bash script running in its own process group, its output captured.
class Proc {
 public:
  // `env` entries are "NAME=value" added to the environment.
  explicit Proc(const std::string& script, const std::string& cwd = "",
                const std::vector<std::string>& env = {});
  ~Proc();  // kills the whole group if still running
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;
  pid_t pid() const { return pid_; }
  // True if the process exited within `ms` (it is then reaped).
  bool exits_within(int ms);
  // Waits up to `ms`, then kills the group; returns what it printed.
  Run finish(int ms = 10000);
  void signal(int sig);        // to the bash process itself
  void signal_group(int sig);  // to its whole process group
  bool running();

 private:
  void drain(int ms);
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  bool reaped_ = false;
  int status_ = -1;
  std::string out_, err_;
};

// Runs a bash script to completion (or its deadline).
Run sh(const std::string& script, int timeout_ms = 10000, const std::string& cwd = "");

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
  Run sh(const std::string& script, int timeout_ms = 10000) const;
  std::string daemon_stderr() const;
  // Value of user.mailbox.<name> of mailbox `file` ("" if unreadable).
  std::string xattr(const std::string& file, const std::string& name) const;
  // Waits up to `ms` until user.mailbox.<name> of `file` has `words` words
  // (e.g. blocked_receivers listing that many pids).
  bool wait_words(const std::string& file, const std::string& name, int words, int ms = 5000) const;
  // Stops the daemon with a signal and waits for it (for restart tests).
  bool stop(int sig, int timeout_ms = 5000);

 private:
  std::string tmp_, mnt_, state_, log_;
  pid_t pid_ = -1;
  bool ok_ = false;
};

// Polls `pred` every 10 ms until it holds (true) or `ms` pass (false).
bool wait_until(const std::function<bool()>& pred, int ms);

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
int finish(pid_t p, int ms);

// Path of the daemon binary under test (MAILBOXFS_BIN, or out/mailboxfs).
std::string daemon_binary();
// Shell-quotes a string.
std::string q(const std::string& s);
// Milliseconds on the monotonic clock.
long long now_ms();

}  // namespace mt

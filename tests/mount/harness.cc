// SPDX-License-Identifier: MIT
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace mt {

namespace {
constexpr long kFuseMagic = 0x65735546;

// True once child `pid` has exited, leaving it unreaped (its pid still taken).
bool exited_unreaped(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

bool is_fuse(const std::string& dir) {
  struct statfs s;
  return ::statfs(dir.c_str(), &s) == 0 && s.f_type == kFuseMagic;
}

// Mounted at all, a dead daemon's mount included (its statfs fails with
// ENOTCONN, so is_fuse() cannot see it).
bool mounted(const std::string& dir) {
  if (is_fuse(dir)) return true;
  std::ifstream mounts("/proc/mounts");
  std::string dev, at, rest;
  while (mounts >> dev >> at && std::getline(mounts, rest))
    if (at == dir) return true;
  return false;
}

int decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void quiet_run(const std::vector<std::string>& argv, int timeout_ms) {
  std::string cmd;
  for (auto& a : argv) cmd += q(a) + " ";
  Run r = sh(cmd + ">/dev/null 2>&1", timeout_ms);
  (void)r;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Scripts say `python3`; with MBX_PYTHON set, a private directory first on
// PATH makes that name run $MBX_PYTHON (for every child of the test binary).
class PythonOnPath {
 public:
  PythonOnPath() {
    const char* py = std::getenv("MBX_PYTHON");
    if (!py || !*py) return;
    std::string target = py;
    const char* path = std::getenv("PATH");
    if (target.find('/') == std::string::npos && path) {  // a bare name: resolve it on today's PATH
      std::istringstream dirs(path);
      for (std::string d; std::getline(dirs, d, ':');)
        if (!d.empty() && ::access((d + "/" + target).c_str(), X_OK) == 0) {
          target = d + "/" + target;
          break;
        }
    }
    char tmpl[] = "/tmp/mbxpy.XXXXXX";
    if (!mkdtemp(tmpl)) return;
    dir_ = tmpl;
    if (::symlink(target.c_str(), (dir_ + "/python3").c_str()) != 0) return;
    ::setenv("PATH", (dir_ + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
  }
  ~PythonOnPath() {
    if (dir_.empty() || owner_ != ::getpid()) return;  // forked children leave it alone
    ::unlink((dir_ + "/python3").c_str());
    ::rmdir(dir_.c_str());
  }

 private:
  std::string dir_;
  pid_t owner_ = ::getpid();
};
PythonOnPath python_on_path;

// tests/run.sh may run this binary as gtest shards (GTEST_TOTAL_SHARDS,
// GTEST_SHARD_INDEX). gtest has picked this shard's tests before global
// environments are set up; from then on the variables would only make the
// gtest programs the tests run (out/mq_conformance) run a shard of theirs.
class NoShardsForChildren : public ::testing::Environment {
 public:
  void SetUp() override {
    ::unsetenv("GTEST_TOTAL_SHARDS");
    ::unsetenv("GTEST_SHARD_INDEX");
    ::unsetenv("GTEST_SHARD_STATUS_FILE");
  }
};
[[maybe_unused]] ::testing::Environment* const no_shards_for_children =
    ::testing::AddGlobalTestEnvironment(new NoShardsForChildren);

// Does a wchan name match where a call of kind `on` sleeps?
bool sleeps_on(const std::string& wchan, Sleep on) {
  if (wchan.empty() || wchan == "0") return false;
  switch (on) {
    case Sleep::fuse:
      return wchan.find("request_wait_answer") != std::string::npos || wchan.find("fuse") != std::string::npos;
    case Sleep::futex: return wchan.find("futex") != std::string::npos;
    case Sleep::poll: return wchan.find("poll") != std::string::npos || wchan.find("select") != std::string::npos;
    case Sleep::any: return true;
  }
  return false;
}

// True if a task is inside a call that only looks a name up or opens it: it
// may wait on the daemon for a moment, but it is never the call that blocks.
bool in_lookup(const std::string& task_dir) {
#if defined(__x86_64__)
  std::istringstream in(slurp(task_dir + "/syscall"));
  long nr = -1;
  if (!(in >> nr)) return false;
  switch (nr) {
    case 2:
    case 257:
    case 437:  // open, openat, openat2
    case 4:
    case 5:
    case 6:
    case 262:  // stat, fstat, lstat, newfstatat
    case 332:
    case 21:
    case 269:
    case 439:  // statx, access, faccessat, faccessat2
      return true;
  }
#else
  (void)task_dir;
#endif
  return false;
}

// Is the task in /proc/.../<tid> asleep on `on`?
bool task_sleeps_on(const std::string& task_dir, Sleep on) {
  const std::string st = slurp(task_dir + "/stat");
  const size_t paren = st.rfind(')');
  if (paren == std::string::npos || paren + 2 >= st.size()) return false;
  const char s = st[paren + 2];
  if (s != 'S' && s != 'D') return false;
  if (!sleeps_on(slurp(task_dir + "/wchan"), on)) return false;
  return on != Sleep::fuse || !in_lookup(task_dir);
}

// State letter of /proc/<pid>/task/<tid>/stat ('?' if gone).
char task_state(pid_t pid, pid_t tid) {
  const std::string st = slurp("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  const size_t paren = st.rfind(')');
  return paren == std::string::npos || paren + 2 >= st.size() ? '?' : st[paren + 2];
}

std::vector<pid_t> numeric_entries(const std::string& dir) {
  std::vector<pid_t> v;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') v.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
    ::closedir(d);
  }
  return v;
}

// Processes of the tree rooted at `pid` (itself first), from /proc's ppids.
std::vector<pid_t> processes(pid_t pid) {
  std::multimap<pid_t, pid_t> children;
  for (pid_t p : numeric_entries("/proc")) {
    const std::string st = slurp("/proc/" + std::to_string(p) + "/stat");
    const size_t paren = st.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream in(st.substr(paren + 2));
    char state;
    pid_t ppid = 0;
    if (in >> state >> ppid) children.emplace(ppid, p);
  }
  std::vector<pid_t> tree{pid};
  for (size_t i = 0; i < tree.size(); i++) {
    auto [b, e] = children.equal_range(tree[i]);
    for (auto it = b; it != e; ++it) tree.push_back(it->second);
  }
  return tree;
}

bool alive(pid_t pid) {
  const char s = task_state(pid, pid);
  return s != '?' && s != 'Z' && s != 'X';
}
}  // namespace

std::vector<pid_t> process_tree(pid_t pid) {
  std::vector<pid_t> tids;
  for (pid_t p : processes(pid))
    for (pid_t t : numeric_entries("/proc/" + std::to_string(p) + "/task")) tids.push_back(t);
  return tids;
}

bool wait_sleeping(pid_t pid, Sleep on, int ms) {
  return wait_until(
             [&] {
               for (pid_t p : processes(pid))
                 for (pid_t t : numeric_entries("/proc/" + std::to_string(p) + "/task"))
                   if (task_sleeps_on("/proc/" + std::to_string(p) + "/task/" + std::to_string(t), on)) return true;
               return !alive(pid);  // gone: stop waiting (and fail below)
             },
             ms) &&
         alive(pid);
}

bool wait_task_sleeping(pid_t tid, Sleep on, int ms) {
  const std::string dir = "/proc/" + std::to_string(tid);  // a thread id opens as well as a pid
  return wait_until([&] { return task_sleeps_on(dir, on) || !alive(tid); }, ms) && alive(tid);
}

Ready::Ready() {
  if (pipe2(fd_, O_CLOEXEC) != 0) fd_[0] = fd_[1] = -1;
}

Ready::~Ready() {
  for (int fd : fd_)
    if (fd >= 0) close(fd);
}

void Ready::say() {
  if (::write(fd_[1], "r", 1) != 1) ::_exit(120);
}

bool Ready::wait(int ms) {
  pollfd p{fd_[0], POLLIN, 0};
  char c;
  return ::poll(&p, 1, ms) == 1 && ::read(fd_[0], &c, 1) == 1;
}

long long now_ms() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

int reap(pid_t p, int ms) {
  for (long long end = now_ms() + ms;; usleep(5000)) {
    int st;
    if (waitpid(p, &st, WNOHANG) == p) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (now_ms() >= end) return -1;
  }
}

int finish(pid_t p, int ms) {
  const int st = reap(p, ms);
  if (st == -1) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }
  return st;
}

bool wait_stopped(pid_t pid, int ms) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  bool stopped = false;
  return wait_until(
             [&] {
               const auto tids = numeric_entries(tasks);
               if (tids.empty()) return true;  // gone: no use waiting
               for (pid_t t : tids) {
                 const char c = task_state(pid, t);
                 if (c == 'Z' || c == 'X') return true;  // exiting
                 if (c != 'T' && c != 't') return false;
               }
               return stopped = true;
             },
             ms) &&
         stopped;
}

bool wait_until(const std::function<bool()>& pred, int ms) {
  const long long end = now_ms() + ms;
  for (;;) {
    if (pred()) return true;
    if (now_ms() >= end) return false;
    usleep(10000);
  }
}

std::string until_usr1(const std::string& body) {
  return "stop=0; trap 'stop=1' USR1; " + std::string(kReadySh) + "while :; do " + body +
         "; [ $stop = 1 ] && break; done; exit 0";
}

std::string q(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

std::string daemon_binary() {
  const char* b = std::getenv("MAILBOXFS_BIN");
  if (b && *b) return b;
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    buf[n] = 0;
    std::string self(buf);
    return self.substr(0, self.rfind('/')) + "/mailboxfs";
  }
  return "out/mailboxfs";
}

Proc::Proc(const std::string& script, const std::string& cwd, const std::vector<std::string>& env) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    setpgid(0, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    for (auto& e : env) putenv(const_cast<char*>(e.c_str()));
    // Default dispositions: the test may send SIGINT/SIGTERM.
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    execl("/bin/bash", "bash", "-c", script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(pid_, pid_);
  close(out[1]);
  close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  fcntl(out_fd_, F_SETFL, O_NONBLOCK);
  fcntl(err_fd_, F_SETFL, O_NONBLOCK);
}

Proc::~Proc() {
  if (pid_ > 0 && !reaped_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    int st;
    // A process stuck in a hung FUSE request can outlive SIGKILL; never hang here.
    for (int i = 0; i < 1000 && waitpid(pid_, &st, WNOHANG) == 0; i++) usleep(10000);
  }
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

void Proc::drain(int ms) {
  pollfd p[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  if (::poll(p, 2, ms) <= 0) return;
  char buf[65536];
  for (int i = 0; i < 2; i++) {
    if (p[i].fd < 0) continue;
    for (;;) {
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n <= 0) break;
      (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
    }
  }
  // Count and drop whole readiness lines (a partial one is completed by a later read).
  const std::string line = std::string(kReadyLine) + "\n";
  for (size_t at = 0; (at = err_.find(line, at)) != std::string::npos;) {
    if (at == 0 || err_[at - 1] == '\n') {
      err_.erase(at, line.size());
      ready_++;
    } else {
      at += line.size();
    }
  }
}

bool Proc::wait_ready(int n, int ms) {
  const long long end = now_ms() + ms;
  for (;;) {
    drain(5);
    if (ready_ >= n) return true;
    if (!running() || now_ms() >= end) {
      drain(0);
      return ready_ >= n;  // false: exited (or hung) before saying it
    }
  }
}

bool Proc::wait_blocked(Sleep on, int n, int ms) {
  const long long end = now_ms() + ms;
  if (!wait_ready(n, ms)) return false;
  const bool ok = wait_sleeping(pid_, on, static_cast<int>(std::max(0LL, end - now_ms())));
  drain(0);
  return ok && running();
}

bool Proc::running() {
  if (pid_ <= 0 || reaped_) return false;
  int st;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = decode(st);
    return false;
  }
  return true;
}

bool Proc::exits_within(int ms) {
  long long end = now_ms() + ms;
  while (running()) {
    if (now_ms() >= end) return false;
    drain(5);
  }
  return true;
}

Run Proc::finish(int ms) {
  Run r;
  if (!exits_within(ms)) {
    r.timed_out = true;
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    exits_within(kHang);
  }
  drain(0);
  r.status = status_;
  r.out = out_;
  r.err = err_;
  return r;
}

void Proc::signal(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

void Proc::signal_group(int sig) {
  if (pid_ > 0 && !reaped_) kill(-pid_, sig);
}

Run sh(const std::string& script, int timeout_ms, const std::string& cwd) {
  Proc p(script, cwd);
  return p.finish(timeout_ms);
}

Mount::Mount(const std::string& options) {
  char tmpl[] = "/tmp/mbxtest.XXXXXX";
  if (!mkdtemp(tmpl)) return;
  tmp_ = tmpl;
  mnt_ = tmp_ + "/mnt";
  state_ = "/dev/shm/mbxtest-" + tmp_.substr(tmp_.rfind('.') + 1);
  log_ = tmp_ + "/daemon.log";
  mkdir(mnt_.c_str(), 0755);
  std::string opts = "state_dir=" + state_;
  if (!options.empty()) opts += "," + options;
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    dup2(fd, 1);
    setpgid(0, 0);
    execl(daemon_binary().c_str(), "mailboxfs", "-f", "-o", opts.c_str(), mnt_.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid_ > 0) guard_daemon(pid_);
  long long end = now_ms() + kHang;
  while (now_ms() < end) {
    if (is_fuse(mnt_)) {
      ok_ = true;
      break;
    }
    if (exited_unreaped(pid_)) {
      unguard_daemon(pid_);  // before the pid is free for reuse
      int st;
      waitpid(pid_, &st, 0);
      pid_ = -1;
      break;
    }
    usleep(10000);
  }
}

bool Mount::stop(int sig, int timeout_ms) {
  if (pid_ <= 0) return true;
  kill(pid_, sig);
  long long end = now_ms() + timeout_ms;
  int st;
  while (now_ms() < end) {
    if (exited_unreaped(pid_)) {
      unguard_daemon(pid_);  // before the pid is free for reuse
      waitpid(pid_, &st, 0);
      pid_ = -1;
      return true;
    }
    usleep(5000);
  }
  return false;
}

Mount::~Mount() {
  if (!mnt_.empty() && mounted(mnt_)) {
    quiet_run({"fusermount3", "-u", mnt_}, kHang);
    if (mounted(mnt_)) quiet_run({"fusermount3", "-u", "-z", mnt_}, kHang);
  }
  if (pid_ > 0) {
    unguard_daemon(pid_);  // reaped below: its pid may be reused
    kill(pid_, SIGTERM);
    int st;
    bool gone = false;
    for (int i = 0; i < 1000 && !gone; i++) {  // a hang guard: 10 s
      gone = waitpid(pid_, &st, WNOHANG) == pid_;
      if (!gone) usleep(10000);
    }
    if (!gone) {
      kill(pid_, SIGKILL);
      for (int i = 0; i < 1000 && waitpid(pid_, &st, WNOHANG) != pid_; i++) usleep(10000);
    }
  }
  if (!state_.empty()) quiet_run({"rm", "-rf", state_}, kHang);
  if (!tmp_.empty() && !mounted(mnt_)) quiet_run({"rm", "-rf", tmp_}, kHang);
}

Run Mount::sh(const std::string& script, int timeout_ms) const { return mt::sh(script, timeout_ms, mnt_); }

std::string Mount::xattr(const std::string& file, const std::string& name) const {
  return sh("getfattr --only-values -n user.mailbox." + name + " " + q(file) + " 2>/dev/null").out;
}

bool Mount::wait_words(const std::string& file, const std::string& name, int words, int ms) const {
  long long end = now_ms() + ms;
  do {
    std::istringstream in(xattr(file, name));
    int n = 0;
    for (std::string w; in >> w;) n++;
    if (n == words) return true;
    usleep(20000);
  } while (now_ms() < end);
  return false;
}

bool Mount::wait_listed(const std::string& file, const std::string& name, pid_t pid, int ms) const {
  bool listed = false;
  wait_until(
      [&] {
        char buf[65536];  // getxattr(2) here: a getfattr per poll would load the machine
        const ssize_t n = ::getxattr(path(file).c_str(), ("user.mailbox." + name).c_str(), buf, sizeof buf);
        std::istringstream in(std::string(buf, n > 0 ? size_t(n) : 0));
        const std::vector<pid_t> tree = process_tree(pid);
        for (std::string w; in >> w;)
          for (pid_t t : tree)
            if (w == std::to_string(t)) return listed = true;
        return !alive(pid);
      },
      ms);
  return listed && alive(pid);
}

std::string Mount::daemon_stderr() const {
  std::ifstream f(log_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace mt

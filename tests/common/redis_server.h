// SPDX-License-Identifier: MIT
// A private redis-server for a test: on a unix socket in its own temporary
// directory (never a shared one), no persistence unless asked, stopped by
// its pid at the end. Header-only, for the unit and mount suites alike.
//
// Readiness is redis-server's own signal: it runs `--supervised systemd`
// with NOTIFY_SOCKET set to a datagram socket of the test, and sends
// "READY=1" there once it accepts connections (after loading its data);
// start_ready() does that for the cluster's nodes too (redis_cluster.h).
#pragma once
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace testredis {

// Runs redis-server with `args` (without the program name) under
// `--supervised systemd`, its NOTIFY_SOCKET a datagram socket in `dir`, and
// waits for its READY=1 (hang guard 20 s). `*pid`: its pid, or -1 if it
// exited first (reaped; its log says why). True once it said READY=1.
inline bool start_ready(const std::string& dir, std::vector<std::string> args, pid_t* pid) {
  *pid = -1;
  const std::string notify = dir + "/notify";
  ::unlink(notify.c_str());
  const int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, notify.c_str(), sizeof sa.sun_path - 1);
  if (sock < 0 || ::bind(sock, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (sock >= 0) ::close(sock);
    return false;
  }
  args.insert(args.begin(), "redis-server");
  args.insert(args.end(), {"--supervised", "systemd"});
  std::vector<std::string> env{"NOTIFY_SOCKET=" + notify};
  for (char** e = environ; *e; e++)
    if (!std::string_view(*e).starts_with("NOTIFY_SOCKET=")) env.emplace_back(*e);
  std::vector<char*> argv, envp;  // built before fork: the child only execs
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  *pid = ::fork();
  if (*pid == 0) {
    // It goes with the test process, even one killed by its deadline.
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(127);
    ::execvpe("redis-server", argv.data(), envp.data());
    ::_exit(127);
  }
  const int pidfd = *pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0)) : -1;
  bool ready = false;
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       *pid > 0 && !ready && std::chrono::steady_clock::now() < end;) {
    pollfd pf[2] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    if (::poll(pf, pidfd >= 0 ? 2 : 1, 1000) <= 0) continue;  // the deadline is a hang guard only
    if (pf[0].revents & POLLIN) {
      char buf[512];
      const ssize_t n = ::recv(sock, buf, sizeof buf - 1, 0);
      if (n > 0 && std::string_view(buf, size_t(n)).find("READY=1") != std::string_view::npos) ready = true;
    } else if (pf[1].revents & POLLIN) {  // it exited
      int st;
      ::waitpid(*pid, &st, 0);
      *pid = -1;
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  ::close(sock);
  return ready;
}

class Server {
 public:
  // `extra`: more redis-server arguments (e.g. {"--appendonly", "yes"}).
  explicit Server(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    char tmpl[] = "/tmp/mbxtest.redis.XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    start();
  }
  ~Server() {
    stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts it (again, after stop(): same directory, same data when persisted).
  // True once it said READY=1 (hang guard 20 s); false if it exited first
  // (not installed, or it refused the arguments).
  bool start() {
    if (pid_ > 0 || dir_.empty()) return ready_;
    std::vector<std::string> args{"--port",    "0",          "--unixsocket", socket(), "--dir",       dir_,
                                  "--save",    "",           "--appendonly", "no",     "--daemonize", "no",
                                  "--logfile", dir_ + "/log"};
    for (auto& a : extra_) args.push_back(a);
    return ready_ = start_ready(dir_, args, &pid_);
  }
  // Stops it by its pid and reaps it. SIGTERM flushes an AOF; SIGKILL
  // leaves only what was written (with appendfsync always: every write it
  // acknowledged).
  void stop(int sig = SIGTERM) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int st;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    ready_ = false;
  }
  bool ready() const { return ready_; }
  std::string socket() const { return dir_ + "/sock"; }
  std::string url() const { return "redis+unix://" + socket(); }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }

 private:
  std::vector<std::string> extra_;
  std::string dir_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

}  // namespace testredis

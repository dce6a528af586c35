// SPDX-License-Identifier: MIT
// A private redis-server for a test: on a unix socket in its own temporary
// directory (never a shared one), no persistence unless asked, stopped by
// its pid at the end. Header-only, for the unit and mount suites alike.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace testredis {

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
  // True once `redis-cli -s SOCK ping` answered PONG (a readiness poll, with
  // a hang guard of 20 s).
  bool start() {
    if (pid_ > 0 || dir_.empty()) return ready_;
    std::vector<std::string> args{"redis-server", "--port",    "0",          "--unixsocket", socket(), "--dir",
                                  dir_,           "--save",    "",           "--appendonly", "no",     "--daemonize",
                                  "no",           "--logfile", dir_ + "/log"};
    for (auto& a : extra_) args.push_back(a);
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp("redis-server", argv.data());
      ::_exit(127);
    }
    const std::string ping = "redis-cli -s " + socket() + " ping 2>/dev/null";
    for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
         std::chrono::steady_clock::now() < end;) {
      if (FILE* f = ::popen(ping.c_str(), "r")) {
        char buf[16] = {};
        const bool pong = std::fgets(buf, sizeof buf, f) && std::string(buf).starts_with("PONG");
        ::pclose(f);
        if (pong) return ready_ = true;
      }
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {  // it exited: not installed, or refused the arguments
        pid_ = -1;
        return ready_ = false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // readiness poll, not ordering
    }
    return ready_ = false;
  }
  // Stops it by its pid (SIGTERM: an AOF is flushed) and reaps it.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
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

// SPDX-License-Identifier: MIT
#include "measure.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace bench {
namespace {

// Every forked process dies by SIGALRM if the run wedges.
constexpr unsigned kChildDeadline = 120;

// Children report that they are ready, then wait for the start: the parent
// closes the write end of `go`, so every child's read returns 0 at once.
class StartLine {
 public:
  StartLine() {
    if (::pipe(ready_) || ::pipe(go_)) die("pipe");
  }
  ~StartLine() {
    for (int fd : {ready_[0], ready_[1], go_[0], go_[1]})
      if (fd >= 0) ::close(fd);
  }
  void child_ready_and_wait() {
    child_ready();
    char c;
    if (::read(go_[0], &c, 1) != 0) die("start line");
  }
  void child_ready() {
    ::alarm(kChildDeadline);
    ::close(std::exchange(go_[1], -1));  // or the start never comes
    char c = 1;
    write_all(ready_[1], &c, 1);
  }
  void wait_ready(int n) {
    ::close(std::exchange(ready_[1], -1));
    char buf[256];
    for (int got = 0; got < n;) {
      ssize_t r = ::read(ready_[0], buf, std::min<size_t>(sizeof buf, size_t(n - got)));
      if (r <= 0) die("a child died before it was ready");
      got += int(r);
    }
  }
  void go() { ::close(std::exchange(go_[1], -1)); }

 private:
  int ready_[2], go_[2];
};

struct Usage {
  double cpu_s = 0, switches = 0, faults = 0;
};

// Waits for every child; dies if one failed. Returns what they used.
Usage reap(const std::vector<pid_t>& pids, const std::string& name) {
  bool ok = true;
  Usage u;
  for (pid_t p : pids) {
    int st = 0;
    rusage ru{};
    if (::wait4(p, &st, 0, &ru) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = false;
    u.cpu_s += double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
    u.switches += double(ru.ru_nvcsw + ru.ru_nivcsw);
    u.faults += double(ru.ru_minflt);
  }
  if (!ok) {
    std::fprintf(stderr, "bench: a %s process failed\n", name.c_str());
    std::exit(1);
  }
  return u;
}

// CPU seconds of a whole process, every thread (exited ones too), in
// nanoseconds rather than /proc's 10 ms ticks.
double cpu_seconds(pid_t pid) {
  clockid_t clock;
  timespec t{};
  if (::clock_getcpuclockid(pid, &clock) || ::clock_gettime(clock, &t)) return 0;
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

double cpu_seconds(const std::vector<pid_t>& pids) {
  double s = 0;
  for (pid_t p : pids) s += cpu_seconds(p);
  return s;
}

// Whether `pid` is asleep (S, or D inside a FUSE request), as read from /proc.
bool asleep(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size()) return false;
  const char state = line[paren + 2];
  return state == 'S' || state == 'D';
}

}  // namespace

double now_s() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

Throughput throughput(const Mechanism& m, const Spec& spec, long n, const Env& env, const std::vector<pid_t>& daemons) {
  auto ch = m.make(spec, env);
  StartLine start;
  std::vector<pid_t> pids;
  const size_t size = spec.max_size;
  for (int c = 0; c < spec.consumers; c++) {
    pid_t p = ::fork();
    if (p == 0) {
      ch->open_receiver();
      start.child_ready_and_wait();
      std::vector<char> buf(size);
      for (long i = 0; i < n / spec.consumers; i++)
        if (ch->receive(buf.data(), size) != size) _exit(4);
      _exit(0);
    }
    pids.push_back(p);
  }
  for (int q = 0; q < spec.producers; q++) {
    pid_t p = ::fork();
    if (p == 0) {
      ch->open_sender();
      start.child_ready_and_wait();
      std::vector<char> msg(size, 'm');
      for (long i = 0; i < n / spec.producers; i++) ch->send(msg.data(), size);
      _exit(0);
    }
    pids.push_back(p);
  }
  start.wait_ready(spec.producers + spec.consumers);
  const double daemon0 = cpu_seconds(daemons);
  const double t0 = now_s();
  start.go();
  const Usage u = reap(pids, m.name);
  const double t = now_s() - t0;
  const double per = 1e6 / double(n);
  return {double(n) / t, u.cpu_s * per, (cpu_seconds(daemons) - daemon0) * per, u.switches / double(n),
          u.faults / double(n)};
}

std::pair<double, double> pingpong(const Mechanism& m, int tag, long n, const Env& env) {
  auto there = m.make({.max_size = 64, .tag = tag}, env), back = m.make({.max_size = 64, .tag = tag + 1}, env);
  pid_t echo = ::fork();
  if (echo == 0) {
    ::alarm(kChildDeadline);
    there->open_receiver();
    back->open_sender();
    char buf[64];
    for (long i = 0; i < n; i++) {
      size_t k = there->receive(buf, sizeof buf);
      back->send(buf, k);
    }
    _exit(0);
  }
  there->open_sender();
  back->open_receiver();
  char msg[64] = {}, buf[64];
  std::vector<double> rtt(static_cast<size_t>(n));
  for (long i = 0; i < n; i++) {
    const double t0 = now_s();
    there->send(msg, sizeof msg);
    back->receive(buf, sizeof buf);
    rtt[size_t(i)] = (now_s() - t0) * 1e6;
  }
  reap({echo}, m.name);
  std::sort(rtt.begin(), rtt.end());
  return {rtt[rtt.size() / 2], rtt[std::min(rtt.size() - 1, rtt.size() * 99 / 100)]};
}

double release(const Mechanism& m, int tag, int receivers, const Env& env) {
  auto ch = m.make({.max_size = 64, .tag = tag, .producers = 1, .consumers = receivers}, env);
  StartLine start;
  std::vector<pid_t> pids;
  for (int i = 0; i < receivers; i++) {
    pid_t p = ::fork();
    if (p == 0) {
      ch->open_receiver();
      start.child_ready();
      char buf[64];
      _exit(ch->receive(buf, sizeof buf) == 64 ? 0 : 4);
    }
    if (p < 0) die("fork");
    pids.push_back(p);
  }
  start.wait_ready(receivers);
  // Ready is written just before receive(): wait until every one sleeps in it.
  for (const double deadline = now_s() + 20; now_s() < deadline;) {
    if (std::all_of(pids.begin(), pids.end(), asleep)) break;
    ::usleep(10000);
  }
  ch->open_sender();
  char msg[64] = {};
  const double t0 = now_s();
  for (int i = 0; i < receivers; i++) ch->send(msg, sizeof msg);
  reap(pids, m.name);
  return (now_s() - t0) * 1e3;
}

}  // namespace bench

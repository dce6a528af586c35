// make bench: every mechanism side by side in one run, interleaved
// (A B C ... A B C ...), reported as medians with min-max and as ratios to
// pipe and to the reference ring, computed per repetition.
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "channels.h"

namespace {

double now_s() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

struct Options {
  bool quick = false;
  std::string mount, csv, md;
  int reps = 5;
};

// How many messages a mechanism gets: the filesystem paths cost a round trip
// (or several) through the kernel and the daemon per message.
long scaled(const std::string& mech, long n) {
  if (mech == "fs_file") return std::max(50L, n / 100);
  if (mech == "fs_datagram") return std::max(100L, n / 10);
  return n;
}

// One producer process and one consumer process; returns messages per second.
double throughput(const bench::Mechanism& m, size_t size, long n, const Options& o, int tag) {
  auto ch = m.make(size, o.mount, tag);
  pid_t consumer = fork();
  if (consumer == 0) {
    ch->open_receiver();
    std::vector<char> buf(size);
    for (long i = 0; i < n; i++)
      if (ch->receive(buf.data(), size) != size) _exit(4);
    _exit(0);
  }
  ch->open_sender();
  std::vector<char> msg(size, 'm');
  const double t0 = now_s();
  for (long i = 0; i < n; i++) ch->send(msg.data(), size);
  int st = 0;
  waitpid(consumer, &st, 0);
  const double t = now_s() - t0;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "bench: %s consumer failed\n", m.name.c_str());
    std::exit(1);
  }
  return double(n) / t;
}

// Round trips of a 64-byte message; returns {median, p99} in microseconds.
std::pair<double, double> pingpong(const bench::Mechanism& m, long n, const Options& o, int tag) {
  auto there = m.make(64, o.mount, tag), back = m.make(64, o.mount, tag + 1);
  pid_t echo = fork();
  if (echo == 0) {
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
  waitpid(echo, nullptr, 0);
  std::sort(rtt.begin(), rtt.end());
  return {rtt[rtt.size() / 2], rtt[std::min(rtt.size() - 1, rtt.size() * 99 / 100)]};
}

struct Series {
  std::vector<double> values, vs_pipe, vs_ring;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string machine() {
  utsname u{};
  uname(&u);
  std::string cpu = "unknown CPU";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  return cpu + ", " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs, Linux " + u.release;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--mount" && i + 1 < argc) o.mount = argv[++i];
    else if (a == "--csv" && i + 1 < argc) o.csv = argv[++i];
    else if (a == "--md" && i + 1 < argc) o.md = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--mount DIR] [--csv FILE] [--md FILE]\n", argv[0]);
      return 2;
    }
  }
  if (o.quick) o.reps = 1;
  const long n_small = o.quick ? 2000 : 200000, n_large = o.quick ? 500 : 50000, n_rtt = o.quick ? 200 : 20000;
  std::vector<bench::Mechanism> mechs;
  for (auto& m : bench::mechanisms())
    if (!m.needs_mount || !o.mount.empty()) mechs.push_back(m);

  // metric -> mechanism -> series
  std::map<std::string, std::map<std::string, Series>> results;
  const char* kMetrics[] = {"msgs/s 64 B", "msgs/s 4 KiB", "RTT median us 64 B", "RTT p99 us 64 B"};
  int tag = 0;
  for (int rep = 0; rep < o.reps; rep++) {
    std::map<std::string, std::map<std::string, double>> run;  // this repetition
    for (auto& m : mechs) {
      run["msgs/s 64 B"][m.name] = throughput(m, 64, scaled(m.name, n_small), o, tag += 2);
      if (auto probe = m.make(4096, o.mount, tag += 2); probe) {
        probe.reset();
        run["msgs/s 4 KiB"][m.name] = throughput(m, 4096, scaled(m.name, n_large), o, tag += 2);
      }
      auto [med, p99] = pingpong(m, scaled(m.name, n_rtt), o, tag += 2);
      run["RTT median us 64 B"][m.name] = med;
      run["RTT p99 us 64 B"][m.name] = p99;
      std::fprintf(stderr, "rep %d: %-12s done\n", rep + 1, m.name.c_str());
    }
    for (auto& [metric, by] : run)
      for (auto& [name, v] : by) {
        Series& s = results[metric][name];
        s.values.push_back(v);
        if (by.count("pipe")) s.vs_pipe.push_back(v / by["pipe"]);
        if (by.count("ref_ring")) s.vs_ring.push_back(v / by["ref_ring"]);
      }
  }

  std::string md = "# Benchmarks\n\nMachine: " + machine() + ". " + std::to_string(o.reps) +
                   " interleaved repetition(s)" + (o.quick ? " (QUICK smoke run: not meaningful)" : "") +
                   ". Ratios are medians of per-repetition ratios; for RTT, lower is better. One producer "
                   "process and one consumer process; `ref_ring` is a minimal lock-free SPSC ring in shared "
                   "memory with the same spin-then-futex policy as libmailbox, standing for the physical "
                   "limit; `fs_datagram` opens once and writes/reads one message per call, `fs_file` opens, "
                   "writes and closes per message.\n\n"
                   "Not measured yet: Boost.Interprocess `message_queue`, the minimal FUSE daemon (the FUSE "
                   "floor), 1 MiB messages, 2x2 and 4x4 producers x consumers, the release of 1,000 blocked "
                   "receivers, daemon memory with 10,000 idle mailboxes, `ls -l` of 10,000 mailboxes, and "
                   "the chart.\n\n"
                   "| metric | mechanism | median | min | max | vs pipe | vs ref_ring |\n"
                   "|---|---|---:|---:|---:|---:|---:|\n";
  std::string csv = "metric,mechanism,median,min,max,vs_pipe,vs_ref_ring\n";
  for (const char* metric : kMetrics)
    for (auto& m : mechs) {
      auto it = results[metric].find(m.name);
      if (it == results[metric].end()) continue;
      const Series& s = it->second;
      char row[256];
      std::snprintf(row, sizeof row, "%.6g,%.6g,%.6g,%.3f,%.3f", median(s.values),
                    *std::min_element(s.values.begin(), s.values.end()),
                    *std::max_element(s.values.begin(), s.values.end()), median(s.vs_pipe), median(s.vs_ring));
      csv += std::string(metric) + "," + m.name + "," + row + "\n";
      char mrow[256];
      std::snprintf(mrow, sizeof mrow, "| %s | %s | %.4g | %.4g | %.4g | %.3f | %.3f |\n", metric, m.name.c_str(),
                    median(s.values), *std::min_element(s.values.begin(), s.values.end()),
                    *std::max_element(s.values.begin(), s.values.end()), median(s.vs_pipe), median(s.vs_ring));
      md += mrow;
    }
  std::fputs(md.c_str(), stdout);
  if (!o.csv.empty()) std::ofstream(o.csv) << csv;
  if (!o.md.empty()) std::ofstream(o.md) << md;
  return 0;
}

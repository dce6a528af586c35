// SPDX-License-Identifier: MIT
// One measurement of one mechanism: each forks its own processes and returns
// a number (or dies with a message if the mechanism misbehaves).
#pragma once
#include <sys/types.h>

#include <utility>
#include <vector>

#include "channels.h"

namespace bench {

double now_s();

// What a throughput run cost, per message: the software events a profile
// starts from, counted without a profiler (rusage of the benchmark's own
// processes, /proc of the FUSE daemons).
struct Throughput {
  double msgs_per_s;
  double cpu_us;     // user + system time of the producers and consumers
  double daemon_us;  // user + system time of the FUSE daemons (mailboxfs, bench-floor)
  double switches;   // voluntary + involuntary context switches of the processes
  double faults;     // minor page faults of the processes (issue 13: a segment refaulted every lap)
};

// `n` messages of `spec.max_size` bytes from spec.producers processes to
// spec.consumers processes, timed from a common start to the last exit.
// `daemons` are the FUSE daemons' pids, whose CPU time is counted.
Throughput throughput(const Mechanism& m, const Spec& spec, long n, const Env& env, const std::vector<pid_t>& daemons);

// `n` round trips of a 64-byte message; returns {median, p99} in microseconds.
std::pair<double, double> pingpong(const Mechanism& m, int tag, long n, const Env& env);

// `receivers` processes wait in receive() on one channel; returns the
// milliseconds from the first of `receivers` sends to the last receiver's exit.
double release(const Mechanism& m, int tag, int receivers, const Env& env);

}  // namespace bench

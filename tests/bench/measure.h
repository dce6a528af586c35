// One measurement of one mechanism: each forks its own processes and returns
// a number (or dies with a message if the mechanism misbehaves).
#pragma once
#include <utility>

#include "channels.h"

namespace bench {

double now_s();

// `n` messages of `spec.max_size` bytes from spec.producers processes to
// spec.consumers processes, timed from a common start to the last exit.
// Returns messages per second.
double throughput(const Mechanism& m, const Spec& spec, long n, const Env& env);

// `n` round trips of a 64-byte message; returns {median, p99} in microseconds.
std::pair<double, double> pingpong(const Mechanism& m, int tag, long n, const Env& env);

// `receivers` processes wait in receive() on one channel; returns the
// milliseconds from the first of `receivers` sends to the last receiver's exit.
double release(const Mechanism& m, int tag, int receivers, const Env& env);

}  // namespace bench

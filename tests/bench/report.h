// SPDX-License-Identifier: MIT
// Collects every repetition's numbers and writes them out: the CSV, the
// Markdown page (docs/benchmarks.md) and the data file the chart is drawn from.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "idle.h"

namespace bench {

struct Metric {
  std::string name;   // e.g. "msgs/s 64 B"
  double bytes;       // message size for the MB/s column; 0 if not a throughput
  bool lower_better;  // latencies and times
  size_t size = 0;    // its messages' size when `bytes` is 0; 0 for 64
  size_t message_size() const { return size ? size : bytes ? size_t(bytes) : 64; }
};

// A ratio the issues promise, checked on every page.
struct Target {
  std::string metric, a, b;
  double bound;  // a/b >= bound (throughput) or <= bound (lower_better)
  // With c: a cost against a sum, a / (b + c_weight * c), always <= bound;
  // for a throughput the costs are times per message (1/rate).
  std::string c = {};
  double c_weight = 0;
};

class Results {
 public:
  Results(std::vector<Metric> metrics, const std::vector<Mechanism>& mechanisms, int reps)
      : metrics_(std::move(metrics)), reps_(reps) {
    for (auto& m : mechanisms) {
      mechs_.push_back(m.name);
      settings_[m.name] = m.settings;
    }
  }
  void add(const std::string& metric, const std::string& mech, int rep, double value);
  void set_idle(const IdleCost& c) { idle_ = c; }

  std::string csv() const;
  // `intro` describes the machine and the method; the chart goes where the
  // line "<!-- chart -->" is (run.sh replaces it).
  std::string markdown(const std::string& intro, const std::vector<Target>& targets) const;
  // One row per mechanism: msgs/s at 64 B, 4 KiB, 1 MiB, RTT median and p99.
  std::string chart_data() const;

 private:
  // The per-repetition ratios of a to b; empty if either is missing.
  std::vector<double> ratios(const std::string& metric, const std::string& a, const std::string& b) const;
  // The per-repetition a / (b + w*c) of a composite target (see Target).
  std::vector<double> sum_ratios(const Target& t, bool lower_better) const;
  // One mechanism's per-message costs at 64 B, as a phrase.
  std::string profile(const std::string& mech) const;
  const std::vector<double>* values(const std::string& metric, const std::string& mech) const;
  std::vector<Metric> metrics_;
  std::vector<std::string> mechs_;
  std::map<std::string, std::string (*)(size_t)> settings_;  // a mailbox row's settings, or nullptr
  int reps_;
  std::map<std::string, std::map<std::string, std::vector<double>>> v_;  // metric -> mech -> per rep
  IdleCost idle_{};
};

}  // namespace bench

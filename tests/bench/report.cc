// SPDX-License-Identifier: MIT
#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace bench {
namespace {

std::vector<double> present(const std::vector<double>& v) {
  std::vector<double> out;
  for (double x : v)
    if (!std::isnan(x)) out.push_back(x);
  return out;
}

double median(std::vector<double> v) {
  v = present(v);
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double lo(const std::vector<double>& v) {
  auto p = present(v);
  return p.empty() ? NAN : *std::min_element(p.begin(), p.end());
}
double hi(const std::vector<double>& v) {
  auto p = present(v);
  return p.empty() ? NAN : *std::max_element(p.begin(), p.end());
}

std::string fmt(const char* f, double x) {
  if (std::isnan(x)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}
std::string num(double x) { return fmt("%.4g", x); }
std::string md_or_na(const std::string& s) { return s.empty() ? "–" : s; }

}  // namespace

void Results::add(const std::string& metric, const std::string& mech, int rep, double value) {
  auto& v = v_[metric][mech];
  v.resize(size_t(reps_), NAN);
  v[size_t(rep)] = value;
}

const std::vector<double>* Results::values(const std::string& metric, const std::string& mech) const {
  auto m = v_.find(metric);
  if (m == v_.end()) return nullptr;
  auto it = m->second.find(mech);
  return it == m->second.end() ? nullptr : &it->second;
}

std::vector<double> Results::ratios(const std::string& metric, const std::string& a, const std::string& b) const {
  const auto *va = values(metric, a), *vb = values(metric, b);
  std::vector<double> r;
  if (!va || !vb) return r;
  for (size_t i = 0; i < va->size() && i < vb->size(); i++)
    if (!std::isnan((*va)[i]) && !std::isnan((*vb)[i]) && (*vb)[i] != 0) r.push_back((*va)[i] / (*vb)[i]);
  return r;
}

std::vector<double> Results::sum_ratios(const Target& t, bool lower_better) const {
  const auto *va = values(t.metric, t.a), *vb = values(t.metric, t.b), *vc = values(t.metric, t.c);
  std::vector<double> r;
  if (!va || !vb || !vc) return r;
  auto cost = [&](double x) { return lower_better ? x : 1 / x; };
  for (size_t i = 0; i < va->size() && i < vb->size() && i < vc->size(); i++) {
    const double a = (*va)[i], b = (*vb)[i], c = (*vc)[i];
    if (std::isnan(a) || std::isnan(b) || std::isnan(c) || a == 0 || b == 0 || c == 0) continue;
    r.push_back(cost(a) / (cost(b) + t.c_weight * cost(c)));
  }
  return r;
}

std::string Results::csv() const {
  std::string out = "metric,mechanism,median,min,max,MB_per_s,vs_pipe,vs_ref_ring\n";
  for (auto& m : metrics_)
    for (auto& mech : mechs_) {
      const auto* v = values(m.name, mech);
      if (!v || present(*v).empty()) continue;  // n/a: not in the CSV
      const double med = median(*v);
      out += m.name + "," + mech + "," + num(med) + "," + num(lo(*v)) + "," + num(hi(*v)) + "," +
             (m.bytes ? fmt("%.4g", med * m.bytes / 1e6) : "") + "," +
             fmt("%.3f", median(ratios(m.name, mech, "pipe"))) + "," +
             fmt("%.3f", median(ratios(m.name, mech, "ref_ring"))) + "\n";
    }
  auto row = [&](const char* name, double v) { out += std::string(name) + ",mailboxfs," + num(v) + ",,,,,\n"; };
  if (idle_.mailboxes) {
    const double n = idle_.mailboxes;
    row("idle daemon VmRSS KiB", idle_.rss_after_kib);
    row("idle daemon VmRSS KiB per mailbox", (idle_.rss_after_kib - idle_.rss_before_kib) / n);
    row("idle daemon RssAnon KiB", idle_.anon_after_kib);
    row("idle segment KiB", idle_.segments_after_kib);
    row("idle segment KiB per mailbox", (idle_.segments_after_kib - idle_.segments_before_kib) / n);
    row("idle create ms", idle_.create_ms);
    row("idle ls -l ms", median(idle_.ls_mailboxfs_ms));
    row("idle resident KiB per default mailbox", idle_.resident_kib());
    row("idle resident KiB per default mailbox after one message", idle_.resident_used_kib());
    row("idle sweep wait s", idle_.sweep_wait_s);
    out += "idle ls -l ms,tmpfs," + num(median(idle_.ls_tmpfs_ms)) + ",,,,,\n";
  }
  return out;
}

std::string Results::profile(const std::string& mech) const {
  auto med = [&](const char* metric) {
    const auto* v = values(metric, mech);
    return v ? median(*v) : NAN;
  };
  return "`" + mech + "` used " + md_or_na(fmt("%.2f", med("CPU us/msg 64 B"))) + " µs CPU in its processes, " +
         md_or_na(fmt("%.2f", med("daemon CPU us/msg 64 B"))) + " µs in the FUSE daemons, " +
         md_or_na(fmt("%.3f", med("switches/msg 64 B"))) + " context switches";
}

std::string Results::markdown(const std::string& intro, const std::vector<Target>& targets) const {
  std::string md = intro +
                   "\n<!-- chart -->\n\n## Targets\n\n"
                   "The promises of the other issues, and a few more ratios. Each ratio is computed "
                   "within one repetition (its two runs seconds apart, under the same load), then the "
                   "median and range over the repetitions are shown.\n\n"
                   "| ratio | metric | median | min | max | target | met |\n|---|---|---:|---:|---:|---:|---|\n";
  std::string missed;
  for (auto& t : targets) {
    bool lower = false;
    for (auto& m : metrics_)
      if (m.name == t.metric) lower = m.lower_better;
    const bool sum = !t.c.empty();
    const auto r = sum ? sum_ratios(t, lower) : ratios(t.metric, t.a, t.b);
    if (sum) lower = true;  // a cost against a cost
    const double med = median(r);
    std::string met = "–", bound = "–";
    if (t.bound > 0 && !r.empty()) {
      const bool ok = lower ? med <= t.bound : med >= t.bound;
      met = ok ? "yes" : "**no**";
      bound = (lower ? "≤ " : "≥ ") + fmt("%.2f", t.bound);
      if (!ok)
        missed += "- `" + t.a + " / " + (sum ? "(" + t.b + " + " + fmt("%g", t.c_weight) + "×" + t.c + ")" : t.b) +
                  "`, " + t.metric + ": " + fmt("%.3f", med) + " against " + bound + " (" +
                  fmt("%.0f", lower ? (med / t.bound - 1) * 100 : (1 - med / t.bound) * 100) +
                  (lower ? " % over" : " % short") + "). Per message of the 64-byte one-to-one run, " + profile(t.a) +
                  "; " + profile(t.b) + ".\n";
    }
    const std::string of = sum ? "(" + t.b + " + " + fmt("%g", t.c_weight) + "×" + t.c + ")" : t.b;
    md += "| " + t.a + " / " + of + " | " + t.metric + " | " + md_or_na(fmt("%.3f", med)) + " | " +
          md_or_na(fmt("%.3f", lo(r))) + " | " + md_or_na(fmt("%.3f", hi(r))) + " | " + bound + " | " + met + " |\n";
  }
  if (!missed.empty()) md += "\nMissed in this run, with the profile of each side:\n\n" + missed;

  md +=
      "\n## Every mechanism\n\nmsgs/s: higher is better; RTT and release times: lower is better. "
      "`vs pipe` and `vs ref_ring` are medians of per-repetition ratios; n/a: the mechanism cannot carry "
      "that (see the method).\n\n"
      "| metric | mechanism | settings | median | min | max | MB/s | vs pipe | vs ref_ring |\n"
      "|---|---|---|---:|---:|---:|---:|---:|---:|\n";
  for (auto& m : metrics_)
    for (auto& mech : mechs_) {
      const auto* v = values(m.name, mech);
      const auto set = settings_.find(mech);
      const std::string label = mech + " | " +
                                (set != settings_.end() && set->second ? set->second(m.message_size()) : "");
      if (!v || present(*v).empty()) {
        md += "| " + m.name + " | " + label + " | n/a | | | | | |\n";
        continue;
      }
      const double med = median(*v);
      md += "| " + m.name + " | " + label + " | " + num(med) + " | " + num(lo(*v)) + " | " + num(hi(*v)) + " | " +
            (m.bytes ? fmt("%.4g", med * m.bytes / 1e6) : "") + " | " +
            md_or_na(fmt("%.3f", median(ratios(m.name, mech, "pipe")))) + " | " +
            md_or_na(fmt("%.3f", median(ratios(m.name, mech, "ref_ring")))) + " |\n";
    }

  if (idle_.mailboxes) {
    const double n = idle_.mailboxes;
    const std::string ns = std::to_string(idle_.mailboxes);
    md +=
        "\n## " + ns +
        " idle mailboxes\n\nCreated empty with default settings in one directory of the "
        "benchmark's own mount; the daemon's `VmRSS` from `/proc/PID/status`, segment memory as the blocks "
        "allocated under its state directory in `/dev/shm` (what `du` counts: the segments are sparse). "
        "`ls -l` is timed against a tmpfs directory of " +
        ns + " empty files, interleaved, " + std::to_string(idle_.ls_mailboxfs_ms.size()) + " times. Then " +
        std::to_string(idle_.used) +
        " of them each carry one 64-byte message through libmailbox (open, send, receive, close) and are "
        "measured again, idle and empty once more: just after, and once the daemon's idle sweep (one second of silence, design.md section 4) has trimmed them.\n\n| measure | value |\n|---|---:|\n";
    md += "| daemon VmRSS before | " + fmt("%.0f KiB", idle_.rss_before_kib) + " |\n";
    md += "| daemon VmRSS with " + ns + " idle mailboxes | " + fmt("%.0f KiB", idle_.rss_after_kib) + " |\n";
    md += "| daemon VmRSS per mailbox | " + fmt("%.2f KiB", (idle_.rss_after_kib - idle_.rss_before_kib) / n) + " |\n";
    md += "| of which RssAnon (heap, not segments), before | " + fmt("%.0f KiB", idle_.anon_before_kib) + " |\n";
    md += "| of which RssAnon, with " + ns + " idle mailboxes | " + fmt("%.0f KiB", idle_.anon_after_kib) + " |\n";
    md += "| RssAnon per mailbox | " + fmt("%.2f KiB", (idle_.anon_after_kib - idle_.anon_before_kib) / n) + " |\n";
    md += "| segment memory before | " + fmt("%.0f KiB", idle_.segments_before_kib) + " |\n";
    md += "| segment memory with " + ns + " idle mailboxes | " + fmt("%.0f KiB", idle_.segments_after_kib) + " |\n";
    md += "| segment memory per mailbox | " +
          fmt("%.2f KiB", (idle_.segments_after_kib - idle_.segments_before_kib) / n) + " |\n";
    md += "| creating them (one `open(O_CREAT)` each) | " + fmt("%.0f ms", idle_.create_ms) + " |\n";
    md += "| `ls -l` of the mailboxes, median (min–max) | " + fmt("%.1f", median(idle_.ls_mailboxfs_ms)) + " ms (" +
          fmt("%.1f", lo(idle_.ls_mailboxfs_ms)) + "–" + fmt("%.1f", hi(idle_.ls_mailboxfs_ms)) + ") |\n";
    md += "| `ls -l` of as many tmpfs files, median (min–max) | " + fmt("%.1f", median(idle_.ls_tmpfs_ms)) + " ms (" +
          fmt("%.1f", lo(idle_.ls_tmpfs_ms)) + "–" + fmt("%.1f", hi(idle_.ls_tmpfs_ms)) + ") |\n";
    std::vector<double> r;
    for (size_t i = 0; i < idle_.ls_mailboxfs_ms.size(); i++)
      r.push_back(idle_.ls_mailboxfs_ms[i] / idle_.ls_tmpfs_ms[i]);
    md += "| `ls -l` mailboxfs / tmpfs, median (min–max) | " + fmt("%.2f", median(r)) + " (" + fmt("%.2f", lo(r)) +
          "–" + fmt("%.2f", hi(r)) + ") |\n";
    const std::string used = std::to_string(idle_.used);
    md += "| daemon RssAnon with " + used + " of them used once | " + fmt("%.0f KiB", idle_.anon_used_kib) + " |\n";
    md += "| RssAnon per mailbox used once (added to the idle figure) | " +
          fmt("%.2f KiB", (idle_.anon_used_kib - idle_.anon_after_kib) / idle_.used) + " |\n";
    md += "| segment memory with " + used + " of them used once, just after | " +
          fmt("%.0f KiB", idle_.segments_busy_kib) + " |\n";
    md += "| segment memory with " + used + " of them used once, after the daemon's idle sweep (" +
          fmt("%.1f s", idle_.sweep_wait_s) + " later) | " + fmt("%.0f KiB", idle_.segments_used_kib) + " |\n";
    md += "| segment memory per mailbox used once (added to the idle figure) | " +
          fmt("%.2f KiB", (idle_.segments_used_kib - idle_.segments_after_kib) / idle_.used) + " |\n";

    // Issue 13's idle targets. The `ls -l` one is for 10000 mailboxes: a
    // smaller run shows its time but does not judge it.
    const double ls = median(idle_.ls_mailboxfs_ms);
    const bool full = idle_.mailboxes == 10000;
    auto yes = [](bool ok) { return std::string(ok ? "yes" : "**no**"); };
    md += "\n| target (default mailboxes) | measured | target | met |\n|---|---:|---:|---|\n";
    md += "| resident memory per idle mailbox (segment pages + daemon RssAnon) | " +
          fmt("%.2f KiB", idle_.resident_kib()) + " | ≤ 64 KiB | " + yes(idle_.resident_kib() <= 64) + " |\n";
    md += "| the same, idle again after one 64-byte message through libmailbox (" + std::to_string(idle_.used) +
          " of them) | " + fmt("%.2f KiB", idle_.resident_used_kib()) + " | ≤ 64 KiB | " +
          yes(idle_.resident_used_kib() <= 64) + " |\n";
    md += "| `ls -l` of " + ns + " idle mailboxes, median | " + fmt("%.0f ms", ls) + " | < 500 ms for 10000 | " +
          (full ? yes(ls < 500) : std::string("–")) + " |\n";
  }
  return md;
}

std::string Results::chart_data() const {
  const char* cols[] = {"msgs/s 64 B", "msgs/s 4 KiB", "msgs/s 1 MiB", "RTT median us 64 B", "RTT p99 us 64 B"};
  std::string out = "# mechanism";
  for (const char* c : cols) out += std::string(" \"") + c + "\"";
  out += "\n";
  for (auto& mech : mechs_) {
    out += mech;
    for (const char* c : cols) {
      const auto* v = values(c, mech);
      const double med = v ? median(*v) : NAN;
      out += " " + (std::isnan(med) ? std::string("NaN") : fmt("%.6g", med));
    }
    out += "\n";
  }
  return out;
}

}  // namespace bench

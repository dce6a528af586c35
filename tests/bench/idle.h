// SPDX-License-Identifier: MIT
// What idle mailboxes cost: the daemon's memory, the segments' memory, and
// the time `ls -l` takes to list them (against the same number of plain
// files on tmpfs).
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "channels.h"

namespace bench {

struct IdleCost {
  int mailboxes;
  double rss_before_kib, rss_after_kib;      // the daemon's VmRSS
  double anon_before_kib, anon_after_kib;    // its RssAnon: the part that is not mapped segments or files
  double segments_before_kib, segments_after_kib;  // blocks allocated under the state directory
  double create_ms;                          // creating all of them, one open(O_CREAT) each
  std::vector<double> ls_mailboxfs_ms, ls_tmpfs_ms;  // one per repetition, interleaved
};

IdleCost idle_mailboxes(const Env& env, int n, pid_t daemon, const std::string& state_dir, int reps);

}  // namespace bench

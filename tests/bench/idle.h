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
  double rss_before_kib, rss_after_kib;              // the daemon's VmRSS
  double anon_before_kib, anon_after_kib;            // its RssAnon: the part that is not mapped segments or files
  double segments_before_kib, segments_after_kib;    // blocks allocated under the state directory
  double create_ms;                                  // creating all of them, one open(O_CREAT) each
  std::vector<double> ls_mailboxfs_ms, ls_tmpfs_ms;  // one per repetition, interleaved
  // Then `used` of them each carry one 64-byte message through libmailbox
  // (sent, received, closed) and sit idle again: what they hold just after
  // (segments_busy_kib), and once the daemon's idle sweep has given their
  // memory back (waited for up to 30 s: sweep_wait_s).
  int used;
  double segments_busy_kib;
  double anon_used_kib, segments_used_kib;
  double sweep_wait_s;

  // Resident memory per idle mailbox, never used: its segment pages plus
  // the daemon's heap for it (VmRSS would count mapped segment pages twice).
  double resident_kib() const {
    return (segments_after_kib - segments_before_kib + anon_after_kib - anon_before_kib) / mailboxes;
  }
  // The same for a mailbox idle again after one message.
  double resident_used_kib() const {
    return resident_kib() + (segments_used_kib - segments_after_kib + anon_used_kib - anon_after_kib) / used;
  }
};

// n empty default mailboxes (no setxattr: capacity 64, max_message 1 MiB).
IdleCost idle_mailboxes(const Env& env, int n, pid_t daemon, const std::string& state_dir, int reps);

}  // namespace bench

// SPDX-License-Identifier: MIT
// `make bench QUICK=1` keeps working: it runs every mechanism and metric once
// and produces numbers. Never asserts timings.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "harness.h"

namespace {

TEST(BenchSmoke, QuickRunProducesNumbersForEveryMechanism) {
  const std::string bin = mt::daemon_binary();
  const std::string out = bin.substr(0, bin.rfind('/'));
  const std::string root = out.substr(0, out.rfind('/'));
  if (!std::ifstream(out + "/bench") || !std::ifstream(out + "/bench-floor"))
    GTEST_SKIP() << "out/bench or out/bench-floor not built";
  auto r = mt::sh("cd " + mt::q(root) + " && tests/bench/run.sh " + mt::q(out) + " --quick", 120000);
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream csv(out + "/bench-quick.csv");
  std::stringstream ss;
  ss << csv.rdbuf();
  const std::string text = ss.str();
  auto has = [&](const std::string& row) { return text.find("\n" + row + ",") != std::string::npos; };
  for (const char* mech : {"pipe", "fifo", "seqpacket", "posix_mq", "sysv_mq", "ref_ring", "boost_mq", "libmailbox",
                           "fuse_floor", "fs_datagram", "fs_file", "lib_to_file", "file_to_lib", "libmailbox_default",
                           "fs_datagram_default", "fs_file_default"})
    EXPECT_TRUE(has(std::string("msgs/s 64 B,") + mech)) << mech << "\n" << text;
  // Every other metric, for the mechanisms the issue names.
  for (const char* row : {"msgs/s 4 KiB,libmailbox", "msgs/s 1 MiB,libmailbox", "msgs/s 1 MiB,pipe",
                          "RTT median us 64 B,fuse_floor", "RTT p99 us 64 B,libmailbox", "msgs/s 64 B 2x2,boost_mq",
                          "msgs/s 64 B 4x4,libmailbox", "msgs/s 64 B 4x4,fs_datagram", "release 50 ms,fs_datagram",
                          "release 50 ms,libmailbox", "idle daemon VmRSS KiB,mailboxfs", "idle segment KiB,mailboxfs",
                          "idle ls -l ms,mailboxfs", "msgs/s 4 KiB,libmailbox_default",
                          "faults/msg 4 KiB,libmailbox_default", "idle resident KiB per default mailbox,mailboxfs",
                          "idle resident KiB per default mailbox after one message,mailboxfs"})
    EXPECT_TRUE(has(row)) << row << "\n" << text;
  EXPECT_FALSE(has("msgs/s 1 MiB,posix_mq")) << "n/a must stay out of the CSV";
  // Zero is a broken measurement, except for a daemon's CPU time (none on the fast paths).
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    EXPECT_TRUE(line.rfind("daemon CPU", 0) == 0 || line.find(",0,") == std::string::npos)
        << "a zero measurement: " << line;
  // The page embeds the chart, or says why it was skipped.
  std::ifstream md(out + "/bench-quick.md");
  std::stringstream page;
  page << md.rdbuf();
  EXPECT_TRUE(page.str().find("](bench-quick.png)") != std::string::npos ||
              page.str().find("Chart skipped") != std::string::npos)
      << page.str();
}

}  // namespace

// `make bench QUICK=1` keeps working: it runs every mechanism once and
// produces numbers. Never asserts timings.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "harness.h"

namespace {

TEST(BenchSmoke, QuickRunProducesNumbersForEveryMechanism) {
  const std::string bin = mt::daemon_binary();
  const std::string out = bin.substr(0, bin.rfind('/'));
  const std::string root = out.substr(0, out.rfind('/'));
  std::ifstream probe(out + "/bench");
  if (!probe) GTEST_SKIP() << "out/bench not built";
  auto r = mt::sh("cd " + mt::q(root) + " && tests/bench/run.sh " + mt::q(out) + " --quick", 120000);
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream csv(out + "/bench-quick.csv");
  std::stringstream ss;
  ss << csv.rdbuf();
  const std::string text = ss.str();
  for (const char* mech : {"pipe", "seqpacket", "posix_mq", "sysv_mq", "ref_ring", "libmailbox",
                           "fs_datagram", "fs_file"})
    EXPECT_NE(text.find(std::string("msgs/s 64 B,") + mech + ","), std::string::npos) << mech << "\n" << text;
  EXPECT_EQ(text.find(",0,"), std::string::npos) << "a zero measurement:\n" << text;
}

}  // namespace

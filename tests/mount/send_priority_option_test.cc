// SPDX-License-Identifier: MIT
// -o send_priority: the default priority of what each open file sends, as
// user.mailbox.send_priority sets it per mailbox; refused above 0 on a
// Redis mount (one list in send order), at mount time, as -o user_max_bytes is.
#include <gtest/gtest.h>

#include "../common/redis_server.h"
#include "harness.h"

namespace {

TEST(SendPriorityOption, IsEveryNewMailboxsDefaultOnALocalMount) {
  mt::Mount m("send_priority=7");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box").status, 0);
  EXPECT_EQ(m.xattr("box", "send_priority"), "7");
}

TEST(SendPriorityOption, AboveZeroIsRefusedOnARedisMount) {
  testredis::Server server;
  ASSERT_TRUE(server.ready()) << "redis-server did not start (scripts/deps.sh test installs it)";
  const std::string be = "backend=" + server.url();
  mt::Mount refused(be + ",send_priority=2");
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.daemon_stderr().find(
                "-o send_priority above 0 cannot be kept by a Redis mount (-o backend=...): not supported"),
            std::string::npos)
      << refused.daemon_stderr();
  mt::Mount fine(be + ",send_priority=0");
  ASSERT_TRUE(fine.ok()) << fine.daemon_stderr();
  ASSERT_EQ(fine.sh("touch box && echo x > box && cat box").out, "x\n");
}

}  // namespace

// SPDX-License-Identifier: MIT
// A daemon killed with messages queued: fast-path peers carry on without it,
// and a daemon restarted on the same mountpoint and state directory
// re-attaches the segments, so the namespace and the messages survive.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include <mailbox/mailbox.hpp>

#include "harness.h"

namespace {

using mailbox::Mailbox;
using namespace std::chrono_literals;

using mt::q;

// Starts a second daemon on `m`'s mountpoint and state directory and waits
// until the mount answers again.
bool restart(const mt::Mount& m, std::unique_ptr<mt::Proc>* daemon) {
  *daemon = std::make_unique<mt::Proc>("exec " + q(mt::daemon_binary()) + " -f -o state_dir=" + q(m.state_dir()) + " " +
                                       q(m.dir()));
  // Mounted (a plain directory also lists) and answering (a dead mount does not).
  return mt::wait_until([&] {
    return mt::sh("grep -q ' " + m.dir() + " fuse.mailboxfs ' /proc/mounts && ls " + q(m.dir())).status == 0;
  });
}

TEST(Restart, QueuedMessagesAndNamesSurviveADaemonKill) {
  mt::Mount m;
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("mkdir -p jobs/high empty && touch jobs/high/box dgram && chmod 640 dgram && "
                 "setfattr -n user.mailbox.framing -v datagram dgram && "
                 "setfattr -n user.mailbox.capacity -v 7 dgram && "
                 "echo first > jobs/high/box && echo second > jobs/high/box && "
                 "mv jobs/high/box jobs/high/renamed && touch gone && rm gone")
                .status,
            0);
  auto fast = Mailbox::open(m.path("dgram"));
  ASSERT_TRUE(fast);
  ASSERT_EQ(fast->send("before"), 0);

  ASSERT_TRUE(m.stop(SIGKILL));
  EXPECT_NE(mt::sh("ls " + q(m.dir())).status, 0);  // the mount is dead
  // The fast path does not need the daemon.
  ASSERT_EQ(fast->send("during 1"), 0);
  ASSERT_EQ(fast->send("during 2"), 0);
  std::string got;
  ASSERT_EQ(fast->try_receive(got), 0);
  EXPECT_EQ(got, "before");

  // A daemon that fails to start on it leaves the state for the next one.
  auto failed = mt::sh(q(mt::daemon_binary()) + " -f -o state_dir=" + q(m.state_dir()) + ",no_such_option " +
                       q(m.dir()));
  EXPECT_NE(failed.status, 0);
  std::unique_ptr<mt::Proc> second;
  ASSERT_TRUE(restart(m, &second)) << second->finish(100).err;
  auto r = m.sh(
      "find . | sort; stat -c '%n %a' dgram; getfattr --only-values -n user.mailbox.framing dgram; echo;"
      "getfattr --only-values -n user.mailbox.capacity dgram; echo");
  EXPECT_EQ(r.out,
            ".\n./dgram\n./empty\n./jobs\n./jobs/high\n./jobs/high/renamed\n"
            "dgram 640\ndatagram\n7\n")
      << r.err;
  EXPECT_EQ(m.sh("cat jobs/high/renamed; cat jobs/high/renamed").out, "first\nsecond\n");
  EXPECT_EQ(m.xattr("dgram", "messages"), "2");
  EXPECT_EQ(m.xattr("dgram", "sent"), "3");
  EXPECT_EQ(m.sh("dd bs=64 count=1 status=none if=dgram; echo; dd bs=64 count=1 status=none if=dgram").out,
            "during 1\nduring 2");
  // The peer's mapping is the re-attached segment: both paths still meet.
  ASSERT_EQ(fast->send("after"), 0);
  EXPECT_EQ(m.sh("dd bs=64 count=1 status=none if=dgram").out, "after");
  ASSERT_EQ(m.sh("echo new > fresh && cat fresh").out, "new\n");  // new inodes do not collide

  mt::sh("fusermount3 -u " + q(m.dir()));
  EXPECT_TRUE(second->exits());
  EXPECT_EQ(mt::sh("grep -c ' " + m.dir() + " ' /proc/mounts").out, "0\n");  // the dead mount was replaced, not covered
  EXPECT_NE(second->finish().err.find("re-attached 2 mailboxes (4 messages) and 3 directories"), std::string::npos);
}

TEST(Restart, CleanStopLeavesNothingToReattach) {
  mt::Mount m;
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("echo kept > box").status, 0);
  ASSERT_TRUE(m.stop(SIGTERM));  // a clean stop frees every segment
  std::unique_ptr<mt::Proc> second;
  ASSERT_TRUE(restart(m, &second)) << second->finish(100).err;
  EXPECT_EQ(m.sh("ls | wc -l").out, "0\n");
  mt::sh("fusermount3 -u " + q(m.dir()));
  EXPECT_TRUE(second->exits());
  EXPECT_EQ(second->finish().err.find("re-attached"), std::string::npos);
}

}  // namespace

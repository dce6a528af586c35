// SPDX-License-Identifier: MIT
// Ports are files: create, send, receive, inspect, rename, delete, with the
// shell tools a user would reach for.
#include <gtest/gtest.h>

#include "harness.h"

namespace {

using mt::Mount;

TEST(Files, TouchEchoCat) {
  Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  auto r = m.sh("touch box && echo hello > box && cat box");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_EQ(m.daemon_stderr(), "");
}

TEST(Files, TouchSendsNothingAndOpenDoesNotTruncate) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; echo a > box; echo b > box; touch box; : > box;"
      "getfattr --only-values -n user.mailbox.messages box; echo;"
      "cat box; cat box; dd if=box iflag=nonblock bs=64K count=1 status=none 2>/dev/null; echo rc=$?");
  EXPECT_EQ(r.out, "2\na\nb\nrc=1\n") << r.err;  // then nothing: a non-blocking read fails
}

TEST(Files, EachOpenReceivesExactlyOneMessage) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "printf 'one\\ntwo\\n' > box; printf three > box;"
      "a=$(cat box); b=$(cat box); echo \"[$a][$b]\";"
      "python3 -c \"import sys; print(repr(open('box').read()))\" < /dev/null & P=$!;"
      "until getfattr --only-values -n user.mailbox.blocked_receivers box | grep -qw $P; do sleep 0.01; done;"
      "printf 'py' > box; wait");
  EXPECT_EQ(r.out, "[one\ntwo][three]\n'py'\n") << r.err;
}

TEST(Files, LsShowsBacklogAndTimes) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; stat -c %s box; printf 12345 > box; printf 678 > box; stat -c %s box;"
      "ls -l box | awk '{print $5}'; cat box >/dev/null; stat -c %s box");
  EXPECT_EQ(r.out, "0\n8\n8\n3\n") << r.err;
  // mtime follows the last send, atime the last receive.
  r = m.sh(
      "touch -d '2001-01-01 UTC' new; stat -c %Y new; echo x > new; s=$(stat -c %Y new);"
      "[ $s -ge $(( $(date +%s) - 5 )) ] && echo fresh-mtime; touch -a -d 2001-01-01 new;"
      "cat new >/dev/null; [ $(stat -c %X new) -ge $(( $(date +%s) - 5 )) ] && echo fresh-atime");
  EXPECT_EQ(r.out, "978307200\nfresh-mtime\nfresh-atime\n") << r.err;
}

TEST(Files, NamespacesRenameDelete) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "mkdir jobs && touch jobs/high jobs/low && ls jobs | tr '\\n' ' '; echo;"
      "echo urgent > jobs/high; mv jobs/high jobs/urgent; cat jobs/urgent;"
      "rmdir jobs 2>&1 | sed 's/.*: //'; rm jobs/urgent jobs/low; rmdir jobs && echo gone; ls | wc -l");
  EXPECT_EQ(r.out, "high low \nurgent\nDirectory not empty\ngone\n0\n") << r.err;
}

TEST(Files, MvOverAMailboxReplacesIt) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh("echo old > a; echo new > b; mv b a; cat a; ls");
  EXPECT_EQ(r.out, "new\na\n") << r.err;
}

TEST(Files, MknodCreatesAMailbox) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "python3 -c \"import os,stat; os.mknod('box', 0o640 | stat.S_IFREG)\" && stat -c '%A %s' box;"
      "mkfifo fifo 2>&1 | sed 's/.*: //'; ln box hard 2>&1 | sed 's/.*: //';"
      "ln -s box soft 2>&1 | sed 's/.*: //'; ls");
  EXPECT_EQ(r.out, "-rw-r----- 0\nOperation not permitted\nOperation not permitted\nOperation not permitted\nbox\n")
      << r.err;
}

TEST(Files, BadNamesAreRejectedAndNothingIsCreated) {
  Mount m;
  ASSERT_TRUE(m.ok());
  const std::string longname(256, 'x'), okname(255, 'y');
  auto r = m.sh("touch " + longname +
                " 2>&1 | sed 's/.*: //'; touch $'bad\\x01name' 2>&1 | sed 's/.*: //';"
                "mkdir $'dir\\x7f' 2>&1 | sed 's/.*: //'; touch $'\\xff\\xfe' 2>&1 | sed 's/.*: //';"
                "touch " +
                okname + " && ls | wc -l");
  EXPECT_EQ(r.out, "File name too long\nInvalid argument\nInvalid argument\nInvalid argument\n1\n") << r.err;
}

TEST(Files, XattrsShowSettingsAndCounters) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh("touch box; echo a > box; echo b > box; cat box > /dev/null; getfattr -d -m - box");
  for (const char* want :
       {"user.mailbox.capacity=\"64\"", "user.mailbox.max_message=\"1048576\"", "user.mailbox.framing=\"file\"",
        "user.mailbox.timeout_ms=\"0\"", "user.mailbox.messages=\"1\"", "user.mailbox.bytes=\"2\"",
        "user.mailbox.sent=\"2\"", "user.mailbox.received=\"1\"", "user.mailbox.blocked_senders=\"\"",
        "user.mailbox.blocked_receivers=\"\""})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << " not in\n" << r.out;
}

// Only user.* exists: the other namespaces are unsupported (EOPNOTSUPP, which ls caches per
// device; python names it ENOTSUP), not merely empty (ENODATA, which cost `ls -l` two round trips per entry).
TEST(Files, ForeignXattrNamespacesAreUnsupported) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; mkdir dir; python3 -c \"\nimport errno, os\n"
      "for f in ('box', 'dir', 'pid'):\n"
      "  for n in ('security.selinux', 'system.posix_acl_access', 'trusted.x', 'user.other'):\n"
      "    try: os.getxattr(f, n); print('data')\n"
      "    except OSError as e: print(f, n, errno.errorcode[e.errno])\n"
      "  try: os.removexattr(f, 'security.selinux')\n"
      "  except OSError as e: print(f, 'remove', errno.errorcode[e.errno])\n\"; ls -l box | cut -c1-10");
  std::string want;
  for (const char* f : {"box", "dir", "pid"}) {
    for (const char* n : {"security.selinux", "system.posix_acl_access", "trusted.x"})
      want += std::string(f) + " " + n + " ENOTSUP\n";
    want += std::string(f) + " user.other ENODATA\n" + f + " remove ENOTSUP\n";
  }
  EXPECT_EQ(r.out, want + "-rw-r--r--\n") << r.err;
}

TEST(Files, SetfattrChangesSettingsAndRejectsBadValues) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; setfattr -n user.mailbox.capacity -v 3 box && setfattr -n user.mailbox.framing -v line box"
      " && setfattr -n user.mailbox.max_message -v 4K box && setfattr -n user.mailbox.timeout_ms -v 50 box;"
      "for v in capacity=-1 capacity=lots framing=packet max_message=0 timeout_ms=soon; do"
      "  setfattr -n user.mailbox.${v%%=*} -v ${v#*=} box 2>&1 | sed 's/.*: //'; done;"
      "setfattr -n user.mailbox.messages -v 9 box 2>&1 | sed 's/.*: //';"
      "setfattr -n user.other -v 1 box 2>&1 | sed 's/.*: //';"
      "for a in capacity framing max_message timeout_ms; do getfattr --only-values -n user.mailbox.$a box; echo; done;"
      "setfattr -n user.mailbox.capacity -v unbounded box; getfattr --only-values -n user.mailbox.capacity box");
  EXPECT_EQ(r.out,
            "Invalid argument\nInvalid argument\nInvalid argument\nInvalid argument\nInvalid argument\n"
            "Operation not permitted\nOperation not supported\n3\nline\n4096\n50\nunbounded")
      << r.err;
}

TEST(Files, ResizeKeepsQueuedMessagesInOrder) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; for i in 1 2 3 4 5; do echo $i > box; done;"
      "setfattr -n user.mailbox.capacity -v 2 box; setfattr -n user.mailbox.max_message -v 100 box;"
      "getfattr --only-values -n user.mailbox.messages box; echo;"
      "for i in 1 2 3 4 5; do cat box; done | tr '\\n' ' '");
  EXPECT_EQ(r.out, "5\n1 2 3 4 5 ") << r.err;
}

TEST(Files, DfShowsTheQuotaInUse) {
  Mount m("max_bytes=64M");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; df -B1 --output=size,used . | tail -1;"
      "head -c 500000 /dev/zero > box; df -B1 --output=used . | tail -1");
  long long size = 0, used0 = -1, used1 = 0;
  ASSERT_EQ(sscanf(r.out.c_str(), "%lld %lld %lld", &size, &used0, &used1), 3) << r.out << r.err;
  EXPECT_EQ(size, 64ll << 20);
  EXPECT_EQ(used0, 0);
  EXPECT_GE(used1, 500000);
  EXPECT_LE(used1, 520000);
}

TEST(Files, LargeFileMessageRoundTrips) {
  Mount m;
  ASSERT_TRUE(m.ok());
  // Larger than one FUSE request: the writes arrive in pieces, still one message.
  auto r = m.sh(
      "head -c 900000 /dev/urandom > /tmp/mbx.$$; cp /tmp/mbx.$$ box;"
      "cat box | cmp - /tmp/mbx.$$ && echo same; rm -f /tmp/mbx.$$");
  EXPECT_EQ(r.out, "same\n") << r.err;
}

TEST(Files, MessageLargerThanMaxMessageIsRefused) {
  Mount m("max_message=1000");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "head -c 1001 /dev/zero > box; echo rc=$?; getfattr --only-values -n user.mailbox.messages box;"
      "head -c 1000 /dev/zero > box; echo; getfattr --only-values -n user.mailbox.messages box");
  EXPECT_EQ(r.out, "rc=1\n0\n1") << r.err;
  EXPECT_NE(r.err.find("Message too long"), std::string::npos) << r.err;
}

TEST(Files, UnboundedIsLimitedByTheQuota) {
  Mount m("capacity=unbounded,max_bytes=64K,max_message=1K,framing=datagram");
  ASSERT_TRUE(m.ok());
  auto r = m.sh(
      "touch box; python3 -c \"\n"
      "import os, errno\n"
      "fd = os.open('box', os.O_WRONLY)\n"
      "n = 0\n"
      "try:\n"
      "    while True:\n"
      "        os.write(fd, b'x' * 1000); n += 1\n"
      "except OSError as e:\n"
      "    print(n > 50, errno.errorcode[e.errno])\n\"");
  EXPECT_EQ(r.out, "True ENOSPC\n") << r.err;
}

}  // namespace

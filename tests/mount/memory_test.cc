// Mount tests of the daemon's memory: bytes written but not yet sent (file
// framing's message until close) count toward the mount's quota and toward
// the writing user's -o user_max_bytes, so an unprivileged user cannot grow
// the daemon without bound. Writers run as `nobody`.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <mailbox/mailbox.hpp>

#include "harness.h"

namespace {

using mt::q;

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
constexpr long kMiB = 1 << 20;

void open_up(const mt::Mount& m) {
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(mt::sh("chmod 0755 " + q(tmp)).status, 0);
}

// The first line of file `path` once it is whole (getline also returns a
// line the writer has not finished: "5 " of "5 122\n").
bool first_line(const std::string& path, std::string* line) {
  std::ifstream f(path);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t nl = all.find('\n');
  if (nl == std::string::npos) return false;
  *line = all.substr(0, nl);
  return true;
}

// The daemon's resident memory in bytes (VmRSS: heap and the segment pages it touched).
long rss(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) * 1024;
  return -1;
}

long used_bytes(const mt::Mount& m) {
  struct statvfs s {};
  if (statvfs(m.dir().c_str(), &s) != 0) return -1;
  return static_cast<long>((s.f_blocks - s.f_bfree) * s.f_frsize);
}

// A python writer as `nobody`: opens `fds` descriptors of `file` and writes
// 1 MiB to each in turn, without closing, until a write fails; prints
// "<MiB written> <errno>" and waits, holding them open, until killed.
std::string writer(const std::string& file, int fds) {
  return std::string(kNobody) + "/usr/bin/python3 -c " +
         q("import os, signal, sys\n"
           "fds = [os.open('" +
           file + "', os.O_WRONLY) for _ in range(" + std::to_string(fds) +
           ")]\n"
           "n, err = 0, 0\n"
           "try:\n"
           "    while n < 100000:\n"
           "        for fd in fds:\n"
           "            os.write(fd, b'x' * (1 << 20)); n += 1\n"
           "except OSError as e:\n"
           "    err = e.errno\n"
           "print(n, err, flush=True)\n"
           "signal.pause()\n");
}

TEST(MemoryBound, UnsentFileBytesCountTowardTheQuotaAndBoundTheDaemon) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  constexpr long kQuota = 32 * kMiB;
  mt::Mount m("allow_other,root_mode=1777,max_bytes=32M");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  ASSERT_EQ(m.sh("touch f && chmod 666 f && setfattr -n user.mailbox.max_message -v 24M f").status, 0);
  const long before = rss(m.daemon_pid());
  ASSERT_GT(before, 0);

  // 12 descriptors could buffer 12 x 24 MiB; the quota stops them at 32 MiB.
  const std::string out = m.dir() + "/../writer.out";
  mt::Proc w(writer("f", 12) + " > " + q(out), m.dir());
  std::string line;
  ASSERT_TRUE(mt::wait_until([&] { return first_line(out, &line); }, 60000)) << "the writer never finished writing";
  long mib = 0;
  int err = 0;
  std::istringstream(line) >> mib >> err;
  EXPECT_EQ(err, ENOSPC) << line;
  EXPECT_LE(mib * kMiB, kQuota) << line;
  EXPECT_GE(mib * kMiB, kQuota - 2 * kMiB) << line;  // nothing else uses the quota

  // Still held open: df shows the held bytes (less those of the descriptor
  // whose write failed: its message was refused whole), the daemon no more.
  EXPECT_GE(used_bytes(m), (mib - 4) * kMiB);
  const long during = rss(m.daemon_pid());
  EXPECT_LE(during - before, kQuota + 16 * kMiB) << "daemon RSS grew from " << before << " to " << during;

  // Killed by a signal: the unsent messages are dropped and their quota given back.
  w.signal_group(SIGKILL);
  w.finish(10000);
  EXPECT_TRUE(mt::wait_until([&] { return used_bytes(m) == 0; }, 10000)) << used_bytes(m);
  EXPECT_EQ(m.xattr("f", "messages"), "0");
}

TEST(MemoryBound, EachUserIsBoundedByUserMaxBytes) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  mt::Mount m("allow_other,root_mode=1777,max_bytes=64M,user_max_bytes=8M");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  open_up(m);
  ASSERT_EQ(m.sh("touch f dg && chmod 666 f dg && setfattr -n user.mailbox.max_message -v 24M f && "
                 "setfattr -n user.mailbox.framing -v datagram dg && "
                 "setfattr -n user.mailbox.capacity -v unbounded dg")
                .status,
            0);

  // Three messages queued by nobody count toward nobody's 8 MiB.
  mt::Run r = m.sh(std::string(kNobody) +
                   "/usr/bin/python3 -c \"import os\nfd = os.open('dg', os.O_WRONLY)\n"
                   "for _ in range(3): os.write(fd, b'q' * (1000 * 1000))\n\"");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.xattr("dg", "messages"), "3");

  const std::string out = m.dir() + "/../writer.out";
  mt::Proc w(writer("f", 4) + " > " + q(out), m.dir());
  std::string line;
  ASSERT_TRUE(mt::wait_until([&] { return first_line(out, &line); }, 60000));
  long mib = 0;
  int err = 0;
  std::istringstream(line) >> mib >> err;
  EXPECT_EQ(err, EDQUOT) << line;
  EXPECT_EQ(mib, 5) << line;  // 8 MiB less the 3 MB queued

  // Another user is not held back by nobody's bound.
  r = m.sh(
      "python3 -c \"import os\nfd = os.open('f', os.O_WRONLY)\n"
      "for _ in range(7): os.write(fd, b'r' * (1 << 20))\nos.close(fd)\n\"");
  EXPECT_EQ(r.status, 0) << r.err;

  // nobody now holds 4 MiB (the descriptor whose write failed dropped its
  // message) and has 3 MB queued: one more datagram of 1 MB fits, a second
  // does not, and fits again once the queued ones were received (the
  // daemon notices at the next write).
  const std::string more =
      std::string(kNobody) +
      "/usr/bin/python3 -c \"import os\nos.write(os.open('dg', os.O_WRONLY), b'm' * (1000 * 1000))\n\"";
  r = m.sh(more);
  EXPECT_EQ(r.status, 0) << r.err;
  r = m.sh(more);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("Disk quota exceeded"), std::string::npos) << r.err;
  EXPECT_EQ(m.xattr("dg", "messages"), "4");
  r = m.sh("python3 -c \"import os\nfd = os.open('dg', os.O_RDONLY)\nfor _ in range(4): os.read(fd, 1 << 20)\n\"");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.xattr("dg", "messages"), "0");
  r = m.sh(more);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(m.xattr("dg", "messages"), "1");
  w.signal_group(SIGKILL);
  w.finish(10000);
}

TEST(MemoryBound, WhatADeadDaemonHeldIsGivenBackToTheQuota) {
  mt::Mount m("max_bytes=32M");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch f && setfattr -n user.mailbox.max_message -v 8M f").status, 0);
  const std::string out = m.dir() + "/../writer.out";
  // A writer holds 4 MiB unsent in the daemon, which is then killed.
  mt::Proc w(
      "/usr/bin/python3 -c \"import os, signal\nfd = os.open('f', os.O_WRONLY)\n"
      "for _ in range(4): os.write(fd, b'x' * (1 << 20))\nprint('ready', flush=True)\n"
      "signal.pause()\n\" > " +
          q(out),
      m.dir());
  ASSERT_TRUE(mt::wait_until([&] { return std::ifstream(out).peek() == 'r'; }, 60000));
  EXPECT_EQ(used_bytes(m), 4 * kMiB);

  ASSERT_TRUE(m.stop(SIGKILL));  // dies holding the writer's 4 MiB
  w.signal_group(SIGKILL);
  w.finish(10000);
  mt::Proc second("exec " + q(mt::daemon_binary()) + " -f -o state_dir=" + q(m.state_dir()) + ",max_bytes=32M " +
                  q(m.dir()));
  // Up once statfs is the new daemon's (its 32 MiB): the dead daemon's mount
  // entry, or the directory beneath once that is gone, answered ls too.
  ASSERT_TRUE(mt::wait_until(
      [&] {
        struct statvfs s {};
        return statvfs(m.dir().c_str(), &s) == 0 && s.f_blocks * s.f_frsize == 32 * kMiB;
      },
      10000));
  EXPECT_EQ(used_bytes(m), 0);
  mt::sh("fusermount3 -u " + q(m.dir()));
  EXPECT_TRUE(second.exits_within(10000));
}

// Pages of segment file `path` in memory, looked at through a mapping of
// our own (mincore: the file's pages, whoever touched them); -1 if unreadable.
long resident_pages(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  struct stat st {};
  void* p = ::fstat(fd, &st) == 0 ? ::mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (p == MAP_FAILED) return -1;
  std::vector<unsigned char> v((st.st_size + 4095) / 4096);
  long n = ::mincore(p, st.st_size, v.data()) == 0 ? 0 : -1;
  for (unsigned char c : v) n += n >= 0 ? (c & 1) : 0;
  ::munmap(p, st.st_size);
  return n;
}

// Message i of the idle test: its length and bytes follow from i alone.
std::string idle_msg(int i) {
  std::string m(8 + (i * 7919) % 4000, '\0');
  for (size_t k = 0; k < m.size(); k++) m[k] = static_cast<char>('a' + (i * 31 + k * 7) % 26);
  return m;
}

// Reads one byte from `fd`, or fails at the hang guard.
bool read_byte(int fd) {
  pollfd p{fd, POLLIN, 0};
  char c;
  return ::poll(&p, 1, mt::kHang) == 1 && ::read(fd, &c, 1) == 1;
}

// A default mailbox left empty gives its memory back on the daemon's own (its
// idle sweep), while a library producer and consumer keep it mapped and wait
// idle; then they go on, and every message arrives whole and in order.
TEST(MemoryIdle, AnIdleMailboxGivesItsMemoryBackWhileClientsKeepItMapped) {
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box").status, 0);  // the defaults: capacity 64, max_message 1 MiB
  const std::string seg = m.xattr("box", "segment");
  ASSERT_FALSE(seg.empty());
  constexpr int kRounds = 2, kPer = 2000;
  int idle[2], go[2];
  ASSERT_EQ(::pipe(idle), 0);
  ASSERT_EQ(::pipe(go), 0);
  auto client = [&](bool producer) {
    return mt::child([&] {
      auto b = mailbox::Mailbox::open(m.path("box"), {.send = producer, .receive = !producer});
      if (!b) return 10;
      std::string msg;
      for (int r = 0, i = 0; r < kRounds; r++) {
        for (const int end = i + kPer; i < end; i++) {
          if (producer ? b->send(idle_msg(i)) != 0 : b->receive(msg) != 0 || msg != idle_msg(i)) return 11;
        }
        // Idle, still mapped, until the test has seen the memory go.
        if (::write(idle[1], "i", 1) != 1 || !read_byte(go[0])) return 12;
      }
      return 0;
    });
  };
  const pid_t producer = client(true), consumer = client(false);
  for (int r = 0; r < kRounds; r++) {
    ASSERT_TRUE(read_byte(idle[0]) && read_byte(idle[0])) << "round " << r;
    EXPECT_TRUE(mt::wait_until([&] { return resident_pages(seg) == 1; }))
        << "round " << r << ": " << resident_pages(seg) << " pages";
    ASSERT_EQ(::write(go[1], "gg", 2), 2);
  }
  EXPECT_EQ(mt::finish(producer), 0);
  EXPECT_EQ(mt::finish(consumer), 0);
  for (int fd : {idle[0], idle[1], go[0], go[1]}) ::close(fd);
  EXPECT_EQ(m.xattr("box", "sent"), std::to_string(kRounds * kPer));
  EXPECT_EQ(m.xattr("box", "received"), std::to_string(kRounds * kPer));
  EXPECT_EQ(m.xattr("box", "lost"), "0");
}

}  // namespace

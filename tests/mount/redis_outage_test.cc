// SPDX-License-Identifier: MIT
// Redis mounts when the server goes away and comes back, and under many
// waiters: daemons on separate mount points stand in for hosts, sharing one
// private redis-server that each test starts (with an append-only file, so
// that it comes back with its data) on a unix socket in its own temporary
// directory, and stops and starts again itself.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../common/redis_mounts.h"
#include "harness.h"

namespace {

using mt::Mount;
using mt::Proc;
using testredis::cli;
using testredis::lines;

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

// user.mailbox.<name> through an open file: no lookup, so it answers while
// the server is away (the name cannot be looked up then).
std::string fxattr(int fd, const std::string& name) {
  char buf[65536];
  const ssize_t n = ::fgetxattr(fd, ("user.mailbox." + name).c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, size_t(n)) : std::string();
}

bool lists(const std::string& words, pid_t pid) {
  const std::vector<pid_t> tree = mt::process_tree(pid);
  std::istringstream in(words);
  for (std::string w; in >> w;)
    for (pid_t t : tree)
      if (w == std::to_string(t)) return true;
  return false;
}

// Daemons from daemon() on a server with an append-only file: every write
// it acknowledged is on disk before the reply (appendfsync always).
class RedisOutage : public testredis::ServerDaemons {
 protected:
  RedisOutage() : ServerDaemons("t", {"--appendonly", "yes", "--appendfsync", "always"}) {}
  // Readiness after a restart: the daemon's subscriber is back (it has then
  // also tried its command connection again), as its log says.
  static bool back(const Mount& m, size_t times = 1) {
    return mt::wait_until([&] { return count_of(m.daemon_stderr(), "subscribed again") >= times; });
  }
};

TEST_F(RedisOutage, CallsFailWithEioAndAParkedReceiverWaitsForTheServer) {
  auto a = daemon(), b = daemon();
  ASSERT_TRUE(a->ok() && b->ok());
  ASSERT_EQ(a->sh("touch box timed").status, 0);
  ASSERT_EQ(b->sh("setfattr -n user.mailbox.timeout_ms -v 3000 timed").status, 0);  // b's own setting
  Proc reader("cat box; echo rc=$?", b->dir());
  Proc timed("cat timed; echo rc=$?", b->dir());
  ASSERT_TRUE(b->wait_listed("box", "blocked_receivers", reader.pid())) << reader.finish().err << b->daemon_stderr();
  // Parked (or, on a loaded machine, already timed out: checked below either way).
  (void)b->wait_listed("timed", "blocked_receivers", timed.pid());
  // Open files made while the server answers: their calls reach the mailbox itself.
  const int w = ::open(b->path("box").c_str(), O_WRONLY);
  const int look = ::open(b->path("box").c_str(), O_RDONLY | O_NONBLOCK);
  const int r = ::open(a->path("box").c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(w, 0);
  ASSERT_GE(look, 0);
  ASSERT_GE(r, 0);

  server_.stop();
  // The send of b's open file fails at its close, on the mailbox where the
  // receiver is parked (which then looks at the store too).
  ASSERT_EQ(::write(w, "lost\n", 5), 5);  // file framing: buffered until the close
  errno = 0;
  EXPECT_EQ(::close(w), -1);
  EXPECT_EQ(errno, EIO);
  char buf[64];
  errno = 0;
  EXPECT_EQ(::read(r, buf, sizeof buf), -1);
  EXPECT_EQ(errno, EIO);
  // Through the other daemon, opened now: the open (if the name must be
  // looked up) or the close that sends fails (bash would not report the close).
  const int w2 = ::open(a->path("box").c_str(), O_WRONLY);
  if (w2 < 0) {
    EXPECT_EQ(errno, EIO);
  } else {
    ASSERT_EQ(::write(w2, "more\n", 5), 5);
    errno = 0;
    EXPECT_EQ(::close(w2), -1);
    EXPECT_EQ(errno, EIO);
  }
  const mt::Run ls = b->sh("ls");
  EXPECT_NE(ls.status, 0);
  EXPECT_NE(ls.err.find("Input/output error"), std::string::npos) << ls.err;
  EXPECT_NE(a->daemon_stderr().find("calls fail with EIO until it is back"), std::string::npos) << a->daemon_stderr();
  EXPECT_NE(b->daemon_stderr().find("calls fail with EIO until it is back"), std::string::npos) << b->daemon_stderr();
  // A parked receiver with a timeout_ms ends with ETIMEDOUT, not EIO.
  ASSERT_TRUE(timed.exits());
  const mt::Run t = timed.finish();
  EXPECT_EQ(t.out, "rc=1\n");
  EXPECT_NE(t.err.find("timed out"), std::string::npos) << t.err;
  // The other is still parked (b looked at the store for it and failed).
  EXPECT_TRUE(lists(fxattr(look, "blocked_receivers"), reader.pid())) << fxattr(look, "blocked_receivers");
  EXPECT_TRUE(reader.running());

  ASSERT_TRUE(server_.start());
  // Both daemons reconnect by themselves: no remount, no call needed.
  ASSERT_TRUE(back(*a));
  ASSERT_TRUE(back(*b));
  EXPECT_NE(b->daemon_stderr().find("connected again"), std::string::npos) << b->daemon_stderr();
  EXPECT_TRUE(lists(fxattr(look, "blocked_receivers"), reader.pid()));
  ASSERT_EQ(a->sh("echo wake > box").status, 0);
  ASSERT_TRUE(reader.exits());
  EXPECT_EQ(reader.finish().out, "wake\nrc=0\n");  // nothing of the failed sends came through
  EXPECT_EQ(a->xattr("box", "messages"), "0");
  ::close(look);
  ::close(r);
}

TEST_F(RedisOutage, AParkedSenderWaitsForTheServer) {
  auto a = daemon("capacity=1"), b = daemon("capacity=1");
  ASSERT_TRUE(a->ok() && b->ok());
  ASSERT_EQ(a->sh("echo first > box").status, 0);
  Proc sender("echo second > box; echo rc=$?", b->dir());
  ASSERT_TRUE(b->wait_listed("box", "blocked_senders", sender.pid()));
  const int r = ::open(b->path("box").c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(r, 0);

  server_.stop();
  char buf[64];
  errno = 0;  // a receive on the mailbox where the sender is parked: it looks at the store for it too
  EXPECT_EQ(::read(r, buf, sizeof buf), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_TRUE(lists(fxattr(r, "blocked_senders"), sender.pid())) << fxattr(r, "blocked_senders");
  EXPECT_TRUE(sender.running());

  ASSERT_TRUE(server_.start());
  ASSERT_TRUE(back(*a));
  ASSERT_TRUE(back(*b));
  EXPECT_EQ(a->sh("cat box").out, "first\n");
  ASSERT_TRUE(sender.exits());
  EXPECT_EQ(sender.finish().out, "rc=0\n");
  EXPECT_EQ(a->sh("cat box").out, "second\n");
  ::close(r);
}

// Stopped with SIGKILL (no shutdown flush) and started again on the same
// socket and directory: every send and receive that was acknowledged holds.
TEST_F(RedisOutage, AnAppendOnlyServerRestartedLosesAndRepeatsNothing) {
  constexpr int kMessages = 200;
  auto a = daemon("capacity=unbounded"), b = daemon("capacity=unbounded");
  ASSERT_TRUE(a->ok() && b->ok());
  ASSERT_EQ(a->sh("touch box").status, 0);
  // Each message: its number, a random payload and a checksum of both
  // (bash arithmetic: no process per message).
  const mt::Run sent =
      a->sh("for k in $(seq " + std::to_string(kMessages) +
            "); do p=$RANDOM$RANDOM$RANDOM; echo \"$k $p $(( (p % 1000000007 * 31 + k) % 1000000007 ))\" "
            "> box || exit 1; done");
  ASSERT_EQ(sent.status, 0) << sent.err;
  const std::string some = "for k in $(seq " + std::to_string(kMessages / 2) + "); do cat box || exit 1; done";
  const mt::Run first = b->sh(some);
  ASSERT_EQ(first.status, 0) << first.err;

  server_.stop(SIGKILL);
  ASSERT_TRUE(server_.start());
  // No readiness wait for the daemons: a connection the server closed is
  // replaced before the next call is sent.
  const mt::Run rest = b->sh(some);
  ASSERT_EQ(rest.status, 0) << rest.err;
  std::map<int, int> seen;
  for (auto& l : lines(first.out + rest.out)) {
    std::istringstream in(l);
    long long k = 0, p = 0, c = -1;
    ASSERT_TRUE(in >> k >> p >> c) << l;
    EXPECT_EQ(c, (p % 1000000007 * 31 + k) % 1000000007) << l;
    seen[int(k)]++;
  }
  EXPECT_EQ(seen.size(), size_t(kMessages));                     // nothing lost
  for (auto& [k, n] : seen) EXPECT_EQ(n, 1) << "message " << k;  // nothing twice
  EXPECT_EQ(a->xattr("box", "messages"), "0");
  EXPECT_EQ(a->xattr("box", "sent"), std::to_string(kMessages));
  EXPECT_EQ(a->xattr("box", "received"), std::to_string(kMessages));
}

// ---- many waiters --------------------------------------------------------------

// A process of `threads` threads, each receiving one message from `path`
// (file framing: open, read to the end) and writing it to `out` (one write
// under PIPE_BUF: whole). Exits 0 once every thread has its message.
pid_t reader_process(const std::string& path, int threads, int out) {
  return mt::child([=] {
    struct Arg {
      const std::string* path;
      int out;
    } arg{&path, out};
    auto run = [](void* p) -> void* {
      const Arg* a = static_cast<const Arg*>(p);
      const int fd = ::open(a->path->c_str(), O_RDONLY);
      if (fd < 0) return reinterpret_cast<void*>(1);
      std::string msg;
      char buf[256];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
        if (n < 0) return reinterpret_cast<void*>(1);
        msg.append(buf, size_t(n));
      }
      ::close(fd);
      return reinterpret_cast<void*>(::write(a->out, msg.data(), msg.size()) == ssize_t(msg.size()) ? 0 : 1);
    };
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 64 * 1024);  // hundreds of threads: small stacks
    std::vector<pthread_t> ts(static_cast<size_t>(threads));
    int failed = 0;
    for (auto& t : ts)
      if (pthread_create(&t, &at, run, &arg) != 0) return 2;
    for (auto& t : ts) {
      void* rc = nullptr;
      pthread_join(t, &rc);
      failed += rc != nullptr;
    }
    return failed ? 1 : 0;
  });
}

int threads_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string l; std::getline(f, l);)
    if (l.starts_with("Threads:")) return std::stoi(l.substr(8));
  return -1;
}

TEST_F(RedisOutage, AThousandBlockedReadersOnTwoDaemonsAreReleasedByAThirdsSends) {
  constexpr int kPerProcess = 250, kProcesses = 4, kReaders = kPerProcess * kProcesses;  // half on each daemon
  auto a = daemon(), b = daemon(), c = daemon();
  ASSERT_TRUE(a->ok() && b->ok() && c->ok());
  ASSERT_EQ(c->sh("touch box").status, 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  std::vector<pid_t> readers;
  for (int i = 0; i < kProcesses; i++)
    readers.push_back(reader_process((i % 2 ? a : b)->path("box"), kPerProcess, p[1]));
  ::close(p[1]);
  // Readiness: every reader is parked in its daemon.
  EXPECT_TRUE(a->wait_words("box", "blocked_receivers", kReaders / 2));
  EXPECT_TRUE(b->wait_words("box", "blocked_receivers", kReaders / 2));
  // A blocked read holds no thread of the daemon and no Redis connection of its own.
  for (Mount* m : {a.get(), b.get()}) EXPECT_LT(threads_of(m->daemon_pid()), 50) << "daemon " << m->daemon_pid();
  const int clients = int(lines(cli(server_, "CLIENT LIST")).size());
  EXPECT_LE(clients, 3 * 2 + 1);  // a command and a subscriber connection per daemon, and redis-cli's
  const mt::Run sent = c->sh("for k in $(seq " + std::to_string(kReaders) + "); do echo m$k > box || exit 1; done",
                             mt::kHang * 3);
  EXPECT_EQ(sent.status, 0) << sent.err;
  for (pid_t r : readers) EXPECT_EQ(mt::finish(r, mt::kHang * 3), 0);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) got.append(buf, size_t(n));
  ::close(p[0]);
  std::vector<std::string> all = lines(got);
  std::multiset<std::string> each(all.begin(), all.end());
  EXPECT_EQ(all.size(), size_t(kReaders));
  for (int k = 1; k <= kReaders; k++) EXPECT_EQ(each.count("m" + std::to_string(k)), 1u) << "m" << k;
  EXPECT_EQ(c->xattr("box", "messages"), "0");
  EXPECT_EQ(c->xattr("box", "received"), std::to_string(kReaders));
}

}  // namespace

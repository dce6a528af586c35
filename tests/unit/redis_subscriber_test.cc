// SPDX-License-Identifier: MIT
// The subscriber's keep-alive against a node the test plays itself, on a
// unix socket: the test reads what the subscriber sends and answers only
// what it chooses, so a node that hangs with its connection open is a node
// that stops answering. Readiness is what arrives on the socket (a PING, a
// new connection), each wait with a hang guard only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "base/unique_fd.h"
#include "redis/subscriber.h"

namespace {

using namespace mbx;
using namespace std::chrono_literals;

constexpr int kGuardMs = 20'000;  // hang guard of every wait
constexpr std::string_view kSubscribe = "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n";
constexpr std::string_view kPing = "*1\r\n$4\r\nPING\r\n";

// A listening unix socket in a temporary directory, both gone at the end.
class FakeNode {
 public:
  FakeNode() {
    char tmpl[] = "/tmp/mbxtest.fakenode.XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    path_ = dir_ + "/sock";
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_.get(), 8) != 0)
      listen_.reset();
  }
  ~FakeNode() {
    listen_.reset();
    if (!path_.empty()) ::unlink(path_.c_str());
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  bool ok() const { return listen_.valid(); }
  redis::Endpoint endpoint() const {
    redis::Endpoint ep;
    ep.unix_socket = true;
    ep.path = path_;
    return ep;
  }
  // The subscriber's next connection; invalid at the hang guard.
  UniqueFd accept() {
    pollfd pf{listen_.get(), POLLIN, 0};
    if (::poll(&pf, 1, kGuardMs) != 1) return UniqueFd();
    return UniqueFd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }

 private:
  std::string dir_, path_;
  UniqueFd listen_;
};

// Reads from `fd` until `got` ends with `want`; false at end of file or the hang guard.
bool read_until(int fd, std::string& got, std::string_view want) {
  while (!std::string_view(got).ends_with(want)) {
    pollfd pf{fd, POLLIN, 0};
    char buf[256];
    if (::poll(&pf, 1, kGuardMs) != 1) return false;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    got.append(buf, size_t(n));
  }
  return true;
}

// True once the peer closed `fd` (what it sent before is skipped); false at the hang guard.
bool closed(int fd) {
  for (;;) {
    pollfd pf{fd, POLLIN, 0};
    char buf[256];
    if (::poll(&pf, 1, kGuardMs) != 1) return false;
    if (::read(fd, buf, sizeof buf) <= 0) return true;
  }
}

// MSG_NOSIGNAL: an answer to a connection the subscriber left fails the test, not the binary.
bool say(int fd, std::string_view s) { return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size()); }

// A silent node is pinged; an answer keeps the connection, none makes the
// subscriber leave it (one log line) and connect again. A node that never
// answers SUBSCRIBE is left too. The keep-alive is the daemon's shortest
// (2 s), so that the test's own answers are never late on a loaded host.
TEST(RedisSubscriber, KeepAlivePingsASilentNodeAndLeavesItWhenNoAnswerComes) {
  FakeNode node;
  ASSERT_TRUE(node.ok());
  // No tick in the test's time: only the keep-alive writes after SUBSCRIBE.
  redis::Subscriber sub(
      node.endpoint(), "ch", std::chrono::minutes(10), 2s, [](std::string_view) {}, [](bool) {});
  UniqueFd first = node.accept();
  ASSERT_TRUE(first.valid());
  std::string got;
  ASSERT_TRUE(read_until(first.get(), got, kSubscribe)) << got;
  ASSERT_TRUE(say(first.get(), "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"));
  ASSERT_TRUE(sub.wait_subscriptions(1, 20s));
  got.clear();
  ASSERT_TRUE(read_until(first.get(), got, kPing)) << got;
  ASSERT_TRUE(say(first.get(), "*2\r\n$4\r\npong\r\n$0\r\n\r\n"));  // RESP2's answer while subscribed
  got.clear();
  ASSERT_TRUE(read_until(first.get(), got, kPing)) << "the answered connection was not kept: " << got;
  // No answer now: the node is left and the subscriber connects again.
  UniqueFd second = node.accept();
  ASSERT_TRUE(second.valid()) << "a node that stopped answering was kept";
  EXPECT_TRUE(closed(first.get()));
  EXPECT_FALSE(sub.subscribed());
  got.clear();
  ASSERT_TRUE(read_until(second.get(), got, kSubscribe)) << got;
  UniqueFd third = node.accept();  // SUBSCRIBE got no answer: left again
  ASSERT_TRUE(third.valid()) << "the subscriber waits for ever on a node that does not answer SUBSCRIBE";
  EXPECT_TRUE(closed(second.get()));
  got.clear();
  EXPECT_TRUE(read_until(third.get(), got, kSubscribe)) << got;
  EXPECT_EQ(sub.subscriptions(), 1u);
}

}  // namespace

// SPDX-License-Identifier: MIT
// epoll(7) on a plain mailbox file: readiness changes made through the file
// by other processes (a shell's echo, a cat) reach an epoll by the time
// their command has returned, level- and edge-triggered, both directions.
// (mq descriptors: tests/mq/conformance.cc, MqPoll.)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "harness.h"

namespace {

using mt::Mount;
using mt::q;

constexpr uint32_t kInOut = EPOLLIN | EPOLLOUT;

// The events of one epoll_wait(..., 0): 0 if none is ready.
uint32_t ready_now(int ep) {
  epoll_event out{};
  return epoll_wait(ep, &out, 1, 0) == 1 ? out.events & kInOut : 0;
}

class FilesEpoll : public ::testing::TestWithParam<bool> {
 protected:
  // A mailbox of one message, open read-write and watched by an epoll
  // (edge-triggered when the parameter says so).
  void SetUp() override {
    m_ = std::make_unique<Mount>();
    ASSERT_TRUE(m_->ok()) << m_->daemon_stderr();
    ASSERT_EQ(m_->sh("touch box && setfattr -n user.mailbox.capacity -v 1 box").status, 0);
    fd_ = open(m_->path("box").c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(fd_, 0) << strerror(errno);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(ep_, 0);
    epoll_event ev{};
    ev.events = kInOut | (GetParam() ? static_cast<uint32_t>(EPOLLET) : 0u);
    ASSERT_EQ(epoll_ctl(ep_, EPOLL_CTL_ADD, fd_, &ev), 0) << strerror(errno);
  }
  void TearDown() override {
    if (ep_ >= 0) close(ep_);
    if (fd_ >= 0) close(fd_);
  }
  std::unique_ptr<Mount> m_;
  int fd_ = -1, ep_ = -1;
};

TEST_P(FilesEpoll, SeesEachSendAndReceiveOfAnotherProcess) {
  EXPECT_EQ(ready_now(ep_), static_cast<uint32_t>(EPOLLOUT)) << "empty: writable only";
  if (GetParam()) {
    EXPECT_EQ(ready_now(ep_), 0u) << "edge-triggered: no new edge";
  }
  for (int round = 0; round < 3; round++) {
    ASSERT_EQ(m_->sh("echo hi > box").status, 0);
    EXPECT_EQ(ready_now(ep_), static_cast<uint32_t>(EPOLLIN)) << "round " << round << ": full, readable only";
    if (GetParam()) {
      EXPECT_EQ(ready_now(ep_), 0u) << "edge-triggered: no new edge";
    }
    mt::Run r = m_->sh("cat box");
    ASSERT_EQ(r.out, "hi\n");
    EXPECT_EQ(ready_now(ep_), static_cast<uint32_t>(EPOLLOUT)) << "round " << round << ": empty again";
  }
}

INSTANTIATE_TEST_SUITE_P(LevelAndEdge, FilesEpoll, ::testing::Values(false, true),
                         [](const auto& i) { return i.param ? "EdgeTriggered" : "LevelTriggered"; });

}  // namespace

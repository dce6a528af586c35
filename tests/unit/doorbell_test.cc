// SPDX-License-Identifier: MIT
// The doorbell: another participant (a forked process that maps the segment
// and the control file itself) changes the ring, and the daemon core finishes
// the calls parked on it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "test_util.h"

namespace mbx {
namespace {

using namespace std::chrono_literals;

// The child is forked before the mount's threads start, then waits for a byte
// on a pipe (up to 5 s) before acting, so the parent can park its calls first.
class DoorbellWake : public ut::CoreTest {
 protected:
  void SetUp() override { open_mount(4u << 20, /*start=*/false); }
  void TearDown() override {
    if (pipe_[1] >= 0) ::close(pipe_[1]);
    if (child_ > 0) ut::wait_child(child_, 1000ms);
    ut::CoreTest::TearDown();
  }

  // `act` runs in the child with the attached segment; its return value is
  // the child's exit status.
  void fork_participant(const std::string& segment_path, std::function<int(Segment&)> act) {
    ASSERT_EQ(::pipe(pipe_), 0);
    const std::string control = dir_ + "/control";
    child_ = ::fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      ::close(pipe_[1]);
      pollfd p{pipe_[0], POLLIN, 0};
      char c;
      if (::poll(&p, 1, 5000) != 1 || ::read(pipe_[0], &c, 1) != 1) ::_exit(20);
      // Map the control segment as an outside program would.
      int fd = ::open(control.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) ::_exit(21);
      void* ctl = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (ctl == MAP_FAILED) ::_exit(22);
      auto* c_hdr = static_cast<layout::ControlHeader*>(ctl);
      if (c_hdr->magic != layout::kControlMagic) ::_exit(23);
      auto seg = Segment::attach(segment_path);
      if (!seg) ::_exit(24);
      seg->set_control(c_hdr);
      ::_exit(act(*seg));
    }
    ::close(pipe_[0]);
  }
  void go() {
    char c = 'g';
    ASSERT_EQ(::write(pipe_[1], &c, 1), 1);
  }
  void expect_child_ok() {
    int st = ut::wait_child(child_, 5000ms);
    child_ = -1;
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child status " << st;
  }

  int pipe_[2] = {-1, -1};
  pid_t child_ = -1;
};

TEST_F(DoorbellWake, OtherProcessSendWakesParkedReader) {
  auto b = box(framed(Framing::datagram));
  fork_participant(b->info().locator.value(), [](Segment& s) {
    auto r = s.push("from afar", 9, Sender{static_cast<int32_t>(::getpid()), 0, 0}, realtime_ns());
    if (!r) return 30;
    s.after_push(false);
    return 0;
  });
  mount_->start();
  auto& r = open(b, true, false);
  ASSERT_FALSE(b->read(r, 100, false, waiter(1)).has_value());
  EXPECT_EQ(b->info().blocked_receivers.size(), 1u);
  const auto t0 = ut::Clock::now();
  go();
  auto e = board_.wait(1, 2000ms);
  ASSERT_TRUE(e) << "the parked reader was not woken by the other process";
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.data, "from afar");
  EXPECT_LT(ut::Clock::now() - t0, 2000ms);
  expect_child_ok();
  EXPECT_EQ(b->info().seg.total_received, 1u);
}

TEST_F(DoorbellWake, OtherProcessReceiveWakesParkedSender) {
  auto b = box(framed(Framing::datagram, 1));
  auto& w = open(b, false, true);
  ASSERT_EQ(b->write(w, "first", 5, false, Sender{}, nullptr)->err, Errc::ok);
  fork_participant(b->info().locator.value(), [](Segment& s) {
    std::string out;
    if (!s.pop(out, realtime_ns()) || out != "first") return 31;
    s.after_pop(false);
    return 0;
  });
  mount_->start();
  ASSERT_FALSE(b->write(w, "second", 6, false, Sender{}, waiter(1)).has_value());
  go();
  auto e = board_.wait(1, 2000ms);
  ASSERT_TRUE(e) << "the parked sender was not woken by the other process";
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.written, 6u);
  expect_child_ok();
  auto& r = open(b, true, false);
  EXPECT_EQ(b->read(r, 100, true, nullptr)->data, "second");
}

TEST_F(DoorbellWake, OtherProcessTakesRendezvousOffer) {
  auto b = box(framed(Framing::datagram, 0));
  fork_participant(b->info().locator.value(), [](Segment& s) {
    // The offer may not be there yet: retry up to 2 s.
    std::string out;
    for (int i = 0; i < 400; i++) {
      if (s.pop(out, realtime_ns())) {
        s.after_pop(false);
        return out == "offer" ? 0 : 32;
      }
      ::usleep(5000);
    }
    return 33;
  });
  mount_->start();
  auto& w = open(b, false, true);
  ASSERT_FALSE(b->write(w, "offer", 5, false, Sender{}, waiter(1)).has_value());
  go();
  auto e = board_.wait(1, 2000ms);
  ASSERT_TRUE(e) << "the rendezvous sender was not told its message was taken";
  EXPECT_EQ(e->out.err, Errc::ok);
  EXPECT_EQ(e->out.written, 5u);
  expect_child_ok();
}

TEST_F(DoorbellWake, OtherProcessSendNotifiesArmedPoll) {
  auto b = box(framed(Framing::datagram));
  fork_participant(b->info().locator.value(), [](Segment& s) {
    if (!s.push("p", 1, Sender{}, realtime_ns())) return 34;
    s.after_push(false);
    return 0;
  });
  mount_->start();
  auto& r = open(b, true, false);
  auto n = std::make_shared<std::atomic<int>>(0);
  EXPECT_EQ(b->poll(r, std::make_unique<ut::TestPoll>(n)), 0u);
  go();
  const auto end = ut::Clock::now() + 2000ms;
  while (n->load() == 0 && ut::Clock::now() < end) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(n->load(), 1);
  expect_child_ok();
  EXPECT_NE(b->poll(r, nullptr) & POLLIN, 0u);
}

// Another participant's push is seen by the daemon core before the doorbell
// is serviced, here by a poll() that arms a token.
TEST_F(DoorbellWake, PollSeeingAnOutsidePushFinishesTheParkedReader) {
  // No mount_->start(): the doorbell thread would race us to the same work.
  auto b = box(framed(Framing::datagram));
  auto& r = open(b, true, false);
  ASSERT_FALSE(b->read(r, 100, false, waiter(1)).has_value());
  auto other = Segment::attach(b->info().locator.value());
  ASSERT_TRUE(other.ok());
  other->set_control(mount_->state().control());
  ASSERT_TRUE(other->push("outside", 7, Sender{}, 0).ok());
  other->after_push(false);  // rings the doorbell nobody answers yet
  auto& p = open(b, true, false);
  auto n = std::make_shared<std::atomic<int>>(0);
  b->poll(p, std::make_unique<ut::TestPoll>(n));
  // Regression: arming a token re-checks the ring and may hand the outside
  // message to the parked reader; poll() must then finish that reader.
  auto e = board_.wait(1, 1000ms);
  ASSERT_TRUE(e) << "the parked reader was never finished; messages queued: " << b->info().seg.count
                 << ", received: " << b->info().seg.total_received;
  EXPECT_EQ(e->out.data, "outside");
}

// Same process, no fork: a second mapping of the segment stands in for the
// other participant. Parks many readers, sends from the outside, all served.
TEST_F(DoorbellWake, OutsideSendsServeParkedReadersInOrder) {
  mount_->start();
  auto b = box(framed(Framing::datagram, 4));
  constexpr int kN = 20;
  for (int i = 0; i < kN; i++) {
    auto& r = open(b, true, false);
    ASSERT_FALSE(b->read(r, 100, false, waiter(i)).has_value());
  }
  auto other = Segment::attach(b->info().locator.value());
  ASSERT_TRUE(other.ok());
  other->set_control(mount_->state().control());
  for (int i = 0; i < kN; i++) {
    std::string m = "o" + std::to_string(i);
    const auto end = ut::Clock::now() + 2000ms;
    Result<uint64_t> r = Errc::again;
    while (!(r = other->push(m.data(), m.size(), Sender{}, 0)) && ut::Clock::now() < end)
      std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(r.ok()) << i;
    other->after_push(false);
  }
  for (int i = 0; i < kN; i++) {
    auto e = board_.wait(i, 2000ms);
    ASSERT_TRUE(e) << i;
    EXPECT_EQ(e->out.data, "o" + std::to_string(i));
  }
  EXPECT_EQ(board_.order().size(), static_cast<size_t>(kN));
}

}  // namespace
}  // namespace mbx

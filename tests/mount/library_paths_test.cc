// SPDX-License-Identifier: MIT
// libmailbox's other paths against a real mount: zero-copy reserve/commit and
// views, the sender of each message, and the file-path fallback for a process
// that may not map the segment.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <mailbox/mailbox.h>
#include <mailbox/mailbox.hpp>

#include "harness.h"

using mt::child;
using mt::finish;
using mt::reap;

namespace {

using mailbox::Mailbox;
using mt::Mount;
using mt::Proc;
using namespace std::chrono_literals;

TEST(LibraryZeroCopy, ReservedSlotReachesCatAndEchoIsViewedInPlace) {
  Mount m;
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  auto box = Mailbox::open(m.path("box"));
  ASSERT_TRUE(box) << strerror(box.error());
  {
    auto r = box->reserve(5);
    ASSERT_TRUE(r) << strerror(r.error());
    EXPECT_EQ(r->size(), 5u);
    std::memcpy(r->data(), "hello", 5);
    EXPECT_EQ(r->commit(), 0);
  }
  {
    auto dropped = box->reserve(7);  // dropped without commit: sends nothing
    ASSERT_TRUE(dropped);
    std::memcpy(dropped->data(), "ignored", 7);
  }
  EXPECT_EQ(m.sh("cat box").out, "hello");
  EXPECT_EQ(m.xattr("box", "messages"), "0");
  EXPECT_EQ(m.xattr("box", "sent"), "1");

  ASSERT_EQ(m.sh("echo one > box; echo two > box").status, 0);
  {
    auto v = box->receive_view();
    ASSERT_TRUE(v) << strerror(v.error());
    EXPECT_EQ(v->bytes(), "one\n");
    EXPECT_GT(v->sender().pid, 0);
    v->put_back();  // stays queued, first in line
  }
  EXPECT_EQ(m.xattr("box", "messages"), "2");
  {
    auto v = box->receive_view();
    ASSERT_TRUE(v);
    EXPECT_EQ(v->bytes(), "one\n");
  }  // released by destruction
  EXPECT_EQ(m.sh("cat box").out, "two\n");
  EXPECT_EQ(box->try_receive_view().error(), EAGAIN);
  EXPECT_EQ(box->reserve(2u << 20).error(), EMSGSIZE);
  EXPECT_EQ(m.xattr("box", "received"), "3");
}

TEST(LibraryZeroCopy, ReserveBlocksWhileFullUntilACatReceives) {
  Mount m("capacity=1");
  ASSERT_TRUE(m.ok());
  m.sh("echo first > box");
  mt::Ready ready;
  pid_t sender = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = true, .receive = false});
    if (!b) return 10;
    if (b->try_reserve(3).error() != EAGAIN) return 11;
    ready.say();
    auto r = b->reserve(3);  // blocks: the mailbox is full
    if (!r) return 12;
    std::memcpy(r->data(), "2nd", 3);
    return r->commit() == 0 ? 0 : 13;
  });
  ASSERT_TRUE(ready.wait()) << "the child ended with " << finish(sender, 0);
  EXPECT_TRUE(mt::wait_sleeping(sender, mt::Sleep::futex)) << "reserve() returned on a full mailbox";
  EXPECT_EQ(m.sh("cat box").out, "first\n");
  EXPECT_EQ(finish(sender), 0);
  EXPECT_EQ(m.sh("cat box").out, "2nd");
}

TEST(LibrarySender, EachMessageCarriesItsSender) {
  Mount m("framing=datagram");
  ASSERT_TRUE(m.ok());
  m.sh("touch box");
  auto box = Mailbox::open(m.path("box"), {.send = false, .receive = true});
  ASSERT_TRUE(box);
  // Through the daemon: the kernel's view of the writer.
  Proc py("exec python3 -c 'import os; os.write(os.open(\"box\", os.O_WRONLY), str(os.getpid()).encode())'", m.dir());
  std::string msg;
  ASSERT_EQ(box->receive_until(msg, mailbox::Clock::now() + 20s), 0);
  EXPECT_EQ(msg, std::to_string(py.pid()));
  EXPECT_EQ(box->last_sender().pid, py.pid());
  EXPECT_EQ(box->last_sender().uid, geteuid());
  // Through the library: what the sending process's libmailbox recorded.
  pid_t sender = child([&] {
    auto b = Mailbox::open(m.path("box"), {.send = true, .receive = false});
    return b && b->send(std::to_string(getpid())) == 0 ? 0 : 10;
  });
  ASSERT_EQ(box->receive_until(msg, mailbox::Clock::now() + 20s), 0);
  EXPECT_EQ(msg, std::to_string(sender));
  EXPECT_EQ(box->last_sender().pid, sender);
  EXPECT_EQ(box->last_sender().gid, getegid());
  EXPECT_EQ(finish(sender), 0);
}

// user.mailbox.received of `path`, or -1.
long received_count(const char* path) {
  char buf[32];
  const ssize_t n = getxattr(path, "user.mailbox.received", buf, sizeof buf - 1);
  if (n <= 0) return -1;
  buf[n] = 0;
  return std::atol(buf);
}

class LibraryFallback : public ::testing::TestWithParam<const char*> {};

// A user other than the daemon's may not map the segment: open() says EACCES,
// or with `fallback` sends and receives through the file with the same results.
TEST_P(LibraryFallback, OtherUserGoesThroughTheFile) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  const std::string framing = GetParam();
  // In line framing a message is a line and keeps its newline.
  const std::string nl = framing == "line" ? "\n" : "";
  Mount m("allow_other,root_mode=1777,framing=" + framing + ",capacity=2,max_message=64");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("touch box && chmod 666 box").status, 0);
  auto mine = Mailbox::open(m.path("box"));
  ASSERT_TRUE(mine);
  ASSERT_FALSE(mine->via_file());
  int full[2];  // the child says when it has found the mailbox full
  ASSERT_EQ(pipe(full), 0);
  pid_t other = child([&] {
    close(full[0]);
    // The test's directory is private: enter the mount first, then drop privileges.
    if (chdir(m.dir().c_str()) != 0 || setgid(65534) != 0 || setuid(65534) != 0) return 10;
    if (Mailbox::open("box").error() != EACCES) return 11;
    auto b = Mailbox::open("box", {.send = true, .receive = true, .fallback = true});
    if (!b) return 12;
    if (!b->via_file()) return 13;
    std::string got;
    if (b->try_receive(got) != EAGAIN) return 14;
    if (b->receive_until(got, mailbox::Clock::now() + 50ms) != ETIMEDOUT) return 15;  // nothing to get
    if (b->send("from nobody") != 0) return 16;
    // Not our own message back: wait until root has taken it.
    if (!mt::wait_until([] { return received_count("box") == 1; })) return 25;
    if (b->receive_until(got, mailbox::Clock::now() + 20s) != 0 || got != "from root" + nl) return 17;
    if (b->last_sender().pid != getppid()) return 26;  // the daemon's user.mailbox.sender for this thread
    if (b->send("") != EINVAL) return 27;              // through the file, nothing is no message
    if (b->send(std::string(65, 'x')) != EMSGSIZE) return 18;
    // Fill the mailbox (capacity 2): the third send would block.
    if (b->send("a") != 0 || b->send("b") != 0) return 19;
    if (b->try_send("c") != EAGAIN) return 20;
    if (b->send_for("c", 100ms) != ETIMEDOUT) return 21;
    if (write(full[1], "f", 1) != 1) return 24;
    auto r = b->reserve(4);
    if (!r) return 22;
    std::memcpy(r->data(), "last", 4);
    return r->commit() == 0 ? 0 : 23;  // blocks until root receives
  });
  std::string got;
  const int first = mine->receive_until(got, mailbox::Clock::now() + 20s);
  if (first != 0) ADD_FAILURE() << "nobody's child ended with " << finish(other);
  ASSERT_EQ(first, 0);
  EXPECT_EQ(got, "from nobody" + nl);
  ASSERT_EQ(mine->send("from root" + nl), 0);
  // Not our own message back: wait until nobody has taken it, and has filled the mailbox.
  ASSERT_TRUE(mt::wait_until([&] { return m.xattr("box", "received") == "2"; }));
  close(full[1]);
  char c = 0;
  pollfd pf{full[0], POLLIN, 0};
  EXPECT_TRUE(poll(&pf, 1, mt::kHang) == 1 && read(full[0], &c, 1) == 1) << "the child ended with " << finish(other, 0);
  close(full[0]);
  for (const char* want : {"a", "b", "last"}) {
    ASSERT_EQ(mine->receive_until(got, mailbox::Clock::now() + 20s), 0) << want;
    EXPECT_EQ(got, want + nl);
  }
  EXPECT_EQ(finish(other), 0);
  EXPECT_EQ(m.xattr("box", "sent"), "5");
  EXPECT_EQ(m.xattr("box", "received"), "5");
}

INSTANTIATE_TEST_SUITE_P(Framings, LibraryFallback, ::testing::Values("file", "datagram", "line"));

// Through the file, as on the fast path: one reservation and one view per
// object at a time, and neither one's bytes overwrite the other's.
TEST(LibraryFallbackZeroCopy, OneReservationAndOneViewAtATime) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  Mount m("allow_other,root_mode=1777,framing=datagram,capacity=4,max_message=64");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("touch box && chmod 666 box && printf v1 > box && printf v2 > box").status, 0);
  pid_t other = child([&] {
    if (chdir(m.dir().c_str()) != 0 || setgid(65534) != 0 || setuid(65534) != 0) return 10;
    auto b = Mailbox::open("box", {.send = true, .receive = true, .fallback = true});
    if (!b || !b->via_file()) return 11;
    auto r = b->try_reserve(5);
    if (!r) return 12;
    if (b->try_reserve(5).error() != EBUSY) return 13;
    auto v = b->try_receive_view();
    if (!v || v->bytes() != "v1") return 14;
    if (b->try_receive_view().error() != EBUSY) return 15;
    std::string other;  // the fast path's rules: no receive or send while a view is open
    if (b->try_receive(other) != EBUSY || b->try_send("no") != EBUSY) return 21;
    std::memcpy(r->data(), "hello", 5);
    if (r->commit() != 0) return 16;
    if (v->bytes() != "v1") return 17;  // the view's bytes are its own
    v->put_back();
    std::string got;
    if (b->try_receive(got) != 0 || got != "v1") return 18;  // put back: first again
    if (b->try_receive(got) != 0 || got != "v2") return 19;
    auto again = b->try_reserve(1);  // the first one is done: a new one is allowed
    if (!again) return 20;
    return 0;  // dropped uncommitted: nothing sent
  });
  EXPECT_EQ(finish(other), 0);
  EXPECT_EQ(m.xattr("box", "messages"), "1");
  EXPECT_EQ(m.sh("dd bs=64 count=1 status=none if=box").out, "hello");
}

// A rendezvous needs one side committed. Through the file a call without a
// deadline waits in the daemon (committed); one with a deadline waits in
// poll(), and the daemon lets a non-blocking offer wait a moment for a
// library receiver that sleeps. Every pairing with a committed side meets.
TEST(LibraryFallbackRendezvous, MeetsLibraryAndFallbackReceivers) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  Mount m("allow_other,root_mode=1777,framing=datagram,capacity=0,max_message=64");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("touch box && chmod 666 box").status, 0);
  // Each side says when it is about to wait (`ready`, when given).
  auto as_nobody = [&](std::function<int(Mailbox&)> fn, mt::Ready* ready = nullptr) {
    return child([&, fn, ready] {
      if (chdir(m.dir().c_str()) != 0 || setgid(65534) != 0 || setuid(65534) != 0) return 10;
      auto b = Mailbox::open("box", {.send = true, .receive = true, .fallback = true});
      if (!b || !b->via_file()) return 11;
      if (ready) ready->say();
      return fn(*b);
    });
  };
  auto receives = [](const std::string& want, bool timed) {
    return [want, timed](Mailbox& b) {
      std::string got;
      const int e = timed ? b.receive_for(got, 20s) : b.receive(got);
      return e == 0 && got == want ? 0 : 30 + e;
    };
  };
  auto library_receiver = [&](const std::string& want, mt::Ready* ready = nullptr) {
    return child([&, want, ready] {
      auto b = Mailbox::open(m.path("box"));
      if (!b || b->via_file()) return 11;
      if (ready) ready->say();
      std::string got;
      const int e = b->receive_for(got, 20s);
      return e == 0 && got == want ? 0 : 30 + e;
    });
  };
  // The first side is waiting: it said so, and sleeps where such a call waits.
  auto settle = [](mt::Ready& ready, pid_t p, mt::Sleep on) { return ready.wait() && mt::wait_sleeping(p, on); };
  {
    SCOPED_TRACE("blocking fallback send, library receiver");
    pid_t s = as_nobody([](Mailbox& b) { return b.send("one") == 0 ? 0 : 20; });
    pid_t r = library_receiver("one");
    EXPECT_EQ(finish(r), 0);
    EXPECT_EQ(finish(s), 0);
  }
  {
    SCOPED_TRACE("fallback try_send, library receiver asleep");
    mt::Ready ready;
    pid_t r = library_receiver("two", &ready);
    ASSERT_TRUE(settle(ready, r, mt::Sleep::futex));
    pid_t s = as_nobody([](Mailbox& b) { return b.try_send("two") == 0 ? 0 : 20; });
    EXPECT_EQ(finish(s), 0);
    EXPECT_EQ(finish(r), 0);
  }
  {
    SCOPED_TRACE("timed fallback send waiting in poll, then a library receiver");
    mt::Ready ready;
    pid_t s = as_nobody([](Mailbox& b) { return b.send_for("three", 20s) == 0 ? 0 : 20; }, &ready);
    ASSERT_TRUE(settle(ready, s, mt::Sleep::poll));
    pid_t r = library_receiver("three");
    EXPECT_EQ(finish(r), 0);
    EXPECT_EQ(finish(s), 0);
  }
  {
    SCOPED_TRACE("blocking fallback receive, timed fallback send");
    mt::Ready ready;
    pid_t r = as_nobody(receives("four", false), &ready);
    ASSERT_TRUE(settle(ready, r, mt::Sleep::fuse));
    pid_t s = as_nobody([](Mailbox& b) { return b.send_for("four", 20s) == 0 ? 0 : 20; });
    EXPECT_EQ(finish(s), 0);
    EXPECT_EQ(finish(r), 0);
  }
  {
    SCOPED_TRACE("timed fallback receive, blocking fallback send");
    mt::Ready ready;
    pid_t r = as_nobody(receives("five", true), &ready);
    ASSERT_TRUE(settle(ready, r, mt::Sleep::poll));
    pid_t s = as_nobody([](Mailbox& b) { return b.send("five") == 0 ? 0 : 20; });
    EXPECT_EQ(finish(s), 0);
    EXPECT_EQ(finish(r), 0);
  }
  {
    SCOPED_TRACE("fallback try_send with nobody waiting");
    pid_t s = as_nobody([](Mailbox& b) { return b.try_send("six") == EAGAIN ? 0 : 20; });
    EXPECT_EQ(finish(s), 0);
  }
  EXPECT_EQ(m.xattr("box", "sent"), "5");
  EXPECT_EQ(m.xattr("box", "received"), "5");
  EXPECT_EQ(m.xattr("box", "messages"), "0");
}

// Whole messages into a std::string or a std::vector<char>, sized to each.
TEST(LibraryReceive, IntoAStringOrAVectorOfAnyLength) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto box = Mailbox::create(m.path("box"), {.capacity = 4, .max_message = 1 << 20});
  ASSERT_TRUE(box);
  const std::string big(1 << 20, 'b');
  ASSERT_EQ(box->send("abc"), 0);
  ASSERT_EQ(box->send(big), 0);
  ASSERT_EQ(box->send(""), 0);
  std::vector<char> v(10, 'x');
  ASSERT_EQ(box->try_receive(v), 0);
  EXPECT_EQ(std::string(v.begin(), v.end()), "abc");
  std::string str = "old contents";
  ASSERT_EQ(box->receive_for(str, 20s), 0);
  EXPECT_EQ(str, big);
  ASSERT_EQ(box->receive(v), 0);
  EXPECT_TRUE(v.empty());
  EXPECT_EQ(box->try_receive(v), EAGAIN);
  EXPECT_EQ(box->receive_for(v, 20ms), ETIMEDOUT);
  EXPECT_TRUE(v.empty());
  EXPECT_EQ(m.xattr("box", "received"), "3");
  // A view open on this object: a second receive says so instead of waiting on itself.
  ASSERT_EQ(box->send("held"), 0);
  auto view = box->try_receive_view();
  ASSERT_TRUE(view);
  EXPECT_EQ(box->try_receive(str), EBUSY);
  view->put_back();
  ASSERT_EQ(box->try_receive(str), 0);
  EXPECT_EQ(str, "held");
}

// An object's own open view or reservation holds one half of the mailbox:
// calls that would wait on it answer EBUSY (or work without it) instead of
// hanging.
TEST(LibraryReceive, OwnViewOrReservationNeverWaitsOnItself) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto box = Mailbox::create(m.path("box"), {.capacity = 4, .max_message = 64});
  ASSERT_TRUE(box);
  ASSERT_EQ(box->send("one"), 0);
  {
    auto view = box->try_receive_view();
    ASSERT_TRUE(view);
    char buf[64];
    EXPECT_EQ(box->try_receive(buf, sizeof buf).error(), EBUSY);
    EXPECT_EQ(box->receive(buf, sizeof buf).error(), EBUSY);
    EXPECT_EQ(box->stats().messages, 1u);  // read as it is
    // Waiting for send_lock while holding recv_lock could deadlock with a
    // participant that holds send_lock (a reservation) and receives.
    EXPECT_EQ(box->send("reply"), EBUSY);
    EXPECT_EQ(box->try_reserve(1).error(), EBUSY);
  }  // released
  ASSERT_EQ(box->send("reply"), 0);
  {
    auto slot = box->try_reserve(3);
    ASSERT_TRUE(slot);
    EXPECT_EQ(box->try_send("x"), EBUSY);
    EXPECT_EQ(box->stats().messages, 1u);
    std::string got;
    EXPECT_EQ(box->try_receive(got), 0);  // the documented order: send_lock, then recv_lock
    EXPECT_EQ(got, "reply");
    // Now empty, and nobody can send while we hold send_lock: no waiting for ever.
    EXPECT_EQ(box->receive(got), EBUSY);
    EXPECT_EQ(box->try_receive(got), EAGAIN);
  }  // dropped: nothing sent
  auto rdv = Mailbox::create(m.path("rdv"), {.capacity = 0, .max_message = 64});
  ASSERT_TRUE(rdv);
  pid_t sender = child([&] {
    auto b = Mailbox::open(m.path("rdv"));
    return b && b->send("offer") == 0 ? 0 : 10;
  });
  auto view = rdv->receive_view();
  ASSERT_TRUE(view);
  EXPECT_EQ(rdv->send("mine"), EBUSY);
  view->release();
  EXPECT_EQ(finish(sender), 0);
}

// A Reservation and a View hold on to the mailbox, not to the Mailbox object:
// moving the object (into a container, say) leaves them usable.
TEST(LibraryZeroCopy, ReservationAndViewSurviveAMovedMailbox) {
  Mount m;
  ASSERT_TRUE(m.ok());
  auto box = Mailbox::create(m.path("box"), {.capacity = 4, .max_message = 64});
  ASSERT_TRUE(box);
  auto r = box->reserve(3);
  ASSERT_TRUE(r);
  std::vector<Mailbox> boxes;
  boxes.push_back(std::move(box.value()));
  std::memcpy(r->data(), "abc", 3);
  EXPECT_EQ(r->commit(), 0);
  auto v = boxes[0].try_receive_view();
  ASSERT_TRUE(v);
  Mailbox moved = std::move(boxes[0]);
  EXPECT_EQ(v->bytes(), "abc");
  v->release();
  EXPECT_EQ(m.xattr("box", "received"), "1");
  std::string got;
  EXPECT_EQ(moved.try_receive(got), EAGAIN);
  EXPECT_EQ(moved.receive_for(got, 20ms), ETIMEDOUT);
}

}  // namespace

namespace {

TEST(LibraryCApi, ZeroCopyAndSender) {
  Mount m;
  ASSERT_TRUE(m.ok());
  mbx_t* box = nullptr;
  ASSERT_EQ(mbx_create(m.path("c").c_str(), 2, 64, 0600, MBX_SEND | MBX_RECEIVE, &box), 0);
  void* slot = nullptr;
  ASSERT_EQ(mbx_reserve(box, 3, &slot, -1), 0);
  EXPECT_EQ(mbx_reserve(box, 3, &slot, 0), -EBUSY);  // one at a time
  std::memcpy(slot, "abc", 3);
  EXPECT_EQ(mbx_commit(box), 0);
  EXPECT_EQ(mbx_commit(box), -EINVAL);
  ASSERT_EQ(mbx_reserve(box, 4, &slot, 0), 0);
  mbx_abort(box);  // nothing sent
  EXPECT_EQ(m.xattr("c", "messages"), "1");
  const void* data = nullptr;
  ASSERT_EQ(mbx_recv_view(box, &data, 0), 3);
  EXPECT_EQ(std::string(static_cast<const char*>(data), 3), "abc");
  mbx_put_back(box);
  ASSERT_EQ(mbx_recv_view(box, &data, 0), 3);
  pid_t pid = 0;
  uid_t uid = 1;
  mbx_last_sender(box, &pid, &uid, nullptr);
  EXPECT_EQ(pid, getpid());
  EXPECT_EQ(uid, geteuid());
  mbx_release(box);
  EXPECT_EQ(mbx_recv_view(box, &data, 0), -EAGAIN);
  EXPECT_EQ(mbx_recv_view(box, &data, 30), -ETIMEDOUT);
  EXPECT_EQ(mbx_reserve(box, 65, &slot, 0), -EMSGSIZE);
  // A caller's mistakes: a timeout below -1, no direction, an unknown flag.
  char buf[8];
  EXPECT_EQ(mbx_send(box, "x", 1, -5), -EINVAL);
  EXPECT_EQ(mbx_recv(box, buf, sizeof buf, -2), -EINVAL);
  EXPECT_EQ(mbx_reserve(box, 1, &slot, -7), -EINVAL);
  EXPECT_EQ(mbx_recv_view(box, &data, -3), -EINVAL);
  mbx_close(box);
  EXPECT_EQ(m.xattr("c", "received"), "1");
  EXPECT_EQ(m.xattr("c", "sent"), "1");
  mbx_t* other = nullptr;
  EXPECT_EQ(mbx_open(m.path("c").c_str(), 0, &other), -EINVAL);
  EXPECT_EQ(mbx_open(m.path("c").c_str(), MBX_SEND | 8u, &other), -EINVAL);
  EXPECT_EQ(mbx_create(m.path("d").c_str(), 2, 64, 0600, MBX_FALLBACK, &other), -EINVAL);
  EXPECT_EQ(other, nullptr);
  EXPECT_NE(access(m.path("d").c_str(), F_OK), 0);  // refused before anything was created
}

}  // namespace

// SPDX-License-Identifier: MIT
// The direct-communication core without a mount: links per process pair,
// ESRCH and EPERM, exits (discarded mail, failed waits, orphaned links),
// pid reuse, receive from any, and the sender remembered per reader.
#include "core/direct.h"

#include <fcntl.h>

#include <algorithm>
#include <set>

#include "core/pid_dir.h"
#include "core/router.h"
#include "core/tree.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
using mbx::Errc;
using mbx::kNoProcess;
using mbx::Result;
using mbx::Sender;

// Polls `pred` until it holds or `ms` pass.
template <class F>
bool mbx_wait(F pred, int ms = 3000) {
  for (auto end = ut::Clock::now() + std::chrono::milliseconds(ms); ut::Clock::now() < end;
       std::this_thread::sleep_for(5ms))
    if (pred()) return true;
  return pred();
}

// A child process that does nothing until it is killed.
pid_t sleeper(uid_t uid = 0) {
  pid_t p = ::fork();
  if (p == 0) {
    if (uid && ::setresgid(uid, uid, uid) != 0) ::_exit(1);
    if (uid && ::setresuid(uid, uid, uid) != 0) ::_exit(1);
    for (;;) ::pause();
  }
  return p;
}

void end(pid_t p) {
  ::kill(p, SIGKILL);
  ::waitpid(p, nullptr, 0);
}

class DirectTest : public ut::CoreTest {
 protected:
  void SetUp() override {
    ut::CoreTest::SetUp();
    direct_ = std::make_unique<mbx::Direct>(*mount_);
    direct_->start();
    pid_ = std::make_unique<mbx::PidDir>(*direct_);
  }
  void TearDown() override {
    for (pid_t p : kids_) end(p);
    direct_->shutdown();
    pid_.reset();
    direct_.reset();
    ut::CoreTest::TearDown();
  }
  pid_t kid(uid_t uid = 0) {
    kids_.push_back(sleeper(uid));
    // Wait until it runs as the asked user (after fork it is briefly root).
    for (int i = 0; i < 200 && uid; i++) {
      struct stat st;
      if (::stat(("/proc/" + std::to_string(kids_.back())).c_str(), &st) == 0 && st.st_uid == uid) break;
      std::this_thread::sleep_for(5ms);
    }
    return kids_.back();
  }
  void kill_kid(pid_t p) {
    end(p);
    kids_.erase(std::find(kids_.begin(), kids_.end(), p));
  }
  // One message pushed through a fresh handle, recorded as sent by `as`.
  void send_on(const std::shared_ptr<mbx::Mailbox>& box, const std::string& m, const Sender& as) {
    auto& h = open(box, false, true, true);
    h.as = as;
    auto o = box->write(h, m.data(), m.size(), true, sender_, nullptr);
    ASSERT_TRUE(o && o->err == Errc::ok);
    auto f = box->flush(h, sender_, nullptr);
    ASSERT_TRUE(f && f->err == Errc::ok);
  }
  mbx::Direct& d() { return *direct_; }
  // pid/ over it, as the file system shows it.
  mbx::PidDir& pid() { return *pid_; }
  Result<struct stat> lookup(const std::string& name, const Sender& c) {
    return pid_->lookup(mbx::kPidDirIno, name, c);
  }
  std::unique_ptr<mbx::Direct> direct_;
  std::unique_ptr<mbx::PidDir> pid_;
  Sender me{::getpid(), 0, 0};
  std::vector<pid_t> kids_;
};

TEST_F(DirectTest, OneLinkPerPairMadeOnFirstUse) {
  pid_t c = kid();
  auto a = d().send_link(me, c);
  ASSERT_TRUE(a.ok()) << mbx::to_errno(a.error());
  auto b = d().send_link(me, c);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->get(), b->get());     // the same pair: the same link
  auto back = d().recv_link(c, me);  // the other direction is another link
  ASSERT_TRUE(back.ok());
  EXPECT_NE(back->get(), a->get());
  EXPECT_EQ(d().send_link(Sender{c, 0, 0}, me.pid)->get(), back->get());  // seen from c
  EXPECT_EQ(d().links(), 2u);
}

TEST_F(DirectTest, NoSuchProcessAndWhoMaySend) {
  pid_t gone = sleeper();
  end(gone);
  EXPECT_EQ(d().send_link(me, gone).error(), kNoProcess);
  EXPECT_EQ(d().recv_link(gone, me).error(), kNoProcess);
  pid_t root_kid = kid();
  pid_t nobody_kid = kid(65534);
  const Sender nobody{me.pid, 65534, 65534};
  EXPECT_EQ(d().send_link(nobody, root_kid).error(), Errc::perm);  // kill(2)'s rule
  EXPECT_TRUE(d().send_link(nobody, nobody_kid).ok());
  EXPECT_TRUE(d().send_link(me, nobody_kid).ok());  // root may signal anyone
  EXPECT_EQ(lookup("0", me).error(), Errc::not_found);
  EXPECT_EQ(lookup("007", me).error(), Errc::not_found);
  EXPECT_EQ(lookup("1-to-2", nobody).error(), Errc::not_found);  // root's view only
  EXPECT_TRUE(lookup("1-to-2", me).ok());
}

TEST_F(DirectTest, MessagesCarryTheOpeningProcessAndEachReaderRemembersItsSender) {
  auto st = lookup(std::to_string(me.pid), me);
  ASSERT_TRUE(st.ok());
  // A write through pid/<me> goes on the link me->me; a read of it takes it.
  auto w = pid().open(st->st_ino, false, true, true, Sender{me.pid, 0, 8});
  ASSERT_TRUE(w.ok()) << mbx::to_errno(w.error());
  EXPECT_EQ((*w)->as->pid, me.pid);
  auto box = (*w)->box;
  ASSERT_TRUE(box->write(**w, "hi", 2, true, sender_, nullptr).has_value());
  ASSERT_EQ(box->flush(**w, sender_, nullptr)->err, Errc::ok);
  EXPECT_EQ(lookup(std::to_string(me.pid), me)->st_size, 1);  // st_size counts messages
  auto r = pid().open(st->st_ino, true, false, true, me);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->box.get(), box.get());
  auto o = box->read(**r, 100, true, nullptr, /*reader=*/4242);
  ASSERT_TRUE(o.has_value());
  ASSERT_EQ(o->err, Errc::ok);
  EXPECT_EQ(o->data, "hi");
  auto s = box->last_sender(4242);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->pid, me.pid);
  EXPECT_EQ(s->uid, 0u);
  EXPECT_EQ(s->gid, 8u);
  EXPECT_FALSE(box->last_sender(4243).has_value());                                // another reader received nothing
  EXPECT_EQ(pid().open(st->st_ino, true, true, true, me).error(), Errc::invalid);  // one direction per open
  box->release(**w);
  box->release(**r);
}

TEST_F(DirectTest, MailToAnExitedReceiverIsDiscardedAndCounted) {
  pid_t c = kid();
  auto l = d().send_link(me, c);
  ASSERT_TRUE(l.ok());
  send_on(*l, "one", me);
  send_on(*l, "two", me);
  kill_kid(c);
  EXPECT_TRUE(mbx_wait([&] { return d().discarded() == 2; }));
  EXPECT_EQ(d().links(), 0u);
  EXPECT_EQ(d().send_link(me, c).error(), kNoProcess);
}

TEST_F(DirectTest, ABlockedReceiveFailsWithESRCHWhenTheSenderExits) {
  pid_t c = kid();
  auto l = d().recv_link(c, me);
  ASSERT_TRUE(l.ok());
  auto& h = open(*l, true, false);
  ASSERT_FALSE((*l)->read(h, 100, false, waiter(1)).has_value());  // parked
  kill_kid(c);
  auto e = board_.wait(1);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->out.err, kNoProcess);
  EXPECT_EQ((*l)->read(h, 100, false, nullptr)->err, kNoProcess);  // never waits again
  EXPECT_TRUE(mbx_wait([&] { return !d().recv_link(c, me).ok(); }));
}

TEST_F(DirectTest, WhatAnExitedSenderSentStaysForItsReceiver) {
  pid_t c = kid();
  auto l = d().send_link(Sender{c, 0, 0}, me.pid);
  ASSERT_TRUE(l.ok());
  send_on(*l, "last words", Sender{c, 0, 0});
  kill_kid(c);
  std::this_thread::sleep_for(100ms);
  auto again = d().recv_link(c, me);  // the orphaned link, still holding its message
  ASSERT_TRUE(again.ok()) << mbx::to_errno(again.error());
  auto& h = open(*again, true, false);
  EXPECT_EQ((*again)->read(h, 100, false, nullptr)->data, "last words");
  auto& h2 = open(*again, true, false);
  EXPECT_EQ((*again)->read(h2, 100, false, nullptr)->err, kNoProcess);
  EXPECT_TRUE(mbx_wait([&] { return d().links() == 0; }));  // drained: dropped
}

TEST_F(DirectTest, ReceiveFromAnyTakesEveryLinkAndWakesOnArrival) {
  pid_t c1 = kid(), c2 = kid();
  auto l1 = d().send_link(Sender{c1, 0, 0}, me.pid);
  auto l2 = d().send_link(Sender{c2, 0, 0}, me.pid);
  ASSERT_TRUE(l1.ok() && l2.ok());
  send_on(*l1, "from one", Sender{c1, 1, 1});
  send_on(*l2, "from two", Sender{c2, 2, 2});
  auto any = d().any_box(me);
  ASSERT_TRUE(any.ok());
  std::set<std::string> got;
  for (int i = 0; i < 2; i++) {
    auto& h = open(*any, true, false);
    auto o = (*any)->read(h, 100, true, nullptr, 77);
    ASSERT_TRUE(o && o->err == Errc::ok);
    got.insert(o->data + "/" + std::to_string((*any)->last_sender(77)->pid));
  }
  EXPECT_EQ(got, (std::set<std::string>{"from one/" + std::to_string(c1), "from two/" + std::to_string(c2)}));
  auto& h = open(*any, true, false);
  EXPECT_EQ((*any)->read(h, 100, true, nullptr)->err, Errc::again);
  ASSERT_FALSE((*any)->read(h, 100, false, waiter(5, 78)).has_value());  // parked on every link
  send_on(*l2, "later", Sender{c2, 2, 2});
  auto e = board_.wait(5);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->out.data, "later");
  EXPECT_EQ((*any)->last_sender(78)->pid, c2);
}

TEST_F(DirectTest, AReusedPidIsANewProcess) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to steer pid allocation";
  pid_t c = kid();
  auto l = d().send_link(me, c);
  ASSERT_TRUE(l.ok());
  send_on(*l, "for the first one", me);
  kill_kid(c);
  pid_t again = -1;
  for (int i = 0; i < 500 && again != c; i++) {  // other processes (a test shard beside) may take it first
    if (again > 0) end(again);
    FILE* f = std::fopen("/proc/sys/kernel/ns_last_pid", "w");
    if (!f) GTEST_SKIP() << "no ns_last_pid";
    std::fprintf(f, "%d", c - 1);
    std::fclose(f);
    again = sleeper();
  }
  kids_.push_back(again);
  if (again != c) GTEST_SKIP() << "could not get the pid again";
  // Whether or not the exit was seen yet, the new process has new links.
  auto fresh = d().send_link(me, again);
  ASSERT_TRUE(fresh.ok());
  EXPECT_NE(fresh->get(), l->get());
  auto any = d().any_box(Sender{again, 0, 0});
  ASSERT_TRUE(any.ok());
  auto& h = open(*any, true, false);
  EXPECT_EQ((*any)->read(h, 100, true, nullptr)->err, Errc::again);
  EXPECT_TRUE(mbx_wait([&] { return d().discarded() == 1; }));
}

}  // namespace

namespace {

// pid/ as the tree shows it: reserved at the root, unlisted, read-only.
class DirectTreeTest : public ut::CoreTest {
 protected:
  void SetUp() override {
    ut::CoreTest::SetUp();
    direct_ = std::make_unique<mbx::Direct>(*mount_);
    direct_->start();
    tree_only_ = std::make_unique<mbx::Tree>(*mount_, 0755, 0, 0);
    pid_ = std::make_unique<mbx::PidDir>(*direct_);
    tree_ = std::make_unique<mbx::Router>(*tree_only_, *pid_);
  }
  void TearDown() override {
    tree_.reset();
    tree_only_->shutdown();
    direct_->shutdown();
    pid_.reset();
    tree_only_.reset();
    direct_.reset();
    ut::CoreTest::TearDown();
  }
  std::unique_ptr<mbx::Direct> direct_;
  std::unique_ptr<mbx::Tree> tree_only_;
  std::unique_ptr<mbx::PidDir> pid_;
  std::unique_ptr<mbx::Router> tree_;  // the whole tree: mailboxes and pid/
  mbx::Sender root_{::getpid(), 0, 0};
};

TEST_F(DirectTreeTest, PidIsReservedUnlistedAndReadOnly) {
  auto st = tree_->lookup(mbx::kRootIno, "pid", root_);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->st_ino, mbx::kPidDirIno);
  EXPECT_TRUE(S_ISDIR(st->st_mode));
  EXPECT_EQ(tree_->create(mbx::kRootIno, "pid", 0644, root_).error(), Errc::exists);
  EXPECT_EQ(tree_->mkdir(mbx::kRootIno, "pid", 0755, root_).error(), Errc::exists);
  EXPECT_EQ(tree_->rmdir(mbx::kRootIno, "pid"), Errc::busy);
  EXPECT_EQ(tree_->create(mbx::kPidDirIno, "box", 0644, root_).error(), Errc::not_found);
  EXPECT_EQ(tree_->unlink(mbx::kPidDirIno, "any"), Errc::perm);
  auto root = tree_->list(mbx::kRootIno, root_);
  ASSERT_TRUE(root.ok());
  for (auto& e : *root) EXPECT_NE(e.name, "pid");
  auto sub = tree_->mkdir(mbx::kRootIno, "jobs", 0755, root_);
  ASSERT_TRUE(sub.ok());
  EXPECT_TRUE(tree_->create(sub->st_ino, "pid", 0644, root_).ok());  // only the root's name is reserved
  auto any = tree_->lookup(mbx::kPidDirIno, "any", root_);
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(tree_->setxattr(any->st_ino, "user.mailbox.capacity", "1", root_), Errc::perm);
  EXPECT_EQ(*tree_->getxattr(mbx::kPidDirIno, "user.mailbox.discarded", root_), "0");
}

TEST_F(DirectTreeTest, SenderXattrOfAnOrdinaryMailboxIsPerReadingThread) {
  auto st = tree_->create(mbx::kRootIno, "box", 0644, root_);
  ASSERT_TRUE(st.ok());
  auto box = tree_->mailbox(st->st_ino);
  auto h = box->open(false, true, true);
  ASSERT_EQ(box->write(*h, "m", 1, true, Sender{321, 5, 6}, nullptr)->err, Errc::ok);
  ASSERT_EQ(box->flush(*h, Sender{321, 5, 6}, nullptr)->err, Errc::ok);
  auto r = box->open(true, false, true);
  ASSERT_EQ(box->read(*r, 10, true, nullptr, 900)->data, "m");
  EXPECT_EQ(*tree_->getxattr(st->st_ino, "user.mailbox.sender", mbx::Sender{900, 0, 0}), "pid=321 uid=5 gid=6");
  EXPECT_EQ(tree_->getxattr(st->st_ino, "user.mailbox.sender", mbx::Sender{901, 0, 0}).error(), Errc::no_data);
  box->release(*h);
  box->release(*r);
}

}  // namespace

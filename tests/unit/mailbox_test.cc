// SPDX-License-Identifier: MIT
// Mailbox core without waiting: framing, non-blocking paths, poll, settings.
#include <gtest/gtest.h>
#include <poll.h>

#include "test_util.h"

namespace mbx {
namespace {

using MailboxCore = ut::CoreTest;
using F = Framing;

std::optional<Outcome> rd(Mailbox& b, Handle& h, size_t n = 65536, bool nonblock = true) {
  return b.read(h, n, nonblock, nullptr);
}
std::optional<Outcome> wr(Mailbox& b, Handle& h, const std::string& s, bool nonblock = true) {
  return b.write(h, s.data(), s.size(), nonblock, Sender{1, 2, 3}, nullptr);
}

TEST_F(MailboxCore, ReadOnEmpty) {
  auto b = box(framed(F::datagram));
  auto& h = open(b, true, false);
  EXPECT_FALSE(rd(*b, h, 100, false).has_value());  // would block: the caller comes back with a waiter
  auto o = rd(*b, h, 100, true);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::again);
  EXPECT_TRUE(b->info().blocked_receivers.empty());
  auto& w = open(b, false, true);
  EXPECT_EQ(rd(*b, w)->err, Errc::bad_fd);  // not open for reading
  EXPECT_EQ(wr(*b, h, "x")->err, Errc::bad_fd);
}

TEST_F(MailboxCore, DatagramEachWriteIsOneMessage) {
  auto b = box(framed(F::datagram));
  auto& w = open(b, false, true);
  auto& r = open(b, true, false);
  auto o = wr(*b, w, "a");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::ok);
  EXPECT_EQ(o->written, 1u);
  ASSERT_EQ(wr(*b, w, "bb")->written, 2u);
  ASSERT_EQ(wr(*b, w, "")->err, Errc::ok);  // an empty datagram is a message
  EXPECT_EQ(b->info().seg.count, 3u);
  EXPECT_EQ(rd(*b, r)->data, "a");
  EXPECT_EQ(rd(*b, r)->data, "bb");
  o = rd(*b, r);
  EXPECT_EQ(o->err, Errc::ok);
  EXPECT_EQ(o->data, "");
  EXPECT_EQ(rd(*b, r)->err, Errc::again);  // never EOF
  // A short read returns the rest on the next reads of that open file.
  ASSERT_EQ(wr(*b, w, "hello world")->err, Errc::ok);
  ASSERT_EQ(wr(*b, w, "next")->err, Errc::ok);
  EXPECT_EQ(rd(*b, r, 5)->data, "hello");
  auto& other = open(b, true, false);
  EXPECT_EQ(rd(*b, other)->data, "next");  // the rest belongs to `r` only
  EXPECT_EQ(rd(*b, r, 3)->data, " wo");
  EXPECT_EQ(rd(*b, r)->data, "rld");
  EXPECT_EQ(rd(*b, r)->err, Errc::again);
}

TEST_F(MailboxCore, DatagramSizeLimits) {
  auto b = box(framed(F::datagram));  // max_message 4096
  auto& w = open(b, false, true);
  EXPECT_EQ(wr(*b, w, std::string(4097, 'x'))->err, Errc::msg_size);
  EXPECT_EQ(wr(*b, w, std::string(4096, 'x'))->err, Errc::ok);
  Settings big = framed(F::datagram, 1);
  big.max_message = 2u << 20;
  auto b2 = box(big);
  auto& w2 = open(b2, false, true);
  // FUSE would split it: refused whole, nothing sent.
  EXPECT_EQ(wr(*b2, w2, std::string(kMaxDatagram + 1, 'y'))->err, Errc::msg_size);
  EXPECT_EQ(b2->info().seg.count, 0u);
  EXPECT_EQ(wr(*b2, w2, std::string(kMaxDatagram, 'y'))->written, kMaxDatagram);
}

TEST_F(MailboxCore, FileFramingOneMessagePerOpen) {
  auto b = box(framed(F::file));
  auto& w = open(b, false, true);
  EXPECT_EQ(wr(*b, w, "hel")->written, 3u);
  EXPECT_EQ(wr(*b, w, "lo")->written, 2u);
  EXPECT_EQ(b->info().seg.count, 0u);  // buffered until flush
  auto f = b->flush(w, Sender{}, nullptr);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->err, Errc::ok);
  EXPECT_EQ(b->info().seg.count, 1u);
  ASSERT_TRUE(b->flush(w, Sender{}, nullptr));  // nothing new written: nothing sent
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(wr(*b, w, "again")->err, Errc::ok);  // fsync, then more: a second message
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);
  EXPECT_EQ(b->info().seg.count, 2u);

  auto& r = open(b, true, false);
  EXPECT_EQ(rd(*b, r, 2)->data, "he");
  EXPECT_EQ(rd(*b, r)->data, "llo");
  auto eof = rd(*b, r);
  ASSERT_TRUE(eof);
  EXPECT_EQ(eof->err, Errc::ok);
  EXPECT_EQ(eof->data, "");
  EXPECT_EQ(rd(*b, r, 100, false)->data, "");  // EOF again, never blocks
  EXPECT_EQ(b->info().seg.count, 1u);          // EOF consumed nothing
  auto& r2 = open(b, true, false);
  EXPECT_EQ(rd(*b, r2)->data, "again");
  EXPECT_EQ(rd(*b, r2)->data, "");
  auto& r3 = open(b, true, false);
  EXPECT_EQ(rd(*b, r3)->err, Errc::again);  // a fresh open on an empty box waits
}

TEST_F(MailboxCore, FileFramingTouchSendsNothing) {
  auto b = box(framed(F::file));
  auto& w = open(b, false, true);
  auto f = b->flush(w, Sender{}, nullptr);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->err, Errc::ok);
  b->release(w);
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(b->info().seg.total_sent, 0u);
}

TEST_F(MailboxCore, FileFramingLimitAndDiscard) {
  auto b = box(framed(F::file));
  auto& w = open(b, false, true);
  EXPECT_EQ(wr(*b, w, std::string(4000, 'a'))->err, Errc::ok);
  EXPECT_EQ(wr(*b, w, std::string(97, 'b'))->err, Errc::msg_size);  // 4097 in all
  // Refused whole (cp writing a file too large): no later write completes it,
  // and the close that would send it says so and sends nothing.
  EXPECT_EQ(wr(*b, w, std::string(1, 'b'))->err, Errc::msg_size);
  EXPECT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::msg_size);
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(b->info().seg.total_sent, 0u);
  // The next message on the same open file (after fsync) starts afresh.
  EXPECT_EQ(wr(*b, w, "next")->err, Errc::ok);
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(wr(*b, w, std::string(96, 'b'))->err, Errc::ok);
  b->discard_unsent(w);  // the writer died: nothing is sent
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);
  EXPECT_EQ(b->info().seg.count, 1u);
  EXPECT_EQ(wr(*b, w, "x")->err, Errc::ok);
  b->release(w);  // last close drops an unflushed partial message
  EXPECT_EQ(b->info().seg.count, 1u);
}

TEST_F(MailboxCore, LineBatchFramingOneMessagePerLine) {
  auto b = box(framed(F::line_batch));
  auto& w = open(b, false, true);
  auto o = wr(*b, w, "one\ntwo\nthree\npart");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::ok);
  EXPECT_EQ(o->written, 18u);
  EXPECT_EQ(b->info().seg.count, 3u);
  EXPECT_EQ(wr(*b, w, "ial")->written, 3u);  // still no newline
  EXPECT_EQ(b->info().seg.count, 3u);
  EXPECT_EQ(wr(*b, w, "\nlast")->written, 5u);
  EXPECT_EQ(b->info().seg.count, 4u);
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);  // commits the partial line
  EXPECT_EQ(b->info().seg.count, 5u);
  auto& r = open(b, true, false);
  EXPECT_EQ(rd(*b, r, 5)->data, "one\n");  // whole lines only
  EXPECT_EQ(rd(*b, r, 4)->data, "two\n");
  EXPECT_EQ(rd(*b, r, 100)->data, "three\npartial\nlast");
  EXPECT_EQ(rd(*b, r)->err, Errc::again);
  EXPECT_EQ(b->info().seg.total_received, 5u);
  // A line longer than the read comes in parts.
  EXPECT_EQ(wr(*b, w, "abcdefgh\n")->err, Errc::ok);
  EXPECT_EQ(rd(*b, r, 3)->data, "abc");
  EXPECT_EQ(rd(*b, r, 100)->data, "defgh\n");
}

TEST_F(MailboxCore, LineFramingTooLongLineSendsNothing) {
  auto b = box(framed(F::line));
  auto& w = open(b, false, true);
  std::string s = "ok\n" + std::string(4097, 'x') + "\n";
  EXPECT_EQ(wr(*b, w, s)->err, Errc::msg_size);
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(wr(*b, w, std::string(4097, 'p'))->err, Errc::msg_size);  // even a partial line
  // A line written in parts that grows too long is refused whole, the part
  // buffered before included.
  EXPECT_EQ(wr(*b, w, std::string(4000, 'q'))->err, Errc::ok);
  EXPECT_EQ(wr(*b, w, std::string(100, 'q'))->err, Errc::msg_size);
  ASSERT_EQ(b->flush(w, Sender{}, nullptr)->err, Errc::ok);
  EXPECT_EQ(b->info().seg.count, 0u);
  EXPECT_EQ(wr(*b, w, "fine\n")->err, Errc::ok);
  EXPECT_EQ(b->info().seg.count, 1u);
}

TEST_F(MailboxCore, FullMailboxNonblocking) {
  auto b = box(framed(F::datagram, 2));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "1")->err, Errc::ok);
  ASSERT_EQ(wr(*b, w, "2")->err, Errc::ok);
  EXPECT_EQ(wr(*b, w, "3")->err, Errc::again);
  EXPECT_FALSE(wr(*b, w, "3", false).has_value());  // would block, nothing sent
  EXPECT_EQ(b->info().seg.count, 2u);
  EXPECT_EQ(b->info().seg.total_sent, 2u);
  // Line framing: the lines that fit go, the write is short.
  auto l = box(framed(F::line, 2));
  auto& lw = open(l, false, true);
  auto o = wr(*l, lw, "a\nb\nc\n");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->err, Errc::ok);
  EXPECT_EQ(o->written, 4u);
  EXPECT_EQ(wr(*l, lw, "c\n")->err, Errc::again);
  // File framing blocks at flush.
  auto f = box(framed(F::file, 1));
  auto& fw = open(f, false, true, /*nonblock=*/true);
  ASSERT_EQ(wr(*f, fw, "first")->err, Errc::ok);
  ASSERT_EQ(f->flush(fw, Sender{}, nullptr)->err, Errc::ok);
  ASSERT_EQ(wr(*f, fw, "second")->err, Errc::ok);
  EXPECT_EQ(f->flush(fw, Sender{}, nullptr)->err, Errc::again);
  EXPECT_EQ(f->info().seg.count, 1u);
  auto& fr = open(f, true, false);
  EXPECT_EQ(rd(*f, fr)->data, "first");
  EXPECT_EQ(f->flush(fw, Sender{}, nullptr)->err, Errc::ok);  // the buffer was kept
  auto& fr2 = open(f, true, false);
  EXPECT_EQ(rd(*f, fr2)->data, "second");
}

TEST_F(MailboxCore, PollBits) {
  auto b = box(framed(F::datagram, 1));
  auto& r = open(b, true, false);
  auto& w = open(b, false, true);
  EXPECT_EQ(b->poll(r, nullptr), 0u);
  EXPECT_EQ(b->poll(w, nullptr) & POLLOUT, unsigned{POLLOUT});
  ASSERT_EQ(wr(*b, w, "m")->err, Errc::ok);
  EXPECT_EQ(b->poll(r, nullptr) & POLLIN, unsigned{POLLIN});
  EXPECT_EQ(b->poll(w, nullptr) & POLLOUT, 0u);  // full
  auto& rw = open(b, true, true);
  EXPECT_EQ(b->poll(rw, nullptr), unsigned{POLLIN | POLLRDNORM});
  ASSERT_EQ(rd(*b, r)->data, "m");
  EXPECT_EQ(b->poll(rw, nullptr), unsigned{POLLOUT | POLLWRNORM});
  // Rendezvous: writable only while a receiver waits.
  auto z = box(framed(F::datagram, 0));
  auto& zw = open(z, false, true);
  auto& zr = open(z, true, false);
  EXPECT_EQ(z->poll(zw, nullptr) & POLLOUT, 0u);
  ASSERT_FALSE(z->read(zr, 10, false, waiter(1)).has_value());
  EXPECT_EQ(z->poll(zw, nullptr) & POLLOUT, unsigned{POLLOUT});
  // A file-framed writer is writable while not full (its close sends, and waits when full).
  auto f = box(framed(F::file, 1));
  auto& fw = open(f, false, true);
  EXPECT_EQ(f->poll(fw, nullptr) & POLLOUT, unsigned{POLLOUT});
  ASSERT_EQ(wr(*f, fw, "m")->err, Errc::ok);
  ASSERT_EQ(f->flush(fw, Sender{}, nullptr)->err, Errc::ok);
  EXPECT_EQ(f->poll(fw, nullptr) & POLLOUT, 0u);  // full
  // Deleted: error and hang-up.
  b->remove();
  EXPECT_EQ(b->poll(r, nullptr) & (POLLERR | POLLHUP), unsigned{POLLERR | POLLHUP});
}

TEST_F(MailboxCore, ArmedPollTokenIsNotifiedOnce) {
  auto b = box(framed(F::datagram, 4));
  auto& r = open(b, true, false);
  auto& w = open(b, false, true);
  auto n = std::make_shared<std::atomic<int>>(0);
  EXPECT_EQ(b->poll(r, std::make_unique<ut::TestPoll>(n)), 0u);
  EXPECT_EQ(n->load(), 0);
  ASSERT_EQ(wr(*b, w, "ping")->err, Errc::ok);
  EXPECT_EQ(n->load(), 1);
  ASSERT_EQ(wr(*b, w, "pong")->err, Errc::ok);
  EXPECT_EQ(n->load(), 1);  // one notification per arming
  EXPECT_NE(b->poll(r, std::make_unique<ut::TestPoll>(n)) & POLLIN, 0u);
  ASSERT_EQ(rd(*b, r)->data, "ping");  // a receive changes readiness too
  EXPECT_EQ(n->load(), 2);
  // A released open file's token is dropped, never called.
  auto m = std::make_shared<std::atomic<int>>(0);
  b->poll(r, std::make_unique<ut::TestPoll>(m));
  b->release(r);
  ASSERT_EQ(wr(*b, w, "x")->err, Errc::ok);
  EXPECT_EQ(m->load(), 0);
}

TEST_F(MailboxCore, SetCapacityKeepsQueuedMessagesInOrder) {
  auto b = box(framed(F::datagram, 64));
  auto& w = open(b, false, true);
  for (int i = 0; i < 5; i++) ASSERT_EQ(wr(*b, w, "m" + std::to_string(i))->err, Errc::ok);
  const std::string old_path = b->info().locator.value();
  const uint64_t quota = mount_->quota_used();
  ASSERT_EQ(b->set("capacity", "2"), Errc::ok);
  MailboxInfo i = b->info();
  EXPECT_EQ(i.settings.capacity, 2u);
  EXPECT_EQ(i.seg.count, 5u);  // more than the new capacity, none dropped
  EXPECT_EQ(i.seg.total_sent, 5u);
  EXPECT_NE(i.locator.value(), old_path);
  EXPECT_FALSE(ut::path_exists(old_path));
  EXPECT_TRUE(ut::path_exists(i.locator.value()));
  EXPECT_EQ(mount_->quota_used(), quota);
  EXPECT_EQ(wr(*b, w, "x")->err, Errc::again);
  ASSERT_EQ(b->set("capacity", "unbounded"), Errc::ok);
  ASSERT_EQ(wr(*b, w, "m5")->err, Errc::ok);
  ASSERT_EQ(b->set("max_message", "2K"), Errc::ok);
  auto& r = open(b, true, false);
  for (int i = 0; i < 6; i++) EXPECT_EQ(rd(*b, r)->data, "m" + std::to_string(i));
  EXPECT_EQ(rd(*b, r)->err, Errc::again);
  EXPECT_EQ(b->info().seg.total_received, 6u);
  EXPECT_EQ(wr(*b, w, std::string(2049, 'z'))->err, Errc::msg_size);
}

TEST_F(MailboxCore, SetRejectsBadValuesAndChangesNothing) {
  auto b = box(framed(F::datagram, 8));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, std::string(3000, 'q'))->err, Errc::ok);
  const MailboxInfo before = b->info();
  for (auto [k, v] : {std::pair{"capacity", "-1"},
                      {"capacity", "many"},
                      {"max_message", "0"},
                      {"max_message", "1T"},
                      {"framing", "bytes"},
                      {"timeout_ms", "soon"}})
    EXPECT_EQ(b->set(k, v), Errc::invalid) << k << "=" << v;
  EXPECT_EQ(b->set("colour", "1"), Errc::not_found);
  // A queued message larger than the new max_message: refused, kept.
  EXPECT_EQ(b->set("max_message", "1K"), Errc::busy);
  const MailboxInfo after = b->info();
  EXPECT_EQ(after.settings.capacity, 8u);
  EXPECT_EQ(after.settings.max_message, 4096u);
  EXPECT_EQ(after.settings.framing, F::datagram);
  EXPECT_EQ(after.settings.timeout_ms, 0u);
  EXPECT_EQ(after.locator.value(), before.locator.value());
  EXPECT_EQ(after.seg.count, 1u);
  // framing applies to opens made after the change.
  ASSERT_EQ(b->set("framing", "line"), Errc::ok);
  EXPECT_EQ(w.framing, F::datagram);
  EXPECT_EQ(open(b, true, false).framing, F::line);
}

TEST_F(MailboxCore, InfoAndReportedSize) {
  auto b = box(framed(F::datagram, 2));
  auto& w = open(b, false, true);
  ASSERT_EQ(wr(*b, w, "12345")->err, Errc::ok);
  MailboxInfo i = b->info();
  EXPECT_EQ(i.seg.bytes, 5u);
  EXPECT_EQ(i.reported_size, 5u);
  EXPECT_GT(i.seg.last_send_ns, 0);
  EXPECT_FALSE(i.removed);
  ASSERT_EQ(wr(*b, w, "6")->err, Errc::ok);
  // Full datagram mailbox: reports at least the largest datagram (see mailbox.cc).
  EXPECT_EQ(b->info().reported_size, 4096u);
}

TEST_F(MailboxCore, RemoveFreesEverything) {
  auto b = box(framed(F::datagram));
  auto& w = open(b, false, true);
  auto& r = open(b, true, false);
  ASSERT_EQ(wr(*b, w, "doomed")->err, Errc::ok);
  const std::string path = b->info().locator.value();
  EXPECT_GT(mount_->quota_used(), 0u);
  b->remove();
  EXPECT_TRUE(b->info().removed);
  EXPECT_FALSE(ut::path_exists(path));
  EXPECT_EQ(mount_->quota_used(), 0u);
  EXPECT_EQ(rd(*b, r)->err, Errc::removed);
  EXPECT_EQ(rd(*b, r, 10, false)->err, Errc::removed);
  EXPECT_EQ(wr(*b, w, "x")->err, Errc::removed);
  EXPECT_EQ(b->set("capacity", "3"), Errc::removed);
  b->remove();  // twice is harmless
}

class SmallQuota : public ut::CoreTest {
  void SetUp() override { open_mount(8192); }
};

TEST_F(SmallQuota, UnboundedSendFailsWithNoSpace) {
  auto b = box(framed(F::datagram, layout::kUnbounded));
  auto& w = open(b, false, true);
  std::string m(1000, 'u');
  int sent = 0;
  std::optional<Outcome> o;
  for (; sent < 100; sent++) {
    o = wr(*b, w, m, false);
    ASSERT_TRUE(o);
    if (o->err != Errc::ok) break;
  }
  EXPECT_EQ(o->err, Errc::no_space);
  EXPECT_EQ(sent, 7);  // 7 records of 1032 bytes fit in 8192
  EXPECT_EQ(b->info().seg.count, 7u);
  EXPECT_EQ(b->poll(w, nullptr) & POLLOUT, unsigned{POLLOUT});
  auto& r = open(b, true, false);
  ASSERT_EQ(rd(*b, r)->data, m);
  EXPECT_EQ(wr(*b, w, m)->err, Errc::ok);
}

}  // namespace
}  // namespace mbx

// SPDX-License-Identifier: MIT
// libmailbox: send to and receive from mailboxfs mailboxes through their
// shared-memory segments, without a system call when the call need not wait.
//
// A Mailbox is opened by the path of a mailbox file on a mailboxfs mount; the
// daemon and every other participant (shell tools through the filesystem,
// other programs through this library) see the same messages, counters and
// blocking. Errors are errno values; nothing here throws.
#pragma once
#if __cplusplus < 201703L
#error "libmailbox's C++ API needs C++17 or later: compile with -std=c++20"
#endif
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailbox/protocol.h"

namespace mailbox {

struct OpenOptions {
  bool send = true;     // needs write permission on the mailbox file
  bool receive = true;  // needs read permission on the mailbox file
  // When this process may not map the segment (EACCES: the segment is
  // readable and writable by the daemon's user only), send and receive
  // through the mailbox file instead, with the same calls and results
  // (slower; see docs/design.md section 12). Without it open() fails.
  bool fallback = false;
};

struct CreateOptions {
  uint64_t capacity = 64;  // 0 = rendezvous; kUnbounded
  uint64_t max_message = 1u << 20;
  unsigned mode = 0644;
  static constexpr uint64_t kUnbounded = UINT64_MAX;
};

struct Stats {
  uint64_t messages, bytes, sent, received, lost, capacity, max_message;
};

using Clock = std::chrono::steady_clock;

class Mailbox;
namespace detail {
struct MailboxImpl;
struct Access;  // the library's own add-ons (lib/mq): not part of the API
}  // namespace detail

// A slot reserved in a mailbox (zero-copy send): write size() bytes at data(),
// then commit(). Other senders of that mailbox wait until it is committed or
// dropped; dropping it uncommitted sends nothing. It must not outlive the
// Mailbox it came from (moving that Mailbox is fine).
class Reservation {
 public:
  Reservation(Reservation&& o) noexcept : m_(std::exchange(o.m_, nullptr)), p_(o.p_), n_(o.n_) {}
  Reservation& operator=(Reservation&&) = delete;
  ~Reservation();
  char* data() const { return p_; }
  size_t size() const { return n_; }
  // Sends the message (for a rendezvous mailbox, waits for a receiver).
  // Returns 0 or an errno as Mailbox::send().
  int commit();

 private:
  friend class Mailbox;
  Reservation(detail::MailboxImpl* m, char* p, size_t n) : m_(m), p_(p), n_(n) {}
  detail::MailboxImpl* m_;
  char* p_;
  size_t n_;
};

// A received message read in place (zero-copy receive). Other receivers of
// that mailbox wait until it is released; release() (or destruction) removes
// it from the mailbox, put_back() leaves it queued for the next receiver. It
// must not outlive the Mailbox it came from (moving that Mailbox is fine).
// While it is open, that Mailbox's receives, sends and reservations fail with
// EBUSY (a send then could deadlock); do not use the same mailbox through
// another object from this thread either (it would wait on this view): release
// or put back the view first.
class View {
 public:
  View(View&& o) noexcept : m_(std::exchange(o.m_, nullptr)), p_(o.p_), n_(o.n_), from_(o.from_), prio_(o.prio_) {}
  View& operator=(View&&) = delete;
  ~View() { release(); }
  const char* data() const { return p_; }
  size_t size() const { return n_; }
  std::string_view bytes() const { return {p_, n_}; }
  const Sender& sender() const { return from_; }
  // The message's priority (through the file too: see Mailbox::last_priority()).
  unsigned priority() const { return prio_; }
  void release();
  void put_back();

 private:
  friend class Mailbox;
  View(detail::MailboxImpl* m, const char* p, size_t n, Sender f, unsigned prio)
      : m_(m), p_(p), n_(n), from_(f), prio_(prio) {}
  detail::MailboxImpl* m_;
  const char* p_;
  size_t n_;
  Sender from_;
  unsigned prio_;
};

// One open mailbox. An object is used by one thread at a time; threads that
// share a mailbox open it once each (they then share its FIFO order).
class Mailbox {
 public:
  // Maps the segment of the mailbox at `path`. Errors: ENOENT, EACCES (the
  // mode bits forbid a requested direction, or the segment is not mappable by
  // this user and OpenOptions::fallback is off), ENOTSUP (not a mailboxfs
  // mailbox), EBADMSG (corrupt segment).
  static Result<Mailbox> open(const std::string& path, OpenOptions opts = {});
  // Creates a mailbox file (EEXIST if it exists), applies the settings, opens it.
  static Result<Mailbox> create(const std::string& path, const CreateOptions& opts, OpenOptions o = {});

  Mailbox(Mailbox&&) noexcept;
  Mailbox& operator=(Mailbox&&) noexcept;
  ~Mailbox();

  // Sends one message. Blocks while the mailbox is full (for a rendezvous
  // mailbox, until a receiver has taken it). Returns 0 or an errno:
  // EAGAIN (try_send), ETIMEDOUT, EMSGSIZE, ENOSPC (quota), EIDRM (deleted),
  // EBADF (opened without send), EBADMSG.
  int send(std::string_view msg);
  int try_send(std::string_view msg);
  int send_for(std::string_view msg, Clock::duration timeout);
  int send_until(std::string_view msg, Clock::time_point deadline);
  // The same at a priority, 0 (the default, lowest) to kMaxPriority (EINVAL
  // above): a receive takes the oldest message of the highest priority, as
  // mq_receive does. ENOTSUP for a priority > 0 when the mailbox's segment
  // predates priorities (until it is resized), on a Redis mount, or through
  // the file (fallback) of a daemon without kSendPriorityIoctl.
  int send(std::string_view msg, unsigned prio);
  int try_send(std::string_view msg, unsigned prio);
  int send_for(std::string_view msg, unsigned prio, Clock::duration timeout);
  int send_until(std::string_view msg, unsigned prio, Clock::time_point deadline);

  // Receives one message into buf[0..cap), returning its length. A message
  // longer than `cap` is not returned: EMSGSIZE. On the fast path it stays
  // queued for any receiver; through the file (via_file()) it has already
  // left the mailbox and is kept in this object for its next receive with a
  // larger buffer (lost if the object is destroyed first).
  Result<size_t> receive(void* buf, size_t cap);
  Result<size_t> try_receive(void* buf, size_t cap);
  Result<size_t> receive_for(void* buf, size_t cap, Clock::duration timeout);
  Result<size_t> receive_until(void* buf, size_t cap, Clock::time_point deadline);
  // The same, storing the message's priority in *prio (unless prio is null).
  Result<size_t> receive(void* buf, size_t cap, unsigned* prio);
  Result<size_t> try_receive(void* buf, size_t cap, unsigned* prio);
  Result<size_t> receive_for(void* buf, size_t cap, unsigned* prio, Clock::duration timeout);
  Result<size_t> receive_until(void* buf, size_t cap, unsigned* prio, Clock::time_point deadline);
  // Receives one message whole into `out`, replacing its contents (cleared
  // on error). Any length up to max_message; one copy.
  int receive(std::string& out);
  int try_receive(std::string& out);
  int receive_for(std::string& out, Clock::duration timeout);
  int receive_until(std::string& out, Clock::time_point deadline);
  int receive(std::vector<char>& out);
  int try_receive(std::vector<char>& out);
  int receive_for(std::vector<char>& out, Clock::duration timeout);
  int receive_until(std::vector<char>& out, Clock::time_point deadline);

  // Zero-copy: reserve room for a message of exactly `len` bytes (blocking
  // while full, errors as send()), and receive a message in place. One
  // reservation and one view per object at a time (EBUSY).
  Result<Reservation> reserve(size_t len);
  Result<Reservation> try_reserve(size_t len);
  Result<Reservation> reserve_until(size_t len, Clock::time_point deadline);
  // A reservation whose message is sent at priority `prio` (as send()).
  Result<Reservation> reserve(size_t len, unsigned prio);
  Result<Reservation> try_reserve(size_t len, unsigned prio);
  Result<Reservation> reserve_until(size_t len, unsigned prio, Clock::time_point deadline);
  Result<View> receive_view();
  Result<View> try_receive_view();
  Result<View> receive_view_until(Clock::time_point deadline);

  // The sender of the last message this object received.
  Sender last_sender() const;
  // The priority of the last message this object received (through the
  // file: as the daemon reports it, ioctl kReceivedIoctl; 0 from a daemon
  // without it).
  unsigned last_priority() const;

  Stats stats() const;
  const std::string& path() const;
  // True if this object sends and receives through the file (fallback).
  bool via_file() const;

 private:
  friend class Reservation;
  friend class View;
  friend struct detail::Access;
  using Impl = detail::MailboxImpl;
  explicit Mailbox(std::unique_ptr<Impl> impl);
  Result<Reservation> reserve_impl(size_t len, unsigned prio, bool nonblock, std::optional<Clock::time_point> d);
  Result<View> view_impl(bool nonblock, std::optional<Clock::time_point> d);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailbox

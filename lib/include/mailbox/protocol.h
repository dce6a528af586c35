// SPDX-License-Identifier: MIT
// The words the daemon and every client share, spelled once: the
// user.mailbox.* attribute names, the sender's text form, the size of the
// control segment, and the two value types every API returns (Sender,
// Result). The segment's bytes are in layout.h.
#pragma once
#if __cplusplus < 201703L
#error "mailboxfs headers need C++17 or later: compile with -std=c++20"
#endif
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace mailbox {

// Who sent a message: as the kernel reported it to the daemon (filesystem
// path), or as the sending program's libmailbox recorded it (fast path).
struct Sender {
  int pid = 0;
  unsigned uid = 0, gid = 0;
  bool operator==(const Sender& o) const { return pid == o.pid && uid == o.uid && gid == o.gid; }
};

// user.mailbox.sender's value: "pid=P uid=U gid=G".
inline std::string format_sender(const Sender& s) {
  return "pid=" + std::to_string(s.pid) + " uid=" + std::to_string(s.uid) + " gid=" + std::to_string(s.gid);
}
// The inverse of format_sender(); false (and `out` unchanged) if `text` is not one.
inline bool parse_sender(std::string_view text, Sender* out) {
  std::string t(text);  // sscanf needs the terminating NUL
  Sender s;
  if (std::sscanf(t.c_str(), "pid=%d uid=%u gid=%u", &s.pid, &s.uid, &s.gid) != 3) return false;
  *out = s;
  return true;
}

// A value or an error. E is an errno (int) in the public API, where
// failure() makes one; the daemon's core uses its own enum of errno values
// (mbx::Errc), which converts implicitly.
template <class T, class E = int>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}  // NOLINT: implicit by design
  template <class X = E, std::enable_if_t<std::is_enum_v<X>, int> = 0>
  Result(E err) : err_(err) {}  // NOLINT: implicit for enum error types
  static Result failure(E err) { return Result(err, 0); }
  bool ok() const { return v_.has_value(); }
  explicit operator bool() const { return ok(); }
  E error() const { return err_; }
  T& value() & { return *v_; }
  T&& value() && { return std::move(*v_); }
  const T& value() const& { return *v_; }
  T& operator*() & { return *v_; }
  const T& operator*() const& { return *v_; }
  T* operator->() { return &*v_; }
  const T* operator->() const { return &*v_; }

 private:
  Result(E err, int) : err_(err) {}
  std::optional<T> v_;
  E err_{};
};

// Message priorities: a receive takes the oldest message of the highest
// priority (as mq_receive). 0 is the default and the lowest; above this, EINVAL.
inline constexpr unsigned kMaxPriority = 32767;

// mq_unlink's removal (mailbox_mq(3)): a rename(2) of a mailbox to a name
// that starts with this removes its name at once, as unlink does, but
// deletes the mailbox only when its last open file is closed. The new name
// is not kept (no mailbox name can hold the control character it starts with).
inline constexpr std::string_view kUnlinkAtLastClose = "\001unlink-at-last-close.";
inline constexpr bool is_unlink_at_last_close(std::string_view name) {
  return name.substr(0, kUnlinkAtLastClose.size()) == kUnlinkAtLastClose;
}

// The control segment: one per mount, file "control" in its state directory.
inline constexpr uint64_t kControlSize = 4096;

// Extended attributes of a mailbox file (getfattr -d -m user.mailbox FILE).
namespace attr {
inline constexpr std::string_view kPrefix = "user.mailbox.";
// Settings: the owner (or root) may set them.
inline constexpr const char* kCapacity = "user.mailbox.capacity";
inline constexpr const char* kMaxMessage = "user.mailbox.max_message";
inline constexpr const char* kFraming = "user.mailbox.framing";
inline constexpr const char* kTimeoutMs = "user.mailbox.timeout_ms";
// The priority of messages written through the file (fixed at open, as the framing).
inline constexpr const char* kSendPriority = "user.mailbox.send_priority";
// Counters and state: read-only.
inline constexpr const char* kMessages = "user.mailbox.messages";
inline constexpr const char* kBytes = "user.mailbox.bytes";
inline constexpr const char* kSent = "user.mailbox.sent";
inline constexpr const char* kReceived = "user.mailbox.received";
inline constexpr const char* kLost = "user.mailbox.lost";
// Received through a daemon that died before the reply was acknowledged, and
// queued again (Redis mounts): each may have been received twice.
inline constexpr const char* kReturned = "user.mailbox.returned";
inline constexpr const char* kBlockedSenders = "user.mailbox.blocked_senders";
inline constexpr const char* kBlockedReceivers = "user.mailbox.blocked_receivers";
inline constexpr const char* kSegment = "user.mailbox.segment";
// Queued messages per priority, highest first: "5:2 0:10" (empty: none queued).
inline constexpr const char* kPriorities = "user.mailbox.priorities";
// Per reading thread: the sender of the last message it received here (not listed).
inline constexpr const char* kSender = "user.mailbox.sender";
// Of the pid/ directory (direct communication).
inline constexpr const char* kLinks = "user.mailbox.links";
inline constexpr const char* kDiscarded = "user.mailbox.discarded";

inline constexpr const char* kSettings[] = {kCapacity, kMaxMessage, kFraming, kTimeoutMs, kSendPriority};
inline constexpr const char* kCounters[] = {
    kMessages, kBytes, kSent, kReceived, kLost, kReturned, kBlockedSenders, kBlockedReceivers, kSegment, kPriorities};
inline constexpr const char* kDirectory[] = {kLinks, kDiscarded};

// True for a name in the user.mailbox. namespace (the prefix alone included).
inline constexpr bool in_namespace(std::string_view name) { return name.substr(0, kPrefix.size()) == kPrefix; }
// The name without the prefix ("capacity"), which is also the setting's -o
// option name; empty if `name` does not start with the prefix.
inline constexpr std::string_view key(std::string_view name) {
  return name.substr(0, kPrefix.size()) == kPrefix ? name.substr(kPrefix.size()) : std::string_view{};
}
}  // namespace attr

}  // namespace mailbox

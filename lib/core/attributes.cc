// SPDX-License-Identifier: MIT
#include "core/attributes.h"

#include <algorithm>
#include <iterator>

namespace mbx {

namespace attr = mailbox::attr;

namespace {
std::string pids(const std::vector<pid_t>& v) {
  std::string s;
  for (pid_t p : v) {
    if (!s.empty()) s += ' ';
    s += std::to_string(p);
  }
  return s;
}

bool is(std::string_view name, const char* a) { return name == a; }
}  // namespace

Result<std::string> mailbox_xattr(Mailbox& box, std::string_view name, pid_t reader) {
  if (is(name, attr::kSender)) {  // per reading thread: FUSE's getxattr carries no file handle
    auto s = box.last_sender_text(reader);
    if (!s) return Errc::no_data;
    return *s;
  }
  if (is(name, attr::kPriorities)) {  // "5:2 0:10", highest first; empty when nothing is queued
    auto p = box.priorities();
    if (!p) return p.error();
    std::string s;
    for (auto [prio, n] : *p) s += (s.empty() ? "" : " ") + std::to_string(prio) + ":" + std::to_string(n);
    return s;
  }
  // Whoever asks where the store is may change it without the daemon: the
  // kernel caches its attributes no more (Mailbox::expose).
  if (is(name, attr::kSegment)) box.expose();
  MailboxInfo i = box.info();
  if (is(name, attr::kCapacity)) return format_capacity(i.settings.capacity);
  if (is(name, attr::kMaxMessage)) return std::to_string(i.settings.max_message);
  if (is(name, attr::kFraming)) return std::string(framing_name(i.settings.framing));
  if (is(name, attr::kTimeoutMs)) return std::to_string(i.settings.timeout_ms);
  if (is(name, attr::kSendPriority)) return std::to_string(i.settings.send_priority);
  if (is(name, attr::kMessages)) return std::to_string(i.seg.count);
  if (is(name, attr::kBytes)) return std::to_string(i.seg.bytes);
  if (is(name, attr::kSent)) return std::to_string(i.seg.total_sent);
  if (is(name, attr::kReceived)) return std::to_string(i.seg.total_received);
  if (is(name, attr::kLost)) return std::to_string(i.seg.lost);
  if (is(name, attr::kReturned)) return std::to_string(i.seg.returned);
  if (is(name, attr::kBlockedSenders)) return pids(i.blocked_senders);
  if (is(name, attr::kBlockedReceivers)) return pids(i.blocked_receivers);
  if (is(name, attr::kSegment)) return i.locator;
  return Errc::no_data;
}

std::string mailbox_xattr_names() {
  std::string out;
  for (const char* k : attr::kSettings) out.append(k).push_back('\0');
  for (const char* k : attr::kCounters) out.append(k).push_back('\0');
  return out;
}

Errc set_mailbox_xattr(Mailbox& box, std::string_view name, std::string_view value) {
  auto named = [&](const char* k) { return name == k; };
  if (std::any_of(std::begin(attr::kCounters), std::end(attr::kCounters), named)) return Errc::perm;
  if (std::none_of(std::begin(attr::kSettings), std::end(attr::kSettings), named)) return Errc::not_supported;
  Errc e = box.set(attr::key(name), value);
  if (e == Errc::not_found) e = Errc::io;  // a store that could not be made: never "not supported"
  return e;
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
#include "core/settings.h"

#include <charconv>

#include "mailbox/protocol.h"

namespace mbx {

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.remove_suffix(1);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return s;
}
}  // namespace

Result<uint64_t> parse_u64(std::string_view s) {
  s = trim(s);
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return Errc::invalid;
  return v;
}

Result<uint64_t> parse_size(std::string_view s) {
  s = trim(s);
  uint64_t mul = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
      case 'K': mul = 1ull << 10; break;
      case 'm':
      case 'M': mul = 1ull << 20; break;
      case 'g':
      case 'G': mul = 1ull << 30; break;
      default: break;
    }
    if (mul != 1) s.remove_suffix(1);
  }
  auto v = parse_u64(s);
  if (!v) return v;
  if (*v > UINT64_MAX / mul) return Errc::invalid;
  return *v * mul;
}

Result<uint64_t> parse_capacity(std::string_view s) {
  s = trim(s);
  if (s == "unbounded") return layout::kUnbounded;
  auto v = parse_u64(s);
  if (!v || *v >= layout::kUnbounded) return Errc::invalid;
  return v;
}

Result<Framing> parse_framing(std::string_view s) {
  s = trim(s);
  if (s == "file") return Framing::file;
  if (s == "datagram") return Framing::datagram;
  if (s == "line") return Framing::line;
  if (s == "line_batch") return Framing::line_batch;
  return Errc::invalid;
}

std::string format_capacity(uint64_t c) { return c == layout::kUnbounded ? "unbounded" : std::to_string(c); }

const char* framing_name(Framing f) {
  switch (f) {
    case Framing::file: return "file";
    case Framing::datagram: return "datagram";
    case Framing::line: return "line";
    case Framing::line_batch: return "line_batch";
  }
  return "?";
}

Errc apply_setting(Settings& s, std::string_view name, std::string_view value) {
  namespace attr = mailbox::attr;
  Settings n = s;
  if (name == attr::key(attr::kCapacity)) {
    auto v = parse_capacity(value);
    if (!v) return Errc::invalid;
    n.capacity = *v;
  } else if (name == attr::key(attr::kMaxMessage)) {
    auto v = parse_size(value);
    if (!v || *v == 0 || *v > kMaxMessageLimit) return Errc::invalid;
    n.max_message = *v;
  } else if (name == attr::key(attr::kFraming)) {
    auto v = parse_framing(value);
    if (!v) return Errc::invalid;
    n.framing = *v;
  } else if (name == attr::key(attr::kTimeoutMs)) {
    auto v = parse_u64(value);
    if (!v || *v > 365ull * 24 * 3600 * 1000) return Errc::invalid;
    n.timeout_ms = *v;
  } else if (name == attr::key(attr::kSendPriority)) {
    auto v = parse_u64(value);
    if (!v || *v > mailbox::kMaxPriority) return Errc::invalid;
    n.send_priority = static_cast<unsigned>(*v);
  } else {
    return Errc::not_found;
  }
  s = n;
  return Errc::ok;
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
// Per-mailbox settings: their defaults (-o options) and their text form
// (user.mailbox.* xattrs), parsed in one place so both accept the same values.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "base/errc.h"
#include "mailbox/layout.h"

namespace mbx {

// line: one line per read(2). line_batch: line framing whose read(2) returns
// as many whole lines as fit (opt-in: a reader that reads ahead and stops
// early, such as head -n1, takes the lines it did not use).
enum class Framing : uint8_t { file, datagram, line, line_batch };

// The largest write FUSE always delivers in one request (1 MiB - 4 KiB): a
// datagram above it would be split, so it is refused with EMSGSIZE.
inline constexpr uint64_t kMaxDatagram = (1u << 20) - 4096;
inline constexpr uint64_t kMaxMessageLimit = 256u << 20;

struct Settings {
  uint64_t capacity = 64;           // messages; 0 = rendezvous; layout::kUnbounded
  uint64_t max_message = 1u << 20;  // bytes
  Framing framing = Framing::file;
  uint64_t timeout_ms = 0;  // 0 = wait forever
  // Priority of the messages written through the file (fixed at each open).
  unsigned send_priority = 0;
};

Result<uint64_t> parse_u64(std::string_view s);
// Byte counts accept a K, M or G suffix (powers of 1024).
Result<uint64_t> parse_size(std::string_view s);
Result<uint64_t> parse_capacity(std::string_view s);  // number or "unbounded"
Result<Framing> parse_framing(std::string_view s);
std::string format_capacity(uint64_t c);
const char* framing_name(Framing f);

// Sets one setting by name: an attribute's key (mailbox::attr::key(), e.g.
// "capacity"), which is also its -o option. not_found for an unknown name, invalid for a bad value; `s`
// is unchanged on error.
Errc apply_setting(Settings& s, std::string_view name, std::string_view value);

}  // namespace mbx

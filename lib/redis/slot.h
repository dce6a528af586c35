// SPDX-License-Identifier: MIT
// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of its
// hash tag (the text between the first '{' and the next '}', when not
// empty), modulo 16384. Keys with the same tag share a slot, so one script
// may touch them all on a cluster.
#pragma once
#include <cstdint>
#include <string_view>

namespace mbx::redis {

inline constexpr int kSlots = 16384;

// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster uses it.
uint16_t crc16(std::string_view data);
// The part of `key` that is hashed: its hash tag, or the whole key.
std::string_view hash_tag(std::string_view key);
// The key's slot, 0..16383.
int key_slot(std::string_view key);

}  // namespace mbx::redis

// SPDX-License-Identifier: MIT
// A mailbox's user.mailbox.* attributes (names in mailbox/protocol.h): its
// settings and counters as text, for every part of the tree that shows
// mailboxes.
#pragma once
#include <string>
#include <string_view>

#include "base/errc.h"
#include "core/mailbox.h"

namespace mbx {

// The value of attribute `name` of `box`; `reader` is the calling thread
// (user.mailbox.sender answers for it). no_data for an unknown name.
Result<std::string> mailbox_xattr(Mailbox& box, std::string_view name, pid_t reader);
// Every listed attribute name, NUL-separated (user.mailbox.sender is per
// reader and not listed).
std::string mailbox_xattr_names();
// Sets a setting: perm for a counter, not_supported for an unknown name.
Errc set_mailbox_xattr(Mailbox& box, std::string_view name, std::string_view value);

}  // namespace mbx

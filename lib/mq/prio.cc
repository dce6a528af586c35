// SPDX-License-Identifier: MIT
// The priority seam: mq's sends and receives over libmailbox's calls.
#include "mq/mq.h"

namespace mbx::mq {

int prio_send(mailbox::Mailbox& m, std::string_view msg, unsigned prio, bool nonblock,
              const std::optional<mailbox::Clock::time_point>& deadline) {
  if (nonblock) return m.try_send(msg, prio);
  return deadline ? m.send_until(msg, prio, *deadline) : m.send(msg, prio);
}

mailbox::Result<size_t> prio_receive(mailbox::Mailbox& m, char* buf, size_t cap, unsigned* prio, bool nonblock,
                                     const std::optional<mailbox::Clock::time_point>& deadline) {
  if (nonblock) return m.try_receive(buf, cap, prio);
  return deadline ? m.receive_until(buf, cap, prio, *deadline) : m.receive(buf, cap, prio);
}

}  // namespace mbx::mq

// SPDX-License-Identifier: MIT
// The priority seam: mq's sends and receives over libmailbox's calls.
#include "mq/mq.h"

namespace mbx::mq {

int prio_send(mailbox::Mailbox& m, std::string_view msg, unsigned prio, bool nonblock,
              const std::optional<mailbox::Clock::time_point>& deadline) {
  (void)prio;  // TODO(h-prio): Mailbox::send(msg, prio)
  if (nonblock) return m.try_send(msg);
  return deadline ? m.send_until(msg, *deadline) : m.send(msg);
}

mailbox::Result<size_t> prio_receive(mailbox::Mailbox& m, char* buf, size_t cap, unsigned* prio, bool nonblock,
                                     const std::optional<mailbox::Clock::time_point>& deadline) {
  if (prio) *prio = 0;
  if (nonblock) return m.try_receive(buf, cap);
  return deadline ? m.receive_until(buf, cap, *deadline) : m.receive(buf, cap);
}

}  // namespace mbx::mq

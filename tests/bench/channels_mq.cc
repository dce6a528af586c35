// SPDX-License-Identifier: MIT
// POSIX message queues on mailboxfs: the <mailbox/mqueue.h> calls that
// libmailbox-mq.so's mq_send/mq_receive make for a descriptor it owns (the
// same ownership check, then the call), with the kernel peer's attributes
// (10 messages of at most the message size): `posix_mq` is the kernel's.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <mailbox/mqueue.h>

#include "channels.h"

namespace bench {
namespace {

class MailboxMqChannel : public Channel {
 public:
  MailboxMqChannel(const Env& env, size_t max, int tag) {
    ::setenv("MAILBOXFS_MQ_ROOT", env.mount.c_str(), 1);
    name_ = "/mqbench-" + std::to_string(::getpid()) + "-" + std::to_string(tag);
    mq_attr a{};
    a.mq_maxmsg = 10;
    a.mq_msgsize = long(max);
    q_ = mbx_mq_open(name_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600, &a);
    if (q_ == mqd_t(-1)) die("mbx_mq_open");
  }
  ~MailboxMqChannel() override {
    mbx_mq_close(q_);
    mbx_mq_unlink(name_.c_str());
  }
  void send(const char* p, size_t n) override {
    if (!mbx_mq_owns(q_) || mbx_mq_send(q_, p, n, 0)) die("mbx_mq_send");
  }
  size_t receive(char* p, size_t cap) override {
    ssize_t r = mbx_mq_owns(q_) ? mbx_mq_receive(q_, p, cap < 8192 ? 8192 : cap, nullptr) : -1;
    if (r < 0) die("mbx_mq_receive");
    return size_t(r);
  }

 private:
  std::string name_;
  mqd_t q_;
};

}  // namespace

std::vector<Mechanism> mq_mechanisms() {
  return {
      {"mq_mailboxfs",
       [](const Spec& s, const Env& env) -> std::unique_ptr<Channel> {
         return s.max_size <= 8192 ? std::make_unique<MailboxMqChannel>(env, s.max_size, s.tag) : nullptr;
       },
       Needs::mount},
  };
}

}  // namespace bench

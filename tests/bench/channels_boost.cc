// SPDX-License-Identifier: MIT
// Boost.Interprocess message_queue: the portable shared-memory queue a C++
// programmer would otherwise pick (a mutex and two condition variables in a
// shared-memory segment). Header-only; left out when Boost is not installed.
#include "channels.h"

#if __has_include(<boost/interprocess/ipc/message_queue.hpp>)
#include <unistd.h>

#include <optional>
#include <string>

#include <boost/interprocess/ipc/message_queue.hpp>

namespace bench {
namespace {

namespace bip = boost::interprocess;

class BoostMqChannel : public Channel {
 public:
  BoostMqChannel(const Spec& s) : name_("mbxbench-bmq-" + std::to_string(::getpid()) + "-" + std::to_string(s.tag)) {
    try {
      bip::message_queue::remove(name_.c_str());
      // 64 messages, as the mailbox's default capacity and the ring's slots.
      q_.emplace(bip::create_only, name_.c_str(), 64, s.max_size);
    } catch (const std::exception& e) {
      die(e.what());
    }
  }
  ~BoostMqChannel() override {
    if (owner_ == ::getpid()) bip::message_queue::remove(name_.c_str());
  }
  // The mapping is inherited across fork(); the queue's mutex and condition
  // variables are process-shared, so both sides use the same object.
  void send(const char* p, size_t n) override {
    try {
      q_->send(p, n, 0);
    } catch (const std::exception& e) {
      die(e.what());
    }
  }
  size_t receive(char* p, size_t cap) override {
    try {
      bip::message_queue::size_type got = 0;
      unsigned prio = 0;
      q_->receive(p, cap, got, prio);
      return got;
    } catch (const std::exception& e) {
      die(e.what());
    }
  }

 private:
  std::string name_;
  std::optional<bip::message_queue> q_;
  pid_t owner_ = ::getpid();
};

}  // namespace

std::vector<Mechanism> boost_mechanisms() {
  return {{"boost_mq",
           [](const Spec& s, const Env&) -> std::unique_ptr<Channel> { return std::make_unique<BoostMqChannel>(s); },
           Needs::nothing}};
}

}  // namespace bench
#else
namespace bench {
std::vector<Mechanism> boost_mechanisms() { return {}; }
}  // namespace bench
#endif

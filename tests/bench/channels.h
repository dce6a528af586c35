// The mechanisms `make bench` compares, each as a one-way message channel
// between a producer process and a consumer process (created before fork()).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace bench {

class Channel {
 public:
  virtual ~Channel() = default;
  // Called in each process after fork(), before use.
  virtual void open_sender() {}
  virtual void open_receiver() {}
  virtual void send(const char* p, size_t n) = 0;
  // Receives one message of at most `cap` bytes, returns its length.
  virtual size_t receive(char* p, size_t cap) = 0;
};

struct Mechanism {
  std::string name;
  // Makes a fresh channel for messages up to `max_size` bytes; `tag` makes
  // names unique. Returns nullptr if the mechanism cannot carry that size.
  std::unique_ptr<Channel> (*make)(size_t max_size, const std::string& mount, int tag);
  bool needs_mount;
};

std::vector<Mechanism> mechanisms();

}  // namespace bench

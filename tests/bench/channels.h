// SPDX-License-Identifier: MIT
// The mechanisms `make bench` compares, each as a one-way message channel
// between producer processes and consumer processes (created before fork()).
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

// Where the filesystem mechanisms live.
struct Env {
  std::string mount;  // mailboxfs
  std::string floor;  // bench-floor, the minimal FUSE daemon
  // A redis-server (its unix socket) and two mailboxfs daemons mounted on it.
  std::string redis_socket, redis_mount, redis_mount2;
};

struct Spec {
  size_t max_size;  // every message is at most this long
  int tag;          // makes names unique
  int producers = 1, consumers = 1;
  bool mpmc() const { return producers > 1 || consumers > 1; }
};

enum class Needs { nothing, mount, floor, redis };

struct Mechanism {
  std::string name;
  // Makes a fresh channel; nullptr if the mechanism cannot carry
  // `spec.max_size` or serve that many producers and consumers.
  std::unique_ptr<Channel> (*make)(const Spec& spec, const Env& env);
  Needs needs;
  // A mailbox's settings for messages of `size` bytes, shown next to its
  // name (e.g. "tuned: max_message=4096"); nullptr for the peers.
  std::string (*settings)(size_t size) = nullptr;
};

// Every mechanism, in the order of the tables.
std::vector<Mechanism> mechanisms();

// The parts of that list, one per source file.
std::vector<Mechanism> kernel_mechanisms();  // channels.cc
std::vector<Mechanism> boost_mechanisms();   // channels_boost.cc
std::vector<Mechanism> fs_mechanisms();      // channels_fs.cc
std::vector<Mechanism> mq_mechanisms();      // channels_mq.cc
std::vector<Mechanism> redis_mechanisms();   // channels_redis.cc

[[noreturn]] void die(const char* what);
void write_all(int fd, const char* p, size_t n);

}  // namespace bench

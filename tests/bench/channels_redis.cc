// SPDX-License-Identifier: MIT
// The Redis rows: mailboxfs on a Redis mount (-o backend=) in datagram
// style, through one daemon and from one daemon to another, and the same
// server used directly through hiredis (LPUSH, BRPOP), the floor a Redis
// mount is compared with. run.sh starts the server and both daemons.
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>

#include "channels.h"

namespace bench {
namespace {

constexpr size_t kMaxDatagram = 1044480;  // as fs_datagram (design.md, kMaxDatagram)

std::string name(int tag) { return "bench-" + std::to_string(::getpid()) + "-" + std::to_string(tag); }

void set_datagram(const std::string& path, size_t size) {
  const std::string m = std::to_string(size < 4096 ? 4096 : size);
  if (::setxattr(path.c_str(), "user.mailbox.max_message", m.data(), m.size(), 0)) die("setxattr max_message");
  if (::setxattr(path.c_str(), "user.mailbox.framing", "datagram", 8, 0)) die("setxattr framing");
}

// Sent through `send_path`, received through `recv_path`: the same mailbox
// seen through one daemon, or through two. The creator removes it.
class RedisFsChannel : public Channel {
 public:
  RedisFsChannel(std::string send_path, std::string recv_path)
      : send_(std::move(send_path)), recv_(std::move(recv_path)) {}
  ~RedisFsChannel() override {
    if (fd_ >= 0) ::close(fd_);
    if (owner_ == ::getpid()) ::unlink(send_.c_str());
  }
  void open_sender() override { open(send_, O_WRONLY); }
  void open_receiver() override { open(recv_, O_RDONLY); }
  void send(const char* p, size_t n) override {
    if (::write(fd_, p, n) != ssize_t(n)) die("redis mount write");
  }
  size_t receive(char* p, size_t cap) override {
    const ssize_t r = ::read(fd_, p, cap);
    if (r < 0) die("redis mount read");
    return size_t(r);
  }

 private:
  void open(const std::string& path, int flags) {
    if ((fd_ = ::open(path.c_str(), flags)) < 0) die("redis mount open");
  }
  std::string send_, recv_;
  int fd_ = -1;
  pid_t owner_ = ::getpid();
};

std::unique_ptr<Channel> make_fs(const Spec& s, const std::string& send_dir, const std::string& recv_dir) {
  if (s.max_size > kMaxDatagram) return nullptr;
  const std::string n = name(s.tag), send = send_dir + "/" + n, recv = recv_dir + "/" + n;
  const int fd = ::open(send.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) die("create on the redis mount");
  ::close(fd);
  set_datagram(send, s.max_size);
  if (recv != send) set_datagram(recv, s.max_size);  // framing is each daemon's own setting
  return std::make_unique<RedisFsChannel>(send, recv);
}

// One list on the server: LPUSH to send, BRPOP to receive, a connection per process.
class RawRedisChannel : public Channel {
 public:
  RawRedisChannel(std::string socket, std::string key) : socket_(std::move(socket)), key_(std::move(key)) {}
  ~RawRedisChannel() override {
    if (owner_ == ::getpid()) {
      connect();
      command("DEL %b", key_.data(), key_.size());
    }
    if (c_) redisFree(c_);
  }
  void open_sender() override { connect(); }
  void open_receiver() override { connect(); }
  void send(const char* p, size_t n) override { command("LPUSH %b %b", key_.data(), key_.size(), p, n); }
  size_t receive(char* p, size_t cap) override {
    redisReply* r = command("BRPOP %b 0", key_.data(), key_.size());
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) die("BRPOP reply");
    const size_t n = r->element[1]->len;
    if (n > cap) die("message longer than the buffer");
    std::memcpy(p, r->element[1]->str, n);
    freeReplyObject(r);
    return n;
  }

 private:
  void connect() {
    if (c_) return;
    c_ = redisConnectUnix(socket_.c_str());
    if (!c_ || c_->err) die("redis connect");
  }
  // The reply (freed by the caller when it reads it; else here).
  template <typename... A>
  redisReply* command(const char* fmt, A... a) {
    auto* r = static_cast<redisReply*>(redisCommand(c_, fmt, a...));
    if (!r || r->type == REDIS_REPLY_ERROR) die("redis command");
    if (r->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(r);
      return nullptr;
    }
    return r;
  }
  std::string socket_, key_;
  redisContext* c_ = nullptr;
  pid_t owner_ = ::getpid();
};

std::string redis_settings(size_t size) {
  return "redis, datagram, max_message=" + std::to_string(size < 4096 ? 4096 : size);
}

}  // namespace

std::vector<Mechanism> redis_mechanisms() {
  return {
      {"fs_redis", [](const Spec& s, const Env& env) { return make_fs(s, env.redis_mount, env.redis_mount); },
       Needs::redis, redis_settings},
      {"fs_redis_2d", [](const Spec& s, const Env& env) { return make_fs(s, env.redis_mount, env.redis_mount2); },
       Needs::redis, redis_settings},
      {"redis_raw",
       [](const Spec& s, const Env& env) -> std::unique_ptr<Channel> {
         return std::make_unique<RawRedisChannel>(env.redis_socket, "mbxbench:" + name(s.tag));
       },
       Needs::redis},
  };
}

}  // namespace bench

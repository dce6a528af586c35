// SPDX-License-Identifier: MIT
// The kernel's message channels and the reference ring: the peers
// mailboxfs is compared with.
#include "channels.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace bench {

void die(const char* what) {
  std::perror(what);
  std::exit(3);
}

void write_all(int fd, const char* p, size_t n) {
  while (n) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) die("write");
    p += w;
    n -= size_t(w);
  }
}

namespace {

// A byte stream (pipe or FIFO) carrying messages. With one consumer each
// message is a 4-byte length and its bytes. With several, a length and its
// bytes read by two consumers would interleave, so every message is a fixed
// record of 4 + max bytes, written and read by a single call: writes of at
// most PIPE_BUF bytes are atomic, so every read gets exactly one record.
class StreamChannel : public Channel {
 public:
  explicit StreamChannel(const Spec& s) : records_(s.consumers > 1), record_(4 + s.max_size) {}
  ~StreamChannel() override {
    if (rd_ >= 0) ::close(rd_);
    if (wr_ >= 0) ::close(wr_);
  }
  void send(const char* p, size_t n) override {
    uint32_t len = uint32_t(n);
    char buf[4 + 65536];
    std::memcpy(buf, &len, 4);
    if (records_) {
      std::memcpy(buf + 4, p, n);
      write_all(wr_, buf, record_);
    } else if (n <= 65536) {
      std::memcpy(buf + 4, p, n);
      write_all(wr_, buf, n + 4);
    } else {
      write_all(wr_, buf, 4);
      write_all(wr_, p, n);
    }
  }
  size_t receive(char* p, size_t cap) override {
    uint32_t len;
    if (records_) {
      char buf[PIPE_BUF];
      if (::read(rd_, buf, record_) != ssize_t(record_)) die("read record");
      std::memcpy(&len, buf, 4);
      std::memcpy(p, buf + 4, len);
      return len;
    }
    read_all(reinterpret_cast<char*>(&len), 4);
    if (len > cap) die("message longer than the buffer");
    read_all(p, len);
    return len;
  }
  // Whether fixed records fit one atomic write.
  static bool fits(const Spec& s) { return s.consumers == 1 || 4 + s.max_size <= PIPE_BUF; }

 protected:
  int rd_ = -1, wr_ = -1;

 private:
  void read_all(char* p, size_t n) {
    while (n) {
      ssize_t r = ::read(rd_, p, n);
      if (r <= 0) die("read");
      p += r;
      n -= size_t(r);
    }
  }
  bool records_;
  size_t record_;
};

// pipe(2), inherited by fork().
class PipeChannel : public StreamChannel {
 public:
  explicit PipeChannel(const Spec& s) : StreamChannel(s) {
    int fd[2];
    if (::pipe(fd)) die("pipe");
    rd_ = fd[0];
    wr_ = fd[1];
  }
};

// A named FIFO, opened by path in each process as unrelated programs would.
// Receivers open it O_RDWR (Linux never blocks that open), so a thousand
// receivers can be waiting in read() before the first sender opens.
class FifoChannel : public StreamChannel {
 public:
  FifoChannel(const Spec& s) : StreamChannel(s) {
    path_ = "/tmp/mbxbench-fifo-" + std::to_string(::getpid()) + "-" + std::to_string(s.tag);
    if (::mkfifo(path_.c_str(), 0600)) die("mkfifo");
  }
  ~FifoChannel() override {
    if (owner_ == ::getpid()) ::unlink(path_.c_str());
  }
  void open_sender() override {
    if ((wr_ = ::open(path_.c_str(), O_WRONLY)) < 0) die("open fifo");
  }
  void open_receiver() override {
    if ((rd_ = ::open(path_.c_str(), O_RDWR)) < 0) die("open fifo");
  }

 private:
  std::string path_;
  pid_t owner_ = ::getpid();
};

class SeqpacketChannel : public Channel {
 public:
  SeqpacketChannel() {
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fd_)) die("socketpair");
  }
  ~SeqpacketChannel() override {
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  void send(const char* p, size_t n) override {
    if (::send(fd_[1], p, n, 0) != ssize_t(n)) die("send");
  }
  size_t receive(char* p, size_t cap) override {
    ssize_t r = ::recv(fd_[0], p, cap, 0);
    if (r < 0) die("recv");
    return size_t(r);
  }

 private:
  int fd_[2];
};

class PosixMqChannel : public Channel {
 public:
  explicit PosixMqChannel(size_t max, int tag) {
    name_ = "/mbxbench-" + std::to_string(::getpid()) + "-" + std::to_string(tag);
    mq_attr a{};
    a.mq_maxmsg = 10;
    a.mq_msgsize = long(max);
    q_ = ::mq_open(name_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600, &a);
    if (q_ == mqd_t(-1)) die("mq_open");
    ::mq_unlink(name_.c_str());  // the descriptor keeps it alive
  }
  ~PosixMqChannel() override { ::mq_close(q_); }
  void send(const char* p, size_t n) override {
    if (::mq_send(q_, p, n, 0)) die("mq_send");
  }
  size_t receive(char* p, size_t cap) override {
    ssize_t r = ::mq_receive(q_, p, cap < 8192 ? 8192 : cap, nullptr);
    if (r < 0) die("mq_receive");
    return size_t(r);
  }

 private:
  std::string name_;
  mqd_t q_;
};

class SysvMqChannel : public Channel {
 public:
  SysvMqChannel() {
    id_ = ::msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    if (id_ < 0) die("msgget");
  }
  ~SysvMqChannel() override {
    if (owner_ == ::getpid()) ::msgctl(id_, IPC_RMID, nullptr);
  }
  void send(const char* p, size_t n) override {
    buf_.resize(sizeof(long) + n);
    long type = 1;
    std::memcpy(buf_.data(), &type, sizeof type);
    std::memcpy(buf_.data() + sizeof type, p, n);
    if (::msgsnd(id_, buf_.data(), n, 0)) die("msgsnd");
  }
  size_t receive(char* p, size_t cap) override {
    buf_.resize(sizeof(long) + cap);
    ssize_t r = ::msgrcv(id_, buf_.data(), cap, 0, 0);
    if (r < 0) die("msgrcv");
    std::memcpy(p, buf_.data() + sizeof(long), size_t(r));
    return size_t(r);
  }

 private:
  int id_;
  pid_t owner_ = ::getpid();
  std::vector<char> buf_;
};

// The reference: a minimal lock-free SPSC ring of fixed slots in shared
// memory, each side spinning briefly and then sleeping on a futex (the
// physical limit the library is measured against).
class RingChannel : public Channel {
  static constexpr uint32_t kSlots = 64;
  static constexpr int kSpins = 200;
  struct alignas(64) Index {
    std::atomic<uint32_t> pos{0};      // monotonically increasing
    std::atomic<uint32_t> sleeping{0};
  };
  struct Shared {
    Index head;  // consumer
    Index tail;  // producer
  };

 public:
  explicit RingChannel(size_t max) : slot_((sizeof(uint32_t) + max + 63) & ~size_t(63)) {
    bytes_ = sizeof(Shared) + slot_ * kSlots;
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    sh_ = new (p) Shared();
    data_ = static_cast<char*>(p) + sizeof(Shared);
  }
  ~RingChannel() override { ::munmap(sh_, bytes_); }
  void send(const char* p, size_t n) override {
    const uint32_t t = sh_->tail.pos.load(std::memory_order_relaxed);
    // SYNC POINT: acquire pairs with the consumer's release of head.pos.
    wait_until(sh_->head, [&] { return t - sh_->head.pos.load(std::memory_order_acquire) < kSlots; });
    char* s = data_ + (t % kSlots) * slot_;
    uint32_t len = uint32_t(n);
    std::memcpy(s, &len, 4);
    std::memcpy(s + 4, p, n);
    // SYNC POINT: release publishes the slot; pairs with the consumer's acquire.
    sh_->tail.pos.store(t + 1, std::memory_order_seq_cst);
    wake(sh_->tail);
  }
  size_t receive(char* p, size_t) override {
    const uint32_t h = sh_->head.pos.load(std::memory_order_relaxed);
    wait_until(sh_->tail, [&] { return sh_->tail.pos.load(std::memory_order_acquire) != h; });
    const char* s = data_ + (h % kSlots) * slot_;
    uint32_t len;
    std::memcpy(&len, s, 4);
    std::memcpy(p, s + 4, len);
    sh_->head.pos.store(h + 1, std::memory_order_seq_cst);
    wake(sh_->head);
    return len;
  }

 private:
  template <class Ready>
  static void wait_until(Index& other, Ready ready) {
    for (int i = 0; i < kSpins; i++) {  // the same spin policy as libmailbox
      if (ready()) return;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    while (!ready()) {
      const uint32_t seen = other.pos.load(std::memory_order_seq_cst);
      other.sleeping.fetch_add(1, std::memory_order_seq_cst);
      if (!ready())
        ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&other.pos), FUTEX_WAIT, seen, nullptr, nullptr, 0);
      other.sleeping.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  static void wake(Index& mine) {
    if (mine.sleeping.load(std::memory_order_seq_cst) > 0)
      ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&mine.pos), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
  size_t slot_, bytes_;
  Shared* sh_;
  char* data_;
};

}  // namespace

std::vector<Mechanism> kernel_mechanisms() {
  return {
      {"pipe", [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return StreamChannel::fits(s) ? std::make_unique<PipeChannel>(s) : nullptr;
       }, Needs::nothing},
      {"fifo", [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return StreamChannel::fits(s) ? std::make_unique<FifoChannel>(s) : nullptr;
       }, Needs::nothing},
      {"seqpacket", [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.max_size <= 65536 ? std::make_unique<SeqpacketChannel>() : nullptr;
       }, Needs::nothing},
      {"posix_mq", [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.max_size <= 8192 ? std::make_unique<PosixMqChannel>(s.max_size, s.tag) : nullptr;
       }, Needs::nothing},
      {"sysv_mq", [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.max_size <= 8192 ? std::make_unique<SysvMqChannel>() : nullptr;
       }, Needs::nothing},
      // Single producer, single consumer by construction.
      {"ref_ring", [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.mpmc() ? nullptr : std::make_unique<RingChannel>(s.max_size);
       }, Needs::nothing},
  };
}

std::vector<Mechanism> mechanisms() {
  std::vector<Mechanism> all = kernel_mechanisms();
  for (auto part : {boost_mechanisms, fs_mechanisms})
    for (auto& m : part()) all.push_back(m);
  return all;
}

}  // namespace bench

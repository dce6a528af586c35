// SPDX-License-Identifier: MIT
// The kernel's message channels and the reference ring: the peers
// mailboxfs is compared with.
#include "channels.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstddef>
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

// The reference: the strongest simple SPSC ring we know how to write, in
// shared memory between the two processes (rigtorp's SPSCQueue shape, made
// blocking). Positions count up forever (uint32_t, differences wrap safely)
// and are published with release and read with acquire; each side keeps the
// last value it read of the other's position in its own private memory and
// reads the shared one again only when that cached value says full or empty.
// Each position is alone on its cache line with the count of processes asleep
// on it; slots are whole cache lines, so the sides never share a line but the
// slot being handed over. A side that must wait spins as libmailbox does
// (kSpins), then sleeps on a futex on the position word itself; the other
// side makes the wake syscall only when that line's sleeper count is nonzero.
class RingChannel : public Channel {
  static constexpr uint32_t kSlots = 64;  // a power of two: a position's slot is pos & (kSlots - 1)
  static constexpr int kSpins = 200;      // libmailbox's spin before it sleeps (client.cc)
  static constexpr size_t kLine = 64;
  // One side's position and the processes of the other side asleep on it.
  // Written by its own side on every message; the sleeper count only by
  // the other side, and only around a sleep.
  struct alignas(kLine) Position {
    std::atomic<uint32_t> pos{0};  // the futex word
    std::atomic<uint32_t> sleepers{0};
  };
  static_assert(sizeof(Position) == kLine && std::atomic<uint32_t>::is_always_lock_free);
  struct Shared {
    Position tail;  // producer's: messages published
    Position head;  // consumer's: messages taken
  };
  static_assert(offsetof(Shared, head) == kLine && sizeof(Shared) == 2 * kLine);
  static constexpr size_t kLenSize = sizeof(uint32_t);  // each slot: the length, then the bytes

 public:
  explicit RingChannel(size_t max) : max_(max), slot_((kLenSize + max + kLine - 1) & ~(kLine - 1)) {
    bytes_ = sizeof(Shared) + slot_ * kSlots;
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    sh_ = new (p) Shared();
    data_ = static_cast<char*>(p) + sizeof(Shared);
  }
  ~RingChannel() override { ::munmap(sh_, bytes_); }

  // Producer process only. tail_ and head_seen_ are this process's own copies.
  void send(const char* p, size_t n) override {
    if (n > max_) die("ref_ring: message longer than a slot");
    if (tail_ - head_seen_ == kSlots) {
      // SYNC POINT: acquire (in wait) pairs with the consumer's release store
      // of head.pos: the slot it freed is done being read before we overwrite it.
      head_seen_ = wait(sh_->head, [&](uint32_t h) { return tail_ - h < kSlots; });
    }
    char* s = data_ + size_t(tail_ & (kSlots - 1)) * slot_;
    const uint32_t len = uint32_t(n);
    std::memcpy(s, &len, kLenSize);
    std::memcpy(s + kLenSize, p, n);
    tail_++;
    // SYNC POINT: release publishes the slot's length and bytes; pairs with
    // the consumer's acquire load of tail.pos (in wait).
    sh_->tail.pos.store(tail_, std::memory_order_release);
    wake(sh_->tail);
  }

  // Consumer process only. head_ and tail_seen_ are this process's own copies.
  size_t receive(char* p, size_t cap) override {
    if (head_ == tail_seen_) {
      // SYNC POINT: acquire (in wait) pairs with the producer's release store
      // of tail.pos: the slot's bytes are visible before we read them.
      tail_seen_ = wait(sh_->tail, [&](uint32_t t) { return t != head_; });
    }
    const char* s = data_ + size_t(head_ & (kSlots - 1)) * slot_;
    uint32_t len;
    std::memcpy(&len, s, kLenSize);
    if (len > max_ || len > cap) die("ref_ring: bad length in a slot");
    std::memcpy(p, s + kLenSize, len);
    head_++;
    // SYNC POINT: release orders our reads of the slot before the producer
    // may reuse it; pairs with the producer's acquire load of head.pos.
    sh_->head.pos.store(head_, std::memory_order_release);
    wake(sh_->head);
    return len;
  }

 private:
  // Waits until `ready` holds for the other side's position and returns it.
  template <class Ready>
  static uint32_t wait(Position& other, Ready ready) {
    for (int i = 0; i < kSpins; i++) {
      // SYNC POINT: acquire; pairs with the other side's release store of pos.
      const uint32_t v = other.pos.load(std::memory_order_acquire);
      if (ready(v)) return v;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    for (;;) {
      // SYNC POINT: seq_cst increment, then seq_cst re-load of pos, then
      // FUTEX_WAIT on that value; pairs with the seq_cst fence in wake()
      // between the other side's store of pos and its load of sleepers:
      // either it sees us and wakes us (or FUTEX_WAIT finds pos moved), or
      // our re-load sees its new position and we do not sleep.
      other.sleepers.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t v = other.pos.load(std::memory_order_seq_cst);
      if (!ready(v)) ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&other.pos), FUTEX_WAIT, v, nullptr, nullptr, 0);
      // Relaxed: a count seen late costs the other side one needless wake.
      other.sleepers.fetch_sub(1, std::memory_order_relaxed);
      if (ready(v)) return v;  // the seq_cst load above is also acquire
    }
  }
  // After storing mine.pos: wakes the other side if it sleeps on it.
  static void wake(Position& mine) {
    // SYNC POINT: orders our release store of pos before the load of
    // sleepers; pairs with the sleeper's seq_cst increment and re-load in wait().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (mine.sleepers.load(std::memory_order_relaxed) > 0)
      ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&mine.pos), FUTEX_WAKE, 1, nullptr, nullptr, 0);
  }
  size_t max_, slot_, bytes_;
  Shared* sh_;
  char* data_;
  // Private to each process after fork(): the producer uses the first two,
  // the consumer the last two.
  uint32_t tail_ = 0, head_seen_ = 0;
  uint32_t head_ = 0, tail_seen_ = 0;
};

}  // namespace

std::vector<Mechanism> kernel_mechanisms() {
  return {
      {"pipe",
       [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return StreamChannel::fits(s) ? std::make_unique<PipeChannel>(s) : nullptr;
       },
       Needs::nothing},
      {"fifo",
       [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return StreamChannel::fits(s) ? std::make_unique<FifoChannel>(s) : nullptr;
       },
       Needs::nothing},
      {"seqpacket",
       [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.max_size <= 65536 ? std::make_unique<SeqpacketChannel>() : nullptr;
       },
       Needs::nothing},
      {"posix_mq",
       [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.max_size <= 8192 ? std::make_unique<PosixMqChannel>(s.max_size, s.tag) : nullptr;
       },
       Needs::nothing},
      {"sysv_mq",
       [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.max_size <= 8192 ? std::make_unique<SysvMqChannel>() : nullptr;
       },
       Needs::nothing},
      // Single producer, single consumer by construction.
      {"ref_ring",
       [](const Spec& s, const Env&) -> std::unique_ptr<Channel> {
         return s.mpmc() ? nullptr : std::make_unique<RingChannel>(s.max_size);
       },
       Needs::nothing},
  };
}

std::vector<Mechanism> mechanisms() {
  std::vector<Mechanism> all = kernel_mechanisms();
  for (auto part : {boost_mechanisms, fs_mechanisms, mq_mechanisms, redis_mechanisms})
    for (auto& m : part()) all.push_back(m);
  return all;
}

}  // namespace bench

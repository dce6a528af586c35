#include "channels.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <mailbox/mailbox.hpp>

namespace bench {
namespace {

[[noreturn]] void die(const char* what) {
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

// pipe(2): a byte stream; each message is a 4-byte length and its bytes.
class PipeChannel : public Channel {
 public:
  PipeChannel() {
    if (::pipe(fd_)) die("pipe");
  }
  ~PipeChannel() override {
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  void send(const char* p, size_t n) override {
    uint32_t len = uint32_t(n);
    char buf[4 + 65536];
    std::memcpy(buf, &len, 4);
    if (n <= 65536) {
      std::memcpy(buf + 4, p, n);
      write_all(fd_[1], buf, n + 4);
    } else {
      write_all(fd_[1], buf, 4);
      write_all(fd_[1], p, n);
    }
  }
  size_t receive(char* p, size_t) override {
    uint32_t len;
    read_all(reinterpret_cast<char*>(&len), 4);
    read_all(p, len);
    return len;
  }

 private:
  void read_all(char* p, size_t n) {
    while (n) {
      ssize_t r = ::read(fd_[0], p, n);
      if (r <= 0) die("read");
      p += r;
      n -= size_t(r);
    }
  }
  int fd_[2];
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

std::string make_mailbox(const std::string& mount, int tag, size_t max, const char* framing) {
  std::string path = mount + "/bench-" + std::to_string(::getpid()) + "-" + std::to_string(tag);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) die("create mailbox");
  ::close(fd);
  std::string m = std::to_string(max < 4096 ? 4096 : max);
  if (::setxattr(path.c_str(), "user.mailbox.max_message", m.data(), m.size(), 0) ||
      ::setxattr(path.c_str(), "user.mailbox.framing", framing, std::strlen(framing), 0))
    die("setxattr");
  return path;
}

// The filesystem path, datagram framing: open once, one write/read per message.
class DatagramChannel : public Channel {
 public:
  DatagramChannel(const std::string& mount, int tag, size_t max) : path_(make_mailbox(mount, tag, max, "datagram")) {}
  ~DatagramChannel() override {
    if (fd_ >= 0) ::close(fd_);
    if (owner_ == ::getpid()) ::unlink(path_.c_str());
  }
  void open_sender() override { fd_ = ::open(path_.c_str(), O_WRONLY); }
  void open_receiver() override { fd_ = ::open(path_.c_str(), O_RDONLY); }
  void send(const char* p, size_t n) override {
    if (::write(fd_, p, n) != ssize_t(n)) die("mailbox write");
  }
  size_t receive(char* p, size_t cap) override {
    ssize_t r = ::read(fd_, p, cap);
    if (r < 0) die("mailbox read");
    return size_t(r);
  }

 private:
  std::string path_;
  int fd_ = -1;
  pid_t owner_ = ::getpid();
};

// The filesystem path, file framing: open-write-close / open-read-close per message.
class FileChannel : public Channel {
 public:
  FileChannel(const std::string& mount, int tag, size_t max) : path_(make_mailbox(mount, tag, max, "file")) {}
  ~FileChannel() override {
    if (owner_ == ::getpid()) ::unlink(path_.c_str());
  }
  void send(const char* p, size_t n) override {
    int fd = ::open(path_.c_str(), O_WRONLY);
    if (fd < 0 || ::write(fd, p, n) != ssize_t(n) || ::close(fd)) die("mailbox send");
  }
  size_t receive(char* p, size_t cap) override {
    int fd = ::open(path_.c_str(), O_RDONLY);
    if (fd < 0) die("mailbox open");
    size_t got = 0;
    for (ssize_t r; (r = ::read(fd, p + got, cap - got)) > 0;) got += size_t(r);
    ::close(fd);
    return got;
  }

 private:
  std::string path_;
  pid_t owner_ = ::getpid();
};

class LibraryChannel : public Channel {
 public:
  LibraryChannel(const std::string& mount, int tag, size_t max) : path_(make_mailbox(mount, tag, max, "datagram")) {}
  ~LibraryChannel() override {
    if (owner_ == ::getpid()) ::unlink(path_.c_str());
  }
  void open_sender() override { open({.send = true, .receive = false}); }
  void open_receiver() override { open({.send = false, .receive = true}); }
  void send(const char* p, size_t n) override {
    if (box_->send(std::string_view(p, n))) die("libmailbox send");
  }
  size_t receive(char* p, size_t cap) override {
    auto r = box_->receive(p, cap);
    if (!r) die("libmailbox receive");
    return *r;
  }

 private:
  void open(mailbox::OpenOptions o) {
    auto b = mailbox::Mailbox::open(path_, o);
    if (!b) {
      errno = b.error();
      die("libmailbox open");
    }
    box_ = std::make_unique<mailbox::Mailbox>(std::move(b.value()));
  }
  std::string path_;
  std::unique_ptr<mailbox::Mailbox> box_;
  pid_t owner_ = ::getpid();
};

}  // namespace

std::vector<Mechanism> mechanisms() {
  return {
      {"pipe", [](size_t, const std::string&, int) -> std::unique_ptr<Channel> {
         return std::make_unique<PipeChannel>();
       }, false},
      {"seqpacket", [](size_t m, const std::string&, int) -> std::unique_ptr<Channel> {
         return m <= 65536 ? std::make_unique<SeqpacketChannel>() : nullptr;
       }, false},
      {"posix_mq", [](size_t m, const std::string&, int t) -> std::unique_ptr<Channel> {
         return m <= 8192 ? std::make_unique<PosixMqChannel>(m, t) : nullptr;
       }, false},
      {"sysv_mq", [](size_t m, const std::string&, int) -> std::unique_ptr<Channel> {
         return m <= 8192 ? std::make_unique<SysvMqChannel>() : nullptr;
       }, false},
      {"ref_ring", [](size_t m, const std::string&, int) -> std::unique_ptr<Channel> {
         return std::make_unique<RingChannel>(m);
       }, false},
      {"libmailbox", [](size_t m, const std::string& mnt, int t) -> std::unique_ptr<Channel> {
         return std::make_unique<LibraryChannel>(mnt, t, m);
       }, true},
      {"fs_datagram", [](size_t m, const std::string& mnt, int t) -> std::unique_ptr<Channel> {
         return m <= 1044480 ? std::make_unique<DatagramChannel>(mnt, t, m) : nullptr;
       }, true},
      {"fs_file", [](size_t m, const std::string& mnt, int t) -> std::unique_ptr<Channel> {
         return std::make_unique<FileChannel>(mnt, t, m);
       }, true},
  };
}

}  // namespace bench

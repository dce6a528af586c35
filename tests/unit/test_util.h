// SPDX-License-Identifier: MIT
// Unit-test helpers: private state directories under /dev/shm, a Waiter that
// records how it was finished, and child processes with deadlines.
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "core/mailbox.h"
#include "core/mount.h"

namespace mbx {
// gtest prints an Errc by its errno name instead of its bytes.
inline void PrintTo(Errc e, std::ostream* os) {
  const char* name = e == Errc::ok ? "ok" : strerrorname_np(to_errno(e));
  *os << "Errc(" << (name ? name : std::to_string(to_errno(e)).c_str()) << ")";
}
}  // namespace mbx

namespace ut {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A fresh path /dev/shm/mbxtest-unit-<pid>-<n> (not created).
inline std::string fresh_path() {
  static std::atomic<int> counter{0};
  return "/dev/shm/mbxtest-unit-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

inline bool path_exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// A directory removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() : path_(fresh_path()) { std::filesystem::create_directory(path_); }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// FNV-1a, for message checksums.
inline uint64_t fnv(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  auto* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}

// Message `i` of producer `prod`: a header {prod, i, checksum} and a body
// whose length varies with i.
inline std::string make_msg(uint32_t prod, uint32_t i, size_t max_body = 300) {
  size_t body = (i * 7919u + prod * 31u) % max_body;
  std::string m(16 + body, '\0');
  for (size_t k = 0; k < body; k++) m[16 + k] = static_cast<char>('a' + (i + k * 13 + prod) % 26);
  uint64_t sum = fnv(m.data() + 16, body, prod * 1000003ull + i);
  std::memcpy(&m[0], &prod, 4);
  std::memcpy(&m[4], &i, 4);
  std::memcpy(&m[8], &sum, 8);
  return m;
}

// Checks a make_msg() message; returns {prod, i} or nullopt if it is damaged.
inline std::optional<std::pair<uint32_t, uint32_t>> check_msg(const std::string& m) {
  if (m.size() < 16) return std::nullopt;
  uint32_t prod, i;
  uint64_t sum;
  std::memcpy(&prod, &m[0], 4);
  std::memcpy(&i, &m[4], 4);
  std::memcpy(&sum, &m[8], 8);
  if (fnv(m.data() + 16, m.size() - 16, prod * 1000003ull + i) != sum) return std::nullopt;
  if (m != make_msg(prod, i)) return std::nullopt;
  return std::make_pair(prod, i);
}

// Waits for a child up to `timeout`, then SIGKILLs and reaps it. Returns the
// wait status, or -1 if it had to be killed.
inline int wait_child(pid_t pid, std::chrono::milliseconds timeout = 5000ms) {
  auto end = Clock::now() + timeout;
  int status = 0;
  while (Clock::now() < end) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    std::this_thread::sleep_for(2ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

// A control header in anonymous shared memory (so forked children share it),
// standing in for the mount's control segment.
class SharedControl {
 public:
  explicit SharedControl(uint64_t quota_max = 1ull << 30) {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    ctl_ = new (p) mbx::layout::ControlHeader{};
    ctl_->magic = mbx::layout::kControlMagic;
    ctl_->version = mbx::layout::kVersion;
    ctl_->quota_max = quota_max;
  }
  ~SharedControl() { ::munmap(ctl_, 4096); }
  SharedControl(const SharedControl&) = delete;
  SharedControl& operator=(const SharedControl&) = delete;
  mbx::layout::ControlHeader* get() const { return ctl_; }
  uint64_t used() const { return ctl_->quota_used.load(); }

 private:
  mbx::layout::ControlHeader* ctl_;
};

// A segment sized as the mount would size it, attached to `ctl`.
inline mbx::Segment make_segment(const std::string& path, uint64_t capacity, uint64_t max_message, SharedControl& ctl) {
  auto r = mbx::Segment::create(path, capacity, max_message,
                                mbx::data_size_for(capacity, max_message, ctl.get()->quota_max), 0600);
  EXPECT_TRUE(r.ok()) << mbx::to_errno(r.error());
  if (!r.ok()) return {};
  r->set_control(ctl.get());
  return std::move(r).value();
}

// Every finish() of every TestWaiter of one test, in the order they happened.
class Board {
 public:
  struct Entry {
    int tag;
    mbx::Outcome out;
    bool from_interrupt;
  };
  void add(int tag, mbx::Outcome o, bool from_interrupt) {
    {
      std::lock_guard<std::mutex> g(mu_);
      log_.push_back({tag, std::move(o), from_interrupt});
    }
    cv_.notify_all();
  }
  // The first finish of `tag`, waiting up to `timeout` for it.
  std::optional<Entry> wait(int tag, std::chrono::milliseconds timeout = 2000ms) {
    std::unique_lock<std::mutex> g(mu_);
    std::optional<Entry> found;
    cv_.wait_for(g, timeout, [&] {
      for (auto& e : log_)
        if (e.tag == tag) return found = e, true;
      return false;
    });
    return found;
  }
  int count(int tag) {
    std::lock_guard<std::mutex> g(mu_);
    int n = 0;
    for (auto& e : log_) n += e.tag == tag;
    return n;
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<int> v;
    for (auto& e : log_) v.push_back(e.tag);
    return v;
  }
  size_t size() {
    std::lock_guard<std::mutex> g(mu_);
    return log_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> log_;
};

class TestWaiter : public mbx::Waiter {
 public:
  TestWaiter(Board& b, int tag, pid_t p = 0) : board_(b), tag_(tag) { pid = p; }
  void finish(mbx::Outcome o, bool from_interrupt) override { board_.add(tag_, std::move(o), from_interrupt); }
  int tag() const { return tag_; }

 private:
  Board& board_;
  int tag_;
};

class TestPoll : public mbx::PollToken {
 public:
  explicit TestPoll(std::shared_ptr<std::atomic<int>> n) : n_(std::move(n)) {}
  void notify() override { n_->fetch_add(1); }

 private:
  std::shared_ptr<std::atomic<int>> n_;
};

// A started Mount on a private state directory; boxes, handles and waiters
// made through it are torn down in a safe order, and the state directory must
// be gone afterwards.
class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override { open_mount(); }
  void open_mount(uint64_t max_bytes = 4u << 20, bool start = true) {
    dir_ = fresh_path();
    mbx::MountConfig cfg;
    cfg.state_dir = dir_;
    cfg.max_bytes = max_bytes;
    cfg.defaults.max_message = 4096;
    auto m = mbx::Mount::open(cfg);
    ASSERT_TRUE(m.ok()) << mbx::to_errno(m.error());
    mount_ = std::move(m).value();
    if (start) mount_->start();
  }
  void TearDown() override {
    for (auto& b : boxes_) b->remove();
    handles_.clear();
    boxes_.clear();
    mount_.reset();
    EXPECT_FALSE(path_exists(dir_)) << dir_ << " left behind";
  }

  std::shared_ptr<mbx::Mailbox> box(mbx::Settings s = {}) {
    if (s.max_message == mbx::Settings{}.max_message) s.max_message = 4096;
    auto b = mount_->create_mailbox(next_id_++, s);
    EXPECT_TRUE(b.ok()) << mbx::to_errno(b.error());
    if (!b.ok()) return nullptr;
    boxes_.push_back(b.value());
    return b.value();
  }
  mbx::Settings framed(mbx::Framing f, uint64_t capacity = 64) {
    mbx::Settings s;
    s.framing = f;
    s.capacity = capacity;
    s.max_message = 4096;
    return s;
  }
  mbx::Handle& open(const std::shared_ptr<mbx::Mailbox>& b, bool r, bool w, bool nonblock = false) {
    handles_.push_back(b->open(r, w, nonblock));
    return *handles_.back();
  }
  TestWaiter* waiter(int tag, pid_t pid = 0) {
    waiters_.push_back(std::make_unique<TestWaiter>(board_, tag, pid));
    return waiters_.back().get();
  }
  // Sends one message through a fresh write-only handle (any framing).
  void send(const std::shared_ptr<mbx::Mailbox>& b, const std::string& m) {
    auto& h = open(b, false, true, true);
    auto o = b->write(h, m.data(), m.size(), true, sender_, nullptr);
    ASSERT_TRUE(o.has_value());
    ASSERT_EQ(o->err, mbx::Errc::ok);
    if (h.framing == mbx::Framing::file || h.framing == mbx::Framing::line) {
      auto f = b->flush(h, sender_, nullptr);
      ASSERT_TRUE(f.has_value());
      ASSERT_EQ(f->err, mbx::Errc::ok);
    }
  }
  // Receives one message non-blockingly through a fresh read-only handle.
  std::optional<mbx::Outcome> recv(const std::shared_ptr<mbx::Mailbox>& b, size_t size = 65536) {
    auto& h = open(b, true, false, true);
    return b->read(h, size, true, nullptr);
  }

  std::string dir_;
  std::unique_ptr<mbx::Mount> mount_;
  Board board_;
  mbx::Sender sender_{1234, 1000, 1000};
  uint64_t next_id_ = 10;
  std::vector<std::unique_ptr<TestWaiter>> waiters_;  // destroyed last
  std::vector<std::shared_ptr<mbx::Mailbox>> boxes_;
  std::vector<std::unique_ptr<mbx::Handle>> handles_;
};

}  // namespace ut

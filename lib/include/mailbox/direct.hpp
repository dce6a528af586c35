// SPDX-License-Identifier: MIT
// libmailbox, direct communication: send_to(P, message) and receive_from(Q,
// message) between processes named by pid, through a mailboxfs mount's pid/
// directory (see mailboxfs(8) and docs/design.md, "Direct communication").
//
// Each link (one per sender/receiver pair, made by the daemon on first use)
// is an ordinary segment-backed mailbox, so send_to and receive_from go
// through the shared-memory fast path of mailbox::Mailbox: no system call when
// the call need not wait. receive_from_any takes the fast path over the links
// this object has already used, and otherwise asks the daemon (pid/any), which
// waits on all of the caller's links at once.
//
// Header-only, on the public Mailbox API. One Direct per process: after a
// fork the child's object forgets the parent's links and makes its own.
// Errors are errno values; nothing here throws.
#pragma once
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>

#include "mailbox/mailbox.hpp"

namespace mailbox {

class Direct {
 public:
  // `mountpoint`: the mailboxfs mount whose pid/ directory to use.
  static Result<Direct> open(const std::string& mountpoint) {
    Direct d;
    d.dir_ = mountpoint + "/pid/";
    struct stat st;
    if (::stat(d.dir_.c_str(), &st) != 0) return Result<Direct>::failure(errno == ENOENT ? ENOTSUP : errno);
    d.self_ = ::getpid();
    return d;
  }

  // Sends one message to process `pid` (blocking while the link is full).
  // 0 or: ESRCH (no such process, or it exited), EPERM (not allowed to
  // signal it: another user, and we are not root), EAGAIN (try_), ETIMEDOUT,
  // EMSGSIZE, ENOSPC, EACCES (segments are mapped by root and the daemon's user only).
  int send_to(pid_t pid, std::string_view msg) { return send(pid, msg, Mode::block, {}); }
  int try_send_to(pid_t pid, std::string_view msg) { return send(pid, msg, Mode::now, {}); }
  int send_to_for(pid_t pid, std::string_view msg, Clock::duration t) {
    return send(pid, msg, Mode::until, Clock::now() + t);
  }

  // Receives the next message process `pid` sent to this process. ESRCH if
  // it does not exist, or exited with nothing left for us (a receiver
  // blocked here notices within kLivenessCheck).
  int receive_from(pid_t pid, std::string& out, Sender* from = nullptr) {
    return receive(pid, out, from, Mode::block, {});
  }
  int try_receive_from(pid_t pid, std::string& out, Sender* from = nullptr) {
    return receive(pid, out, from, Mode::now, {});
  }
  int receive_from_for(pid_t pid, std::string& out, Clock::duration t, Sender* from = nullptr) {
    return receive(pid, out, from, Mode::until, Clock::now() + t);
  }

  // Receives the next message any process sent to this one; `from` names it.
  int receive_from_any(std::string& out, Sender* from = nullptr) { return any(out, from, Mode::block, {}); }
  int try_receive_from_any(std::string& out, Sender* from = nullptr) { return any(out, from, Mode::now, {}); }
  int receive_from_any_for(std::string& out, Clock::duration t, Sender* from = nullptr) {
    return any(out, from, Mode::until, Clock::now() + t);
  }

  // How often a receiver blocked in receive_from checks that its sender lives.
  static constexpr auto kLivenessCheck = std::chrono::milliseconds(50);

  Direct(Direct&&) noexcept = default;
  Direct& operator=(Direct&&) noexcept = default;
  ~Direct() {
    for (auto& [pid, l] : from_)
      if (l.pidfd >= 0) ::close(l.pidfd);
  }

 private:
  enum class Mode { block, now, until };
  struct In {
    Mailbox box;
    int pidfd = -1;  // the sender, to notice its exit while waiting
  };
  Direct() = default;

  // A fork leaves the parent's links to the parent.
  void check_fork() {
    if (::getpid() == self_) return;
    for (auto& [pid, l] : from_)
      if (l.pidfd >= 0) ::close(l.pidfd);
    to_.clear();
    from_.clear();
    self_ = ::getpid();
  }

  int send(pid_t pid, std::string_view msg, Mode mode, Clock::time_point deadline) {
    check_fork();
    auto it = to_.find(pid);
    if (it == to_.end()) {
      auto m = Mailbox::open(dir_ + "to." + std::to_string(pid), OpenOptions{true, false});
      if (!m) return m.error() == ENOENT ? ESRCH : m.error();
      it = to_.emplace(pid, std::move(*m)).first;
    }
    int e = mode == Mode::now     ? it->second.try_send(msg)
            : mode == Mode::until ? it->second.send_until(msg, deadline)
                                  : it->second.send(msg);
    if (e == EIDRM) {  // the daemon discarded the link: the receiver exited
      to_.erase(it);
      return ESRCH;
    }
    return e;
  }

  In* link_from(pid_t pid, int* err) {
    auto it = from_.find(pid);
    if (it != from_.end()) return &it->second;
    const std::string path = dir_ + "from." + std::to_string(pid);
    auto m = Mailbox::open(path, OpenOptions{false, true});
    if (!m) {
      *err = m.error() == ENOENT ? ESRCH : m.error();
      return nullptr;
    }
    In l{std::move(*m), static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))};
    return &from_.emplace(pid, std::move(l)).first->second;
  }

  static bool exited(int pidfd) {
    pollfd p{pidfd, POLLIN, 0};
    return pidfd < 0 || ::poll(&p, 1, 0) == 1;
  }

  int receive(pid_t pid, std::string& out, Sender* from, Mode mode, Clock::time_point deadline) {
    check_fork();
    int err = 0;
    In* l = link_from(pid, &err);
    if (!l) return err;
    for (;;) {
      int e;
      if (mode == Mode::now) {
        e = l->box.try_receive(out);
      } else {
        auto slice = Clock::now() + kLivenessCheck;
        e = l->box.receive_until(out, mode == Mode::until && deadline < slice ? deadline : slice);
        if (e == ETIMEDOUT && !(mode == Mode::until && Clock::now() >= deadline) && !exited(l->pidfd)) continue;
        if (e == ETIMEDOUT && exited(l->pidfd)) e = l->box.try_receive(out) == 0 ? 0 : EIDRM;
      }
      if (e == 0 && from) *from = l->box.last_sender();  // as the sender's record says
      if (e == EIDRM) {                                  // the sender exited and its link is drained (or gone)
        if (l->pidfd >= 0) ::close(l->pidfd);
        from_.erase(pid);
        return ESRCH;
      }
      return e;
    }
  }

  // The links already in use first (shared memory), then the daemon.
  int any(std::string& out, Sender* from, Mode mode, Clock::time_point deadline) {
    check_fork();
    for (size_t i = 0, n = from_.size(); i < n; i++) {
      auto it = from_.begin();
      std::advance(it, (next_ + i) % n);
      if (it->second.box.try_receive(out) == 0) {
        next_ = (next_ + i + 1) % n;
        if (from) *from = it->second.box.last_sender();
        return 0;
      }
    }
    const std::string path = dir_ + "any";
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = any_read(fd, out, mode, deadline);
    if (e == 0) {
      char buf[128];
      ssize_t n = ::fgetxattr(fd, attr::kSender, buf, sizeof buf - 1);  // this thread's last receive
      Sender s;
      if (n > 0) parse_sender(std::string_view(buf, static_cast<size_t>(n)), &s);
      if (from) *from = s;
      int ignored;
      if (s.pid > 0) link_from(s.pid, &ignored);  // next time, straight from shared memory
    }
    ::close(fd);
    return e;
  }

  // One message from pid/any, in the mount's framing: file framing reads to
  // end of file, datagram takes one read, line reads up to the newline.
  int any_read(int fd, std::string& out, Mode mode, Clock::time_point deadline) {
    if (framing_.empty()) {
      char f[16];
      ssize_t n = ::fgetxattr(fd, attr::kFraming, f, sizeof f);
      framing_ = n > 0 ? std::string(f, static_cast<size_t>(n)) : "file";
    }
    out.clear();
    const bool line = framing_ == "line" || framing_ == "line_batch";
    const size_t chunk = line ? 1 : 1u << 20;
    std::string buf(chunk, '\0');
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n > 0) {
        out.append(buf.data(), static_cast<size_t>(n));
        if (framing_ == "datagram" || (line && buf[0] == '\n')) return 0;
        continue;
      }
      if (n == 0) return 0;  // file framing: end of the message
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return errno;
      if (!out.empty()) continue;  // the rest of a message is on its way
      if (mode == Mode::now) return EAGAIN;
      int ms = -1;
      if (mode == Mode::until) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return ETIMEDOUT;
        ms = static_cast<int>(left);
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, ms) < 0 && errno != EINTR) return errno;
    }
  }

  std::string dir_;
  pid_t self_ = 0;
  std::map<pid_t, Mailbox> to_;
  std::map<pid_t, In> from_;
  size_t next_ = 0;
  std::string framing_;
};

}  // namespace mailbox

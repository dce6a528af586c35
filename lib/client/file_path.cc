// SPDX-License-Identifier: MIT
#include "client/file_path.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "client/signal_hold.h"

namespace mailbox {

namespace {

int get_text(const std::string& path, const char* name, std::string* out) {
  char buf[256];
  const ssize_t n = ::getxattr(path.c_str(), name, buf, sizeof buf);
  if (n < 0) return errno == ENODATA ? ENOTSUP : errno;
  out->assign(buf, static_cast<size_t>(n));
  return 0;
}

bool expired(const FilePath::Deadline& d) { return d && Clock::now() >= *d; }

// Whether some caught signal's handler lacks SA_RESTART. FUSE ends a wait a
// signal interrupts with EINTR whatever the handler's flags (and after a stop
// and continue too), so which handler ran is unknown; a program with such a
// handler must be ready for EINTR from its waits, one without expects none.
bool some_handler_interrupts() {
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP && SignalHold::handler_interrupts(sig)) return true;
  return false;
}

// The priority of this thread's next send through `fd`; a daemon without
// the ioctl (ENOTTY) has no priorities through the file.
int set_priority(int fd, unsigned prio) {
  if (prio == 0) return 0;  // a plain write: priority-0 traffic costs nothing more
  const uint32_t p = prio;
  if (::ioctl(fd, mbx::layout::kSendPriorityIoctl, &p) == 0) return 0;
  return errno == ENOTTY ? ENOTSUP : errno;
}

// One write of `msg` through `fd`: a short count is EIO (a datagram or line
// is never written in part).
int write_whole(int fd, std::string_view msg) {
  const ssize_t n = ::write(fd, msg.data(), msg.size());
  if (n == static_cast<ssize_t>(msg.size())) return 0;
  return n >= 0 ? EIO : errno;
}

// The same, at `prio`.
int write_at(int fd, std::string_view msg, unsigned prio) {
  if (int e = set_priority(fd, prio)) return e;
  return write_whole(fd, msg);
}

timespec to_timespec(std::chrono::nanoseconds d) {
  return timespec{static_cast<time_t>(d.count() / 1000000000), static_cast<long>(d.count() % 1000000000)};
}

}  // namespace

int FilePath::info(const std::string& path, mbx::layout::FileInfo* out) {
  // Opening to write sends nothing by itself, in any framing.
  mbx::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) return errno;
  return info(fd.get(), out);
}

int FilePath::info(int fd, mbx::layout::FileInfo* out) {
  if (::ioctl(fd, mbx::layout::kInfoIoctl, out) != 0) return errno == ENOTTY ? ENOTSUP : errno;
  out->framing[sizeof out->framing - 1] = out->segment[sizeof out->segment - 1] = '\0';
  return 0;
}

int FilePath::open(const std::string& path, FilePath* out, int base) {
  if (base >= 0) {
    out->base_.reset(::fcntl(base, F_DUPFD_CLOEXEC, 0));
    if (!out->base_.valid()) return errno;
  }
  std::string framing, max;
  int e = get_text(path, attr::kFraming, &framing);
  if (!e) e = get_text(path, attr::kMaxMessage, &max);
  if (e == EACCES) {  // no read permission: a sender may still ask the open file
    mbx::layout::FileInfo fi;
    e = info(path, &fi);
    if (e == EACCES && out->base_.valid()) e = info(out->base_.get(), &fi);
    if (e) return e;
    framing = fi.framing;
    max = std::to_string(fi.max_message);
  }
  if (e) return e;
  out->path_ = path;
  out->framing_ = framing == "datagram"                          ? Framing::datagram
                  : framing == "line" || framing == "line_batch" ? Framing::line
                                                                 : Framing::file;
  out->max_message_ = std::strtoull(max.c_str(), nullptr, 10);
  return 0;
}

// Waits until `fd` is ready for `events` (the daemon sends poll notifications)
// or the deadline passes (ETIMEDOUT). A signal only makes the caller try
// again: as on the fast path, a handled signal does not end a call.
// A call that waited in the daemon and was ended without moving anything: by
// the mailbox's timeout_ms, which is not ours to keep, or by a signal, which
// does not end a call (as on the fast path) unless the caller is
// interruptible (the mq calls) and a handler without SA_RESTART may have run.
bool FilePath::resumable(int err) const {
  if (err == ETIMEDOUT) return true;
  return err == EINTR && !(interruptible_ && some_handler_interrupts());
}

int FilePath::wait_fd(int fd, short events, Deadline deadline, const sigset_t* mask) {
  timespec left{};
  if (deadline) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*deadline - Clock::now());
    if (ns.count() <= 0) return ETIMEDOUT;
    left = to_timespec(ns);
  }
  pollfd p{fd, events, 0};
  const int n = ::ppoll(&p, 1, deadline ? &left : nullptr, mask);
  if (n < 0) return resumable(errno) ? 0 : errno;
  if (n == 0) return ETIMEDOUT;
  if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return EIDRM;  // deleted meanwhile
  return 0;
}

int FilePath::open_file(int flags) {
  const int fd = ::open(path_.c_str(), flags | O_CLOEXEC);
  if (fd >= 0 || errno != EACCES || !base_.valid()) return fd;
  const int have = ::fcntl(base_.get(), F_GETFL) & O_ACCMODE, want = flags & O_ACCMODE;
  if (have != O_RDWR && have != want) {
    errno = EACCES;
    return -1;
  }
  return ::fcntl(base_.get(), F_DUPFD_CLOEXEC, 0);
}

int FilePath::open_once(mbx::UniqueFd& fd, int flags) {
  if (!fd.valid()) fd.reset(open_file(flags));
  return fd.valid() ? 0 : errno;
}

int FilePath::send(std::string_view msg, unsigned prio, bool nonblock, Deadline deadline) {
  if (msg.size() > max_message_) return EMSGSIZE;
  // Through the file an empty message cannot be told from no message (an
  // open and close with nothing written sends nothing; an empty write is no
  // datagram), so it is refused rather than silently dropped.
  if (msg.empty()) return EINVAL;
  if (framing_ == Framing::file) return send_file(msg, prio, nonblock, deadline);
  std::string line;
  if (framing_ == Framing::line) {
    // One line is one message, stored with its newline (as a shell sends it):
    // one is added if missing, and a message may not hold another.
    const size_t nl = msg.find('\n');
    if (nl != std::string_view::npos && nl != msg.size() - 1) return EINVAL;
    if (nl == std::string_view::npos) {
      line.assign(msg);
      line += '\n';
      msg = line;
    }
  }
  SignalHold hold(interruptible_);
  if (!nonblock && !deadline) {  // waits in the daemon, as a committed sender
    if (int e = open_once(wb_, O_WRONLY)) return e;
    for (;;) {  // every attempt sets the priority again: a write uses it, whatever its result
      if (int e = set_priority(wb_.get(), prio)) return e;
      if (hold.open()) return EINTR;
      const int e = write_whole(wb_.get(), msg);
      hold.close();
      if (!resumable(e)) return e;
    }
  }
  if (int e = open_once(w_, O_WRONLY | O_NONBLOCK)) return e;
  for (;;) {
    const int e = write_at(w_.get(), msg, prio);
    if (e != EAGAIN) return e;
    if (nonblock) return EAGAIN;
    if (int we = wait_fd(w_.get(), POLLOUT, deadline, hold.wait_mask())) return we;
  }
}

// File framing: one open-write-close is one message. The commit at close()
// is what blocks, so a deadline is kept by retrying non-blocking sends.
// A blocking one holds signals through its open and write (requests that
// may sleep awaiting the daemon) and lets them through for the commit: a
// handler that ends the call found pending then takes the written message
// back (kDiscardIoctl) and the call fails with EINTR, having sent nothing.
int FilePath::send_file(std::string_view msg, unsigned prio, bool nonblock, Deadline deadline) {
  const bool try_only = nonblock || deadline.has_value();
  SignalHold hold(interruptible_);
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    mbx::UniqueFd fd(open_file(O_WRONLY | (try_only ? O_NONBLOCK : 0)));
    if (!fd.valid()) return errno;
    if (int e = write_at(fd.get(), msg, prio)) return e;  // the priority of the message close() commits
    // A daemon without the ioctl: the handler has run, and the commit goes on.
    if (!try_only && hold.open() && ::ioctl(fd.get(), mbx::layout::kDiscardIoctl) == 0) return EINTR;
    const int e = ::close(fd.release()) == 0 ? 0 : errno;  // the commit, and its verdict
    hold.close();
    if (resumable(e) && !try_only) continue;
    if (e != EAGAIN || nonblock) return e;
    if (expired(deadline)) return ETIMEDOUT;
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*deadline - Clock::now());
    const timespec nap = to_timespec(std::min<std::chrono::nanoseconds>(pause, left));
    if (left.count() > 0 && ::ppoll(nullptr, 0, &nap, hold.wait_mask()) < 0 && !resumable(errno))
      return errno;  // a handler ran
    pause = std::min(pause * 2, std::chrono::microseconds(50000));
  }
}

// File framing: one open-read-close receives one message, whole.
int FilePath::read_file_message(bool nonblock, Deadline deadline) {
  const bool waits_in_daemon = !nonblock && !deadline;  // see rb_
  SignalHold hold(interruptible_);
  mbx::UniqueFd fd(open_file(O_RDONLY | (waits_in_daemon ? 0 : O_NONBLOCK)));
  if (!fd.valid()) return errno;
  std::string msg;
  std::string buf(std::max<size_t>(max_message_, 1) + 1, '\0');
  for (;;) {
    if (waits_in_daemon && msg.empty() && hold.open()) return EINTR;
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    hold.close();
    if (n > 0) {
      msg.append(buf.data(), static_cast<size_t>(n));
      continue;
    }
    if (n == 0) break;  // the end of this open's message
    if (resumable(errno) && waits_in_daemon && msg.empty()) continue;
    if (errno != EAGAIN || !msg.empty()) return errno;
    if (nonblock) return EAGAIN;
    if (int e = wait_fd(fd.get(), POLLIN, deadline, hold.wait_mask())) return e;
  }
  this->hold(fd.get(), msg);  // before the close: the open file knows what it received
  return 0;
}

void FilePath::put_back(std::string msg) { held_.push_front(Held{std::move(msg), last_}); }

void FilePath::hold(int fd, std::string_view got) {
  mbx::layout::ReceivedInfo ri{};
  std::optional<mbx::layout::ReceivedInfo> info;
  if (::ioctl(fd, mbx::layout::kReceivedIoctl, &ri) == 0) info = ri;
  if (framing_ != Framing::line) {
    held_.push_back(Held{std::string(got), info});
    return;
  }
  // A line read returns one line (line_batch: whole lines, as many as fit,
  // all reported as its first); each keeps its newline, as the fast path
  // returns a line sent through the file.
  for (size_t nl; (nl = got.find('\n')) != std::string_view::npos; got.remove_prefix(nl + 1))
    held_.push_back(Held{std::string(got.substr(0, nl + 1)), info});
  if (!got.empty()) held_.push_back(Held{std::string(got), info});  // an unterminated last line
}

// Makes held_ non-empty.
int FilePath::next_message(bool nonblock, Deadline deadline) {
  if (!held_.empty()) return 0;
  if (framing_ == Framing::file) return read_file_message(nonblock, deadline);
  const bool waits_in_daemon = !nonblock && !deadline;
  SignalHold signals(interruptible_);
  mbx::UniqueFd& fd = waits_in_daemon ? rb_ : r_;
  if (int e = open_once(fd, O_RDONLY | (waits_in_daemon ? 0 : O_NONBLOCK))) return e;
  std::string buf(std::max<size_t>(max_message_, 1) + 1, '\0');
  for (;;) {
    if (waits_in_daemon && signals.open()) return EINTR;
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    signals.close();
    if (n > 0) {
      hold(fd.get(), std::string_view(buf.data(), static_cast<size_t>(n)));
      return 0;
    }
    if (n == 0) return EIO;  // datagram and line readers never see EOF
    if (resumable(errno) && waits_in_daemon) continue;
    if (errno != EAGAIN) return errno;
    if (nonblock) return EAGAIN;
    if (int e = wait_fd(fd.get(), POLLIN, deadline, signals.wait_mask())) return e;
  }
}

Result<std::string> FilePath::receive(bool nonblock, Deadline deadline) {
  if (int e = next_message(nonblock, deadline)) return Result<std::string>::failure(e);
  std::string m = std::move(held_.front().msg);
  last_ = held_.front().info;
  held_.pop_front();
  return m;
}

// As the open file reported it (hold()); else the daemon's
// user.mailbox.sender answers, for the calling thread, who sent the last
// message it received from this file.
Sender FilePath::last_sender() const {
  if (last_) return Sender{last_->pid, last_->uid, last_->gid};
  char buf[128];
  const ssize_t n = ::getxattr(path_.c_str(), attr::kSender, buf, sizeof buf - 1);
  Sender s;
  if (n > 0) parse_sender(std::string_view(buf, static_cast<size_t>(n)), &s);
  return s;
}

Result<size_t> FilePath::receive(void* buf, size_t cap, bool nonblock, Deadline deadline) {
  if (int e = next_message(nonblock, deadline)) return Result<size_t>::failure(e);
  const std::string& m = held_.front().msg;
  if (m.size() > cap) return Result<size_t>::failure(EMSGSIZE);
  std::memcpy(buf, m.data(), m.size());
  const size_t n = m.size();
  last_ = held_.front().info;
  held_.pop_front();
  return n;
}

}  // namespace mailbox

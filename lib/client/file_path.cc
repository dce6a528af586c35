// SPDX-License-Identifier: MIT
#include "client/file_path.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

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

// A call without a deadline that waited in the daemon and was ended without
// moving anything: by the mailbox's timeout_ms, which is not ours to keep, or
// by a signal, which does not end a call (as on the fast path). It is resumed.
bool resumable(int err) { return err == ETIMEDOUT || err == EINTR; }

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
int FilePath::wait_fd(int fd, short events, Deadline deadline) {
  int ms = -1;
  if (deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
    if (left <= 0) return ETIMEDOUT;
    ms = static_cast<int>(std::min<long long>(left + 1, 1 << 30));
  }
  pollfd p{fd, events, 0};
  const int n = ::poll(&p, 1, ms);
  if (n < 0) return errno == EINTR ? 0 : errno;
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

int FilePath::send(std::string_view msg, bool nonblock, Deadline deadline) {
  if (msg.size() > max_message_) return EMSGSIZE;
  // Through the file an empty message cannot be told from no message (an
  // open and close with nothing written sends nothing; an empty write is no
  // datagram), so it is refused rather than silently dropped.
  if (msg.empty()) return EINVAL;
  if (framing_ == Framing::file) return send_file(msg, nonblock, deadline);
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
  if (!nonblock && !deadline) {  // waits in the daemon, as a committed sender
    if (int e = open_once(wb_, O_WRONLY)) return e;
    for (;;) {
      const ssize_t n = ::write(wb_.get(), msg.data(), msg.size());
      if (n == static_cast<ssize_t>(msg.size())) return 0;
      if (n >= 0) return EIO;
      if (!resumable(errno)) return errno;
    }
  }
  if (int e = open_once(w_, O_WRONLY | O_NONBLOCK)) return e;
  for (;;) {
    const ssize_t n = ::write(w_.get(), msg.data(), msg.size());
    if (n == static_cast<ssize_t>(msg.size())) return 0;
    if (n >= 0) return EIO;  // a datagram is never written in part
    if (errno != EAGAIN) return errno;
    if (nonblock) return EAGAIN;
    if (int e = wait_fd(w_.get(), POLLOUT, deadline)) return e;
  }
}

// File framing: one open-write-close is one message. The commit at close()
// is what blocks, so a deadline is kept by retrying non-blocking sends.
int FilePath::send_file(std::string_view msg, bool nonblock, Deadline deadline) {
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    const bool try_only = nonblock || deadline.has_value();
    mbx::UniqueFd fd(open_file(O_WRONLY | (try_only ? O_NONBLOCK : 0)));
    if (!fd.valid()) return errno;
    if (::write(fd.get(), msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return errno;
    const int e = ::close(fd.release()) == 0 ? 0 : errno;  // the commit, and its verdict
    if (resumable(e) && !try_only) continue;
    if (e != EAGAIN || nonblock) return e;
    if (expired(deadline)) return ETIMEDOUT;
    std::this_thread::sleep_for(
        std::min(pause, std::chrono::duration_cast<std::chrono::microseconds>(*deadline - Clock::now())));
    pause = std::min(pause * 2, std::chrono::microseconds(50000));
  }
}

// File framing: one open-read-close receives one message, whole.
int FilePath::read_file_message(bool nonblock, Deadline deadline) {
  const bool waits_in_daemon = !nonblock && !deadline;  // see rb_
  mbx::UniqueFd fd(open_file(O_RDONLY | (waits_in_daemon ? 0 : O_NONBLOCK)));
  if (!fd.valid()) return errno;
  std::string msg;
  std::string buf(std::max<size_t>(max_message_, 1) + 1, '\0');
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n > 0) {
      msg.append(buf.data(), static_cast<size_t>(n));
      continue;
    }
    if (n == 0) break;  // the end of this open's message
    if (resumable(errno) && waits_in_daemon && msg.empty()) continue;
    if (errno != EAGAIN || !msg.empty()) return errno;
    if (nonblock) return EAGAIN;
    if (int e = wait_fd(fd.get(), POLLIN, deadline)) return e;
  }
  held_.push_back(std::move(msg));
  return 0;
}

void FilePath::put_back(std::string msg) { held_.push_front(std::move(msg)); }

// Makes held_ non-empty.
int FilePath::next_message(bool nonblock, Deadline deadline) {
  if (!held_.empty()) return 0;
  if (framing_ == Framing::file) return read_file_message(nonblock, deadline);
  const bool waits_in_daemon = !nonblock && !deadline;
  mbx::UniqueFd& fd = waits_in_daemon ? rb_ : r_;
  if (int e = open_once(fd, O_RDONLY | (waits_in_daemon ? 0 : O_NONBLOCK))) return e;
  std::string buf(std::max<size_t>(max_message_, 1) + 1, '\0');
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n > 0) {
      std::string_view got(buf.data(), static_cast<size_t>(n));
      if (framing_ == Framing::datagram) {
        held_.emplace_back(got);
      } else {
        // A line read returns one line (line_batch: whole lines, as many as
        // fit); each keeps its newline, as the fast path returns a line sent
        // through the file.
        for (size_t nl; (nl = got.find('\n')) != std::string_view::npos; got.remove_prefix(nl + 1))
          held_.emplace_back(got.substr(0, nl + 1));
        if (!got.empty()) held_.emplace_back(got);  // an unterminated last line
      }
      return 0;
    }
    if (n == 0) return EIO;  // datagram and line readers never see EOF
    if (resumable(errno) && waits_in_daemon) continue;
    if (errno != EAGAIN) return errno;
    if (nonblock) return EAGAIN;
    if (int e = wait_fd(fd.get(), POLLIN, deadline)) return e;
  }
}

Result<std::string> FilePath::receive(bool nonblock, Deadline deadline) {
  if (int e = next_message(nonblock, deadline)) return Result<std::string>::failure(e);
  std::string m = std::move(held_.front());
  held_.pop_front();
  return m;
}

// The daemon's user.mailbox.sender answers, for the calling thread, who sent
// the last message it received from this file.
Sender FilePath::last_sender() const {
  char buf[128];
  const ssize_t n = ::getxattr(path_.c_str(), attr::kSender, buf, sizeof buf - 1);
  Sender s;
  if (n > 0) parse_sender(std::string_view(buf, static_cast<size_t>(n)), &s);
  return s;
}

Result<size_t> FilePath::receive(void* buf, size_t cap, bool nonblock, Deadline deadline) {
  if (int e = next_message(nonblock, deadline)) return Result<size_t>::failure(e);
  const std::string& m = held_.front();
  if (m.size() > cap) return Result<size_t>::failure(EMSGSIZE);
  std::memcpy(buf, m.data(), m.size());
  const size_t n = m.size();
  held_.pop_front();
  return n;
}

}  // namespace mailbox

// SPDX-License-Identifier: MIT
// The filesystem mechanisms: mailboxfs through files in each framing, through
// libmailbox, and mixed (one side a file, the other the library); and the
// FUSE floor, bench-floor, used the way fs_datagram uses mailboxfs.
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <mailbox/mailbox.hpp>

#include "channels.h"

namespace bench {
namespace {

// mailboxfs refuses a datagram FUSE would split (design.md, kMaxDatagram).
constexpr size_t kMaxDatagram = 1044480;

std::string unique_name(const std::string& dir, int tag) {
  return dir + "/bench-" + std::to_string(::getpid()) + "-" + std::to_string(tag);
}

void create_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) die(("create " + path).c_str());
  ::close(fd);
}

// Tuned mailboxes get max_message = the message size, at least 4096 (what
// a user who reads the manual sets); default ones keep capacity 64 and
// max_message 1 MiB, as almost every user does. Either way `framing` is set
// when it is not the default (file).
enum class Tuning { tuned, defaults };

uint64_t tuned_max_message(size_t size) { return size < 4096 ? 4096 : size; }

std::string make_mailbox(const Env& env, const Spec& s, const char* framing, Tuning tuning) {
  std::string path = unique_name(env.mount, s.tag);
  create_file(path);
  if (tuning == Tuning::tuned) {
    std::string m = std::to_string(tuned_max_message(s.max_size));
    if (::setxattr(path.c_str(), "user.mailbox.max_message", m.data(), m.size(), 0)) die("setxattr max_message");
  }
  if (std::strcmp(framing, "file") != 0 &&
      ::setxattr(path.c_str(), "user.mailbox.framing", framing, std::strlen(framing), 0))
    die("setxattr framing");
  return path;
}

std::string tuned_settings(size_t size) { return "tuned: max_message=" + std::to_string(tuned_max_message(size)); }
std::string default_settings(size_t) { return "default: capacity 64, max_message 1 MiB"; }

// Removes the mailbox (or floor queue) when its creator is done with it.
class Owned {
 public:
  explicit Owned(std::string path) : path_(std::move(path)) {}
  ~Owned() {
    if (owner_ == ::getpid()) ::unlink(path_.c_str());
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  pid_t owner_ = ::getpid();
};

// Datagram style: open once, one write()/read() per message. Serves
// mailboxfs's datagram framing and the floor alike.
class DatagramChannel : public Channel {
 public:
  explicit DatagramChannel(std::string path) : file_(std::move(path)) {}
  ~DatagramChannel() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void open_sender() override { open(O_WRONLY); }
  void open_receiver() override { open(O_RDONLY); }
  void send(const char* p, size_t n) override {
    if (::write(fd_, p, n) != ssize_t(n)) die("datagram write");
  }
  size_t receive(char* p, size_t cap) override {
    ssize_t r = ::read(fd_, p, cap);
    if (r < 0) die("datagram read");
    return size_t(r);
  }

 private:
  void open(int flags) {
    if ((fd_ = ::open(file_.path().c_str(), flags)) < 0) die("datagram open");
  }
  Owned file_;
  int fd_ = -1;
};

// Each side of a mailbox is either a file (file framing: open-write-close to
// send, open-read-to-EOF-close to receive, as echo and cat do) or libmailbox.
enum class Side { file, lib };

class MailboxChannel : public Channel {
 public:
  MailboxChannel(std::string path, Side sender, Side receiver)
      : file_(std::move(path)), sender_(sender), receiver_(receiver) {}
  void open_sender() override {
    if (sender_ == Side::lib) open_lib({.send = true, .receive = false});
  }
  void open_receiver() override {
    if (receiver_ == Side::lib) open_lib({.send = false, .receive = true});
  }
  void send(const char* p, size_t n) override {
    if (sender_ == Side::lib) {
      if (int e = box_->send(std::string_view(p, n))) errno = e, die("libmailbox send");
      return;
    }
    int fd = ::open(file_.path().c_str(), O_WRONLY);
    if (fd < 0) die("mailbox open");
    write_all(fd, p, n);
    if (::close(fd)) die("mailbox close");
  }
  size_t receive(char* p, size_t cap) override {
    if (receiver_ == Side::lib) {
      auto r = box_->receive(p, cap);
      if (!r) errno = r.error(), die("libmailbox receive");
      return *r;
    }
    int fd = ::open(file_.path().c_str(), O_RDONLY);
    if (fd < 0) die("mailbox open");
    size_t got = 0;
    for (ssize_t r; (r = ::read(fd, p + got, cap - got)) > 0;) got += size_t(r);
    ::close(fd);
    return got;
  }

 private:
  void open_lib(mailbox::OpenOptions o) {
    auto b = mailbox::Mailbox::open(file_.path(), o);
    if (!b) errno = b.error(), die("libmailbox open");
    box_.emplace(std::move(b.value()));
  }
  Owned file_;
  Side sender_, receiver_;
  std::optional<mailbox::Mailbox> box_;
};

template <Side S, Side R, const char* Framing, Tuning T>
std::unique_ptr<Channel> make_mailbox_channel(const Spec& s, const Env& env) {
  return std::make_unique<MailboxChannel>(make_mailbox(env, s, Framing, T), S, R);
}

template <Tuning T>
std::unique_ptr<Channel> make_datagram_channel(const Spec& s, const Env& env) {
  if (s.max_size > kMaxDatagram) return nullptr;
  return std::make_unique<DatagramChannel>(make_mailbox(env, s, "datagram", T));
}

constexpr char kDatagram[] = "datagram", kFile[] = "file";
constexpr Tuning kTuned = Tuning::tuned, kDefaults = Tuning::defaults;

}  // namespace

// Each mailbox mechanism twice where issue 13 compares them: tuned (the
// historical name) and `_default`, next to each other in the tables.
std::vector<Mechanism> fs_mechanisms() {
  return {
      {"libmailbox", make_mailbox_channel<Side::lib, Side::lib, kDatagram, kTuned>, Needs::mount, tuned_settings},
      {"libmailbox_default", make_mailbox_channel<Side::lib, Side::lib, kFile, kDefaults>, Needs::mount,
       default_settings},
      {"fuse_floor",
       [](const Spec& s, const Env& env) -> std::unique_ptr<Channel> {
         if (s.max_size > kMaxDatagram) return nullptr;  // as fs_datagram, for a fair ratio
         std::string path = unique_name(env.floor, s.tag);
         create_file(path);
         return std::make_unique<DatagramChannel>(path);
       },
       Needs::floor},
      {"fs_datagram", make_datagram_channel<kTuned>, Needs::mount, tuned_settings},
      {"fs_datagram_default", make_datagram_channel<kDefaults>, Needs::mount, default_settings},
      {"fs_file", make_mailbox_channel<Side::file, Side::file, kFile, kTuned>, Needs::mount, tuned_settings},
      {"fs_file_default", make_mailbox_channel<Side::file, Side::file, kFile, kDefaults>, Needs::mount,
       default_settings},
      {"lib_to_file", make_mailbox_channel<Side::lib, Side::file, kFile, kTuned>, Needs::mount, tuned_settings},
      {"file_to_lib", make_mailbox_channel<Side::file, Side::lib, kFile, kTuned>, Needs::mount, tuned_settings},
  };
}

}  // namespace bench

// A libmailbox peer for the soak (tests/soak/soak.py), killed and stopped at
// random by it:
//   soak_peer send BOX PRODUCER FIRST COUNT LOG   sends messages FIRST.. of PRODUCER,
//       appending "S p s" to LOG before each send and "D p s" once it returned 0;
//   soak_peer recv BOX LOG                        receives forever, appending each
//       message (one text line) to LOG.
// Messages are soak.py's canonical(p, s), so every byte can be checked. The
// peer reopens the mailbox when the mount goes away (a daemon restart).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include <mailbox/mailbox.hpp>

namespace {

using namespace std::chrono_literals;

// Must match canonical() in soak.py.
std::string canonical(unsigned long p, unsigned long s) {
  const unsigned long n = (s * 7 + p * 3) % 61;
  const char c = static_cast<char>('a' + (p + s) % 26);
  return "M " + std::to_string(p) + " " + std::to_string(s) + " " + std::string(n, c) + " E\n";
}

void append(int fd, const std::string& line) {
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::exit(3);
}

std::optional<mailbox::Mailbox> open_box(const char* path) {
  auto m = mailbox::Mailbox::open(path);
  if (!m) return std::nullopt;
  return std::move(m.value());
}

// Errors after which the mailbox is looked up again (the daemon restarted,
// or a corrupt segment was replaced).
bool reopen_on(int e) { return e == EIDRM || e == ENOENT || e == ESTALE || e == ENOTCONN || e == EBADMSG || e == EIO; }

int sender(const char* path, unsigned long p, unsigned long first, unsigned long count, int log) {
  std::optional<mailbox::Mailbox> box;
  for (unsigned long s = first; s < first + count;) {
    if (!box) {
      box = open_box(path);
      if (!box) {
        std::this_thread::sleep_for(20ms);  // the mount is being restarted
        continue;
      }
    }
    const std::string m = canonical(p, s);
    append(log, "S " + std::to_string(p) + " " + std::to_string(s) + "\n");
    int e;
    if (s % 3 == 0) {  // zero-copy send, one in three
      auto r = box->reserve(m.size());
      if (r) {
        std::memcpy(r->data(), m.data(), m.size());
        e = r->commit();
      } else {
        e = r.error();
      }
    } else {
      e = box->send_for(m, 2s);
    }
    if (e == 0) {
      append(log, "D " + std::to_string(p) + " " + std::to_string(s) + "\n");
      // A pause every 4 messages: the fast path alone would send millions a
      // minute, more than the check needs, and starve the shell peers.
      if (++s % 4 == 0) std::this_thread::sleep_for(1ms);
    } else if (reopen_on(e)) {
      box.reset();
      s++;  // S without D: maybe sent; a number is never sent twice
    } else if (e != ETIMEDOUT && e != EAGAIN && e != ENOSPC) {
      std::fprintf(stderr, "soak_peer: send: %s\n", std::strerror(e));
      return 1;
    } else {
      s++;
    }
  }
  return 0;
}

int receiver(const char* path, int log) {
  std::optional<mailbox::Mailbox> box;
  std::string m;
  for (unsigned long n = 0;; n++) {
    if (!box) {
      box = open_box(path);
      if (!box) {
        std::this_thread::sleep_for(20ms);
        continue;
      }
    }
    int e;
    if (n % 4 == 0) {  // zero-copy receive, one in four
      auto v = box->receive_view_until(mailbox::Clock::now() + 500ms);
      e = v ? 0 : v.error();
      if (v) m.assign(v->bytes());
    } else {
      e = box->receive_for(m, 500ms);
    }
    if (e == 0) {
      append(log, m);
    } else if (reopen_on(e)) {
      box.reset();
    } else if (e != ETIMEDOUT && e != EAGAIN) {
      std::fprintf(stderr, "soak_peer: receive: %s\n", std::strerror(e));
      return 1;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && !std::strcmp(argv[1], "send")) {
    int log = ::open(argv[6], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) return 2;
    return sender(argv[2], std::strtoul(argv[3], nullptr, 10), std::strtoul(argv[4], nullptr, 10),
                  std::strtoul(argv[5], nullptr, 10), log);
  }
  if (argc == 4 && !std::strcmp(argv[1], "recv")) {
    int log = ::open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) return 2;
    return receiver(argv[2], log);
  }
  std::fprintf(stderr, "usage: soak_peer send BOX PRODUCER FIRST COUNT LOG | recv BOX LOG\n");
  return 2;
}

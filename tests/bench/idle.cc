// SPDX-License-Identifier: MIT
#include "idle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string_view>

#include <mailbox/mailbox.hpp>

#include "measure.h"

namespace bench {
namespace {

namespace fs = std::filesystem;

// A "Key:   N kB" line of /proc/PID/status.
double status_kib(pid_t pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1));
  die(("the daemon's " + key).c_str());
}

// What du(1) counts: blocks actually allocated, not the sparse files' sizes.
double allocated_kib(const std::string& dir) {
  double kib = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) == 0) kib += double(st.st_blocks) * 512 / 1024;
  }
  return kib;
}

// A directory of n empty files, removed with everything in it when done.
class FileDir {
 public:
  FileDir(std::string dir, int n) : dir_(std::move(dir)) {
    if (::mkdir(dir_.c_str(), 0700)) die(("mkdir " + dir_).c_str());
    for (int i = 0; i < n; i++) {
      int fd = ::open((dir_ + "/m" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
      if (fd < 0) die("create an idle file");
      ::close(fd);
    }
  }
  ~FileDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
};

// Wall time of `ls -l dir`, its output discarded.
double ls_ms(const std::string& dir) {
  const double t0 = now_s();
  pid_t p = ::fork();
  if (p == 0) {
    ::alarm(120);  // kept across exec
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::execlp("ls", "ls", "-l", dir.c_str(), nullptr);
    _exit(127);
  }
  int st = 0;
  ::waitpid(p, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("ls -l");
  return (now_s() - t0) * 1e3;
}

}  // namespace

IdleCost idle_mailboxes(const Env& env, int n, pid_t daemon, const std::string& state_dir, int reps) {
  IdleCost c{};
  c.mailboxes = n;
  const std::string tag = std::to_string(::getpid());
  c.rss_before_kib = status_kib(daemon, "VmRSS");
  c.anon_before_kib = status_kib(daemon, "RssAnon");
  c.segments_before_kib = allocated_kib(state_dir);
  const double t0 = now_s();
  FileDir boxes(env.mount + "/idle-" + tag, n);
  c.create_ms = (now_s() - t0) * 1e3;
  FileDir plain("/dev/shm/mbxbench-ls-" + tag, n);
  c.rss_after_kib = status_kib(daemon, "VmRSS");
  c.anon_after_kib = status_kib(daemon, "RssAnon");
  c.segments_after_kib = allocated_kib(state_dir);
  for (int r = 0; r < reps; r++) {
    c.ls_mailboxfs_ms.push_back(ls_ms(boxes.path()));
    c.ls_tmpfs_ms.push_back(ls_ms(plain.path()));
  }
  c.used = std::min(n, 1000);  // enough that a heap arena the daemon grows once is spread thin
  for (int i = 0; i < c.used; i++) {
    auto box = mailbox::Mailbox::open(boxes.path() + "/m" + std::to_string(i));
    if (!box) errno = box.error(), die("libmailbox open of an idle mailbox");
    char buf[64] = {};
    if (int e = box->send(std::string_view(buf, sizeof buf))) errno = e, die("libmailbox send");
    if (auto r = box->receive(buf, sizeof buf); !r || *r != sizeof buf) die("libmailbox receive");
  }
  c.segments_busy_kib = allocated_kib(state_dir);
  // The daemon trims a mailbox left empty and untouched for a sweep interval
  // (design.md, "Idle mailboxes"): wait for it, as a user's idle mailboxes would.
  const double t1 = now_s();
  do {
    c.segments_used_kib = allocated_kib(state_dir);
    if (c.segments_used_kib <= c.segments_after_kib + c.used * 0.5) break;
    ::usleep(50 * 1000);
  } while (now_s() - t1 < 30);
  c.sweep_wait_s = now_s() - t1;
  c.anon_used_kib = status_kib(daemon, "RssAnon");
  return c;
}

}  // namespace bench

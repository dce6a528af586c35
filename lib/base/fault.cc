#include "base/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "mailbox/layout.h"

namespace mbx {

namespace {
constexpr uintptr_t kPage = 4096;
// Set once before the handler is installed; read only by the handler.
char g_dir[PATH_MAX + 1];
size_t g_dir_len = 0;
std::atomic<unsigned> g_logged{0};  // handlers on several threads may log at once: only a count

// A file mapping as /proc/self/maps lists it.
struct Area {
  uintptr_t start = 0, end = 0;
  uint64_t offset = 0;
  const char* path = nullptr;  // into the caller's line buffer
};

const char* hex(const char* p, uint64_t& v) {
  v = 0;
  for (;; p++) {
    const char c = *p;
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return p;
    v = v * 16 + d;
  }
}

// Parses "start-end perms offset dev inode   path".
bool parse(const char* p, Area& a) {
  uint64_t v;
  p = hex(p, v);
  a.start = v;
  if (*p++ != '-') return false;
  p = hex(p, v);
  a.end = v;
  for (int field = 0; field < 1; field++) {  // perms
    while (*p == ' ') p++;
    while (*p && *p != ' ') p++;
  }
  while (*p == ' ') p++;
  p = hex(p, a.offset);
  for (int field = 0; field < 2; field++) {  // dev, inode
    while (*p == ' ') p++;
    while (*p && *p != ' ') p++;
  }
  while (*p == ' ') p++;
  a.path = p;
  return true;
}

// Finds the mapping holding `addr` with only async-signal-safe calls; its
// path is copied into `line`.
bool find_area(uintptr_t addr, Area& a, char* line, size_t cap) {
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  size_t len = 0;
  bool found = false;
  ssize_t n;
  while (!found && (n = ::read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n && !found; i++) {
      if (buf[i] != '\n') {
        if (len < cap - 1) line[len++] = buf[i];
        continue;
      }
      line[len] = '\0';
      len = 0;
      found = parse(line, a) && a.start <= addr && addr < a.end;
    }
  }
  ::close(fd);
  return found;
}

void say(const char* s) {
  for (size_t n = std::strlen(s); n > 0;) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

// Lets the fault take its default action: the instruction runs again and
// faults with SIGBUS no longer caught.
void give_up() {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  ::sigaction(SIGBUS, &sa, nullptr);
}

void on_sigbus(int, siginfo_t* si, void*) {
  const int saved_errno = errno;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(si->si_addr);
  char line[PATH_MAX + 256];
  Area a;
  if (si->si_code != BUS_ADRERR || !find_area(addr, a, line, sizeof line) ||
      std::strncmp(a.path, g_dir, g_dir_len) != 0 || a.offset > a.start) {
    give_up();
    return;
  }
  // The instruction completes on a private zero page: its result is
  // garbage, and the segment is marked so that nobody trusts it again.
  void* page = reinterpret_cast<void*>(addr & ~(kPage - 1));
  if (::mmap(page, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
    give_up();
    return;
  }
  const bool control = std::strncmp(a.path + g_dir_len, "control", 7) == 0;
  if (!control) {
    // The file was mapped whole from offset 0 (a later fault may find that
    // mapping split by the page above): its header is at start - offset.
    auto* h = reinterpret_cast<layout::SegmentHeader*>(a.start - a.offset);
    // The header's own page may be gone too: it is tested without a fault.
    if (::madvise(h, layout::kHeaderSize, MADV_POPULATE_WRITE) != 0 && errno != EINVAL)
      ::mmap(h, layout::kHeaderSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    // SYNC POINT: release, as every store of `state`; participants load it with acquire.
    h->state.store(layout::kCorrupt, std::memory_order_release);
  }
  if (g_logged.fetch_add(1, std::memory_order_relaxed) < 16) {
    say("mailboxfs: ");
    say(a.path);
    say(control ? ": lost a page of the control segment (truncated, or its filesystem is full); "
                  "the quota count may be wrong\n"
                : ": lost a page (the segment was truncated, or its filesystem is full): "
                  "its mailbox is marked corrupt\n");
  }
  errno = saved_errno;
}
}  // namespace

void install_segment_fault_handler(const std::string& state_dir) {
  char real[PATH_MAX];
  const char* dir = ::realpath(state_dir.c_str(), real) ? real : state_dir.c_str();
  const size_t n = std::strlen(dir);
  if (n + 1 >= sizeof g_dir) return;
  std::memcpy(g_dir, dir, n);
  g_dir[n] = '/';
  g_dir[n + 1] = '\0';
  g_dir_len = n + 1;
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
#include "base/log.h"

#include <syslog.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>

namespace mbx {

namespace {
enum Sink { none, to_stderr, to_syslog };
// Set once at startup, read by any thread: relaxed, nothing else is published with it.
std::atomic<int> sink{none};

int priority(LogLevel l) {
  switch (l) {
    case LogLevel::error: return LOG_ERR;
    case LogLevel::warning: return LOG_WARNING;
    case LogLevel::notice: return LOG_NOTICE;
    case LogLevel::info: return LOG_INFO;
  }
  return LOG_INFO;
}
}  // namespace

void log_to_stderr() { sink.store(to_stderr, std::memory_order_relaxed); }

void log_to_syslog() {
  ::openlog("mailboxfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  sink.store(to_syslog, std::memory_order_relaxed);
}

void log(LogLevel level, const char* fmt, ...) {
  const int s = sink.load(std::memory_order_relaxed);
  if (s == none) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (s == to_syslog) ::syslog(priority(level), "%s", line);
  else std::fprintf(stderr, "mailboxfs: %s\n", line);  // one call: lines of threads do not interleave
}

}  // namespace mbx

// SPDX-License-Identifier: MIT
// Daemon log: stderr in the foreground, syslog (LOG_DAEMON) once daemonized.
// Silent until log_to_stderr() or log_to_syslog() is called, so the client
// library that shares segment.cc never writes to its program's stderr.
#pragma once

namespace mbx {

enum class LogLevel { error, warning, notice, info };

// Where messages go from now on (the daemon picks one at startup).
void log_to_stderr();
void log_to_syslog();

// One line, printf-style, without the trailing newline.
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace mbx

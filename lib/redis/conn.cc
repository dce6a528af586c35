// SPDX-License-Identifier: MIT
#include "redis/conn.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <optional>

#include "base/log.h"

namespace mbx::redis {

namespace {
timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>(ms.count() % 1000 * 1000)};
}

// hiredis writes with write(2): a server that went away would raise SIGPIPE
// in whichever process uses the connection. Blocked around each command,
// and a SIGPIPE it raised is consumed before the mask is restored.
class NoSigpipe {
 public:
  NoSigpipe() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~NoSigpipe() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  NoSigpipe(const NoSigpipe&) = delete;
  NoSigpipe& operator=(const NoSigpipe&) = delete;

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

// The daemon ignores SIGPIPE (libfuse's signal handlers do): then the dance
// above is four system calls per command for nothing. One query instead.
bool sigpipe_ignored() {
  struct sigaction sa {};
  return ::sigaction(SIGPIPE, nullptr, &sa) == 0 && sa.sa_handler == SIG_IGN;
}

// An idle request/reply connection has nothing to read: readable means the
// server closed it (EOF) or it broke.
bool closed_by_server(const redisContext* c) {
  pollfd pf{c->fd, POLLIN, 0};
  return ::poll(&pf, 1, 0) > 0;
}
}  // namespace

void ContextFree::operator()(redisContext* c) const { redisFree(c); }
void Conn::Free::operator()(redisContext* c) const { redisFree(c); }

std::unique_ptr<redisContext, ContextFree> open_context(const Endpoint& ep, std::chrono::milliseconds timeout,
                                                        std::string* why) {
  const timeval tv = to_timeval(timeout);
  std::unique_ptr<redisContext, ContextFree> c(ep.unix_socket ? redisConnectUnixWithTimeout(ep.path.c_str(), tv)
                                                              : redisConnectWithTimeout(ep.host.c_str(), ep.port, tv));
  if (!c) {
    *why = "out of memory";
    return nullptr;
  }
  if (c->err) {
    *why = c->errstr;
    return nullptr;
  }
  return c;
}

Reply copy_reply(const redisReply* r) {
  Reply out;
  if (!r) return out;
  switch (r->type) {
    case REDIS_REPLY_INTEGER: out.type = Reply::Type::integer, out.integer = r->integer; break;
    case REDIS_REPLY_STRING: out.type = Reply::Type::string, out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_STATUS: out.type = Reply::Type::status, out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ERROR: out.type = Reply::Type::error, out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::array;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; i++) out.elements.push_back(copy_reply(r->element[i]));
      break;
    default: break;  // nil
  }
  return out;
}

Conn::Conn(Endpoint ep, Options opt) : ep_(std::move(ep)), opt_(opt) {}
Conn::~Conn() = default;
Conn::Conn(Conn&&) noexcept = default;
Conn& Conn::operator=(Conn&&) noexcept = default;

void Conn::drop(const char* why) {
  if (unread_) log(LogLevel::warning, "redis %s: %zu sent commands unconfirmed", ep_.text().c_str(), unread_);
  unread_ = 0;
  ctx_.reset();
  shas_.clear();
  backoff_ = backoff_.count() == 0 ? kBackoffFirst : std::min(backoff_ * 2, kBackoffMax);
  next_try_ = std::chrono::steady_clock::now() + backoff_;
  if (!said_down_) log(LogLevel::error, "redis %s: %s; calls fail with EIO until it is back", ep_.text().c_str(), why);
  said_down_ = true;
}

bool Conn::absorb() {
  if (!unread_ || !closed_by_server(ctx_.get())) return true;  // nothing has arrived
  if (redisBufferRead(ctx_.get()) != REDIS_OK) return false;
  while (unread_ > 0) {
    void* r = nullptr;
    if (redisGetReplyFromReader(ctx_.get(), &r) != REDIS_OK) return false;
    if (!r) break;  // not all of it yet
    unread_--;
    if (static_cast<redisReply*>(r)->type == REDIS_REPLY_ERROR)
      log(LogLevel::error, "redis: a pipelined command failed: %s", static_cast<redisReply*>(r)->str);
    freeReplyObject(r);
  }
  return true;
}

Errc Conn::read_unread() {
  for (; unread_ > 0; unread_--) {
    void* r = nullptr;
    if (redisGetReply(ctx_.get(), &r) != REDIS_OK || !r) return Errc::io;
    if (static_cast<redisReply*>(r)->type == REDIS_REPLY_ERROR)
      log(LogLevel::error, "redis: a pipelined command failed: %s", static_cast<redisReply*>(r)->str);
    freeReplyObject(r);
  }
  return Errc::ok;
}

Errc Conn::connect(bool now) {
  // With replies outstanding the connection is not idle: what is readable
  // is read first, and only then does readable mean closed.
  if (ctx_ && absorb() && (unread_ > 0 || !closed_by_server(ctx_.get()))) return Errc::ok;
  const bool replaced = ctx_ != nullptr;
  if (replaced) {  // it restarted (or went away): nothing was sent on it, so try at once
    if (unread_) log(LogLevel::warning, "redis %s: %zu sent commands unconfirmed", ep_.text().c_str(), unread_);
    unread_ = 0;
    ctx_.reset();
    shas_.clear();
    now = true;
  }
  if (!now && std::chrono::steady_clock::now() < next_try_) return Errc::io;  // backing off
  std::string why;
  auto c = open_context(ep_, opt_.connect_timeout, &why);
  if (!c) {
    drop(why.c_str());
    return Errc::io;
  }
  const timeval tv = to_timeval(opt_.command_timeout);
  redisSetTimeout(c.get(), tv);
  ctx_.reset(c.release());
  if (ep_.db != 0) {
    auto r = command({"SELECT", std::to_string(ep_.db)});
    if (!r || r->is_error()) {
      drop(r ? r->str.c_str() : "SELECT failed");
      return Errc::io;
    }
  }
  if (said_down_ || replaced)
    log(LogLevel::warning, "redis %s: connected again%s", ep_.text().c_str(),
        said_down_ ? "" : " (the server had closed the connection)");
  said_down_ = false;
  backoff_ = std::chrono::milliseconds(0);
  return Errc::ok;
}

// Appends one command and writes it to the server now, not at the next
// command's read. False if the context failed (the caller drops it).
bool Conn::write_command(const std::vector<std::string_view>& argv) {
  std::vector<const char*> p;
  std::vector<size_t> n;
  p.reserve(argv.size());
  n.reserve(argv.size());
  for (auto a : argv) p.push_back(a.data()), n.push_back(a.size());
  std::optional<NoSigpipe> guard;
  if (!sigpipe_ignored()) guard.emplace();
  if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), p.data(), n.data()) != REDIS_OK) return false;
  for (int done = 0; !done;)
    if (redisBufferWrite(ctx_.get(), &done) != REDIS_OK) return false;
  return true;
}

Result<Reply> Conn::command(const std::vector<std::string_view>& argv) {
  if (Errc e = connect(); e != Errc::ok) return e;
  // Sent behind what send() sent: their replies come first.
  void* raw = nullptr;
  if (!write_command(argv) || read_unread() != Errc::ok || redisGetReply(ctx_.get(), &raw) != REDIS_OK || !raw) {
    // The context is unusable after an I/O or protocol error.
    std::string why = ctx_->errstr;
    drop(why.c_str());
    return Errc::io;
  }
  auto* r = static_cast<redisReply*>(raw);
  Reply out = copy_reply(r);
  freeReplyObject(r);
  return out;
}

Errc Conn::send(const std::vector<std::string_view>& argv) {
  if (Errc e = connect(); e != Errc::ok) return e;
  if (!write_command(argv)) {  // written now: its effect does not wait for the next command
    std::string why = ctx_->errstr;
    drop(why.c_str());
    return Errc::io;
  }
  unread_++;
  return Errc::ok;
}

Result<std::string> Conn::load(const Script& s) {
  if (auto it = shas_.find(s.text); it != shas_.end()) return it->second;
  auto r = command({"SCRIPT", "LOAD", s.text});
  if (!r) return r.error();
  if (r->type != Reply::Type::string) {
    log(LogLevel::error, "redis: script %.*s does not load: %s", static_cast<int>(s.name.size()), s.name.data(),
        r->str.c_str());
    return Errc::io;
  }
  shas_[s.text] = r->str;
  return r->str;
}

Result<Reply> Conn::eval(const Script& s, const std::vector<std::string_view>& keys,
                         const std::vector<std::string_view>& args) {
  for (int attempt = 0;; attempt++) {
    auto sha = load(s);
    if (!sha) return sha.error();
    const std::string nkeys = std::to_string(keys.size());
    std::vector<std::string_view> argv{"EVALSHA", *sha, nkeys};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = command(argv);
    if (!r) return r;
    if (r->is_error() && r->str.starts_with("NOSCRIPT") && attempt == 0) {
      shas_.erase(s.text);  // the server forgot it (restart, SCRIPT FLUSH): load it again
      continue;
    }
    if (r->is_error())
      log(LogLevel::error, "redis: script %.*s: %s", static_cast<int>(s.name.size()), s.name.data(), r->str.c_str());
    return r;
  }
}

}  // namespace mbx::redis

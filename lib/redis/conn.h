// SPDX-License-Identifier: MIT
// One hiredis connection, owned (RAII), with errors as values: a call that
// cannot reach the server returns Errc::io at once (after at most the
// command timeout), and the next call reconnects, no sooner than the backoff
// allows (doubling from kBackoffFirst to kBackoffMax), so an outage costs
// each call one failed attempt at most, never a wait. A connection the
// server closed while idle (it restarted) is replaced before the next
// command is sent, so a restart between two calls costs no call. Not
// thread-safe: its owner serialises the calls.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/errc.h"
#include "redis/url.h"

struct redisContext;
struct redisReply;

namespace mbx::redis {

// A reply, copied out of hiredis's tree.
struct Reply {
  enum class Type { nil, integer, string, status, error, array } type = Type::nil;
  long long integer = 0;
  std::string str;  // string, status, error
  std::vector<Reply> elements;
  bool is_error() const { return type == Type::error; }
};

// A Lua script run with EVALSHA; its text is loaded on first use per
// connection, and again when the server answers NOSCRIPT (a restart or
// SCRIPT FLUSH).
struct Script {
  std::string_view name;  // for log lines
  std::string_view text;
};

struct Options {
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{1000};
};

class Conn {
 public:
  Conn(Endpoint ep, Options opt);
  ~Conn();
  Conn(Conn&&) noexcept;
  Conn& operator=(Conn&&) noexcept;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // One command. A Redis error reply is a value (Reply::Type::error); io
  // means no connection (or it broke: it is dropped, the next call reconnects).
  Result<Reply> command(const std::vector<std::string_view>& argv);
  // Sends one command without waiting for its reply (pipelined): the reply
  // is read before the next command's, and an error reply only logged. ok
  // once it is written to the server; io if it could not be (not sent). A
  // connection that breaks first loses the replies, not the commands sent.
  Errc send(const std::vector<std::string_view>& argv);
  // EVALSHA with `keys` and `args`, loading the script when the server lacks it.
  Result<Reply> eval(const Script& s, const std::vector<std::string_view>& keys,
                     const std::vector<std::string_view>& args);
  // Connects now if not connected (and the backoff allows, unless `now`:
  // the caller knows the server is back): ok or io.
  Errc connect(bool now = false);
  bool connected() const { return ctx_ != nullptr; }
  // The script's SHA1 on this server, loaded unless known (so that an
  // ASKING before an EVALSHA is not spent on a SCRIPT LOAD).
  Result<std::string> load(const Script& s);
  const Endpoint& endpoint() const { return ep_; }
  static constexpr std::chrono::milliseconds kBackoffFirst{50}, kBackoffMax{2000};

 private:
  bool write_command(const std::vector<std::string_view>& argv);
  void drop(const char* why);
  // Reads the replies of sent commands that have arrived, without waiting;
  // false if the server closed the connection meanwhile.
  bool absorb();
  // Reads `unread_` replies (they come before the next command's), logging errors.
  Errc read_unread();

  struct Free {
    void operator()(redisContext* c) const;
  };
  Endpoint ep_;
  Options opt_;
  std::unique_ptr<redisContext, Free> ctx_;
  std::chrono::steady_clock::time_point next_try_{};
  std::chrono::milliseconds backoff_{0};
  bool said_down_ = false;                        // the outage was logged once
  std::map<std::string_view, std::string> shas_;  // script text -> SHA1 on this server
  size_t unread_ = 0;                             // replies of send() not read yet
};

// Connects a hiredis context to `ep` with `timeout` (no db selected): null
// on failure, with the reason in `why`. For Conn and the subscriber.
struct ContextFree {
  void operator()(redisContext* c) const;
};
std::unique_ptr<redisContext, ContextFree> open_context(const Endpoint& ep, std::chrono::milliseconds timeout,
                                                        std::string* why);
// Copies hiredis's reply tree into a Reply.
Reply copy_reply(const redisReply* r);

}  // namespace mbx::redis

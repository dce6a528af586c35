// libFuzzer target: the daemon's command line. fusefs/options.cc's
// parse_options() takes `-o a=b,c=d` apart with libfuse and hands each value
// to the settings parsers; this target runs it on random option strings and
// checks what it accepts against a plain comma split, and each value parser
// against an independent reference: the same numbers accepted, the same
// values, overflow refused, and a formatted value parsing back to itself.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include <fuzzer/FuzzedDataProvider.h>

#include "core/settings.h"
#include "fusefs/options.h"

namespace {

void fail(const char* why, std::string_view v) {
  std::fprintf(stderr, "options_fuzz: %s: '%.*s'\n", why, static_cast<int>(v.size()), v.data());
  abort();
}

// The documented text form: optional spaces before, optional spaces,
// newlines or NULs after (what `setfattr` and `echo` leave), then decimal
// digits, for sizes with one K/M/G suffix (powers of 1024), no overflow.
std::string_view ref_trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.remove_suffix(1);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return s;
}

std::optional<uint64_t> ref_u64(std::string_view s) {
  s = ref_trim(s);
  if (s.empty()) return std::nullopt;
  unsigned __int128 v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > UINT64_MAX) return std::nullopt;
  }
  return static_cast<uint64_t>(v);
}

std::optional<uint64_t> ref_size(std::string_view s) {
  s = ref_trim(s);
  unsigned shift = 0;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
      case 'K': shift = 10; break;
      case 'm':
      case 'M': shift = 20; break;
      case 'g':
      case 'G': shift = 30; break;
    }
    if (shift) s.remove_suffix(1);
  }
  auto v = ref_u64(s);
  if (!v || (shift && *v > (UINT64_MAX >> shift))) return std::nullopt;
  return *v << shift;
}

template <class R, class O>
void same(const R& got, const O& want, const char* what, std::string_view v) {
  if (got.ok() != want.has_value()) fail(got.ok() ? "accepted, reference refuses" : "refused, reference accepts", v);
  if (got.ok() && *got != *want) fail(what, v);
}

void check_value(std::string_view v) {
  same(mbx::parse_u64(v), ref_u64(v), "parse_u64 value", v);
  same(mbx::parse_size(v), ref_size(v), "parse_size value", v);
  auto cap = mbx::parse_capacity(v);
  auto ref_cap = ref_trim(v) == "unbounded" ? std::optional<uint64_t>(mbx::layout::kUnbounded) : ref_u64(v);
  if (ref_cap && *ref_cap == mbx::layout::kUnbounded && ref_trim(v) != "unbounded") ref_cap.reset();
  same(cap, ref_cap, "parse_capacity value", v);
  if (cap && mbx::parse_capacity(mbx::format_capacity(*cap)).value() != *cap) fail("capacity round trip", v);
  auto f = mbx::parse_framing(v);
  if (f && mbx::parse_framing(mbx::framing_name(*f)).value() != *f) fail("framing round trip", v);
  // apply_setting: the same verdicts, bounds applied, nothing changed on error.
  for (const char* name : {"capacity", "max_message", "framing", "timeout_ms", "send_priority"}) {
    mbx::Settings s, before;
    const mbx::Errc e = mbx::apply_setting(s, name, v);
    if (e != mbx::Errc::ok) {
      if (s.capacity != before.capacity || s.max_message != before.max_message || s.framing != before.framing ||
          s.timeout_ms != before.timeout_ms || s.send_priority != before.send_priority)
        fail("a refused setting changed something", v);
      continue;
    }
    if (!std::strcmp(name, "max_message") && (s.max_message == 0 || s.max_message > mbx::kMaxMessageLimit))
      fail("max_message out of bounds accepted", v);
    if (!std::strcmp(name, "timeout_ms") && s.timeout_ms != ref_u64(v).value()) fail("timeout_ms value", v);
    if (!std::strcmp(name, "send_priority") && (s.send_priority != ref_u64(v).value() || s.send_priority > 32767))
      fail("send_priority value", v);
  }
}

// What a plain comma split of the -o string gives for each of our options
// (the last value wins); only for strings without libfuse's '\' escapes.
const char* const kOurs[] = {"capacity",       "max_message", "framing",   "timeout_ms", "send_priority", "max_bytes",
                             "user_max_bytes", "state_dir",   "root_mode", "backend",    "namespace",     "lease_ms"};
std::map<std::string, std::string> ref_split(const std::string& opts) {
  std::map<std::string, std::string> m;
  size_t start = 0;
  while (start <= opts.size()) {
    size_t end = opts.find(',', start);
    if (end == std::string::npos) end = opts.size();
    const std::string item = opts.substr(start, end - start);
    for (const char* name : kOurs)
      if (item.rfind(std::string(name) + "=", 0) == 0) m[name] = item.substr(std::strlen(name) + 1);
    start = end + 1;
  }
  return m;
}

// An accepted command line: every value of ours is one its parser accepts, and it landed where it belongs.
void check_accepted(const mbx::DaemonOptions& d, const std::map<std::string, std::string>& ref, std::string_view opts) {
  if (d.mountpoint != "/") fail("mountpoint", opts);
  if (d.max_bytes < 4096 || d.root_mode > 07777) fail("a bound not kept", opts);
  mbx::Settings want;
  for (const char* name : {"capacity", "max_message", "framing", "timeout_ms", "send_priority"}) {
    auto it = ref.find(name);
    if (it != ref.end() && mbx::apply_setting(want, name, it->second) != mbx::Errc::ok)
      fail("accepted a value apply_setting refuses", opts);
  }
  if (d.defaults.capacity != want.capacity || d.defaults.max_message != want.max_message ||
      d.defaults.framing != want.framing || d.defaults.timeout_ms != want.timeout_ms ||
      d.defaults.send_priority != want.send_priority)
    fail("defaults differ from apply_setting's", opts);
  if (auto it = ref.find("max_bytes"); it != ref.end()) {
    if (!d.max_bytes_given || mbx::parse_size(it->second).value() != d.max_bytes) fail("max_bytes", opts);
    if (ref.count("max_message") && d.defaults.max_message > d.max_bytes) fail("max_message above max_bytes", opts);
  } else if (d.max_bytes_given) {
    fail("max_bytes given from nowhere", opts);
  }
  if (auto it = ref.find("user_max_bytes"); it != ref.end()) {
    if (mbx::parse_size(it->second).value() != d.user_max_bytes || d.user_max_bytes == 0) fail("user_max_bytes", opts);
  } else if (d.user_max_bytes != 0) {
    fail("user_max_bytes from nowhere", opts);
  }
  auto sd = ref.find("state_dir");
  if ((sd == ref.end()) != !d.state_dir || (d.state_dir && *d.state_dir != sd->second)) fail("state_dir", opts);
}

// A refused one: a message naming an option and the value (verbatim) the split found for it.
void check_refused(const mbx::OptionError& e, const std::map<std::string, std::string>& ref, std::string_view opts) {
  if (e.message.empty()) return;  // libfuse refused it (and said why)
  if (e.message.rfind("mailboxfs: ", 0) != 0) fail("message form", opts);
  for (const auto& [name, value] : ref)
    if (e.message.rfind("mailboxfs: invalid value '" + value + "' for -o " + name + " (expected ", 0) == 0) return;
  if (e.message.find("exceeds max_bytes") != std::string::npos && ref.count("max_message")) return;
  if (e.message == "mailboxfs: -o namespace needs -o backend=redis://..." && ref.count("namespace") &&
      !ref.count("backend"))
    return;
  if (e.message == "mailboxfs: -o lease_ms needs -o backend=redis://..." && ref.count("lease_ms") &&
      !ref.count("backend"))
    return;
  if (e.message.rfind("mailboxfs: -o user_max_bytes cannot be enforced", 0) == 0 && ref.count("user_max_bytes") &&
      ref.count("backend"))
    return;
  if (e.message.rfind("mailboxfs: -o send_priority above 0 cannot be kept by a Redis mount", 0) == 0 &&
      ref.count("send_priority") && ref.count("backend"))
    return;
  fail("refused with a message naming no value given", opts);
}

void quiet(fuse_log_level, const char*, va_list) {}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuse_set_log_func(quiet);  // libfuse's own complaints about bad options
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // One value on its own (what a setfattr hands over), then the whole rest as `-o`.
  check_value(in.ConsumeRandomLengthString(40));
  const bool with_source = in.ConsumeBool();  // mount(8)'s "SOURCE MOUNTPOINT"
  std::string opts = in.ConsumeRemainingBytesAsString();
  if (opts.find('\0') != std::string::npos) opts.resize(opts.find('\0'));  // argv strings end at NUL
  char prog[] = "mailboxfs", dash_o[] = "-o", source[] = "mailboxfs", mountpoint[] = "/";
  char* argv[] = {prog, dash_o, opts.data(), source, mountpoint, nullptr};
  if (!with_source) argv[3] = mountpoint, argv[4] = nullptr;
  fuse_args args = FUSE_ARGS_INIT(with_source ? 5 : 4, argv);
  const auto parsed = mbx::parse_options(args);
  fuse_opt_free_args(&args);
  if (opts.find('\\') != std::string::npos) return 0;  // escapes: no plain split to compare with
  const auto ref = ref_split(opts);
  if (const auto* d = std::get_if<mbx::DaemonOptions>(&parsed)) {
    for (const auto& [name, value] : ref) check_value(value);
    check_accepted(*d, ref, opts);
  } else {
    check_refused(std::get<mbx::OptionError>(parsed), ref, opts);
  }
  return 0;
}

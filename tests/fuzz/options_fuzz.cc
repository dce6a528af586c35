// libFuzzer target: mount options. fusefs/main.cc splits `-o a=b,c=d` with
// libfuse's fuse_opt_parse() and hands each value to the settings parsers
// (parse_capacity, parse_size, parse_framing, apply_setting); this target
// does the same split on random option strings and checks each parser
// against an independent reference: the same numbers accepted, the same
// values, overflow refused, and a formatted value parsing back to itself.
#include <fuse_opt.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "core/settings.h"

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
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
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
  for (const char* name : {"capacity", "max_message", "framing", "timeout_ms"}) {
    mbx::Settings s, before;
    const mbx::Errc e = mbx::apply_setting(s, name, v);
    if (e != mbx::Errc::ok) {
      if (s.capacity != before.capacity || s.max_message != before.max_message || s.framing != before.framing ||
          s.timeout_ms != before.timeout_ms)
        fail("a refused setting changed something", v);
      continue;
    }
    if (!std::strcmp(name, "max_message") && (s.max_message == 0 || s.max_message > mbx::kMaxMessageLimit))
      fail("max_message out of bounds accepted", v);
    if (!std::strcmp(name, "timeout_ms") && s.timeout_ms != ref_u64(v).value()) fail("timeout_ms value", v);
  }
}

// What main.cc collects (values strdup()ed by libfuse).
struct Options {
  char* capacity = nullptr;
  char* max_message = nullptr;
  char* framing = nullptr;
  char* timeout_ms = nullptr;
  char* max_bytes = nullptr;
  char* state_dir = nullptr;
  char* root_mode = nullptr;
};
#define OPT(t, f) {t, offsetof(Options, f), 0}
const fuse_opt kSpecs[] = {
    OPT("capacity=%s", capacity),   OPT("max_message=%s", max_message), OPT("framing=%s", framing),
    OPT("timeout_ms=%s", timeout_ms), OPT("max_bytes=%s", max_bytes),   OPT("state_dir=%s", state_dir),
    OPT("root_mode=%s", root_mode), FUSE_OPT_END,
};

// Unknown options are kept for libfuse, as in main.cc.
int keep(void*, const char*, int, fuse_args*) { return 1; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // One value on its own (what a setfattr hands over), then the whole rest as `-o`.
  check_value(in.ConsumeRandomLengthString(40));
  std::string opts = in.ConsumeRemainingBytesAsString();
  if (opts.find('\0') != std::string::npos) opts.resize(opts.find('\0'));  // argv strings end at NUL
  char prog[] = "mailboxfs", dash_o[] = "-o";
  char* argv[] = {prog, dash_o, opts.data(), nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, argv);
  Options o;
  if (fuse_opt_parse(&args, &o, kSpecs, keep) == 0) {
    for (char* v : {o.capacity, o.max_message, o.framing, o.timeout_ms, o.max_bytes})
      if (v) check_value(v);
  }
  for (char* p : {o.capacity, o.max_message, o.framing, o.timeout_ms, o.max_bytes, o.state_dir, o.root_mode}) free(p);
  fuse_opt_free_args(&args);
  return 0;
}

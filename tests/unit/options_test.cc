// SPDX-License-Identifier: MIT
// The daemon's command line (fusefs/options.cc): every option's good and bad
// values, the exact messages, and -o values read as their xattrs are.
#include "fusefs/options.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <variant>
#include <vector>

#include "fusefs/version.h"

namespace mbx {
namespace {

// parse_options() on "mailboxfs ARGS..."; `rest` gets what is left for fuse_session_new().
std::variant<DaemonOptions, OptionError> parse(std::initializer_list<std::string> list,
                                               std::vector<std::string>* rest = nullptr) {
  std::vector<std::string> words{"mailboxfs"};
  words.insert(words.end(), list);
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(words.size()), argv.data());
  auto r = parse_options(args);
  if (rest) rest->assign(args.argv + 1, args.argv + args.argc);
  fuse_opt_free_args(&args);
  return r;
}

DaemonOptions ok(std::initializer_list<std::string> list) {
  auto r = parse(list);
  if (auto* e = std::get_if<OptionError>(&r)) ADD_FAILURE() << "refused: " << e->message;
  return std::holds_alternative<DaemonOptions>(r) ? std::get<DaemonOptions>(r) : DaemonOptions{};
}

DaemonOptions with(const std::string& o) { return ok({"-o", o, "/"}); }

// The message for a refused command line; "(accepted)" if it was not refused.
std::string refusal(std::initializer_list<std::string> list) {
  auto r = parse(list);
  return std::holds_alternative<OptionError>(r) ? std::get<OptionError>(r).message : "(accepted)";
}

std::string refusal(const std::string& o) { return refusal({"-o", o, "/"}); }

TEST(Options, DefaultsWithOnlyAMountpoint) {
  const DaemonOptions d = ok({"/"});
  const Settings s;
  EXPECT_EQ(d.defaults.capacity, s.capacity);
  EXPECT_EQ(d.defaults.max_message, s.max_message);
  EXPECT_EQ(d.defaults.framing, s.framing);
  EXPECT_EQ(d.defaults.timeout_ms, s.timeout_ms);
  EXPECT_FALSE(d.max_bytes_given);
  EXPECT_GT(d.max_bytes, 0u);
  EXPECT_LE(d.max_bytes, 1ull << 30);
  EXPECT_EQ(d.user_max_bytes, 0u);
  EXPECT_EQ(d.root_mode, 0755u);
  EXPECT_FALSE(d.state_dir);
  EXPECT_EQ(d.mountpoint, "/");
  EXPECT_FALSE(d.show_help || d.show_version || d.foreground || d.singlethread || d.clone_fd);
}

TEST(Options, PerMailboxDefaultsAccepted) {
  EXPECT_EQ(with("capacity=5").defaults.capacity, 5u);
  EXPECT_EQ(with("capacity=0").defaults.capacity, 0u);
  EXPECT_EQ(with("capacity=unbounded").defaults.capacity, layout::kUnbounded);
  EXPECT_EQ(with("max_message=1").defaults.max_message, 1u);
  EXPECT_EQ(with("max_message=4K").defaults.max_message, 4096u);
  EXPECT_EQ(with("max_message=4k").defaults.max_message, 4096u);
  EXPECT_EQ(with("max_message=2m").defaults.max_message, 2u << 20);
  EXPECT_EQ(with("max_message=256M").defaults.max_message, 256u << 20);
  EXPECT_EQ(with("framing=file").defaults.framing, Framing::file);
  EXPECT_EQ(with("framing=datagram").defaults.framing, Framing::datagram);
  EXPECT_EQ(with("framing=line").defaults.framing, Framing::line);
  EXPECT_EQ(with("framing=line_batch").defaults.framing, Framing::line_batch);
  EXPECT_EQ(with("timeout_ms=0").defaults.timeout_ms, 0u);
  EXPECT_EQ(with("timeout_ms=1500").defaults.timeout_ms, 1500u);
  const DaemonOptions d = with("capacity=3,framing=line,timeout_ms=7");
  EXPECT_EQ(d.defaults.capacity, 3u);
  EXPECT_EQ(d.defaults.framing, Framing::line);
  EXPECT_EQ(d.defaults.timeout_ms, 7u);
}

TEST(Options, MountWideAccepted) {
  EXPECT_EQ(with("max_bytes=4096").max_bytes, 4096u);
  EXPECT_EQ(with("max_bytes=4K").max_bytes, 4096u);
  EXPECT_EQ(with("max_bytes=3M").max_bytes, 3u << 20);
  EXPECT_EQ(with("max_bytes=2g").max_bytes, 2ull << 30);
  EXPECT_EQ(with("max_bytes=64G").max_bytes, 64ull << 30);  // above the default's 1G cap
  EXPECT_TRUE(with("max_bytes=1G").max_bytes_given);
  EXPECT_EQ(with("user_max_bytes=1").user_max_bytes, 1u);
  EXPECT_EQ(with("user_max_bytes=16M").user_max_bytes, 16u << 20);
  EXPECT_EQ(with("root_mode=1777").root_mode, 01777u);
  EXPECT_EQ(with("root_mode=0700").root_mode, 0700u);
  EXPECT_EQ(with("root_mode=0").root_mode, 0u);
  EXPECT_EQ(with("root_mode=7777").root_mode, 07777u);
  EXPECT_EQ(with("state_dir=/dev/shm/x").state_dir, "/dev/shm/x");
  EXPECT_EQ(with("state_dir=relative").state_dir, "relative");  // made absolute when serving
  EXPECT_EQ(with("state_dir=").state_dir, "");                  // given, though empty
}

TEST(Options, RedisBackendAndNamespace) {
  const DaemonOptions plain = with("capacity=1");
  EXPECT_FALSE(plain.backend);  // without backend=: the shared-memory mount
  const DaemonOptions r = ok({"-o", "backend=redis://db.example:7000/2,namespace=prod", "/"});
  ASSERT_TRUE(r.backend);
  EXPECT_EQ(r.backend->host, "db.example");
  EXPECT_EQ(r.backend->port, 7000);
  EXPECT_EQ(r.backend->db, 2);
  EXPECT_EQ(r.ns, "prod");
  const DaemonOptions u = with("backend=redis+unix:///run/redis.sock");
  ASSERT_TRUE(u.backend);
  EXPECT_TRUE(u.backend->unix_socket);
  EXPECT_EQ(u.ns, "default");
  EXPECT_EQ(refusal("backend=http://x"),
            "mailboxfs: invalid value 'http://x' for -o backend (expected redis://HOST[:PORT][/DB] or "
            "redis+unix:///PATH[?db=N])");
  EXPECT_EQ(refusal("backend=redis://h,namespace=a b"),
            "mailboxfs: invalid value 'a b' for -o namespace (expected a name of 1 to 64 bytes without spaces, "
            "braces, ':' or '/')");
  EXPECT_EQ(refusal("backend=redis://h,namespace={x}"),
            "mailboxfs: invalid value '{x}' for -o namespace (expected a name of 1 to 64 bytes without spaces, "
            "braces, ':' or '/')");
  EXPECT_EQ(refusal("namespace=x"), "mailboxfs: -o namespace needs -o backend=redis://...");
}

TEST(Options, RedisLeaseIsValidatedAndNeedsABackend) {
  EXPECT_EQ(with("backend=redis://h").lease_ms, 10000u);  // the documented default
  EXPECT_EQ(with("backend=redis://h,lease_ms=1000").lease_ms, 1000u);
  EXPECT_EQ(with("backend=redis://h,lease_ms=3600000").lease_ms, 3600000u);
  for (const char* bad : {"999", "0", "3600001", "-5", "+2000", "2s", "", "99999999999999999999999"})
    EXPECT_EQ(refusal(std::string("backend=redis://h,lease_ms=") + bad),
              std::string("mailboxfs: invalid value '") + bad +
                  "' for -o lease_ms (expected milliseconds from 1000 to 3600000)")
        << bad;
  EXPECT_EQ(refusal("lease_ms=2000"), "mailboxfs: -o lease_ms needs -o backend=redis://...");
}

TEST(Options, APerUserQuotaIsRefusedOnARedisMount) {
  EXPECT_EQ(with("user_max_bytes=1M").user_max_bytes, 1u << 20);  // a local mount keeps it
  EXPECT_EQ(refusal("backend=redis://h,user_max_bytes=1M"),
            "mailboxfs: -o user_max_bytes cannot be enforced across the daemons of a Redis mount (-o backend=...): "
            "not supported");
}

TEST(Options, BadValuesAreRefusedWithTheMessageTheyAlwaysHad) {
  const struct {
    const char* option;
    const char* message;
  } cases[] = {
      {"capacity=many",
       "mailboxfs: invalid value 'many' for -o capacity (expected a number of messages or 'unbounded')"},
      {"capacity=", "mailboxfs: invalid value '' for -o capacity (expected a number of messages or 'unbounded')"},
      {"capacity=-1", "mailboxfs: invalid value '-1' for -o capacity (expected a number of messages or 'unbounded')"},
      {"capacity=18446744073709551615",  // kUnbounded is spelt "unbounded"
       "mailboxfs: invalid value '18446744073709551615' for -o capacity (expected a number of messages or "
       "'unbounded')"},
      {"max_message=0", "mailboxfs: invalid value '0' for -o max_message (expected a size from 1 to 256M)"},
      {"max_message=257M", "mailboxfs: invalid value '257M' for -o max_message (expected a size from 1 to 256M)"},
      {"max_message=1T", "mailboxfs: invalid value '1T' for -o max_message (expected a size from 1 to 256M)"},
      {"framing=packet",
       "mailboxfs: invalid value 'packet' for -o framing (expected file, datagram, line or line_batch)"},
      {"timeout_ms=-5", "mailboxfs: invalid value '-5' for -o timeout_ms (expected milliseconds, 0 for none)"},
      {"timeout_ms=1K", "mailboxfs: invalid value '1K' for -o timeout_ms (expected milliseconds, 0 for none)"},
      {"timeout_ms=31536000001",  // more than a year
       "mailboxfs: invalid value '31536000001' for -o timeout_ms (expected milliseconds, 0 for none)"},
      {"max_bytes=1", "mailboxfs: invalid value '1' for -o max_bytes (expected a size of at least 4K)"},
      {"max_bytes=4095", "mailboxfs: invalid value '4095' for -o max_bytes (expected a size of at least 4K)"},
      {"max_bytes=x", "mailboxfs: invalid value 'x' for -o max_bytes (expected a size of at least 4K)"},
      {"max_bytes=17179869184G",  // overflows 64 bits
       "mailboxfs: invalid value '17179869184G' for -o max_bytes (expected a size of at least 4K)"},
      {"user_max_bytes=0", "mailboxfs: invalid value '0' for -o user_max_bytes (expected a size of at least 1)"},
      {"user_max_bytes=x", "mailboxfs: invalid value 'x' for -o user_max_bytes (expected a size of at least 1)"},
      {"root_mode=999", "mailboxfs: invalid value '999' for -o root_mode (expected an octal mode)"},
      {"root_mode=17777", "mailboxfs: invalid value '17777' for -o root_mode (expected an octal mode)"},
      {"root_mode=", "mailboxfs: invalid value '' for -o root_mode (expected an octal mode)"},
      {"root_mode=0x1", "mailboxfs: invalid value '0x1' for -o root_mode (expected an octal mode)"},
      {"max_message=1M,max_bytes=512K", "mailboxfs: max_message (1048576) exceeds max_bytes (524288)"},
  };
  for (const auto& c : cases) EXPECT_EQ(refusal(c.option), c.message) << c.option;
}

TEST(Options, MaxMessageAboveMaxBytesOnlyWhenBothAreGiven) {
  const DaemonOptions d = with("max_bytes=512K");  // the default max_message is cut down when serving
  EXPECT_EQ(d.max_bytes, 512u << 10);
  EXPECT_EQ(d.defaults.max_message, 1u << 20);
  EXPECT_EQ(with("max_message=512K,max_bytes=512K").defaults.max_message, 512u << 10);
}

TEST(Options, FirstBadValueInDocumentedOrderIsReported) {
  EXPECT_EQ(refusal("root_mode=9,framing=x,capacity=y"),
            "mailboxfs: invalid value 'y' for -o capacity (expected a number of messages or 'unbounded')");
  EXPECT_EQ(refusal("user_max_bytes=0,max_bytes=1"),
            "mailboxfs: invalid value '1' for -o max_bytes (expected a size of at least 4K)");
}

TEST(Options, TheLastValueOfARepeatedOptionCounts) {
  EXPECT_EQ(with("capacity=1,capacity=2").defaults.capacity, 2u);
  EXPECT_EQ(with("capacity=x,capacity=3").defaults.capacity, 3u);
  EXPECT_EQ(ok({"-o", "capacity=4", "-o", "capacity=5", "/"}).defaults.capacity, 5u);
  EXPECT_NE(refusal("capacity=3,capacity=x"), "(accepted)");
}

// -o and setxattr accept exactly the same values: both go through apply_setting().
TEST(Options, PerMailboxValuesAreReadAsTheirXattrs) {
  for (const char* name : {"capacity", "max_message", "framing", "timeout_ms"}) {
    for (const char* value : {"0", "1", "64", "4K", "1M", "256M", "257M", "unbounded", "line", "line_batch", "file",
                              "datagram", "-1", "", "x", "31536000000", "18446744073709551614"}) {
      Settings want;
      const bool good = apply_setting(want, name, value) == Errc::ok;
      auto r = parse({"-o", std::string(name) + "=" + value, "-o", "max_bytes=1G", "/"});
      ASSERT_EQ(std::holds_alternative<DaemonOptions>(r), good) << name << "=" << value;
      if (!good) continue;
      const Settings& got = std::get<DaemonOptions>(r).defaults;
      EXPECT_EQ(got.capacity, want.capacity) << name << "=" << value;
      EXPECT_EQ(got.max_message, want.max_message) << name << "=" << value;
      EXPECT_EQ(got.framing, want.framing) << name << "=" << value;
      EXPECT_EQ(got.timeout_ms, want.timeout_ms) << name << "=" << value;
    }
  }
}

TEST(Options, HelpAndVersionNeedNoMountpoint) {
  for (const char* flag : {"-h", "--help"}) {
    const DaemonOptions d = ok({flag});
    EXPECT_TRUE(d.show_help) << flag;
    EXPECT_TRUE(d.mountpoint.empty()) << flag;
  }
  for (const char* flag : {"-V", "--version"}) EXPECT_TRUE(ok({flag}).show_version) << flag;
  // Values are checked first: a bad one fails even with --help.
  EXPECT_EQ(refusal({"--help", "-o", "capacity=x"}),
            "mailboxfs: invalid value 'x' for -o capacity (expected a number of messages or 'unbounded')");
}

TEST(Options, HelpNamesEveryOption) {
  testing::internal::CaptureStdout();
  print_help("mailboxfs");
  const std::string help = testing::internal::GetCapturedStdout();
  EXPECT_EQ(help.rfind("usage: mailboxfs [options] [SOURCE] MOUNTPOINT\n", 0), 0u) << help;
  for (const char* o : {"-o capacity=", "-o max_message=", "-o framing=", "-o timeout_ms=", "-o max_bytes=",
                        "-o user_max_bytes=", "-o state_dir=", "-o root_mode=", "-o backend=", "-o namespace=",
                        "-o lease_ms=", "-o allow_other", "FUSE options:"})
    EXPECT_NE(help.find(o), std::string::npos) << o;
  testing::internal::CaptureStdout();
  print_version();
  const std::string version = testing::internal::GetCapturedStdout();
  EXPECT_NE(version.find("mailboxfs " MAILBOXFS_VERSION "\n"), std::string::npos) << version;
}

TEST(Options, MountpointAndIgnoredSource) {
  EXPECT_EQ(refusal({}), "mailboxfs: no mountpoint given (see mailboxfs --help)");
  EXPECT_EQ(refusal({"-f"}), "mailboxfs: no mountpoint given (see mailboxfs --help)");
  EXPECT_EQ(ok({"/"}).mountpoint, "/");
  EXPECT_EQ(ok({"mailboxfs", "/"}).mountpoint, "/");  // mount(8): SOURCE MOUNTPOINT
  EXPECT_EQ(ok({"/tmp/.."}).mountpoint, "/");         // libfuse resolves it
}

TEST(Options, LibfuseRefusalsCarryNoMessageOfOurs) {
  EXPECT_EQ(refusal({"-o"}), "");                        // "fuse: missing argument after `-o'"
  EXPECT_EQ(refusal({"-o", "max_threads=x", "/"}), "");  // "fuse: invalid parameter ..."
  EXPECT_EQ(refusal({"/no/such/mountpoint"}), "");       // "fuse: bad mount point ..."
}

TEST(Options, LibfuseCommandLineFlags) {
  EXPECT_TRUE(ok({"-f", "/"}).foreground);
  EXPECT_TRUE(ok({"-d", "/"}).foreground);
  EXPECT_TRUE(ok({"-s", "/"}).singlethread);
  EXPECT_TRUE(ok({"-o", "clone_fd", "/"}).clone_fd);
  EXPECT_EQ(ok({"-o", "max_threads=4", "/"}).max_threads, 4u);
  EXPECT_EQ(ok({"-o", "max_idle_threads=2", "/"}).max_idle_threads, 2u);
}

TEST(Options, WhatIsNotOursIsLeftForTheSession) {
  std::vector<std::string> rest;
  auto r = parse({"-f", "-o", "allow_other,capacity=3,no_such_option,state_dir=/x", "/"}, &rest);
  ASSERT_TRUE(std::holds_alternative<DaemonOptions>(r));
  std::string joined;
  for (const std::string& w : rest) joined += w + " ";
  EXPECT_NE(joined.find("allow_other"), std::string::npos) << joined;
  EXPECT_NE(joined.find("no_such_option"), std::string::npos) << joined;
  EXPECT_EQ(joined.find("capacity"), std::string::npos) << joined;
  EXPECT_EQ(joined.find("state_dir"), std::string::npos) << joined;
  EXPECT_EQ(joined.find("-f"), std::string::npos) << joined;
}

}  // namespace
}  // namespace mbx

// SPDX-License-Identifier: MIT
// mailboxfs as an installed Linux tool: `make install` into a temporary
// DESTDIR (MAILBOXFS_DESTDIR from `make test`, else made here), then the
// installed copy used as a new user would: the shared library and its
// exports, pkg-config builds of C and C++ programs, mount -t and fstab
// through mount(8) and mount.fuse3, systemd units, syslog logging, the mbx
// CLI, the Python package (its unittest suite run against a real mount), and
// the man page against --help.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "harness.h"
#include "mailbox/mailbox.hpp"

#ifndef MAILBOXFS_SRCDIR
#define MAILBOXFS_SRCDIR "."
#endif

namespace {

using mt::q;

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// The build directory: the one holding this test binary.
std::string build_dir() {
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string out = n > 0 ? std::string(exe, static_cast<size_t>(n)) : "out/x";
  return out.substr(0, out.rfind('/'));
}

std::string make_cmd(const std::string& prefix, const std::string& destdir) {
  return "make -C " + q(MAILBOXFS_SRCDIR) + " -s --no-print-directory OUT=" + q(build_dir()) + " PREFIX=" + q(prefix) +
         " DESTDIR=" + q(destdir);
}

// The installed tree: DESTDIR + PREFIX, installed once per test binary.
class Installed {
 public:
  static const Installed& get() {
    static Installed i;
    return i;
  }
  std::string root, prefix, error;
  std::string bin() const { return root + prefix + "/bin"; }
  std::string lib() const { return root + prefix + "/lib"; }
  std::string mbx() const { return bin() + "/mbx"; }
  std::string site_packages() const {
    mt::Run r = mt::sh("ls -d " + q(lib()) + "/python3*/*-packages 2>/dev/null | head -1");
    return r.out.substr(0, r.out.find('\n'));
  }
  ~Installed() {
    if (!own_.empty()) mt::sh("rm -rf " + q(own_));  // the temporary directory made for it, with its destdir
  }

 private:
  Installed() {
    const char* p = std::getenv("MAILBOXFS_PREFIX");
    prefix = p && *p ? p : "/usr/local";
    const char* d = std::getenv("MAILBOXFS_DESTDIR");
    if (d && *d) {
      root = d;
      return;
    }
    char tmpl[] = "/tmp/mbxtest.XXXXXX";
    if (!mkdtemp(tmpl)) return;
    own_ = tmpl;
    root = own_ + "/destdir";
    mt::Run r = mt::sh(make_cmd(prefix, root) + " install install-python", 600000);
    if (r.status != 0) error = r.out + r.err;
  }
  std::string own_;
};

class Ecosystem : public ::testing::Test {
 protected:
  void SetUp() override {
    const Installed& i = Installed::get();
    ASSERT_EQ(i.error, "");
    ASSERT_TRUE(exists(i.bin() + "/mailboxfs")) << "not installed under " << i.root;
    // Mounts made by the harness use the installed daemon too.
    const char* old = std::getenv("MAILBOXFS_BIN");
    old_bin_ = old ? old : "";
    had_bin_ = old != nullptr;
    ::setenv("MAILBOXFS_BIN", (i.bin() + "/mailboxfs").c_str(), 1);
  }
  void TearDown() override {
    if (had_bin_) ::setenv("MAILBOXFS_BIN", old_bin_.c_str(), 1);
    else ::unsetenv("MAILBOXFS_BIN");
  }
  const Installed& in() const { return Installed::get(); }
  std::string mbx() const { return q(in().mbx()); }
  // A script in its own mount namespace (for mounts no other process sees,
  // and bind mounts over system paths); false if namespaces are not allowed.
  static bool can_unshare() { return mt::sh("unshare -m true").status == 0; }

 private:
  std::string old_bin_;
  bool had_bin_ = false;
};

TEST_F(Ecosystem, SharedLibraryHasVersionedSonameAndExportsOnlyThePublicApi) {
  const std::string lib = in().lib();
  EXPECT_TRUE(exists(lib + "/libmailbox.a"));
  mt::Run r = mt::sh("readlink " + q(lib + "/libmailbox.so") + "; readlink " + q(lib + "/libmailbox.so.0") +
                     "; readelf -d " + q(lib + "/libmailbox.so.0") + " | grep SONAME");
  EXPECT_NE(r.out.find("libmailbox.so.0\nlibmailbox.so.0.1.0\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[libmailbox.so.0]"), std::string::npos) << r.out;
  // Every dynamic symbol is the C API or a public C++ class.
  r = mt::sh("nm -D --defined-only " + q(lib + "/libmailbox.so.0") + " | c++filt | cut -d' ' -f3-");
  ASSERT_EQ(r.status, 0);
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  std::set<std::string> c_api, declared;
  const std::regex pub(R"(^(mbx_[a-z_]+|mailbox::(Mailbox|Reservation|View)::.*|LIBMAILBOX_0)(@@LIBMAILBOX_0)?$)");
  while (std::getline(lines, line)) {
    n++;
    if (line.rfind("mbx_", 0) == 0) c_api.insert(line.substr(0, line.find('@')));
    EXPECT_TRUE(std::regex_match(line, pub)) << "exported: " << line;
  }
  // The C functions exported are exactly those the public C headers declare.
  const std::regex decl(R"(\b(mbx_[a-z_0-9]+)\s*\()");
  for (const char* h : {"/lib/include/mailbox/mailbox.h", "/lib/include/mailbox/mqueue.h"}) {
    const std::string text = slurp(std::string(MAILBOXFS_SRCDIR) + h);
    for (std::sregex_iterator it(text.begin(), text.end(), decl), end; it != end; ++it) declared.insert((*it)[1]);
  }
  EXPECT_EQ(c_api, declared);
  EXPECT_GT(n, 40);
  // The .pc file has its variables, and pkg-config resolves them in the DESTDIR.
  const std::string pc = slurp(lib + "/pkgconfig/mailbox.pc");
  EXPECT_NE(pc.find("libdir=" + in().prefix + "/lib\n"), std::string::npos) << pc;
  EXPECT_NE(pc.find("includedir=" + in().prefix + "/include\n"), std::string::npos) << pc;
  r = mt::sh("PKG_CONFIG_PATH=" + q(lib + "/pkgconfig") + " PKG_CONFIG_SYSROOT_DIR=" + q(in().root) +
             " pkg-config --cflags --libs mailbox");
  EXPECT_EQ(r.out, "-I" + in().root + in().prefix + "/include -L" + in().root + in().prefix + "/lib -lmailbox \n");
}

TEST_F(Ecosystem, UninstallRemovesEverythingInstallPut) {
  char tmpl[] = "/tmp/mbxtest.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string d = std::string(tmpl) + "/destdir";
  const std::string files = "find " + q(d) + " -type f -o -type l | wc -l";
  mt::Run r = mt::sh(make_cmd(in().prefix, d) + " install install-python >/dev/null && " + files + " && " +
                         make_cmd(in().prefix, d) + " uninstall >/dev/null && " + files,
                     600000);
  mt::sh("rm -rf " + q(tmpl));
  EXPECT_EQ(r.status, 0) << r.err;
  std::istringstream counts(r.out);
  int before = 0, after = -1;
  counts >> before >> after;
  EXPECT_GT(before, 20) << r.out;
  EXPECT_EQ(after, 0) << r.out;
}

TEST_F(Ecosystem, CAndCppProgramsBuiltThroughPkgConfigTalkToTheShell) {
  mt::Mount m;
  ASSERT_TRUE(m.ok());
  const std::string dir = m.dir() + "/..";
  std::ofstream(dir + "/c.c") << R"(#include <mailbox/mailbox.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
  mbx_t *m;
  int rc = mbx_open(argv[1], MBX_SEND | MBX_RECEIVE, &m);
  if (rc) return -rc;
  char buf[64];
  ssize_t n = mbx_recv(m, buf, sizeof buf, 20000);
  if (n < 0) return (int)-n;
  rc = mbx_send(m, "C got ", 6, -1);
  if (!rc) rc = mbx_send(m, buf, (size_t)n, -1);
  mbx_close(m);
  return -rc;
})";
  std::ofstream(dir + "/cc.cc") << R"(#include <mailbox/mailbox.hpp>
#include <iostream>
int main(int, char** argv) {
  auto m = mailbox::Mailbox::open(argv[1]);
  if (!m) return m.error();
  std::string a, b;
  if (int e = m->receive_for(a, std::chrono::seconds(20))) return e;
  if (int e = m->receive_for(b, std::chrono::seconds(20))) return e;
  std::cout << a << b << "\n";
  return 0;
})";
  const std::string pc = "PKG_CONFIG_PATH=" + q(in().lib() + "/pkgconfig") + " PKG_CONFIG_SYSROOT_DIR=" + q(in().root);
  mt::Run r = mt::sh("cd " + q(dir) + " && gcc -Wall -Werror -o c c.c $(" + pc +
                         " pkg-config --cflags --libs mailbox)" + " && g++ -std=c++20 -o cc cc.cc $(" + pc +
                         " pkg-config --cflags --libs mailbox)",
                     120000);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string ld = "LD_LIBRARY_PATH=" + q(in().lib()) + " ";
  r = m.sh("touch box && printf 'hello from sh' > box && " + ld + q(dir + "/c") + " box && " + ld + q(dir + "/cc") +
           " box && " + ld + "ldd " + q(dir + "/c") + " | grep libmailbox");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("C got hello from sh\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(in().lib() + "/libmailbox.so.0"), std::string::npos) << r.out;  // the installed copy
}

TEST_F(Ecosystem, MbxSendsReceivesAndReportsErrnoAsExitStatus) {
  mt::Mount m("capacity=16");
  ASSERT_TRUE(m.ok());
  mt::Run r = m.sh("touch box && " + mbx() + " send box one && echo two | " + mbx() + " send box - && " + mbx() +
                   " recv box -n 2");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "onetwo\n");
  r = m.sh(mbx() + " recv box --nonblock");
  EXPECT_EQ(r.status, EAGAIN);
  EXPECT_EQ(r.err, "mbx: box: Resource temporarily unavailable\n");
  r = m.sh(mbx() + " recv box --timeout 10ms");
  EXPECT_EQ(r.status, ETIMEDOUT);
  r = m.sh(mbx() + " send nobox x");
  EXPECT_EQ(r.status, ENOENT);
  EXPECT_EQ(r.err, "mbx: nobox: No such file or directory\n");
  r = m.sh(mbx() + " frobnicate");
  EXPECT_EQ(r.status, EINVAL);
  r = m.sh(mbx() + " send box a && " + mbx() + " send box bb && " + mbx() + " recv box -n 0 --nonblock --json");
  EXPECT_EQ(r.status, 0) << r.err;
  const std::string me = "\"uid\":" + std::to_string(getuid());
  EXPECT_NE(r.out.find("{\"message\":\"a\",\"pid\":"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("{\"message\":\"bb\",\"pid\":"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(me), std::string::npos) << r.out;
}

TEST_F(Ecosystem, MbxStatSetAndLsShowSettingsCountersAndBlockedPids) {
  mt::Mount m("capacity=16,framing=line");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("mkdir sub && touch box && printf 'x\\n' > box").status, 0);
  ASSERT_EQ(m.sh("touch empty").status, 0);
  mt::Proc blocked("exec head -c1 " + q(m.path("empty")), m.dir());
  ASSERT_TRUE(m.wait_words("empty", "blocked_receivers", 1));
  mt::Run r = m.sh(mbx() + " stat --json box empty");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\"box\":{\"capacity\":16,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"framing\":\"line\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"messages\":1,\"bytes\":2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"blocked_receivers\":[" + m.xattr("empty", "blocked_receivers") + "]"), std::string::npos)
      << r.out;
  r = m.sh(mbx() + " stat box");
  EXPECT_NE(r.out.find("  capacity           16\n"), std::string::npos) << r.out;
  EXPECT_EQ(m.sh(mbx() + " set box capacity=3 framing=datagram timeout_ms=500").status, 0);
  EXPECT_EQ(m.xattr("box", "capacity"), "3");
  EXPECT_EQ(m.xattr("box", "framing"), "datagram");
  r = m.sh(mbx() + " set box framing=packet");
  EXPECT_EQ(r.status, EINVAL);
  EXPECT_EQ(r.err, "mbx: box: framing: Invalid argument\n");
  r = m.sh(mbx() + " ls");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("box                             1          3 datagram         0        0\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("empty                           0         16 line             0        1\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("sub/\n"), std::string::npos) << r.out;
  r = m.sh(mbx() + " ls --json .");
  EXPECT_NE(r.out.find("{\"name\":\"sub\",\"type\":\"directory\"}"), std::string::npos) << r.out;
  EXPECT_EQ(m.sh(mbx() + " send empty 'w\n'").status, 0);  // wakes the blocked reader
  EXPECT_EQ(blocked.finish(20000).out, "w");
}

TEST_F(Ecosystem, MbxGcListsAndRemovesOnlyStateNoLiveDaemonOwns) {
  mt::Mount live;
  ASSERT_TRUE(live.ok());
  mt::Mount killed;
  ASSERT_TRUE(killed.ok());
  ASSERT_EQ(killed.sh("echo kept > box").status, 0);
  ASSERT_TRUE(killed.stop(SIGKILL));  // leaves its state for a restart, on purpose
  const std::string dirs = q(live.state_dir()) + " " + q(killed.state_dir());
  mt::Run r = mt::sh(mbx() + " gc " + dirs);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("live "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stale "), std::string::npos) << r.out;
  EXPECT_TRUE(exists(killed.state_dir() + "/control"));  // a dry run by default
  r = mt::sh(mbx() + " gc --json --remove " + dirs);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("{\"dir\":" + std::string("\"") + live.state_dir() + "\",\"state\":\"live\""), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("{\"dir\":\"" + killed.state_dir() + "\",\"state\":\"removed\""), std::string::npos) << r.out;
  EXPECT_FALSE(exists(killed.state_dir()));
  EXPECT_TRUE(exists(live.state_dir() + "/control"));
  EXPECT_EQ(live.sh("echo still > box && cat box").out, "still\n");
}

// mount(8) runs mount.fuse3 for fuse.* types, which runs 'mailboxfs SOURCE
// MOUNTPOINT -o OPTIONS' with PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:...
// The installed bin/ is bound over /usr/local/bin in a private namespace.
TEST_F(Ecosystem, MountDashTAndFstabLinesWorkThroughMountHelper) {
  if (!can_unshare()) GTEST_SKIP() << "no mount namespaces here";
  char tmpl[] = "/tmp/mbxtest.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string t = tmpl;
  std::ofstream(t + "/fstab") << "# mailboxfs\nmailboxfs " << t
                              << "/mnt fuse.mailboxfs noauto,x-systemd.automount,capacity=16,framing=line,state_dir="
                              << t << "/state2 0 0\n";
  const std::string script = R"SH(
set -u
T=)SH" + q(t) + R"SH(
mount --make-rprivate /
mount --bind )SH" + q(in().bin()) +
                             R"SH( /usr/local/bin
mkdir -p $T/mnt
daemon_gone() {  # the daemon of this mountpoint exited (it removes its state first)
  for i in $(seq 1000); do
    grep -qsF "$T/mnt" /proc/[0-9]*/cmdline || return 0
    read -t 0.01 <> <(:) || true
  done
  return 1
}
check() {
  grep -F " $T/mnt fuse.mailboxfs " /proc/mounts | cut -d' ' -f1,3 || { echo "not mounted"; return 1; }
  touch $T/mnt/box && echo "$(getfattr --only-values -n user.mailbox.capacity $T/mnt/box) $(getfattr --only-values -n user.mailbox.framing $T/mnt/box)"
  printf 'a\n' > $T/mnt/box; head -n1 $T/mnt/box
  umount $T/mnt && daemon_gone && echo unmounted
}
trap 'umount $T/mnt 2>/dev/null' EXIT
mount -t fuse.mailboxfs mailboxfs $T/mnt -o capacity=16,framing=line,state_dir=$T/state1 && check
[ -e $T/state1 ] && echo "state left"
mount -T $T/fstab -a; grep -qF " $T/mnt " /proc/mounts && echo "noauto ignored"
mount -T $T/fstab $T/mnt && check
[ -e $T/state2 ] && echo "state left"
exit 0
)SH";
  mt::Run r = mt::sh("unshare -m bash -c " + q(script), 60000);
  mt::sh("rm -rf " + q(t));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "mailboxfs fuse.mailboxfs\n16 line\na\nunmounted\n"
            "mailboxfs fuse.mailboxfs\n16 line\na\nunmounted\n")
      << r.err;
}

TEST_F(Ecosystem, SystemdUnitExamplesVerify) {
  if (mt::sh("command -v systemd-analyze").status != 0) GTEST_SKIP() << "no systemd-analyze";
  if (!can_unshare()) GTEST_SKIP() << "no mount namespaces here";
  const std::string units = in().root + in().prefix + "/share/doc/mailboxfs/systemd";
  char tmpl[] = "/tmp/mbxtest.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string t = tmpl;
  // An instance of the template unit, the way systemctl enable names it.
  mt::Run r = mt::sh("cp " + q(units) + "/mnt-mbx.* " + q(t) + " && cp " + q(units + "/mailboxfs@.service") + " " +
                         q(t + "/mailboxfs@mnt-mbx.service") + " && cd " + q(t) +
                         " && unshare -m bash -c 'mount --make-rprivate / && mount --bind " + q(in().bin()) +
                         " /usr/local/bin && systemd-analyze verify --man=no ./mnt-mbx.mount ./mnt-mbx.automount "
                         "./mailboxfs@mnt-mbx.service'",
                     60000);
  mt::sh("rm -rf " + q(t));
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.err.find("mailboxfs"), std::string::npos) << r.err;
}

// Daemonized, the daemon logs to syslog (LOG_DAEMON): a /dev/log of our own,
// in a private namespace, receives its re-attach report after a kill -9.
TEST_F(Ecosystem, DaemonizedDaemonLogsToSyslog) {
  if (!can_unshare()) GTEST_SKIP() << "no mount namespaces here";
  char tmpl[] = "/tmp/mbxtest.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string t = tmpl;
  const std::string script = R"SH(
set -u
T=)SH" + q(t) + R"SH(
BIN=)SH" + q(in().bin() + "/mailboxfs") +
                             R"SH(
mount --make-rprivate /
mkdir $T/dev $T/mnt
mount --rbind /dev $T/dev
mount -t tmpfs tmpfs /dev
for n in null zero fuse urandom; do touch /dev/$n && mount --bind $T/dev/$n /dev/$n; done
python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind("/dev/log"); s.settimeout(30)
print("ready", flush=True)
while True:
    line = s.recv(4096).decode(errors="replace")
    sys.stderr.write(line + "\n")
    if "re-attached" in line:
        print(line.split(": ", 1)[0].split(">")[0] + "> " + line.split(": ", 1)[1], flush=True)
        break
' > $T/syslog &
listener=$!
for i in $(seq 1000); do grep -q ready $T/syslog 2>/dev/null && break; read -t 0.01 <> <(:) || true; done
$BIN -f $T/mnt -o state_dir=$T/state 2>/dev/null &
pid=$!
for i in $(seq 1000); do grep -qF " $T/mnt " /proc/mounts && break; read -t 0.01 <> <(:) || true; done
echo kept > $T/mnt/box
kill -9 $pid
wait $pid
$BIN $T/mnt -o state_dir=$T/state 2>$T/stderr || exit 2
wait $listener
cat $T/syslog | grep -v ready
cat $T/mnt/box
fusermount3 -u $T/mnt
for i in $(seq 1000); do [ -e $T/state ] || break; read -t 0.01 <> <(:) || true; done
cat $T/stderr
)SH";
  mt::Run r = mt::sh("unshare -m bash -c " + q(script), 60000);
  mt::sh("rm -rf " + q(t));
  EXPECT_EQ(r.status, 0) << r.err;
  // <29> = LOG_DAEMON | LOG_NOTICE; the dead mount's recovery, before detaching, went to stderr.
  EXPECT_NE(r.out.find("<29>"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("> re-attached 1 mailboxes (1 messages)"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("kept\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("was left by a daemon that died"), std::string::npos) << r.out;
}

// A library process killed while it holds a mailbox's send lock (an open
// reservation): the daemon recovers the lock on its next send and says so
// once, in its log (stderr under -f), not once per message.
TEST_F(Ecosystem, LockRecoveryFromADeadClientIsLoggedOnce) {
  mt::Mount m;
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.sh("touch box").status, 0);
  const std::string path = m.path("box");
  pid_t c = mt::child([&] {
    auto b = mailbox::Mailbox::open(path);
    if (!b) return 1;
    auto r = b->reserve(8);  // holds the send lock until commit
    if (!r) return 2;
    ::raise(SIGKILL);
    return 3;
  });
  ASSERT_EQ(mt::reap(c, 20000), 128 + SIGKILL);
  EXPECT_EQ(m.sh("for i in 1 2 3 4 5; do echo $i > box; done; cat box").out, "1\n");
  const std::string log = m.daemon_stderr();
  const std::string line = "mailboxfs: a process died holding a mailbox's send lock: recovered\n";
  const size_t at = log.find(line);
  EXPECT_NE(at, std::string::npos) << log;
  EXPECT_EQ(log.find(line, at + 1), std::string::npos) << log;
}

TEST_F(Ecosystem, PythonPackageUnittestsPassAgainstARealMount) {
  mt::Mount m;
  ASSERT_TRUE(m.ok());
  const std::string sp = in().site_packages();
  ASSERT_FALSE(sp.empty()) << "python package not installed under " << in().lib();
  // No MAILBOXFS_LIBMAILBOX: the package finds libmailbox.so.0 in its own prefix.
  mt::Run r = mt::sh("cd / && unset MAILBOXFS_LIBMAILBOX && PYTHONPATH=" + q(sp) + " MAILBOXFS_MOUNT=" + q(m.dir()) +
                         " python3 -m unittest discover -s " + q(std::string(MAILBOXFS_SRCDIR) + "/python/tests") +
                         " -v && PYTHONPATH=" + q(sp) +
                         " python3 -c 'import mailboxfs; print(mailboxfs.library._name)'",
                     300000);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("\nOK\n"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("skipped"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find(in().lib()), std::string::npos) << r.out;
}

// Options: "-o name", "-x" and "--long" as --help prints them and as the
// OPTIONS section of mailboxfs(8) lists them.
std::set<std::string> options_in(const std::string& text) {
  std::set<std::string> out;
  static const std::regex o(R"((?:^|[\s"(])(-o [a-z_]+|--?[a-zA-Z][a-z_-]*))");
  for (std::sregex_iterator i(text.begin(), text.end(), o), end; i != end; ++i) out.insert((*i)[1]);
  return out;
}

TEST_F(Ecosystem, EveryHelpOptionIsInTheManPageAndTheReverse) {
  mt::Run r = mt::sh(q(in().bin() + "/mailboxfs") + " --help");
  ASSERT_EQ(r.status, 0);
  const std::string help = r.out, ours = help.substr(0, help.find("FUSE options:"));
  std::string man = slurp(in().root + in().prefix + "/share/man/man8/mailboxfs.8");
  ASSERT_FALSE(man.empty());
  // Roff to text: \- is -, font requests and quotes go.
  man = std::regex_replace(man, std::regex(R"(\\-)"), "-");
  man = std::regex_replace(man, std::regex(R"(^\.[A-Z]+ ?)"), "");
  man = std::regex_replace(man, std::regex(R"(["])"), "");
  const size_t from = man.find("\nOPTIONS\n") != std::string::npos ? man.find("\nOPTIONS\n") : man.find("SH OPTIONS");
  const size_t to = man.find("\n.SH", from + 1);
  ASSERT_NE(from, std::string::npos);
  const std::string section = man.substr(from, to - from);
  // Only the option lines of --help ("    -o capacity=N ..."), not its prose.
  std::string listed;
  std::istringstream lines(ours);
  for (std::string l; std::getline(lines, l);)
    if (std::regex_search(l, std::regex(R"(^ {4}-)"))) listed += l.substr(0, 29) + "\n";
  for (const std::string& opt : options_in(listed))
    EXPECT_NE(man.find(opt), std::string::npos) << opt << " (in --help)";
  for (const std::string& opt : options_in(section))
    EXPECT_NE(help.find(opt), std::string::npos) << opt << " (in mailboxfs(8))";
  EXPECT_GE(options_in(listed).size(), 8u);
}

TEST_F(Ecosystem, ManPagesAreInstalledAndRenderCleanly) {
  const std::string man = in().root + in().prefix + "/share/man";
  for (const char* page : {"man1/mbx.1", "man3/libmailbox.3", "man7/mailboxfs.7", "man8/mailboxfs.8"}) {
    ASSERT_TRUE(exists(man + "/" + page)) << page;
    mt::Run r = mt::sh("LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l " + q(man + "/" + page) + " 2>&1 >/dev/null");
    EXPECT_EQ(r.out, "") << page;
  }
}

}  // namespace

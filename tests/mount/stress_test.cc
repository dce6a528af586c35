// SPDX-License-Identifier: MIT
// Mount stress tests: many processes on one mailbox, killed and interrupted
// callers, sharing an open file with a child, and poll/select/epoll readiness.
// Every wait has a hang guard; blocking is shown by the daemon listing the
// caller in blocked_* (or the kernel's wchan), and release by its return after
// the event.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using mt::q;

// The temporary directory holding the mountpoint: scratch space off the mount.
std::string scratch(const mt::Mount& m) { return m.dir().substr(0, m.dir().rfind('/')); }

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep))
    if (!cur.empty()) v.push_back(cur);
  return v;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string w; in >> w;) v.push_back(w);
  return v;
}

size_t blocked(const mt::Mount& m, const std::string& box, const std::string& who) {
  return words(m.xattr(box, "blocked_" + who)).size();
}

// ---- 1. producer/consumer stress ---------------------------------------------

uint32_t fnv1a(const std::string& s) {
  uint32_t h = 0x811c9dc5u;
  for (unsigned char c : s) h = (h ^ c) * 0x01000193u;
  return h;
}

// Message `seq` of producer `p`: "p seq payload checksum"; mirrored in kProducer.
std::string message(int p, int seq) {
  int n = (p * 7919 + seq * 104729) % 120 + 1;
  std::string body = std::to_string(p) + " " + std::to_string(seq) + " ";
  for (int i = 0; i < n; i++) body += static_cast<char>('a' + (p + seq + i) % 26);
  char crc[16];
  snprintf(crc, sizeof crc, " %08x", fnv1a(body));
  return body + crc;
}

const char* kProducer = R"PY(
import os, sys
box, framing, p, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def fnv(s):
    h = 0x811c9dc5
    for c in s.encode():
        h = ((h ^ c) * 0x01000193) & 0xffffffff
    return h
def msg(s):
    n = (p * 7919 + s * 104729) % 120 + 1
    body = "%d %d %s" % (p, s, "".join(chr(97 + (p + s + i) % 26) for i in range(n)))
    return "%s %08x" % (body, fnv(body))
if framing == "file":          # one open-write-close per message
    for s in range(count):
        with open(box, "w") as f:
            f.write(msg(s))
elif framing == "datagram":    # one write per message on one open file
    fd = os.open(box, os.O_WRONLY)
    for s in range(count):
        m = msg(s).encode()
        n = os.write(fd, m)
        assert n == len(m), (n, len(m))
    os.close(fd)
else:                          # line: writes of varying size that cut lines anywhere
    fd = os.open(box, os.O_WRONLY)
    data = "".join(msg(s) + "\n" for s in range(count)).encode()
    off, k = 0, 0
    while off < len(data):
        size = (k * 37 + p * 11) % 300 + 1
        k += 1
        chunk = data[off:off + size]
        while chunk:           # a short write (some lines went) is retried
            n = os.write(fd, chunk)
            chunk = chunk[n:]
            off += n
    os.close(fd)
)PY";

const char* kConsumer = R"PY(
import os, sys
box, framing, out = sys.argv[1], sys.argv[2], sys.argv[3]
got = []
if framing == "file":
    while True:
        with open(box) as f:
            m = f.read()
        if m == "STOP":
            break
        got.append(m)
elif framing == "datagram":
    fd = os.open(box, os.O_RDONLY)
    while True:
        m = os.read(fd, 65536).decode()
        if m == "STOP":
            break
        got.append(m)
else:
    fd = os.open(box, os.O_RDONLY)
    stop = False
    while not stop:
        d = os.read(fd, 65536).decode()
        if not d.endswith("\n"):
            got.append("PARTIAL-READ " + repr(d))
            break
        for line in d[:-1].split("\n"):
            if line == "STOP":
                stop = True
            else:
                got.append(line)
with open(out, "w") as f:
    f.write("".join(m + "\n" for m in got))
)PY";

struct StressCase {
  const char* framing;
  const char* capacity;
  int producers, consumers, per_producer;
};

std::ostream& operator<<(std::ostream& o, const StressCase& c) { return o << c.framing << "/capacity=" << c.capacity; }

class StressProducerConsumer : public ::testing::TestWithParam<StressCase> {};

TEST_P(StressProducerConsumer, NothingLostNothingDuplicatedOrderKept) {
  const StressCase c = GetParam();
  const std::string fr = c.framing;
  mt::Mount m(std::string("framing=") + c.framing + ",capacity=" + c.capacity);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string s = scratch(m);
  write_file(s + "/prod.py", kProducer);
  write_file(s + "/cons.py", kConsumer);
  ASSERT_EQ(m.sh("touch box").status, 0);
  const long long t0 = mt::now_ms();

  std::vector<std::unique_ptr<mt::Proc>> consumers, producers;
  for (int i = 0; i < c.consumers; i++) {
    const std::string out = s + "/got." + std::to_string(i);
    // In file framing half the consumers are bash running `cat`, one cat per message.
    if (fr == "file" && i % 2 == 1)
      consumers.push_back(std::make_unique<mt::Proc>(
          "while :; do m=$(cat box) || exit 1; [ \"$m\" = STOP ] && break; printf '%s\\n' \"$m\"; "
          "done > " +
              q(out),
          m.dir()));
    else
      consumers.push_back(std::make_unique<mt::Proc>("exec python3 " + q(s + "/cons.py") + " box " + fr + " " + q(out),
                                                     m.dir()));
  }
  for (int p = 0; p < c.producers; p++)
    producers.push_back(std::make_unique<mt::Proc>("exec python3 " + q(s + "/prod.py") + " box " + fr + " " +
                                                       std::to_string(p) + " " + std::to_string(c.per_producer),
                                                   m.dir()));
  for (auto& p : producers) {
    mt::Run r = p->finish(40000);
    ASSERT_FALSE(r.timed_out) << "producer hung; " << r.err;
    ASSERT_EQ(r.status, 0) << r.err;
  }
  // One STOP per consumer, each after the previous one was taken, so that no
  // read (line framing may return several lines) can take two.
  const std::string stop = fr == "line" ? "echo STOP > box" : "printf STOP > box";
  for (int i = 0; i < c.consumers; i++) {
    mt::Run r = m.sh(stop);
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(mt::wait_until([&] { return m.xattr("box", "messages") == "0"; })) << "STOP " << i << " never taken";
  }
  for (auto& p : consumers) {
    mt::Run r = p->finish(10000);
    ASSERT_FALSE(r.timed_out) << "consumer hung; " << r.err;
    ASSERT_EQ(r.status, 0) << r.err;
  }
  const long long ms = mt::now_ms() - t0;

  std::set<std::string> expected;
  for (int p = 0; p < c.producers; p++)
    for (int i = 0; i < c.per_producer; i++) expected.insert(message(p, i));
  std::set<std::string> seen;
  size_t received = 0;
  for (int i = 0; i < c.consumers; i++) {
    std::map<int, int> last;  // producer -> last sequence number this consumer saw
    for (const std::string& msg : split(read_file(s + "/got." + std::to_string(i)), '\n')) {
      received++;
      auto w = words(msg);
      ASSERT_EQ(w.size(), 4u) << "malformed message: " << msg;
      const std::string body = msg.substr(0, msg.rfind(' '));
      char crc[16];
      snprintf(crc, sizeof crc, "%08x", fnv1a(body));
      ASSERT_EQ(w[3], crc) << "checksum mismatch: " << msg;
      ASSERT_TRUE(expected.count(msg)) << "never sent: " << msg;
      ASSERT_TRUE(seen.insert(msg).second) << "received twice: " << msg;
      const int p = std::stoi(w[0]), seq = std::stoi(w[1]);
      if (last.count(p)) {
        ASSERT_LT(last[p], seq) << "producer " << p << " out of order at consumer " << i;
      }
      last[p] = seq;
    }
  }
  EXPECT_EQ(received, expected.size());
  EXPECT_EQ(seen, expected) << (expected.size() - seen.size()) << " messages lost";
  EXPECT_EQ(m.xattr("box", "sent"), std::to_string(expected.size() + c.consumers));
  EXPECT_EQ(m.xattr("box", "received"), std::to_string(expected.size() + c.consumers));
  std::cout << "[ stress   ] " << c << ": " << expected.size() << " messages, " << c.producers << " producers, "
            << c.consumers << " consumers in " << ms << " ms\n";
}

INSTANTIATE_TEST_SUITE_P(Framings, StressProducerConsumer,
                         ::testing::Values(StressCase{"file", "2", 4, 4, 500}, StressCase{"datagram", "4", 4, 4, 1000},
                                           StressCase{"line", "8", 4, 4, 1000}, StressCase{"file", "0", 3, 3, 200},
                                           StressCase{"datagram", "0", 3, 3, 300},
                                           StressCase{"line", "unbounded", 4, 2, 1000}),
                         [](const ::testing::TestParamInfo<StressCase>& i) {
                           return std::string(i.param.framing) + "_capacity" + i.param.capacity;
                         });

// ---- 2. a thousand blocked readers ------------------------------------------

TEST(StressThousandReaders, AllReleasedByAThousandSends) {
  constexpr int kReaders = 1000;
  mt::Mount m;
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string s = scratch(m);
  ASSERT_EQ(m.sh("touch box").status, 0);
  mt::Proc readers("for i in $(seq " + std::to_string(kReaders) + "); do cat box > " + q(s) + "/r.$i 2>" + q(s) +
                       "/e.$i & echo $! >> " + q(s) + "/pids; done; wait",
                   m.dir());
  std::string parked;
  ASSERT_TRUE(mt::wait_until(
      [&] {
        parked = m.xattr("box", "blocked_receivers");
        return words(parked).size() >= kReaders;
      },
      60000))
      << "only " << words(parked).size() << " readers ever parked";
  EXPECT_TRUE(readers.running());
  // blocked_receivers lists exactly the cat processes we started.
  auto listed = words(parked), started = words(read_file(s + "/pids"));
  EXPECT_EQ(listed.size(), size_t(kReaders));
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), std::set<std::string>(started.begin(), started.end()));
  EXPECT_EQ(m.xattr("box", "messages"), "0");

  const long long t0 = mt::now_ms();
  mt::Proc senders("for i in $(seq " + std::to_string(kReaders) + "); do echo msg-$i > box || exit 1; done", m.dir());
  mt::Run sr = senders.finish(60000);
  const long long sent_ms = mt::now_ms() - t0;
  ASSERT_FALSE(sr.timed_out);
  ASSERT_EQ(sr.status, 0) << sr.err;
  mt::Run rr = readers.finish(60000);
  const long long all_ms = mt::now_ms() - t0;
  ASSERT_FALSE(rr.timed_out) << blocked(m, "box", "receivers") << " readers still blocked";
  EXPECT_EQ(rr.status, 0);

  std::set<std::string> got;
  for (int i = 1; i <= kReaders; i++) {
    const std::string n = std::to_string(i);
    EXPECT_EQ(read_file(s + "/e." + n), "") << "reader " << i;
    std::string out = read_file(s + "/r." + n);
    EXPECT_TRUE(got.insert(out).second) << "two readers got " << out;
  }
  std::set<std::string> want;
  for (int i = 1; i <= kReaders; i++) want.insert("msg-" + std::to_string(i) + "\n");
  EXPECT_EQ(got, want);
  EXPECT_EQ(m.xattr("box", "received"), std::to_string(kReaders));
  EXPECT_EQ(m.xattr("box", "blocked_receivers"), "");
  std::cout << "[ measure  ] " << kReaders << " blocked cat readers released by " << kReaders
            << " sends (echo): sends done in " << sent_ms << " ms, all readers exited " << all_ms
            << " ms after the first send\n";
}

// ---- 3. parent and child sharing one open file ----------------------------------

TEST(StressSharedOpenFile, ParentWritesWhileChildIsBlockedReadingTheSameFd) {
  mt::Mount m("framing=datagram");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string s = scratch(m);
  ASSERT_EQ(mt::sh("mkfifo " + q(s + "/go")).status, 0);
  ASSERT_EQ(m.sh("touch box").status, 0);
  // The child reads through fd 3, which it shares with its parent (one open file).
  mt::Proc parent(
      "exec 3<>box\n"
      "dd bs=65536 count=1 status=none <&3 > " +
          q(s + "/child.out") +
          " &\n"
          "child=$!\n"
          "read -r go < " +
          q(s + "/go") +
          "\n"
          "printf ping >&3 && echo wrote\n"
          "wait $child; echo child=$?\n",
      m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", parent.pid()));  // the child's read is parked
  EXPECT_TRUE(parent.running());
  EXPECT_EQ(read_file(s + "/child.out"), "");
  ASSERT_EQ(mt::sh("echo go > " + q(s + "/go")).status, 0);
  // Without FOPEN_STREAM the write would wait on the file-position lock for as
  // long as the child's read waits: forever.
  ASSERT_TRUE(parent.exits()) << "the parent's write through the shared fd hung";
  mt::Run r = parent.finish(1000);
  EXPECT_EQ(r.out, "wrote\nchild=0\n") << r.err;
  EXPECT_EQ(read_file(s + "/child.out"), "ping");
  EXPECT_EQ(m.xattr("box", "messages"), "0");
}

// ---- 4. Ctrl-C and SIGKILL of blocked callers ----------------------------------

struct KillCase {
  const char* framing;
  int sig;
};

class StressKillBlocked : public ::testing::TestWithParam<KillCase> {};

std::string kill_case_name(const ::testing::TestParamInfo<KillCase>& i) {
  return std::string(i.param.framing) + (i.param.sig == SIGINT ? "_SIGINT" : "_SIGKILL");
}

TEST_P(StressKillBlocked, ReaderExitsPromptlyAndNothingIsLost) {
  const KillCase c = GetParam();
  mt::Mount m(std::string("framing=") + c.framing);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("touch box").status, 0);
  for (int round = 0; round < 2; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    mt::Proc reader("cat box", m.dir());
    ASSERT_TRUE(m.wait_listed("box", "blocked_receivers", reader.pid()));
    reader.signal_group(c.sig);  // Ctrl-C signals the terminal's foreground process group
    ASSERT_TRUE(reader.exits()) << "blocked reader survived signal " << c.sig;
    mt::Run r = reader.finish(0);
    EXPECT_EQ(r.status, 128 + c.sig);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(m.xattr("box", "blocked_receivers"), "");
    EXPECT_EQ(m.xattr("box", "received"), std::to_string(round));
    // The killed reader consumed nothing: the next message reaches the next reader, intact.
    const std::string msg = "after-kill-" + std::to_string(round) + "-" + std::string(300, 'x');
    ASSERT_EQ(m.sh("printf %s " + q(msg) + " > box").status, 0);
    EXPECT_EQ(m.xattr("box", "messages"), "1");
    mt::Run got = m.sh("dd bs=65536 count=1 status=none if=box");
    EXPECT_FALSE(got.timed_out);
    EXPECT_EQ(got.out, msg);
    EXPECT_EQ(m.xattr("box", "messages"), "0");
  }
}

TEST_P(StressKillBlocked, SenderOnFullMailboxDeliversNothing) {
  const KillCase c = GetParam();
  mt::Mount m(std::string("capacity=1,framing=") + c.framing);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("printf first > box").status, 0);
  ASSERT_EQ(m.xattr("box", "messages"), "1");
  // file framing blocks at close(), datagram framing in write().
  mt::Proc sender("printf second > box", m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", sender.pid()));
  sender.signal_group(c.sig);
  ASSERT_TRUE(sender.exits()) << "blocked sender survived signal " << c.sig;
  mt::Run r = sender.finish(0);
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(m.xattr("box", "blocked_senders"), "");
  EXPECT_EQ(m.xattr("box", "messages"), "1");
  EXPECT_EQ(m.xattr("box", "sent"), "1");
  mt::Run got = m.sh("dd bs=65536 count=1 status=none if=box");
  EXPECT_EQ(got.out, "first");
  EXPECT_EQ(m.xattr("box", "messages"), "0");
  // Nothing else arrives: a non-blocking receive finds the mailbox empty.
  mt::Run empty = m.sh(
      "python3 -c 'import os\nfd = os.open(\"box\", os.O_RDONLY | os.O_NONBLOCK)\n"
      "try:\n    print(os.read(fd, 100))\nexcept BlockingIOError:\n    print(\"EAGAIN\")'",
      5000);
  EXPECT_EQ(empty.out, "EAGAIN\n") << empty.err;
}

// A signal with a handler: the call ends with EINTR, python (PEP 475) runs the
// handler and calls again. An interrupted receive consumed nothing, an
// interrupted send delivered nothing: exactly one copy arrives, once.
const char* kRestarting = R"PY(
import os, signal, sys
role, box = sys.argv[1], sys.argv[2]
n = 0
def handler(sig, frame):
    global n
    n += 1
signal.signal(signal.SIGUSR1, handler)
if role == "reader":
    fd = os.open(box, os.O_RDONLY)
    m = os.read(fd, 100).decode()
    print("signals=%d got=%s" % (n, m.strip()))
else:
    fd = os.open(box, os.O_WRONLY)
    k = os.write(fd, b"second\n")
    print("signals=%d wrote=%d" % (n, k))
)PY";

// True while a signal is pending for `pid` (not yet delivered to a handler).
bool signal_pending(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if ((line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) &&
        line.find_first_not_of("0\t ", 7) != std::string::npos)
      return true;
  return false;
}

TEST(StressHandledSignal, RestartedCallLosesAndDoublesNothing) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"reader", "file"}, {"reader", "datagram"}, {"reader", "line"}, {"sender", "datagram"}, {"sender", "line"}};
  for (const auto& [role, framing] : cases) {
    SCOPED_TRACE(role + " " + framing);
    mt::Mount m("capacity=1,framing=" + framing);
    ASSERT_TRUE(m.ok()) << m.daemon_stderr();
    const std::string s = scratch(m);
    write_file(s + "/restart.py", kRestarting);
    const bool reader = role == "reader";
    ASSERT_EQ(m.sh(reader ? "touch box" : "printf 'first\\n' > box").status, 0);
    const std::string who = reader ? "receivers" : "senders";
    mt::Proc p("exec python3 " + q(s + "/restart.py") + " " + role + " box", m.dir());
    for (int i = 0; i < 3; i++) {
      // Delivered (so the interrupted call has returned) and parked again; a
      // signal sent before the last one was delivered would merge with it.
      ASSERT_TRUE(mt::wait_until([&] {
        return !signal_pending(p.pid()) &&
               words(m.xattr("box", "blocked_" + who)) == std::vector<std::string>{std::to_string(p.pid())};
      }))  // the hang guard only: the first wait includes python's start
          << "not (re)parked after signal " << i;
      EXPECT_TRUE(p.running());
      p.signal(SIGUSR1);
    }
    ASSERT_TRUE(m.wait_listed("box", "blocked_" + who, p.pid()));  // parked after the last signal
    EXPECT_TRUE(p.running());
    if (reader) {
      ASSERT_EQ(m.sh("printf 'hello\\n' > box").status, 0);
    } else {
      mt::Run got = m.sh("dd bs=100 count=1 status=none if=box");
      EXPECT_EQ(got.out, "first\n");
    }
    ASSERT_TRUE(p.exits());
    mt::Run r = p.finish(0);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, reader ? "signals=3 got=hello\n" : "signals=3 wrote=7\n");
    EXPECT_EQ(m.xattr("box", "sent"), reader ? "1" : "2");
    EXPECT_EQ(m.xattr("box", "received"), "1");
    EXPECT_EQ(m.xattr("box", "messages"), reader ? "0" : "1");
    if (!reader) {
      EXPECT_EQ(m.sh("dd bs=100 count=1 status=none if=box").out, "second\n");
    }
  }
}

void PrintTo(const KillCase& c, std::ostream* o) { *o << c.framing << "/signal " << c.sig; }

INSTANTIATE_TEST_SUITE_P(Signals, StressKillBlocked,
                         ::testing::Values(KillCase{"file", SIGINT}, KillCase{"file", SIGKILL},
                                           KillCase{"datagram", SIGINT}, KillCase{"datagram", SIGKILL}),
                         kill_case_name);

// ---- 4b. many blocked senders; O_NONBLOCK beside a blocked sender -----------------

// Shell senders (open with O_TRUNC) to a datagram/line mailbox that already
// has a sender parked inside write() wait in the kernel's do_truncate() for the
// inode lock that sender holds (docs/design.md, "What remains"): they are not
// listed in blocked_senders until the parked one is released, so openers with
// O_TRUNC are tested with many senders in file framing only. One sender that
// opens with O_TRUNC and writes at once ("python_trunc") parks in the daemon
// like any other (without atomic_o_trunc the kernel keeps the size the daemon
// reports), so an O_NONBLOCK sender beside it still gets EAGAIN.

struct SendersCase {
  const char* framing;
  // "shell": printf > box (O_TRUNC, then fstat); "python": os.open(O_WRONLY);
  // "python_trunc": os.open(O_WRONLY | O_TRUNC), write at once.
  const char* opener;
};

void PrintTo(const SendersCase& c, std::ostream* o) { *o << c.framing << "/" << c.opener; }

std::string send_script(const std::string& opener, const std::string& msg, bool nonblock = false) {
  if (opener == "shell") return "printf " + q(msg + "\\n") + " > box";
  return std::string("exec python3 -c 'import os, sys\nfd = os.open(\"box\", os.O_WRONLY") +
         (nonblock ? " | os.O_NONBLOCK" : "") + (opener == "python_trunc" ? " | os.O_TRUNC" : "") +
         ")\ntry:\n    os.write(fd, (sys.argv[1] + \"\\n\").encode())\n    print(\"sent\")\n"
         "except BlockingIOError:\n    print(\"EAGAIN\")' " +
         q(msg);
}

class StressBlockedSenders : public ::testing::TestWithParam<SendersCase> {};

TEST_P(StressBlockedSenders, AllListedAndReleasedInOrderByReceives) {
  const SendersCase c = GetParam();
  const std::string framing = c.framing, opener = c.opener;
  constexpr int kSenders = 20;
  mt::Mount m("capacity=1,framing=" + framing);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("printf 'm0\\n' > box").status, 0);
  std::vector<std::unique_ptr<mt::Proc>> senders;
  for (int i = 1; i <= kSenders; i++) {
    senders.push_back(std::make_unique<mt::Proc>(send_script(opener, "m" + std::to_string(i)), m.dir()));
    // One at a time, so that their order of arrival is known.
    ASSERT_TRUE(mt::wait_until([&] { return blocked(m, "box", "senders") == size_t(i); }))
        << "sender " << i << " is not a blocked sender; listed: " << m.xattr("box", "blocked_senders");
  }
  for (auto& p : senders) EXPECT_TRUE(p->running());
  EXPECT_EQ(m.xattr("box", "messages"), "1");
  for (int i = 0; i <= kSenders; i++) {
    mt::Run got = m.sh("dd bs=100 count=1 status=none if=box");
    ASSERT_FALSE(got.timed_out) << "receive " << i;
    EXPECT_EQ(got.out, "m" + std::to_string(i) + "\n");
    if (i < kSenders) {
      ASSERT_TRUE(senders[i]->exits()) << "sender " << i + 1 << " not released";
      mt::Run r = senders[i]->finish(0);
      EXPECT_EQ(r.status, 0) << r.err;
    }
  }
  EXPECT_EQ(m.xattr("box", "messages"), "0");
  EXPECT_EQ(m.xattr("box", "sent"), std::to_string(kSenders + 1));
  EXPECT_EQ(m.xattr("box", "blocked_senders"), "");
}

INSTANTIATE_TEST_SUITE_P(Openers, StressBlockedSenders,
                         ::testing::Values(SendersCase{"file", "shell"}, SendersCase{"file", "python"},
                                           SendersCase{"datagram", "python"}, SendersCase{"line", "python"}),
                         [](const ::testing::TestParamInfo<SendersCase>& i) {
                           return std::string(i.param.framing) + "_" + i.param.opener;
                         });

class StressNonblockingSend : public ::testing::TestWithParam<SendersCase> {};

TEST_P(StressNonblockingSend, GetsEagainBesideABlockedSender) {
  const SendersCase c = GetParam();
  const std::string framing = c.framing, opener = c.opener;
  mt::Mount m("capacity=1,framing=" + framing);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  ASSERT_EQ(m.sh("printf 'first\\n' > box").status, 0);
  mt::Proc parked(send_script(opener, "second"), m.dir());
  ASSERT_TRUE(m.wait_listed("box", "blocked_senders", parked.pid()));
  // In file framing the message goes at close(): O_NONBLOCK makes close() fail with EAGAIN.
  mt::Proc nb(framing == "file" ? "exec python3 -c 'import os\nfd = os.open(\"box\", os.O_WRONLY | os.O_NONBLOCK)\n"
                                  "os.write(fd, b\"nb\\n\")\ntry:\n    os.close(fd)\n    print(\"sent\")\n"
                                  "except BlockingIOError:\n    print(\"EAGAIN\")'"
                                : send_script("python", "nb", true),
              m.dir());
  ASSERT_TRUE(nb.exits()) << "an O_NONBLOCK send waited";
  mt::Run r = nb.finish(0);
  EXPECT_EQ(r.out, "EAGAIN\n") << r.err;
  EXPECT_EQ(m.sh("dd bs=100 count=1 status=none if=box").out, "first\n");
  ASSERT_TRUE(parked.exits());
  EXPECT_EQ(m.sh("dd bs=100 count=1 status=none if=box").out, "second\n");
  EXPECT_EQ(m.xattr("box", "sent"), "2");
}

INSTANTIATE_TEST_SUITE_P(Openers, StressNonblockingSend,
                         ::testing::Values(SendersCase{"file", "shell"}, SendersCase{"datagram", "python"},
                                           SendersCase{"line", "python"}, SendersCase{"datagram", "shell"},
                                           SendersCase{"line", "shell"}, SendersCase{"datagram", "python_trunc"},
                                           SendersCase{"line", "python_trunc"}),
                         [](const ::testing::TestParamInfo<SendersCase>& i) {
                           return std::string(i.param.framing) + "_parked_" + i.param.opener;
                         });

// ---- 5. poll, select and epoll from python ---------------------------------------

// Prints readiness before and after the marker file is created; the test
// changes the mailbox in between, once the poller sleeps in poll/select/epoll.
// Waits up to 60 s, a hang guard: a wake-up that never comes fails the test.
const char* kPoller = R"PY(
import os, select, sys, time
box, marker, mode = sys.argv[1], sys.argv[2], sys.argv[3]
def ready():
    open(marker, "w").close()
    return time.monotonic()
if mode in ("pollin", "epollin", "selectin"):
    fd = os.open(box, os.O_RDONLY | os.O_NONBLOCK)
    if mode == "pollin":
        p = select.poll(); p.register(fd, select.POLLIN)
        before = p.poll(0)
        try:
            os.read(fd, 100); print("read-before=data")
        except BlockingIOError:
            print("read-before=EAGAIN")
        t = ready(); after = p.poll(60000)
        bit = lambda ev: any(e & select.POLLIN for _, e in ev)
    elif mode == "epollin":
        p = select.epoll(); p.register(fd, select.EPOLLIN)
        before = p.poll(0)
        t = ready(); after = p.poll(60)
        bit = lambda ev: any(e & select.EPOLLIN for _, e in ev)
    else:
        before = select.select([fd], [], [], 0)[0]
        t = ready(); after = select.select([fd], [], [], 60)[0]
        bit = lambda ev: fd in ev
    print("before=%d" % bit(before))
    print("after=%d" % bit(after))
    print("waited_ms=%d" % ((time.monotonic() - t) * 1000))
    print("data=%s" % os.read(fd, 100).decode().strip())
else:  # pollout
    fd = os.open(box, os.O_WRONLY | os.O_NONBLOCK)
    p = select.poll(); p.register(fd, select.POLLOUT)
    before = p.poll(0)
    try:
        os.write(fd, b"x"); print("write-before=sent")
    except BlockingIOError:
        print("write-before=EAGAIN")
    t = ready(); after = p.poll(60000)
    bit = lambda ev: any(e & select.POLLOUT for _, e in ev)
    print("before=%d" % bit(before))
    print("after=%d" % bit(after))
    print("waited_ms=%d" % ((time.monotonic() - t) * 1000))
    os.write(fd, b"second")
    print("write-after=sent")
)PY";

struct PollCase {
  const char* mode;
  const char* framing;
};

void PrintTo(const PollCase& c, std::ostream* o) { *o << c.mode << "/" << c.framing; }

class StressReadiness : public ::testing::TestWithParam<PollCase> {};

TEST_P(StressReadiness, WakeUpIsDelivered) {
  const PollCase c = GetParam();
  const std::string mode = c.mode;
  mt::Mount m(std::string("capacity=1,framing=") + c.framing);
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string s = scratch(m), marker = s + "/ready";
  write_file(s + "/poller.py", kPoller);
  const bool out = mode == "pollout";
  // pollout waits on a full mailbox; the others on an empty one.
  ASSERT_EQ(m.sh(out ? "printf first > box" : "touch box").status, 0);
  mt::Proc poller("exec python3 " + q(s + "/poller.py") + " box " + q(marker) + " " + mode, m.dir());
  ASSERT_TRUE(mt::wait_until([&] { return access(marker.c_str(), F_OK) == 0 || !poller.running(); }));
  ASSERT_TRUE(mt::wait_sleeping(poller.pid(), mt::Sleep::poll)) << poller.finish(0).err;  // waiting before the event
  // The event: a send from another process, or for pollout a receive.
  if (out) {
    mt::Run r = m.sh("dd bs=100 count=1 status=none if=box");
    EXPECT_EQ(r.out, "first");
  } else {
    const std::string send = std::string(c.framing) == "line" ? "echo hello > box" : "printf hello > box";
    ASSERT_EQ(m.sh(send).status, 0);
  }
  ASSERT_TRUE(poller.exits()) << "the wake-up was not delivered";  // (or the poller's 60 s guard passed)
  mt::Run r = poller.finish(0);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("before=0\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("after=1\n"), std::string::npos) << r.out;
  if (out) {
    EXPECT_NE(r.out.find("write-before=EAGAIN\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("write-after=sent\n"), std::string::npos) << r.out;
    mt::Run got = m.sh("dd bs=100 count=1 status=none if=box");
    EXPECT_EQ(got.out, "second");
  } else {
    if (mode == "pollin") {
      EXPECT_NE(r.out.find("read-before=EAGAIN\n"), std::string::npos) << r.out;
    }
    EXPECT_NE(r.out.find("data=hello\n"), std::string::npos) << r.out;
  }
}

INSTANTIATE_TEST_SUITE_P(Python, StressReadiness,
                         ::testing::Values(PollCase{"pollin", "datagram"}, PollCase{"pollout", "datagram"},
                                           PollCase{"epollin", "datagram"}, PollCase{"selectin", "line"}),
                         [](const ::testing::TestParamInfo<PollCase>& i) {
                           return std::string(i.param.mode) + "_" + i.param.framing;
                         });

}  // namespace

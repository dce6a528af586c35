// SPDX-License-Identifier: MIT
// <mailbox/mqueue.h> and the preload library (libmailbox-mq.so) against a
// real mount: queues across processes, poll on a descriptor, mq_notify's
// one-shot empty-to-non-empty rule, and the preload's routing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mqueue.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <mailbox/mqueue.h>

#include "harness.h"

using mt::child;
using mt::finish;
using mt::Mount;

namespace {

// Points the mq root at the test's mount for this process and its children.
struct Root {
  explicit Root(const Mount& m) { ::setenv("MAILBOXFS_MQ_ROOT", m.dir().c_str(), 1); }
  ~Root() { ::unsetenv("MAILBOXFS_MQ_ROOT"); }
};

mqd_t create(const char* name, long maxmsg, long msgsize, int oflag = O_RDWR) {
  mq_attr a{};
  a.mq_maxmsg = maxmsg;
  a.mq_msgsize = msgsize;
  return mbx_mq_open(name, oflag | O_CREAT | O_EXCL, 0600, &a);
}

// The preload beside this binary (`make build-tests` puts both in out/). A
// sanitizer build directory has none: a sanitized preload cannot load into
// plain programs, so CI's ASan pass runs this suite from the normal build.
std::string preload() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  const std::string self = n > 0 ? std::string(buf, n) : "out/mount_tests";
  return self.substr(0, self.rfind('/') + 1) + "libmailbox-mq.so";
}

TEST(Mq, SendAndReceiveAcrossProcessesWithChecksum) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/work", 4, 64);
  ASSERT_GE(q, 0) << strerror(errno);
  constexpr int kSenders = 4, kN = 5000;
  pid_t pids[kSenders];
  for (int s = 0; s < kSenders; s++)
    pids[s] = child([s] {
      mqd_t w = mbx_mq_open("/work", O_WRONLY);
      if (w < 0) return 10;
      for (int i = 0; i < kN; i++) {
        const std::string msg = std::to_string(s) + ":" + std::to_string(i);
        if (mbx_mq_send(w, msg.data(), msg.size(), 0) != 0) return 11;
      }
      return mbx_mq_close(w) == 0 ? 0 : 12;
    });
  long long sum = 0, want = 0;
  int next[kSenders] = {};
  char buf[64];
  for (int i = 0; i < kSenders * kN; i++) {
    const ssize_t n = mbx_mq_receive(q, buf, sizeof buf, nullptr);
    ASSERT_GT(n, 0) << strerror(errno);
    const std::string msg(buf, static_cast<size_t>(n));
    const int s = std::stoi(msg.substr(0, msg.find(':'))), k = std::stoi(msg.substr(msg.find(':') + 1));
    ASSERT_EQ(k, next[s]++) << "order per sender";
    sum += s * 100000 + k;
  }
  for (int s = 0; s < kSenders; s++)
    for (int i = 0; i < kN; i++) want += s * 100000 + i;
  EXPECT_EQ(sum, want);
  for (pid_t p : pids) EXPECT_EQ(finish(p), 0);
  mq_attr a{};
  ASSERT_EQ(mbx_mq_getattr(q, &a), 0);
  EXPECT_EQ(a.mq_curmsgs, 0);
  EXPECT_EQ(a.mq_maxmsg, 4);
  EXPECT_EQ(a.mq_msgsize, 64);
  EXPECT_EQ(mbx_mq_close(q), 0);
  EXPECT_EQ(mbx_mq_unlink("/work"), 0);
  EXPECT_EQ(mbx_mq_unlink("/work"), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST(Mq, ErrnoRules) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  auto fails = [](long rc, int e) { return rc == -1 && errno == e; };
  EXPECT_TRUE(fails(mbx_mq_open("noslash", O_RDWR), EINVAL));
  EXPECT_TRUE(fails(mbx_mq_open("/a/b", O_RDWR), EACCES));
  EXPECT_TRUE(fails(mbx_mq_open("/", O_RDWR), ENOENT));  // mq_open(3): "/" alone is ENOENT
  EXPECT_TRUE(fails(mbx_mq_open(("/" + std::string(NAME_MAX + 1, 'x')).c_str(), O_RDWR), ENAMETOOLONG));
  EXPECT_TRUE(fails(mbx_mq_open("/missing", O_RDWR), ENOENT));
  EXPECT_TRUE(fails(create("/bad", 0, 64), EINVAL));
  EXPECT_TRUE(fails(create("/bad", 4, -1), EINVAL));
  EXPECT_TRUE(fails(mbx_mq_open("/bad", O_RDWR), ENOENT)) << "nothing was created";
  mqd_t q = create("/q", 2, 16);
  ASSERT_GE(q, 0) << strerror(errno);
  EXPECT_TRUE(fails(create("/q", 2, 16), EEXIST));
  EXPECT_TRUE(fails(mbx_mq_open("/q", O_ACCMODE), EINVAL));
  mqd_t ro = mbx_mq_open("/q", O_RDONLY), wo = mbx_mq_open("/q", O_WRONLY | O_NONBLOCK);
  ASSERT_GE(ro, 0);
  ASSERT_GE(wo, 0);
  char buf[32];
  EXPECT_TRUE(fails(mbx_mq_send(ro, "x", 1, 0), EBADF));
  EXPECT_TRUE(fails(mbx_mq_receive(wo, buf, sizeof buf, nullptr), EBADF));
  EXPECT_TRUE(fails(mbx_mq_send(wo, buf, 17, 0), EMSGSIZE));
  EXPECT_TRUE(fails(mbx_mq_send(wo, "x", 1, 32768), EINVAL));
  EXPECT_TRUE(fails(mbx_mq_receive(q, buf, 15, nullptr), EMSGSIZE)) << "buffer smaller than mq_msgsize";
  timespec bad{0, 1000000000};
  EXPECT_TRUE(fails(mbx_mq_timedsend(q, "x", 1, 0, &bad), EINVAL));
  EXPECT_TRUE(fails(mbx_mq_timedreceive(q, buf, sizeof buf, nullptr, &bad), EINVAL));
  timespec past{1, 0};  // long gone: one try, then ETIMEDOUT
  EXPECT_TRUE(fails(mbx_mq_timedreceive(q, buf, sizeof buf, nullptr, &past), ETIMEDOUT));
  EXPECT_EQ(mbx_mq_send(wo, "a", 1, 0), 0);
  EXPECT_EQ(mbx_mq_send(wo, "b", 1, 0), 0);
  EXPECT_TRUE(fails(mbx_mq_send(wo, "c", 1, 0), EAGAIN)) << "full, O_NONBLOCK";
  EXPECT_TRUE(fails(mbx_mq_timedsend(q, "c", 1, 0, &past), ETIMEDOUT));
  mq_attr a{}, old{};
  ASSERT_EQ(mbx_mq_getattr(q, &a), 0);
  EXPECT_EQ(a.mq_curmsgs, 2);
  EXPECT_EQ(a.mq_flags, 0);
  a.mq_flags = O_NONBLOCK;
  a.mq_maxmsg = 99;  // ignored: only O_NONBLOCK changes
  ASSERT_EQ(mbx_mq_setattr(q, &a, &old), 0);
  EXPECT_EQ(old.mq_flags, 0);
  ASSERT_EQ(mbx_mq_getattr(q, &a), 0);
  EXPECT_EQ(a.mq_flags, O_NONBLOCK);
  EXPECT_EQ(a.mq_maxmsg, 2);
  a.mq_flags = O_NONBLOCK | O_APPEND;
  EXPECT_TRUE(fails(mbx_mq_setattr(q, &a, nullptr), EINVAL));
  EXPECT_EQ(mbx_mq_receive(ro, buf, sizeof buf, nullptr), 1);
  EXPECT_EQ(mbx_mq_receive(q, buf, sizeof buf, nullptr), 1);
  EXPECT_TRUE(fails(mbx_mq_receive(q, buf, sizeof buf, nullptr), EAGAIN)) << "empty, O_NONBLOCK";
  EXPECT_EQ(mbx_mq_close(ro), 0);
  EXPECT_TRUE(fails(mbx_mq_close(ro), EBADF));
  EXPECT_TRUE(fails(mbx_mq_send(ro, "x", 1, 0), EBADF));
  EXPECT_EQ(mbx_mq_close(wo), 0);
  EXPECT_EQ(mbx_mq_close(q), 0);
  EXPECT_TRUE(fails(mbx_mq_unlink("/a/b"), EACCES));
  EXPECT_TRUE(fails(mbx_mq_unlink("nope"), EINVAL));
}

// Highest priority first, oldest first within one, and the priority reported.
TEST(Mq, ReceivesByPriority) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/prio", 8, 16);
  ASSERT_GE(q, 0) << strerror(errno);
  const struct {
    const char* msg;
    unsigned prio;
  } in[] = {{"a", 1}, {"b", 32767}, {"c", 0}, {"d", 5}, {"e", 32767}, {"f", 5}};
  for (auto& i : in) ASSERT_EQ(mbx_mq_send(q, i.msg, 1, i.prio), 0) << strerror(errno);
  std::string got;
  unsigned prios[6];
  char buf[16];
  for (unsigned& p : prios) {
    ASSERT_EQ(mbx_mq_receive(q, buf, sizeof buf, &p), 1);
    got += buf[0];
  }
  EXPECT_EQ(got, "bedfac");
  EXPECT_EQ(prios[0], 32767u);
  EXPECT_EQ(prios[2], 5u);
  EXPECT_EQ(prios[5], 0u);
  mbx_mq_close(q);
}

// A descriptor is a file descriptor of the mailbox: poll wakes when a
// message arrives from another process.
TEST(Mq, PollOnTheDescriptorWakesOnSend) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/p", 4, 32);
  ASSERT_GE(q, 0) << strerror(errno);
  mt::Ready ready;
  pid_t poller = child([&] {
    pollfd p{q, POLLIN, 0};
    ready.say();
    if (::poll(&p, 1, mt::kHang) != 1 || !(p.revents & POLLIN)) return 10;
    char buf[32];
    return mbx_mq_receive(q, buf, sizeof buf, nullptr) == 5 && std::memcmp(buf, "ready", 5) == 0 ? 0 : 11;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(poller, mt::Sleep::poll));
  mqd_t w = mbx_mq_open("/p", O_WRONLY);
  ASSERT_GE(w, 0);
  ASSERT_EQ(mbx_mq_send(w, "ready", 5, 0), 0);
  EXPECT_EQ(finish(poller), 0);
  pollfd p{w, POLLOUT, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1) << "room: writable";
  mbx_mq_close(w);
  mbx_mq_close(q);
}

// SIGEV_SIGNAL fires once, when a send makes the queue non-empty, carrying
// the value and SI_MESGQ; the registration is then gone. While it is armed
// a second process gets EBUSY.
TEST(Mq, NotifyFiresOnceOnEmptyToNonEmpty) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/n", 4, 32);
  ASSERT_GE(q, 0) << strerror(errno);
  sigset_t usr1, old;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);  // taken with sigtimedwait
  sigevent ev{};
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGUSR1;
  ev.sigev_value.sival_int = 4242;
  ASSERT_EQ(mbx_mq_notify(q, &ev), 0) << strerror(errno);
  EXPECT_EQ(mbx_mq_notify(q, &ev), -1);
  EXPECT_EQ(errno, EBUSY) << "one registration per queue";
  pid_t other = child([&] {
    mqd_t o = mbx_mq_open("/n", O_RDWR);
    if (o < 0) return 10;
    if (mbx_mq_notify(o, &ev) == 0) return 11;
    if (errno != EBUSY) return 12;
    return mbx_mq_send(o, "one", 3, 0) == 0 ? 0 : 13;  // fills the empty queue: fires
  });
  EXPECT_EQ(finish(other), 0);
  siginfo_t si{};
  timespec guard{mt::kHang / 1000, 0};
  ASSERT_EQ(sigtimedwait(&usr1, &si, &guard), SIGUSR1);
  EXPECT_EQ(si.si_code, SI_MESGQ);
  EXPECT_EQ(si.si_value.sival_int, 4242);
  EXPECT_EQ(si.si_pid, other);
  // Fired: the registration is gone, so nothing more can come; a new one is allowed.
  ASSERT_EQ(mbx_mq_send(q, "two", 3, 0), 0);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGUSR1)) << "one-shot";
  // Armed on a non-empty queue: a send that does not fill an empty queue does not fire.
  ASSERT_EQ(mbx_mq_notify(q, &ev), 0) << strerror(errno);
  ASSERT_EQ(mbx_mq_send(q, "three", 5, 0), 0);
  EXPECT_EQ(mbx_mq_notify(q, &ev), -1);
  EXPECT_EQ(errno, EBUSY) << "still armed";
  ASSERT_EQ(mbx_mq_notify(q, nullptr), 0);
  ASSERT_EQ(mbx_mq_notify(q, &ev), 0) << "unregistered by NULL";
  EXPECT_EQ(mbx_mq_close(q), 0);  // removes the registration
  mqd_t again = mbx_mq_open("/n", O_RDWR);
  ASSERT_GE(again, 0);
  EXPECT_EQ(mbx_mq_notify(again, &ev), 0) << "mq_close removed the registration";
  mbx_mq_close(again);
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGUSR1));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// A receiver blocked in mq_receive takes the message: no notification, and
// the registration stays armed.
TEST(Mq, NotifyNotFiredWhileAReceiverIsBlocked) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/b", 4, 32);
  ASSERT_GE(q, 0) << strerror(errno);
  mt::Ready ready;
  pid_t receiver = child([&] {
    mqd_t o = mbx_mq_open("/b", O_RDONLY);
    if (o < 0) return 10;
    char buf[32];
    ready.say();
    return mbx_mq_receive(o, buf, sizeof buf, nullptr) == 3 ? 0 : 11;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(receiver, mt::Sleep::futex));
  sigevent ev{};
  ev.sigev_notify = SIGEV_NONE;
  ASSERT_EQ(mbx_mq_notify(q, &ev), 0);
  ASSERT_EQ(mbx_mq_send(q, "abc", 3, 0), 0);
  EXPECT_EQ(finish(receiver), 0);
  EXPECT_EQ(mbx_mq_notify(q, &ev), -1);
  EXPECT_EQ(errno, EBUSY) << "not fired: a receiver was waiting";
  mbx_mq_close(q);
}

// SIGEV_THREAD runs the function in a new thread, also for a send by the
// daemon (a shell `echo` into the mailbox file).
int notify_pipe[2];
void on_notify(sigval v) {
  const char c = static_cast<char>(v.sival_int);
  (void)!::write(notify_pipe[1], &c, 1);
}

TEST(Mq, NotifyThreadOnAShellSend) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/t", 4, 32);
  ASSERT_GE(q, 0) << strerror(errno);
  ASSERT_EQ(::pipe(notify_pipe), 0);
  sigevent ev{};
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = on_notify;
  ev.sigev_value.sival_int = 'Z';
  ASSERT_EQ(mbx_mq_notify(q, &ev), 0);
  ASSERT_EQ(m.sh("printf hello > t").status, 0);
  pollfd p{notify_pipe[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, mt::kHang), 1);
  char c = 0;
  ASSERT_EQ(::read(notify_pipe[0], &c, 1), 1);
  EXPECT_EQ(c, 'Z');
  char buf[32];
  EXPECT_EQ(mbx_mq_receive(q, buf, sizeof buf, nullptr), 5);
  mbx_mq_close(q);
  ::close(notify_pipe[0]);
  ::close(notify_pipe[1]);
}

// A signal handler ends a blocked mq_receive with EINTR.
void on_usr2(int) {}

TEST(Mq, SignalInterruptsABlockedReceive) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/i", 4, 32);
  ASSERT_GE(q, 0) << strerror(errno);
  mt::Ready ready;
  pid_t receiver = child([&] {
    struct sigaction sa {};
    sa.sa_handler = on_usr2;  // no SA_RESTART
    sigaction(SIGUSR2, &sa, nullptr);
    char buf[32];
    ready.say();
    return mbx_mq_receive(q, buf, sizeof buf, nullptr) == -1 && errno == EINTR ? 0 : 10;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(mt::wait_sleeping(receiver, mt::Sleep::futex));
  ::kill(receiver, SIGUSR2);
  EXPECT_EQ(finish(receiver), 0);
  mbx_mq_close(q);
}

// Resumes a daemon stopped with SIGSTOP, whatever the test's outcome.
// The daemon stopped for a scope: `ok` once every thread of it has stopped
// (a request sent before then may still be answered).
struct Stopped {
  explicit Stopped(pid_t pid) : pid(pid) { ok = ::kill(pid, SIGSTOP) == 0 && mt::wait_stopped(pid); }
  ~Stopped() { ::kill(pid, SIGCONT); }
  pid_t pid;
  bool ok;
};

// Another user's mq call goes through the file, where every request sleeps
// until the daemon answers. A signal that comes while the call sleeps in one
// that does not wait for the queue ends the call with EINTR, as it ends the
// kernel's. Here the daemon is stopped, so the call's first request waits
// for its answer: with `cold` (the child's first call on the queue) the
// opening of the call's mailbox, which the daemon answers whatever the
// interrupt (before, the handler ran as it returned and the send then slept
// on: the cold test hangs on that code); else the priority ioctl, which the
// daemon may end with EINTR itself, so the warm test checks that the signal
// held back meanwhile still ends the wait after it.
void signal_while_a_request_awaits_its_answer(bool cold) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  Mount m("allow_other,root_mode=1777");
  ASSERT_TRUE(m.ok()) << m.daemon_stderr();
  const std::string tmp = m.dir().substr(0, m.dir().rfind('/'));
  ASSERT_EQ(::chmod(tmp.c_str(), 0755), 0);  // the mount's parent, for the other user
  Root r(m);
  mq_attr a{};
  a.mq_maxmsg = 1;
  a.mq_msgsize = 16;
  const mode_t mask = ::umask(0);  // the queue's mode is taken through the umask, as the kernel's
  mqd_t q = mbx_mq_open("/stalled", O_RDWR | O_CREAT | O_EXCL, 0666, &a);
  ::umask(mask);
  ASSERT_GE(q, 0) << strerror(errno);
  ASSERT_EQ(mbx_mq_send(q, "full", 4, 0), 0);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  mt::Ready opened;
  pid_t sender = child([&] {
    ::close(go[1]);
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 20;
    struct sigaction sa {};
    sa.sa_handler = on_usr2;  // no SA_RESTART
    sigaction(SIGUSR2, &sa, nullptr);
    mqd_t w = mbx_mq_open("/stalled", O_WRONLY);
    mq_attr seen{};
    if (w < 0) return 100 + errno;
    if (!cold && mbx_mq_getattr(w, &seen) != 0) return 21;  // a warm call opens the mailbox
    opened.say();
    char c;
    if (::read(go[0], &c, 1) != 1) return 22;
    if (mbx_mq_send(w, "x", 1, 5) == 0)
      return 11;  // first a priority ioctl, which the daemon answers whatever a signal
    return errno == EINTR ? 0 : 12;
  });
  ::close(go[0]);
  ASSERT_TRUE(opened.wait()) << "the child's mq_open failed: " << finish(sender);
  {
    Stopped daemon(m.daemon_pid());
    ASSERT_TRUE(daemon.ok);
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    // Any request, opens included (mt::wait_sleeping skips those): with the
    // daemon stopped, none returns.
    const std::string wchan = "/proc/" + std::to_string(sender) + "/wchan";
    ASSERT_TRUE(mt::wait_until([&] {
      std::ifstream f(wchan);
      std::string w;
      f >> w;
      return w.find("request_wait_answer") != std::string::npos || w.find("fuse") != std::string::npos;
    })) << "the send never reached the daemon";
    ::kill(sender, SIGUSR2);
  }
  ::close(go[1]);
  EXPECT_EQ(finish(sender), 0) << "11: sent, 12: another errno, -1: slept on after the signal";
  mq_attr after{};
  ASSERT_EQ(mbx_mq_getattr(q, &after), 0);
  EXPECT_EQ(after.mq_curmsgs, 1) << "the interrupted send sent nothing";
  mbx_mq_close(q);
  mbx_mq_unlink("/stalled");
}

TEST(Mq, ASignalWhileARequestAwaitsTheDaemonEndsACallThroughTheFile) {
  signal_while_a_request_awaits_its_answer(false);
}
TEST(Mq, ASignalWhileTheFirstCallOpensItsMailboxEndsIt) { signal_while_a_request_awaits_its_answer(true); }

// The shared-memory segment of a queue's mailbox, through its descriptor.
std::string segment_of(mqd_t q) {
  char buf[4096];
  const ssize_t n = ::fgetxattr(q, "user.mailbox.segment", buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// mq_unlink: the name goes at once; the queue (its segment) stays while a
// descriptor is open anywhere, a queue made again under the name is another
// one with a segment of its own, and the last close, here a holder killed,
// deletes the old queue. `rm` still deletes a queue at once.
TEST(Mq, UnlinkedQueueLastsUntilItsLastDescriptorCloses) {
  Mount m;
  ASSERT_TRUE(m.ok());
  Root r(m);
  mqd_t q = create("/old", 4, 64);
  ASSERT_GE(q, 0) << strerror(errno);
  const std::string seg = segment_of(q);
  ASSERT_TRUE(exists(seg)) << seg;
  ASSERT_EQ(mbx_mq_send(q, "kept", 4, 0), 0);
  mt::Ready ready;
  const pid_t holder = child([&] {  // holds the inherited descriptor until killed
    ready.say();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_EQ(mbx_mq_unlink("/old"), 0) << strerror(errno);
  EXPECT_EQ(m.sh("ls -A").out, "");
  EXPECT_EQ(mbx_mq_open("/old", O_RDWR), -1);
  EXPECT_EQ(errno, ENOENT);
  mqd_t again = create("/old", 2, 32);
  ASSERT_GE(again, 0) << strerror(errno);
  const std::string seg2 = segment_of(again);
  EXPECT_NE(seg2, seg);
  EXPECT_TRUE(exists(seg));
  char buf[64];
  EXPECT_EQ(mbx_mq_receive(q, buf, sizeof buf, nullptr), 4) << strerror(errno);
  EXPECT_EQ(mbx_mq_close(q), 0);
  EXPECT_TRUE(exists(seg)) << "the holder still has it open";
  ::kill(holder, SIGKILL);
  EXPECT_EQ(finish(holder), 128 + SIGKILL);
  // The daemon hears of the last close after the holder is gone (an
  // asynchronous release): waited for, with the hang guard only.
  EXPECT_TRUE(mt::wait_until([&] { return !exists(seg); })) << seg << " left behind";
  EXPECT_EQ(mbx_mq_send(again, "new", 3, 0), 0);
  EXPECT_EQ(mbx_mq_receive(again, buf, sizeof buf, nullptr), 3);
  // rm is not mq_unlink: it deletes the queue under its open descriptor.
  ASSERT_EQ(m.sh("rm old").status, 0);
  EXPECT_FALSE(exists(seg2));
  EXPECT_EQ(mbx_mq_send(again, "x", 1, 0), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_EQ(mbx_mq_close(again), 0);
  EXPECT_EQ(m.sh("ls -A").out, "");
}

// The preload: an unmodified program's mq_* (here Python's ctypes calls into
// libc's names) go to the mount while the root is a mailboxfs, where `ls`
// and `cat` see the queue; with a root that is not one, to the kernel.
TEST(MqPreload, RoutesByRootAndShowsQueuesAsFiles) {
  Mount m;
  ASSERT_TRUE(m.ok());
  const std::string py =
      "import ctypes, os, sys\n"
      "c = ctypes.CDLL(None, use_errno=True)\n"
      "c.mq_open.restype = ctypes.c_int\n"
      "name = sys.argv[1].encode()\n"
      "q = c.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)\n"
      "assert q >= 0, os.strerror(ctypes.get_errno())\n"
      "assert c.mq_send(q, b'hello', 5, 1) == 0, os.strerror(ctypes.get_errno())\n"
      "os.close(q)\n"                                                        // close(2) is mq_close under the preload
      "assert c.mq_send(q, b'x', 1, 0) == -1 and ctypes.get_errno() == 9\n"  // EBADF
      "print('ok')\n";
  if (::access(preload().c_str(), R_OK) != 0) GTEST_SKIP() << preload() << " is not in this build directory";
  const std::string env = "LD_PRELOAD=" + mt::q(preload()) + " ";
  auto on = mt::sh(env + "MAILBOXFS_MQ_ROOT=" + mt::q(m.dir()) + " python3 -c " + mt::q(py) + " /viafs");
  ASSERT_EQ(on.status, 0) << on.err;
  EXPECT_EQ(on.out, "ok\n");
  EXPECT_EQ(m.sh("ls viafs && cat viafs").out, "viafs\nhello");
  // Not a mailboxfs root: the kernel's queue, which this (unpreloaded) process sees.
  const std::string kname = "/mbxtest-preload-" + std::to_string(::getpid());
  mq_unlink(kname.c_str());
  auto off = mt::sh(env + "MAILBOXFS_MQ_ROOT=/tmp python3 -c " + mt::q(py) + " " + kname);
  ASSERT_EQ(off.status, 0) << off.err;
  mqd_t k = mq_open(kname.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(k, 0) << strerror(errno);
  char buf[8192];
  unsigned prio = 0;
  EXPECT_EQ(mq_receive(k, buf, sizeof buf, &prio), 5);
  EXPECT_EQ(prio, 1u);
  mq_close(k);
  EXPECT_EQ(mq_unlink(kname.c_str()), 0);
}

}  // namespace

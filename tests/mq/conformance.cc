// SPDX-License-Identifier: MIT
// POSIX message queue conformance: one test per rule of mq_open, mq_close,
// mq_unlink, mq_send, mq_receive, mq_getattr, mq_setattr and mq_notify,
// written from the POSIX text and Linux's man pages (mq_overview(7) and the
// function pages). It is a plain <mqueue.h> program linked with -lrt and
// nothing of mailboxfs, so the same binary runs against the kernel's queues
// (which proves the tests right) and under
//   LD_PRELOAD=libmailbox-mq.so MAILBOXFS_MQ_ROOT=<a mailboxfs mount>
// (which checks the preload). A test whose rule is Linux's rather than
// POSIX's says so; the preload promises Linux's behaviour, so those run too.
//
// No timing: a call is "blocked" once the child has said it is about to make
// it and /proc shows that thread asleep in one wait (state S, no context
// switch between two looks); every wait has a hang guard only.
// Exit status 77: this system has no message queues (mq_open fails at all).
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// Linux's mqd_t is a file descriptor; the poll/select/epoll and exec tests rely on it.
static_assert(std::is_same_v<mqd_t, int>);

constexpr int kHangMs = 20000;  // only a hang reaches it
constexpr mqd_t kBad = static_cast<mqd_t>(-1);
const int kNotifySig = SIGRTMIN + 1;  // real-time: queued, so a second delivery is not merged away

long long now_ms() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

void nap() {  // the pause between two looks of a poll loop, never an ordering
  timespec t{0, 1000000};
  nanosleep(&t, nullptr);
}

std::string unique_name() {
  static int n = 0;
  return "/mqc." + std::to_string(getpid()) + "." + std::to_string(++n);
}

mq_attr make_attr(long maxmsg, long msgsize) {
  mq_attr a{};
  a.mq_maxmsg = maxmsg;
  a.mq_msgsize = msgsize;
  return a;
}

long prio_max() { return sysconf(_SC_MQ_PRIO_MAX); }

// State letter and voluntary context switches of thread `tid` of `pid`.
bool look(pid_t pid, pid_t tid, char* state, long* switches) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/status");
  if (!f) return false;
  std::string line;
  *state = 0;
  *switches = -1;
  while (std::getline(f, line)) {
    if (line.rfind("State:", 0) == 0) {
      size_t i = line.find_first_not_of(" \t", 6);
      if (i != std::string::npos) *state = line[i];
    } else if (line.rfind("voluntary_ctxt_switches:", 0) == 0) {
      *switches = std::atol(line.c_str() + 24);
    }
  }
  return *state != 0 && *switches >= 0;
}

// True once thread `tid` (default: the main thread) of `pid` sleeps in one
// wait: two looks in a row find it in state S with no switch in between.
// False if it is gone (or a zombie) or at the hang guard.
bool wait_asleep(pid_t pid, pid_t tid = 0) {
  if (tid == 0) tid = pid;
  long long end = now_ms() + kHangMs;
  char prev_state = 0;
  long prev_sw = -1;
  while (now_ms() < end) {
    char st;
    long sw;
    if (!look(pid, tid, &st, &sw) || st == 'Z' || st == 'X') return false;
    if (st == 'S' && prev_state == 'S' && sw == prev_sw) return true;
    prev_state = st;
    prev_sw = sw;
    nap();
  }
  return false;
}

// Runs `fn` in a forked child; its return value is the child's exit status.
template <class Fn>
pid_t spawn(Fn fn) {
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) _exit(fn());
  return p;
}

// The exit status of child `p` (128 + signal if killed); at the hang guard
// the child is killed and -1 returned.
int reap(pid_t p) {
  long long end = now_ms() + kHangMs;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(p, &st, WNOHANG);
    if (r == p) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0) return -2;
    if (now_ms() >= end) break;
    nap();
  }
  // Killed, then reaped if it goes: a child stuck in an uninterruptible
  // wait (a FUSE request the daemon never answers) must not hang the suite.
  kill(p, SIGKILL);
  for (end = now_ms() + kHangMs; now_ms() < end && waitpid(p, &st, WNOHANG) == 0;) nap();
  return -1;
}

// A readiness byte from a forked child, said just before the call that blocks.
class Ready {
 public:
  Ready() {
    if (pipe(fd_) != 0) fd_[0] = fd_[1] = -1;
  }
  ~Ready() {
    close(fd_[0]);
    close(fd_[1]);
  }
  int writer() const { return fd_[1]; }
  void say() {
    char c = 1;
    (void)!write(fd_[1], &c, 1);
  }
  bool wait() {
    pollfd p{fd_[0], POLLIN, 0};
    if (poll(&p, 1, kHangMs) != 1) return false;
    char c;
    return read(fd_[0], &c, 1) == 1;
  }

 private:
  int fd_[2];
};

// Blocks `sig` in this thread for the scope, so that a notification stays
// pending until taken; what is left is drained at the end.
class SigBlock {
 public:
  explicit SigBlock(int sig) : sig_(sig) {
    sigemptyset(&set_);
    sigaddset(&set_, sig);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~SigBlock() {
    timespec zero{0, 0};
    while (sigtimedwait(&set_, nullptr, &zero) == sig_) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  // Waits for the signal up to the hang guard.
  bool take(siginfo_t* si) {
    timespec t{kHangMs / 1000, 0};
    return sigtimedwait(&set_, si, &t) == sig_;
  }
  // True if the signal is pending now (it is taken).
  bool pending() {
    timespec zero{0, 0};
    siginfo_t si;
    return sigtimedwait(&set_, &si, &zero) == sig_;
  }

 private:
  int sig_;
  sigset_t set_, old_;
};

sigevent signal_event(int sig, int value) {
  sigevent ev{};
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = sig;
  ev.sigev_value.sival_int = value;
  return ev;
}

// Drops root for a child: gid and uid become nobody's (65534). No-op when not root.
bool drop_root() {
  if (geteuid() != 0) return true;
  return setgroups(0, nullptr) == 0 && setgid(65534) == 0 && setuid(65534) == 0;
}

void no_op_handler(int) {}

// Installs `no_op_handler` for `sig` without SA_RESTART: a blocked call is interrupted.
void catch_without_restart(int sig) {
  struct sigaction sa {};
  sa.sa_handler = no_op_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(sig, &sa, nullptr);
}

// One queue name per test (more on request), unlinked at the end, and every
// descriptor opened through open() closed.
class MqTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (mqd_t d : open_) mq_close(d);
    for (auto& n : names_) mq_unlink(n.c_str());
  }
  std::string fresh() {
    names_.push_back(unique_name());
    return names_.back();
  }
  mqd_t open(const std::string& name, int oflag, mode_t mode = 0600, const mq_attr* a = nullptr) {
    mqd_t d = (oflag & O_CREAT) ? mq_open(name.c_str(), oflag, mode, a) : mq_open(name.c_str(), oflag);
    if (d != kBad) open_.push_back(d);
    return d;
  }
  // A new queue `name_` of `maxmsg` messages of up to `msgsize` bytes, opened O_RDWR | extra.
  mqd_t create(long maxmsg = 4, long msgsize = 64, int extra = 0) {
    name_ = fresh();
    mq_attr a = make_attr(maxmsg, msgsize);
    return open(name_, O_CREAT | O_EXCL | O_RDWR | extra, 0600, &a);
  }
  // The test closed `d` itself: TearDown must not close the number again.
  void forget(mqd_t d) { open_.erase(std::remove(open_.begin(), open_.end(), d), open_.end()); }
  long curmsgs(mqd_t d) {
    mq_attr a{};
    return mq_getattr(d, &a) == 0 ? a.mq_curmsgs : -1;
  }
  // Receives one message into a buffer of `size` bytes ("<error>" on failure).
  std::string recv(mqd_t d, unsigned* prio = nullptr, size_t size = 64) {
    std::vector<char> buf(size);
    ssize_t n = mq_receive(d, buf.data(), size, prio);
    return n < 0 ? "<" + std::string(strerror(errno)) + ">" : std::string(buf.data(), n);
  }
  // Another process's mq_notify(registration) on queue `name_`: its result, or errno.
  int notify_from_child(const sigevent* ev) {
    pid_t p = spawn([&] {
      mqd_t d = mq_open(name_.c_str(), O_RDONLY);
      if (d == kBad) return 100;
      return mq_notify(d, ev) == 0 ? 0 : errno;
    });
    return reap(p);
  }
  std::string name_;
  std::vector<mqd_t> open_;
  std::vector<std::string> names_;
};

class MqOpen : public MqTest {};
class MqClose : public MqTest {};
class MqUnlink : public MqTest {};
class MqSend : public MqTest {};
class MqReceive : public MqTest {};
class MqGetattr : public MqTest {};
class MqSetattr : public MqTest {};
class MqNotify : public MqTest {};
class MqPoll : public MqTest {};
class MqFork : public MqTest {};
class MqErrno : public MqTest {};

// ---- mq_open ---------------------------------------------------------------

TEST_F(MqOpen, CreateUsesTheGivenAttributes) {
  mqd_t d = create(3, 100);
  ASSERT_NE(d, kBad) << strerror(errno);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_maxmsg, 3);
  EXPECT_EQ(a.mq_msgsize, 100);
  EXPECT_EQ(a.mq_curmsgs, 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, 0);
}

TEST_F(MqOpen, NonblockShowsInMqFlags) {
  mqd_t d = create(3, 100, O_NONBLOCK);
  ASSERT_NE(d, kBad) << strerror(errno);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, O_NONBLOCK);
}

// POSIX: a null attr gives implementation-defined defaults (Linux: msg_default, msgsize_default).
TEST_F(MqOpen, NullAttrGivesPositiveDefaults) {
  name_ = fresh();
  mqd_t d = open(name_, O_CREAT | O_EXCL | O_RDWR, 0600, nullptr);
  ASSERT_NE(d, kBad) << strerror(errno);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_GT(a.mq_maxmsg, 0);
  EXPECT_GT(a.mq_msgsize, 0);
  EXPECT_EQ(a.mq_curmsgs, 0);
}

TEST_F(MqOpen, CreatExclOnAnExistingQueueIsEEXIST) {
  ASSERT_NE(create(), kBad) << strerror(errno);
  mq_attr a = make_attr(4, 64);
  EXPECT_EQ(open(name_, O_CREAT | O_EXCL | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, EEXIST);
}

TEST_F(MqOpen, CreatOnAnExistingQueueOpensItAndIgnoresAttr) {
  mqd_t d = create(3, 100);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  mq_attr other = make_attr(5, 50);
  mqd_t e = open(name_, O_CREAT | O_RDWR, 0600, &other);
  ASSERT_NE(e, kBad) << strerror(errno);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(e, &a), 0);
  EXPECT_EQ(a.mq_maxmsg, 3);
  EXPECT_EQ(a.mq_msgsize, 100);
  EXPECT_EQ(a.mq_curmsgs, 1);  // the same queue
  EXPECT_EQ(recv(e, nullptr, 100), "x");
}

// POSIX: without O_CREAT the mode and attr arguments are not used (even nonsense ones).
TEST_F(MqOpen, AttrIsIgnoredWithoutCreat) {
  ASSERT_NE(create(3, 100), kBad) << strerror(errno);
  mq_attr bogus = make_attr(-1, 0);
  mqd_t e = mq_open(name_.c_str(), O_RDWR, 0600, &bogus);
  ASSERT_NE(e, kBad) << strerror(errno);
  open_.push_back(e);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(e, &a), 0);
  EXPECT_EQ(a.mq_maxmsg, 3);
  EXPECT_EQ(a.mq_msgsize, 100);
}

TEST_F(MqOpen, MissingQueueWithoutCreatIsENOENT) {
  name_ = fresh();
  EXPECT_EQ(open(name_, O_RDWR), kBad);
  EXPECT_EQ(errno, ENOENT);
}

// Linux (glibc): a name must start with '/' (POSIX leaves other names implementation-defined).
TEST_F(MqOpen, NameWithoutLeadingSlashIsEINVAL) {
  mq_attr a = make_attr(4, 64);
  std::string n = fresh().substr(1);
  EXPECT_EQ(open(n, O_CREAT | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, EINVAL);
}

// Linux, mq_open(3): "name was just "/" followed by no other characters" is ENOENT.
TEST_F(MqOpen, SlashAloneIsENOENT) {
  mq_attr a = make_attr(4, 64);
  EXPECT_EQ(open("/", O_CREAT | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, ENOENT);
}

// Linux, mq_open(3): "The name contained more than one slash" is EACCES.
TEST_F(MqOpen, SecondSlashIsEACCES) {
  mq_attr a = make_attr(4, 64);
  std::string n = fresh() + "/sub";
  EXPECT_EQ(open(n, O_CREAT | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, EACCES);
}

// Linux: "." and ".." name no queue (the lookup refuses them, EACCES).
TEST_F(MqOpen, DotAndDotDotAreEACCES) {
  mq_attr a = make_attr(4, 64);
  for (const char* n : {"/.", "/.."}) {
    EXPECT_EQ(open(n, O_CREAT | O_RDWR, 0600, &a), kBad) << n;
    EXPECT_EQ(errno, EACCES) << n;
  }
}

// Linux: the characters are checked before the length, so a further slash
// in a name over NAME_MAX is still EACCES.
TEST_F(MqOpen, SecondSlashInANameOverNameMaxIsEACCES) {
  mq_attr a = make_attr(4, 64);
  std::string n = fresh() + "/" + std::string(NAME_MAX, 'n');
  EXPECT_EQ(open(n, O_CREAT | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, EACCES);
}

// Linux: a name of PATH_MAX bytes or more after the slash is refused whole
// (the kernel will not copy it), before its characters are looked at.
TEST_F(MqOpen, NameOfPathMaxBytesIsENAMETOOLONGEvenWithASlash) {
  mq_attr a = make_attr(4, 64);
  std::string n = fresh() + "/" + std::string(PATH_MAX, 'n');
  EXPECT_EQ(open(n, O_CREAT | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, ENAMETOOLONG);
}

// POSIX: the mode is applied to the new queue, whatever it allows its
// owner; a queue its creator may not even write is still created (and
// opened for writing by that call, as open(2) does with O_CREAT).
TEST_F(MqOpen, CreateWithAModeDenyingTheOwnerSucceeds) {
  name_ = fresh();
  pid_t p = spawn([&] {
    if (!drop_root()) return 100;
    mq_attr a = make_attr(3, 48);
    mqd_t d = mq_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0, &a);
    if (d == kBad) return 1;
    int r = 0;
    mq_attr got{};
    if (mq_getattr(d, &got) != 0 || got.mq_maxmsg != 3 || got.mq_msgsize != 48) r |= 2;
    if (mq_send(d, "x", 1, 0) != 0) r |= 4;
    if (mq_open(name_.c_str(), O_RDONLY) != kBad || errno != EACCES) r |= 8;
    char buf[48];
    if (mq_receive(d, buf, sizeof buf, nullptr) != 1 || buf[0] != 'x') r |= 32;
    if (mq_unlink(name_.c_str()) != 0) r |= 16;
    return r;
  });
  EXPECT_EQ(reap(p), 0) << "1: create failed; 2: attributes; 4: send; 8: reopen not EACCES; 16: unlink; 32: receive";
}

TEST_F(MqOpen, NameLongerThanNameMaxIsENAMETOOLONG) {
  mq_attr a = make_attr(4, 64);
  std::string n = "/" + std::string(NAME_MAX + 1, 'n');
  EXPECT_EQ(open(n, O_CREAT | O_RDWR, 0600, &a), kBad);
  EXPECT_EQ(errno, ENAMETOOLONG);
}

TEST_F(MqOpen, NameOfNameMaxCharactersIsAllowed) {
  mq_attr a = make_attr(4, 64);
  std::string base = fresh();
  name_ = base + std::string(NAME_MAX + 1 - base.size(), 'n');  // NAME_MAX after the slash
  names_.push_back(name_);
  mqd_t d = open(name_, O_CREAT | O_EXCL | O_RDWR, 0600, &a);
  ASSERT_NE(d, kBad) << strerror(errno);
  EXPECT_EQ(mq_send(d, "x", 1, 0), 0);
}

TEST_F(MqOpen, NonPositiveMaxmsgIsEINVAL) {
  name_ = fresh();
  for (long v : {0L, -1L}) {
    mq_attr a = make_attr(v, 64);
    EXPECT_EQ(open(name_, O_CREAT | O_RDWR, 0600, &a), kBad) << v;
    EXPECT_EQ(errno, EINVAL) << v;
  }
  EXPECT_EQ(open(name_, O_RDWR), kBad) << "nothing was created";
}

TEST_F(MqOpen, NonPositiveMsgsizeIsEINVAL) {
  name_ = fresh();
  for (long v : {0L, -1L}) {
    mq_attr a = make_attr(4, v);
    EXPECT_EQ(open(name_, O_CREAT | O_RDWR, 0600, &a), kBad) << v;
    EXPECT_EQ(errno, EINVAL) << v;
  }
  EXPECT_EQ(open(name_, O_RDWR), kBad) << "nothing was created";
}

// POSIX: EACCES when the queue exists and its mode denies the caller the
// requested access. A queue of root's, mode 0600, opened by nobody.
TEST_F(MqOpen, AnotherUsersPrivateQueueIsEACCES) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  ASSERT_NE(create(), kBad) << strerror(errno);
  pid_t p = spawn([&] {
    if (!drop_root()) return 100;
    int r = 0;
    for (int mode : {O_RDONLY, O_WRONLY, O_RDWR}) {
      mqd_t d = mq_open(name_.c_str(), mode);
      if (d != kBad || errno != EACCES) r |= 1 << mode;
    }
    return r;
  });
  EXPECT_EQ(reap(p), 0) << "bit n set: open with access mode n was not EACCES";
}

// POSIX: the open mode must be allowed by the queue's mode for the caller,
// even for its owner: a queue of mode 0200 opens for writing only.
TEST_F(MqOpen, AccessModeTheQueueModeDeniesIsEACCES) {
  name_ = fresh();
  pid_t p = spawn([&] {
    if (!drop_root()) return 100;
    mq_attr a = make_attr(4, 64);
    mqd_t w = mq_open(name_.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0200, &a);
    if (w == kBad) return 101;
    int r = 0;
    mqd_t d = mq_open(name_.c_str(), O_RDONLY);
    if (d != kBad || errno != EACCES) r |= 1;
    d = mq_open(name_.c_str(), O_RDWR);
    if (d != kBad || errno != EACCES) r |= 2;
    d = mq_open(name_.c_str(), O_WRONLY);
    if (d == kBad) r |= 4;
    mq_unlink(name_.c_str());
    return r;
  });
  EXPECT_EQ(reap(p), 0) << "1: O_RDONLY, 2: O_RDWR not EACCES; 4: O_WRONLY failed; 100+: setup";
}

// ---- mq_close --------------------------------------------------------------

TEST_F(MqClose, ClosedDescriptorIsEBADF) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_close(d), 0);
  forget(d);
  EXPECT_EQ(mq_close(d), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_EQ(mq_send(d, "x", 1, 0), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST_F(MqClose, InvalidDescriptorIsEBADF) {
  EXPECT_EQ(mq_close(kBad), -1);
  EXPECT_EQ(errno, EBADF);
}

// POSIX: a queue and its messages last until it is unlinked, not until the last close.
TEST_F(MqClose, MessagesOutliveTheLastClose) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "kept", 4, 3), 0);
  ASSERT_EQ(mq_close(d), 0);
  forget(d);
  mqd_t e = open(name_, O_RDONLY);
  ASSERT_NE(e, kBad) << strerror(errno);
  unsigned prio = 0;
  EXPECT_EQ(recv(e, &prio), "kept");
  EXPECT_EQ(prio, 3u);
}

// POSIX: closing the descriptor that registered a notification removes the
// registration, and another process may then register.
TEST_F(MqClose, CloseRemovesTheNotificationRegistration) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(notify_from_child(&ev), EBUSY);
  ASSERT_EQ(mq_close(d), 0);
  forget(d);
  EXPECT_EQ(notify_from_child(&ev), 0);
}

// ---- mq_unlink -------------------------------------------------------------

TEST_F(MqUnlink, NameIsGoneAtOnce) {
  ASSERT_NE(create(), kBad) << strerror(errno);
  ASSERT_EQ(mq_unlink(name_.c_str()), 0);
  EXPECT_EQ(open(name_, O_RDWR), kBad);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(mq_unlink(name_.c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(MqUnlink, OpenDescriptorsKeepWorkingUntilClosed) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "before", 6, 1), 0);
  ASSERT_EQ(mq_unlink(name_.c_str()), 0);
  EXPECT_EQ(mq_send(d, "after", 5, 2), 0);
  EXPECT_EQ(curmsgs(d), 2);
  EXPECT_EQ(recv(d), "after");
  EXPECT_EQ(recv(d), "before");
  EXPECT_EQ(mq_close(d), 0);
  forget(d);
}

TEST_F(MqUnlink, RecreatedNameIsANewQueue) {
  mqd_t old = create(4, 64);
  ASSERT_NE(old, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(old, "old", 3, 0), 0);
  ASSERT_EQ(mq_unlink(name_.c_str()), 0);
  mq_attr a = make_attr(2, 32);
  mqd_t d = open(name_, O_CREAT | O_EXCL | O_RDWR, 0600, &a);
  ASSERT_NE(d, kBad) << strerror(errno);
  mq_attr got{};
  ASSERT_EQ(mq_getattr(d, &got), 0);
  EXPECT_EQ(got.mq_maxmsg, 2);
  EXPECT_EQ(got.mq_msgsize, 32);
  EXPECT_EQ(got.mq_curmsgs, 0);
  ASSERT_EQ(mq_send(d, "new", 3, 0), 0);
  EXPECT_EQ(recv(old), "old");
  EXPECT_EQ(curmsgs(old), 0);
  EXPECT_EQ(recv(d, nullptr, 32), "new");
}

// The old queue lives on for a descriptor another process opened before the unlink.
TEST_F(MqUnlink, AnotherProcessKeepsUsingTheUnlinkedQueue) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  Ready opened;
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t p = spawn([&] {
    close(go[1]);
    mqd_t w = mq_open(name_.c_str(), O_RDWR);
    if (w == kBad) return 100;
    opened.say();
    char c;
    if (read(go[0], &c, 1) != 1) return 101;
    int r = 0;
    if (mq_send(w, "child", 5, 5) != 0) r |= 1;
    mq_attr a{};
    if (mq_getattr(w, &a) != 0 || a.mq_curmsgs != 2) r |= 2;
    char buf[64];
    unsigned prio = 0;
    if (mq_receive(w, buf, sizeof buf, &prio) != 5 || prio != 5) r |= 4;
    if (mq_send(w, "child", 5, 5) != 0) r |= 8;
    if (mq_close(w) != 0) r |= 16;
    return r;
  });
  close(go[0]);
  ASSERT_TRUE(opened.wait());
  ASSERT_EQ(mq_send(d, "parent", 6, 1), 0);
  ASSERT_EQ(mq_unlink(name_.c_str()), 0);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  close(go[1]);
  EXPECT_EQ(reap(p), 0) << "1: send, 2: getattr, 4: receive, 8: send, 16: close (100+: setup)";
  unsigned prio = 0;
  EXPECT_EQ(recv(d, &prio), "child");
  EXPECT_EQ(prio, 5u);
  EXPECT_EQ(recv(d), "parent");
}

// A receive blocked on the queue when it is unlinked goes on waiting, and
// gets the next message sent to the old queue.
TEST_F(MqUnlink, BlockedReceiverGetsTheNextSendToTheUnlinkedQueue) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  Ready ready;
  pid_t p = spawn([&] {
    char buf[64];
    ready.say();
    ssize_t n = mq_receive(d, buf, sizeof buf, nullptr);
    return n == 4 && memcmp(buf, "late", 4) == 0 ? 0 : 1;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p));
  ASSERT_EQ(mq_unlink(name_.c_str()), 0);
  ASSERT_EQ(mq_send(d, "late", 4, 0), 0);
  EXPECT_EQ(reap(p), 0) << "the receiver did not get the message";
  EXPECT_EQ(curmsgs(d), 0);
}

// mq_notify and poll keep working on an unlinked queue's descriptor.
TEST_F(MqUnlink, NotifyAndPollWorkOnTheUnlinkedQueue) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_unlink(name_.c_str()), 0);
  SigBlock sig(kNotifySig);
  sigevent ev = signal_event(kNotifySig, 77);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  pollfd pfd{d, POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 0);
  pid_t p = spawn([&] { return mq_send(d, "x", 1, 0) == 0 ? 0 : 1; });  // the child's copy of the descriptor
  ASSERT_EQ(reap(p), 0);
  siginfo_t si{};
  ASSERT_TRUE(sig.take(&si)) << "no notification";
  EXPECT_EQ(si.si_value.sival_int, 77);
  EXPECT_EQ(si.si_pid, p);
  EXPECT_EQ(poll(&pfd, 1, kHangMs), 1);
  EXPECT_TRUE(pfd.revents & POLLIN);
  EXPECT_EQ(recv(d), "x");
}

TEST_F(MqUnlink, MissingQueueIsENOENT) {
  name_ = fresh();
  EXPECT_EQ(mq_unlink(name_.c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(MqUnlink, NameLongerThanNameMaxIsENAMETOOLONG) {
  std::string n = "/" + std::string(NAME_MAX + 1, 'n');
  EXPECT_EQ(mq_unlink(n.c_str()), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
}

// Linux (glibc): a name must start with '/'.
TEST_F(MqUnlink, NameWithoutLeadingSlashIsEINVAL) {
  ASSERT_NE(create(), kBad) << strerror(errno);
  EXPECT_EQ(mq_unlink(name_.c_str() + 1), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_NE(open(name_, O_RDWR), kBad) << "the queue was removed";
}

// Linux: "/" alone names nothing (ENOENT, as for mq_open).
TEST_F(MqUnlink, SlashAloneIsENOENT) {
  EXPECT_EQ(mq_unlink("/"), -1);
  EXPECT_EQ(errno, ENOENT);
}

// Linux: a further slash, ".", or ".." is EACCES, even over NAME_MAX.
TEST_F(MqUnlink, SecondSlashOrDotNameIsEACCES) {
  std::string base = fresh();
  for (std::string n :
       {base + "/sub", std::string("/."), std::string("/.."), base + "/" + std::string(NAME_MAX, 'n')}) {
    EXPECT_EQ(mq_unlink(n.c_str()), -1) << n.substr(0, 20);
    EXPECT_EQ(errno, EACCES) << n.substr(0, 20);
  }
}

// POSIX: EACCES when the caller may not remove the queue. On Linux the queue
// directory is sticky (1777): only the queue's owner (or a privileged
// caller) removes it, whatever the queue's own mode says.
TEST_F(MqUnlink, AnotherUsersQueueIsEACCES) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  name_ = fresh();
  mq_attr a = make_attr(4, 64);
  mode_t old = umask(0);
  mqd_t d = open(name_, O_CREAT | O_EXCL | O_RDWR, 0666, &a);
  umask(old);
  ASSERT_NE(d, kBad) << strerror(errno);
  pid_t p = spawn([&] {
    if (!drop_root()) return 100;
    if (mq_unlink(name_.c_str()) == 0) return 1;
    return errno == EACCES ? 0 : 2;
  });
  EXPECT_EQ(reap(p), 0) << "1: removed, 2: not EACCES";
  mqd_t e = open(name_, O_RDWR);
  EXPECT_NE(e, kBad) << "the queue is gone";
}

// The mode of the queue does not matter to its owner: a queue of mode 0 is
// removed by the user who made it.
TEST_F(MqUnlink, OwnerRemovesAQueueItCannotOpen) {
  name_ = fresh();
  pid_t p = spawn([&] {
    if (!drop_root()) return 100;
    mq_attr a = make_attr(4, 64);
    mqd_t d = mq_open(name_.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0, &a);
    if (d == kBad) return 101;
    mq_close(d);
    if (mq_unlink(name_.c_str()) != 0) return 1;
    return mq_open(name_.c_str(), O_RDONLY) == kBad && errno == ENOENT ? 0 : 2;
  });
  EXPECT_EQ(reap(p), 0) << "1: unlink failed, 2: the name is still there (100+: setup)";
}

// ---- mq_send ---------------------------------------------------------------

TEST_F(MqSend, MessageArrivesWholeWithItsPriority) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "hello\0world", 11, 7), 0);
  char buf[64];
  unsigned prio = 0;
  ASSERT_EQ(mq_receive(d, buf, sizeof buf, &prio), 11);
  EXPECT_EQ(std::string(buf, 11), std::string("hello\0world", 11));
  EXPECT_EQ(prio, 7u);
}

TEST_F(MqSend, ZeroLengthMessageIsAMessage) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "", 0, 0), 0);
  EXPECT_EQ(curmsgs(d), 1);
  char buf[64];
  EXPECT_EQ(mq_receive(d, buf, sizeof buf, nullptr), 0);
  EXPECT_EQ(curmsgs(d), 0);
}

TEST_F(MqSend, MessageOfExactlyMsgsizeFits) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  std::string m(64, 'm');
  ASSERT_EQ(mq_send(d, m.data(), m.size(), 0), 0);
  EXPECT_EQ(recv(d), m);
}

TEST_F(MqSend, LongerThanMsgsizeIsEMSGSIZE) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  std::string m(65, 'm');
  EXPECT_EQ(mq_send(d, m.data(), m.size(), 0), -1);
  EXPECT_EQ(errno, EMSGSIZE);
  EXPECT_EQ(curmsgs(d), 0);
}

TEST_F(MqSend, PriorityOfMqPrioMaxOrMoreIsEINVAL) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  for (unsigned p : {static_cast<unsigned>(prio_max()), static_cast<unsigned>(prio_max()) + 1, ~0u}) {
    EXPECT_EQ(mq_send(d, "x", 1, p), -1) << p;
    EXPECT_EQ(errno, EINVAL) << p;
  }
  EXPECT_EQ(curmsgs(d), 0);
}

TEST_F(MqSend, ReadOnlyDescriptorIsEBADF) {
  ASSERT_NE(create(), kBad) << strerror(errno);
  mqd_t r = open(name_, O_RDONLY);
  ASSERT_NE(r, kBad) << strerror(errno);
  EXPECT_EQ(mq_send(r, "x", 1, 0), -1);
  EXPECT_EQ(errno, EBADF);
}

// Linux: a descriptor that is not a message queue is EBADF.
TEST_F(MqSend, DescriptorThatIsNotAQueueIsEBADF) {
  int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(mq_send(fd, "x", 1, 0), -1);
  EXPECT_EQ(errno, EBADF);
  close(fd);
}

TEST_F(MqSend, NonblockOnAFullQueueIsEAGAIN) {
  mqd_t d = create(2, 64, O_NONBLOCK);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "a", 1, 0), 0);
  ASSERT_EQ(mq_send(d, "b", 1, 0), 0);
  EXPECT_EQ(mq_send(d, "c", 1, 0), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(curmsgs(d), 2);
}

// POSIX: with O_NONBLOCK a full queue fails at once with EAGAIN, whatever the timeout.
TEST_F(MqSend, NonblockTimedsendOnAFullQueueIsEAGAIN) {
  mqd_t d = create(1, 64, O_NONBLOCK);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "a", 1, 0), 0);
  timespec past{0, 0};
  EXPECT_EQ(mq_timedsend(d, "b", 1, 0, &past), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST_F(MqSend, BlocksOnAFullQueueUntilAReceiveMakesRoom) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "first", 5, 0), 0);
  Ready ready;
  pid_t p = spawn([&] {
    ready.say();
    return mq_send(d, "second", 6, 0) == 0 ? 0 : errno;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p)) << "the sender never blocked";
  EXPECT_EQ(curmsgs(d), 1);
  EXPECT_EQ(recv(d), "first");
  EXPECT_EQ(reap(p), 0);
  EXPECT_EQ(recv(d), "second");
}

TEST_F(MqSend, BlockedSendInterruptedBySignalIsEINTR) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "full", 4, 0), 0);
  Ready ready;
  pid_t p = spawn([&] {
    catch_without_restart(SIGUSR1);
    ready.say();
    if (mq_send(d, "x", 1, 0) == 0) return 1;
    return errno == EINTR ? 0 : 2;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p)) << "the sender never blocked";
  kill(p, SIGUSR1);
  EXPECT_EQ(reap(p), 0) << "1: the send succeeded, 2: another errno";
  EXPECT_EQ(curmsgs(d), 1) << "nothing sent";
}

TEST_F(MqSend, TimedsendOnAFullQueuePastTheDeadlineIsETIMEDOUT) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "a", 1, 0), 0);
  timespec past{0, 0};  // an absolute CLOCK_REALTIME deadline long gone
  EXPECT_EQ(mq_timedsend(d, "b", 1, 0, &past), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
  timespec recent;
  clock_gettime(CLOCK_REALTIME, &recent);
  recent.tv_sec -= 1;
  EXPECT_EQ(mq_timedsend(d, "b", 1, 0, &recent), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
  EXPECT_EQ(curmsgs(d), 1);
}

TEST_F(MqSend, TimedsendWithBadTimespecWhenItWouldBlockIsEINVAL) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "a", 1, 0), 0);
  for (long ns : {-1L, 1000000000L}) {
    timespec bad{0, ns};
    EXPECT_EQ(mq_timedsend(d, "b", 1, 0, &bad), -1) << ns;
    EXPECT_EQ(errno, EINVAL) << ns;
  }
}

// POSIX: "Under no circumstance shall the operation fail with a timeout if
// there is sufficient room in the queue to add the message immediately."
TEST_F(MqSend, TimedsendWithRoomSucceedsWhateverTheDeadline) {
  mqd_t d = create(2, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  timespec past{0, 0};
  EXPECT_EQ(mq_timedsend(d, "a", 1, 0, &past), 0) << strerror(errno);
  EXPECT_EQ(curmsgs(d), 1);
}

// Many producers and consumers through a small queue, all blocking: every
// message arrives exactly once (a checksum and a count per producer).
TEST_F(MqSend, ManyProducersAndConsumersLoseNothing) {
  constexpr int kProducers = 4, kConsumers = 4, kEach = 500;
  mqd_t d = create(3, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  int results[2];
  ASSERT_EQ(pipe(results), 0);
  std::vector<pid_t> kids;
  for (int c = 0; c < kConsumers; c++) {
    kids.push_back(spawn([&] {
      // Each consumer takes its share, then reports "count sum" of what it got.
      long long sum = 0, n = 0;
      for (int i = 0; i < kProducers * kEach / kConsumers; i++) {
        char buf[64];
        ssize_t len = mq_receive(d, buf, sizeof buf, nullptr);
        if (len <= 0) return 1;
        sum += std::atoll(std::string(buf, len).c_str());
        n++;
      }
      std::string line = std::to_string(n) + " " + std::to_string(sum) + "\n";
      return write(results[1], line.data(), line.size()) == static_cast<ssize_t>(line.size()) ? 0 : 2;
    }));
  }
  for (int p = 0; p < kProducers; p++) {
    kids.push_back(spawn([&, p] {
      for (int i = 0; i < kEach; i++) {
        std::string m = std::to_string(p * kEach + i + 1);
        if (mq_send(d, m.data(), m.size(), i % 3) != 0) return 1;
      }
      return 0;
    }));
  }
  for (pid_t k : kids) EXPECT_EQ(reap(k), 0);
  close(results[1]);
  std::string all;
  char buf[256];
  for (ssize_t n; (n = read(results[0], buf, sizeof buf)) > 0;) all.append(buf, n);
  close(results[0]);
  long long total_n = 0, total_sum = 0;
  std::istringstream in(all);
  for (long long n, s; in >> n >> s;) total_n += n, total_sum += s;
  const long long kAll = kProducers * kEach;
  EXPECT_EQ(total_n, kAll);
  EXPECT_EQ(total_sum, kAll * (kAll + 1) / 2);
  EXPECT_EQ(curmsgs(d), 0);
}

// ---- mq_receive ------------------------------------------------------------

TEST_F(MqReceive, HighestPriorityFirst) {
  mqd_t d = create(5, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  const std::pair<const char*, unsigned> sent[] = {{"p1", 1}, {"p9", 9}, {"p0", 0}, {"p5", 5}, {"p2", 2}};
  for (auto& [m, p] : sent) ASSERT_EQ(mq_send(d, m, 2, p), 0);
  std::string order;
  for (int i = 0; i < 5; i++) {
    unsigned prio = 99;
    std::string m = recv(d, &prio);
    order += m + "@" + std::to_string(prio) + " ";
  }
  EXPECT_EQ(order, "p9@9 p5@5 p2@2 p1@1 p0@0 ");
}

TEST_F(MqReceive, OldestFirstWithinAPriority) {
  mqd_t d = create(6, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  for (const char* m : {"a3", "b1", "c3", "d1", "e3", "f1"}) ASSERT_EQ(mq_send(d, m, 2, m[1] - '0'), 0);
  std::string order;
  for (int i = 0; i < 6; i++) order += recv(d) + " ";
  EXPECT_EQ(order, "a3 c3 e3 b1 d1 f1 ");
}

TEST_F(MqReceive, PrioritiesRunUpToMqPrioMaxMinusOne) {
  ASSERT_GE(prio_max(), 32) << "POSIX: _POSIX_MQ_PRIO_MAX is 32";
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  const unsigned top = prio_max() - 1;
  ASSERT_EQ(mq_send(d, "mid", 3, top / 2), 0);
  ASSERT_EQ(mq_send(d, "top", 3, top), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "low", 3, 0), 0);
  unsigned prio = 0;
  EXPECT_EQ(recv(d, &prio), "top");
  EXPECT_EQ(prio, top);
  EXPECT_EQ(recv(d, &prio), "mid");
  EXPECT_EQ(prio, top / 2);
  EXPECT_EQ(recv(d, &prio), "low");
  EXPECT_EQ(prio, 0u);
}

TEST_F(MqReceive, NullPriorityPointerIsAllowed) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 4), 0);
  char buf[64];
  EXPECT_EQ(mq_receive(d, buf, sizeof buf, nullptr), 1);
}

TEST_F(MqReceive, BufferSmallerThanMsgsizeIsEMSGSIZE) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);  // the message itself would fit
  char buf[64];
  EXPECT_EQ(mq_receive(d, buf, 63, nullptr), -1);
  EXPECT_EQ(errno, EMSGSIZE);
  EXPECT_EQ(curmsgs(d), 1) << "the message stays";
  EXPECT_EQ(mq_receive(d, buf, 64, nullptr), 1);
}

TEST_F(MqReceive, WriteOnlyDescriptorIsEBADF) {
  ASSERT_NE(create(), kBad) << strerror(errno);
  mqd_t w = open(name_, O_WRONLY);
  ASSERT_NE(w, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(w, "x", 1, 0), 0);
  char buf[64];
  EXPECT_EQ(mq_receive(w, buf, sizeof buf, nullptr), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST_F(MqReceive, InvalidDescriptorIsEBADF) {
  char buf[64];
  EXPECT_EQ(mq_receive(kBad, buf, sizeof buf, nullptr), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST_F(MqReceive, NonblockOnAnEmptyQueueIsEAGAIN) {
  mqd_t d = create(4, 64, O_NONBLOCK);
  ASSERT_NE(d, kBad) << strerror(errno);
  char buf[64];
  EXPECT_EQ(mq_receive(d, buf, sizeof buf, nullptr), -1);
  EXPECT_EQ(errno, EAGAIN);
  timespec past{0, 0};
  EXPECT_EQ(mq_timedreceive(d, buf, sizeof buf, nullptr, &past), -1);
  EXPECT_EQ(errno, EAGAIN) << "O_NONBLOCK wins over the timeout";
}

TEST_F(MqReceive, BlocksOnAnEmptyQueueUntilASend) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  Ready ready;
  pid_t p = spawn([&] {
    ready.say();
    char buf[64];
    unsigned prio = 0;
    ssize_t n = mq_receive(d, buf, sizeof buf, &prio);
    return n == 4 && std::string(buf, 4) == "ping" && prio == 6 ? 0 : 1;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p)) << "the receiver never blocked";
  ASSERT_EQ(mq_send(d, "ping", 4, 6), 0);
  EXPECT_EQ(reap(p), 0);
  EXPECT_EQ(curmsgs(d), 0);
}

TEST_F(MqReceive, BlockedReceiveInterruptedBySignalIsEINTR) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  Ready ready;
  pid_t p = spawn([&] {
    catch_without_restart(SIGUSR1);
    ready.say();
    char buf[64];
    if (mq_receive(d, buf, sizeof buf, nullptr) >= 0) return 1;
    return errno == EINTR ? 0 : 2;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p)) << "the receiver never blocked";
  kill(p, SIGUSR1);
  EXPECT_EQ(reap(p), 0) << "1: received, 2: another errno";
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(curmsgs(d), 1) << "the interrupted receive took nothing";
}

// signal(7): mq_receive is restarted after a handler installed with SA_RESTART.
int restart_pipe = -1;
void say_handled(int) {
  char c = 1;
  (void)!write(restart_pipe, &c, 1);
}

TEST_F(MqReceive, BlockedReceiveRestartsAfterAnSaRestartHandler) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  Ready ready, handled;
  pid_t p = spawn([&] {
    restart_pipe = handled.writer();
    struct sigaction sa {};
    sa.sa_handler = say_handled;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
    ready.say();
    char buf[64];
    ssize_t n = mq_receive(d, buf, sizeof buf, nullptr);
    if (n < 0) return errno == EINTR ? 1 : 2;
    return n == 1 && buf[0] == 'x' ? 0 : 3;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p)) << "the receiver never blocked";
  kill(p, SIGUSR1);
  ASSERT_TRUE(handled.wait()) << "the handler never ran";
  ASSERT_TRUE(wait_asleep(p)) << "the receive was not restarted";
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(reap(p), 0) << "1: EINTR, 2: another errno, 3: another message";
}

// signal(7): whether a blocked call restarts depends on the handler of the
// signal that interrupted it, not on the other handlers installed. Each case
// installs SIGUSR1 and SIGUSR2 (one with SA_RESTART, one without), blocks in
// one call, and is interrupted by one of them.
enum class Blocking { receive, timedreceive, send, timedsend };

void install_handler(int sig, bool restart) {
  struct sigaction sa {};
  sa.sa_handler = say_handled;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(sig, &sa, nullptr);
}

class MqSignal : public MqTest {
 protected:
  // A child blocks in `call` (on an empty queue for a receive, a full one for
  // a send) and `sig` interrupts it; its status: 0 the call completed with
  // the expected message, 1 EINTR, 2 another errno.
  void run(Blocking call, bool usr1_restarts, bool usr2_restarts, int sig) {
    const bool sending = call == Blocking::send || call == Blocking::timedsend;
    mqd_t d = create(1, 64);
    ASSERT_NE(d, kBad) << strerror(errno);
    if (sending) {
      ASSERT_EQ(mq_send(d, "full", 4, 0), 0);
    }
    Ready ready, handled;
    pid_t p = spawn([&] {
      restart_pipe = handled.writer();
      install_handler(SIGUSR1, usr1_restarts);
      install_handler(SIGUSR2, usr2_restarts);
      timespec far;
      clock_gettime(CLOCK_REALTIME, &far);
      far.tv_sec += 3600;
      ready.say();
      char buf[64];
      ssize_t n = -1;
      switch (call) {
        case Blocking::receive: n = mq_receive(d, buf, sizeof buf, nullptr); break;
        case Blocking::timedreceive: n = mq_timedreceive(d, buf, sizeof buf, nullptr, &far); break;
        case Blocking::send: n = mq_send(d, "x", 1, 0); break;
        case Blocking::timedsend: n = mq_timedsend(d, "x", 1, 0, &far); break;
      }
      if (n < 0) return errno == EINTR ? 1 : 2;
      return sending || (n == 1 && buf[0] == 'x') ? 0 : 3;
    });
    ASSERT_TRUE(ready.wait());
    ASSERT_TRUE(wait_asleep(p)) << "never blocked";
    kill(p, sig);
    ASSERT_TRUE(handled.wait()) << "the handler never ran";
    const bool restarts = sig == SIGUSR1 ? usr1_restarts : usr2_restarts;
    if (restarts) {
      ASSERT_TRUE(wait_asleep(p)) << "not restarted";
      if (sending) {
        EXPECT_EQ(recv(d), "full");
      } else {
        ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
      }
      EXPECT_EQ(reap(p), 0) << "1: EINTR, 2: another errno, 3: another message";
      if (sending) {
        EXPECT_EQ(recv(d), "x") << "the restarted send's message";
      }
      EXPECT_EQ(curmsgs(d), 0);
    } else {
      EXPECT_EQ(reap(p), 1) << "0: restarted and completed, 2: another errno";
      if (!sending) {
        ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
      }
      EXPECT_EQ(curmsgs(d), 1) << "the interrupted call took or sent nothing";
      EXPECT_EQ(recv(d), sending ? "full" : "x");
    }
  }
};

TEST_F(MqSignal, ReceiveRestartsAfterItsSaRestartHandlerBesideAnotherWithout) {
  run(Blocking::receive, true, false, SIGUSR1);
}
TEST_F(MqSignal, ReceiveIsEINTRAfterItsHandlerWithoutSaRestartBesideAnotherWith) {
  run(Blocking::receive, true, false, SIGUSR2);
}
TEST_F(MqSignal, TimedreceiveRestartsAfterAnSaRestartHandler) { run(Blocking::timedreceive, true, true, SIGUSR1); }
TEST_F(MqSignal, TimedreceiveIsEINTRAfterAHandlerWithoutSaRestart) {
  run(Blocking::timedreceive, false, true, SIGUSR1);
}
TEST_F(MqSignal, SendRestartsAfterItsSaRestartHandlerBesideAnotherWithout) {
  run(Blocking::send, false, true, SIGUSR2);
}
TEST_F(MqSignal, SendIsEINTRAfterItsHandlerWithoutSaRestartBesideAnotherWith) {
  run(Blocking::send, false, true, SIGUSR1);
}
TEST_F(MqSignal, TimedsendRestartsAfterAnSaRestartHandler) { run(Blocking::timedsend, true, true, SIGUSR2); }
TEST_F(MqSignal, TimedsendIsEINTRAfterAHandlerWithoutSaRestart) { run(Blocking::timedsend, false, false, SIGUSR1); }

TEST_F(MqReceive, TimedreceiveOnAnEmptyQueuePastTheDeadlineIsETIMEDOUT) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  char buf[64];
  timespec past{0, 0};
  EXPECT_EQ(mq_timedreceive(d, buf, sizeof buf, nullptr, &past), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
  timespec recent;
  clock_gettime(CLOCK_REALTIME, &recent);
  recent.tv_sec -= 1;
  EXPECT_EQ(mq_timedreceive(d, buf, sizeof buf, nullptr, &recent), -1);
  EXPECT_EQ(errno, ETIMEDOUT);
}

TEST_F(MqReceive, TimedreceiveWithBadTimespecWhenItWouldBlockIsEINVAL) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  char buf[64];
  for (long ns : {-1L, 1000000000L}) {
    timespec bad{0, ns};
    EXPECT_EQ(mq_timedreceive(d, buf, sizeof buf, nullptr, &bad), -1) << ns;
    EXPECT_EQ(errno, EINVAL) << ns;
  }
}

// POSIX: "the validity of the abs_timeout parameter need not be checked"
// when a message is there, and the call never times out then.
TEST_F(MqReceive, TimedreceiveWithAMessageSucceedsWhateverTheDeadline) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  char buf[64];
  timespec past{0, 0};
  EXPECT_EQ(mq_timedreceive(d, buf, sizeof buf, nullptr, &past), 1) << strerror(errno);
}

// ---- mq_getattr ------------------------------------------------------------

TEST_F(MqGetattr, CurmsgsIsLiveAcrossProcesses) {
  mqd_t d = create(4, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  pid_t p = spawn([&] {
    mqd_t w = mq_open(name_.c_str(), O_WRONLY);
    if (w == kBad) return 1;
    for (int i = 0; i < 3; i++)
      if (mq_send(w, "m", 1, 0) != 0) return 2;
    return 0;
  });
  ASSERT_EQ(reap(p), 0);
  EXPECT_EQ(curmsgs(d), 3);
  recv(d);
  EXPECT_EQ(curmsgs(d), 2);
}

TEST_F(MqGetattr, InvalidDescriptorIsEBADF) {
  mq_attr a{};
  EXPECT_EQ(mq_getattr(kBad, &a), -1);
  EXPECT_EQ(errno, EBADF);
}

// ---- mq_setattr ------------------------------------------------------------

// POSIX: only mq_flags (O_NONBLOCK) is set; mq_maxmsg, mq_msgsize and mq_curmsgs are ignored.
TEST_F(MqSetattr, ChangesOnlyNonblock) {
  mqd_t d = create(3, 100);
  ASSERT_NE(d, kBad) << strerror(errno);
  mq_attr n = make_attr(7, 7);
  n.mq_flags = O_NONBLOCK;
  n.mq_curmsgs = 5;
  ASSERT_EQ(mq_setattr(d, &n, nullptr), 0) << strerror(errno);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, O_NONBLOCK);
  EXPECT_EQ(a.mq_maxmsg, 3);
  EXPECT_EQ(a.mq_msgsize, 100);
  EXPECT_EQ(a.mq_curmsgs, 0);
  char buf[100];
  EXPECT_EQ(mq_receive(d, buf, sizeof buf, nullptr), -1) << "now non-blocking";
  EXPECT_EQ(errno, EAGAIN);
}

TEST_F(MqSetattr, ReturnsThePreviousAttributes) {
  mqd_t d = create(3, 100);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  mq_attr n{};
  n.mq_flags = O_NONBLOCK;
  mq_attr old{};
  old.mq_flags = -1;
  ASSERT_EQ(mq_setattr(d, &n, &old), 0) << strerror(errno);
  EXPECT_EQ(old.mq_flags & O_NONBLOCK, 0);
  EXPECT_EQ(old.mq_maxmsg, 3);
  EXPECT_EQ(old.mq_msgsize, 100);
  EXPECT_EQ(old.mq_curmsgs, 1);
  n.mq_flags = 0;
  ASSERT_EQ(mq_setattr(d, &n, &old), 0);
  EXPECT_EQ(old.mq_flags & O_NONBLOCK, O_NONBLOCK);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, 0) << "cleared again";
}

// POSIX: the flags belong to the open description, not to the queue.
TEST_F(MqSetattr, AffectsOnlyThatDescriptor) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  mqd_t e = open(name_, O_RDWR);
  ASSERT_NE(e, kBad) << strerror(errno);
  mq_attr n{};
  n.mq_flags = O_NONBLOCK;
  ASSERT_EQ(mq_setattr(d, &n, nullptr), 0);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(e, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, 0);
}

// Linux, mq_getattr(3): "newattr->mq_flags contained set bits other than O_NONBLOCK" is EINVAL.
TEST_F(MqSetattr, OtherFlagBitsAreEINVAL) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  mq_attr n{};
  n.mq_flags = O_NONBLOCK | O_APPEND;
  EXPECT_EQ(mq_setattr(d, &n, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, 0) << "nothing changed";
}

// Linux: O_NONBLOCK is the descriptor's file status flag, so fcntl(F_SETFL)
// sets it for mq_send, mq_receive and mq_getattr, and mq_setattr shows in F_GETFL.
TEST_F(MqSetattr, FcntlNonblockIsTheSameFlag) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  const int fl = fcntl(d, F_GETFL);
  ASSERT_GE(fl, 0) << strerror(errno);
  ASSERT_EQ(fcntl(d, F_SETFL, fl | O_NONBLOCK), 0) << strerror(errno);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, O_NONBLOCK);
  char buf[64];
  EXPECT_EQ(mq_receive(d, buf, sizeof buf, nullptr), -1) << "empty, and now non-blocking";
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(mq_send(d, "a", 1, 0), 0);
  EXPECT_EQ(mq_send(d, "b", 1, 0), -1) << "full, and now non-blocking";
  EXPECT_EQ(errno, EAGAIN);
  mq_attr n{};
  ASSERT_EQ(mq_setattr(d, &n, nullptr), 0);
  EXPECT_EQ(fcntl(d, F_GETFL) & O_NONBLOCK, 0) << "mq_setattr cleared the file's flag";
  n.mq_flags = O_NONBLOCK;
  ASSERT_EQ(mq_setattr(d, &n, nullptr), 0);
  EXPECT_EQ(fcntl(d, F_GETFL) & O_NONBLOCK, O_NONBLOCK) << "mq_setattr set the file's flag";
}

TEST_F(MqSetattr, InvalidDescriptorIsEBADF) {
  mq_attr n{};
  EXPECT_EQ(mq_setattr(kBad, &n, nullptr), -1);
  EXPECT_EQ(errno, EBADF);
}

// ---- mq_notify -------------------------------------------------------------

// POSIX: SIGEV_SIGNAL on empty -> non-empty; si_code SI_MESGQ, si_value as registered.
TEST_F(MqNotify, SignalOnArrivalAtAnEmptyQueue) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  sigevent ev = signal_event(kNotifySig, 4242);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  EXPECT_FALSE(sig.pending());
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  siginfo_t si{};
  ASSERT_TRUE(sig.take(&si)) << "no notification";
  EXPECT_EQ(si.si_signo, kNotifySig);
  EXPECT_EQ(si.si_code, SI_MESGQ);
  EXPECT_EQ(si.si_value.sival_int, 4242);
  EXPECT_EQ(curmsgs(d), 1) << "the notification takes nothing";
}

// Linux, mq_notify(3): si_pid and si_uid are the sender's.
TEST_F(MqNotify, SignalNamesTheSendingProcess) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  pid_t p = spawn([&] { return mq_send(d, "x", 1, 0) == 0 ? 0 : 1; });
  ASSERT_EQ(reap(p), 0);
  siginfo_t si{};
  ASSERT_TRUE(sig.take(&si)) << "no notification";
  EXPECT_EQ(si.si_pid, p);
  EXPECT_EQ(si.si_uid, getuid());
}

volatile sig_atomic_t g_notified = 0;
void count_notification(int) { g_notified = g_notified + 1; }

// Linux: the kernel queues the notification inside mq_send, so a process
// that sends to its own registration takes the signal in the sending thread
// (which does not block it) before mq_send returns, as with kill(2) to itself.
TEST_F(MqNotify, OwnSendRunsTheHandlerBeforeMqSendReturns) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  struct sigaction sa {
  }, old{};
  sa.sa_handler = count_notification;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(kNotifySig, &sa, &old), 0);
  sigset_t set, old_mask;
  sigemptyset(&set);
  sigaddset(&set, kNotifySig);
  pthread_sigmask(SIG_UNBLOCK, &set, &old_mask);
  g_notified = 0;
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(g_notified, 1) << "the handler had not run when mq_send returned";
  // Once, not again later: a new registration ends whatever the old one left.
  for (long long end = now_ms() + kHangMs; g_notified == 0 && now_ms() < end;) nap();
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_notify(d, nullptr), 0) << strerror(errno);
  EXPECT_EQ(g_notified, 1);
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  sigaction(kNotifySig, &old, nullptr);
}

int g_thread_pipe = -1;
void on_thread_notify(sigval v) {
  int value = v.sival_int;
  (void)!write(g_thread_pipe, &value, sizeof value);
}

TEST_F(MqNotify, ThreadRunsTheFunctionWithTheValue) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  g_thread_pipe = fds[1];
  sigevent ev{};
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = on_thread_notify;
  ev.sigev_notify_attributes = nullptr;
  ev.sigev_value.sival_int = 777;
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  pollfd pfd{fds[0], POLLIN, 0};
  ASSERT_EQ(poll(&pfd, 1, kHangMs), 1) << "the function never ran";
  int value = 0;
  EXPECT_EQ(read(fds[0], &value, sizeof value), static_cast<ssize_t>(sizeof value));
  EXPECT_EQ(value, 777);
  close(fds[0]);
  close(fds[1]);
}

// POSIX: SIGEV_NONE registers (the queue is taken) but delivers nothing.
TEST_F(MqNotify, NoneRegistersButDeliversNothing) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  sigevent ev{};
  ev.sigev_notify = SIGEV_NONE;
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  sigevent other = signal_event(kNotifySig, 1);
  EXPECT_EQ(notify_from_child(&other), EBUSY);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_FALSE(sig.pending());
}

TEST_F(MqNotify, SecondRegistrationFromAnotherProcessIsEBUSY) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  EXPECT_EQ(notify_from_child(&ev), EBUSY);
}

// POSIX: "If the calling process or any other process has already registered ... shall fail".
TEST_F(MqNotify, SecondRegistrationFromTheSameProcessIsEBUSY) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  EXPECT_EQ(mq_notify(d, &ev), -1);
  EXPECT_EQ(errno, EBUSY);
}

// Only the transition from empty fires: a send to a non-empty queue does
// not, and the registration stays for the next transition.
TEST_F(MqNotify, NoSignalWhenTheQueueWasNotEmpty) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  ASSERT_EQ(mq_send(d, "first", 5, 0), 0);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "second", 6, 0), 0);
  EXPECT_EQ(notify_from_child(&ev), EBUSY) << "the registration fired";
  EXPECT_FALSE(sig.pending());
  recv(d);
  recv(d);
  ASSERT_EQ(mq_send(d, "third", 5, 0), 0);
  siginfo_t si{};
  EXPECT_TRUE(sig.take(&si)) << "no notification on the later empty -> non-empty";
}

// POSIX: a message taken at once by a receiver blocked in mq_receive leaves
// the queue "as if empty": no notification, and the registration stays.
TEST_F(MqNotify, NoSignalWhenAReceiverIsBlocked) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  Ready ready;
  pid_t p = spawn([&] {
    ready.say();
    char buf[64];
    return mq_receive(d, buf, sizeof buf, nullptr) == 1 ? 0 : 1;
  });
  ASSERT_TRUE(ready.wait());
  ASSERT_TRUE(wait_asleep(p)) << "the receiver never blocked";
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(reap(p), 0) << "the blocked receiver got the message";
  EXPECT_EQ(notify_from_child(&ev), EBUSY) << "the registration fired or was dropped";
  EXPECT_FALSE(sig.pending());
}

// POSIX: the registration is removed when the notification is sent: another
// process may register then, and a second arrival signals nobody.
TEST_F(MqNotify, RegistrationIsRemovedAfterTheSignal) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  siginfo_t si{};
  ASSERT_TRUE(sig.take(&si));
  recv(d);
  ASSERT_EQ(mq_send(d, "y", 1, 0), 0);
  EXPECT_EQ(notify_from_child(&ev), 0) << "still registered";
  EXPECT_FALSE(sig.pending());
}

// Linux: SIGEV_NONE's registration is also used up by an arrival (the kernel
// removes it as for a signal). POSIX only says a sent notification removes it.
TEST_F(MqNotify, NoneRegistrationIsRemovedByAnArrival) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  sigevent ev{};
  ev.sigev_notify = SIGEV_NONE;
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  sigevent other = signal_event(kNotifySig, 1);
  EXPECT_EQ(notify_from_child(&other), 0);
}

TEST_F(MqNotify, NullUnregisters) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  SigBlock sig(kNotifySig);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  ASSERT_EQ(mq_notify(d, nullptr), 0) << strerror(errno);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_FALSE(sig.pending());
  EXPECT_EQ(notify_from_child(&ev), 0) << "the registration was not removed";
}

// POSIX: only the registered process's null request removes the registration.
TEST_F(MqNotify, NullFromAnotherProcessLeavesTheRegistration) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  sigevent ev = signal_event(kNotifySig, 1);
  ASSERT_EQ(mq_notify(d, &ev), 0) << strerror(errno);
  notify_from_child(nullptr);
  EXPECT_EQ(notify_from_child(&ev), EBUSY);
}

TEST_F(MqNotify, InvalidDescriptorIsEBADF) {
  sigevent ev = signal_event(kNotifySig, 1);
  EXPECT_EQ(mq_notify(kBad, &ev), -1);
  EXPECT_EQ(errno, EBADF);
}

// Linux, mq_notify(3): EINVAL for an unknown sigev_notify or an invalid signal number.
TEST_F(MqNotify, BadSigeventIsEINVAL) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  sigevent ev = signal_event(kNotifySig, 1);
  ev.sigev_notify = 12345;
  EXPECT_EQ(mq_notify(d, &ev), -1);
  EXPECT_EQ(errno, EINVAL);
  ev = signal_event(_NSIG + 1, 1);
  EXPECT_EQ(mq_notify(d, &ev), -1);
  EXPECT_EQ(errno, EINVAL);
  ev = signal_event(kNotifySig, 1);
  EXPECT_EQ(mq_notify(d, &ev), 0) << "the failures registered nothing";
}

// ---- poll, select, epoll (Linux: a descriptor is a file descriptor) ----------

TEST_F(MqPoll, PollInOnlyWhenNotEmpty) {
  mqd_t d = create(2, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  pollfd p{d, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(poll(&p, 1, 0), 1);
  EXPECT_TRUE(p.revents & POLLIN);
  recv(d);
  EXPECT_EQ(poll(&p, 1, 0), 0);
}

TEST_F(MqPoll, PollOutOnlyWhenNotFull) {
  mqd_t d = create(2, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  pollfd p{d, POLLOUT, 0};
  EXPECT_EQ(poll(&p, 1, 0), 1);
  EXPECT_TRUE(p.revents & POLLOUT);
  ASSERT_EQ(mq_send(d, "a", 1, 0), 0);
  EXPECT_EQ(poll(&p, 1, 0), 1);
  ASSERT_EQ(mq_send(d, "b", 1, 0), 0);
  EXPECT_EQ(poll(&p, 1, 0), 0) << "full";
  recv(d);
  EXPECT_EQ(poll(&p, 1, 0), 1);
}

TEST_F(MqPoll, SelectSeesReadiness) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_LT(d, FD_SETSIZE);
  auto ready = [&](bool* r, bool* w) {
    fd_set rs, ws;
    FD_ZERO(&rs);
    FD_ZERO(&ws);
    FD_SET(d, &rs);
    FD_SET(d, &ws);
    timeval zero{0, 0};
    int n = select(d + 1, &rs, &ws, nullptr, &zero);
    *r = FD_ISSET(d, &rs);
    *w = FD_ISSET(d, &ws);
    return n;
  };
  bool r, w;
  EXPECT_EQ(ready(&r, &w), 1);
  EXPECT_FALSE(r);
  EXPECT_TRUE(w);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(ready(&r, &w), 1);
  EXPECT_TRUE(r);
  EXPECT_FALSE(w);
}

TEST_F(MqPoll, EpollSeesReadiness) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = d;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev), 0) << strerror(errno);
  epoll_event out{};
  EXPECT_EQ(epoll_wait(ep, &out, 1, 0), 0);
  ASSERT_EQ(mq_send(d, "x", 1, 0), 0);
  EXPECT_EQ(epoll_wait(ep, &out, 1, 0), 1);
  EXPECT_TRUE(out.events & EPOLLIN);
  EXPECT_EQ(out.data.fd, d);
  close(ep);
}

// Edge-triggered, both directions: each change made by another process is
// one event, seen as soon as that process's call has returned.
TEST_F(MqPoll, EdgeTriggeredEpollSeesEachChangeByAnotherProcess) {
  mqd_t d = create(1, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  ev.data.fd = d;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev), 0) << strerror(errno);
  epoll_event out{};
  ASSERT_EQ(epoll_wait(ep, &out, 1, 0), 1);
  EXPECT_EQ(out.events & (EPOLLIN | EPOLLOUT), static_cast<uint32_t>(EPOLLOUT)) << "empty: writable only";
  EXPECT_EQ(epoll_wait(ep, &out, 1, 0), 0) << "no new edge";
  for (int round = 0; round < 3; round++) {
    pid_t p = spawn([&] { return mq_send(d, "x", 1, 0) == 0 ? 0 : 1; });
    ASSERT_EQ(reap(p), 0);
    ASSERT_EQ(epoll_wait(ep, &out, 1, 0), 1) << "round " << round << ": the send";
    EXPECT_EQ(out.events & (EPOLLIN | EPOLLOUT), static_cast<uint32_t>(EPOLLIN)) << "full: readable only";
    p = spawn([&] {
      char buf[64];
      return mq_receive(d, buf, sizeof buf, nullptr) == 1 ? 0 : 1;
    });
    ASSERT_EQ(reap(p), 0);
    ASSERT_EQ(epoll_wait(ep, &out, 1, 0), 1) << "round " << round << ": the receive";
    EXPECT_EQ(out.events & (EPOLLIN | EPOLLOUT), static_cast<uint32_t>(EPOLLOUT)) << "empty: writable only";
  }
  close(ep);
}

// A poll blocked on an empty queue wakes when another process sends.
TEST_F(MqPoll, BlockedPollWakesOnASendFromAnotherProcess) {
  mqd_t d = create(2, 64);
  ASSERT_NE(d, kBad) << strerror(errno);
  const pid_t me = getpid();
  pid_t p = spawn([&] {
    if (!wait_asleep(me)) return 1;  // the test's thread is in poll()
    return mq_send(d, "x", 1, 0) == 0 ? 0 : 2;
  });
  pollfd pfd{d, POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, kHangMs), 1) << "never woken";
  EXPECT_TRUE(pfd.revents & POLLIN);
  EXPECT_EQ(reap(p), 0);
}

// ---- fork and exec ---------------------------------------------------------

TEST_F(MqFork, ChildInheritsTheDescriptors) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  ASSERT_EQ(mq_send(d, "to child", 8, 0), 0);
  pid_t p = spawn([&] {
    char buf[64];
    if (mq_receive(d, buf, sizeof buf, nullptr) != 8 || std::string(buf, 8) != "to child") return 1;
    return mq_send(d, "to parent", 9, 0) == 0 ? 0 : 2;
  });
  EXPECT_EQ(reap(p), 0);
  EXPECT_EQ(recv(d), "to parent");
}

// POSIX fork(): each inherited descriptor "shall refer to the same open
// message queue description", so mq_setattr in the child shows in the parent.
TEST_F(MqFork, ChildSharesTheOpenDescription) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  pid_t p = spawn([&] {
    mq_attr n{};
    n.mq_flags = O_NONBLOCK;
    return mq_setattr(d, &n, nullptr) == 0 ? 0 : 1;
  });
  ASSERT_EQ(reap(p), 0);
  mq_attr a{};
  ASSERT_EQ(mq_getattr(d, &a), 0);
  EXPECT_EQ(a.mq_flags & O_NONBLOCK, O_NONBLOCK);
}

// POSIX exec: "All open message queue descriptors in the calling process shall be closed."
// (On mailboxfs the close happens inside execve, holding the exec locks: a
// daemon that reads the caller's /proc/<pid>/stat to answer that flush waits
// for those locks, and both hang until the connection is aborted.)
TEST_F(MqFork, ExecClosesTheDescriptors) {
  mqd_t d = create();
  ASSERT_NE(d, kBad) << strerror(errno);
  std::string script = "[ -e /proc/$$/fd/" + std::to_string(d) + " ] && exit 1; exit 0";
  pid_t p = spawn([&] {
    execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
    return 127;
  });
  EXPECT_EQ(reap(p), 0) << "the descriptor survived exec";
}

// ---- errno -----------------------------------------------------------------

// Linux: the mq_* calls are system calls, which leave errno alone when they
// succeed (POSIX only says errno is meaningful after a failure; programs and
// test suites set it to 0 first and look at it afterwards anyway).
TEST_F(MqErrno, SuccessfulCallsLeaveErrnoAlone) {
  const int kMark = EDOM;  // no mq_* call sets it
  name_ = fresh();
  mq_attr a = make_attr(4, 64);
  errno = kMark;
  mqd_t d = open(name_, O_CREAT | O_EXCL | O_RDWR, 0600, &a);
  ASSERT_NE(d, kBad) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_open (create)";
  errno = kMark;
  mqd_t r = open(name_, O_RDONLY);
  ASSERT_NE(r, kBad) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_open (existing)";
  errno = kMark;
  ASSERT_EQ(mq_send(d, "x", 1, 1), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_send";
  timespec far{};
  clock_gettime(CLOCK_REALTIME, &far);
  far.tv_sec += kHangMs / 1000;
  errno = kMark;
  ASSERT_EQ(mq_timedsend(d, "y", 1, 0, &far), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_timedsend";
  char buf[64];
  unsigned prio = 0;
  errno = kMark;
  ASSERT_EQ(mq_receive(r, buf, sizeof buf, &prio), 1) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_receive";
  errno = kMark;
  ASSERT_EQ(mq_timedreceive(r, buf, sizeof buf, &prio, &far), 1) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_timedreceive";
  mq_attr got{}, set{};
  errno = kMark;
  ASSERT_EQ(mq_getattr(d, &got), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_getattr";
  set.mq_flags = O_NONBLOCK;
  errno = kMark;
  ASSERT_EQ(mq_setattr(d, &set, &got), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_setattr";
  sigevent none{};
  none.sigev_notify = SIGEV_NONE;
  errno = kMark;
  ASSERT_EQ(mq_notify(r, &none), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_notify (register)";
  errno = kMark;
  ASSERT_EQ(mq_notify(r, nullptr), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_notify (remove)";
  forget(r);
  forget(d);
  errno = kMark;
  ASSERT_EQ(mq_close(r), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_close";
  errno = kMark;
  ASSERT_EQ(mq_close(d), 0) << strerror(errno);
  errno = kMark;
  ASSERT_EQ(mq_unlink(name_.c_str()), 0) << strerror(errno);
  EXPECT_EQ(errno, kMark) << "mq_unlink";
  names_.clear();
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // No queues at all (no kernel support, or limits exhausted): say so, exit 77.
  std::string n = unique_name();
  mq_attr a = make_attr(4, 64);
  mqd_t d = mq_open(n.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600, &a);
  if (d == kBad) {
    std::fprintf(stderr, "mq_conformance: no message queues here (mq_open: %s)\n", std::strerror(errno));
    return 77;
  }
  mq_close(d);
  mq_unlink(n.c_str());
  return RUN_ALL_TESTS();
}

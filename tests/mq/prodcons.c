// SPDX-License-Identifier: MIT
// An unmodified POSIX message queue program: a bounded-buffer producer and
// consumer with priorities and mq_notify. It knows nothing of mailboxfs; run
// it on the kernel's queues and under LD_PRELOAD=libmailbox-mq.so and compare
// stdout, which depends only on the mq rules, never on scheduling:
//   phase 1: the producer fills the 4-slot queue with jobs of priorities 1..9,
//            says so on a control queue, then blocks sending 4 tail jobs of
//            priority 0; the consumer drains: highest priority first, the
//            tail last in FIFO order (priority 0 cannot overtake anything).
//   phase 2: three rounds of SIGEV_SIGNAL: the consumer registers on the
//            empty queue, the producer sends a burst of three, one signal
//            arrives (si_code SI_MESGQ, the registered value), the consumer
//            drains the burst in priority order, and no second signal came.
//   phase 3: one round of SIGEV_THREAD: the function runs with the value.
// Usage: mq_prodcons [/basename]   (default /prodcons.<pid>; exit 0 on success)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kSlots = 4, kSize = 128, kRounds = 3 };

static char data_name[200], to_prod_name[210], to_cons_name[210];

static void die(const char* what) {
  fprintf(stderr, "mq_prodcons: %s: %s\n", what, strerror(errno));
  mq_unlink(data_name);
  mq_unlink(to_prod_name);
  mq_unlink(to_cons_name);
  exit(1);
}

static mqd_t create(const char* name, long maxmsg, int oflag) {
  struct mq_attr a = {0};
  a.mq_maxmsg = maxmsg;
  a.mq_msgsize = kSize;
  mqd_t d = mq_open(name, O_CREAT | O_EXCL | oflag, 0600, &a);
  if (d == (mqd_t)-1) die(name);
  return d;
}

static void put(mqd_t d, const char* text, unsigned prio) {
  if (mq_send(d, text, strlen(text), prio) != 0) die("mq_send");
}

// Receives one message as a string; its priority in *prio when not NULL.
static int get(mqd_t d, char* buf, unsigned* prio) {
  ssize_t n = mq_receive(d, buf, kSize, prio);
  if (n < 0) return -1;
  buf[n] = 0;
  return 0;
}

// The producer: waits for each instruction on its control queue.
static int producer(mqd_t data, mqd_t to_prod, mqd_t to_cons) {
  static const unsigned head_prios[kSlots] = {5, 9, 1, 7};
  char buf[kSize + 1], text[64];
  for (int i = 0; i < kSlots; i++) {
    snprintf(text, sizeof text, "job %d (prio %u)", i, head_prios[i]);
    put(data, text, head_prios[i]);
  }
  put(to_cons, "filled", 0);
  for (int i = 0; i < kSlots; i++) {  // these block until the consumer makes room
    snprintf(text, sizeof text, "tail %d (prio 0)", i);
    put(data, text, 0);
  }
  for (;;) {
    if (get(to_prod, buf, NULL) != 0) die("producer: mq_receive");
    if (strcmp(buf, "stop") == 0) return 0;
    int round = atoi(buf);
    static const unsigned burst[3] = {2, 8, 4};
    for (int i = 0; i < 3; i++) {
      snprintf(text, sizeof text, "round %d msg %d (prio %u)", round, i, burst[i]);
      put(data, text, burst[i]);
    }
    put(to_cons, "sent", 0);
  }
}

static int thread_pipe[2];
static void on_notify(union sigval v) {
  int value = v.sival_int;
  if (write(thread_pipe[1], &value, sizeof value) != sizeof value) abort();
}

// Drains `data` without blocking, printing each message with its priority.
static void drain(mqd_t data) {
  struct mq_attr nb = {0}, old;
  nb.mq_flags = O_NONBLOCK;
  if (mq_setattr(data, &nb, &old) != 0) die("mq_setattr");
  char buf[kSize + 1];
  unsigned prio;
  while (get(data, buf, &prio) == 0) printf("  got %s, priority %u\n", buf, prio);
  if (errno != EAGAIN) die("drain");
  if (mq_setattr(data, &old, NULL) != 0) die("mq_setattr");
}

int main(int argc, char** argv) {
  if (argc > 1) snprintf(data_name, sizeof data_name, "%s", argv[1]);
  else snprintf(data_name, sizeof data_name, "/prodcons.%d", (int)getpid());
  snprintf(to_prod_name, sizeof to_prod_name, "%s.p", data_name);
  snprintf(to_cons_name, sizeof to_cons_name, "%s.c", data_name);
  setvbuf(stdout, NULL, _IOLBF, 0);

  mqd_t data = create(data_name, kSlots, O_RDWR);
  mqd_t to_prod = create(to_prod_name, 2, O_RDWR);
  mqd_t to_cons = create(to_cons_name, 2, O_RDWR);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, NULL);  // before fork: the signal waits for sigwaitinfo

  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) _exit(producer(data, to_prod, to_cons));

  char buf[kSize + 1];
  unsigned prio;
  struct mq_attr a;
  printf("phase 1: bounded buffer of %d\n", kSlots);
  if (get(to_cons, buf, NULL) != 0) die("mq_receive");
  if (mq_getattr(data, &a) != 0) die("mq_getattr");
  printf("  producer %s: %ld of %ld queued\n", buf, a.mq_curmsgs, a.mq_maxmsg);
  for (int i = 0; i < 2 * kSlots; i++) {
    if (get(data, buf, &prio) != 0) die("mq_receive");
    printf("  got %s, priority %u\n", buf, prio);
  }

  printf("phase 2: mq_notify with SIGEV_SIGNAL\n");
  for (int round = 1; round <= kRounds; round++) {
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    ev.sigev_value.sival_int = 100 + round;
    if (mq_notify(data, &ev) != 0) die("mq_notify");
    snprintf(buf, sizeof buf, "%d", round);
    put(to_prod, buf, 0);
    siginfo_t si;
    if (sigwaitinfo(&usr1, &si) != SIGUSR1) die("sigwaitinfo");
    printf("round %d: signal %s, value %d\n", round, si.si_code == SI_MESGQ ? "SI_MESGQ" : "with another code",
           si.si_value.sival_int);
    if (get(to_cons, buf, NULL) != 0) die("mq_receive");  // the whole burst is queued
    drain(data);
    struct timespec zero = {0, 0};
    printf("  %s\n", sigtimedwait(&usr1, &si, &zero) == SIGUSR1 ? "a second signal" : "one signal for the burst");
  }

  printf("phase 3: mq_notify with SIGEV_THREAD\n");
  if (pipe(thread_pipe) != 0) die("pipe");
  struct sigevent ev = {0};
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = on_notify;
  ev.sigev_value.sival_int = 200;
  if (mq_notify(data, &ev) != 0) die("mq_notify");
  put(to_prod, "4", 0);
  int value = 0;
  if (read(thread_pipe[0], &value, sizeof value) != sizeof value) die("read");
  printf("round 4: thread ran, value %d\n", value);
  if (get(to_cons, buf, NULL) != 0) die("mq_receive");
  drain(data);

  put(to_prod, "stop", 0);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) die("waitpid");
  printf("producer exited with status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  mq_close(data);
  mq_close(to_prod);
  mq_close(to_cons);
  if (mq_unlink(data_name) != 0 || mq_unlink(to_prod_name) != 0 || mq_unlink(to_cons_name) != 0) die("mq_unlink");
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

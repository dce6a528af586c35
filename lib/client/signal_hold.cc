// SPDX-License-Identifier: MIT
#include "client/signal_hold.h"

#include <pthread.h>

#include <cerrno>
#include <initializer_list>

namespace mailbox {

namespace {

sigset_t held_set() {
  sigset_t s;
  sigfillset(&s);
  for (int sync : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) sigdelset(&s, sync);
  return s;  // SIGKILL and SIGSTOP are never blocked, whatever the set says
}

thread_local SignalHold* in_force = nullptr;  // the outermost hold of the thread

}  // namespace

SignalHold::SignalHold(bool on) : on_(on) {
  sigemptyset(&caller_);
  if (!on_) return;
  if (in_force) {
    outer_ = in_force;
    on_ = false;
    return;
  }
  const sigset_t s = held_set();
  held_ = pthread_sigmask(SIG_BLOCK, &s, &caller_) == 0;
  on_ = held_;
  if (on_) in_force = this;
}

SignalHold::~SignalHold() {
  if (!on_) return;
  in_force = nullptr;
  if (held_) pthread_sigmask(SIG_SETMASK, &caller_, nullptr);
}

bool SignalHold::open() {
  if (outer_) return outer_->open();
  if (!held_) return false;
  const int saved = errno;
  sigset_t pending;
  bool interrupts = false;
  if (sigpending(&pending) == 0) {
    for (int sig = 1; sig < NSIG; sig++)
      if (sigismember(&pending, sig) == 1 && sigismember(&caller_, sig) == 0 && handler_interrupts(sig))
        interrupts = true;
  }
  pthread_sigmask(SIG_SETMASK, &caller_, nullptr);  // the pending ones are delivered here
  held_ = false;
  errno = saved;
  return interrupts;
}

void SignalHold::close() {
  if (outer_) return outer_->close();
  if (!on_ || held_) return;
  const int saved = errno;  // of the wait just made
  const sigset_t s = held_set();
  held_ = pthread_sigmask(SIG_BLOCK, &s, nullptr) == 0;
  errno = saved;
}

bool SignalHold::handler_interrupts(int sig) {
  struct sigaction sa {};
  if (::sigaction(sig, nullptr, &sa) != 0) return false;
  const bool caught = (sa.sa_flags & SA_SIGINFO) ? sa.sa_sigaction != nullptr
                                                 : sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
  return caught && !(sa.sa_flags & SA_RESTART);
}

}  // namespace mailbox

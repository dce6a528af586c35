// SPDX-License-Identifier: MIT
// Holds back the calling thread's signals while an interruptible call (the
// mq calls on the file path) makes the requests that do not wait, and lets
// them through at its wait. See SignalHold.
#pragma once
#include <signal.h>

namespace mailbox {

// A signal that comes while an interruptible call sleeps in a request that
// does not wait for the mailbox (an open, an ioctl, a non-blocking read or
// write, each waiting only for the daemon's answer) would run its handler
// as that request returns, and the wait that follows would sleep on with the
// signal spent: the call never sees it, though the caller was asleep when it
// came. The kernel's mq calls are ended by such a signal. So the call holds
// its signals (all but the synchronous ones: a fault is never deferred)
// from start to end, and lets them through only where it waits:
//  - atomically, in ppoll(wait_mask()), which returns EINTR when a handler ran;
//  - around a blocking read or write in the daemon, which takes no mask:
//    open() first reports whether a pending signal's handler interrupts,
//    then lets the pending ones run; close() holds them again.
// Off (a call that is not interruptible), it does nothing. Holds nest: one
// made while another is in force on the thread (an mq call holds signals
// across its non-blocking try and its wait) acts through that one.
class SignalHold {
 public:
  explicit SignalHold(bool on);
  ~SignalHold();
  SignalHold(const SignalHold&) = delete;
  SignalHold& operator=(const SignalHold&) = delete;

  // The mask the call's waits sleep under: the caller's own (nullptr: the
  // current one, when off).
  const sigset_t* wait_mask() const { return outer_ ? outer_->wait_mask() : on_ ? &caller_ : nullptr; }
  // Lets the caller's signals through; true if one was pending whose
  // handler ends an interruptible wait (it has run when this returns).
  bool open();
  void close();  // errno is kept by both

  // Whether `sig` is caught by a handler without SA_RESTART.
  static bool handler_interrupts(int sig);

 private:
  SignalHold* outer_ = nullptr;  // the hold in force when this one was made
  bool on_;
  bool held_ = false;
  sigset_t caller_;  // the caller's mask, restored at the end
};

}  // namespace mailbox

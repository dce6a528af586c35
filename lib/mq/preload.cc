// SPDX-License-Identifier: MIT
// libmailbox-mq.so: LD_PRELOAD it to run an unmodified mq_* program on
// mailboxfs. The rule (mailbox_mq(3)): while the root ($MAILBOXFS_MQ_ROOT,
// else /mnt/mbx) is a mounted mailboxfs, mq_open and mq_unlink go to it; else
// they go to the kernel (a name breaking Linux's rules fails first, with
// Linux's errno: mbx::mq::place decides both). Every other call goes where
// its descriptor came from: one mq_open returned here is in lib/mq's table,
// any other is the kernel's. close(2) on one of ours is mq_close.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>

#include <atomic>

#include "mailbox/mqueue.h"
#include "mq/mq.h"

namespace {

// The next definition (libc's), looked up once; racing first calls store the same value.
template <class F>
F real(std::atomic<F>& slot, const char* name) {
  F f = slot.load(std::memory_order_acquire);  // SYNC POINT: pairs with the release store below
  if (!f) {
    f = reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
    slot.store(f, std::memory_order_release);
  }
  return f;
}

#define REAL(name) real(real_##name, #name)
std::atomic<mqd_t (*)(const char*, int, ...)> real_mq_open{nullptr};
std::atomic<int (*)(mqd_t)> real_mq_close{nullptr};
std::atomic<int (*)(const char*)> real_mq_unlink{nullptr};
std::atomic<int (*)(mqd_t, const char*, size_t, unsigned)> real_mq_send{nullptr};
std::atomic<int (*)(mqd_t, const char*, size_t, unsigned, const timespec*)> real_mq_timedsend{nullptr};
std::atomic<ssize_t (*)(mqd_t, char*, size_t, unsigned*)> real_mq_receive{nullptr};
std::atomic<ssize_t (*)(mqd_t, char*, size_t, unsigned*, const timespec*)> real_mq_timedreceive{nullptr};
std::atomic<int (*)(mqd_t, mq_attr*)> real_mq_getattr{nullptr};
std::atomic<int (*)(mqd_t, const mq_attr*, mq_attr*)> real_mq_setattr{nullptr};
std::atomic<int (*)(mqd_t, const sigevent*)> real_mq_notify{nullptr};
std::atomic<int (*)(int)> real_close{nullptr};

mqd_t route_open(const char* name, int oflag, mode_t mode, mq_attr* attr) {
  const mbx::mq::Place p = mbx::mq::place(name);
  if (!p.kernel) return mbx::mq::open_queue(p, oflag, mode, attr);
  return oflag & O_CREAT ? REAL(mq_open)(name, oflag, mode, attr) : REAL(mq_open)(name, oflag);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) mqd_t mq_open(const char* name, int oflag, ...) {
  mode_t mode = 0;
  mq_attr* attr = nullptr;
  if (oflag & O_CREAT) {
    va_list ap;
    va_start(ap, oflag);
    mode = static_cast<mode_t>(va_arg(ap, unsigned));
    attr = va_arg(ap, mq_attr*);
    va_end(ap);
  }
  return route_open(name, oflag, mode, attr);
}

// _FORTIFY_SOURCE's mq_open without O_CREAT.
__attribute__((visibility("default"))) mqd_t __mq_open_2(const char* name, int oflag) {
  return route_open(name, oflag, 0, nullptr);
}

__attribute__((visibility("default"))) int mq_close(mqd_t d) {
  return mbx::mq::owns(d) ? mbx_mq_close(d) : REAL(mq_close)(d);
}

__attribute__((visibility("default"))) int mq_unlink(const char* name) {
  const mbx::mq::Place p = mbx::mq::place(name);
  return p.kernel ? REAL(mq_unlink)(name) : mbx::mq::unlink_queue(p);
}

__attribute__((visibility("default"))) int mq_send(mqd_t d, const char* p, size_t n, unsigned prio) {
  return mbx::mq::owns(d) ? mbx_mq_send(d, p, n, prio) : REAL(mq_send)(d, p, n, prio);
}

__attribute__((visibility("default"))) int mq_timedsend(mqd_t d, const char* p, size_t n, unsigned prio,
                                                        const timespec* t) {
  return mbx::mq::owns(d) ? mbx_mq_timedsend(d, p, n, prio, t) : REAL(mq_timedsend)(d, p, n, prio, t);
}

__attribute__((visibility("default"))) ssize_t mq_receive(mqd_t d, char* p, size_t n, unsigned* prio) {
  return mbx::mq::owns(d) ? mbx_mq_receive(d, p, n, prio) : REAL(mq_receive)(d, p, n, prio);
}

__attribute__((visibility("default"))) ssize_t mq_timedreceive(mqd_t d, char* p, size_t n, unsigned* prio,
                                                               const timespec* t) {
  return mbx::mq::owns(d) ? mbx_mq_timedreceive(d, p, n, prio, t) : REAL(mq_timedreceive)(d, p, n, prio, t);
}

__attribute__((visibility("default"))) int mq_getattr(mqd_t d, mq_attr* a) {
  return mbx::mq::owns(d) ? mbx_mq_getattr(d, a) : REAL(mq_getattr)(d, a);
}

__attribute__((visibility("default"))) int mq_setattr(mqd_t d, const mq_attr* n, mq_attr* o) {
  return mbx::mq::owns(d) ? mbx_mq_setattr(d, n, o) : REAL(mq_setattr)(d, n, o);
}

__attribute__((visibility("default"))) int mq_notify(mqd_t d, const sigevent* ev) {
  return mbx::mq::owns(d) ? mbx_mq_notify(d, ev) : REAL(mq_notify)(d, ev);
}

// close(2) on one of our descriptors is mq_close: its state does not leak,
// and a later descriptor with the same number is not taken for a queue.
__attribute__((visibility("default"))) int close(int fd) {
  return mbx::mq::owns(fd) ? mbx_mq_close(fd) : REAL(close)(fd);
}

}  // extern "C"

// SPDX-License-Identifier: MIT
// Locks the compiler checks: clang's -Wthread-safety sees which mutex guards
// which field (GUARDED_BY) and which function needs it held (REQUIRES), and
// fails the build when code breaks a rule (make thread-safety). The macros
// are empty for other compilers.
#pragma once
#include <mutex>

#if defined(__clang__)
#define MBX_TSA(x) __attribute__((x))
#else
#define MBX_TSA(x)
#endif

#define CAPABILITY(x) MBX_TSA(capability(x))
#define SCOPED_CAPABILITY MBX_TSA(scoped_lockable)
#define GUARDED_BY(x) MBX_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) MBX_TSA(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) MBX_TSA(acquired_before(__VA_ARGS__))
#define REQUIRES(...) MBX_TSA(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) MBX_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) MBX_TSA(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) MBX_TSA(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) MBX_TSA(locks_excluded(__VA_ARGS__))
#define RETURN_CAPABILITY(x) MBX_TSA(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS MBX_TSA(no_thread_safety_analysis)

namespace mbx {

// A std::mutex the analysis knows as a capability.
class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { m_.lock(); }
  void unlock() RELEASE() { m_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return m_.try_lock(); }

 private:
  std::mutex m_;
};

// Holds a Mutex for a scope (std::lock_guard, checked). unlock()/lock() in
// the middle of the scope, for a call that must run with it released.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) ACQUIRE(m) : m_(m) { m_.lock(); }
  ~MutexLock() RELEASE() {
    if (held_) m_.unlock();
  }
  void unlock() RELEASE() {
    m_.unlock();
    held_ = false;
  }
  void lock() ACQUIRE() {
    m_.lock();
    held_ = true;
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& m_;
  bool held_ = true;
};

}  // namespace mbx

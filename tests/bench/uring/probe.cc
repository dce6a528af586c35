// SPDX-License-Identifier: MIT
// bench-uring: does serving FUSE through io_uring (FUSE_OVER_IO_URING, one ring
// per CPU) beat classic read(/dev/fuse)/writev on a datagram-style mailbox?
// The probe mounts its own tiny filesystem (a root directory holding one file,
// "box" and "box2", direct_io and nonseekable): a write queues one message (up to 64
// queued, a write to a full queue waits), a read takes the oldest (a read of an
// empty queue waits); waiting requests are parked and answered by the request
// that makes them ready, as bench-floor does. No libfuse: the kernel protocol
// is spoken directly, and io_uring through raw syscalls (no liburing).
// Modes, interleaved per repetition, each on a fresh mount:
//   classic  - one read/writev loop thread per online CPU;
//   classic1 - one loop thread;
//   uring    - INIT negotiates FUSE_OVER_IO_URING, then one ring and thread per
//              possible CPU (the kernel routes a request to the queue of the
//              CPU its caller runs on), 8 entries each, each thread pinned
//              to its CPU; only a ring's own thread submits to it (a reply
//              to a request parked on another queue is handed over by eventfd);
//   uringm   - the same, but a ring thread hands over with IORING_OP_MSG_RING
//              (a CQE posted into the owner's ring, sent with its next wait);
//   uringx   - the same, but a reply to another queue's request is submitted
//              to that queue's ring directly by the replying thread.
// Metrics: rtt (one process writes 64 B and reads them back), pp (ping-pong:
// two processes, box and box2, as `make bench` measures a datagram round
// trip), msgs/s (a writer and a reader process, 64 B messages) and the
// server's CPU time per message in that run.
// Needs root and /sys/module/fuse/parameters/enable_uring = Y for the uring
// modes (run.sh sets and restores it). Usage: bench-uring DIR [--reps N]
// [--rtt N] [--msgs N] [--modes classic,classic1,uring,uringm,uringx] [--pin 0|1]
// [--pp-cpus free|same|split]
#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fuse_uring_abi.h"

namespace {

constexpr uint32_t kMaxWrite = 128 * 1024;
constexpr uint16_t kMaxPages = 32;  // max_pages * 4 KiB = kMaxWrite
// The kernel wants each entry's payload >= max(8 KiB, max_write, max_pages * PAGE_SIZE).
constexpr size_t kPayloadSize = 256 * 1024;
constexpr size_t kDevBufSize = kMaxWrite + 4096;
constexpr size_t kQueueCap = 64;
constexpr unsigned kDepth = 8;  // ring entries per queue, libfuse's default
constexpr uint64_t kRootIno = 1;
constexpr uint64_t kBoxIno = 2;  // "box"; "box2" is kBoxIno + 1
constexpr size_t kBoxes = 2;
constexpr size_t kMsgSize = 64;
constexpr size_t kSqeSize = 128;  // IORING_SETUP_SQE128

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench-uring: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// ---- io_uring through raw syscalls ------------------------------------------

// One SQE128 ring. The SQ is shared by every thread that answers a request of
// this queue (sq_lock); the CQ is read only by the queue's own thread.
class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    if (sqes_ != MAP_FAILED) munmap(sqes_, sqes_len_);
    if (rings_ != MAP_FAILED) munmap(rings_, rings_len_);
    if (fd_ >= 0) close(fd_);
  }

  // Returns 0 or -errno.
  int setup(unsigned entries) {
    io_uring_params p{};
    // SQE128: the kernel refuses a FUSE uring command without the 80-byte
    // command area. SUBMIT_ALL: a failing command does not stop the batch.
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SUBMIT_ALL;
    fd_ = int(syscall(__NR_io_uring_setup, entries, &p));
    if (fd_ < 0) return -errno;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) return -ENOTSUP;
    rings_len_ = std::max(p.sq_off.array + p.sq_entries * sizeof(unsigned),
                          p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe));
    rings_ = mmap(nullptr, rings_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
    if (rings_ == MAP_FAILED) return -errno;
    sqes_len_ = p.sq_entries * kSqeSize;
    sqes_ = mmap(nullptr, sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
    if (sqes_ == MAP_FAILED) return -errno;
    char* base = static_cast<char*>(rings_);
    sq_head_ = reinterpret_cast<unsigned*>(base + p.sq_off.head);
    sq_tail_ = reinterpret_cast<unsigned*>(base + p.sq_off.tail);
    sq_mask_ = *reinterpret_cast<unsigned*>(base + p.sq_off.ring_mask);
    sq_entries_ = p.sq_entries;
    cq_head_ = reinterpret_cast<unsigned*>(base + p.cq_off.head);
    cq_tail_ = reinterpret_cast<unsigned*>(base + p.cq_off.tail);
    cq_mask_ = *reinterpret_cast<unsigned*>(base + p.cq_off.ring_mask);
    cqes_ = reinterpret_cast<io_uring_cqe*>(base + p.cq_off.cqes);
    // The SQ index array maps slot i to SQE i once and for all.
    auto* array = reinterpret_cast<unsigned*>(base + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; ++i) array[i] = i;
    return 0;
  }

  int fd() const { return fd_; }

  // Fills the next SQE with fill(sqe) and publishes it; the caller submits.
  template <class Fill>
  void push(Fill&& fill) {
    std::lock_guard<std::mutex> lock(sq_lock_);
    // Pairs with the kernel's release of sq head when it consumes entries.
    unsigned head = __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
    unsigned tail = *sq_tail_;
    if (tail - head >= sq_entries_) {
      errno = EOVERFLOW;
      die("submission queue full");
    }
    auto* sqe = reinterpret_cast<io_uring_sqe*>(static_cast<char*>(sqes_) + size_t(tail & sq_mask_) * kSqeSize);
    std::memset(sqe, 0, kSqeSize);
    fill(sqe);
    // Publishes the SQE contents to the kernel, which reads tail with acquire.
    __atomic_store_n(sq_tail_, tail + 1, __ATOMIC_RELEASE);
  }

  // io_uring_enter; every pushed SQE is counted in exactly one call's to_submit,
  // so concurrent submitters together submit all of them. Returns -errno or >= 0.
  int enter(unsigned to_submit, unsigned min_complete) {
    unsigned flags = min_complete ? IORING_ENTER_GETEVENTS : 0;
    long r = syscall(__NR_io_uring_enter, fd_, to_submit, min_complete, flags, nullptr, 0);
    return r < 0 ? -errno : int(r);
  }

  // Calls handle(cqe) for each completion ready now; returns how many.
  template <class Handle>
  unsigned drain(Handle&& handle) {
    unsigned head = *cq_head_;
    // Pairs with the kernel's release store of cq tail after writing a CQE.
    unsigned tail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
    unsigned n = 0;
    for (; head != tail; ++head, ++n) {
      io_uring_cqe cqe = cqes_[head & cq_mask_];
      // Hands the slot back to the kernel, which reads head with acquire.
      __atomic_store_n(cq_head_, head + 1, __ATOMIC_RELEASE);
      handle(cqe);
    }
    return n;
  }

 private:
  int fd_ = -1;
  void* rings_ = MAP_FAILED;
  size_t rings_len_ = 0;
  void* sqes_ = MAP_FAILED;
  size_t sqes_len_ = 0;
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned sq_mask_ = 0;
  unsigned sq_entries_ = 0;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned cq_mask_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  std::mutex sq_lock_;
};

// ---- the tiny filesystem -------------------------------------------------------

enum class Mode { kClassic, kClassic1, kUring, kUringMsg, kUringCross };

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kClassic: return "classic";
    case Mode::kClassic1: return "classic1";
    case Mode::kUring: return "uring";
    case Mode::kUringMsg: return "uringm";
    case Mode::kUringCross: return "uringx";
  }
  return "?";
}

struct Queue;

// One registered ring entry: its header and payload buffers belong to the
// server while the kernel has handed it a request (until the commit).
struct Ent {
  Queue* queue = nullptr;
  uring_abi::ReqHeader* hdr = nullptr;
  char* payload = nullptr;
  iovec iov[2]{};
  uint64_t commit_id = 0;
};

struct Queue {
  unsigned qid = 0;
  Ring ring;
  std::vector<Ent> ents;
  std::thread thread;
  unsigned own_pending = 0;  // SQEs pushed by the owner, submitted with its next wait
  // Only the owner submits to its ring (a command's task work runs in the task
  // that submitted it, so a foreign submitter would add a hop through its own
  // CPU): other threads fill an entry's reply and hand it over here.
  int wake_fd = -1;  // eventfd, read through the ring
  uint64_t wake_buf = 0;
  std::mutex handoff_mu;
  std::vector<Ent*> handoff;  // GUARDED_BY(handoff_mu)
};

// user_data of the ring's eventfd read (entries are pointers, never 1).
constexpr uint64_t kWakeTag = 1;
// user_data of a hand-over message from another ring (uringm), and of its completion on the sender's.
constexpr uint64_t kMsgTag = 2;
constexpr uint64_t kMsgSentTag = 3;

// --pin 0 leaves the ring threads unpinned (default: each on its queue's CPU).
bool g_pin_queues = true;
// --pp-cpus same|split pins the two ping-pong processes to CPU 0, or to CPUs 0 and 1
// (default: free), to tell a same-CPU round trip from a cross-CPU one.
enum class PpCpus { kFree, kSame, kSplit } g_pp_cpus = PpCpus::kFree;

// The queue whose thread this is (null on other threads).
thread_local Queue* t_own_queue = nullptr;

// A request to answer: classic when ent is null.
struct Req {
  uint64_t unique = 0;
  Ent* ent = nullptr;
};

class Server {
 public:
  Server(std::string dir, Mode mode) : dir_(std::move(dir)), mode_(mode) {}
  ~Server() { stop(); }

  // Mounts, answers INIT and starts serving; false with error() on failure.
  bool start() {
    dev_ = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (dev_ < 0) return fail("open /dev/fuse", errno);
    char opts[128];
    std::snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=0,group_id=0", dev_);
    if (mount("mbxuring", dir_.c_str(), "fuse.mbxuring", MS_NOSUID | MS_NODEV, opts) != 0) return fail("mount", errno);
    mounted_ = true;
    if (!answer_init()) return false;
    unsigned loops = mode_ == Mode::kClassic ? unsigned(sysconf(_SC_NPROCESSORS_ONLN)) : 1;
    // In uring mode this thread still serves what the kernel keeps on
    // /dev/fuse (FORGET and INTERRUPT, and anything before the ring is ready).
    for (unsigned i = 0; i < loops; ++i) dev_threads_.emplace_back([this] { dev_loop(); });
    if (mode_ != Mode::kClassic && mode_ != Mode::kClassic1) return start_rings();
    return true;
  }

  void stop() {
    if (mounted_) {
      if (umount2(dir_.c_str(), 0) != 0) umount2(dir_.c_str(), MNT_DETACH);
      mounted_ = false;
    }
    for (auto& t : dev_threads_) t.join();
    dev_threads_.clear();
    // Pairs with the acquire in handle_cqe: a queue thread whose entries were
    // all held (no teardown completion for it) still wakes and leaves.
    stopping_.store(true, std::memory_order_release);
    for (auto& q : queues_) {
      uint64_t one = 1;
      if (q->wake_fd >= 0) (void)!write(q->wake_fd, &one, sizeof one);
      if (q->thread.joinable()) q->thread.join();
      if (q->wake_fd >= 0) close(q->wake_fd);
    }
    queues_.clear();
    for (auto& [p, len] : maps_) munmap(p, len);
    maps_.clear();
    if (dev_ >= 0) close(dev_);
    dev_ = -1;
  }

  const std::string& error() const { return error_; }
  bool kernel_offered_uring() const { return offered_uring_; }
  uint64_t via_dev() const { return via_dev_.load(); }
  uint64_t via_ring() const { return via_ring_.load(); }

 private:
  bool fail(const std::string& what, int err) {
    error_ = what + ": errno " + std::to_string(err) + " (" + std::strerror(err) + ")";
    return false;
  }

  bool answer_init() {
    std::vector<char> buf(kDevBufSize);
    ssize_t n = read(dev_, buf.data(), buf.size());
    if (n < ssize_t(sizeof(fuse_in_header) + 16)) return fail("read INIT", n < 0 ? errno : EIO);
    auto* in = reinterpret_cast<fuse_in_header*>(buf.data());
    if (in->opcode != FUSE_INIT) return fail("first request not INIT", EPROTO);
    fuse_init_in init{};
    std::memcpy(&init, buf.data() + sizeof(*in), std::min(sizeof init, size_t(n) - sizeof(*in)));
    offered_uring_ = (init.flags & uring_abi::kInitExt) && (init.flags2 & uint32_t(uring_abi::kOverIoUring >> 32));
    fuse_init_out out{};
    out.major = FUSE_KERNEL_VERSION;
    out.minor = init.minor;
    out.max_readahead = init.max_readahead;
    out.flags = uring_abi::kInitExt | FUSE_MAX_PAGES | FUSE_BIG_WRITES;
    if (mode_ != Mode::kClassic && mode_ != Mode::kClassic1) out.flags2 = uint32_t(uring_abi::kOverIoUring >> 32);
    out.max_background = 16;
    out.congestion_threshold = 12;
    out.max_write = kMaxWrite;
    out.time_gran = 1;
    out.max_pages = kMaxPages;
    reply_dev(in->unique, 0, &out, sizeof out);
    return true;
  }

  // ---- classic transport ----
  void reply_dev(uint64_t unique, int err, const void* data, size_t len) {
    fuse_out_header oh{};
    oh.len = uint32_t(sizeof oh + (err ? 0 : len));
    oh.error = err;
    oh.unique = unique;
    iovec iov[2] = {{&oh, sizeof oh}, {const_cast<void*>(data), err ? 0 : len}};
    // ENOENT: the request was interrupted meanwhile; nothing to do.
    (void)!writev(dev_, iov, 2);
  }

  void dev_loop() {
    std::vector<char> buf(kDevBufSize);
    for (;;) {
      ssize_t n = read(dev_, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
        return;  // ENODEV: unmounted
      }
      auto* in = reinterpret_cast<const fuse_in_header*>(buf.data());
      const char* op = buf.data() + sizeof *in;
      size_t op_len = size_t(n) - sizeof *in;
      via_dev_.fetch_add(1, std::memory_order_relaxed);
      // Classic: the opcode's header and its data follow each other.
      size_t hdr = op_header_size(in->opcode);
      dispatch({in->unique, nullptr}, *in, op, hdr <= op_len ? op + hdr : op + op_len,
               hdr <= op_len ? op_len - hdr : 0);
    }
  }

  static size_t op_header_size(uint32_t opcode) {
    switch (opcode) {
      case FUSE_READ: return sizeof(fuse_read_in);
      case FUSE_WRITE: return sizeof(fuse_write_in);
      default: return 0;  // others: parsed from op, or not at all
    }
  }

  // ---- io_uring transport ----
  void* map(size_t len) {
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    maps_.emplace_back(p, len);
    return p;
  }

  bool start_rings() {
    // The kernel makes a queue per possible CPU and uses the ring only once
    // every queue has an entry registered.
    unsigned nq = unsigned(sysconf(_SC_NPROCESSORS_CONF));
    for (unsigned q = 0; q < nq; ++q) {
      auto queue = std::make_unique<Queue>();
      queue->qid = q;
      int r = queue->ring.setup(kDepth * 2);
      if (r < 0) return fail("io_uring_setup", -r);
      int fds[1] = {dev_};
      // The /dev/fuse fd as fixed file 0, as libfuse does, saving an fget per command.
      if (syscall(__NR_io_uring_register, queue->ring.fd(), IORING_REGISTER_FILES, fds, 1) < 0)
        return fail("IORING_REGISTER_FILES", errno);
      queue->wake_fd = eventfd(0, EFD_CLOEXEC);
      if (queue->wake_fd < 0) return fail("eventfd", errno);
      queue->ents.resize(kDepth);
      for (auto& e : queue->ents) {
        e.queue = queue.get();
        e.hdr = static_cast<uring_abi::ReqHeader*>(map(4096));
        e.payload = static_cast<char*>(map(kPayloadSize));
        e.iov[0] = {e.hdr, sizeof(uring_abi::ReqHeader)};
        e.iov[1] = {e.payload, kPayloadSize};
      }
      queues_.push_back(std::move(queue));
    }
    for (auto& q : queues_) q->thread = std::thread([this, qp = q.get()] { queue_loop(*qp); });
    std::unique_lock<std::mutex> lock(reg_mu_);
    reg_cv_.wait(lock, [&] { return registered_ == queues_.size(); });
    if (!reg_error_.empty()) {
      error_ = reg_error_;
      return false;
    }
    return true;
  }

  static void prep_cmd(io_uring_sqe* sqe, uint32_t cmd_op, Ent& e, uint64_t commit_id) {
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->fd = 0;
    sqe->cmd_op = cmd_op;
    sqe->user_data = reinterpret_cast<uint64_t>(&e);
    auto* req = reinterpret_cast<uring_abi::CmdReq*>(sqe->cmd);
    req->qid = uint16_t(e.queue->qid);
    req->commit_id = commit_id;
    if (cmd_op == uring_abi::kCmdRegister) {
      sqe->addr = reinterpret_cast<uint64_t>(e.iov);
      sqe->len = 2;
    }
  }

  void report_registered(const std::string& err) {
    std::lock_guard<std::mutex> lock(reg_mu_);
    if (!err.empty() && reg_error_.empty()) reg_error_ = err;
    ++registered_;
    reg_cv_.notify_all();
  }

  void queue_loop(Queue& q) {
    if (g_pin_queues) {  // the queue serves callers on this CPU, as libfuse pins it
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(q.qid, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    t_own_queue = &q;
    for (auto& e : q.ents) q.ring.push([&](io_uring_sqe* s) { prep_cmd(s, uring_abi::kCmdRegister, e, 0); });
    int r = q.ring.enter(kDepth, 0);
    std::string err;
    if (r < 0) err = "io_uring_enter(REGISTER): errno " + std::to_string(-r) + " (" + std::strerror(-r) + ")";
    // A REGISTER that fails completes at once; one that succeeds stays queued
    // until the kernel hands its entry a request.
    bool stop = false;
    std::vector<io_uring_cqe> early;
    q.ring.drain([&](const io_uring_cqe& c) { early.push_back(c); });
    for (auto& c : early)
      if (c.res < 0 && err.empty())
        err = "FUSE_IO_URING_CMD_REGISTER qid " + std::to_string(q.qid) + ": errno " + std::to_string(-c.res) + " (" +
              std::strerror(-c.res) + ")";
    report_registered(err);
    if (!err.empty()) return;
    arm_wake(q);
    for (auto& c : early) stop |= !handle_cqe(q, c);
    while (!stop) {
      r = q.ring.enter(q.own_pending, 1);  // commit what this thread answered, and wait
      if (r == -EINTR) continue;
      if (r < 0) return;
      q.own_pending = 0;
      q.ring.drain([&](const io_uring_cqe& c) { stop |= !handle_cqe(q, c); });
    }
  }

  // False when the queue is torn down (unmount).
  bool handle_cqe(Queue& q, const io_uring_cqe& c) {
    if (c.user_data == kMsgSentTag) return true;
    if (c.user_data == kWakeTag || c.user_data == kMsgTag) {
      if (stopping_.load(std::memory_order_acquire)) return false;  // pairs with stop()'s release
      std::vector<Ent*> ready;
      {
        std::lock_guard<std::mutex> lock(q.handoff_mu);
        ready.swap(q.handoff);
      }
      for (Ent* e : ready) push_commit(*e);
      if (c.user_data == kWakeTag) arm_wake(q);
      return true;
    }
    auto* e = reinterpret_cast<Ent*>(c.user_data);
    if (c.res < 0) {
      if (c.res == -EAGAIN || c.res == -EINTR) {  // retry the same command
        uint64_t id = e->commit_id;
        uint32_t op = id ? uring_abi::kCmdCommitAndFetch : uring_abi::kCmdRegister;
        q.ring.push([&](io_uring_sqe* s) { prep_cmd(s, op, *e, id); });
        ++q.own_pending;
        return true;
      }
      return false;  // ENOTCONN, ECANCELED: unmounted
    }
    const auto* in = reinterpret_cast<const fuse_in_header*>(e->hdr->in_out);
    e->commit_id = e->hdr->ring_ent_in_out.commit_id;
    via_ring_.fetch_add(1, std::memory_order_relaxed);
    dispatch({in->unique, e}, *in, e->hdr->op_in, e->payload, e->hdr->ring_ent_in_out.payload_sz);
    return true;
  }

  void reply_ring(Ent& e, int err, const void* data, size_t len) {
    if (err) len = 0;
    if (len) std::memcpy(e.payload, data, len);
    auto* oh = reinterpret_cast<fuse_out_header*>(e.hdr->in_out);
    oh->len = uint32_t(sizeof *oh + len);
    oh->error = err;
    oh->unique = e.commit_id;
    e.hdr->ring_ent_in_out.payload_sz = uint32_t(len);
    Queue& q = *e.queue;
    if (t_own_queue == &q) return push_commit(e);
    if (mode_ == Mode::kUringCross) {  // submit to the other queue's ring from this thread
      uint64_t id = e.commit_id;
      q.ring.push([&](io_uring_sqe* s) { prep_cmd(s, uring_abi::kCmdCommitAndFetch, e, id); });
      q.ring.enter(1, 0);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(q.handoff_mu);
      q.handoff.push_back(&e);
    }
    if (mode_ == Mode::kUringMsg && t_own_queue) {
      // A CQE posted straight into the owner's ring, sent with this thread's
      // next wait: no eventfd write, no poll.
      t_own_queue->ring.push([&](io_uring_sqe* s) {
        s->opcode = IORING_OP_MSG_RING;
        s->fd = q.ring.fd();
        s->addr = IORING_MSG_DATA;
        s->off = kMsgTag;  // the user_data of the CQE the owner gets
        s->user_data = kMsgSentTag;
      });
      ++t_own_queue->own_pending;
      return;
    }
    uint64_t one = 1;
    (void)!write(q.wake_fd, &one, sizeof one);
  }

  // Owner only: queues the commit, submitted with the owner's next wait.
  static void push_commit(Ent& e) {
    uint64_t id = e.commit_id;
    e.queue->ring.push([&](io_uring_sqe* s) { prep_cmd(s, uring_abi::kCmdCommitAndFetch, e, id); });
    ++e.queue->own_pending;
  }

  // Owner only: a read of the queue's eventfd, completing when it is written.
  static void arm_wake(Queue& q) {
    q.ring.push([&](io_uring_sqe* s) {
      s->opcode = IORING_OP_READ;
      s->fd = q.wake_fd;
      s->addr = reinterpret_cast<uint64_t>(&q.wake_buf);
      s->len = sizeof q.wake_buf;
      s->off = ~0ULL;  // the file position: an eventfd has none to honour
      s->user_data = kWakeTag;
    });
    ++q.own_pending;
  }

  // ---- the filesystem, shared by both transports ----
  void reply(Req r, int err, const void* data = nullptr, size_t len = 0) {
    if (r.ent) {
      reply_ring(*r.ent, err, data, len);
    } else {
      reply_dev(r.unique, err, data, len);
    }
  }

  static fuse_attr attr_of(uint64_t ino) {
    fuse_attr a{};
    a.ino = ino;
    a.mode = ino == kRootIno ? (S_IFDIR | 0755) : (S_IFREG | 0666);
    a.nlink = ino == kRootIno ? 2 : 1;
    a.blksize = 4096;
    return a;
  }

  void dispatch(Req r, const fuse_in_header& in, const char* op, const char* data, size_t data_len) {
    switch (in.opcode) {
      case FUSE_LOOKUP: {
        // The name: the payload on the ring (arg 0 is empty), after the header classically.
        const char* name = r.ent ? (data_len ? data : op) : op;
        uint64_t ino = std::strcmp(name, "box") == 0 ? kBoxIno : std::strcmp(name, "box2") == 0 ? kBoxIno + 1 : 0;
        if (in.nodeid != kRootIno || ino == 0) return reply(r, -ENOENT);
        fuse_entry_out e{};
        e.nodeid = ino;
        e.entry_valid = e.attr_valid = 3600;
        e.attr = attr_of(ino);
        return reply(r, 0, &e, sizeof e);
      }
      case FUSE_GETATTR: {
        if (in.nodeid != kRootIno && !box_of(in.nodeid)) return reply(r, -ENOENT);
        fuse_attr_out a{};
        a.attr_valid = 3600;
        a.attr = attr_of(in.nodeid);
        return reply(r, 0, &a, sizeof a);
      }
      case FUSE_OPEN: {
        fuse_open_out o{};
        o.open_flags = FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE;
        return reply(r, 0, &o, sizeof o);
      }
      case FUSE_READ: {
        fuse_read_in ri;
        std::memcpy(&ri, op, sizeof ri);
        if (Box* b = box_of(in.nodeid)) return on_read(*b, r, ri.size);
        return reply(r, -EISDIR);
      }
      case FUSE_WRITE: {
        fuse_write_in wi;
        std::memcpy(&wi, op, sizeof wi);
        if (Box* b = box_of(in.nodeid)) return on_write(*b, r, std::string(data, std::min<size_t>(wi.size, data_len)));
        return reply(r, -EISDIR);
      }
      case FUSE_FLUSH:
      case FUSE_RELEASE:
      case FUSE_DESTROY: return reply(r, 0);
      case FUSE_FORGET:
      case FUSE_BATCH_FORGET:
      case FUSE_INTERRUPT: return;  // no reply
      default: return reply(r, -ENOSYS);
    }
  }

  // A mailbox: up to kQueueCap messages and the requests waiting on it.
  struct Box {
    std::deque<std::string> msgs;
    std::deque<std::pair<Req, uint32_t>> parked_reads;
    std::deque<std::pair<Req, std::string>> parked_writes;
  };

  Box* box_of(uint64_t ino) { return ino >= kBoxIno && ino < kBoxIno + kBoxes ? &boxes_[ino - kBoxIno] : nullptr; }

  // Deferred replies, answered after the lock is dropped.
  void on_read(Box& b, Req r, uint32_t size) {
    std::string msg;
    Req writer{};
    fuse_write_out wo{};
    bool have = false, unpark_writer = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!b.msgs.empty()) {
        msg = std::move(b.msgs.front());
        b.msgs.pop_front();
        have = true;
        if (!b.parked_writes.empty()) {
          writer = b.parked_writes.front().first;
          wo.size = uint32_t(b.parked_writes.front().second.size());
          b.msgs.push_back(std::move(b.parked_writes.front().second));
          b.parked_writes.pop_front();
          unpark_writer = true;
        }
      } else {
        b.parked_reads.emplace_back(r, size);
      }
    }
    if (have) reply(r, 0, msg.data(), std::min<size_t>(size, msg.size()));
    if (unpark_writer) reply(writer, 0, &wo, sizeof wo);
  }

  void on_write(Box& b, Req r, std::string msg) {
    fuse_write_out wo{uint32_t(msg.size()), 0};
    Req reader{};
    uint32_t reader_size = 0;
    bool hand_over = false, parked = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!b.parked_reads.empty()) {
        std::tie(reader, reader_size) = b.parked_reads.front();
        b.parked_reads.pop_front();
        hand_over = true;
      } else if (b.msgs.size() < kQueueCap) {
        b.msgs.push_back(msg);
      } else {
        b.parked_writes.emplace_back(r, msg);
        parked = true;
      }
    }
    if (hand_over) reply(reader, 0, msg.data(), std::min<size_t>(reader_size, msg.size()));
    if (!parked) reply(r, 0, &wo, sizeof wo);
  }

  std::string dir_;
  Mode mode_;
  int dev_ = -1;
  bool mounted_ = false;
  bool offered_uring_ = false;
  std::string error_;
  std::vector<std::thread> dev_threads_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<std::pair<void*, size_t>> maps_;
  std::atomic<uint64_t> via_dev_{0}, via_ring_{0};
  std::atomic<bool> stopping_{false};

  std::mutex reg_mu_;
  std::condition_variable reg_cv_;
  size_t registered_ = 0;
  std::string reg_error_;

  std::mutex mu_;
  Box boxes_[kBoxes];  // GUARDED_BY(mu_)
};

// ---- clients: separate processes -------------------------------------------------

// Shared with the forked clients: results and a start line.
struct Shared {
  std::atomic<uint64_t> errors;
  uint32_t* rtt_ns() { return reinterpret_cast<uint32_t*>(this + 1); }  // rtt iterations follow
};

Shared* map_shared(size_t rtt_iters, size_t* len) {
  *len = sizeof(Shared) + rtt_iters * sizeof(uint32_t);
  void* p = mmap(nullptr, *len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap shared");
  return static_cast<Shared*>(p);
}

struct Figures {
  double rtt_median_us = 0, rtt_p99_us = 0, pp_median_us = 0, pp_p99_us = 0, msgs_per_s = 0, server_cpu_us_per_msg = 0;
  uint64_t via_dev = 0, via_ring = 0, errors = 0;
};

int wait_child(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Round trip: one process writes 64 B then reads them back, rtt times.
void run_rtt(const std::string& file, size_t iters, Shared* sh, Figures& f) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(file.c_str(), O_RDWR);
    if (fd < 0) _exit(2);
    char msg[kMsgSize], buf[kMsgSize];
    std::memset(msg, 'r', sizeof msg);
    for (size_t i = 0; i < iters / 10; ++i)  // warm-up
      if (write(fd, msg, sizeof msg) != ssize_t(sizeof msg) || read(fd, buf, sizeof buf) != ssize_t(sizeof buf))
        _exit(3);
    for (size_t i = 0; i < iters; ++i) {
      uint64_t t0 = now_ns();
      std::memcpy(msg, &i, sizeof i);
      if (write(fd, msg, sizeof msg) != ssize_t(sizeof msg) || read(fd, buf, sizeof buf) != ssize_t(sizeof buf))
        _exit(3);
      sh->rtt_ns()[i] = uint32_t(std::min<uint64_t>(now_ns() - t0, UINT32_MAX));
      if (std::memcmp(buf, &i, sizeof i) != 0) sh->errors.fetch_add(1);
    }
    close(fd);
    _exit(0);
  }
  if (pid < 0) die("fork");
  if (int rc = wait_child(pid); rc != 0) {
    std::fprintf(stderr, "bench-uring: rtt client exited %d\n", rc);
    sh->errors.fetch_add(1);
  }
  std::vector<uint32_t> v(sh->rtt_ns(), sh->rtt_ns() + iters);
  std::sort(v.begin(), v.end());
  f.rtt_median_us = v[v.size() / 2] / 1000.0;
  f.rtt_p99_us = v[std::min(v.size() - 1, v.size() * 99 / 100)] / 1000.0;
}

// Ping-pong: one process writes 64 B to box, a second reads them and writes
// them to box2, the first reads them back: the datagram round trip of `make
// bench` (two processes, two channels, four requests).
void run_pingpong(const std::string& dir, size_t iters, Shared* sh, Figures& f) {
  pid_t pids[2];
  for (int role = 0; role < 2; ++role) {
    pids[role] = fork();
    if (pids[role] < 0) die("fork");
    if (pids[role] != 0) continue;
    if (g_pp_cpus != PpCpus::kFree) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(g_pp_cpus == PpCpus::kSplit ? role : 0, &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0) _exit(5);
    }
    int out = open((dir + (role == 0 ? "/box" : "/box2")).c_str(), O_RDWR);
    int in = open((dir + (role == 0 ? "/box2" : "/box")).c_str(), O_RDWR);
    if (out < 0 || in < 0) _exit(2);
    char msg[kMsgSize];
    std::memset(msg, 'p', sizeof msg);
    size_t warm = iters / 10;
    for (size_t i = 0; i < warm + iters; ++i) {
      uint64_t t0 = now_ns();
      if (role == 0) {
        std::memcpy(msg, &i, sizeof i);
        if (write(out, msg, sizeof msg) != ssize_t(sizeof msg) || read(in, msg, sizeof msg) != ssize_t(sizeof msg))
          _exit(3);
        if (i >= warm) sh->rtt_ns()[i - warm] = uint32_t(std::min<uint64_t>(now_ns() - t0, UINT32_MAX));
        if (std::memcmp(msg, &i, sizeof i) != 0) sh->errors.fetch_add(1);
      } else if (read(in, msg, sizeof msg) != ssize_t(sizeof msg) ||
                 write(out, msg, sizeof msg) != ssize_t(sizeof msg)) {
        _exit(3);
      }
    }
    _exit(0);
  }
  for (pid_t p : pids)
    if (int rc = wait_child(p); rc != 0) {
      std::fprintf(stderr, "bench-uring: ping-pong client exited %d\n", rc);
      sh->errors.fetch_add(1);
    }
  std::vector<uint32_t> v(sh->rtt_ns(), sh->rtt_ns() + iters);
  std::sort(v.begin(), v.end());
  f.pp_median_us = v[v.size() / 2] / 1000.0;
  f.pp_p99_us = v[std::min(v.size() - 1, v.size() * 99 / 100)] / 1000.0;
}

// Throughput: a writer process sends msgs messages, a reader process takes
// them in order; timed from a common start to the exit of the last one.
void run_msgs(const std::string& file, size_t msgs, Shared* sh, Figures& f) {
  int ready[2], go[2];
  if (pipe(ready) != 0 || pipe(go) != 0) die("pipe");
  pid_t pids[2];
  for (int role = 0; role < 2; ++role) {
    pids[role] = fork();
    if (pids[role] < 0) die("fork");
    if (pids[role] == 0) {
      int fd = open(file.c_str(), O_RDWR);
      if (fd < 0) _exit(2);
      char c = 1, msg[kMsgSize];
      if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) _exit(4);
      std::memset(msg, 'm', sizeof msg);
      for (uint64_t i = 0; i < msgs; ++i) {
        if (role == 0) {
          std::memcpy(msg, &i, sizeof i);
          if (write(fd, msg, sizeof msg) != ssize_t(sizeof msg)) _exit(3);
        } else {
          if (read(fd, msg, sizeof msg) != ssize_t(sizeof msg)) _exit(3);
          if (std::memcmp(msg, &i, sizeof i) != 0) sh->errors.fetch_add(1);
        }
      }
      close(fd);
      _exit(0);
    }
  }
  char c;
  for (int i = 0; i < 2; ++i)
    if (read(ready[0], &c, 1) != 1) die("read ready");
  rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);  // this process is the server: its threads' CPU time
  uint64_t t0 = now_ns();
  char start[2] = {1, 1};
  if (write(go[1], start, 2) != 2) die("write go");
  for (pid_t p : pids)
    if (int rc = wait_child(p); rc != 0) {
      std::fprintf(stderr, "bench-uring: msgs client exited %d\n", rc);
      sh->errors.fetch_add(1);
    }
  uint64_t t1 = now_ns();
  getrusage(RUSAGE_SELF, &ru1);
  auto us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  f.msgs_per_s = double(msgs) / ((t1 - t0) / 1e9);
  // Per message: one write and one read request.
  f.server_cpu_us_per_msg = (us(ru1) - us(ru0)) / double(msgs);
  for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);
}

bool run_mode(const std::string& dir, Mode mode, size_t rtt_iters, size_t msgs, Figures& f, std::string& err) {
  size_t len;
  Shared* sh = map_shared(rtt_iters, &len);
  bool ok;
  {
    Server server(dir, mode);
    ok = server.start();
    if (!ok) {
      err = server.error();
      if (mode != Mode::kClassic && mode != Mode::kClassic1 && !server.kernel_offered_uring())
        err += " (the kernel's INIT did not offer FUSE_OVER_IO_URING: is enable_uring Y?)";
    } else {
      std::string file = dir + "/box";
      run_rtt(file, rtt_iters, sh, f);
      run_pingpong(dir, rtt_iters, sh, f);
      run_msgs(file, msgs, sh, f);
      f.via_dev = server.via_dev();
      f.via_ring = server.via_ring();
      f.errors = sh->errors.load();
    }
  }  // unmounts
  munmap(sh, len);
  return ok;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [--reps N] [--rtt N] [--msgs N] [--modes a,b]\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  size_t reps = 5, rtt_iters = 20000, msgs = 100000;
  std::vector<Mode> modes = {Mode::kClassic, Mode::kClassic1, Mode::kUring, Mode::kUringMsg, Mode::kUringCross};
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--reps") reps = std::stoul(v);
    else if (k == "--rtt") rtt_iters = std::stoul(v);
    else if (k == "--msgs") msgs = std::stoul(v);
    else if (k == "--pin") g_pin_queues = v != "0";
    else if (k == "--pp-cpus") g_pp_cpus = v == "same" ? PpCpus::kSame : v == "split" ? PpCpus::kSplit : PpCpus::kFree;
    else if (k == "--modes") {
      modes.clear();
      size_t pos = 0;
      while (pos <= v.size()) {
        size_t end = std::min(v.find(',', pos), v.size());
        std::string m = v.substr(pos, end - pos);
        if (m == "classic") modes.push_back(Mode::kClassic);
        else if (m == "classic1") modes.push_back(Mode::kClassic1);
        else if (m == "uring") modes.push_back(Mode::kUring);
        else if (m == "uringm") modes.push_back(Mode::kUringMsg);
        else if (m == "uringx") modes.push_back(Mode::kUringCross);
        else {
          std::fprintf(stderr, "bench-uring: unknown mode %s\n", m.c_str());
          return 2;
        }
        pos = end + 1;
      }
    } else {
      std::fprintf(stderr, "bench-uring: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::printf("# bench-uring: %zu reps, %zu round trips, %zu msgs of %zu B; %ld CPUs online, %ld configured\n", reps,
              rtt_iters, msgs, kMsgSize, sysconf(_SC_NPROCESSORS_ONLN), sysconf(_SC_NPROCESSORS_CONF));
  // Each metric: its name, how to read it from a run, and whether more is better.
  struct Metric {
    const char* name;
    double (*get)(const Figures&);
    bool higher_better;
  };
  const Metric metrics[] = {
      {"rtt_med_us", [](const Figures& f) { return f.rtt_median_us; }, false},
      {"rtt_p99_us", [](const Figures& f) { return f.rtt_p99_us; }, false},
      {"pp_med_us", [](const Figures& f) { return f.pp_median_us; }, false},
      {"pp_p99_us", [](const Figures& f) { return f.pp_p99_us; }, false},
      {"msgs_per_s", [](const Figures& f) { return f.msgs_per_s; }, true},
      {"srv_cpu_us/msg", [](const Figures& f) { return f.server_cpu_us_per_msg; }, false},
  };
  std::printf("%-4s %-9s", "rep", "mode");
  for (auto& m : metrics) std::printf(" %14s", m.name);
  std::printf(" %9s %9s %5s\n", "via_dev", "via_ring", "errs");
  std::map<Mode, std::vector<Figures>> all;
  int failures = 0;
  for (size_t rep = 0; rep < reps; ++rep) {
    for (Mode m : modes) {
      Figures f;
      std::string err;
      if (!run_mode(dir, m, rtt_iters, msgs, f, err)) {
        std::printf("%-4zu %-9s FAILED: %s\n", rep, mode_name(m), err.c_str());
        ++failures;
        continue;
      }
      std::printf("%-4zu %-9s", rep, mode_name(m));
      for (auto& x : metrics) std::printf(" %14.2f", x.get(f));
      std::printf(" %9llu %9llu %5llu\n", (unsigned long long)f.via_dev, (unsigned long long)f.via_ring,
                  (unsigned long long)f.errors);
      std::fflush(stdout);
      if (f.errors) ++failures;
      all[m].push_back(f);
    }
  }
  std::printf("\n# median (min-max) over repetitions\n");
  for (Mode m : modes) {
    auto& v = all[m];
    if (v.empty()) continue;
    std::printf("%-9s", mode_name(m));
    for (auto& x : metrics) {
      std::vector<double> a;
      for (auto& f : v) a.push_back(x.get(f));
      auto [mn, mx] = std::minmax_element(a.begin(), a.end());
      std::printf("  %s %.2f (%.2f-%.2f)", x.name, median(a), *mn, *mx);
    }
    std::printf("\n");
  }
  // Ratios within each repetition (the runs seconds apart), then median and range.
  // "speedup" is how much better uring is: classic/uring for times, uring/classic for msgs/s.
  std::printf("\n# uring against classic, per repetition, then median (min-max)\n");
  for (auto [um, base] : {std::pair{Mode::kUring, Mode::kClassic},
                          {Mode::kUring, Mode::kClassic1},
                          {Mode::kUringMsg, Mode::kClassic},
                          {Mode::kUringCross, Mode::kClassic}}) {
    auto& vu = all[um];
    auto& vb = all[base];
    size_t n = std::min(vu.size(), vb.size());
    if (n == 0) continue;
    for (auto& x : metrics) {
      std::vector<double> r;
      for (size_t i = 0; i < n; ++i) r.push_back(x.get(vu[i]) / x.get(vb[i]));
      std::vector<double> sp;
      for (double v : r) sp.push_back(x.higher_better ? v : 1 / v);
      auto [mn, mx] = std::minmax_element(sp.begin(), sp.end());
      std::printf("%s/%-8s %-14s ratio %.3f  speedup %.3f (%.3f-%.3f) n=%zu\n", mode_name(um), mode_name(base), x.name,
                  median(r), median(sp), *mn, *mx, n);
    }
  }
  return failures ? 1 : 0;
}

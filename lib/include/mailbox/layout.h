// SPDX-License-Identifier: MIT
// The shared-memory layout of one mailbox segment, version 7.
//
// This is data, not objects: every participant (the mailboxfs daemon, and any
// program that maps the segment) reads and writes these bytes directly, so the
// layout is fixed-size, pointer-free and checked by static_assert. Everything
// read from a segment is untrusted: see Segment::validate().
//
//   [ SegmentHeader, kHeaderSize bytes ][ record area, data_size bytes ]
//
// A record is a RecordHeader followed by `len` payload bytes, padded to 8.
// Records never wrap: when the space left before the end of the area is too
// small, the writer leaves a wrap marker (or nothing, if even a header does not
// fit) and continues at offset 0 of the next lap. Since version 5 a sender
// may also wrap early, anywhere, once the lap is long enough for the capacity
// at the lap's largest record (`lap_max`): the area is address space sized for
// the worst case, the ring uses what traffic needs. Since version 6 a record
// carries a priority, and a receive takes the oldest record of the highest
// priority; one taken from the middle stays as a tombstone (kTaken) until the
// head passes it. While no record of priority > 0 nor a tombstone is queued
// (prio_pushed == prio_popped) receivers work exactly as in version 5.
// Since version 7 a sender (receiver) that keeps sending (receiving) alone
// may hold its half biased (`send_bias`, `recv_bias`) and then works
// without taking send_lock (recv_lock).
#pragma once
#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mbx::layout {

inline constexpr uint64_t kMagic = 0x31584f424c49414dULL;  // "MAILBOX1", little-endian
inline constexpr uint32_t kVersion = 7;
// Version 4, 5 and 6 segments (left by an older daemon) are still attached
// and used as their version used them: version 4 without early wrap,
// `lap_max` and `populated`; neither with priorities (a send at a priority
// > 0 into one is refused, ENOTSUP, until a resize moves the mailbox to the
// current version); none with a biased send half.
inline constexpr uint32_t kOldestVersion = 4;
inline constexpr uint64_t kHeaderSize = 4096;
inline constexpr uint64_t kUnbounded = UINT64_MAX;   // capacity: limited by the quota only
inline constexpr uint32_t kWrapMarker = UINT32_MAX;  // RecordHeader::len of a wrap marker
// Version 5: the first kKeepResident bytes of the record area (or all of a
// smaller one) are never released while the mailbox is in use, so a ring that
// laps within them takes no page fault; chunks beyond are given back as the
// receivers pass them, as in version 4.
inline constexpr uint64_t kKeepResident = 2u << 20;

// SegmentHeader::state
enum : uint32_t { kLive = 0, kRetired = 1, kDeleted = 2, kCorrupt = 3 };
// SegmentHeader::daemon_watch bits
// kWatchParkedReceivers: the daemon has receive calls parked (a blocked
// `cat`); it only tells mq_notify's check that a receiver waits (no kick).
// kWatchPolled: poll handles are armed; a participant that kicked the
// daemon then asks it through the file (a poll(2) probe) before its call
// returns, so that an epoll sees the change at once (lib/mq).
enum : uint32_t { kWatchReadable = 1, kWatchWritable = 2, kWatchParkedReceivers = 4, kWatchPolled = 8 };

// RecordHeader::flags (version 6): the priority in the low 15 bits, and
// kTaken once a receiver took the record out of order (a tombstone: its
// room is reclaimed when the head passes it). Any other bit is a scribble.
inline constexpr uint32_t kPrioMask = 0x7fff;
inline constexpr uint32_t kTaken = 1u << 31;

struct RecordHeader {
  uint32_t len;    // payload bytes, or kWrapMarker
  uint32_t flags;  // version 6: priority | kTaken; before: 0
  int32_t pid;     // sender identity as the kernel reported it to the daemon
  uint32_t uid;
  uint32_t gid;
  uint32_t reserved;
  uint64_t seq;  // 0-based send sequence number within this segment
};
static_assert(sizeof(RecordHeader) == 32);

inline constexpr uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }
inline constexpr uint64_t record_size(uint64_t len) { return sizeof(RecordHeader) + align8(len); }

// The ring is split in two halves that never share a lock or a written cache
// line: senders serialise on `send_lock` and own SendState, receivers
// serialise on `recv_lock` and own RecvState. Positions are monotonically
// increasing byte counts (offset = position % data_size), so one sender and
// one receiver never contend: each publishes one position (`tail_pub`,
// `head_pub`) and reads the other's, as an SPSC ring does.
struct SendState {      // guarded by send_lock
  uint64_t tail;        // position where the next record goes
  uint64_t next_seq;    // records ever pushed = seq of the next one
  uint64_t total_sent;  // messages sent (a withdrawn rendezvous offer is taken back)
  uint64_t sent_bytes;  // payload bytes ever pushed
  uint64_t sent_record_bytes;
  int64_t last_send_ns;   // CLOCK_REALTIME
  uint64_t lost;          // sends that died holding send_lock
  uint64_t quota_credit;  // record bytes charged to the mount's quota that no record uses yet
};

struct RecvState {        // guarded by recv_lock
  uint64_t head;          // position of the oldest record
  uint64_t popped;        // records ever removed (received, withdrawn, discarded, moved)
  uint64_t consumed_seq;  // every message with seq < consumed_seq has been received
  uint64_t total_received;
  uint64_t popped_bytes;
  uint64_t popped_record_bytes;
  int64_t last_recv_ns;
  uint64_t quota_owed;  // record bytes a receive still has to give back to the quota
};

inline constexpr uint32_t kInflightSend = 1;

struct SegmentHeader {
  // Written once by the creator before anyone else can open the file.
  uint64_t magic;
  uint32_t version;
  uint32_t header_size;
  uint64_t data_size;    // bytes of record area after the header
  uint64_t max_message;  // largest payload accepted
  uint64_t capacity;     // messages; 0 = rendezvous; kUnbounded

  // Retired/deleted/corrupt: participants must stop using this segment. Written
  // with release under both locks; read with acquire by any participant.
  std::atomic<uint32_t> state;
  // Version 7 (padding before): 0, or the thread id of the one sender that
  // holds the send half biased (it sends without send_lock, between its own
  // `bias_busy` stores), with kBiasRevoked once another participant holding
  // send_lock took it back and waits for `bias_busy` to be 0. Written only
  // under send_lock; read by the biased sender before each send. Here,
  // beside `state`: a line every participant reads and hardly anyone writes.
  std::atomic<uint32_t> send_bias;
  // Version 7: the same for the receive half (recv_lock, `recv_busy`).
  std::atomic<uint32_t> recv_bias;

  // Both locks are robust and process-shared: a participant that dies holding
  // one is detected (EOWNERDEAD) and that half is recovered. Lock order:
  // send_lock before recv_lock. Each half changes crash-consistently: the
  // holder writes the next state to `*_pending`, sets `*_pending_valid`,
  // copies it in place, publishes its position, then clears the flag; one
  // that dies before setting the flag changed nothing (an unfinished send,
  // marked by `inflight`, is counted in `lost`); one that dies after is
  // rolled forward.
  alignas(64) pthread_mutex_t send_lock;
  SendState send;
  SendState send_pending;
  uint32_t send_pending_valid;
  uint32_t inflight;        // kInflightSend while a send holds send_lock
  uint64_t inflight_quota;  // record bytes that send added to the quota
  uint32_t inflight_quota_added;
  // Version 7 (padding before): 1 while the biased sender runs a send
  // without send_lock; written only by it (and by whoever recovers from its
  // death inside one, holding send_lock). On the send half's own line.
  std::atomic<uint32_t> bias_busy;

  alignas(64) pthread_mutex_t recv_lock;
  RecvState recv;
  RecvState recv_pending;
  uint32_t recv_pending_valid;
  // Version 7 (padding before): `bias_busy` of the receive half.
  std::atomic<uint32_t> recv_busy;
  // Version 6, guarded by recv_lock. `prio_popped`: records of priority > 0
  // (tombstones included) the head has passed, raised after the commit that
  // passes them, so never above the truth. `recv_take`: 1 + the position of
  // the record a commit in progress marks kTaken (0: none); set before
  // `recv_pending_valid`, cleared before it is cleared, so that a recovery
  // that rolls the commit forward marks it too.
  uint64_t prio_popped;
  uint64_t recv_take;

  // Written by senders, read by receivers. `tail_pub` = send.tail, stored with
  // release after the record is complete. After a send, a seq_cst fence, then
  // `sleeping_receivers` is read, and only if it is non-zero is `pushed`
  // incremented and woken; a sleeper counts itself (seq_cst), re-reads
  // `tail_pub` and the word, and FUTEX_WAITs on the value it saw before
  // trying if neither moved, then re-checks the ring.
  alignas(64) std::atomic<uint64_t> tail_pub;
  std::atomic<uint32_t> pushed;
  uint32_t reserved3;
  // Version 5, guarded by send_lock, sender policy only (no value of either
  // can make a participant read or write outside the live records; a value
  // out of range marks the segment corrupt). `lap_max`: the largest record
  // pushed in the tail's lap (early wraps wait until the lap holds
  // `capacity` of those). `populated`: the record area [0, populated) is
  // allocated (MADV_POPULATE_WRITE) and stays so, up to kKeepResident; only
  // Segment::trim() lowers it, before it releases the memory.
  uint64_t lap_max;
  uint64_t populated;

  // Written by receivers, read by senders: recv.head and recv.popped, stored
  // with release after the record is copied out; `popped` is the futex word
  // (moved only for sleepers, as `pushed`).
  alignas(64) std::atomic<uint64_t> head_pub;
  std::atomic<uint64_t> popped_pub;
  std::atomic<uint32_t> popped;
  uint32_t reserved4;
  // Version 6, guarded by recv_lock: tombstones (kTaken records) the head has
  // not passed yet; raised before the commit that makes one, lowered after
  // the commit that passes them, so never below the truth. Receivers recount
  // it whenever they walk the ring.
  uint64_t tombs;

  // Read after every send and receive, written rarely: a line of its own, so
  // that those reads are not misses on the lines the other side writes or
  // spins on.
  // The daemon parks requests as data, not threads, so it cannot sleep on the
  // futex words above (nor on the locks: it only tries them). It sets kWatch*
  // bits here while it has parked requests or armed poll handles, and both
  // while requests wait for a lock another participant holds; a non-daemon
  // participant that changes the ring while a bit is set stores 1 to `kick`
  // and rings the control segment's doorbell.
  alignas(64) std::atomic<uint32_t> daemon_watch;
  std::atomic<uint32_t> kick;
  std::atomic<uint32_t> sleeping_receivers;  // non-daemon participants waiting on `pushed`
  std::atomic<uint32_t> sleeping_senders;    // non-daemon participants waiting on `popped`
  // Version 6, written under send_lock: records of priority > 0 ever pushed,
  // raised before the commit that publishes the record (so never below the
  // truth; a sender that dies in between leaves it high). Here, not by
  // tail_pub, because every receive reads it (a line that moves only with
  // traffic of priority > 0): while it equals prio_popped and no tombstone
  // is queued, the oldest record is the next and receives work as version 5.
  std::atomic<uint64_t> prio_pushed;
  // mq_notify (lib/mq), in what was padding (zero in any older segment).
  // `notify_owner`: 0, or the registrant as (generation << 32 | pid), armed
  // by CAS from 0 (or from a dead pid's value). A send that makes the ring go
  // from empty to non-empty while it is armed and no receiver waits CASes it
  // back to 0, stores what it took in `notify_fired` and moves and wakes the
  // futex word `notify_seq`, on which the registrant's thread sleeps; the
  // sender's pid and uid for the signal's siginfo go to `notify_pid`/`_uid`
  // (written before notify_fired). Any value is harmless: a pid outside
  // (0, kMaxPid] counts as nobody.
  std::atomic<uint64_t> notify_owner;
  std::atomic<uint64_t> notify_fired;
  std::atomic<uint32_t> notify_seq;
  std::atomic<uint32_t> notify_pid;
  std::atomic<uint32_t> notify_uid;
};
static_assert(sizeof(SegmentHeader) <= kHeaderSize);
// Version 5 only used padding: every version 4 field keeps its offset.
static_assert(offsetof(SegmentHeader, head_pub) == 512 && offsetof(SegmentHeader, daemon_watch) == 576 &&
              offsetof(SegmentHeader, lap_max) == 464 && sizeof(SegmentHeader) == 640);
// Version 6 too: its words are in padding.
static_assert(offsetof(SegmentHeader, prio_popped) == 432 && offsetof(SegmentHeader, recv_take) == 440 &&
              offsetof(SegmentHeader, prio_pushed) == 592 && offsetof(SegmentHeader, tombs) == 536);
static_assert(offsetof(SegmentHeader, notify_owner) == 600 && offsetof(SegmentHeader, notify_seq) == 616);
// Version 7 too.
static_assert(offsetof(SegmentHeader, send_bias) == 44 && offsetof(SegmentHeader, bias_busy) == 252 &&
              offsetof(SegmentHeader, recv_bias) == 48 && offsetof(SegmentHeader, recv_busy) == 428 &&
              offsetof(SegmentHeader, send_lock) == 64);
// SegmentHeader::send_bias/recv_bias, above the thread id: being taken back;
// taken back and the membarrier made (a taker that dies before it leaves
// kBiasRevoked alone, and the next one makes it); taken back by the daemon
// (the thread does not wait longer before it is biased again).
inline constexpr uint32_t kBiasRevoked = 1u << 31, kBiasFenced = 1u << 30, kBiasByDaemon = 1u << 29;
inline constexpr uint32_t kBiasFlags = kBiasRevoked | kBiasFenced | kBiasByDaemon;
inline constexpr uint32_t kMaxPid = 1u << 22;  // PID_MAX_LIMIT on 64-bit Linux
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// One per mount, file "control" in the state directory.
inline constexpr uint64_t kControlMagic = 0x4c52544358424d4dULL;  // "MMBXCTRL"
struct ControlHeader {
  uint64_t magic;
  uint32_t version;
  int32_t daemon_pid;
  uint64_t quota_max;  // -o max_bytes
  // Record bytes queued in all mailboxes of the mount. fetch_add (acq_rel) by a
  // sender before it writes a record, fetch_sub by the receiver after it frees one.
  alignas(64) std::atomic<uint64_t> quota_used;
  // Incremented (release) and FUTEX_WAKEd by a non-daemon participant after it
  // stores a segment's `kick`; the daemon's doorbell thread waits on it.
  alignas(64) std::atomic<uint32_t> doorbell;
  // The part of quota_used the daemon charged for bytes it holds for writers
  // (not in any segment); a daemon taking over a dead one's state gives it
  // back. Daemon only; relaxed: its successor reads it after it died.
  alignas(64) std::atomic<uint64_t> daemon_held;
};
static_assert(sizeof(ControlHeader) <= 4096);

// ioctl(kInfoIoctl) on an open mailbox file answers what a participant needs
// to map the segment or to send through the file. For an opener that may not
// read (a write-only mailbox): getxattr needs read permission, the ioctl only
// the open file. FUSE passes it as a restricted ioctl, sized by its number.
struct FileInfo {
  uint64_t max_message;
  char framing[16];    // NUL-terminated, as user.mailbox.framing
  char segment[4096];  // NUL-terminated, as user.mailbox.segment
};
inline constexpr unsigned kInfoIoctl =  // _IOR('M', 0x01, FileInfo), spelled out: no ioctl header here
    (2u << 30) | (static_cast<unsigned>(sizeof(FileInfo)) << 16) | ('M' << 8) | 0x01;
static_assert(sizeof(FileInfo) < (1u << 14));  // _IOC_SIZE has 14 bits

// Priorities through the file, per open file and calling thread (the
// thread id the kernel reports), so that threads and processes sharing one
// descriptor never see each other's. ioctl(kSendPriorityIoctl, &prio):
// the priority (0..kMaxPriority, EINVAL above) of what this thread's next
// write on this open file sends (datagram, line), or of the message its next
// close or fsync commits (file framing, or line framing's partial line);
// used once, by the next call that sends something, whatever its result.
inline constexpr unsigned kSendPriorityIoctl =  // _IOW('M', 0x02, uint32_t)
    (1u << 30) | (static_cast<unsigned>(sizeof(uint32_t)) << 16) | ('M' << 8) | 0x02;

// ioctl(kReceivedIoctl, &info): the message this thread last received
// through this open file (its first line, for a batched line read); ENODATA
// if none.
struct ReceivedInfo {
  uint32_t priority;
  int32_t pid;  // its sender, as user.mailbox.sender names it
  uint32_t uid;
  uint32_t gid;
};
inline constexpr unsigned kReceivedIoctl =  // _IOR('M', 0x03, ReceivedInfo)
    (2u << 30) | (static_cast<unsigned>(sizeof(ReceivedInfo)) << 16) | ('M' << 8) | 0x03;

// ioctl(kDiscardIoctl): drops what this open file has written and not sent
// yet (file framing's message before the close that commits it, line
// framing's partial line), so that its close sends nothing. An mq send
// through the file that finds, after its write, that a handler which ends
// the call is pending takes its message back this way (EINTR sends nothing).
inline constexpr unsigned kDiscardIoctl = ('M' << 8) | 0x04;  // _IO('M', 0x04)

}  // namespace mbx::layout

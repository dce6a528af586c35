// The shared-memory layout of one mailbox segment, version 2.
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
// fit) and continues at offset 0.
#pragma once
#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mbx::layout {

inline constexpr uint64_t kMagic = 0x31584f424c49414dULL;  // "MAILBOX1", little-endian
inline constexpr uint32_t kVersion = 2;
inline constexpr uint64_t kHeaderSize = 4096;
inline constexpr uint64_t kUnbounded = UINT64_MAX;  // capacity: limited by the quota only
inline constexpr uint32_t kWrapMarker = UINT32_MAX;  // RecordHeader::len of a wrap marker

// SegmentHeader::state
enum : uint32_t { kLive = 0, kRetired = 1, kDeleted = 2, kCorrupt = 3 };
// SegmentHeader::daemon_watch bits
enum : uint32_t { kWatchReadable = 1, kWatchWritable = 2 };

struct RecordHeader {
  uint32_t len;    // payload bytes, or kWrapMarker
  uint32_t flags;  // reserved, 0
  int32_t pid;     // sender identity as the kernel reported it to the daemon
  uint32_t uid;
  uint32_t gid;
  uint32_t reserved;
  uint64_t seq;  // 0-based send sequence number within this segment
};
static_assert(sizeof(RecordHeader) == 32);

inline constexpr uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }
inline constexpr uint64_t record_size(uint64_t len) { return sizeof(RecordHeader) + align8(len); }

// Everything that changes together when a message is sent or received.
struct RingState {
  uint64_t head;           // offset of the oldest record
  uint64_t tail;           // offset where the next record goes
  uint64_t count;          // messages queued
  uint64_t bytes;          // payload bytes queued
  uint64_t record_bytes;   // record bytes queued (what the quota counts)
  uint64_t next_seq;       // seq of the next message sent
  uint64_t consumed_seq;   // every message with seq < consumed_seq has been received
  uint64_t total_sent;
  uint64_t total_received;
  int64_t last_send_ns;    // CLOCK_REALTIME
  int64_t last_recv_ns;
  uint64_t quota_owed;     // record bytes a receive still has to give back to the quota
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
  // with release under `lock`; read with acquire by any participant before use.
  std::atomic<uint32_t> state;
  uint32_t reserved0;

  // Robust, process-shared: a participant that dies holding it is detected
  // (EOWNERDEAD) and the ring is recovered (Segment::recover_locked). Guards
  // every field up to `pushed`.
  pthread_mutex_t lock;

  // The ring's state changes as a whole, crash-consistently: a participant
  // writes the next state to `pending`, sets `pending_valid`, copies it to
  // `ring`, clears `inflight`, then clears `pending_valid`. One that dies
  // before setting `pending_valid` changed nothing (an unfinished send is
  // counted in `lost`); one that dies after is rolled forward.
  RingState ring;
  RingState pending;
  uint32_t pending_valid;
  uint32_t inflight;          // kInflightSend while a send holds the lock
  uint64_t inflight_quota;    // record bytes that send added to the quota
  uint32_t inflight_quota_added;
  uint32_t reserved1;
  uint64_t lost;              // sends that died holding the lock

  // Futex words. `pushed` is incremented after every send and `popped` after
  // every receive, once `lock` is released (seq_cst, then the sleeper counts
  // are read); a sleeper counts itself, re-reads the word and FUTEX_WAITs on
  // the value it saw before trying, then re-checks the ring under `lock`.
  alignas(64) std::atomic<uint32_t> pushed;
  std::atomic<uint32_t> sleeping_receivers;  // non-daemon participants waiting on `pushed`
  alignas(64) std::atomic<uint32_t> popped;
  std::atomic<uint32_t> sleeping_senders;    // non-daemon participants waiting on `popped`

  // The daemon parks requests as data, not threads, so it cannot sleep on the
  // words above. It sets kWatch* bits here while it has parked requests or
  // armed poll handles; a non-daemon participant that changes the ring while a
  // bit is set stores 1 to `kick` and rings the control segment's doorbell.
  alignas(64) std::atomic<uint32_t> daemon_watch;
  std::atomic<uint32_t> kick;
};
static_assert(sizeof(SegmentHeader) <= kHeaderSize);
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
};
static_assert(sizeof(ControlHeader) <= 4096);

}  // namespace mbx::layout
